"""GatedCNN, LSTM and ELMo: causality, remote-code round trips, generate, training, presets."""

import json
import os

import numpy as np
import pytest
import torch

from conftest import run_python
from pretraining.models import FAMILY_CLASSES
from pretraining.presets import parse_preset
from test_pretraining import TINY, logged, pretrain
from ja_common.errors import UserError

SIZES = {
    "gatedcnn": dict(vocab_size=60, embedding_size=16, hidden_size=16, num_layers=4, kernel_size=3, block_size=2),
    "lstm": dict(vocab_size=60, embedding_size=16, hidden_size=24, num_layers=2, tie_word_embeddings=True),
    "elmo": dict(vocab_size=60, embedding_size=16, hidden_size=24, projection_size=8, num_layers=2),
}
RECURRENT = {"number-of-layers": 2, "hidden-size": 64, "embedding-size": 32, "sequence-length": 32,
             "warmup-steps": 2, "learning-rate": 5e-3, "batch-size": {"-1": 8}, "train-steps": 30,
             "save-steps": 30, "logging-steps": 1}
PRESETS = {
    "gatedcnn-test": dict(RECURRENT, **{"kernel-size": 3, "block-size": 2, "number-of-layers": 5}),  # UER-py 5/2
    "lstm-test": dict(RECURRENT, **{"tie-weights": True}),
    "elmo-test": dict(RECURRENT, **{"projection-size": 32}),
    "gru-test": dict(RECURRENT, family="lstm", cell="gru"),
    "rnn-test": dict(RECURRENT, family="lstm", cell="rnn"),
    "bigru-test": dict(RECURRENT, family="elmo", cell="gru"),
}


def tiny(family, cell=None):
    config_class, _, head, _ = FAMILY_CLASSES[family]
    torch.manual_seed(0)
    return head(config_class(**SIZES[family], **({"cell": cell} if cell else {}))).eval()


@pytest.mark.parametrize("layers,block", [(5, 2), (4, 3), (1, 2), (6, 1)])
def test_gatedcnn_takes_every_uer_layer_and_block_count(layers, block):
    """UER-py's layout: the first layer, then a residual around every block_size layers; a last block
    that is not full has none. Here: the residuals sit where that rule puts them."""
    from pretraining.models.gated_cnn import GatedCnnConfig, GatedCnnModel

    torch.manual_seed(0)
    config = GatedCnnConfig(vocab_size=60, embedding_size=8, hidden_size=12, num_layers=layers, kernel_size=3,
                            block_size=block, residual_after_first_layer=True, dropout=0.0)
    model = GatedCnnModel(config).eval()
    ids = torch.randint(5, 60, (2, 9))
    with torch.no_grad():
        x = model.embeddings(ids).transpose(1, 2)
        x = residual = model.layers[0](x)
        for i, layer in enumerate(model.layers[1:], start=1):
            x = layer(x)
            if i % block == 0:  # the i-th layer after the first closes a block
                x = residual = x + residual
        assert torch.allclose(model(ids, output_hidden_states=True).last_hidden_state, x.transpose(1, 2), atol=1e-6)


@pytest.mark.parametrize("family", ["gatedcnn", "lstm"])
def test_forward_models_are_causal(family):
    model = tiny(family)
    ids = torch.randint(5, 60, (2, 12))
    changed = ids.clone()
    changed[:, 7:] = torch.randint(5, 60, (2, 5))
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-6)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_elmo_directions_see_only_their_side():
    model = tiny("elmo")
    ids = torch.randint(5, 60, (2, 12))
    later, earlier = ids.clone(), ids.clone()
    later[:, 7:] = torch.randint(5, 60, (2, 5))
    earlier[:, :5] = torch.randint(5, 60, (2, 5))
    with torch.no_grad():
        base, after_later, after_earlier = model(ids), model(later), model(earlier)
    # the forward stack up to t ignores what comes after t, the backward stack from t what comes before
    for layer in range(2):
        assert torch.allclose(base.forward_states[layer][:, :7], after_later.forward_states[layer][:, :7], atol=1e-6)
        assert torch.allclose(base.backward_states[layer][:, 5:], after_earlier.backward_states[layer][:, 5:], atol=1e-6)
        assert not torch.allclose(base.backward_states[layer][:, :7], after_later.backward_states[layer][:, :7])
    # the backward LM predicts token t-1 from positions >= t: it never sees the token it predicts
    assert torch.allclose(base.backward_logits[:, 5:], after_earlier.backward_logits[:, 5:], atol=1e-6)
    base_model = model.elmo(ids)
    assert len(base_model.layer_representations) == 3
    assert base_model.mixed_representation.shape == (2, 12, 16)


def spy_on_forward(model):
    """Record the length of every forward call's input_ids."""
    lengths, original = [], model.forward

    def spy(input_ids, **kwargs):
        lengths.append(input_ids.shape[1])
        return original(input_ids, **kwargs)

    model.forward = spy
    return lengths, original


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_lstm_generate_carries_the_state(cell):
    model = tiny("lstm", cell)
    lengths, original = spy_on_forward(model)
    prompt = torch.tensor([[5, 6, 7, 8]])
    out = model.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert lengths == [4, 1, 1, 1, 1]  # the prefix once, then one token a step
    with torch.no_grad():  # greedy continuation equals re-running the whole prefix each time
        ids = prompt
        for _ in range(5):
            ids = torch.cat([ids, original(ids).logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(out, ids)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_lstm_beam_search_carries_the_state_of_reordered_beams(cell):
    model = tiny("lstm", cell)
    prompts = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    settings = dict(max_new_tokens=6, num_beams=3, num_return_sequences=3, do_sample=False, pad_token_id=0)
    lengths, original = spy_on_forward(model)
    carried = model.generate(prompts, **settings)
    assert lengths == [4] + [1] * 5
    # the same search re-running the whole prefix at every step
    model.forward = lambda input_ids, generated_ids=None, **kwargs: original(input_ids, **kwargs)
    assert torch.equal(carried, model.generate(prompts, **settings))


@pytest.mark.parametrize("family,cell", [("gatedcnn", None), ("lstm", None), ("elmo", None), ("lstm", "gru"),
                                         ("lstm", "rnn"), ("elmo", "gru")])
def test_round_trip_without_project(family, cell, tmp_path):
    model = tiny(family, cell)
    _, _, _, auto = FAMILY_CLASSES[family]
    from pretraining.models import add_base_model_to_auto_map

    add_base_model_to_auto_map(model.config, family)
    model.save_pretrained(tmp_path / family)
    ids = torch.randint(5, 60, (1, 9))
    with torch.no_grad():
        out = model(ids)
        expected = (out.forward_logits if family == "elmo" else out.logits).tolist()
        hidden = model.elmo(ids).mixed_representation if family == "elmo" else None
    code = f"""
import json, torch, transformers
from transformers import AutoConfig, AutoModel
path = {str(tmp_path / family)!r}
model = getattr(transformers, {auto.__name__!r}).from_pretrained(path, trust_remote_code=True).eval()
base = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
assert AutoConfig.from_pretrained(path, trust_remote_code=True).model_type == {model.config.model_type!r}
ids = torch.tensor({ids.tolist()})
with torch.no_grad():
    out = model(ids)
    logits = out.forward_logits if {family!r} == "elmo" else out.logits
    extra = base(ids).mixed_representation.tolist() if {family!r} == "elmo" else None
print(json.dumps([logits.tolist(), extra, type(model).__name__, type(base).__name__]))
"""
    result = run_python(code, cwd=str(tmp_path), block_project=True)
    logits, extra, head_name, base_name = json.loads(result.stdout.strip().splitlines()[-1])
    assert torch.allclose(torch.tensor(logits), torch.tensor(expected), atol=1e-6)
    assert head_name == type(model).__name__ and base_name == FAMILY_CLASSES[family][1].__name__
    if family == "elmo":
        assert torch.allclose(torch.tensor(extra), hidden, atol=1e-6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, wordpiece_dir):
    work = tmp_path_factory.mktemp("families")
    params = work / "parameter.json"
    params.write_text(json.dumps(PRESETS))
    dirs = {}
    for model_type in PRESETS:
        dirs[model_type] = work / model_type
        pretrain(str(params), wordpiece_dir, dirs[model_type], model_type)
    return dirs


@pytest.mark.parametrize("model_type,tags", [("gatedcnn-test", ["loss/lm"]), ("lstm-test", ["loss/lm"]),
                                             ("elmo-test", ["loss/forward", "loss/backward"]),
                                             ("gru-test", ["loss/lm"]), ("rnn-test", ["loss/lm"]),
                                             ("bigru-test", ["loss/forward", "loss/backward"])])
def test_loss_falls_on_the_sample_corpus(trained, model_type, tags):
    for tag in ["loss"] + tags:
        values = logged(trained[model_type], tag)
        assert np.mean(values[-3:]) < np.mean(values[:3]) - 1.0, (tag, values)


@pytest.mark.parametrize("model_type", ["gatedcnn-test", "lstm-test", "gru-test", "rnn-test"])
def test_generate_continues_a_japanese_prompt(trained, model_type, tmp_path):
    path = str(trained[model_type])
    code = f"""
from transformers import AutoModelForCausalLM, AutoTokenizer
# transformers 5.24 reads the model's config (remote code here) before the tokenizer's
tokenizer = AutoTokenizer.from_pretrained({path!r}, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained({path!r}, trust_remote_code=True).eval()
prompt = tokenizer("朝早く起きて", add_special_tokens=False, return_tensors="pt")["input_ids"]
lengths, forward = [], model.forward
model.forward = lambda input_ids, **kwargs: lengths.append(input_ids.shape[1]) or forward(input_ids, **kwargs)
out = model.generate(prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False)
new = out[0, prompt.shape[1]:]
assert len(new) == 8
print(json.dumps([prompt.shape[1], lengths, tokenizer.decode(new)]))
"""
    result = run_python("import json\n" + code, cwd=str(tmp_path), block_project=True)
    prompt_length, lengths, text = json.loads(result.stdout.strip().splitlines()[-1])
    if not model_type.startswith("gatedcnn"):  # loaded as remote code, a recurrent model reads the prefix once
        assert lengths == [prompt_length] + [1] * 7
    else:  # the GatedCNN has no cache: it re-reads the sequence
        assert lengths == list(range(prompt_length, prompt_length + 8))
    assert text.strip()


def test_auto_classes_after_importing_the_project(trained):
    import pretraining.models  # noqa: F401  (registers the families)
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForPreTraining

    assert type(AutoModelForCausalLM.from_pretrained(trained["gatedcnn-test"])).__name__ == "GatedCnnForCausalLM"
    assert type(AutoModelForCausalLM.from_pretrained(trained["lstm-test"])).__name__ == "LstmForCausalLM"
    assert type(AutoModelForPreTraining.from_pretrained(trained["elmo-test"])).__name__ == "ElmoForPreTraining"
    assert type(AutoModel.from_pretrained(trained["elmo-test"])).__name__ == "ElmoModel"
    # the cell is the preset's, saved in the config
    assert type(AutoModelForCausalLM.from_pretrained(trained["gru-test"]).lstm_lm.lstm).__name__ == "GRU"
    assert type(AutoModelForCausalLM.from_pretrained(trained["rnn-test"]).lstm_lm.lstm).__name__ == "RNN"
    bigru = AutoModelForPreTraining.from_pretrained(trained["bigru-test"])
    assert {type(cell).__name__ for cell in bigru.elmo.backward_stack.cells} == {"GRU"}


def test_bad_preset_values():
    with pytest.raises(UserError, match='"kernel-size" must be at least 1, not 0'):
        parse_preset("gatedcnn-x", dict(PRESETS["gatedcnn-test"], **{"kernel-size": 0}))
    with pytest.raises(UserError, match='"block-size" must be at least 1, not 0'):
        parse_preset("gatedcnn-x", dict(PRESETS["gatedcnn-test"], **{"block-size": 0}))
    with pytest.raises(UserError, match='"initialization" must be "normal" or "kaiming"'):
        parse_preset("gatedcnn-x", dict(PRESETS["gatedcnn-test"], **{"initialization": "xavier"}))
    with pytest.raises(UserError, match='"cell" must be one of lstm, gru, rnn, not \'lru\''):
        parse_preset("elmo-x", dict(PRESETS["elmo-test"], cell="lru"))
    with pytest.raises(UserError, match='"projection-size" must be at least 1'):
        parse_preset("elmo-x", dict(PRESETS["elmo-test"], **{"projection-size": 0}))
    with pytest.raises(UserError, match='"hidden-size" 30 is not divisible by "attention-heads" 4'):
        parse_preset("bert-x", dict(TINY, **{"hidden-size": 30, "attention-heads": 4}))

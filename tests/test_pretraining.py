"""Pretraining core: each family trains and loads, kill -9 + --do_continue, masking, presets, safety."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, SAMPLE_CORPUS, run_python, sample_lines, write_presets
from pretraining.data.collators import MaskedLMCollator, Masking, mask_tokens
from pretraining.families import FAMILIES
from pretraining.presets import load_preset, parse_preset
from ja_common.errors import UserError

TINY = {"number-of-layers": 2, "hidden-size": 64, "ffn-inner-hidden-size": 128, "attention-heads": 2,
        "sequence-length": 32, "warmup-steps": 2, "learning-rate": 2e-3, "batch-size": {"-1": 8},
        "train-steps": 16, "save-steps": 8, "logging-steps": 1}
PRESETS = {
    "bert-test": TINY,
    "albert-test": dict(TINY, **{"embedding-size": 32, "learning-rate": 5e-3}),
    "gpt2-test": TINY,
    "t5-test": dict(TINY, **{"learning-rate": 5e-3}),
    "bert-resume": dict(TINY, **{"train-steps": 12, "save-steps": 2, "dropout": 0.1}),
    "gpt2-resume": dict(TINY, **{"train-steps": 10, "save-steps": 2, "accumulation-steps": 2}),
    "bert-nan": dict(TINY, **{"learning-rate": 1e30, "warmup-steps": 0, "save-steps": 1}),
    "roberta-test": TINY,
    "llama-test": dict(TINY, **{"key-value-heads": 1, "tie-weights": True}),
    "roberta-resume": dict(TINY, **{"train-steps": 12, "save-steps": 2, "dropout": 0.1}),
    "llama-resume": dict(TINY, **{"train-steps": 10, "save-steps": 2, "key-value-heads": 1, "dropout": 0.1}),
    "deberta-test": dict(TINY, **{"position-buckets": 16}),
    "modernbert-test": dict(TINY, **{"local-attention": 16, "global-attention-every": 2, "mask-percent": 30}),
    "deberta-resume": dict(TINY, **{"train-steps": 10, "save-steps": 2, "position-buckets": 16, "dropout": 0.1}),
    "modernbert-resume": dict(TINY, **{"train-steps": 10, "save-steps": 2, "local-attention": 16, "dropout": 0.1,
                                       "masking": "span"}),
    "gpt2-wsd-resume": dict(TINY, **{"train-steps": 10, "save-steps": 2, "lr-scheduler": "warmup-stable-decay",
                                     "decay-steps": 4}),
}
# UER-py's recurrent encoders: gru and rnn language models, and the bidirectional gru (ELMo's layout)
RECURRENT_RESUME = {"number-of-layers": 2, "hidden-size": 64, "embedding-size": 32, "sequence-length": 32,
                    "warmup-steps": 2, "learning-rate": 5e-3, "batch-size": {"-1": 8}, "train-steps": 10,
                    "save-steps": 2, "logging-steps": 1, "dropout": 0.1}
PRESETS.update({"gru-resume": dict(RECURRENT_RESUME, family="lstm", cell="gru"),
                "rnn-resume": dict(RECURRENT_RESUME, family="lstm", cell="rnn"),
                "bigru-resume": dict(RECURRENT_RESUME, family="elmo", cell="gru")})


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    return write_presets(tmp_path_factory, PRESETS)


def pretrain_command(params, tokenizer_dir, model_dir, model_type, *extra, entry=None):
    """(arguments, environment) of a run_pretraining.py run with its own cache, logs and run name;
    ``entry``: the command that starts it (default: the script)."""
    entry = entry or [sys.executable, os.path.join(ROOT, "run_pretraining.py")]
    args = [*entry, "--input_file", SAMPLE_CORPUS,
            "--tokenizer_dir", tokenizer_dir, "--parameter_file", params, "--model_type", model_type,
            "--model_dir", str(model_dir), "--logging_dir", str(model_dir) + "-runs", "--run_name", "test", *extra]
    return args, dict(os.environ, JA_PRETRAINING_CACHE=str(model_dir) + "-cache")


def pretrain(params, tokenizer_dir, model_dir, model_type, *extra, check=True, cwd=None, entry=None):
    args, env = pretrain_command(params, tokenizer_dir, model_dir, model_type, *extra, entry=entry)
    result = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
        for noise in ("Removed shared tensor", "Traceback", "LOAD REPORT"):  # the output is progress and figures
            assert noise not in result.stdout + result.stderr, (result.stdout + result.stderr)[-3000:]
    return result


def kill_once_saved(params, tokenizer_dir, model_dir, model_type, checkpoint, *extra, entry=None):
    """Start a run and kill -9 it as soon as ``checkpoint`` exists."""
    args, env = pretrain_command(params, tokenizer_dir, model_dir, model_type, *extra, entry=entry)
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (model_dir / checkpoint).exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


def logged(model_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = str(model_dir) + "-runs/test"
    events = EventAccumulator(runs)
    events.Reload()
    return [e.value for e in events.Scalars(tag)]


def weights(directory):
    from safetensors.torch import load_file

    return load_file(os.path.join(directory, "model.safetensors"))


WHOLE_WORD = ("--do_whole_word_mask",)


@pytest.mark.parametrize(
    "model_type,tags,check,masking",
    [
        ("bert-test", ["loss/mlm", "loss/nsp"], "fill-mask", WHOLE_WORD),
        ("albert-test", ["loss/mlm", "loss/sop"], "fill-mask", WHOLE_WORD),
        ("gpt2-test", ["loss/lm"], "text-generation", WHOLE_WORD),
        ("t5-test", ["loss/span"], "generate", WHOLE_WORD),  # transformers 5 has no text2text pipeline
        ("roberta-test", ["loss/mlm"], "fill-mask", WHOLE_WORD),
        ("llama-test", ["loss/lm"], "text-generation", WHOLE_WORD),
        # with a held-out split: its figures logged
        ("deberta-test", ["loss/mlm", "eval/loss/mlm"], "fill-mask",
         ("--masking", "ngram", "--validation_split_percentage", "10")),
        ("modernbert-test", ["loss/mlm", "eval/loss/mlm"], "fill-mask",
         ("--masking", "span", "--validation_split_percentage", "10")),
    ],
)
def test_family_trains_and_loads_in_a_pipeline(params, wordpiece_dir, tmp_path, model_type, tags, check, masking):
    model_dir = tmp_path / model_type
    pretrain(params, wordpiece_dir, model_dir, model_type, *masking, "--peak_tflops", "0.5")
    loss = logged(model_dir, "loss")
    assert len(loss) == 16 and np.mean(loss[-3:]) < np.mean(loss[:3]) - 0.3, loss
    for tag in tags + ["lr", "grad_norm", "tokens_per_second", "examples_seen", "tflops_per_second", "mfu",
                       "data_wait_ratio"]:
        assert logged(model_dir, tag), tag
    padding = logged(model_dir, "padding_ratio")
    if model_type.startswith(("bert", "albert")):  # pairs shorter than the sequence are padded
        assert all(0 <= p < 0.9 for p in padding) and max(padding) > 0, padding
    else:  # packed blocks and exact T5 lengths have none
        assert padding == [0.0] * len(padding)
    assert logged(model_dir, "mfu") == pytest.approx([t / 0.5 for t in logged(model_dir, "tflops_per_second")])
    assert sorted(p for p in os.listdir(model_dir) if p.startswith("checkpoint-")) == ["checkpoint-16", "checkpoint-8"]
    auto = FAMILIES[model_type.split("-")[0]].auto_class  # what the model card says to load it with
    code = f"""
import transformers
from transformers import pipeline
model = getattr(transformers, {auto!r}).from_pretrained({str(model_dir)!r})
task = {check!r}
if task == "fill-mask":
    tokenizer = None
    if {model_type!r}.startswith("modernbert"):  # as its model card says: AutoTokenizer gives another class
        try:
            other = type(transformers.AutoTokenizer.from_pretrained({str(model_dir)!r})).__name__
        except ValueError:
            other = "none"
        assert other != "BertJapaneseTokenizer", "transformers loads it now: simplify modernbert's usage lines"
        tokenizer = transformers.BertJapaneseTokenizer.from_pretrained({str(model_dir)!r})
    out = pipeline(task, model={str(model_dir)!r}, tokenizer=tokenizer)("朝早く[MASK]て、窓を開けた。")
    assert len(out) == 5 and all("token_str" in o for o in out)
elif task == "text-generation":
    out = pipeline(task, model={str(model_dir)!r})("朝早く起きて", max_new_tokens=5, do_sample=False)
    assert out and "generated_text" in out[0]
else:
    tokenizer = transformers.AutoTokenizer.from_pretrained({str(model_dir)!r})
    assert tokenizer.convert_tokens_to_ids("<extra_id_0>") == model.config.vocab_size - 100
    inputs = tokenizer("朝早く<extra_id_0>て、窓を開けた。", return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert generated.shape[0] == 1 and isinstance(tokenizer.decode(generated[0]), str)
print("ok", type(model).__name__)
"""
    result = run_python(code, cwd=str(tmp_path), block_project=True)
    assert "ok" in result.stdout


@pytest.mark.parametrize("model_type", ["bert-test", "gpt2-test"])
def test_bf16_on_the_cpu_trains(params, wordpiece_dir, tmp_path, model_type):
    model_dir = tmp_path / model_type
    pretrain(params, wordpiece_dir, model_dir, model_type, "--bf16")
    loss = logged(model_dir, "loss")
    assert all(np.isfinite(loss)) and np.mean(loss[-3:]) < np.mean(loss[:3]) - 0.3, loss
    assert weights(model_dir)  # saved in float32, loadable


def test_kill_and_continue_equals_uninterrupted_run(params, wordpiece_dir, tmp_path):
    # the third run mixes two corpora (the sample as text, weight 1, and as JSON Lines, weight 0.3)
    records = tmp_path / "sample.jsonl"
    records.write_text("".join(json.dumps({"text": line}, ensure_ascii=False) + "\n" for line in sample_lines()[:60]),
                       encoding="utf-8")
    mix = ("--input_file", f"{SAMPLE_CORPUS}:1", f"{records}:0.3")
    # "workers": the uninterrupted run makes its batches in the training process, the killed and
    # continued one in 2 loader workers: the same weights
    workers = ("--dataloader_num_workers", "2")
    for name, model_type, extra, broken_extra in (
            ("bert", "bert-resume", (), ()), ("gpt2", "gpt2-resume", (), ()), ("mix", "gpt2-resume", mix, ()),
            ("roberta", "roberta-resume", (), ()), ("llama", "llama-resume", (), ()),
            ("wsd", "gpt2-wsd-resume", (), ()), ("deberta", "deberta-resume", (), ()),
            ("modernbert", "modernbert-resume", (), ()), ("workers", "bert-resume", (), workers),
            ("gru", "gru-resume", (), ()), ("rnn", "rnn-resume", (), ()), ("bigru", "bigru-resume", (), ())):
        whole, broken = tmp_path / f"{name}-whole", tmp_path / f"{name}-broken"
        pretrain(params, wordpiece_dir, whole, model_type, "--do_whole_word_mask", *extra)
        kill_once_saved(params, wordpiece_dir, broken, model_type, "checkpoint-4", "--do_whole_word_mask", *extra,
                        *broken_extra)
        assert not (broken / "checkpoint-10").exists(), "the run ended before it was killed"
        result = pretrain(params, wordpiece_dir, broken, model_type, "--do_whole_word_mask", "--do_continue", *extra,
                          *broken_extra)
        assert "resumed from" in result.stdout + result.stderr
        assert bool(list(tmp_path.glob(f"{name}-whole-cache/mix-*/mixture.json"))) == (name == "mix")
        expected, got = weights(whole), weights(broken)
        assert expected.keys() == got.keys()
        for name in expected:
            assert torch.equal(expected[name], got[name]), name


def test_whole_word_masking_masks_every_subword_of_a_word():
    rng = np.random.default_rng(0)
    word_ids = [-1] + [w for w in range(40) for _ in range(1 + w % 3)] + [-1]
    ids = list(range(100, 100 + len(word_ids)))
    for seed in range(20):
        masked, labels = mask_tokens(ids, word_ids, np.random.default_rng(seed), mask_id=4, vocab_size=1000,
                                     masking=Masking("whole-word"))
        chosen = labels != -100
        for w in range(40):
            positions = [k for k, x in enumerate(word_ids) if x == w]
            assert len({bool(chosen[k]) for k in positions}) == 1  # all or none of the word
        assert not chosen[0] and not chosen[-1]
        assert 0.10 < chosen.sum() / (len(ids) - 2) < 0.20
    # without whole-word masking some word is split
    split = 0
    for seed in range(20):
        _, labels = mask_tokens(ids, word_ids, np.random.default_rng(seed), 4, 1000)
        chosen = labels != -100
        split += any(len({bool(chosen[k]) for k, x in enumerate(word_ids) if x == w}) > 1 for w in range(40))
    assert split > 0


def test_masks_depend_on_the_example_not_the_batch():
    collator = MaskedLMCollator(mask_id=4, pad_id=0, vocab_size=500, seed=7)
    example = {"input_ids": list(range(10, 40)), "word_ids": list(range(30)), "epoch": 0, "index": 5}
    other = {"input_ids": list(range(50, 60)), "word_ids": list(range(10)), "epoch": 0, "index": 9}
    alone = collator([example])
    together = collator([other, example])
    assert torch.equal(alone["input_ids"][0], together["input_ids"][1][:30])
    assert torch.equal(alone["labels"][0], together["labels"][1][:30])
    next_epoch = collator([dict(example, epoch=1)])
    assert not torch.equal(alone["labels"][0], next_epoch["labels"][0])


def test_parameter_file_validation(tmp_path):
    with pytest.raises(UserError, match="available: albert-base"):
        load_preset(os.path.join(ROOT, "parameter.json"), "bert-huge")
    base = dict(TINY)
    del base["hidden-size"]
    with pytest.raises(UserError, match="missing key.*'hidden-size'"):
        parse_preset("bert-x", base)
    with pytest.raises(UserError, match='"number-of-layers" must be a whole number'):
        parse_preset("bert-x", dict(TINY, **{"number-of-layers": "12"}))
    with pytest.raises(UserError, match="unknown key"):
        parse_preset("bert-x", dict(TINY, **{"hiden-size": 3}))
    with pytest.raises(UserError, match="cannot tell the model family"):
        parse_preset("mystery", TINY)
    preset = parse_preset("bert-x", dict(TINY, **{"batch-size": {"0": 3, "1": 5}, "flozen-layers": 1,
                                                  "pretrained_model_name_or_path": "model/bert"}))
    assert preset.batch_size_for_node(1) == 5 and preset.frozen_layers == 1
    with pytest.raises(UserError, match='no entry for node rank 2.*add "2": N'):
        preset.batch_size_for_node(2)
    with pytest.raises(UserError, match='"masking" must be one of token, whole-word, ngram, span'):
        parse_preset("roberta-x", dict(TINY, masking="words"))
    with pytest.raises(UserError, match="masking, max-ngrams: the gpt2 family predicts no masked tokens"):
        parse_preset("gpt2-x", dict(TINY, **{"masking": "ngram", "max-ngrams": 2}))
    with pytest.raises(UserError, match='"span-geo-prob" must be in'):
        parse_preset("bert-x", dict(TINY, **{"span-geo-prob": 0}))
    with pytest.raises(UserError, match='"local-attention" .* must be an even number'):
        parse_preset("modernbert-x", dict(TINY, **{"local-attention": 7}))
    # keys that were taken silently: a value that means nothing, or one that did nothing
    for key, value, message in (("weight-decay", -0.1, "must not be negative"), ("eval-steps", 0, "at least 1"),
                                ("short-seq-prob", 2, r"in \[0, 1\]"), ("save-total-limit", -1, "keep every"),
                                ("flozen-layers", 1, "freezes layers of a pretrained model"),
                                ("flozen-layers", -2, "must be -1")):
        with pytest.raises(UserError, match=f'"{key}" .*{message}|"{key}" {message}'):
            parse_preset("bert-x", dict(TINY, **{key: value}))
    with pytest.raises(UserError, match='"flozen-layers" 3 is more than the 2 layers'):
        parse_preset("bert-x", dict(TINY, **{"flozen-layers": 3, "pretrained_model_name_or_path": "model/bert"}))
    with pytest.raises(UserError, match='"position-buckets" must be at least 1'):
        parse_preset("deberta-x", dict(TINY, **{"position-buckets": 0}))
    # every shipped preset is valid
    with open(os.path.join(ROOT, "parameter.json")) as f:
        for name, values in json.load(f).items():
            parse_preset(name, values)


def test_cli_errors_are_one_line(params, wordpiece_dir, tmp_path):
    result = pretrain(params, wordpiece_dir, tmp_path / "m", "bert-nope", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --model_type bert-nope is not in")
    result = pretrain(params, wordpiece_dir, tmp_path / "m", "bert-test", "--tokenizer_type", "bpe", check=False)
    assert result.returncode == 2 and "disagrees with" in result.stderr
    for flags, message in ((("--masking", "span"), "error: --masking: the GPT-2 family predicts no masked tokens"),
                           (("--masking", "span", "--do_whole_word_mask"), "contradict each other"),
                           (("--dataloader_num_workers", "-1"), "--dataloader_num_workers must be 0")):
        model_type = "gpt2-test" if "GPT-2" in message else "bert-test"
        result = pretrain(params, wordpiece_dir, tmp_path / "m", model_type, *flags, check=False)
        assert result.returncode == 2 and message in result.stderr.strip().splitlines()[-1], result.stderr[-500:]


def test_refuses_to_overwrite_checkpoints_and_stops_on_nan(params, wordpiece_dir, tmp_path):
    model_dir = tmp_path / "nan"
    result = pretrain(params, wordpiece_dir, model_dir, "bert-nan", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: the loss became nan at step") or "the loss became inf" in message, message
    # the checkpoints written before the NaN are intact, and a fresh run refuses to overwrite them
    existing = sorted(p for p in os.listdir(model_dir) if p.startswith("checkpoint-"))
    assert existing, "no checkpoint before the loss broke"
    for name in existing:
        assert os.path.isfile(model_dir / name / "trainer_state.json")
    result = pretrain(params, wordpiece_dir, model_dir, "bert-test", check=False)
    assert result.returncode == 2 and "--do_continue" in result.stderr and "--overwrite_output_dir" in result.stderr
    assert sorted(p for p in os.listdir(model_dir) if p.startswith("checkpoint-")) == existing


def test_continued_pretraining_keeps_frozen_layers(params, wordpiece_dir, tmp_path):
    source = tmp_path / "source"
    presets = json.load(open(params))
    presets["bert-source"] = dict(TINY, **{"train-steps": 2, "save-steps": 2})
    presets["bert-continue"] = dict(TINY, **{"train-steps": 3, "save-steps": 3,
                                             "pretrained_model_name_or_path": str(source), "flozen-layers": 1})
    local = tmp_path / "parameter.json"
    local.write_text(json.dumps(presets))
    pretrain(str(local), wordpiece_dir, source, "bert-source")
    pretrain(str(local), wordpiece_dir, tmp_path / "continued", "bert-continue")
    before, after = weights(source), weights(tmp_path / "continued")
    frozen = [n for n in before if n.startswith("bert.embeddings.") or n.startswith("bert.encoder.layer.0.")]
    trained = [n for n in before if n.startswith("bert.encoder.layer.1.")]
    assert frozen and trained
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert all(not torch.equal(before[n], after[n]) for n in trained if n.endswith("weight"))

"""The training forwards (sparse MLM head, chunked LM loss) equal the stock computation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pretraining.families import losses
from pretraining.modeling import install
from pretraining.data.collators import CausalLMCollator, MaskedLMCollator, Seq2SeqCollator
from pretraining.presets import parse_preset
from pretraining.families import FAMILIES, Vocabulary
from test_pretraining import TINY

VOCAB = Vocabulary(size=300, pad_id=0, cls_id=2, sep_id=3, mask_id=4)


def stock_sum_ce(logits, labels):
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=-100,
                           reduction="sum")


@pytest.mark.parametrize("rows,chunk", [(37, 8), (37, 37), (37, 100)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_cross_entropy_equals_the_plain_loss_and_gradients(rows, chunk, with_bias):
    torch.manual_seed(0)
    hidden = torch.randn(rows, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    bias = torch.randn(50, requires_grad=True) if with_bias else None
    labels = torch.randint(0, 50, (rows,))
    labels[::5] = -100
    total, count = losses.linear_cross_entropy(hidden, weight, bias, labels, chunk_rows=chunk)
    (2.5 * total).backward()
    got = [t.grad.clone() for t in (hidden, weight, bias) if t is not None]
    for t in (hidden, weight, bias):
        if t is not None:
            t.grad = None
    expected = stock_sum_ce(F.linear(hidden, weight, bias), labels)
    (2.5 * expected).backward()
    assert int(count) == int((labels != -100).sum())
    assert torch.allclose(total, expected, rtol=1e-5)
    for a, t in zip(got, [t for t in (hidden, weight, bias) if t is not None]):
        assert torch.allclose(a, t.grad, rtol=1e-4, atol=1e-6)


def test_linear_cross_entropy_under_bf16_autocast_keeps_float32_loss():
    torch.manual_seed(0)
    hidden, weight = torch.randn(64, 32, requires_grad=True), torch.randn(100, 32, requires_grad=True)
    labels = torch.randint(0, 100, (64,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, _ = losses.linear_cross_entropy(hidden, weight, None, labels, chunk_rows=16)
    total.backward()
    assert total.dtype == torch.float32 and hidden.grad.dtype == torch.float32 and weight.grad.dtype == torch.float32
    expected = stock_sum_ce(F.linear(hidden, weight), labels)
    assert torch.allclose(total, expected, rtol=2e-2)


def mlm_batch(seed, rows=4, length=24, pairs=True, label="next_sentence_label"):
    rng = np.random.default_rng(seed)
    items = []
    for index in range(rows):
        n = int(rng.integers(length // 2, length))
        item = {"input_ids": rng.integers(5, VOCAB.size, n).tolist(), "word_ids": list(range(n)), "epoch": 0,
                "index": index}
        if pairs:
            item["token_type_ids"] = [0] * (n // 2) + [1] * (n - n // 2)
            item[label] = int(rng.integers(0, 2))
        items.append(item)
    return MaskedLMCollator(VOCAB.mask_id, VOCAB.pad_id, VOCAB.size, seed=seed)(items)


def model_for(family, **extra):
    preset = parse_preset(f"{family}-x", dict(TINY, **{"dropout": 0.0, **extra}))
    spec = FAMILIES[family]
    torch.manual_seed(0)
    return spec, spec.create(preset, VOCAB).eval()


@pytest.mark.parametrize("family,pair_name,pair_label,pair_logits", [
    ("bert", "nsp", "next_sentence_label", "seq_relationship_logits"),
    ("albert", "sop", "sentence_order_label", "sop_logits"),
])
def test_sparse_mlm_head_equals_the_full_head(family, pair_name, pair_label, pair_logits):
    spec, model = model_for(family, **({"embedding-size": 32} if family == "albert" else {}))
    batch = mlm_batch(1, label=pair_label)
    with torch.no_grad():
        stock = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      token_type_ids=batch["token_type_ids"])
        install(model, spec.training_forward)
        sparse = model(batch)
    assert torch.allclose(sparse["mlm"][0], stock_sum_ce(stock.prediction_logits, batch["labels"]), rtol=1e-5)
    assert int(sparse["mlm"][1]) == int((batch["labels"] != -100).sum()) == len(batch["mlm_positions"])
    assert torch.allclose(sparse[pair_name][0], stock_sum_ce(getattr(stock, pair_logits), batch[pair_label]),
                          rtol=1e-5)


@pytest.mark.parametrize("family,extra", [("roberta", {}), ("deberta", {"position-buckets": 8}),
                                          ("modernbert", {"local-attention": 8, "global-attention-every": 2})])
def test_masked_lm_sparse_head_equals_the_stock_loss(family, extra):
    """Padded rows too (the batch has rows of several lengths), and ModernBERT's window (8 tokens of 24)."""
    spec, model = model_for(family, **extra)
    batch = mlm_batch(3, pairs=False)
    with torch.no_grad():
        stock = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        install(model, spec.training_forward)
        sparse = model(batch)
    assert torch.allclose(sparse["mlm"][0], stock_sum_ce(stock.logits, batch["labels"]), rtol=1e-5)
    assert int(sparse["mlm"][1]) == int((batch["labels"] != -100).sum())


def test_electra_generator_head_runs_at_masked_positions_only():
    spec, model = model_for("electra", **{"attention-heads": 4, "embedding-size": 32, "generator-size": "1/4"})
    batch = mlm_batch(2)
    with torch.no_grad():
        logits = model.generator(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 token_type_ids=batch["token_type_ids"]).logits
        losses = model(batch)
    assert torch.allclose(losses["generator"][0], stock_sum_ce(logits, batch["labels"]), rtol=1e-5)
    masked = batch["labels"] != -100
    correct = (logits[masked].argmax(-1) == batch["labels"][masked]).sum()
    assert float(losses["acc/generator"][0]) == float(correct)


@pytest.mark.parametrize("family", ["gpt2", "t5", "gatedcnn", "lstm", "elmo", "llama"])
def test_chunked_lm_loss_equals_the_stock_forward(family, monkeypatch):
    monkeypatch.setattr(losses, "CHUNK_ROWS", 7)  # several chunks even for a tiny batch
    extra = {"kernel-size": 3, "block-size": 2} if family == "gatedcnn" else {}
    extra.update({"tie-weights": True, "embedding-size": 32} if family == "lstm" else {})
    extra.update({"key-value-heads": 1, "tie-weights": True} if family == "llama" else {})
    spec, model = model_for(family, **extra)
    torch.manual_seed(3)
    if family == "t5":
        batch = Seq2SeqCollator()([{"input_ids": torch.randint(5, 300, (20,)).tolist(),
                                    "labels": torch.randint(5, 300, (6,)).tolist()} for _ in range(3)])
    else:
        batch = CausalLMCollator()([{"input_ids": torch.randint(5, 300, (20,)).tolist()} for _ in range(3)])
    ids = batch["input_ids"]
    with torch.no_grad():
        if family == "t5":
            logits = model(input_ids=ids, labels=batch["labels"]).logits
            expected = {"span": stock_sum_ce(logits, batch["labels"])}
        elif family == "elmo":
            out = model(input_ids=ids)
            expected = {"forward": stock_sum_ce(out.forward_logits[:, :-1], ids[:, 1:]),
                        "backward": stock_sum_ce(out.backward_logits[:, 1:], ids[:, :-1])}
        else:
            expected = {"lm": stock_sum_ce(model(input_ids=ids).logits[:, :-1], ids[:, 1:])}
        install(model, spec.training_forward)
        got = model(batch)
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.allclose(got[name][0], expected[name], rtol=1e-5), (name, got[name][0], expected[name])


FLOP_EXTRA = {"albert": {"embedding-size": 32}, "llama": {"key-value-heads": 1}, "deberta": {"position-buckets": 64},
              "modernbert": {"local-attention": 8, "global-attention-every": 2},
              "electra": {"embedding-size": 32, "generator-size": "1/2"}}


@pytest.mark.parametrize("family", ["bert", "albert", "roberta", "deberta", "modernbert", "electra", "gpt2", "llama",
                                    "t5"])
def test_flop_formula_is_near_the_counted_flops(family):
    """Each family's formula against torch's count of a training step's matrix products. The
    formulas count the MLM heads' transform at every token (it runs at the masked ones), so they
    may be above the count; an attention or output-layer term missing falls below 0.9."""
    from torch.utils.flop_counter import FlopCounterMode

    spec, model = model_for(family, **{"hidden-size": 128, "ffn-inner-hidden-size": 512, "sequence-length": 64,
                                       **FLOP_EXTRA.get(family, {})})
    model.train()
    torch.manual_seed(0)
    if spec.masked_lm:
        batch = mlm_batch(1, rows=4, length=64, pairs=spec.example_kind != "packed",
                          label="sentence_order_label" if family == "albert" else "next_sentence_label")
    elif family == "t5":
        batch = Seq2SeqCollator()([{"input_ids": torch.randint(5, 300, (64,)).tolist(),
                                    "labels": torch.randint(5, 300, (16,)).tolist()} for _ in range(4)])
    else:
        batch = CausalLMCollator()([{"input_ids": torch.randint(5, 300, (64,)).tolist()} for _ in range(4)])
    if spec.training_forward is not None:
        install(model, spec.training_forward)
    formula = spec.flops(model)
    with FlopCounterMode(display=False) as counter:
        out = model(batch)
        sum(value[0] for name, value in out.items() if not name.startswith("acc/")).backward()
    assert 0.9 < formula(batch) / counter.get_total_flops() < 1.2, (formula(batch), counter.get_total_flops())

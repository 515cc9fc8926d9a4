"""A family is one registry entry: adding a toy family needs nothing else to parse, build and learn."""

import numpy as np
import pytest
import torch

from conftest import SAMPLE_CORPUS
from ja_common.errors import UserError
from pretraining import registry
from pretraining.collators import CausalLMCollator
from pretraining.build import ExampleSpec
from pretraining.data import load_examples, prepare_examples
from pretraining.presets import parse_preset
from pretraining.sampler import GlobalBatchSampler, IndexedExamples
from pretraining.modeling import build_model, optimizer_for
from tokenizer.encoder import SubwordEncoder


def toy_forward(self, batch):
    """A bag-of-previous-token language model: next token from the embedding of the current one."""
    ids = batch["input_ids"]
    logits = self.head(self.embed(ids[:, :-1]))
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1),
                                             reduction="sum")
    return {"lm": (loss, torch.tensor(ids[:, 1:].numel()))}


def toy_model(preset, vocab):
    model = torch.nn.Module()
    model.embed = torch.nn.Embedding(vocab.size, preset.hidden_size)
    model.head = torch.nn.Linear(preset.hidden_size, vocab.size)
    return model


# the whole of "adding a family": this one entry (with its model and forward above)
TOY = registry.Family("toy", "packed", None, None, None, lambda *a: CausalLMCollator(), toy_forward,
                      create=toy_model, transformer=False)
PRESET = {"family": "toy", "number-of-layers": 1, "hidden-size": 32, "sequence-length": 32, "learning-rate": 0.05,
          "batch-size": {"-1": 16}, "train-steps": 30, "save-steps": 30, "logging-steps": 10}


def test_a_toy_family_is_one_registry_entry(monkeypatch, wordpiece_dir, tmp_path):
    with pytest.raises(UserError, match="cannot tell the model family"):
        parse_preset("toy-mini", PRESET)
    monkeypatch.setitem(registry.FAMILIES, "toy", TOY)
    preset = parse_preset("toy-mini", PRESET)  # presets know it; no transformer keys are required
    assert preset.family == "toy" and preset.example_kind == "packed"
    family = registry.family_of(preset)
    vocab = registry.vocabulary_for(preset, SubwordEncoder(wordpiece_dir))
    folder = prepare_examples([SAMPLE_CORPUS], wordpiece_dir, ExampleSpec.from_preset(preset, 42),
                              dataset_dir=str(tmp_path / "examples"), show_progress=False)
    examples = IndexedExamples(load_examples(folder)[0])
    model = build_model(family, preset, vocab, seed=0)
    optimizer = optimizer_for(model, preset)
    collator = family.make_collator(preset, vocab, 0, False)
    sampler = GlobalBatchSampler(len(examples), [16], 0, seed=0)
    losses = []
    for step in range(preset.train_steps):
        total, count = model(collator(examples.__getitems__(sampler.indices_for_step(step))))["lm"]
        (total / count).backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float((total / count).detach()))
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0, losses

"""A family is one file and one registration line: a toy family (tests/toy_family.py) runs through
the real entry point (train, checkpoints, kill -9 and --do_continue, final save, load, --do_eval)."""

import json
import os
import sys

import pytest
import torch

from conftest import ROOT, write_presets
from ja_common.errors import UserError
from pretraining.families import FAMILIES
from pretraining.presets import parse_preset
from test_pretraining import kill_once_saved, logged, pretrain, weights

TESTS = os.path.dirname(os.path.abspath(__file__))
TOY_PRESET = {"family": "toy", "number-of-layers": 1, "hidden-size": 32, "sequence-length": 32,
              "learning-rate": 0.05, "batch-size": {"-1": 16}, "train-steps": 200, "save-steps": 10,
              "logging-steps": 10, "dropout": 0.0}
# run_pretraining.py's main, with the family's one registration line before it
ENTRY = [sys.executable, "-c", f"import sys; sys.path[:0] = [{ROOT!r}, {TESTS!r}]; "
         "import toy_family; from pretraining.families import FAMILIES; FAMILIES['toy'] = toy_family.FAMILY; "
         "import run_pretraining; run_pretraining.main(sys.argv[1:])"]
HELD_OUT = ("--validation_split_percentage", "10")


def test_an_unregistered_family_is_refused_and_a_registered_one_parsed(monkeypatch):
    import toy_family

    with pytest.raises(UserError, match="cannot tell the model family"):
        parse_preset("toy-mini", TOY_PRESET)
    monkeypatch.setitem(FAMILIES, "toy", toy_family.FAMILY)
    preset = parse_preset("toy-mini", TOY_PRESET)  # no transformer keys are required
    assert preset.family == "toy" and preset.example_kind == "packed"


@pytest.mark.slow
def test_a_toy_family_runs_end_to_end_through_the_cli(tmp_path_factory, wordpiece_dir, tmp_path):
    import toy_family

    params = write_presets(tmp_path_factory, {"toy-mini": TOY_PRESET})
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    pretrain(params, wordpiece_dir, whole, "toy-mini", *HELD_OUT, entry=ENTRY)
    loss = logged(whole, "loss")
    assert len(loss) == 20 and loss[-1] < loss[0] - 1.0, loss
    assert logged(whole, "tflops_per_second") and logged(whole, "eval/perplexity/lm")
    assert sorted(os.listdir(whole)) == sorted(
        ["checkpoint-180", "checkpoint-190", "checkpoint-200", "config.json", "model.safetensors", "README.md",
         "eval_results.json", "pretraining_preset.json", "tokenizer_config.json", "vocab.txt",
         "tokenizer_training.json", "run_status.json"])
    assert "Load it with" in (whole / "README.md").read_text() and "A Toy model" in (whole / "README.md").read_text()

    kill_once_saved(params, wordpiece_dir, broken, "toy-mini", "checkpoint-10", *HELD_OUT, entry=ENTRY)
    assert not (broken / "checkpoint-200").exists(), "the run ended before it was killed"
    result = pretrain(params, wordpiece_dir, broken, "toy-mini", *HELD_OUT, "--do_continue", entry=ENTRY)
    assert "resumed from" in result.stdout + result.stderr
    expected, got = weights(whole), weights(broken)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)

    model = toy_family.ToyLM.from_pretrained(str(whole))  # the final directory loads as the family's model
    assert torch.equal(model.head.weight.detach(), expected["head.weight"])
    trained = json.loads((whole / "eval_results.json").read_text())
    os.remove(whole / "eval_results.json")
    pretrain(params, wordpiece_dir, whole, "toy-mini", *HELD_OUT, "--do_eval", entry=ENTRY)
    scored = json.loads((whole / "eval_results.json").read_text())
    assert scored["loss/lm"] == pytest.approx(trained["loss/lm"], rel=1e-6)
    assert scored["perplexity/lm"] == pytest.approx(torch.tensor(scored["loss/lm"]).exp().item(), rel=1e-6)

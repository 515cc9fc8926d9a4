"""Folders written by earlier code (tests/fixtures/main-824858b, see its README) still work: the
examples load, the final model loads and evaluates, and its checkpoint resumes bit for bit."""

import json
import os
import shutil

import pytest
import torch

from conftest import ROOT, run_script
from test_pretraining import weights

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "main-824858b")


@pytest.fixture
def old_run(tmp_path):
    """A writable copy of the fixture (the fixture itself is never written)."""
    copy = tmp_path / "old"
    shutil.copytree(FIXTURE, copy)
    return copy


def run(old, *extra):
    args = ["--dataset_dir", str(old / "examples"), "--tokenizer_dir", str(old / "tokenizer"), "--parameter_file",
            str(old / "parameter.json"), "--model_type", "bert-fixture", "--model_dir", str(old / "model"),
            "--logging_dir", str(old / "runs"), "--do_whole_word_mask", "--validation_split_percentage", "10", *extra]
    result = run_script("run_pretraining.py", args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def test_an_old_checkpoint_resumes_to_the_old_final_weights(old_run):
    expected = weights(old_run / "model")  # the uninterrupted run's final weights, written by 824858b
    os.remove(old_run / "model" / "model.safetensors")
    output = run(old_run, "--do_continue")
    assert "resumed from" in output and "checkpoint-4 at step 4" in output
    got = weights(old_run / "model")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    # it kept the per-example generators it began with, and says so now
    assert json.loads((old_run / "model" / "pretraining_preset.json").read_text())["mask_draws"] == "generator"


def test_an_old_model_loads_and_evaluates_as_it_did(old_run):
    from transformers import AutoModelForPreTraining

    model = AutoModelForPreTraining.from_pretrained(old_run / "model")
    assert type(model).__name__ == "BertForPreTraining"
    recorded = json.loads((old_run / "model" / "eval_results.json").read_text())
    run(old_run, "--do_eval")
    scored = json.loads((old_run / "model" / "eval_results.json").read_text())
    for key in ("loss", "loss/mlm", "loss/nsp", "acc/mlm"):
        assert scored[key] == pytest.approx(recorded[key], rel=1e-6), key


def test_old_examples_load_with_their_held_out_split():
    from pretraining.data.build import ExampleSpec
    from pretraining.data.cache import load_examples

    spec = ExampleSpec("nsp", 32, validation_percent=10.0)
    train, info = load_examples(os.path.join(FIXTURE, "examples"), spec)
    held_out, _ = load_examples(os.path.join(FIXTURE, "examples"), spec, split="validation")
    assert len(train) == info["examples"] == 213 and len(held_out) == 7
    row = train[0]
    assert set(row) >= {"input_ids", "word_ids", "token_type_ids", "next_sentence_label"}
    assert len(row["word_ids"]) == len(row["input_ids"]) == len(row["token_type_ids"])


def test_mask_draws_of_old_and_unknown_records():
    """Records without mask_draws drew from per-example generators; a scheme this version does not
    know (a newer version's) is refused rather than guessed."""
    from ja_common.errors import UserError
    from pretraining.run_record import RunRecord

    assert RunRecord.from_json({"model_type": "bert-x"}).draws_masks_by() == "generator"
    assert RunRecord.from_json({"model_type": "bert-x", "mask_draws": "counter"}).draws_masks_by() == "counter"
    with pytest.raises(UserError, match="'hash-v9', which this version does not know"):
        RunRecord.from_json({"model_type": "bert-x", "mask_draws": "hash-v9"}).draws_masks_by()

"""Held-out evaluation: figures, reproducibility, no effect on training, --do_eval, the model card."""

import json

import numpy as np
import pytest
import torch

from conftest import SAMPLE_CORPUS, sample_lines, write_presets
from test_pretraining import TINY, kill_once_saved, logged, pretrain, weights

PRESETS = {
    "bert-eval": dict(TINY, **{"train-steps": 16, "save-steps": 8, "eval-steps": 4, "dropout": 0.1}),
    "gpt2-eval": dict(TINY, **{"train-steps": 16, "save-steps": 8, "eval-steps": 4}),
    "bert-rare-eval": dict(TINY, **{"train-steps": 16, "save-steps": 8, "eval-steps": 1000, "dropout": 0.1}),
}
HELD_OUT = ("--validation_split_percentage", "25")


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    return write_presets(tmp_path_factory, PRESETS)


@pytest.fixture(scope="module")
def bert_run(params, wordpiece_dir, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("eval") / "bert"
    result = pretrain(params, wordpiece_dir, model_dir, "bert-eval", *HELD_OUT)
    return model_dir, result


def test_held_out_figures_are_logged_saved_and_fall(bert_run):
    model_dir, result = bert_run
    losses = logged(model_dir, "eval/loss")
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.2, losses
    for tag in ("eval/loss/mlm", "eval/loss/nsp", "eval/acc/mlm", "eval/acc/nsp"):
        assert len(logged(model_dir, tag)) == 4, tag
    assert result.stdout.count("eval at step") == 4 or result.stderr.count("eval at step") == 4
    final = json.load(open(model_dir / "eval_results.json"))
    assert final["step"] == 16 and final["loss"] == pytest.approx(losses[-1]) and final["examples"] > 0
    assert final["loss"] == pytest.approx(final["loss/mlm"] + final["loss/nsp"])
    at_8 = json.load(open(model_dir / "checkpoint-8" / "eval_results.json"))
    assert at_8["step"] == 8 and at_8["loss"] == pytest.approx(losses[1])
    state = json.load(open(model_dir / "checkpoint-16" / "trainer_state.json"))
    assert state["best_eval_loss"] == pytest.approx(min(losses))
    assert state["mask_draws"] == "counter"  # a new run's masks: data/masks.py, and --do_eval below uses them too


def test_do_eval_gives_the_last_in_training_figures(bert_run, params, wordpiece_dir):
    model_dir, _ = bert_run
    expected = json.load(open(model_dir / "eval_results.json"))
    result = pretrain(params, wordpiece_dir, model_dir, "bert-eval", *HELD_OUT, "--do_eval")
    assert "written to" in result.stdout
    got = json.load(open(model_dir / "eval_results.json"))
    for key in expected:
        if key != "step":
            assert got[key] == pytest.approx(expected[key], rel=1e-6), key
    # a checkpoint too, twice the same figure
    checkpoint = model_dir / "checkpoint-8"
    first = json.load(open(checkpoint / "eval_results.json"))["loss"]
    pretrain(params, wordpiece_dir, checkpoint, "bert-eval", *HELD_OUT, "--do_eval")
    assert json.load(open(checkpoint / "eval_results.json"))["loss"] == pytest.approx(first, rel=1e-6)


def test_model_card(bert_run):
    from huggingface_hub import ModelCard

    model_dir, _ = bert_run
    card = ModelCard.load(model_dir / "README.md")
    assert card.data.language == "ja" and card.data.library_name == "transformers" and "bert" in card.data.tags
    assert "Held-out evaluation" in card.text and "AutoModelForPreTraining" in card.text


def test_evaluation_does_not_touch_training(bert_run, params, wordpiece_dir, tmp_path):
    """Evaluating every 4 steps or only at the end gives the same weights, and so does a killed, continued run."""
    model_dir, _ = bert_run
    rare = tmp_path / "rare"
    pretrain(params, wordpiece_dir, rare, "bert-rare-eval", *HELD_OUT)
    expected = weights(model_dir)
    got = weights(rare)
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    broken = tmp_path / "broken"
    kill_once_saved(params, wordpiece_dir, broken, "bert-eval", "checkpoint-8", *HELD_OUT)
    assert not (broken / "checkpoint-16").exists(), "the run ended before it was killed"
    pretrain(params, wordpiece_dir, broken, "bert-eval", *HELD_OUT, "--do_continue")
    got = weights(broken)
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    assert json.load(open(broken / "eval_results.json"))["loss"] == pytest.approx(
        json.load(open(model_dir / "eval_results.json"))["loss"], rel=1e-6)


def test_language_models_report_perplexity(params, wordpiece_dir, tmp_path):
    model_dir = tmp_path / "gpt2"
    held_out = tmp_path / "held-out.txt"  # a file of its own: a training input is refused as --validation_file
    held_out.write_text("\n".join(sample_lines()[-40:]) + "\n", encoding="utf-8")
    pretrain(params, wordpiece_dir, model_dir, "gpt2-eval", "--validation_file", str(held_out))
    results = json.load(open(model_dir / "eval_results.json"))
    assert results["perplexity/lm"] == pytest.approx(np.exp(results["loss/lm"]))
    losses = logged(model_dir, "eval/loss")
    assert losses[-1] < losses[0]


def test_evaluation_flag_errors(params, wordpiece_dir, tmp_path):
    for extra, expected in (
        (("--validation_split_percentage", "100"), "must be between 0 and 100"),
        (("--validation_split_percentage", "5", "--validation_file", SAMPLE_CORPUS), "give one"),
        (("--do_eval",), "--do_eval needs --model_dir with a model trained by run_pretraining.py"),
    ):
        result = pretrain(params, wordpiece_dir, tmp_path / "m", "bert-eval", *extra, check=False)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert expected in result.stderr.strip().splitlines()[-1], result.stderr

"""ELECTRA: joint training, extraction round trip, continued training, bad input."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, run_python
from ja_common.files import current_umask
from test_pretraining import TINY, logged, pretrain, weights

PRESETS = {
    "electra-test": dict(TINY, **{"attention-heads": 4, "embedding-size": 32, "generator-size": "1/4",
                                  "train-steps": 100, "save-steps": 50, "logging-steps": 5, "batch-size": {"-1": 16},
                                  "learning-rate": 2e-3}),
    "electra-bad": dict(TINY, **{"generator-size": "1/4"}),  # 2 heads: the generator would get half a head
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, wordpiece_dir):
    work = tmp_path_factory.mktemp("electra")
    params = work / "parameter.json"
    params.write_text(json.dumps(PRESETS))
    model_dir = work / "electra"
    pretrain(str(params), wordpiece_dir, model_dir, "electra-test", "--do_whole_word_mask")
    return work, str(params), model_dir


def test_discriminator_learns_to_find_replaced_tokens(trained):
    _, _, model_dir = trained
    replaced = logged(model_dir, "acc/discriminator_replaced")
    original = logged(model_dir, "acc/discriminator_original")
    # After the first steps the discriminator learns the prior (everything "original", which
    # scores 0 on replaced tokens), then starts to find replaced tokens while staying right on
    # the original ones.
    assert np.mean(replaced[-10:]) > 0.02 and min(replaced[-10:]) > 0, replaced
    assert np.mean(original[-10:]) > 0.95
    for tag in ("loss/generator", "loss/discriminator", "acc/generator"):
        assert logged(model_dir, tag)
    generator_loss = logged(model_dir, "loss/generator")
    assert np.mean(generator_loss[-5:]) < np.mean(generator_loss[:5]) - 0.3


def test_extraction_round_trip_without_project(trained, tmp_path):
    work, params, model_dir = trained
    out = tmp_path / "extracted"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "extract_electra_model.py"), "--input_dir", str(model_dir / "checkpoint-100"),
         "--output_dir", str(out), "--parameter_file", params, "--model_type", "electra-test",
         "--generator", "--discriminator"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    from pretraining.models.electra import ElectraPretrainingModel

    combined = ElectraPretrainingModel.from_directories(model_dir / "checkpoint-100" / "generator",
                                                        model_dir / "checkpoint-100" / "discriminator").eval()
    ids = torch.tensor([[2, 1300, 4, 1500, 980, 4, 3]])
    with torch.no_grad():
        expected_generator = combined.generator(input_ids=ids).logits
        expected_discriminator = combined.discriminator(input_ids=ids).logits
    code = f"""
import json, torch
from transformers import AutoModelForMaskedLM, AutoModelForPreTraining, pipeline
g = AutoModelForMaskedLM.from_pretrained({str(out / 'generator')!r}).eval()
d = AutoModelForPreTraining.from_pretrained({str(out / 'discriminator')!r}).eval()
assert type(g).__name__ == "ElectraForMaskedLM" and type(d).__name__ == "ElectraForPreTraining"
assert torch.equal(g.electra.embeddings.word_embeddings.weight, d.electra.embeddings.word_embeddings.weight)
ids = torch.tensor({ids.tolist()})
with torch.no_grad():
    print(json.dumps([g(input_ids=ids).logits.tolist(), d(input_ids=ids).logits.tolist()]))
fill = pipeline("fill-mask", model={str(out / 'generator')!r})
assert len(fill("朝早く[MASK]て、窓を開けた。")) == 5
"""
    result = run_python(code, cwd=str(tmp_path), block_project=True)
    got_generator, got_discriminator = json.loads(result.stdout.strip().splitlines()[-1])
    assert torch.allclose(torch.tensor(got_generator), expected_generator, atol=1e-5)
    assert torch.allclose(torch.tensor(got_discriminator), expected_discriminator, atol=1e-5)


def test_continued_training_from_extracted_directories(trained, wordpiece_dir, tmp_path):
    work, params, model_dir = trained
    out = tmp_path / "extracted"
    from electra.extract import extract

    extract(str(model_dir), str(out))  # the final model directory works too
    presets = dict(PRESETS)
    presets["electra-continue"] = dict(PRESETS["electra-test"], **{
        "train-steps": 3, "save-steps": 3, "flozen-layers": 1,
        "pretrained_generator_model_name_or_path": str(out / "generator"),
        "pretrained_discriminator_model_name_or_path": str(out / "discriminator")})
    local = tmp_path / "parameter.json"
    local.write_text(json.dumps(presets))
    pretrain(str(local), wordpiece_dir, tmp_path / "continued", "electra-continue")
    before, after = weights(out / "discriminator"), weights(tmp_path / "continued" / "discriminator")
    frozen = [n for n in before if n.startswith("electra.embeddings.") or n.startswith("electra.encoder.layer.0.")]
    trained_names = [n for n in before if n.startswith("electra.encoder.layer.1.") and n.endswith("weight")]
    assert frozen and trained_names
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert all(not torch.equal(before[n], after[n]) for n in trained_names)


def _extract_fails(args, expected):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "extract_electra_model.py"), *args],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


def test_extraction_bad_input(trained, tmp_path):
    work, params, model_dir = trained
    checkpoint = model_dir / "checkpoint-100"
    _extract_fails(["--input_dir", str(checkpoint), "--output_dir", str(tmp_path / "x")], "pass --generator")
    _extract_fails(["--input_dir", str(tmp_path), "--output_dir", str(tmp_path / "x"), "--generator"],
                   "not a checkpoint of run_pretraining.py")
    half = work / "checkpoint-99"
    shutil.copytree(checkpoint, half)
    os.remove(half / "trainer_state.json")
    _extract_fails(["--input_dir", str(half), "--output_dir", str(tmp_path / "x"), "--generator"], "half-written")
    broken = work / "checkpoint-98"
    shutil.copytree(checkpoint, broken)
    os.remove(broken / "discriminator" / "model.safetensors")
    _extract_fails(["--input_dir", str(broken), "--output_dir", str(tmp_path / "x"), "--discriminator"],
                   "discriminator/ lacks model.safetensors")
    bert = work / "bert-like"
    shutil.copytree(checkpoint, bert)
    record = json.load(open(bert / "pretraining_preset.json"))
    record["family"] = "bert"
    json.dump(record, open(bert / "pretraining_preset.json", "w"))
    _extract_fails(["--input_dir", str(bert), "--output_dir", str(tmp_path / "x"), "--generator"], "not ELECTRA")
    _extract_fails(["--input_dir", str(checkpoint), "--output_dir", str(tmp_path / "x"), "--generator",
                    "--parameter_file", params, "--model_type", "electra-bad"], "disagrees with the checkpoint")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    _extract_fails(["--input_dir", str(checkpoint), "--output_dir", str(existing), "--generator"], "--overwrite")
    assert (existing / "keep.txt").read_text() == "mine"
    for name in ("checkpoint-99", "checkpoint-98", "bert-like"):
        shutil.rmtree(work / name)


def test_generator_without_a_whole_head_is_refused_before_work(trained, wordpiece_dir, tmp_path):
    work, params, _ = trained
    result = pretrain(params, wordpiece_dir, tmp_path / "bad", "electra-bad", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "leaves 0.5 of the 2 attention heads" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "bad").exists()


def test_extraction_never_deletes_the_run(trained, tmp_path):
    """--overwrite with an output that is, holds or lies in the run's own files is refused; the run stays whole."""
    work, _, model_dir = trained
    checkpoint = model_dir / "checkpoint-100"
    before = sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*"))
    for output, expected in ((checkpoint, "is or holds --input_dir"),
                             (model_dir, "is or holds --input_dir"),
                             (work, "is or holds --input_dir"),
                             (checkpoint / "generator", "lies inside the run's own checkpoint-100"),
                             (model_dir / "checkpoint-50", "lies inside the run's own checkpoint-50"),
                             (model_dir / "discriminator", "lies inside the run's own discriminator")):
        _extract_fails(["--input_dir", str(checkpoint), "--output_dir", str(output), "--generator", "--overwrite"],
                       expected)
    # the final model directory as input: the run is the input itself
    for output, expected in ((model_dir / "generator", "lies inside the run's own generator"),
                             (model_dir / "checkpoint-100" / "x", "lies inside the run's own checkpoint-100"),
                             (model_dir, "is or holds --input_dir")):
        _extract_fails(["--input_dir", str(model_dir), "--output_dir", str(output), "--generator", "--overwrite"],
                       expected)
    assert sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*")) == before
    # a new folder inside the final model's directory is its natural place (#26)
    final = model_dir / "extracted-final"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "extract_electra_model.py"), "--input_dir",
                             str(model_dir), "--output_dir", str(final), "--generator", "--discriminator"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(final)) == ["discriminator", "generator"]
    assert sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if "extracted-final" not in str(p)) \
        == before
    shutil.rmtree(final)
    # --overwrite replaces an earlier extraction (here inside the run, as upstream's README does), nothing else
    extracted = model_dir / "extracted-100"
    for _ in range(2):
        result = subprocess.run([sys.executable, os.path.join(ROOT, "extract_electra_model.py"), "--input_dir",
                                 str(checkpoint), "--output_dir", str(extracted), "--generator", "--overwrite"],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(extracted)) == ["generator"]
    assert oct(os.stat(extracted).st_mode & 0o777) == oct(0o777 & ~current_umask())  # the user's umask, not 0700
    (extracted / "notes.txt").write_text("mine")
    _extract_fails(["--input_dir", str(checkpoint), "--output_dir", str(extracted), "--generator", "--overwrite"],
                   "holds more than an earlier extraction")
    assert (extracted / "notes.txt").read_text() == "mine"
    shutil.rmtree(extracted)

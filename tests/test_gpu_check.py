"""benchmarks/gpu_check.py at tiny sizes on the CPU, where the GPU machine's missing packages are
missing too: it must not rot before a GPU runs it."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

# what the GPU machine lacks and the bundle does not bring: MeCab and its dictionary
NO_MECAB = """
import sys
class _NoMecab:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("fugashi", "unidic_lite", "unidic"):
            raise ModuleNotFoundError("not on the GPU machine: " + name)
sys.meta_path.insert(0, _NoMecab())
"""


def gpu_check(*args, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu_check.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, env=env)


@pytest.mark.slow
def test_gpu_check_runs_every_part_at_tiny_sizes_without_mecab(tmp_path):
    work = tmp_path / "work"
    prepared = gpu_check("--prepare_only", "--work", str(work))
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    blocker = tmp_path / "no_mecab"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(NO_MECAB)  # in every process, the launched ones too
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")]))
    table = tmp_path / "table.md"
    result = gpu_check("--work", str(work), "--compile_families", "bert", "--markdown", str(table), env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [line.split(" | ") for line in table.read_text().splitlines()[2:]]
    by_part = {}
    for part, what, figures in rows:
        by_part.setdefault(part.strip("| "), []).append((what, figures.strip("| ")))
    presets = json.load(open(os.path.join(ROOT, "parameter.json")))
    from pretraining.families import FAMILIES

    # every family: a speed row with its figures, and bf16 agreeing with float32
    eager = [what for what, _ in by_part["speed"] if what.endswith("eager")]
    assert len(eager) == len(FAMILIES) and all(what.split()[0] in presets for what in eager)
    for what, figures in by_part["speed"]:
        assert "tokens/s" in figures and "data wait" in figures, (what, figures)
    assert [what for what, _ in by_part["speed"] if what.endswith("compiled")] == ["bert-base compiled"]
    assert len(by_part["precision"]) == len(FAMILIES)
    assert all("within 2% yes" in figures and "fp16 training needs a GPU" in figures for _, figures in by_part["precision"])
    # the sharded runs: FSDP's file (DDP on a CPU) trains, continues and saves what it gathered
    sharded = dict(by_part["sharded"])
    assert sharded["FSDP (fsdp.yaml)"].startswith("result ok; resumed at 4 yes; final equals gathered yes")
    assert "DeepSpeed needs CUDA" in sharded["ZeRO-3 (deepspeed_zero3.yaml)"]


def test_gpu_check_without_prepared_work_says_what_to_run(tmp_path):
    result = gpu_check("--work", str(tmp_path / "nothing"))
    assert result.returncode != 0 and "--prepare_only" in result.stderr and "Traceback" not in result.stderr

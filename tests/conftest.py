import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_CORPUS = os.path.join(ROOT, "sample_corpus", "sample.txt")
AOZORA = os.path.join(os.path.dirname(ROOT), "shared", "corpus", "aozora")
PROJECT_PACKAGES = ("ja_common", "tokenizer", "pretraining", "electra", "train_tokenizer", "run_pretraining",
                    "extract_electra_model")

# Prepended to scripts run "without this project": its packages cannot be imported.
BLOCK_PROJECT = f"""
import sys
class _BlockProject:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {PROJECT_PACKAGES!r}:
            raise ModuleNotFoundError("project code is blocked in this test: " + name)
sys.meta_path.insert(0, _BlockProject())
sys.path[:] = [p for p in sys.path if p not in ("", {ROOT!r})]
"""


def run_python(code, cwd, block_project=False, check=True):
    """Run code in a fresh Python process; returns the CompletedProcess."""
    script = (BLOCK_PROJECT if block_project else "") + code
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    if check and result.returncode != 0:
        raise AssertionError(f"subprocess failed:\n{result.stdout}\n{result.stderr}")
    return result


def write_presets(tmp_path_factory, presets):
    """A parameter.json holding ``presets``, in a folder of its own; returns its path."""
    path = tmp_path_factory.mktemp("params") / "parameter.json"
    path.write_text(json.dumps(presets))
    return str(path)


def run_script(script, args, cwd=None):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, script), *args], cwd=cwd or ROOT, capture_output=True, text=True
    )


def sample_lines():
    with open(SAMPLE_CORPUS, encoding="utf-8") as f:
        return [line for line in f.read().splitlines() if line]


@pytest.fixture(scope="session")
def wordpiece_dir(tmp_path_factory):
    from tokenizer.train import TokenizerSettings, train_tokenizer

    out = tmp_path_factory.mktemp("tok") / "wordpiece"
    train_tokenizer([SAMPLE_CORPUS], str(out), TokenizerSettings(vocab_size=2000), show_progress=False)
    return str(out)


@pytest.fixture(scope="session")
def bpe_dir(tmp_path_factory):
    from tokenizer.train import TokenizerSettings, train_tokenizer

    out = tmp_path_factory.mktemp("tok") / "bpe"
    train_tokenizer([SAMPLE_CORPUS], str(out), TokenizerSettings(tokenizer_type="bpe", vocab_size=2000), show_progress=False)
    return str(out)

"""The README's "Your own corpus" lines, run as written (tiny presets under the names they use)."""

import json
import os
import re
import subprocess

import pytest

from conftest import ROOT, SAMPLE_CORPUS
from test_pretraining import TINY

SCRIPTS = ("train_tokenizer.py", "run_pretraining.py", "extract_electra_model.py")
PRESETS = {
    "bert-base": dict(TINY, **{"train-steps": 20, "save-steps": 10, "logging-steps": 5}),
    "electra-base": dict(TINY, **{"attention-heads": 4, "embedding-size": 32, "generator-size": "1/4",
                                  "train-steps": 10, "save-steps": 10, "logging-steps": 5}),
}


def readme_commands(section="## Your own corpus"):
    """The commands of the first bash block after ``section``, continuation lines joined, comments left out."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    block = re.search(r"```bash\n(.*?)```", text[text.index(section):], re.S).group(1)
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.slow
def test_the_readme_commands_for_your_own_corpus_run(tmp_path):
    (tmp_path / "my_corpus").mkdir()  # the sample's 24 documents ten times: 1% held out is 2 documents
    text = open(SAMPLE_CORPUS, encoding="utf-8").read().strip("\n") + "\n\n"
    (tmp_path / "my_corpus" / "corpus.txt").write_text(text * 10, encoding="utf-8")
    (tmp_path / "parameter.json").write_text(json.dumps(PRESETS))
    for script in SCRIPTS:
        os.symlink(os.path.join(ROOT, script), tmp_path / script)
    env = dict(os.environ, JA_PRETRAINING_CACHE=str(tmp_path / "cache"))
    commands = readme_commands()
    assert len(commands) == 6 and "--do_continue" in commands[2]
    for command in commands:
        result = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
    assert "BertForPreTraining" in subprocess.run(commands[3], shell=True, cwd=tmp_path, env=env,
                                                  capture_output=True, text=True).stdout
    assert json.loads((tmp_path / "my_bert" / "run_status.json").read_text())["status"] == "finished"
    for model in ("generator", "discriminator"):
        assert os.path.isfile(tmp_path / "my_electra" / "extracted" / model / "config.json")

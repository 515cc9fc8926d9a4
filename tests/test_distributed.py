"""Data parallel training on CPU (gloo): 2 processes, 2 simulated nodes with uneven batches, kill and resume."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, SAMPLE_CORPUS
from pretraining.distributed import rank_batch_size
from pretraining.presets import parse_preset
from pretraining.data.sampler import GlobalBatchSampler
from ja_common.errors import UserError

pytestmark = pytest.mark.slow

BASE = {"number-of-layers": 2, "hidden-size": 64, "ffn-inner-hidden-size": 128, "attention-heads": 2,
        "sequence-length": 32, "learning-rate": 1e-3, "warmup-steps": 1, "train-steps": 4, "save-steps": 2,
        "logging-steps": 1, "dropout": 0.0, "accumulation-steps": 2, "eval-steps": 2}
PRESETS = {}
for family in ("gpt2", "bert"):
    PRESETS[f"{family}-single"] = dict(BASE, **{"batch-size": {"-1": 8}})
    PRESETS[f"{family}-nodes"] = dict(BASE, **{"batch-size": {"0": 3, "1": 5}})
PRESETS["gpt2-long-nodes"] = dict(BASE, **{"batch-size": {"0": 3, "1": 5}, "train-steps": 8})


@pytest.fixture(scope="module")
def setup(tmp_path_factory, wordpiece_dir):
    work = tmp_path_factory.mktemp("dist")
    params = work / "parameter.json"
    params.write_text(json.dumps(PRESETS))
    return work, str(params), wordpiece_dir


# accelerate's launcher through the running interpreter: a bare `accelerate` is on PATH only in an activated venv
ACCELERATE_LAUNCH = [sys.executable, "-m", "accelerate.commands.launch"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(setup, model_type, model_dir, launcher=()):
    work, params, tokenizer_dir = setup
    return [*launcher, os.path.join(ROOT, "run_pretraining.py"), "--input_file", SAMPLE_CORPUS,
            "--tokenizer_dir", tokenizer_dir, "--parameter_file", params, "--model_type", model_type,
            "--model_dir", str(model_dir), "--logging_dir", str(work / "runs"),
            "--dataset_dir", str(work / f"examples-{model_type.split('-')[0]}"), "--validation_split_percentage", "20"]


def env():
    return dict(os.environ, OMP_NUM_THREADS="1")


def run_single(setup, model_type, model_dir):
    result = subprocess.run([sys.executable, *command(setup, model_type, model_dir)], capture_output=True,
                            text=True, env=env())
    assert result.returncode == 0, result.stderr[-3000:]


def launch_nodes(setup, model_type, model_dir, extra=()):
    port = free_port()
    processes = []
    for rank in (0, 1):
        launcher = [*ACCELERATE_LAUNCH, "--multi_gpu", "--num_machines", "2", "--num_processes", "2",
                    "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port)]
        processes.append(subprocess.Popen([*command(setup, model_type, model_dir, launcher), *extra],
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(),
                                          start_new_session=True))
    return processes


def wait(processes):
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    for p, out in zip(processes, outputs):
        assert p.returncode == 0, out[-3000:]
    return outputs


def assert_same_weights(dir_a, dir_b, rtol=1e-5):
    from safetensors.torch import load_file

    a, b = load_file(os.path.join(dir_a, "model.safetensors")), load_file(os.path.join(dir_b, "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        if name.endswith("attention.self.key.bias"):
            # Its gradient is zero in exact arithmetic (softmax ignores a shift shared by all keys),
            # so Adam turns rounding noise, which depends on the reduction order, into updates.
            continue
        difference = (a[name] - b[name]).norm() / a[name].norm().clamp(min=1e-12)
        assert difference < rtol, (name, float(difference))


def test_ranks_together_cover_the_single_process_batches():
    single = GlobalBatchSampler(50, [8], 0, seed=3)
    ranks = [GlobalBatchSampler(50, [3, 5], r, seed=3) for r in (0, 1)]
    seen = []
    for step in range(12):  # about two epochs
        expected = single.indices_for_step(step)
        got = ranks[0].indices_for_step(step) + ranks[1].indices_for_step(step)
        assert got == expected
        seen.extend(got)
    first_epoch = [i for e, i in seen if e == 0]
    assert sorted(first_epoch) == list(range(50))  # every example once, none twice
    assert [i for e, i in seen if e == 1][:10] != first_epoch[:10]  # reshuffled


def test_batch_size_by_node_errors(monkeypatch):
    preset = parse_preset("gpt2-x", dict(BASE, **{"batch-size": {"0": 3, "1": 5}}))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert rank_batch_size(preset, 1) == 5
    with pytest.raises(UserError, match="no entry for node rank 2"):
        rank_batch_size(preset, 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(UserError, match="node 0's batch-size 3 does not divide among its 2 processes"):
        rank_batch_size(preset, 0)
    monkeypatch.setenv("GROUP_RANK", "1")
    with pytest.raises(UserError, match="node 1's batch-size 5"):
        rank_batch_size(preset)


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_two_processes_and_two_uneven_nodes_equal_one_process(setup, family):
    work = setup[0]
    single, two, nodes = work / f"{family}-1", work / f"{family}-2", work / f"{family}-nodes"
    run_single(setup, f"{family}-single", single)
    launcher = [*ACCELERATE_LAUNCH, "--multi_gpu", "--num_processes", "2", "--main_process_port", str(free_port())]
    result = subprocess.run(command(setup, f"{family}-single", two, launcher), capture_output=True, text=True, env=env())
    assert result.returncode == 0, result.stderr[-3000:]
    wait(launch_nodes(setup, f"{family}-nodes", nodes))
    expected = json.load(open(single / "eval_results.json"))
    for directory, batches in ((two, [4, 4]), (nodes, [3, 5])):
        state = json.load(open(directory / "checkpoint-4" / "trainer_state.json"))
        assert state["rank_batches"] == batches  # really distributed, not two lone runs
        assert_same_weights(single, directory)
        # held-out figures: every rank scores a share, the sums are reduced: the same as one process
        got = json.load(open(directory / "eval_results.json"))
        assert got.keys() == expected.keys() and got["examples"] == expected["examples"] > 0
        for key in expected:
            assert got[key] == pytest.approx(expected[key], rel=1e-5), key


def test_killed_nodes_continue_to_the_same_weights(setup):
    work = setup[0]
    whole, broken = work / "long-whole", work / "long-broken"
    wait(launch_nodes(setup, "gpt2-long-nodes", whole))
    processes = launch_nodes(setup, "gpt2-long-nodes", broken)
    deadline = time.time() + 240
    while not (broken / "checkpoint-4").exists() and time.time() < deadline:
        time.sleep(0.05)
    for p in processes:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert not (broken / "checkpoint-8").exists(), "the run ended before it was killed"
    outputs = wait(launch_nodes(setup, "gpt2-long-nodes", broken, ["--do_continue"]))
    assert "resumed from" in outputs[0]
    assert_same_weights(whole, broken, rtol=1e-6)


@pytest.mark.parametrize("mistake", [["--model_type", "bert-nonexistent"], ["--no_such_flag"]])
def test_a_user_error_under_two_processes_is_one_line_and_the_launchers_cause(setup, tmp_path, mistake):
    launcher = [*ACCELERATE_LAUNCH, "--quiet", "--multi_gpu", "--num_processes", "2",
                "--main_process_port", str(free_port())]
    result = subprocess.run([*command(setup, "bert-single", tmp_path / "m", launcher), *mistake],
                            capture_output=True, text=True, env=env())
    assert result.returncode != 0
    output = (result.stdout + result.stderr).splitlines()
    ours = [line for line in output if line.startswith("error: ")]
    assert len(ours) == 1, output  # once, not once per rank
    assert "usage:" not in result.stderr and "Traceback" not in result.stderr
    # torchrun's report, printed last by the launcher, names the line as each rank's cause
    causes = [line.split("traceback : ", 1)[1] for line in output if "traceback : " in line]
    assert causes[-1] == ours[0]  # the root cause (rank 0); rank 1 says the same or was stopped
    assert all(cause == ours[0] or cause.startswith("Signal 15") for cause in causes)
    assert not (tmp_path / "m").exists()

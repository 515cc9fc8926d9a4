"""A stop request (a signal, the time budget) saves a checkpoint at the step reached and exits with
EXIT_STOPPED; --do_continue then ends bit for bit on the uninterrupted run's weights."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch

from conftest import ROOT, SAMPLE_CORPUS, write_presets
from pretraining.stopping import EXIT_STOPPED, STATUS_FILE
from test_distributed import ACCELERATE_LAUNCH, free_port
from test_pretraining import logged, pretrain_command, weights

pytestmark = pytest.mark.slow

PRESET = {"number-of-layers": 2, "hidden-size": 64, "ffn-inner-hidden-size": 128, "attention-heads": 2,
          "sequence-length": 32, "warmup-steps": 2, "learning-rate": 2e-3, "batch-size": {"-1": 8},
          "train-steps": 60, "save-steps": 10, "eval-steps": 10, "logging-steps": 1, "dropout": 0.1}
FLAGS = ("--do_whole_word_mask", "--validation_split_percentage", "10")
ENTRY = os.path.join(ROOT, "tests", "stop_entry.py")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, wordpiece_dir):
    params = write_presets(tmp_path_factory, {"bert-stop": PRESET})
    work = tmp_path_factory.mktemp("stopping")
    reference = work / "whole"
    finish(start(params, wordpiece_dir, reference))
    return params, wordpiece_dir, work, weights(reference)


def start(params, tokenizer_dir, model_dir, *extra, entry=None):
    args, env = pretrain_command(params, tokenizer_dir, model_dir, "bert-stop", *FLAGS, *extra, entry=entry)
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process, code=0):
    output = process.communicate(timeout=300)[0]
    assert process.returncode == code, output[-3000:]
    return output


def wait_for(path, process, timeout=120):
    deadline = time.time() + timeout
    while not path.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert path.exists(), "the run never got there"


def checkpoint_steps(model_dir):
    return sorted(int(name.split("-")[1]) for name in os.listdir(model_dir) if name.startswith("checkpoint-"))


def assert_stopped_without_loss(model_dir, output, reason):
    """The newest checkpoint is the last step trained (0 steps lost); the status says stopped."""
    status = json.loads((model_dir / STATUS_FILE).read_text())
    step = status["step"]
    assert status["status"] == "stopped" and status["exit_code"] == EXIT_STOPPED, status
    assert 0 < step < PRESET["train-steps"] and checkpoint_steps(model_dir)[-1] == step, (status, output[-2000:])
    assert len(logged(model_dir, "loss")) == step  # every step trained was logged: none after the checkpoint
    assert f"stopped by {reason} at step {step}" in output and "--do_continue" in output, output[-2000:]
    return step


def continue_and_compare(setup, model_dir, *extra):
    params, tokenizer_dir, _, expected = setup
    output = finish(start(params, tokenizer_dir, model_dir, "--do_continue", *extra))
    assert "resumed from" in output
    got = weights(model_dir)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert json.loads((model_dir / STATUS_FILE).read_text())["status"] == "finished"


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_training_saves_the_step_reached(setup, number):
    params, tokenizer_dir, work, _ = setup
    model_dir = work / f"training-{number.name}"
    process = start(params, tokenizer_dir, model_dir)
    wait_for(model_dir / "checkpoint-10", process)
    time.sleep(random.uniform(0, 0.4))  # a random moment of training
    sent = time.time()
    process.send_signal(number)
    output = finish(process, EXIT_STOPPED)
    print(f"{number.name}: {time.time() - sent:.2f} s from the signal to the exit")
    assert_stopped_without_loss(model_dir, output, number.name)
    continue_and_compare(setup, model_dir)


@pytest.mark.parametrize("when", ["eval", "save"])
def test_a_signal_during_an_evaluation_or_a_checkpoint_write(setup, when):
    """The evaluation or the write in progress finishes; the run stops at the next step boundary."""
    params, tokenizer_dir, work, _ = setup
    model_dir = work / f"during-{when}"
    output = finish(start(params, tokenizer_dir, model_dir, entry=[sys.executable, ENTRY, when, "2"]), EXIT_STOPPED)
    step = assert_stopped_without_loss(model_dir, output, "SIGTERM")
    assert step == 21, step  # the 2nd evaluation and the 2nd write are at step 20: the stop follows the next step
    if when == "eval":
        assert "eval at step 20" in output
    continue_and_compare(setup, model_dir)


def test_a_second_signal_exits_at_once_and_keeps_the_last_checkpoint(setup):
    params, tokenizer_dir, work, _ = setup
    model_dir = work / "twice"
    process = start(params, tokenizer_dir, model_dir, entry=[sys.executable, ENTRY, "twice", "2"])
    output = finish(process, -signal.SIGTERM)
    assert "SIGTERM again: exiting now" in output
    assert checkpoint_steps(model_dir) == [10]  # the write of checkpoint-20 was abandoned, checkpoint-10 kept
    continue_and_compare(setup, model_dir)
    assert not [name for name in os.listdir(model_dir) if name.startswith(".")]  # its staging folder is gone


def test_a_signal_while_building_examples_stops_at_once_and_leaves_nothing(setup, tmp_path):
    params, tokenizer_dir, work, _ = setup
    model_dir, cache = tmp_path / "model", tmp_path / "model-cache"
    output = finish(start(params, tokenizer_dir, model_dir, entry=[sys.executable, ENTRY, "build", "1"]),
                    EXIT_STOPPED)
    assert "stopped by SIGTERM before training began: nothing to save" in output and "Traceback" not in output
    assert not model_dir.exists()
    leftovers = [os.path.join(root, name) for root, dirs, files in os.walk(cache) for name in dirs + files]
    assert not [p for p in leftovers if "partial" in p or p.endswith(".lock")], leftovers
    finish(start(params, tokenizer_dir, model_dir))  # the next run builds and trains
    assert weights(model_dir).keys() == setup[3].keys()


def test_save_minutes_checkpoints_by_the_clock(setup):
    """A fake clock of 10 s a step and save-minutes 1: a checkpoint every 7 steps (the one that sees
    the minute pass is trained first), besides those of save-steps."""
    params, tokenizer_dir, work, expected = setup
    model_dir = work / "clock"
    finish(start(params, tokenizer_dir, model_dir, "--save_minutes", "1", "--eval_steps", "60",
                 entry=[sys.executable, ENTRY, "clock", "10"]))
    assert checkpoint_steps(model_dir) == [50, 57, 60]  # the newest 3 of 7, 10, 14, 20, 27, 30, ... (save-total-limit)
    got = weights(model_dir)
    assert all(torch.equal(expected[k], got[k]) for k in expected)  # checkpoints change nothing


def test_max_minutes_stops_with_a_checkpoint_before_the_budget(setup):
    params, tokenizer_dir, work, _ = setup
    model_dir = work / "budget"
    output = finish(start(params, tokenizer_dir, model_dir, "--max_minutes", "2",
                          entry=[sys.executable, ENTRY, "clock", "10"]), EXIT_STOPPED)
    step = assert_stopped_without_loss(model_dir, output, "the time budget (--max_minutes 2)")
    # 120 s less the real seconds before training, less the margin for a step and a save: about 10 steps
    assert 4 <= step <= 11, step
    continue_and_compare(setup, model_dir)


# ---- two processes (gloo) ----

def launch_two(setup, model_dir, *extra):
    params, tokenizer_dir, _, _ = setup
    launcher = [*ACCELERATE_LAUNCH, "--multi_gpu", "--num_processes", "2", "--main_process_port", str(free_port())]
    args, env = pretrain_command(params, tokenizer_dir, model_dir, "bert-stop", *FLAGS, *extra,
                                 entry=[*launcher, os.path.join(ROOT, "run_pretraining.py")])
    return subprocess.Popen(args, env=dict(env, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def rank_pid(launcher, rank):
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "run_pretraining.py" in " ".join(child.cmdline()):
                return child.pid
        except psutil.NoSuchProcess:
            continue
    raise AssertionError(f"rank {rank} not found")


@pytest.fixture(scope="module")
def two_process_reference(setup):
    model_dir = setup[2] / "two-whole"
    finish(launch_two(setup, model_dir))
    return weights(model_dir)


@pytest.mark.parametrize("target", ["rank 1", "launcher"])
def test_two_processes_stop_at_the_same_step(setup, two_process_reference, target):
    model_dir = setup[2] / f"two-{target.replace(' ', '-')}"
    process = launch_two(setup, model_dir)
    wait_for(model_dir / "checkpoint-10", process)
    time.sleep(random.uniform(0, 0.4))
    pid = rank_pid(process, 1) if target == "rank 1" else process.pid
    sent = time.time()
    os.kill(pid, signal.SIGTERM)
    output = process.communicate(timeout=300)[0]
    print(f"SIGTERM to {target}: {time.time() - sent:.2f} s from the signal to the exit")
    assert process.returncode != 0  # accelerate launch exits 1 whatever its processes' code: the status file says
    reason = "a stop request of another rank" if target == "rank 1" else "SIGTERM"
    step = assert_stopped_without_loss(model_dir, output, reason)
    assert len(set(checkpoint_steps(model_dir))) == len(checkpoint_steps(model_dir))
    params, tokenizer_dir, _, _ = setup
    output = finish(launch_two(setup, model_dir, "--do_continue"))
    assert f"resumed from {model_dir / f'checkpoint-{step}'}" in output
    got = weights(model_dir)
    for name in two_process_reference:
        assert torch.equal(two_process_reference[name], got[name]), name


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_single_process_launcher_leaves_a_checkpoint_and_no_process(setup, number):
    """The one-process accelerate launch forwards no signal; the run asked Linux for SIGTERM when
    its launcher dies, so it saves and exits instead of training on, orphaned, to the end."""
    params, tokenizer_dir, work, _ = setup
    model_dir = work / f"launcher-{number.name}"
    args, env = pretrain_command(params, tokenizer_dir, model_dir, "bert-stop", *FLAGS,
                                 entry=[*ACCELERATE_LAUNCH, "--num_processes", "1",
                                        # the threads of a plain run (the reference): the same arithmetic
                                        "--num_cpu_threads_per_process", str(len(os.sched_getaffinity(0))),
                                        os.path.join(ROOT, "run_pretraining.py")])
    launcher = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(model_dir / "checkpoint-10", launcher)
    run = [c for c in psutil.Process(launcher.pid).children() if "run_pretraining.py" in " ".join(c.cmdline())][0]
    launcher.send_signal(number)
    launcher.wait()
    psutil.wait_procs([run], timeout=120)
    assert not run.is_running(), "the run outlived its launcher"
    status = json.loads((model_dir / STATUS_FILE).read_text())
    assert status["status"] == "stopped" and checkpoint_steps(model_dir)[-1] == status["step"]
    assert len(logged(model_dir, "loss")) == status["step"]
    continue_and_compare(setup, model_dir)


def fake_slurm(folder):
    """srun, scontrol and accelerate stand-ins on PATH: one node, this machine."""
    folder.mkdir()
    scripts = {
        "srun": '#!/usr/bin/env bash\nwhile [[ "$1" == --* ]]; do shift; done\nexport SLURM_NODEID=0\nexec "$@"\n',
        "scontrol": '#!/usr/bin/env bash\ncase "$1" in show) echo 127.0.0.1;; requeue) echo "$2" >> "$REQUEUED";; '
                    'esac\n',
        "accelerate": f'#!/usr/bin/env bash\nshift\nexec {sys.executable} -m accelerate.commands.launch "$@"\n',
    }
    for name, text in scripts.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return str(folder)


def test_the_slurm_script_requeues_a_stopped_run_which_then_continues(setup, two_process_reference, tmp_path):
    params, tokenizer_dir, _, _ = setup
    model_dir, requeued = tmp_path / "model", tmp_path / "requeued"
    env = dict(os.environ, PATH=fake_slurm(tmp_path / "bin") + os.pathsep + os.environ["PATH"], MODEL_TYPE="bert-stop",
               MODEL_DIR=str(model_dir), CORPUS=SAMPLE_CORPUS, TOKENIZER_DIR=tokenizer_dir, PARAMETER_FILE=params,
               GPUS_PER_NODE="2", MAIN_PORT=str(free_port()), SLURM_NNODES="1", SLURM_JOB_NODELIST="node1",
               SLURM_JOB_ID="4242", REQUEUED=str(requeued), OMP_NUM_THREADS="1",
               JA_PRETRAINING_CACHE=str(tmp_path / "cache"),
               EXTRA_ARGS=" ".join([*FLAGS, "--logging_dir", f"{model_dir}-runs", "--run_name", "test"]))
    script = [os.path.join(ROOT, "scripts", "slurm_pretrain.sbatch")]
    job = subprocess.Popen(["bash", *script], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    wait_for(model_dir / "checkpoint-10", job)
    # what --signal=USR1@300 does: the signal to every process of the job step (torchrun forwards it too)
    launcher = psutil.Process(job.pid).children()[0]
    for process in [launcher, *launcher.children()]:
        process.send_signal(signal.SIGUSR1)
    output = job.communicate(timeout=300)[0]
    assert "requeueing job 4242" in output and requeued.read_text() == "4242\n", output[-3000:]
    step = assert_stopped_without_loss(model_dir, output, "SIGUSR1")

    os.remove(requeued)
    output = subprocess.run(["bash", *script], cwd=ROOT, env=env, capture_output=True, text=True).stdout
    assert f"resumed from {model_dir / f'checkpoint-{step}'}" in output and not requeued.exists(), output[-3000:]
    got = weights(model_dir)
    for name in two_process_reference:
        assert torch.equal(two_process_reference[name], got[name]), name


def test_output_to_a_pipe_nobody_reads_no_longer_kills_the_run():
    """accelerate 1.16's one-process launch reads the run's stderr: killed, it leaves a pipe without
    a reader. After silence_unread_output (called on a stop signal) writing to it is harmless."""
    code = ("import sys, time; from ja_common.processes import silence_unread_output\n"
            "time.sleep(0.5)  # the reader is gone by now\n"
            "if sys.argv[1] == 'silenced': silence_unread_output()\n"
            "for _ in range(3): print('x' * 100000, file=sys.stderr, flush=True)\n"
            "print('written', flush=True)\n")
    for how, expected in (("silenced", 0), ("as is", 1)):
        child = subprocess.Popen([sys.executable, "-c", code, how], cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        child.stderr.close()  # nobody reads its stderr any more
        out = child.stdout.read()
        assert child.wait() == expected, how
        assert ("written" in out) == (expected == 0)

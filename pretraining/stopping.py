"""Stopping a run without losing work: scheduler signals, Ctrl-C, a time budget, and checkpoints by
the clock.

A cluster ends a job with a signal before it kills it: SLURM sends SIGTERM (or what
``sbatch --signal=USR1@120`` asks for) at its time limit or on preemption, and a user presses
Ctrl-C. accelerate does nothing with them. Here, one of ``--stop_signals`` (SIGTERM, SIGINT and
SIGUSR1 by default) asks the run to stop:

- before training (building examples, loading the model) the run stops at once: there is nothing
  to save yet, and what was being built is removed as on any interruption;
- during training the step in progress is finished (an evaluation or a checkpoint write in
  progress too), every rank stops at the same step, a checkpoint is written and the processes
  exit with EXIT_STOPPED: ``--do_continue`` then goes on from exactly there;
- a second signal (more than REPEAT_SECONDS after the first: a terminal and a launcher often
  deliver the same one twice) exits at once, leaving the newest complete checkpoint as it is.

The ranks agree through the all-reduce the loop does anyway: each adds its own requests (a
signal received, the time budget reached, a clock checkpoint due) to the losses it reduces, and a
request of any rank is everyone's. On a GPU the reduced requests are read one optimizer step
late, from a pinned copy, so the loop never waits for the device.

Launchers: torchrun (``accelerate launch --multi_gpu``, multi-node) forwards SIGTERM and SIGINT (and
what PET_SIGNALS_TO_HANDLE adds, e.g. SIGUSR1) to its workers and kills them
TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds later (30 by default); the single-process
``accelerate launch`` forwards nothing.
A run started by either asks Linux for SIGTERM when its launcher dies, so a launcher that is
killed (kill -9 included), or dies of a signal it does not forward (SIGUSR1), still leaves a
checkpoint and no process behind.
"""

import json
import os
import signal
import sys
import time

import torch

from ja_common.errors import Stopped, UserError
from ja_common.processes import signal_when_parent_dies, silence_unread_output

from .options import DEFAULT_STOP_SIGNALS

EXIT_STOPPED = 75  # sysexits' EX_TEMPFAIL: stopped early with a checkpoint; the job script requeues
# in model_dir: {"status": "stopped" or "finished", "step": ...}. accelerate launch exits with 1
# whatever its processes' code, so a job script reads this file to decide whether to requeue.
STATUS_FILE = "run_status.json"
REPEAT_SECONDS = 3.0  # a second signal sooner than this is the first delivered twice
DEFAULT_SAVE_SECONDS = 60.0  # what a checkpoint is taken to cost before one has been timed
STEPS_TO_STOP = 3  # the step in progress, the one read late on a GPU, and the next chance to stop


def clock():
    """Seconds on a monotonic clock (tests replace it)."""
    return time.monotonic()


def signal_numbers(names):
    numbers = []
    for name in names:
        text = name.upper() if name.upper().startswith("SIG") else "SIG" + name.upper()
        number = getattr(signal, text, None)
        if not isinstance(number, signal.Signals) or number in (signal.SIGKILL, signal.SIGSTOP):
            raise UserError(f"--stop_signals {name}: not a signal a run can catch (e.g. SIGTERM, SIGINT, SIGUSR1)")
        numbers.append(number)
    return numbers


def launched_by_a_launcher():
    """accelerate's single-process launcher sets ACCELERATE_USE_CPU; torchrun TORCHELASTIC_RUN_ID."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "ACCELERATE_USE_CPU" in os.environ


class StopControl:
    """This process's stop requests (signals, the time budget) and clock checkpoints."""

    def __init__(self, signals=DEFAULT_STOP_SIGNALS, max_minutes=None, save_minutes=None, elapsed=0.0):
        self.signals = signal_numbers(signals)
        self.reason = None  # what asked for the stop: "SIGTERM", "the time budget (--max_minutes 30)", ...
        self.received_at = None  # clock() of the first signal
        self.during_training = False  # before: stop at once; during: at the next step boundary
        now = clock()
        self.deadline = None if not max_minutes else now - elapsed + max_minutes * 60
        self.budget, self.budget_reached = max_minutes, False
        self.save_every = save_minutes * 60 if save_minutes else None
        self.next_save = None if self.save_every is None else now + self.save_every
        self.save_seconds = None  # how long the last checkpoint took
        self.step_started, self.step_seconds = now, 0.0

    def install(self):
        for number in self.signals:
            signal.signal(number, self._received)
        if launched_by_a_launcher():
            signal_when_parent_dies(signal.SIGTERM)
        return self

    def _received(self, number, frame):
        silence_unread_output()  # a killed launcher may have left our output without a reader
        now = clock()
        if self.received_at is not None:
            if now - self.received_at < REPEAT_SECONDS:
                return
            print(f"{signal.Signals(number).name} again: exiting now; the newest complete checkpoint is kept",
                  file=sys.stderr, flush=True)
            signal.signal(number, signal.SIG_DFL)
            os.kill(os.getpid(), number)
            return
        self.reason, self.received_at = signal.Signals(number).name, now
        if not self.during_training:
            raise Stopped(f"stopped by {self.reason} before training began: nothing to save; run the same command "
                          "again to start", EXIT_STOPPED)

    def start_training(self):
        self.during_training = True
        self.step_started = clock()

    # ---- what this rank asks for, summed over the ranks in the loop's all-reduce ----

    def local_requests(self):
        """[stop, save] as 0/1: a signal or the end of the time budget; a clock checkpoint due."""
        now = clock()
        if self.deadline is not None and not self.budget_reached:
            # before a checkpoint has been timed, its cost is taken as 10% of the budget (at most a minute)
            save = self.save_seconds if self.save_seconds is not None else min(DEFAULT_SAVE_SECONDS, self.budget * 6)
            # a request seen now takes effect after this step (on a GPU, after the next one too): stop while
            # that, the next chance to stop, and a checkpoint still fit
            self.budget_reached = now + STEPS_TO_STOP * self.step_seconds + 1.5 * save >= self.deadline
        stop = self.reason is not None or self.budget_reached
        return [float(stop), float(self.next_save is not None and now >= self.next_save)]

    def step_done(self):
        now = clock()
        self.step_seconds, self.step_started = now - self.step_started, now

    def saved(self, seconds):
        """A checkpoint was written (for any reason): the clock starts again, its cost is learned."""
        self.save_seconds = seconds
        if self.save_every is not None:
            self.next_save = clock() + self.save_every

    def seconds_since_signal(self):
        return clock() - self.received_at

    def stop_reason(self):
        if self.reason is not None:
            return self.reason
        if self.budget_reached:
            return f"the time budget (--max_minutes {self.budget:g})"
        return "a stop request of another rank"


def write_status(model_dir, status, step, **details):
    """model_dir/run_status.json, replaced whole (a reader never sees half of it)."""
    path = os.path.join(model_dir, STATUS_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"status": status, "step": step, **details,
                   "exit_code": EXIT_STOPPED if status == "stopped" else 0}, f, indent=2)
    os.replace(path + ".tmp", path)


class Agreement:
    """The requests of all ranks, as reduced by the step's all-reduce: read at once on the CPU, one
    optimizer step late on a GPU (the copy to pinned memory is done by then: no wait)."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.latest, self.previous = None, None

    def received(self, reduced):
        if not self.cuda:
            self.latest = reduced
            return
        host = torch.empty(reduced.shape, dtype=reduced.dtype, pin_memory=True)
        host.copy_(reduced, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.latest = (host, event)

    def read(self):
        """(stop, save) agreed by every rank, at an optimizer step boundary."""
        if not self.cuda:
            values = self.latest.tolist() if self.latest is not None else [0.0, 0.0]
        else:
            ready, self.previous = self.previous, self.latest
            if ready is None:
                return False, False
            ready[1].synchronize()
            values = ready[0].tolist()
        return values[0] > 0, values[1] > 0

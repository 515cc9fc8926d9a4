"""run_pretraining.py's main with a signal sent to itself at a chosen moment, for tests/test_stopping.py:

    python tests/stop_entry.py WHEN N [run_pretraining.py arguments]

WHEN: eval (SIGTERM as the N-th evaluation starts), save (as the N-th model directory is written,
inside a checkpoint write), build (as the examples are being built), twice (as ``save``, then a
second SIGTERM: exits at once), clock (no signal: a fake clock that advances N seconds a step,
for save-minutes and --max_minutes).
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import run_pretraining  # noqa: E402
from pretraining import checkpoints, stopping  # noqa: E402
from pretraining.data import cache  # noqa: E402
from pretraining.evaluate import Evaluator  # noqa: E402

when, n, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
calls = {"count": 0}


def signalling(original, signals=1):
    def wrapper(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == n:
            for _ in range(signals):
                os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    return wrapper


if when == "eval":
    Evaluator.run = signalling(Evaluator.run)
elif when == "save":
    checkpoints.ModelWriter.write = signalling(checkpoints.ModelWriter.write)
elif when == "twice":
    stopping.REPEAT_SECONDS = 0.0  # the second signal is a second request, not the first delivered twice
    checkpoints.ModelWriter.write = signalling(checkpoints.ModelWriter.write, signals=2)
elif when == "build":
    cache._build = signalling(cache._build)
elif when == "clock":
    now = {"seconds": 0.0}
    stopping.clock = lambda: now["seconds"]
    step_done = stopping.StopControl.step_done

    def advancing(self):
        now["seconds"] += n
        step_done(self)

    stopping.StopControl.step_done = advancing
run_pretraining.main(argv)

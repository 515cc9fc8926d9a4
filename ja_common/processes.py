"""Worker processes that never outlive the run that started them."""

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_when_parent_dies(number):
    """Ask Linux for signal ``number`` when the parent process dies (prctl PR_SET_PDEATHSIG); elsewhere
    nothing happens. Returns whether it was set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(number)) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(parent_pid):
    """Call first in a worker: when the parent is killed (kill -9 included), the worker is killed too.

    Linux's prctl(PR_SET_PDEATHSIG) does it (there is no portable way); elsewhere workers run on
    to the end of their task. A parent that died before the call is caught by the pid check.
    """
    signal_when_parent_dies(signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)

"""Worker processes that never outlive the run that started them."""

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def silence_unread_output():
    """Point stdout and stderr at /dev/null where they are pipes nobody reads any more.

    A launcher that pipes a run's output (accelerate 1.16's single-process launch reads its
    stderr) and is killed leaves the pipe without a reader: the run's next progress bar or
    message would raise BrokenPipeError, and the run would die without saving. Linux's poll
    flags such a pipe's write end with POLLERR; a terminal, a file or a pipe still read is kept.
    """
    import select

    poller = select.poll()
    for stream in (sys.stdout, sys.stderr):
        try:
            descriptor = stream.fileno()
        except (AttributeError, OSError, ValueError):  # replaced by a test harness, or closed
            continue
        poller.register(descriptor, select.POLLOUT)
    broken = {descriptor for descriptor, events in poller.poll(0) if events & select.POLLERR}
    if not broken:
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    for descriptor in broken:
        os.dup2(devnull, descriptor)
    os.close(devnull)


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

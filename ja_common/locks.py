"""One builder at a time for a shared output, across processes and machines (a shared filesystem).

The lock is a file created with O_EXCL beside the output; its holder refreshes the file's time
every few seconds while it works. A lock is stale, and is broken, when its holder ran on this
host and is gone, or when its time is older than ``stale_after`` seconds (a holder on another
machine that was killed).
"""

import contextlib
import json
import os
import socket
import threading
import time

from .processes import process_alive

HEARTBEAT_SECONDS = 10


def lock_path(target):
    target = os.path.abspath(target)
    return os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.lock")


def _stale(path, stale_after):
    try:
        with open(path, encoding="utf-8") as f:
            holder = json.load(f)
        if holder.get("host") == socket.gethostname() and not process_alive(int(holder.get("pid", -1))):
            return True
        return time.time() - os.path.getmtime(path) > stale_after
    except FileNotFoundError:
        return False
    except (OSError, ValueError):  # half-written by a holder killed at once: stale when old
        try:
            return time.time() - os.path.getmtime(path) > HEARTBEAT_SECONDS * 3
        except FileNotFoundError:
            return False


@contextlib.contextmanager
def exclusive(target, on_wait=None, stale_after=120, poll=0.5):
    """Hold the lock of ``target`` inside the block; ``on_wait(holder_path)`` is called once if it must wait."""
    path = lock_path(target)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
    waited = False
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            if _stale(path, stale_after):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                continue
            if not waited and on_wait is not None:
                on_wait(path)
            waited = True
            time.sleep(poll)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(me, f)
        break
    stop = threading.Event()

    def heartbeat():
        while not stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(OSError):
                os.utime(path)

    thread = threading.Thread(target=heartbeat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)

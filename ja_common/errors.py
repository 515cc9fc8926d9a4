"""User-facing errors: one line on stderr, a non-zero exit, no traceback."""

import argparse
import errno
import functools
import json
import os
import sys
import time


class UserError(Exception):
    """A mistake in the user's input or flags; the message says what to do."""


class Stopped(KeyboardInterrupt):
    """A run stopped on request (a signal, a time budget): its message (None: print nothing, another
    process says it) and its exit code. An interruption like Ctrl-C, so cleanup code treats it as one."""

    def __init__(self, message, code):
        super().__init__(message)
        self.message, self.code = message, code


def disk_full(error):
    """A write that failed for want of space (or quota): the user's to fix, not a bug."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose mistakes (a missing, unknown or malformed flag) are one line naming the flag
    and exit code 2, instead of the 30-line usage before it: --help shows the usage."""

    def error(self, message):
        raise UserError(f"{message} (see {self.prog} --help)")


def report_user_error(message):
    """Print a user mistake's line. Under torchrun (accelerate launch with several processes) every
    rank meets the same mistake: the line is printed once a node, by local rank 0, and each rank
    writes it to its torchrun error file, so the launcher's failure report, printed after the
    processes exit, names it as each failing rank's cause instead of a link to the docs. (The file
    is torch.distributed.elastic's: {"message": text, "timestamp": seconds}; tests/test_distributed.py
    checks that the report shows it.)"""
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:
        try:
            with open(error_file, "w", encoding="utf-8") as f:
                json.dump({"message": message, "timestamp": int(time.time())}, f)
        except OSError:
            error_file = None  # print it then
    if not error_file or os.environ.get("LOCAL_RANK", "0") == "0":
        print(message, file=sys.stderr, flush=True)
    else:
        time.sleep(1)  # the launcher stops every process when one exits: let local rank 0 print first


def exit_on_user_error(main):
    """Wrap a CLI entry point so user mistakes end with one clear line and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            report_user_error(f"error: {error}")
            sys.exit(2)
        except Stopped as stop:
            if stop.message:
                print(stop.message, file=sys.stderr, flush=True)
            sys.exit(stop.code)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper

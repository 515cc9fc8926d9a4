"""User-facing errors: one line on stderr, a non-zero exit, no traceback."""

import errno
import functools
import sys


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


def exit_on_user_error(main):
    """Wrap a CLI entry point so user mistakes end with one clear line and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except Stopped as stop:
            if stop.message:
                print(stop.message, file=sys.stderr, flush=True)
            sys.exit(stop.code)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper

"""User-facing errors: one line on stderr, a non-zero exit, no traceback."""

import functools
import sys


class UserError(Exception):
    """A mistake in the user's input or flags; the message says what to do."""


def exit_on_user_error(main):
    """Wrap a CLI entry point so user mistakes end with one clear line and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper

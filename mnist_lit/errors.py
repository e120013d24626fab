"""Bad input from the user, and how the commands report it: one line on stderr, never a traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


class UserError(ValueError):
    """Bad input, not a bug: the CLI prints the one-line message, exits with status 2 and writes nothing."""


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def first_line(err: BaseException) -> str:
    """torch's load errors run to a dozen lines of advice; the first one says what went wrong."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def run_reporting_errors(command: Callable[[], int]) -> int:
    """Run a command; UserError → its line and status 2; any other error → one line and status 1.

    ``MNIST_LIT_DEBUG=1`` lets unexpected errors through with their traceback.
    """
    try:
        return command()
    except UserError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # piped into `head`: stop quietly, and keep Python from complaining at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as err:
        if os.environ.get("MNIST_LIT_DEBUG"):
            raise
        print(f"error: unexpected {type(err).__name__}: {one_line(err)} (set MNIST_LIT_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1

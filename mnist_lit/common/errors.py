"""Bad input from the user, and how the commands report it: one line on stderr, never a traceback."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable


class UserError(ValueError):
    """Bad input, not a bug: the CLI prints the one-line message, exits with status 2 and writes nothing."""


class RunFailed(Exception):
    """A run that started and could not finish (a write fault, a diverged training): its one line, exit status 1."""


# What the disk, not the program, did wrong, and what the user can do about it.
WRITE_FAULTS = {
    errno.ENOSPC: ("disk full", "free some space"),
    errno.EDQUOT: ("disk quota exceeded", "free some space"),
    errno.EFBIG: ("file too large for its file system", "free some space"),
    errno.EROFS: ("read-only file system", "make it writable"),
    errno.EACCES: ("permission denied", "make it writable"),
    errno.EPERM: ("permission denied", "make it writable"),
    errno.ENOENT: ("its folder was deleted", "put the folder back"),
}


class WriteError(OSError):
    """A file mnist_lit was writing could not be written (``atomic.replaced_on_success`` raises it, naming the file):
    unlike a bare ENOENT, which may come from a read, a missing folder here means it was deleted during the run."""


def write_fault(err: BaseException | None) -> OSError | None:
    """The write fault behind ``err``, if any: an OSError with one of ``WRITE_FAULTS``' errnos somewhere in its chain
    of causes (torch and tensorboard wrap them), the one naming a file preferred."""
    faults, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in WRITE_FAULTS and (
                err.errno != errno.ENOENT or isinstance(err, WriteError)):
            faults.append(err)
        err = err.__cause__ or err.__context__
    return next((f for f in faults if f.filename), faults[0] if faults else None)


def describe_write_fault(fault: OSError, what: str | None = None) -> str:
    """``FILE: cannot write (disk full: No space left on device)``; ``what`` names the file if the OSError does not."""
    cause, detail = WRITE_FAULTS[fault.errno][0], fault.strerror or os.strerror(fault.errno)
    reason = cause if cause == detail.lower() else f"{cause}: {detail}"
    return f"{fault.filename or what or 'a file'}: cannot write ({reason})"


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def first_line(err: BaseException) -> str:
    """torch's load errors run to a dozen lines of advice; the first one says what went wrong."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def run_reporting_errors(command: Callable[[], int]) -> int:
    """Run a command; UserError → its line and status 2; a write fault (disk full, read-only, ...), RunFailed or any
    other error → one line and status 1.

    ``MNIST_LIT_DEBUG=1`` lets unexpected errors through with their traceback.
    """
    try:
        return command()
    except UserError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except RunFailed as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # piped into `head`: stop quietly, and keep Python from complaining at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as err:
        if os.environ.get("MNIST_LIT_DEBUG"):
            raise
        fault = write_fault(err)
        if fault is not None:
            print(f"error: {describe_write_fault(fault)}; nothing was written: "
                  f"{WRITE_FAULTS[fault.errno][1]} and run the command again", file=sys.stderr)
            return 1
        print(f"error: unexpected {type(err).__name__}: {one_line(err)} (set MNIST_LIT_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1

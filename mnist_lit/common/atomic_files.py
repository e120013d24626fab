"""Every file mnist_lit writes goes through ``replaced_on_success``: a reader, or a run killed half-way through a
save, sees the old file or the new one, never half of one."""

from __future__ import annotations

import glob
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mnist_lit.common.errors import WriteError, write_fault

HOST = socket.gethostname().replace(os.sep, "_")


class Discard(Exception):
    """Raise inside ``replaced_on_success`` to drop the new file quietly and leave ``target`` as it was."""


@contextmanager
def replaced_on_success(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; if the block succeeds, flush it to disk and rename it over
    ``target`` in one step; if it raises, delete it (``Discard`` is swallowed, other errors propagate; a write fault,
    such as a full disk, as a ``WriteError`` naming ``target``).

    The temporary file is in the target's own folder because only a rename within one file system is atomic
    (Lightning's default checkpoint save stages its file in the system temp folder, and a move from there to another
    disk is a copy that a kill can cut in half). Its name, ``.NAME.HOST-PID.RANDOM.part``, says which process writes
    it, so that a later save can tell the leftover of a killed process from another live process's file.
    """
    target = Path(target)
    try:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{HOST}-{os.getpid()}.", suffix=".part")
    except OSError as err:
        raise WriteError(err.errno, err.strerror, str(target)) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it a plain open()'s permissions
        os.replace(tmp, target)
    except Discard:
        pass
    except Exception as err:
        fault = write_fault(err)
        if fault is None or isinstance(fault, WriteError) or fault.filename not in (None, str(tmp)):
            raise
        raise WriteError(fault.errno, fault.strerror, str(target)) from err
    finally:
        tmp.unlink(missing_ok=True)
    remove_dead_leftovers(target)


def remove_dead_leftovers(target: Path) -> None:
    """Delete the temporary files of ``target`` left by processes of this host that no longer exist (killed while
    saving). Files of live processes, and of other hosts sharing the folder, are never touched."""
    prefix = f".{target.name}.{HOST}-"
    for leftover in target.parent.glob(f"{glob.escape(prefix)}*.part"):
        pid = leftover.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True

"""Every file mnist_lit writes goes through ``replaced_on_success``: a reader, or a run killed half-way through a
save, sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mnist_lit.errors import UserError


class Discard(Exception):
    """Raise inside ``replaced_on_success`` to drop the new file quietly and leave ``target`` as it was."""


@contextmanager
def replaced_on_success(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; if the block succeeds, flush it to disk and rename it over
    ``target`` in one step; if it raises, delete it (``Discard`` is swallowed, other errors propagate).

    The temporary file is in the target's own folder because only a rename within one file system is atomic
    (Lightning's default checkpoint save stages its file in the system temp folder, and a move from there to another
    disk is a copy that a kill can cut in half).
    """
    target = Path(target)
    try:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    except OSError as err:
        raise UserError(f"{target}: cannot write in {target.parent} ({err.strerror or err})") from None
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
    finally:
        tmp.unlink(missing_ok=True)

"""Where a ``tune`` study lives, and what several processes on it need: Optuna's RDB storage (SQLite beside the runs,
or a database server), a lock held while a process takes its next trial, heartbeats, and a way to tell that a trial's
process on this machine has died."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from optuna.storages import RDBStorage

from mnist_lit.common.errors import UserError, one_line


def storage_kwargs(url: str) -> dict[str, Any]:
    backend = url.split(":", 1)[0].split("+", 1)[0]
    if backend == "sqlite":  # wait for another process's write instead of failing with "database is locked"
        return {"connect_args": {"timeout": 60}}
    if backend in ("postgresql", "mysql"):
        return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    return {}


def with_driver(url: str) -> str:
    """``postgresql://...`` with psycopg 3 (the ``postgresql`` extra) as its driver: SQLAlchemy 2.0 would otherwise
    look for psycopg2, 2.1 for psycopg. A URL that names its driver (``postgresql+psycopg2://``) is kept."""
    if url.startswith("postgresql://"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            return url
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL at all: nothing to hide
        return url


def check_storage(url: str, given: str | None = None) -> None:
    """A database URL Optuna can use, whose server answers; a ``UserError`` otherwise, naming the URL as ``given``
    (without its password). Connects, writes nothing (SQLite files are only checked: connecting would create them)."""
    from sqlalchemy import create_engine, exc
    from sqlalchemy.engine import make_url

    shown = hide_password(given or url)
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        raise UserError(f"--storage {shown}: not a database URL; give postgresql://USER:PASSWORD@HOST:PORT/DATABASE "
                        f"(or sqlite:///FILE)") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise UserError(f"--storage {shown}: an in-memory database is not shared; give sqlite:///FILE")
        folder = Path(parsed.database).expanduser().resolve().parent
        if not folder.is_dir():
            raise UserError(f"--storage {shown}: the folder {folder} does not exist")
        return
    try:
        engine = create_engine(parsed, **storage_kwargs(url))
    except (exc.NoSuchModuleError, ImportError) as err:
        extra = " (pip install 'mnist_lit[postgresql]')" if backend == "postgresql" else ""
        raise UserError(f"--storage {shown}: no database driver for {parsed.drivername}{extra}: {one_line(err)}") \
            from None
    except (exc.ArgumentError, TypeError, ValueError) as err:
        raise UserError(f"--storage {shown}: {one_line(err)}") from None
    try:
        with engine.connect():
            pass
    except exc.SQLAlchemyError as err:
        reason = next((line.strip() for line in str(getattr(err, "orig", None) or err).splitlines() if line.strip()),
                      type(err).__name__)
        raise UserError(f"--storage {shown}: cannot connect: {reason}") from None
    finally:
        engine.dispose()


class AskLock:
    """Held while a process counts the study's trials and takes the next one, so that processes started together run
    N trials in all, not one more each: a file lock beside a SQLite database, a PostgreSQL advisory lock (or MySQL's
    GET_LOCK) otherwise. Other databases get no lock (docs/tuning.md)."""

    def __init__(self, url: str, study: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        self.backend = parsed.get_backend_name()
        self.key = int.from_bytes(hashlib.sha256(f"mnist_lit tune {study}".encode()).digest()[:8], "big", signed=True)
        self.name = f"mnist_lit_tune_{self.key & 0xFFFFFFFF:x}"
        self.path = Path(parsed.database).expanduser().with_suffix(".lock") if self.backend == "sqlite" else None
        self.engine = create_engine(parsed, **storage_kwargs(url)) if self.backend in ("postgresql", "mysql") else None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if self.path is not None:
            with open(self.path, "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)
            return
        if self.engine is None:
            yield
            return
        from sqlalchemy import text

        take, give = (("SELECT pg_advisory_lock(:k)", "SELECT pg_advisory_unlock(:k)") if self.backend == "postgresql"
                      else ("SELECT GET_LOCK(:n, -1)", "SELECT RELEASE_LOCK(:n)"))
        with self.engine.connect() as connection:
            connection.execute(text(take), {"k": self.key, "n": self.name})
            try:
                yield
            finally:
                connection.execute(text(give), {"k": self.key, "n": self.name})
                connection.commit()


class Heartbeat:
    """Records the running trial's heartbeat in the study every ``interval`` seconds (Optuna's mechanism: the trial of
    a process that stops beating, killed or its machine gone, is failed by the others and run again)."""

    def __init__(self, storage: RDBStorage, trial_id: int, interval: int) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="optuna-heartbeat")
        self.storage.record_heartbeat(trial_id)
        self.thread.start()

    def _beat(self) -> None:
        while not self.stop_event.wait(self.interval):
            with contextlib.suppress(Exception):  # the database away for a moment: the next beat tries again
                self.storage.record_heartbeat(self.trial_id)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join()


def process_id() -> str:
    """This process, as another process on this machine can check it is still alive: pid and start time."""
    return f"{os.getpid()}:{_started(os.getpid())}"


def _started(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def alive(process: str) -> bool:
    pid, started = process.split(":", 1)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return started == "?" or _started(int(pid)) == started

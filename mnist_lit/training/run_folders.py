"""Run folders: each run owns its ``<save_dir>/<name>/version_N``, even when runs start at the same moment.

Lightning's TensorBoardLogger picks the next version by listing the folder, so runs started together can pick the
same number and write into one folder (mixed curves, one ``config.yaml`` and one ``last.ckpt`` for two runs).
``RunLogger`` claims its folder with ``mkdir``, which only one process can win, and holds a lock on it while the run
lives, so that ``fit --ckpt_path last`` resumes a stopped run and never one that is still training.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from mnist_lit.common.atomic_files import replaced_on_success
from mnist_lit.common.errors import UserError, WriteError, write_fault


class RunLogger(TensorBoardLogger):
    """TensorBoard's logger, with a version folder no other run can take.

    Without ``version``, the first free ``version_N`` is created with ``mkdir`` (if another process got there first,
    the next number is tried). A ``version`` you name is created the same way and refused if it exists, unless
    ``exist_ok``. Under DDP only global rank 0 claims; the other ranks learn the version from it (``ShareVersion``).
    The folder stays locked (``flock``) while this process lives: a second run cannot log into it.
    """

    def __init__(self, save_dir: str | Path, name: str | None = "lightning_logs", version: int | str | None = None,
                 exist_ok: bool = False, **kwargs: Any) -> None:
        """
        Args:
            save_dir: the folder that holds every model's runs.
            name: the model's folder inside it.
            version: the run's folder: an int ``N`` for ``version_N``, or any folder name; default: the next free
                ``version_N``.
            exist_ok: log into ``version`` even if its folder exists (``fit --ckpt_path last`` sets it to resume a
                run into its own folder); otherwise an existing ``version`` is refused.
            kwargs: TensorBoardLogger's other options (``default_hp_metric``, ``sub_dir``, ...).
        """
        super().__init__(save_dir, name=name, version=version, **kwargs)
        self.exist_ok = exist_ok
        self._wanted = version  # as asked: None means the next free version_N
        self._run: int | str | None = None  # the version this run claimed, or (other DDP ranks) was told
        self._lock: int | None = None  # the claimed folder's file descriptor, flock'ed while the process lives
        self._local = get_filesystem(save_dir).protocol in ("file", ("file", "local"))

    @property
    def version(self) -> int | str:
        """This run's version: claimed once by rank 0 (a refused claim is reported, not retried by every later
        caller); on the other ranks the number rank 0 claimed, once ``ShareVersion`` has told them (before that
        they write nothing)."""
        if not self._local:  # object stores have no mkdir race to win: Lightning's own numbering
            return super().version
        if self._run is None:
            if rank_zero_only.rank != 0:
                return self._next_free()
            try:
                self._run = self._claim()
            except Exception:  # reported once; later callers (teardown) get a name, and nothing is claimed
                self._run = self._wanted if self._wanted is not None else self._next_free()
                raise
        return self._run

    def share(self, version: int | str) -> None:
        """Take the version rank 0 claimed (DDP)."""
        self._run = version

    def _folder(self, version: int | str) -> Path:
        name = version if isinstance(version, str) else f"version_{version}"
        return Path(os.path.expanduser(os.path.expandvars(os.path.join(self.root_dir, name))))

    def _next_free(self) -> int:
        """One more than the highest ``version_N`` under the model's folder (0 if none), as Lightning numbers."""
        numbers = [int(p.name[8:]) for p in self._folder("").glob("version_*") if p.name[8:].isdigit()]
        return max(numbers, default=-1) + 1

    def _claim(self) -> int | str:
        root = self._folder("")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise WriteError(err.errno, err.strerror, str(root)) from None
        version = self._wanted
        if version is None:
            version = self._next_free()
            while not self._made(self._folder(version)):
                version += 1
        elif not self._made(self._folder(version)) and not self.exist_ok:
            raise UserError(f"{self._folder(version)} exists already: name a new version, or add "
                            f"--ckpt_path last to resume that run")
        self._lock = lock(self._folder(version))
        if self._lock is None:
            raise UserError(f"{self._folder(version)} is in use by another running process")
        return version

    @staticmethod
    def _made(folder: Path) -> bool:
        try:
            folder.mkdir()
        except FileExistsError:
            return False
        except OSError as err:
            raise WriteError(err.errno, err.strerror, str(folder)) from None
        return True

    @rank_zero_only
    def save(self) -> None:
        """As TensorBoardLogger's, with ``hparams.yaml`` written whole or not at all."""
        if not self._local:
            return super().save()
        self.experiment.flush()
        path = Path(self.log_dir, self.NAME_HPARAMS_FILE)
        if path.parent.is_dir() and not path.is_file():
            with replaced_on_success(path) as tmp:
                save_hparams_to_yaml(tmp, self.hparams)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """A failed run already reports what went wrong: a full disk failing the final flush again is not news."""
        try:
            super().finalize(status)
        except OSError as err:
            if status != "failed" or write_fault(err) is None:
                raise


class ShareVersion(L.Callback):
    """Under DDP, rank 0 claims the version folder and every other rank takes its number (one broadcast per run)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.world_size > 1 and isinstance(trainer.logger, RunLogger):
            trainer.logger.share(trainer.strategy.broadcast(trainer.logger.version))


class AtomicSaveConfig(SaveConfigCallback):
    """Writes the run's ``config.yaml`` whole or not at all (a full disk raises a ``WriteError`` naming it), replacing
    the one a resumed run wrote before: the folder belongs to this run alone."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        log_dir = trainer.log_dir  # a broadcast: every rank takes part
        if trainer.is_global_zero and log_dir is not None:
            path = Path(log_dir, self.config_filename)
            get_filesystem(log_dir).makedirs(log_dir, exist_ok=True)
            with replaced_on_success(path) as tmp:
                self.parser.save(self.config, str(tmp), skip_none=False, overwrite=True, multifile=False)
        self.already_saved = True


def lock(folder: Path) -> int | None:
    """An open descriptor of ``folder`` holding its exclusive lock, or None if another process holds it. (Where the
    file system has no locks for folders, some network ones, the descriptor holds none: runs then are not protected
    from a resume into them.)"""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        pass
    return fd


def in_use(folder: Path) -> bool:
    """Whether a running process logs into ``folder`` (holds its lock)."""
    fd = lock(folder)
    if fd is not None:
        os.close(fd)
    return fd is None


def last_checkpoint(runs: Path, version: int | str | None, skip_running: bool = True) -> Path:
    """The ``last.ckpt`` that ``fit --ckpt_path last`` resumes: that of ``version`` if named, else the newest one under
    ``runs`` whose run is not running (any run's, when not ``skip_running``)."""
    if version is not None:
        folder = runs / (version if isinstance(version, str) else f"version_{version}")
        last = folder / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise UserError(f"no last.ckpt in {folder} to resume from")
        if skip_running and in_use(folder):
            raise UserError(f"{folder} is in use by a running process; stop it before resuming it")
        return last
    found = sorted(runs.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(f"no last.ckpt under {runs} to resume from")
    stopped = [p for p in found if not (skip_running and in_use(p.parent.parent))]
    if not stopped:
        raise UserError(f"every run under {runs} is still running; name the one to resume with "
                        f"--trainer.logger.init_args.version")
    return stopped[-1]


def first_process() -> bool:
    """Whether this process is, or will become, global rank 0, from the variables launchers set (Lightning's, torchrun,
    SLURM): before the Trainer starts, Lightning's own ``rank_zero_only.rank`` does not know the node yet."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


FAILED = "\0failed"  # what rank 0 leaves in the store when it could not choose


def rank_zero_choice(key: str, choose: Callable[[], str]) -> str:
    """``choose()`` as global rank 0 made it, in every process that ``torchrun`` started; elsewhere ``choose()``.

    torchrun starts every rank as a command of its own (one per GPU or machine), so a choice made before the Trainer
    connects them (which run ``--ckpt_path last`` resumes, say) would be made by each for itself, and not always alike.
    Rank 0 chooses and leaves its answer in torchrun's own key-value store (the agent's ``TCPStore`` at
    ``MASTER_ADDR:MASTER_PORT``, which torchrun offers to the processes it starts); the others wait for it there.
    (Lightning's own launcher passes its choice down in the environment instead: ``cli.RESUME_FROM``.)
    """
    store = launcher_store()
    if store is None:
        return choose()
    key = f"mnist_lit/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{key}"
    if first_process():
        try:
            value = choose()
        except BaseException:
            store.set(key, FAILED)  # the other ranks stop too, instead of waiting
            raise
        store.set(key, value)
        return value
    value = store.get(key).decode()
    if value == FAILED:
        raise UserError("global rank 0 stopped before it could say which run to use (its error says why)")
    return value


def launcher_store(wait: timedelta = timedelta(minutes=30)):
    """torchrun's key-value store, shared by the processes it started (``TORCHELASTIC_USE_AGENT_STORE``), or None
    outside torchrun. ``wait``: how long a read waits for a key another process has yet to write."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    from torch.distributed import TCPStore

    return TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=wait)

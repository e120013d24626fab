"""Interrupt a run at any moment and lose nothing: ``fit --ckpt_path last`` then finishes it exactly as it would
have finished uninterrupted (same metrics, same weights, same best checkpoint).

A resumed run restarts the epoch it was stopped in, from the ``last.ckpt`` written at the end of the one before;
that epoch is replayed bit for bit because its shuffle (``data.EpochShuffle``) and its other random numbers
(dropout) depend only on the seed and the epoch.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from mnist_lit.common.atomic_files import replaced_on_success
from mnist_lit.common.errors import WriteError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves each checkpoint beside its final name and renames it into place: a kill while saving leaves the previous
    checkpoint whole (Lightning's own save stages the file in the system temp folder and moves it, which is a
    copy, not a rename, when that folder is on another disk). A full disk or a read-only folder raises a
    ``WriteError`` naming the checkpoint; so does a save into a folder that was deleted during the run (Lightning would
    quietly make it again, without the checkpoints it held)."""

    def __init__(self) -> None:
        super().__init__()
        self._folders: set[Path] = set()  # where this run has saved: they must not vanish

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if get_filesystem(path).protocol not in ("file", ("file", "local")):  # s3:// and friends: Lightning's way
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        if path.parent in self._folders and not path.parent.is_dir():
            raise WriteError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise WriteError(err.errno, err.strerror, str(path)) from None
        with replaced_on_success(path) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)  # to a file object: a full disk then raises OSError(ENOSPC), not "unexpected pos"
        self._folders.add(path.parent)


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for one epoch's random numbers, well mixed so that no two (seed, epoch) pairs share a stream."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class ResumableRun(L.Callback):
    """What ``fit --ckpt_path last`` needs besides the checkpoint Lightning already writes:

    - ``last.ckpt`` exists from the first step on, so a run stopped in its first epoch resumes too (and
      ``--ckpt_path last`` never falls back to an older run's file);
    - every epoch reseeds torch from the seed and the epoch, so dropout masks are the same when an epoch is replayed;
    - the TensorBoard curves on disk always reach as far as the checkpoint;
    - on SIGINT (Ctrl+C) or SIGTERM, Lightning stops after the current step; this says how to resume.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == 0 and trainer.checkpoint_callback is not None:
            trainer.save_checkpoint(self._last(trainer), weights_only=False)  # a full one: it must resume

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if batch_idx == 0:
            torch.manual_seed(epoch_seed(int(os.environ.get("PL_GLOBAL_SEED", 0)), trainer.current_epoch))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if isinstance(trainer.logger, TensorBoardLogger):
            trainer.logger.experiment.flush()

    @rank_zero_only
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)) or trainer.checkpoint_callback is None:
            return
        last = self._last(trainer)
        if last.is_file():
            print(f"stopped in epoch {trainer.current_epoch}; {last} holds the run up to the start of that epoch: "
                  f"`fit ... {resume_options(trainer)}` replays it and goes on", file=sys.stderr)

    @staticmethod
    def _last(trainer: L.Trainer) -> Path:
        """Where the run's other ModelCheckpoint, ``filename="last"``, rewrites the checkpoint after every epoch."""
        checkpoint = trainer.checkpoint_callback
        return Path(checkpoint.dirpath) / f"last{checkpoint.FILE_EXTENSION}"


def resume_options(trainer: L.Trainer) -> str:
    """The options that resume this run and no other: ``--ckpt_path last`` alone would take the newest stopped run of
    the model, which need not be this one when several run side by side."""
    logger = trainer.logger
    if not isinstance(logger, TensorBoardLogger):
        return f"--ckpt_path {ResumableRun._last(trainer)}"
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return f"--ckpt_path last --trainer.logger.init_args.version {version}"


def resume_advice(trainer: L.Trainer) -> str | None:
    """``run the same command with --ckpt_path last ...: it resumes from PATH, saved after epoch N``, or None when the
    run has no whole ``last.ckpt`` to resume from."""
    if trainer.checkpoint_callback is None or trainer.checkpoint_callback.dirpath is None:  # stopped before its setup
        return None
    last = ResumableRun._last(trainer)
    try:
        saved = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - missing, or its folder deleted: there is nothing to resume from
        return None
    when = "before the first step" if saved.get("global_step") == 0 else f"after epoch {saved.get('epoch')}"
    return f"run the same command with {resume_options(trainer)}: it resumes from {last}, saved {when}"

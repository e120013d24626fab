"""A checkpoint of :class:`~mnist_lit.models.classifier.MNISTClassifier`, read without Lightning and without running
code from the file (``weights_only``): inference starts fast, and a bad file is one line, not a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mnist_lit.common.errors import UserError, first_line
from mnist_lit.data.normalization import NORMALIZATIONS
from mnist_lit.models.nets import NETS
from mnist_lit.models.rejection import recorded_rejection


class CheckpointError(UserError):
    """A file that is not a usable checkpoint of this project's classifier; the message is one line and names it."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents, checked to hold a network of ``mnist_lit.models.nets``, its normalization and any
    rejection rule (``mnist_lit.models.rejection``)."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError (truncated zip), EOFError, ...
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first_line(err)})") from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= checkpoint.keys():
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict and hyper_parameters in it)")
    hparams = checkpoint["hyper_parameters"]
    name = hparams.get("net") if isinstance(hparams, dict) else None
    if not (isinstance(name, str) and name in NETS):
        raise CheckpointError(f"{path}: not a checkpoint of MNISTClassifier (its hyper_parameters name no network)")
    normalization = recorded_normalization(checkpoint)
    if normalization is None:
        raise CheckpointError(f"{path} records no normalization: it was not trained with mnist_lit")
    if normalization not in NORMALIZATIONS:
        raise CheckpointError(f"{path}: unknown normalization {normalization!r} recorded")
    try:
        recorded_rejection(checkpoint)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    return checkpoint


def recorded_normalization(checkpoint: dict[str, Any]) -> str | None:
    """The model's own ``normalization`` hyperparameter; checkpoints written before the model carried it (mnist_lit
    0.1) have it only among the data module's hyperparameters."""
    for key in ("hyper_parameters", "datamodule_hyper_parameters"):
        hparams = checkpoint.get(key)
        if isinstance(hparams, dict) and "normalization" in hparams:
            return hparams["normalization"]
    return None

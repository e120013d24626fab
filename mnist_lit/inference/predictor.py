"""Inference from a ``.ckpt`` alone: the network, its normalization and its "not a digit" rule all come from the
checkpoint."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from mnist_lit.common.errors import UserError, first_line
from mnist_lit.data.normalization import normalize
from mnist_lit.data.preprocess import ImageError, load_image, to_mnist
from mnist_lit.models.checkpoint import CheckpointError, read_checkpoint, recorded_normalization
from mnist_lit.models.nets import build_net
from mnist_lit.models.rejection import Rejection, recorded_rejection

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def resolve_device(name: str) -> torch.device:
    """``--device``: cpu or cuda[:N], checked here so that a wrong one is one line, not a CUDA traceback."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {name}: not a device; use cpu or cuda[:N]") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: use cpu or cuda[:N]")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices")
    return device


@dataclass
class Predictor:
    """A trained network (the plain ``nn.Module``, in eval mode), the normalization it was trained with and the rule
    that says "not a digit" (``None``: every image reads as a digit, as with checkpoints written before the rule).

    Built from the checkpoint's tensors without Lightning, whose import alone takes longer than a prediction.
    """

    net: nn.Module
    net_name: str
    normalization: str
    rejection: Rejection | None = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu",
                        threshold: float | None = None) -> Predictor:
        """Load without running code from the file (``weights_only``); its hyperparameters give the recipe and its
        ``rejection`` entry the rule, whose threshold ``threshold`` replaces (also for checkpoints without a rule).

        Anything but a checkpoint of ``MNISTClassifier`` (a missing, foreign, truncated or unrelated file) raises
        :class:`~mnist_lit.models.checkpoint.CheckpointError`, a ``ValueError`` with a one-line message; a
        ``threshold`` outside [0, 1] raises its parent, ``UserError``.
        """
        checkpoint = read_checkpoint(path)
        name, normalization = checkpoint["hyper_parameters"]["net"], recorded_normalization(checkpoint)
        state = checkpoint["state_dict"]
        net = build_net(name)
        try:  # MNISTClassifier keeps the network as its `net` attribute
            net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
        except Exception as err:  # weights of another network, missing keys, ...
            raise CheckpointError(f"{path}: its weights do not fit {name} ({first_line(err)})") from None
        predictor = cls(net.to(device).eval(), name, normalization, recorded_rejection(checkpoint))
        try:
            predictor.rejection = predictor.rule(threshold)
        except ValueError as err:
            raise UserError(str(err)) from None
        return predictor

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 MNIST-style images (white digit on black, 28×28), shape (N, 28, 28) or (N, 1, 28, 28) → (N, 10)."""
        device = next(self.net.parameters()).device
        return self.net(normalize(images.to(device), self.normalization)).softmax(dim=1)

    def rule(self, threshold: float | None = None) -> Rejection | None:
        """The rule in force: this predictor's, or the same score with ``threshold`` instead (``ValueError`` outside
        [0, 1]); ``None`` when neither is there."""
        if threshold is None:
            return self.rejection
        return replace(self.rejection, threshold=threshold) if self.rejection else Rejection(threshold)

    def judge(self, probs: torch.Tensor, threshold: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 10) probabilities → each image's score (N,) and whether it reads as a digit (N,) under
        :meth:`rule`; without a rule every image does."""
        rule = self.rule(threshold)
        if rule is None:
            return Rejection.scores(probs), torch.ones(len(probs), dtype=torch.bool, device=probs.device)
        return rule.scores(probs), rule.is_digit(probs)


@dataclass
class FileResult:
    """What became of one input file: its prediction, or the one-line reason it has none.

    An image that does not read as a digit (``is_digit`` false: its ``score`` is below the rule's threshold) is a
    result like any other: ``digit`` is still the most probable one, for whoever wants the network's guess.
    """

    path: str
    digit: int | None = None
    probability: float | None = None
    top3: list[tuple[int, float]] = field(default_factory=list)  # (digit, probability), most probable first
    is_digit: bool | None = None  # None: an error
    score: float | None = None  # the rule's score (higher reads more like a digit)
    error: str | None = None
    thumbnail: Image.Image | None = field(default=None, repr=False, compare=False)  # only when asked for

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict:
        """Plain data for JSON/CSV (no thumbnail)."""
        return {"path": self.path, "digit": self.digit, "probability": self.probability,
                "top3": [list(pair) for pair in self.top3], "is_digit": self.is_digit, "score": self.score,
                "error": self.error}


def expand_paths(paths: Iterable[str | Path]) -> list[tuple[Path, str | None]]:
    """Each path given, with folders replaced by the images directly in them (sorted); errors as (path, message).

    Files named explicitly are taken whatever their extension (they fail later if they are not images); in folders
    only ``IMAGE_EXTENSIONS`` count, so a folder's notes or checkpoints are not reported as broken images.
    """
    entries: list[tuple[Path, str | None]] = []
    for path in map(Path, paths):
        if path.is_dir():
            try:
                images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            except OSError as err:
                entries.append((path, f"{path}: cannot list folder ({err.strerror or err})"))
                continue
            if not images:
                entries.append((path, f"{path}: folder has no images ({', '.join(IMAGE_EXTENSIONS)})"))
            entries += [(image, None) for image in images]
        elif path.exists():
            entries.append((path, None))
        else:
            entries.append((path, f"{path}: no such file or folder"))
    return entries


def _thumbnail(image: Image.Image, size: int) -> Image.Image:
    """A copy that fits ``size``×``size``, aspect ratio kept; ``reducing_gap`` keeps big photos fast to shrink."""
    scale = min(1.0, size / max(image.size))
    target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0).convert("RGB")


def predict_files(predictor: Predictor, paths: Iterable[str | Path], preprocess: bool = True, batch_size: int = 256,
                  thumbnail_size: int | None = None) -> list[FileResult]:
    """Predict the digit in each image file (folders expanded), in input order, ``batch_size`` images at a time; the
    predictor's rule says which do not read as digits.

    A file that fails (missing, not an image, truncated, too large, blank) gets its error message and the others are
    still predicted. ``preprocess`` is :func:`mnist_lit.data.preprocess.to_mnist`'s: photos and drawings need it, images
    already MNIST-like do not. With ``thumbnail_size`` each loaded image also keeps a small RGB copy (contact sheets).
    """
    results: list[FileResult] = []
    pending: list[tuple[FileResult, torch.Tensor]] = []

    def flush() -> None:
        probs = predictor.probabilities(torch.stack([image for _, image in pending])).float().cpu()
        top = probs.topk(3, dim=1)
        scores, is_digit = predictor.judge(probs)
        for (result, _), values, digits, score, digit_like in zip(pending, top.values.tolist(), top.indices.tolist(),
                                                                  scores.tolist(), is_digit.tolist()):
            result.digit, result.probability, result.top3 = digits[0], values[0], list(zip(digits, values))
            result.is_digit, result.score = digit_like, score
        pending.clear()

    for path, error in expand_paths(paths):
        result = FileResult(str(path), error=error)
        results.append(result)
        if error:
            continue
        try:
            image = load_image(path)
        except ImageError as err:
            result.error = str(err)
            continue
        if thumbnail_size:
            result.thumbnail = _thumbnail(image, thumbnail_size)
        try:
            pending.append((result, to_mnist(image, preprocess)))
        except ImageError as err:
            result.error = f"{path}: {err}"
            continue
        if len(pending) >= batch_size:
            flush()
    if pending:
        flush()
    return results

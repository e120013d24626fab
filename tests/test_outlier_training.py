"""Training with outliers (outlier exposure): the batches, the rejection rule every checkpoint carries, and resuming.

Tiny generated digits (conftest's ``tiny_data``) and small pools of the real synthetic outliers
(``mnist_lit.data.outliers.synthetic_outliers``); Fashion-MNIST's own loading is tested in tests/test_outliers.py.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lit.common.errors import UserError
from mnist_lit.data.augment import Affine, Augmentation
from mnist_lit.data.datamodule import Outliers
from mnist_lit.inference.predictor import Predictor
from mnist_lit.models.checkpoint import read_checkpoint
from mnist_lit.models.classifier import MNISTClassifier
from mnist_lit.models.rejection import Rejection, recorded_rejection
from mnist_lit.training.callbacks import TrainingImageGrid
from mnist_lit.training.resume import ResumableRun

pytestmark = pytest.mark.usefixtures("one_thread")

# synthetic outliers only: a few hundred are made in a second or two
OUTLIERS = Outliers(fraction=0.25, fashion=False, synthetic=200, val_fashion=0, val_synthetic=100)


class BatchShapes(L.Callback):
    """Records each training batch's tensors' shapes and its outliers."""

    def __init__(self) -> None:
        self.shapes: list[list[tuple[int, ...]]] = []
        self.outliers: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.shapes.append([tuple(t.shape) for t in batch])
        if len(batch) == 3:
            self.outliers.append(batch[2].clone())


def fit(root: Path, datamodule, epochs: int = 2, outlier_weight: float = 0.5, ckpt_path: str | None = None,
        callbacks: tuple[L.Callback, ...] = ()) -> L.Trainer:
    """A real Trainer as the CLI sets one up, on tiny data: seeded, last.ckpt every epoch, TensorBoard."""
    L.seed_everything(0, verbose=False)
    model = MNISTClassifier(net="mlp", lr=3e-3, outlier_weight=outlier_weight)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, limit_train_batches=4,
                        num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
                        logger=TensorBoardLogger(root, name="run", version=0, default_hp_metric=False),
                        log_every_n_steps=1,
                        callbacks=[ModelCheckpoint(dirpath=root / "checkpoints", filename="last",
                                                   enable_version_counter=False),
                                   ResumableRun(), TrainingImageGrid(), *callbacks])
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer


def test_a_run_with_outliers_writes_a_rule_that_readers_use(tiny_data, tmp_path):
    shapes = BatchShapes()
    datamodule = tiny_data(outliers=OUTLIERS)
    pools = Path(datamodule.hparams.data_dir) / "outliers"
    pools.mkdir(parents=True, exist_ok=True)
    stale, other_size = pools / "synthetic-200-seed0-000000000000.pt", pools / "synthetic-50-seed0-000000000000.pt"
    for path in (stale, other_size):
        torch.save(torch.zeros(1), path)  # pools an older generator made
    trainer = fit(tmp_path, datamodule, callbacks=(shapes,))

    # every training batch: 32 digits, their labels and 8 outliers (a quarter of the batch), as the network sees them
    assert shapes.shapes == [[(32, 28, 28), (32,), (8, 28, 28)]] * 8
    assert all(o.dtype == torch.uint8 and o.float().mean() > 0 for o in shapes.outliers)

    checkpoint = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")  # the reader every command uses
    rule = recorded_rejection(checkpoint)
    entry = checkpoint["rejection"]
    logged = trainer.callback_metrics
    assert isinstance(rule, Rejection) and rule.score == "max_softmax"
    assert rule.threshold == pytest.approx(float(logged["rejection/threshold"])) and 0 < rule.threshold < 1
    assert entry["epoch"] == 1 and entry["reject_digits"] == 0.005
    # chosen on validation data: at most 0.5 % of the 50 validation digits (none) and 2 % of their augmented copy
    assert entry["val_digits_rejected"] == float(logged["val/digits_rejected"]) == 0.0
    assert "val_augmented_rejected" not in entry, "no augmentation, no augmented copy"
    assert entry["val_outliers_rejected"] == pytest.approx(float(logged["val/outliers_rejected"]))
    assert 0.0 <= float(logged["test/digits_rejected"]) <= 1.0

    # Predictor reads the same checkpoint; the rule applied to its probabilities rejects what validation said
    predictor = Predictor.from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert predictor.rejection == rule
    with torch.no_grad():
        probs = predictor.probabilities(trainer.datamodule.val_outlier_set.images)
    rejected = (~predictor.rejection.is_digit(probs)).float().mean()
    assert float(rejected) == pytest.approx(entry["val_outliers_rejected"], abs=1e-6)

    images = EventAccumulator(str(tmp_path / "run" / "version_0")).Reload().Tags()["images"]
    assert {"train/images", "train/outliers"} <= set(images)

    assert not stale.exists(), "an older generator's pool of the same size and seed is deleted once replaced"
    other_size.unlink()
    kept = {p.name.rsplit("-", 1)[0]: p for p in pools.iterdir()}
    assert sorted(kept) == ["synthetic-100-seed1", "synthetic-200-seed0"], "the pools, kept for the next run"
    assert torch.equal(torch.load(kept["synthetic-200-seed0"], weights_only=True), trainer.datamodule.outlier_pool)


def test_without_outliers_nothing_is_rejected_or_recorded(tiny_data, tmp_path):
    shapes = BatchShapes()
    trainer = fit(tmp_path, tiny_data(), epochs=1, outlier_weight=0.0, callbacks=(shapes,))
    assert shapes.shapes == [[(32, 28, 28), (32,)]] * 4
    assert "rejection" not in read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert not any(key.startswith("rejection/") or key.endswith("_rejected") for key in trainer.callback_metrics)


@pytest.mark.parametrize(("weight", "outliers"),
                         [(0.5, Outliers()), (0.0, replace(OUTLIERS, synthetic=8, val_synthetic=8))])
def test_outlier_weight_and_outliers_go_together(tiny_data, tmp_path, weight, outliers):
    with pytest.raises(UserError, match="--model.outlier_weight and --data.outliers.fraction go together"):
        fit(tmp_path, tiny_data(outliers=outliers), epochs=1, outlier_weight=weight)


def test_a_resumed_run_with_outliers_replays_exactly(tiny_data, tmp_path):
    """Stopped after epoch 0 and resumed from last.ckpt, an augmented run draws the same outliers, distorted the same
    way, and ends with the same weights and rule as the uninterrupted one: they depend only on the seed, the epoch
    and the rank."""
    whole, first, rest = BatchShapes(), BatchShapes(), BatchShapes()
    data = {"outliers": OUTLIERS, "augment": Augmentation(affine=Affine(rotation=15.0, translate=2.0))}
    fit(tmp_path / "whole", tiny_data(**data), callbacks=(whole,))
    fit(tmp_path / "parts", tiny_data(**data), epochs=1, callbacks=(first,))
    fit(tmp_path / "parts", tiny_data(**data), ckpt_path=str(tmp_path / "parts" / "checkpoints" / "last.ckpt"),
        callbacks=(rest,))
    assert whole.shapes[0] == [(32, 1, 28, 28), (32,), (8, 1, 28, 28)], "digits and outliers distorted alike"
    assert len(whole.outliers) == 8 and all(map(torch.equal, whole.outliers, first.outliers + rest.outliers))
    assert not torch.equal(whole.outliers[0], whole.outliers[4]), "each epoch draws its own"
    ends = [torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True) for run in ("whole", "parts")]
    assert ends[0]["rejection"] == ends[1]["rejection"] and "val_augmented_rejected" in ends[0]["rejection"]
    assert all(torch.equal(ends[0]["state_dict"][k], ends[1]["state_dict"][k]) for k in ends[0]["state_dict"])

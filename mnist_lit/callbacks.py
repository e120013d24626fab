"""Callbacks that put a run's story into the console and TensorBoard: summary, sample images, best accuracy."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import torch
import torchinfo
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision.utils import make_grid

from mnist_lit.atomic import replaced_on_success


class TorchinfoSummary(L.Callback):
    """Prints a torchinfo table (layers, output shapes, parameters) for one 1×1×28×28 image at the start of fit."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            print(torchinfo.summary(pl_module.net, input_size=(1, 1, 28, 28), device=pl_module.device,
                                    mode="eval", verbose=0))


class TrainingImageGrid(L.Callback):
    """Logs the first training batch, as the network sees it, as an image grid in TensorBoard."""

    def __init__(self, count: int = 64) -> None:
        self.count = count

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == 0 and batch_idx == 0 and isinstance(trainer.logger, TensorBoardLogger):
            grid = make_grid(batch[0][: self.count].float().cpu(), nrow=8, normalize=True, pad_value=1.0)
            trainer.logger.experiment.add_image("train/images", grid, 0)


class BestScoreAsHpMetric(L.Callback):
    """Records the checkpointed best accuracy as TensorBoard's ``hp_metric`` beside the run's hyperparameters."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        best = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
        if best is not None and isinstance(trainer.logger, TensorBoardLogger):
            trainer.logger.log_hyperparams(trainer.logger.hparams, {"hp_metric": float(best)})


class PredictionCSV(BasePredictionWriter):
    """Writes ``predict``'s output to ``<log_dir>/predictions.csv``: index, predicted digit, its probability."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions, batch_indices) -> None:
        if not trainer.is_global_zero:
            return
        probs = torch.cat([batch["probs"] for batch in predictions]).max(dim=1)
        path = Path(trainer.log_dir or ".") / "predictions.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_on_success(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "digit", "probability"])
            writer.writerows((i, d, f"{p:.6f}") for i, (p, d) in enumerate(zip(probs.values.tolist(),
                                                                                  probs.indices.tolist())))
        print(f"predictions: {path}")

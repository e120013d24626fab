"""One LightningModule for every network: cross-entropy, torchmetrics accuracy per stage, the tutorial optimizers."""

from __future__ import annotations

import os
from typing import Literal

import lightning as L
import torch
from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveFloat
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from mnist_lit.nets import NetName, build_net

STAGES = ("train", "val", "test")


def confusion_table(matrix: torch.Tensor) -> str:
    """The confusion matrix as a Markdown table (rows: true digit), as TensorBoard's Text tab shows it; exact counts,
    and no plotting library to install."""
    rows = [f"| **{digit}** | " + " | ".join(map(str, counts)) + " |" for digit, counts in enumerate(matrix.tolist())]
    return "\n".join(["| true \\ predicted | " + " | ".join(map(str, range(10))) + " |", "|---" * 11 + "|", *rows])


class MNISTClassifier(L.LightningModule):
    """Wraps a network from ``mnist_lit.nets`` by name, so a checkpoint alone rebuilds it."""

    def __init__(
        self,
        net: NetName = "mlp",
        optimizer: Literal["sgd", "adam"] = "adam",
        lr: PositiveFloat = 1e-3,
        momentum: NonNegativeFloat = 0.0,
        weight_decay: NonNegativeFloat = 0.0,
        warmup_steps: NonNegativeInt = 0,
        channels_last: bool = True,
    ) -> None:
        """
        Args:
            net: which tutorial network to train (see ``mnist_lit.nets``).
            optimizer: ``sgd`` or ``adam``, as the tutorials use them.
            lr: learning rate.
            momentum: SGD momentum (ignored by Adam).
            weight_decay: L2 penalty added by the optimizer.
            warmup_steps: ramp the learning rate linearly from 0 over this many steps (0 = off, as the tutorials).
            channels_last: keep convolution weights and activations in NHWC memory order, which oneDNN and cuDNN
                run faster (bench/RESULTS.md); results are the same up to float rounding.
        """
        super().__init__()
        self.save_hyperparameters()
        self.net = build_net(net)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.loss = nn.CrossEntropyLoss()
        # One accuracy and one mean loss per stage, updated on the device every step and logged once per epoch:
        # a self.log() per step costs more than a small network's whole step on a CPU. Accuracy is micro-averaged
        # (correct / total, as the tutorials count it); torchmetrics' default would average the ten per-class recalls.
        self.accuracy = nn.ModuleDict({f"{stage}_acc": MulticlassAccuracy(num_classes=10, average="micro",
                                                                         validate_args=False) for stage in STAGES})
        self.mean_loss = nn.ModuleDict({f"{stage}_loss": MeanMetric(nan_strategy="disable") for stage in STAGES})
        self.confusion = MulticlassConfusionMatrix(num_classes=10, validate_args=False)

    def on_fit_start(self) -> None:
        if self.device.type == "cpu":
            # Lightning has torch look for CUDA through NVML (to keep forks safe). Without a GPU that lookup is never
            # cached, and Adam repeats it every step: 0.1–0.3 ms per step, a few % of a small network's epoch.
            os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _step(self, batch, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and logits of one batch; its accuracy and loss are accumulated for the epoch."""
        images, labels = batch
        logits = self(images)
        loss = self.loss(logits, labels)
        self.accuracy[f"{stage}_acc"].update(logits, labels)
        self.mean_loss[f"{stage}_loss"].update(loss.detach(), weight=len(labels))
        return loss, logits

    def _log_epoch(self, stage: str) -> None:
        """``STAGE/acc`` and ``STAGE/loss`` of the whole epoch. Lightning computes the logged metric objects (which
        synchronises them across DDP ranks) and resets them for the next epoch."""
        self.log(f"{stage}/acc", self.accuracy[f"{stage}_acc"], prog_bar=True)
        self.log(f"{stage}/loss", self.mean_loss[f"{stage}_loss"])

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Dataloader 0 is the validation split, 1 the official test set (scored every epoch, as the tutorials do)."""
        self._step(batch, STAGES[1 + dataloader_idx])

    def test_step(self, batch, batch_idx: int) -> None:
        _, logits = self._step(batch, "test")
        self.confusion(logits, batch[1])

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")
        self._log_epoch("test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
        table = confusion_table(self.confusion.compute())  # on every rank: compute() gathers the counts of all
        if isinstance(self.logger, TensorBoardLogger):
            self.logger.experiment.add_text("test/confusion_matrix", table, self.global_step)
        self.confusion.reset()

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        probs = self(images).softmax(dim=1)
        return {"digit": probs.argmax(dim=1), "probs": probs}

    def configure_optimizers(self):
        hp = self.hparams
        # foreach: one multi-tensor kernel per update instead of one per parameter (the default on GPUs only).
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum,
                                        weight_decay=hp.weight_decay, foreach=True)
        else:
            optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, foreach=True)
        if not hp.warmup_steps:
            return optimizer
        warmup = torch.optim.lr_scheduler.LinearLR(optimizer, 1 / hp.warmup_steps, 1.0, hp.warmup_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}

"""One LightningModule for every network: cross-entropy, torchmetrics accuracy per stage, the tutorial optimizers."""

from __future__ import annotations

import os
from typing import Literal

import lightning as L
import torch
from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, OpenUnitInterval, PositiveFloat
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from mnist_lit.common.errors import UserError
from mnist_lit.common.pictures import confusion_image, to_tensor
from mnist_lit.data.normalization import Normalization, normalize
from mnist_lit.models.checkpoint import recorded_normalization
from mnist_lit.models.nets import NetName, build_net

STAGES = ("train", "val", "test")


def confusion_table(matrix: torch.Tensor) -> str:
    """The confusion matrix as a Markdown table (rows: true digit), as TensorBoard's Text tab shows it; exact counts,
    and no plotting library to install."""
    rows = [f"| **{digit}** | " + " | ".join(map(str, counts)) + " |" for digit, counts in enumerate(matrix.tolist())]
    return "\n".join(["| true \\ predicted | " + " | ".join(map(str, range(10))) + " |", "|---" * 11 + "|", *rows])


class MNISTClassifier(L.LightningModule):
    """Wraps a network from ``mnist_lit.models.nets`` by name, and the normalization its pixels get, so that a
    checkpoint alone rebuilds it and reads images as in training (as torchvision's weights carry their transforms)."""

    def __init__(
        self,
        net: NetName = "mlp",
        normalization: Normalization = "half",
        optimizer: Literal["sgd", "adam"] = "adam",
        lr: PositiveFloat = 1e-3,
        momentum: NonNegativeFloat = 0.0,
        weight_decay: NonNegativeFloat = 0.0,
        warmup_steps: NonNegativeInt = 0,
        channels_last: bool = True,
        betas: tuple[float, float] = (0.9, 0.999),
        scheduler: Literal["none", "onecycle"] = "none",
        pct_start: OpenUnitInterval = 0.25,
    ) -> None:
        """
        Args:
            net: which tutorial network to train (see ``mnist_lit.models.nets``).
            normalization: how 0–255 pixels are scaled before the network: unit = 0–1; x255 = raw 0–255;
                mnist = mean/std 0.1307/0.3081; half = mean/std 0.5/0.5 (the tutorials' choices).
            optimizer: ``sgd`` or ``adam``, as the tutorials use them.
            lr: learning rate.
            momentum: SGD momentum (ignored by Adam).
            weight_decay: L2 penalty added by the optimizer.
            warmup_steps: ramp the learning rate linearly from 0 over this many steps (0 = off, as the tutorials).
            channels_last: keep convolution weights and activations in NHWC memory order, which oneDNN and cuDNN
                run faster (bench/RESULTS.md); results are the same up to float rounding.
            betas: Adam's decay rates of its running mean of the gradient and of its square (ignored by SGD).
            scheduler: ``none`` keeps ``lr`` (after any warm-up) for the whole run, as the tutorials do; ``onecycle``
                is PyTorch's OneCycleLR over all of the run's steps: ``lr`` is its peak, reached after ``pct_start``
                of the steps from lr/25, then annealed (cosine) to lr/250,000. Momentum is not cycled, so ``betas``
                (or ``momentum``) hold throughout.
            pct_start: the fraction of the steps over which ``onecycle`` rises to its peak.
        """
        if scheduler == "onecycle" and warmup_steps:
            raise UserError("--model.warmup_steps and --model.scheduler onecycle both set a warm-up: keep one")
        if not all(0 <= beta < 1 for beta in betas):
            raise UserError(f"--model.betas {list(betas)}: each must be in [0, 1)")
        super().__init__()
        self.save_hyperparameters()
        self.net = build_net(net)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.loss = nn.CrossEntropyLoss(reduction="none")  # per image: see mean_loss
        # One accuracy and one mean loss per stage, updated on the device every step and logged once per epoch:
        # a self.log() per step costs more than a small network's whole step on a CPU. Accuracy is micro-averaged
        # (correct / total, as the tutorials count it); torchmetrics' default would average the ten per-class recalls.
        self.accuracy = nn.ModuleDict({f"{stage}_acc": MulticlassAccuracy(num_classes=10, average="micro",
                                                                         validate_args=False) for stage in STAGES})
        # The mean loss is fed every image's loss, so it is the mean over the split whatever the batch sizes.
        # nan_strategy="disable" skips a NaN check that would wait for the GPU every step, and (torchmetrics ≤ 1.9)
        # also drops update()'s weights: weighting batch means by their sizes would silently not happen.
        self.mean_loss = nn.ModuleDict({f"{stage}_loss": MeanMetric(nan_strategy="disable") for stage in STAGES})
        self.confusion = MulticlassConfusionMatrix(num_classes=10, validate_args=False)

    def on_fit_start(self) -> None:
        if self.device.type == "cpu":
            # Lightning has torch look for CUDA through NVML (to keep forks safe). Without a GPU that lookup is never
            # cached, and Adam repeats it every step: 0.1–0.3 ms per step, a few % of a small network's epoch.
            os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint's normalization wins over the one this module was built with: that is what its weights mean.
        Checkpoints of mnist_lit 0.1 recorded it with the data module (``recorded_normalization``)."""
        self.hparams.normalization = recorded_normalization(checkpoint) or self.hparams.normalization

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """0–255 pixels (uint8, or float from the augmentation), (N, 28, 28) or (N, 1, 28, 28) → logits."""
        x = normalize(x, self.hparams.normalization)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _step(self, batch, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and logits of one batch; its accuracy and loss are accumulated for the epoch."""
        images, labels = batch
        logits = self(images)
        losses = self.loss(logits, labels)
        self.accuracy[f"{stage}_acc"].update(logits, labels)
        self.mean_loss[f"{stage}_loss"].update(losses.detach())
        return losses.mean(), logits  # the same gradients as CrossEntropyLoss's own mean (bit for bit, checked on CPU)

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

    def test_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Returns the logits, for callbacks' ``on_test_batch_end`` (``callbacks.MisclassifiedGrid``)."""
        _, logits = self._step(batch, "test")
        self.confusion(logits, batch[1])
        return logits

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")
        self._log_epoch("test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
        matrix = self.confusion.compute()  # on every rank: compute() gathers the counts of all
        if isinstance(self.logger, TensorBoardLogger):  # its experiment writes on rank 0 only
            self.logger.experiment.add_text("test/confusion_matrix", confusion_table(matrix), self.global_step)
            self.logger.experiment.add_image("test/confusion_heatmap", to_tensor(confusion_image(matrix)),
                                             self.global_step)
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
            optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, betas=tuple(hp.betas),
                                         weight_decay=hp.weight_decay, foreach=True)
        if hp.scheduler == "onecycle":
            onecycle = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=hp.lr, total_steps=self.trainer.estimated_stepping_batches, pct_start=hp.pct_start,
                cycle_momentum=False)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": onecycle, "interval": "step"}}
        if not hp.warmup_steps:
            return optimizer
        warmup = torch.optim.lr_scheduler.LinearLR(optimizer, 1 / hp.warmup_steps, 1.0, hp.warmup_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}

"""One LightningModule for every network: cross-entropy, torchmetrics accuracy per stage, the tutorial optimizers."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Literal

import lightning as L
import torch
from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, OpenUnitInterval, PositiveFloat
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics import CatMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from mnist_lit.common.errors import UserError
from mnist_lit.common.pictures import confusion_image, to_tensor
from mnist_lit.data.normalization import Normalization, normalize
from mnist_lit.models.checkpoint import recorded_normalization
from mnist_lit.models.nets import NetName, build_net
from mnist_lit.models.rejection import CHECKPOINT_KEY, Rejection

STAGES = ("train", "val", "test")
# The validation dataloaders' scores, in the data module's order: with outliers, its validation outliers and the
# augmented validation split follow the validation split and the test set.
SCORED = ("val", "test", "val_outliers", "val_augmented")
STATS = {"val": "val_digits", "val_outliers": "val_outliers", "val_augmented": "val_augmented"}  # checkpoint keys


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
        compile: Literal["none", "default", "reduce-overhead", "max-autotune-no-cudagraphs"] = "none",
        fused: bool = False,
        outlier_weight: NonNegativeFloat = 0.0,
        reject_digits: OpenUnitInterval = 0.005,
        reject_augmented: OpenUnitInterval = 0.02,
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
            compile: ``torch.compile`` the network with this mode (``none``: eager, the default): ``default``
                fuses its operations into generated kernels; ``reduce-overhead`` also replays each step's kernels as
                one CUDA graph (on a GPU), taking the host's launch time out of small networks' steps;
                ``max-autotune-no-cudagraphs`` tries several kernels per operation first. It compiles during the
                first steps and the first evaluation: worth it only where that takes less than the run's training
                saves (docs/speed.md). Checkpoints are the same either way.
            fused: Adam's or SGD's fused update, one kernel for all the parameters, in place of the multi-tensor
                (foreach) kernels it uses otherwise; on a GPU that is fewer launches per step. Results agree up to
                float rounding.
            outlier_weight: λ of outlier exposure (Hendrycks et al., ICLR 2019): the loss adds λ times the mean
                cross-entropy between the network's output on the batch's outliers (``--data.outliers``) and the
                uniform distribution over the ten digits, so that "none of these" reads as a low top probability.
                0 = off (the tutorials); on, it needs ``--data.outliers.fraction`` > 0, and each epoch chooses the
                rejection threshold (``mnist_lit.models.rejection``) that every checkpoint then carries.
            reject_digits: the threshold rejects at most this fraction of the validation split's digits.
            reject_augmented: ... and at most this fraction of the augmented copy of the validation split
                (other pens and writers, ``--data.outliers.val_augment``).
        """
        if scheduler == "onecycle" and warmup_steps:
            raise UserError("--model.warmup_steps and --model.scheduler onecycle both set a warm-up: keep one")
        if not all(0 <= beta < 1 for beta in betas):
            raise UserError(f"--model.betas {list(betas)}: each must be in [0, 1)")
        super().__init__()
        self.save_hyperparameters()
        self.net = build_net(net)
        # The network's forward compiled by setup (--model.compile): a function, not a submodule, so the
        # state_dict and anything that calls self.net itself (the model summary's layer hooks) see the plain network.
        self._compiled_forward: Callable[[torch.Tensor], torch.Tensor] | None = None
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
        # Rejection: max-softmax scores of each validation dataloader's images, gathered across DDP ranks by
        # compute() (each image once: the data module's evaluation samplers do not repeat any), and the fraction of
        # test digits the rule rejects. nan_strategy="disable": no NaN check that would read back from the GPU.
        self.scores = nn.ModuleDict({name: CatMetric(nan_strategy="disable") for name in SCORED})
        self.test_rejected = MeanMetric(nan_strategy="disable")
        self.rejection: dict | None = None  # checkpoint["rejection"]: the rule chosen last, with its statistics

    def setup(self, stage: str) -> None:
        """``compile``: ``forward`` runs the network through ``torch.compile`` (compiled at its first calls).
        Lightning calls this hook for every fit, validate, test or predict run, after the callbacks' own ``setup``
        (so ``WeightAveraging``'s copy of the module runs uncompiled): it compiles once. Static shapes
        (``dynamic=False``): the training batch and the evaluation batch each get their own specialised graph."""
        if self.hparams.compile != "none" and self._compiled_forward is None:
            self._compiled_forward = torch.compile(self.net.forward, mode=self.hparams.compile, dynamic=False)

    def on_fit_start(self) -> None:
        outliers = getattr(self.trainer.datamodule, "outliers", None)
        if bool(self.hparams.outlier_weight) != bool(outliers is not None and outliers.enabled):
            raise UserError("--model.outlier_weight and --data.outliers.fraction go together: set both above 0 "
                            "(outlier exposure) or neither")
        if self.device.type == "cpu":
            # Lightning has torch look for CUDA through NVML (to keep forks safe). Without a GPU that lookup is never
            # cached, and Adam repeats it every step: 0.1–0.3 ms per step, a few % of a small network's epoch.
            os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint's normalization wins over the one this module was built with: that is what its weights mean.
        Checkpoints of mnist_lit 0.1 recorded it with the data module (``recorded_normalization``)."""
        self.hparams.normalization = recorded_normalization(checkpoint) or self.hparams.normalization
        self.rejection = checkpoint.get(CHECKPOINT_KEY)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Every checkpoint written after an epoch of outlier exposure carries the rule chosen on that epoch's
        validation (plain data: checkpoints are read weights-only)."""
        if self.rejection is not None:
            checkpoint[CHECKPOINT_KEY] = dict(self.rejection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """0–255 pixels (uint8, or float from the augmentation), (N, 28, 28) or (N, 1, 28, 28) → logits."""
        x = normalize(x, self.hparams.normalization)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x) if self._compiled_forward is None else self._compiled_forward(x)

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
        if len(batch) == 2:
            return self._step(batch, "train")[0]
        # Outlier exposure: one forward pass over digits and outliers, split by their (fixed) sizes; nothing is read
        # back to the host. The cross-entropy against the uniform distribution is −mean(log_softmax).
        digits, labels, outliers = batch
        logits, outlier_logits = self(torch.cat([digits, outliers])).split([len(digits), len(outliers)])
        losses = self.loss(logits, labels)
        self.accuracy["train_acc"].update(logits, labels)
        self.mean_loss["train_loss"].update(losses.detach())
        return losses.mean() - self.hparams.outlier_weight * outlier_logits.log_softmax(dim=1).mean()

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Dataloader 0 is the validation split, 1 the official test set (scored every epoch, as the tutorials do);
        with outliers, 2 the validation outliers and 3 the augmented validation split (their scores only)."""
        if dataloader_idx < 2:
            _, logits = self._step(batch, STAGES[1 + dataloader_idx])
        else:
            logits = self(batch[0])
        if self.hparams.outlier_weight:
            self.scores[SCORED[dataloader_idx]].update(Rejection.scores(logits.softmax(dim=1)))

    def test_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Returns the logits, for callbacks' ``on_test_batch_end`` (``callbacks.MisclassifiedGrid``)."""
        _, logits = self._step(batch, "test")
        self.confusion(logits, batch[1])
        if self.rejection is not None:
            self.test_rejected.update((~self._rule().is_digit(logits.softmax(dim=1))).float())
        return logits

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")
        self._log_epoch("test")
        if self.hparams.outlier_weight:
            self._choose_rejection()

    def _rule(self) -> Rejection:
        return Rejection(threshold=self.rejection["threshold"], score=self.rejection.get("score", "max_softmax"))

    def _choose_rejection(self) -> None:
        """The rejection threshold of this epoch: the highest that rejects at most ``reject_digits`` of the
        validation digits and at most ``reject_augmented`` of their augmented copy; chosen on validation data
        alone, and logged with what it rejects (the test digits' figure only reports)."""
        scores = {name: metric.compute() for name, metric in self.scores.items() if metric.update_called}
        for metric in self.scores.values():
            metric.reset()
        if self.trainer.sanity_checking or "val_outliers" not in scores:
            return
        targets = {"val": self.hparams.reject_digits, "val_augmented": self.hparams.reject_augmented}
        # at most k = ⌊target·n⌋ scores lie strictly below the (k+1)-th smallest: rejected when score < threshold
        threshold = min(float(scores[name].sort().values[int(target * len(scores[name]))])
                        for name, target in targets.items() if name in scores)
        rejected = {name: float((s < threshold).float().mean()) for name, s in scores.items()}
        self.rejection = Rejection(threshold=threshold).as_dict() | {
            "epoch": self.current_epoch, "reject_digits": self.hparams.reject_digits,
            "reject_augmented": self.hparams.reject_augmented,
            **{f"{STATS[name]}_rejected": value for name, value in rejected.items() if name in STATS}}
        self.log("rejection/threshold", threshold)
        self.log("val/digits_rejected", rejected["val"])
        self.log("val/outliers_rejected", rejected["val_outliers"], prog_bar=True)
        if "val_augmented" in rejected:
            self.log("val/augmented_rejected", rejected["val_augmented"])
        if "test" in rejected:
            self.log("test/digits_rejected", rejected["test"])

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
        if self.rejection is not None:
            self.log("test/digits_rejected", self.test_rejected)
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
        # foreach: one multi-tensor kernel per update instead of one per parameter (the default on GPUs only);
        # fused: one kernel for the whole update (the two cannot both be asked for).
        kernels = {"fused": True} if hp.fused else {"foreach": True}
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum,
                                        weight_decay=hp.weight_decay, **kernels)
        else:
            optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, betas=tuple(hp.betas),
                                         weight_decay=hp.weight_decay, **kernels)
        if hp.scheduler == "onecycle":
            onecycle = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=hp.lr, total_steps=self.trainer.estimated_stepping_batches, pct_start=hp.pct_start,
                cycle_momentum=False)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": onecycle, "interval": "step"}}
        if not hp.warmup_steps:
            return optimizer
        warmup = torch.optim.lr_scheduler.LinearLR(optimizer, 1 / hp.warmup_steps, 1.0, hp.warmup_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}

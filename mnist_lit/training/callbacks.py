"""Callbacks that put a run's story into the console and TensorBoard: summary, sample images, best accuracy."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import lightning as L
import torch
import torchinfo
from jsonargparse.typing import NonNegativeInt, OpenUnitInterval
from lightning.pytorch.callbacks import BasePredictionWriter, WeightAveraging
from lightning.pytorch.callbacks.early_stopping import EarlyStopping, EarlyStoppingReason
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchmetrics.utilities.distributed import gather_all_tensors
from torchvision.utils import make_grid

from mnist_lit.common.atomic_files import replaced_on_success
from mnist_lit.common.pictures import captioned_grid, curves_image, to_tensor
from mnist_lit.data.augment import augment


class TorchinfoSummary(L.Callback):
    """Prints a torchinfo table (layers, output shapes, parameters) for one 1×1×28×28 image at the start of fit."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            print(torchinfo.summary(pl_module.net, input_size=(1, 1, 28, 28), device=pl_module.device,
                                    mode="eval", verbose=0))


class TrainingImageGrid(L.Callback):
    """Logs the first training batch, as the network sees it, as an image grid in TensorBoard: ``train/images``, and
    ``train/outliers`` for a batch with outliers (``--data.outliers``), distorted as the digits are."""

    def __init__(self, count: int = 64) -> None:
        self.count = count

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == 0 and batch_idx == 0 and isinstance(trainer.logger, TensorBoardLogger):
            for tag, images in zip(("train/images", "train/outliers"), (batch[0], *batch[2:])):
                images = images[: self.count].reshape(-1, 1, 28, 28).float().cpu()  # 0–255: shown as normalized
                grid = make_grid(images, nrow=8, normalize=True, pad_value=1.0)
                trainer.logger.experiment.add_image(tag, grid, 0)


class BestScoreAsHpMetric(L.Callback):
    """Records the checkpointed best accuracy as TensorBoard's ``hp_metric`` beside the run's hyperparameters."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        best = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
        if best is not None and isinstance(trainer.logger, TensorBoardLogger):
            trainer.logger.log_hyperparams(trainer.logger.hparams, {"hp_metric": float(best)})


class PredictionCSV(BasePredictionWriter):
    """Writes ``predict``'s output to ``<log_dir>/predictions.csv``: index, predicted digit, its probability.

    Each row carries the image's index in the test set, as the data loader fetched it. Under DDP every rank predicts
    its own share of the images (Lightning's unrepeated distributed sampler: each image once); the shares are gathered
    and rank 0 writes them all, in index order.
    """

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions, batch_indices) -> None:
        path = Path(trainer.log_dir or ".") / "predictions.csv"  # on every rank: log_dir is a broadcast from rank 0
        probs = torch.cat([batch["probs"] for batch in predictions])
        index = torch.tensor([i for batch in batch_indices[0] for i in batch], device=probs.device)
        if trainer.world_size > 1:  # a collective: every rank takes part, before rank 0 alone goes on
            probs, index = torch.cat(gather_all_tensors(probs)), torch.cat(gather_all_tensors(index))
        if not trainer.is_global_zero:
            return
        order = index.argsort()
        best = probs[order].max(dim=1)
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_on_success(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "digit", "probability"])
            writer.writerows((i, d, f"{p:.6f}") for i, d, p in zip(index[order].tolist(), best.indices.tolist(),
                                                                   best.values.tolist()))
        print(f"predictions: {path}")


class AugmentedImageGrid(L.Callback):
    """Logs ``train/augmented`` when a run augments its training batches: eight training digits (first column, as
    they are) and seven random distortions of each, drawn with a generator of their own (the run's are untouched)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        augmentation = getattr(trainer.datamodule, "augmentation", None)
        if trainer.global_step or augmentation is None or not augmentation.enabled or \
                not isinstance(trainer.logger, TensorBoardLogger):
            return
        digits = trainer.datamodule.train_set.images[:8].reshape(8, 1, 28, 28)
        distorted = augment(digits.repeat_interleave(7, dim=0), augmentation, torch.Generator().manual_seed(0))
        rows = torch.cat([digits.float().unsqueeze(1), distorted.view(8, 7, 1, 28, 28)], dim=1)
        grid = make_grid(rows.reshape(64, 1, 28, 28).cpu() / 255, nrow=8, pad_value=1.0)
        trainer.logger.experiment.add_image("train/augmented", grid, 0)


class MisclassifiedGrid(L.Callback):
    """Logs ``test/misclassified``: the first test digits the model gets wrong, each captioned true -> predicted
    (probability). Under DDP, rank 0 shows those of its own share."""

    def __init__(self, count: int = 48) -> None:
        self.count = count
        self._wrong: list[tuple[torch.Tensor, ...]] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._wrong = []

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        if not isinstance(outputs, torch.Tensor) or sum(len(w[0]) for w in self._wrong) >= self.count:
            return
        images, labels = batch
        probability, predicted = outputs.softmax(dim=1).max(dim=1)
        wrong = predicted != labels
        self._wrong.append(tuple(t[wrong].cpu() for t in (images, labels, predicted, probability)))

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._wrong or not trainer.is_global_zero or not isinstance(trainer.logger, TensorBoardLogger):
            return
        images, labels, predicted, probability = (torch.cat(parts)[: self.count] for parts in zip(*self._wrong))
        if len(images):
            captions = [f"{t} -> {p} ({q:.2f})" for t, p, q in zip(labels.tolist(), predicted.tolist(),
                                                                    probability.tolist())]
            trainer.logger.experiment.add_image("test/misclassified", to_tensor(captioned_grid(images, captions)),
                                                trainer.global_step)


class TrainingCurves(L.Callback):
    """At the end of ``fit``, ``curves.png`` beside the checkpoints: loss and accuracy per epoch for train, val and
    test, as the MLP tutorial saves ``training_curves.png``. Read back from the run's TensorBoard event files, so a
    resumed run's picture has every epoch."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        checkpoint = trainer.checkpoint_callback
        if not trainer.is_global_zero or checkpoint is None or not isinstance(trainer.logger, TensorBoardLogger):
            return
        trainer.logger.experiment.flush()
        events = EventAccumulator(trainer.logger.log_dir, size_guidance={"scalars": 0}).Reload()
        tags = set(events.Tags()["scalars"])
        epoch_at = {e.step: int(e.value) for e in events.Scalars("epoch")} if "epoch" in tags else {}

        def per_epoch(metric: str) -> dict[str, list[tuple[int, float]]]:
            series = {}
            for split in ("train", "val", "test"):
                if f"{split}/{metric}" in tags:  # a replayed epoch's value replaces the interrupted one's
                    values = {epoch_at.get(e.step, e.step): e.value for e in events.Scalars(f"{split}/{metric}")}
                    series[split] = sorted(values.items())
            return series

        path = Path(checkpoint.dirpath) / "curves.png"
        with replaced_on_success(path) as tmp:
            curves_image(per_epoch("loss"), per_epoch("acc")).save(tmp, format="PNG")


def ema_with_warm_up(decay: float):
    """The exponential moving average of a weight, whose decay ramps up as (1 + n) / (10 + n) (n: updates so far) to
    ``decay``, as timm's and TensorFlow's EMA do: a fixed 0.999 would still hold 80 % of the first averaged weights
    230 steps later, too slow for a short run (measured: 98.27 % vs. 98.98 % for the raw weights after one epoch)."""

    def average(averaged: torch.Tensor, current: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        if not averaged.is_floating_point():  # BatchNorm's num_batches_tracked
            return current
        ramp = (1 + count.to(averaged.dtype)) / (10 + count.to(averaged.dtype))
        return averaged.lerp(current, 1 - ramp.clamp(max=decay))

    return average


class EMAWeights(WeightAveraging):
    """Lightning's weight averaging as an exponential moving average of the weights (``ema_with_warm_up``):
    validation, test, checkpoints (their ``state_dict``) and therefore ``predict-images`` and ``export`` all use the
    averaged weights; ``current_model_state`` in a checkpoint keeps the raw ones, to resume training.

    One change to Lightning's behaviour: after ``fit``, a checkpoint loaded for ``validate`` or ``test`` keeps its
    averaged weights. Lightning 2.6 would load the raw ones into the model (or swap the fit's average in), because
    the fit's average model is still there.
    """

    def __init__(self, decay: OpenUnitInterval = 0.999, update_starting_at_step: NonNegativeInt = 0) -> None:
        """
        Args:
            decay: the largest weight of the average so far at each step (0.999: about the last 1,000 steps count);
                it ramps up to this from 0.1 over the first updates.
            update_starting_at_step: the average starts as a copy of the weights after this many steps.
        """
        super().__init__(avg_fn=ema_with_warm_up(decay))
        self.decay = decay
        self._updates = 0
        self.update_starting_at_step = update_starting_at_step

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx >= self.update_starting_at_step

    # Adapter (docs/design.md, "Dependencies' internals"): torch's AveragedModel.update_parameters reads its update
    # count back to the host twice per call (`bool(self.n_averaged == 0)`, `if self.n_averaged > 0`), which on a GPU
    # stalls every training step, and calls the average once per tensor (6 ms a step for `best` on an H200). Neither
    # torch nor Lightning's WeightAveraging offers a way around it, so the update is done here: the same decay as
    # ema_with_warm_up, bit for bit, as one foreach lerp, with the count kept on the host (`_updates`) and mirrored in
    # the AveragedModel's `n_averaged` buffer, so checkpoints (`averaging_state`, `current_model_state`) stay
    # Lightning's. It touches WeightAveraging's `_average_model` and `_latest_update_step`;
    # tests/test_ema_adapter.py fails if they, or the upstream gap, change.
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._updates = 0  # a new AveragedModel: n_averaged is 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:  # WeightAveraging's, with update_average for update_parameters
        if trainer.global_step > self._latest_update_step and self.should_update(step_idx=trainer.global_step - 1):
            self.update_average(pl_module)
            self._latest_update_step = trainer.global_step

    @torch.no_grad()
    def update_average(self, pl_module: L.LightningModule) -> None:
        """``AveragedModel.update_parameters`` (with buffers) for ``ema_with_warm_up``: the first update copies the
        weights, each later one moves every floating-point tensor towards the model's by 1 − ramp (computed in
        float32 as ema_with_warm_up does), and integer buffers are copied."""
        average = self._average_model
        averaged = list(itertools.chain(average.module.parameters(), average.module.buffers()))
        current = list(itertools.chain(pl_module.parameters(), pl_module.buffers()))
        if self._updates == 0:
            torch._foreach_copy_(averaged, current)
        else:
            count = torch.tensor(self._updates, dtype=torch.float32)
            weight = float(1 - ((1 + count) / (10 + count)).clamp(max=self.decay))
            floats = [i for i, a in enumerate(averaged) if a.is_floating_point()]
            torch._foreach_lerp_([averaged[i] for i in floats], [current[i] for i in floats], weight)
            for a, c in zip(averaged, current, strict=True):
                if not a.is_floating_point():  # BatchNorm's num_batches_tracked
                    a.copy_(c)
        average.n_averaged.add_(1)
        self._updates += 1

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # a later validate() keeps the checkpoint's weights
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_validation_epoch_end(trainer, pl_module)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # resuming: the average and the raw weights both come back
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
            self._updates = int(self._average_model.n_averaged)  # once, before training: the count on the host


class DivergenceStop(EarlyStopping):
    """Stops training after an epoch whose mean training loss is not finite or above max_loss (the run diverged).

    A diverged run would otherwise train on and end "successfully" with a useless network. Lightning's
    ``EarlyStopping`` does the checking, once per epoch, on the loss the module averages anyway (no cost per step); the
    CLI then reports the run as failed. It never stops a run for merely not improving."""

    def __init__(self, max_loss: float = 100.0) -> None:
        """
        Args:
            max_loss: an epoch's mean training loss above this means the run has exploded (a uniform guess over the
                ten digits scores ln 10 ≈ 2.3). Non-finite losses always stop the run.
        """
        super().__init__(monitor="train/loss", mode="min", patience=2**62, check_finite=True,
                         divergence_threshold=max_loss, check_on_train_epoch_end=True, strict=False)
        self.max_loss = max_loss
        self.loss: float | None = None  # the mean training loss of the epoch that stopped the run

    @property
    def diverged(self) -> bool:
        return self.stopping_reason in (EarlyStoppingReason.NON_FINITE_METRIC, EarlyStoppingReason.DIVERGENCE_THRESHOLD)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stopping_reason, self.loss = EarlyStoppingReason.NOT_STOPPED, None  # not a verdict from a resumed run

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.diverged and self.loss is None:
            self.loss = float(trainer.callback_metrics[self.monitor])

"""The optimizer options the `fast` recipe sets, and that their defaults leave the tutorial recipes as they were."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from mnist_lit.common.errors import UserError
from mnist_lit.models.classifier import MNISTClassifier


class RecordLR(L.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.betas: list[tuple[float, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        group = trainer.optimizers[0].param_groups[0]
        self.lrs.append(group["lr"])
        self.betas.append(tuple(group["betas"]))


def fit(model: MNISTClassifier, data, tmp_path, epochs: int = 2) -> RecordLR:
    record = RecordLR()
    trainer = L.Trainer(max_epochs=epochs, default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[record])
    trainer.fit(model, datamodule=data)
    return record


def test_onecycle_peaks_at_lr_after_pct_start_and_keeps_the_betas(tiny_data, tmp_path):
    # 250 tiny training images in batches of 32, the last one dropped: 7 steps per epoch, 14 in all
    model = MNISTClassifier(net="fast", lr=0.01, betas=(0.7, 0.9), scheduler="onecycle", pct_start=0.5)
    record = fit(model, tiny_data(), tmp_path)
    assert len(record.lrs) == 14
    assert record.lrs[0] == pytest.approx(0.01 / 25)
    assert record.lrs.index(max(record.lrs)) == 0.5 * 14 - 1 and max(record.lrs) == pytest.approx(0.01)
    assert record.lrs[-1] < 0.01 / 1000  # annealed to lr / 250,000 by the last step
    assert set(record.betas) == {(0.7, 0.9)}  # not cycled: the betas hold throughout


def test_defaults_are_plain_adam_at_a_constant_lr(tiny_data, tmp_path):
    model = MNISTClassifier(net="mlp", lr=0.001)
    record = fit(model, tiny_data(), tmp_path, epochs=1)
    assert set(record.lrs) == {0.001} and set(record.betas) == {(0.9, 0.999)}
    assert isinstance(model.configure_optimizers(), torch.optim.Adam)  # no scheduler at all


@pytest.mark.parametrize("kwargs, message", [
    ({"scheduler": "onecycle", "warmup_steps": 100}, "both set a warm-up"),
    ({"betas": (0.9, 1.0)}, "each must be in"),
])
def test_contradictory_or_invalid_options_are_one_line_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        MNISTClassifier(net="fast", **kwargs)

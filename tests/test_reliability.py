"""Reproducible runs, and checkpoints treated as data."""

from __future__ import annotations

import os
import subprocess
import sys

import lightning as L
import torch

from mnist_lit.module import MNISTClassifier
from mnist_lit.resume import ResumableRun


def fit_once(dm, tmp_path, name: str) -> tuple[dict, dict]:
    L.seed_everything(7, verbose=False)
    model = MNISTClassifier(net="cnn3block", lr=0.005, warmup_steps=3)
    trainer = L.Trainer(max_epochs=2, limit_train_batches=4, default_root_dir=tmp_path / name, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, deterministic=True)
    trainer.fit(model, datamodule=dm)
    return {k: v.item() for k, v in trainer.callback_metrics.items()}, model.state_dict()


def test_same_seed_gives_identical_metrics_and_weights(tiny_data, tmp_path):
    metrics_a, weights_a = fit_once(tiny_data(), tmp_path, "a")
    metrics_b, weights_b = fit_once(tiny_data(), tmp_path, "b")
    assert metrics_a == metrics_b and {"train/loss", "val/acc", "test/acc"} <= metrics_a.keys()
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"net": "mlp"}, "payload": Exploit()}, evil)
    for command in (["test", "--ckpt_path", str(evil)], ["predict-images", "--ckpt", str(evil), str(evil)]):
        run = subprocess.run([sys.executable, "-m", "mnist_lit.cli", *command], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 2, run.stderr
        assert run.stderr.strip().startswith("error: ") and len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert "evil.ckpt" in run.stderr and "Traceback" not in run.stderr
        assert not marker.exists(), "loading a checkpoint must never run code from it"


def test_an_epochs_random_numbers_depend_only_on_the_seed_and_the_epoch(tiny_data, tmp_path):
    """A replayed epoch draws the same dropout masks and the same batch order, whatever ran in the process before."""
    L.seed_everything(3, verbose=False)
    start = MNISTClassifier(net="bncnn").state_dict()
    weights = []
    for unrelated_draws in (0, 5):
        torch.rand(unrelated_draws)  # what a fresh process resuming at this epoch would not have drawn
        model = MNISTClassifier(net="bncnn")
        model.load_state_dict(start)
        trainer = L.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            callbacks=[ResumableRun()], default_root_dir=tmp_path)
        trainer.fit(model, datamodule=tiny_data())
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

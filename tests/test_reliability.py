"""Reproducible runs, checkpoints treated as data, and writes confined to the data and log folders."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from mnist_lit.data.provision import OFFICIAL_PINS
from mnist_lit.models.classifier import MNISTClassifier
from mnist_lit.training.resume import ResumableRun

pytestmark = pytest.mark.slow  # real MNIST training, subprocesses, servers or a browser


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


def test_a_run_writes_only_into_its_data_and_log_folders(tmp_path, mnist_dir):
    """Provisioning, training and testing write into data_dir and lightning_logs/ only: nothing in HOME, the working
    folder or the temp folder (except the empty torchinductor_<user> folder torch itself makes there on import)."""
    home, tmp, cwd, data = (tmp_path / name for name in ("home", "tmp", "cwd", "data"))
    raw = data / "MNIST" / "raw"
    for folder in (home, tmp, cwd, raw):
        folder.mkdir(parents=True)
    for name in OFFICIAL_PINS:  # provisioning has work to do: unpack these
        (raw / f"{name}.gz").write_bytes(gzip.compress((Path(mnist_dir) / "MNIST" / "raw" / name).read_bytes(), 1))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "MPLCONFIGDIR", "TORCHINDUCTOR"))}
    run = subprocess.run(
        [sys.executable, "-m", "mnist_lit.cli", "fit", "--model", "lenet5", "--data.data_dir", str(data),
         "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2",
         "--trainer.limit_test_batches", "2", "--trainer.enable_progress_bar", "false"],
        cwd=cwd, env={**env, "HOME": str(home), "TMPDIR": str(tmp)}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert not any(home.iterdir())
    assert [p.name for p in cwd.iterdir()] == ["lightning_logs"]
    assert all(p.name.startswith("torchinductor_") and not any(p.iterdir()) for p in tmp.iterdir())
    assert sorted(p.name for p in data.rglob("*")) == sorted(["MNIST", "raw", *OFFICIAL_PINS,
                                                              *(f"{name}.gz" for name in OFFICIAL_PINS)])

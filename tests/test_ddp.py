"""Two CPU processes under DDP train one run: each rank its own shard, metrics over the whole split, one log folder."""

from __future__ import annotations

import math
import subprocess
import sys

import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lit.data import MNISTDataModule
from mnist_lit.module import MNISTClassifier
from mnist_lit.normalization import normalize


def accuracy(model: MNISTClassifier, images: torch.Tensor, labels: torch.Tensor, normalization: str) -> float:
    with torch.no_grad():
        return (model(normalize(images, normalization)).argmax(dim=1) == labels).float().mean().item()


def test_ddp_on_two_cpu_processes(tmp_path, mnist_dir):
    run = subprocess.run(
        [sys.executable, "-m", "mnist_lit.cli", "fit", "--model", "mlp", "--data.data_dir", mnist_dir,
         "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
         "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "40", "--trainer.enable_progress_bar", "false"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    output = run.stdout + run.stderr
    assert output.count("MNIST: served by") == 2, "provisioned (verified) by one rank, for the fit and the final test"
    assert "sync_dist" not in output, "metrics are synchronised by torchmetrics, Lightning has nothing to warn about"

    runs = tmp_path / "lightning_logs" / "mlp"
    assert [p.name for p in runs.iterdir()] == ["version_0"], "one log folder"
    version = runs / "version_0"
    checkpoints = sorted(p.name for p in (version / "checkpoints").iterdir())
    assert len(checkpoints) == 2 and checkpoints[-1] == "last.ckpt", checkpoints
    assert len(list(version.glob("events.out.tfevents.*"))) == 2, "rank 0 writes the fit and the final test"

    # each rank trains on its own half: 40 steps per epoch of 64 images each, not 40 of the same 64 on both ranks
    last = torch.load(version / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 * 40 and last["epoch"] == 1

    # the logged accuracies are those of the whole splits, not of rank 0's half
    normalization = yaml.safe_load((version / "config.yaml").read_text())["data"]["normalization"]
    model = MNISTClassifier.load_from_checkpoint(version / "checkpoints" / "last.ckpt", map_location="cpu").eval()
    data = MNISTDataModule(data_dir=mnist_dir)
    data.setup("fit")
    events = EventAccumulator(str(version)).Reload()
    for split, dataset in (("val", data.val_set), ("test", data.test_set)):
        logged = events.Scalars(f"{split}/acc")[1].value  # after epoch 2, the state last.ckpt holds
        assert math.isclose(logged, accuracy(model, dataset.images, dataset.labels, normalization), abs_tol=1e-6)

"""Several CPU processes under DDP: one run with each rank on its own shard, metrics over the whole split, one log
folder; evaluation and prediction that count every image exactly once, whatever the batch sizes and the processes."""

from __future__ import annotations

import csv
import math
import subprocess
import sys

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.models.classifier import MNISTClassifier
from mnist_lit.training.callbacks import PredictionCSV

pytestmark = pytest.mark.slow  # real MNIST training, subprocesses, servers or a browser


def accuracy(model: MNISTClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(images).argmax(dim=1) == labels).float().mean().item()


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
    checkpoints = sorted(p.name for p in (version / "checkpoints").glob("*.ckpt"))  # beside curves.png
    assert len(checkpoints) == 2 and checkpoints[-1] == "last.ckpt", checkpoints
    assert len(list(version.glob("events.out.tfevents.*"))) == 2, "rank 0 writes the fit and the final test"

    # each rank trains on its own half: 40 steps per epoch of 64 images each, not 40 of the same 64 on both ranks
    last = torch.load(version / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 * 40 and last["epoch"] == 1

    # the logged accuracies are those of the whole splits, not of rank 0's half
    model = MNISTClassifier.load_from_checkpoint(version / "checkpoints" / "last.ckpt", map_location="cpu").eval()
    data = MNISTDataModule(data_dir=mnist_dir)
    data.setup("fit")
    events = EventAccumulator(str(version)).Reload()
    for split, dataset in (("val", data.val_set), ("test", data.test_set)):
        logged = events.Scalars(f"{split}/acc")[1].value  # after epoch 2, the state last.ckpt holds
        assert math.isclose(logged, accuracy(model, dataset.images, dataset.labels), abs_tol=1e-6)


def cli_on_cpu_processes(processes: int, *args: str, cwd) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [sys.executable, "-m", "mnist_lit.cli", *args, "--trainer.accelerator", "cpu", "--trainer.devices",
         str(processes), "--trainer.strategy", "ddp", "--trainer.enable_progress_bar", "false"],
        cwd=cwd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def one_process(ckpt, mnist_dir: str, **trainer_options) -> tuple[L.Trainer, MNISTClassifier, MNISTDataModule]:
    """The checkpoint, its data and a Trainer on one CPU device, in this process: the reference figures."""
    model = MNISTClassifier.load_from_checkpoint(ckpt, map_location="cpu")
    data = MNISTDataModule(data_dir=mnist_dir)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, **trainer_options)
    return trainer, model, data


def test_test_loss_and_accuracy_do_not_depend_on_the_batch_sizes(ckpt, mnist_dir):
    trainer, model, data = one_process(ckpt, mnist_dir)
    figures = []
    for size in (1000, 3000, 9999):  # equal batches; 3 of 3,000 and one of 1,000; one of 9,999 and one of 1
        sized = MNISTDataModule(data_dir=mnist_dir, eval_batch_size=size)
        figures.append(trainer.test(model, datamodule=sized, verbose=False)[0])
    data.setup("test")
    with torch.no_grad():  # the mean over the 10,000 images, computed here in one go
        model.eval()
        logits = model(data.test_set.images).double()
    loss = torch.nn.functional.cross_entropy(logits, data.test_set.labels).item()
    correct = (logits.argmax(dim=1) == data.test_set.labels).sum().item()
    for logged in figures:
        assert logged["test/acc"] == torch.tensor(correct / 10_000).item()
        assert math.isclose(logged["test/loss"], loss, rel_tol=1e-5), (logged, loss)


def test_predict_on_two_processes_writes_every_image_once_under_its_index(tmp_path, ckpt, mnist_dir):
    trainer, model, data = one_process(ckpt, mnist_dir, callbacks=[PredictionCSV()], default_root_dir=tmp_path)
    trainer.predict(model, datamodule=data, return_predictions=False)
    single = (tmp_path / "predictions.csv").read_text().splitlines()

    cli_on_cpu_processes(2, "predict", "--ckpt_path", str(ckpt), "--data.data_dir", mnist_dir, cwd=tmp_path)
    [path] = (tmp_path / "lightning_logs").rglob("predictions.csv")
    rows = list(csv.reader(path.read_text().splitlines()))
    assert rows[0] == ["index", "digit", "probability"] and len(rows) == 1 + 10_000
    assert [int(row[0]) for row in rows[1:]] == list(range(10_000)), "each test image once, under its own index"
    assert [row[:2] for row in rows[1:]] == [line.split(",")[:2] for line in single[1:]], "the same digits"


def test_test_on_three_processes_scores_every_image_once(tmp_path, ckpt, mnist_dir):
    """3 processes do not divide the 10,000 test images: Lightning's DistributedSampler would score 2 of them twice."""
    trainer, model, data = one_process(ckpt, mnist_dir)
    expected = trainer.test(model, datamodule=data, verbose=False)[0]

    # shares of 3,334, 3,333 and 3,333 images, in batches of 3,000 and the rest
    cli_on_cpu_processes(3, "test", "--ckpt_path", str(ckpt), "--data.data_dir", mnist_dir,
                         "--data.eval_batch_size", "3000", cwd=tmp_path)
    [events_file] = (tmp_path / "lightning_logs").rglob("events.out.tfevents.*")
    events = EventAccumulator(str(events_file.parent)).Reload()
    assert events.Scalars("test/acc")[-1].value == expected["test/acc"]
    assert math.isclose(events.Scalars("test/loss")[-1].value, expected["test/loss"], rel_tol=1e-6)
    table = events.Tensors("test/confusion_matrix/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert sum(int(c) for row in table.splitlines()[2:] for c in row.split("|")[2:-1]) == 10_000

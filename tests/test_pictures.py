"""The pictures a run leaves for people (TensorBoard images, curves.png), and the `best` recipe's EMA weights being the
ones tested and checkpointed. One real CLI run of `best` on real MNIST, a few steps long."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchvision.datasets import MNIST

from mnist_lit.inference.predictor import Predictor

pytestmark = pytest.mark.slow  # real MNIST training, subprocesses, servers or a browser

RUN = ["fit", "--model", "best", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "4",
       "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "2", "--data.eval_batch_size", "100",
       "--data.batch_size", "32", "--trainer.callbacks.update_starting_at_step", "2",
       "--trainer.enable_progress_bar", "false"]


@pytest.fixture(scope="module")
def best_run(tmp_path_factory, mnist_dir) -> tuple[Path, str]:
    cwd = tmp_path_factory.mktemp("pictures")
    done = subprocess.run([sys.executable, "-m", "mnist_lit.cli", *RUN, "--data.data_dir", mnist_dir], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return cwd / "lightning_logs" / "best" / "version_0", done.stdout


def test_the_pictures_are_in_the_event_files(best_run):
    version, _ = best_run
    events = EventAccumulator(str(version), size_guidance={"images": 0}).Reload()
    assert {"train/images", "train/augmented", "test/confusion_heatmap", "test/misclassified"} <= set(
        events.Tags()["images"])
    sizes = {}
    for tag in ("train/augmented", "test/confusion_heatmap", "test/misclassified"):
        image = Image.open(io.BytesIO(events.Images(tag)[-1].encoded_image_string))
        sizes[tag] = image.size
        assert image.getextrema() != ((0, 0),) * len(image.getbands()), f"{tag} is blank"
    assert sizes["train/augmented"] == (8 * 30 + 2, 8 * 30 + 2)  # 8×8 digits of 28 px, 2 px apart
    assert sizes["test/confusion_heatmap"][0] > 400


def test_curves_png_lies_beside_the_checkpoints(best_run):
    version, _ = best_run
    curves = Image.open(version / "checkpoints" / "curves.png")
    assert curves.format == "PNG" and curves.size == (1100, 440)
    # three coloured series (train, val, test) are drawn in the accuracy panel
    colours = {tuple(pixel) for pixel in np.asarray(curves.crop((630, 50, 1070, 380))).reshape(-1, 3).tolist()}
    assert {(31, 119, 180), (255, 127, 14), (44, 160, 44)} <= colours


def test_the_checkpoint_holds_the_ema_weights_and_they_are_what_was_tested(best_run, mnist_dir):
    version, stdout = best_run
    best = version.parents[2] / re.search(r"^best checkpoint: (.+)$", stdout, re.M).group(1)  # the run's cwd
    reported = float(re.search(r"^test accuracy: ([0-9.]+)$", stdout, re.M).group(1))
    checkpoint = torch.load(best, weights_only=True)
    raw, ema = checkpoint["current_model_state"], checkpoint["state_dict"]
    assert any(not torch.equal(raw[k], ema[k]) for k in ema if k.endswith("weight"))
    # the final test (the first 200 test digits) scored the EMA weights, as predict-images and export read them
    test = MNIST(mnist_dir, train=False)
    predicted = Predictor.from_checkpoint(best).probabilities(test.data[:200]).argmax(dim=1)
    assert abs((predicted == test.targets[:200]).float().mean().item() - reported) < 1e-6

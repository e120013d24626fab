"""Real MNIST as a user's first run provisions it: cnn3block trains well in 300 steps, `fast` reaches 99 %."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # real MNIST training, subprocesses, servers or a browser


def test_cnn3block_reaches_95_percent_in_300_steps(tmp_path, mnist_dir):
    # Seed 3 is one whose batch order makes the tutorial's recipe (no warm-up) collapse to one digit
    # (docs/decisions.md); the recipe's warm-up must carry it past that.
    args = ["fit", "--model", "cnn3block", "--seed_everything", "3", "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "300", "--trainer.limit_val_batches", "2",
            "--trainer.enable_progress_bar", "false", "--data.data_dir", mnist_dir]
    run = subprocess.run([sys.executable, "-m", "mnist_lit.cli", *args], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    accuracy = float(re.search(r"^test accuracy: ([0-9.]+)$", run.stdout, re.M).group(1))
    assert accuracy >= 0.95, f"cnn3block reached only {accuracy:.4f} on the 10,000 official test images"


def test_fast_recipe_reaches_98_8_percent(tmp_path, mnist_dir):
    # The recipe as `make fit` runs it, whole. The benchmark carries the 99.0 % claim over seeds
    # (bench/TIME_TO_ACCURACY.md); 98.8 % leaves a margin so this never rests on a lucky seed.
    args = ["fit", "--model", "fast", "--trainer.enable_progress_bar", "false", "--data.data_dir", mnist_dir]
    run = subprocess.run([sys.executable, "-m", "mnist_lit.cli", *args], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    best = re.search(r"^best checkpoint: (\S+)$", run.stdout, re.M).group(1)
    assert "-val_acc=" in best, best  # selected on the validation split, so the test figure is an honest one
    accuracy = float(re.search(r"^test accuracy: ([0-9.]+)$", run.stdout, re.M).group(1))
    assert accuracy >= 0.988, f"fast reached only {accuracy:.4f} on the 10,000 official test images"

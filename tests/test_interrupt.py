"""Interrupted runs: SIGKILL, SIGTERM or Ctrl+C in mid-epoch, then ``fit --ckpt_path last``, finish exactly as an
uninterrupted run with the same seed does: same metrics, same best checkpoint, bit-identical weights (CPU)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lit.training.resume import AtomicCheckpointIO

pytestmark = pytest.mark.slow  # real MNIST training, subprocesses, servers or a browser

# cnn3block's recipe has a warm-up, so the scheduler's state must survive too. (Dropout is covered in-process by
# test_an_epochs_random_numbers_depend_only_on_the_seed_and_the_epoch: bncnn's checkpoints make this test slow.)
RUN = ["fit", "--model", "cnn3block", "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "5",
       "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2", "--data.eval_batch_size", "100",
       "--trainer.enable_progress_bar", "false"]

# The `best` recipe: per-sample augmentation (its own random stream per epoch), dropout, BatchNorm, OneCycle and an
# EMA of the weights (started after 2 steps here, so that it is under way when the run is killed).
AUGMENTED = ["fit", "--model", "best", "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "5",
             "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2", "--data.eval_batch_size", "100",
             "--data.batch_size", "32", "--trainer.callbacks.update_starting_at_step", "2",
             "--trainer.enable_progress_bar", "false"]

# Runs the real CLI, and sends itself SIGNAL from inside epoch 1's 4th training step.
STOPPING_CLI = """
import os, signal, sys
from mnist_lit import cli
from mnist_lit.models.classifier import MNISTClassifier

step = MNISTClassifier.training_step

def stopping_step(self, batch, batch_idx):
    if self.current_epoch == 1 and batch_idx == 3:
        os.kill(os.getpid(), signal.{name})
    return step(self, batch, batch_idx)

MNISTClassifier.training_step = stopping_step
sys.exit(cli.main())
"""


def run(cwd: Path, *args: str, stop: str | None = None) -> subprocess.CompletedProcess:
    program = ["-c", STOPPING_CLI.format(name=stop)] if stop else ["-m", "mnist_lit.cli"]
    return subprocess.run([sys.executable, *program, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def outcome(cwd: Path, stdout: str, model: str = "cnn3block") -> dict:
    """What a finished run leaves: its report, its curves and its checkpoints' weights."""
    version = cwd / "lightning_logs" / model / "version_0"
    events = EventAccumulator(str(version)).Reload()
    curves = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in ("val/acc", "test/acc", "train/loss")}
    checkpoints = {p.name: torch.load(p, weights_only=True) for p in (version / "checkpoints").glob("*.ckpt")}
    return {
        "report": [line for line in stdout.splitlines() if line.startswith(("best checkpoint:", "test accuracy:"))],
        "curves": curves,
        "checkpoints": sorted(checkpoints),
        "weights": {name: ckpt["state_dict"] for name, ckpt in checkpoints.items()},
        "epochs": {name: (ckpt["epoch"], ckpt["global_step"]) for name, ckpt in checkpoints.items()},
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, mnist_dir) -> dict:
    cwd = tmp_path_factory.mktemp("uninterrupted")
    done = run(cwd, *RUN, "--data.data_dir", mnist_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return outcome(cwd, done.stdout)


def stop_in_epoch_1(cwd: Path, stop: str, status: int, mnist_dir: str, args: list[str] = RUN,
                    model: str = "cnn3block") -> None:
    stopped = run(cwd, *args, "--data.data_dir", mnist_dir, stop=stop)
    assert stopped.returncode == status, stopped.stderr[-3000:]
    last = cwd / "lightning_logs" / model / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0, "last.ckpt holds the end of the last whole epoch"
    if stop != "SIGKILL":
        assert f"stopped in epoch 1; {last.relative_to(cwd)} holds the run" in stopped.stderr, stopped.stderr
        assert "Traceback" not in stopped.stderr


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path, mnist_dir):
    stop_in_epoch_1(tmp_path, "SIGINT", 1, mnist_dir)  # 1: Lightning's own status after a KeyboardInterrupt


@pytest.mark.parametrize("stop, status", [("SIGKILL", -signal.SIGKILL), ("SIGTERM", 128 + signal.SIGTERM)])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, mnist_dir, uninterrupted, stop, status):
    stop_in_epoch_1(tmp_path, stop, status, mnist_dir)

    resumed = run(tmp_path, *RUN, "--data.data_dir", mnist_dir, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "lightning_logs" / "cnn3block").iterdir()) == ["version_0"]
    result = outcome(tmp_path, resumed.stdout)
    for key in ("report", "curves", "checkpoints", "epochs"):
        assert result[key] == uninterrupted[key], key
    for name, weights in uninterrupted["weights"].items():
        assert all(torch.equal(weights[k], result["weights"][name][k]) for k in weights), name


def test_an_augmented_run_with_ema_resumes_to_the_same_result(tmp_path, mnist_dir):
    for folder in ("uninterrupted", "killed"):
        (tmp_path / folder).mkdir()
    done = run(tmp_path / "uninterrupted", *AUGMENTED, "--data.data_dir", mnist_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    uninterrupted = outcome(tmp_path / "uninterrupted", done.stdout, "best")

    stop_in_epoch_1(tmp_path / "killed", "SIGKILL", -signal.SIGKILL, mnist_dir, AUGMENTED, "best")
    resumed = run(tmp_path / "killed", *AUGMENTED, "--data.data_dir", mnist_dir, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = outcome(tmp_path / "killed", resumed.stdout, "best")
    for key in ("report", "curves", "checkpoints", "epochs"):
        assert result[key] == uninterrupted[key], key
    for name, weights in uninterrupted["weights"].items():  # the EMA weights (a checkpoint's state_dict holds them)
        assert all(torch.equal(weights[k], result["weights"][name][k]) for k in weights), name
    assert uninterrupted["epochs"]["last.ckpt"] == (2, 15)  # 3 epochs of 5 steps
    raw = [torch.load(tmp_path / cwd / "lightning_logs" / "best" / "version_0" / "checkpoints" / "last.ckpt",
                      weights_only=True)["current_model_state"] for cwd in ("uninterrupted", "killed")]
    assert all(torch.equal(raw[0][k], raw[1][k]) for k in raw[0]), "the raw (not averaged) weights differ"
    ema = uninterrupted["weights"]["last.ckpt"]
    assert any(not torch.equal(ema[k], raw[0][k]) for k in ema if k.endswith("weight")), "no EMA in the checkpoint"


KILLED_WHILE_SAVING = """
import os, signal, sys, torch
from mnist_lit.training.resume import AtomicCheckpointIO

io = AtomicCheckpointIO()
io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, sys.argv[1])

def dies_half_way(obj, f, *args, **kwargs):
    f.write(b"PK half a checkpoint")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = dies_half_way
io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, sys.argv[1])
"""


def test_a_kill_while_saving_leaves_the_previous_checkpoint_readable(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_SAVING, str(path)], capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.zeros(3))
    leftovers = [p.name for p in path.parent.iterdir() if p != path]
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.ckpt.") and leftovers[0].endswith(".part")

    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)  # the next save tidies up
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(3))

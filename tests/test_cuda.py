"""On a CUDA GPU: a training step never waits for the GPU (every recipe), and an augmented run resumed from
``last.ckpt`` replays the uninterrupted run exactly. Skipped, saying so, where torch sees no CUDA device.

A step "waits for the GPU" when the host needs a value the GPU has not finished computing: ``.item()``, ``.tolist()``,
``.cpu()``, ``nonzero``, boolean-mask indexing, a blocking copy from pageable memory. Each one stalls the host until
all queued work is done, so the GPU idles while the host prepares the next step. ``torch.cuda.set_sync_debug_mode``
turns each such call into an error; :class:`NoHostSync` sets it around every training step, from the batch-transfer
hook (where the augmentation runs) to the last callback's ``on_train_batch_end`` that runs before its own.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from mnist_lit.training import cli
from tests.test_interrupt import AUGMENTED, STOPPING_CLI, outcome

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: torch.cuda.is_available() is false"),
    pytest.mark.slow,
]

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
ACCELERATOR = "gpu"
EPOCHS, STEPS = 2, 4  # per recipe: 2 epochs of 4 steps; the first step of the run is not checked (see NoHostSync)
# The GPU's speed options (docs/speed.md), on the tutorial network that gains most from them and on `best`
# (augmentation, BatchNorm, dropout, EMA). Compiled runs leave their first two steps unchecked: torch.compile compiles
# in the first, and "reduce-overhead" records its CUDA graphs in the second (replayed from the third on).
SPEED_OPTIONS = {
    "bf16-fused": ["--trainer.precision", "bf16-mixed", "--model.fused", "true"],
    "compile": ["--model.compile", "default"],
    "cudagraphs": ["--model.compile", "reduce-overhead"],
}
CASES = [(recipe, "") for recipe in RECIPES] + [
    ("cnn3block", "bf16-fused"), ("cnn3block", "cudagraphs"), ("best", "bf16-fused"), ("best", "compile")]


class NoHostSync(L.Callback):
    """Every training step but the run's first under ``torch.cuda.set_sync_debug_mode(mode)``: the batch-transfer
    hook (the augmentation), ``training_step``, backward, the optimizer step and the per-step hooks of the callbacks
    listed before this one, up to its own ``on_train_batch_end``.

    The run's first ``skip`` steps are left out: that is where one-off work happens (TrainingImageGrid logs the first
    batch, read back, to TensorBoard; torch.compile compiles). ``mode="error"`` fails the step at the first
    synchronisation; ``mode="warn"`` records every one (``sites``, as file:line) and lets the run go on.
    """

    last: NoHostSync | None = None  # the instance of the latest run (LightningCLI builds it from its class path)

    def __init__(self, mode: str = "error", skip: int = 1) -> None:
        self.mode, self.skip = mode, skip
        self.steps = 0  # steps checked
        self.transfers = 0  # training batches whose transfer hook was checked
        self.sites: list[str] = []
        self._recording: warnings.catch_warnings | None = None
        NoHostSync.last = self

    def _open(self) -> None:
        if self.mode == "warn":
            self._recording = warnings.catch_warnings(record=True)
            self._log = self._recording.__enter__()
            warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode(self.mode)

    def _close(self) -> None:
        torch.cuda.set_sync_debug_mode(0)
        if self._recording is not None:
            self._recording.__exit__(None, None, None)
            self._recording = None
            self.sites += [f"{Path(w.filename).name}:{w.lineno}" for w in self._log
                           if "synchroniz" in str(w.message)]

    def _checked(self, trainer: L.Trainer) -> bool:
        return trainer.training and not trainer.sanity_checking and trainer.global_step >= self.skip

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        hook = datamodule.on_after_batch_transfer

        @functools.wraps(hook)  # Lightning calls a data module's hook only where it is overridden: __wrapped__ says so
        def checked_hook(batch, dataloader_idx: int):
            if not self._checked(trainer):
                return hook(batch, dataloader_idx)
            self.transfers += 1
            self._open()
            try:
                return hook(batch, dataloader_idx)
            finally:
                self._close()

        datamodule.on_after_batch_transfer = checked_hook

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self._checked(trainer):
            self.steps += 1
            self._open()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        self._close()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._close()


def fit_checked(recipe: str, mode: str, cwd: Path, data_dir: str, monkeypatch,
                options: str = "") -> tuple[NoHostSync, str | None]:
    """A few steps of the recipe (with the SPEED_OPTIONS named ``options``) through the real CLI, in this process,
    with NoHostSync(mode) appended to its callbacks; the callback and the error that stopped the run (None if it
    finished)."""
    cwd.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    callbacks = yaml.safe_load((ROOT / "configs" / f"{recipe}.yaml").read_text()).get("trainer", {}).get("callbacks")
    ema = ["--trainer.callbacks.update_starting_at_step", "1"] if callbacks else []  # the EMA runs from step 1
    speed = SPEED_OPTIONS.get(options, [])
    skip = 2 if "--model.compile" in speed else 1
    args = ["fit", "--model", recipe, *ema, *speed, "--trainer.callbacks+=tests.test_cuda.NoHostSync",
            "--trainer.callbacks.mode", mode, "--trainer.callbacks.skip", str(skip),
            "--trainer.accelerator", ACCELERATOR,
            "--trainer.max_epochs", str(EPOCHS), "--trainer.limit_train_batches", str(STEPS),
            "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1",
            "--trainer.num_sanity_val_steps", "0", "--data.eval_batch_size", "100",
            "--trainer.enable_progress_bar", "false", "--data.data_dir", data_dir]
    NoHostSync.last = None
    torch.compiler.reset()  # each run compiles afresh, as in a process of its own
    try:
        status = cli.main(args)
        error = None if status == 0 else f"exit status {status}"
    except RuntimeError as err:
        error = f"{type(err).__name__}: {err}"
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert NoHostSync.last is not None and NoHostSync.last.mode == mode, "the CLI did not take the callback"
    return NoHostSync.last, error


@pytest.mark.parametrize("recipe, options", CASES, ids=[f"{r}-{o}" if o else r for r, o in CASES])
def test_a_training_step_never_waits_for_the_gpu(recipe, options, mnist_dir, tmp_path, monkeypatch):
    checked, error = fit_checked(recipe, "error", tmp_path / "error", mnist_dir, monkeypatch, options)
    if error is not None:  # say every place that waits, not only the first
        census, _ = fit_checked(recipe, "warn", tmp_path / "warn", mnist_dir, monkeypatch, options)
        sites = sorted(set(census.sites), key=census.sites.index)
        pytest.fail(f"{recipe} {options}: {error.splitlines()[0]}\nevery synchronisation in {census.steps} steps: "
                    f"{len(census.sites)} calls at {', '.join(sites) or 'none recorded'}")
    assert checked.steps == checked.transfers == EPOCHS * STEPS - checked.skip, "the steps were not all checked"


def run_cli(cwd: Path, *args: str, stop: str | None = None) -> subprocess.CompletedProcess:
    """The CLI in its own process (``stop``: it kills itself in epoch 1, as tests/test_interrupt.py's runs do), with
    cuBLAS set up for ``--trainer.deterministic``."""
    program = ["-c", STOPPING_CLI.format(name=stop)] if stop else ["-m", "mnist_lit.cli"]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8", "PYTHONPATH": path}
    return subprocess.run([sys.executable, *program, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=env, check=False)


def test_an_augmented_run_resumed_on_the_gpu_replays_exactly(tmp_path, mnist_dir):
    """``best`` (augmentation, dropout, BatchNorm, OneCycle, EMA), killed in epoch 1 and resumed with
    ``--ckpt_path last`` on the GPU, ends bit for bit as the uninterrupted run. ``--trainer.deterministic warn``
    takes cuDNN's and cuBLAS's run-to-run variation out, which would otherwise hide what resuming itself does."""
    args = [*AUGMENTED, "--trainer.accelerator", ACCELERATOR, "--trainer.deterministic", "warn",
            "--data.data_dir", mnist_dir]
    for folder in ("uninterrupted", "killed"):
        (tmp_path / folder).mkdir()
    done = run_cli(tmp_path / "uninterrupted", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    uninterrupted = outcome(tmp_path / "uninterrupted", done.stdout, "best")

    killed = run_cli(tmp_path / "killed", *args, stop="SIGKILL")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    last = tmp_path / "killed" / "lightning_logs" / "best" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0, "last.ckpt holds the end of the last whole epoch"
    resumed = run_cli(tmp_path / "killed", *args, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = outcome(tmp_path / "killed", resumed.stdout, "best")

    for key in ("report", "curves", "checkpoints", "epochs"):
        assert result[key] == uninterrupted[key], key
    for name, weights in uninterrupted["weights"].items():  # the EMA weights
        assert all(torch.equal(weights[k].cpu(), result["weights"][name][k].cpu()) for k in weights), name
    raw = [torch.load(tmp_path / cwd / "lightning_logs" / "best" / "version_0" / "checkpoints" / "last.ckpt",
                      weights_only=True)["current_model_state"] for cwd in ("uninterrupted", "killed")]
    assert all(torch.equal(raw[0][k].cpu(), raw[1][k].cpu()) for k in raw[0]), "the raw (not averaged) weights differ"

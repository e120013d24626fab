"""The GPU's speed options (docs/speed.md), through the CLI on tiny data, on the CPU: each is accepted, does what it
says in the run it is given to, and trains; off by default, so the recipes run as before."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.models.classifier import MNISTClassifier
from mnist_lit.training import cli
from mnist_lit.training.callbacks import EMAWeights
from tests.conftest import write_tiny_mnist


class Probe(L.Callback):
    """What the run did: the optimizer's kernels, and for every forward pass of the network (a hook inside it, so
    inside the compiled code when it is compiled) whether it ran compiled and the dtype of its output. The passes are
    counted in a tensor: a compiled hook that appended to a Python list would have torch.compile guard on the list's
    length, recompile at every call and give up compiling after 8."""

    last: Probe | None = None  # the instance of the latest run (LightningCLI builds it from its class path)

    def __init__(self) -> None:
        self.kernels: dict[str, object] = {}
        self.counts = torch.zeros(2, 2, dtype=torch.long)  # [compiled, bfloat16 output]
        Probe.last = self

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """From here on: the training steps and evaluations (not the model summary's pass)."""
        defaults = trainer.optimizers[0].defaults
        self.kernels = {key: defaults[key] for key in ("fused", "foreach")}
        pl_module.net.classifier.register_forward_hook(self._record)  # inside the network: in its compiled code

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.hparams = dict(pl_module.hparams)

    def _record(self, module, inputs, output) -> None:
        self.counts[int(torch.compiler.is_compiling()), int(output.dtype == torch.bfloat16)] += 1

    @property
    def passes(self) -> set[tuple[bool, torch.dtype]]:
        """(ran compiled, output dtype) of the passes seen."""
        return {(bool(c), torch.bfloat16 if b else torch.float32) for c, b in self.counts.nonzero().tolist()}


def fit(options: list[str], tmp_path, monkeypatch) -> tuple[int, Probe]:
    """``fit --model cnn3block OPTIONS`` in this process, 2 epochs of 3 steps on tiny MNIST files, and its Probe."""
    monkeypatch.setattr(MNISTDataModule, "pins", write_tiny_mnist(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    torch.compiler.reset()  # each run compiles afresh, as a new process would
    Probe.last = None
    status = cli.main(["fit", "--model", "cnn3block", "--data.data_dir", str(tmp_path / "data"),
                       "--data.val_size", "50", "--data.batch_size", "32", "--data.eval_batch_size", "50",
                       "--model.warmup_steps", "0", "--trainer.max_epochs", "2",
                       "--trainer.limit_train_batches", "3", "--trainer.enable_progress_bar", "false",
                       "--trainer.callbacks+=tests.test_speed_options.Probe", *options])
    return status, Probe.last


def test_off_by_default_foreach_float32_eager(tmp_path, monkeypatch, one_thread):
    status, probe = fit([], tmp_path, monkeypatch)
    assert status == 0 and probe is not None
    assert probe.kernels == {"fused": None, "foreach": True}
    assert probe.passes == {(False, torch.float32)}


def test_fused_optimizer_and_bf16_autocast_are_taken(tmp_path, monkeypatch, one_thread):
    status, probe = fit(["--model.fused", "true", "--trainer.precision", "bf16-mixed"], tmp_path, monkeypatch)
    assert status == 0 and probe is not None
    assert probe.kernels == {"fused": True, "foreach": None}
    assert probe.passes == {(False, torch.bfloat16)}  # training and evaluation passes alike


@pytest.mark.slow  # compiling on the CPU (C++ through gcc) takes a while
def test_compiled_network_trains_and_evaluates_compiled(tmp_path, monkeypatch, one_thread):
    status, probe = fit(["--model.compile", "default"], tmp_path, monkeypatch)
    assert status == 0 and probe is not None
    assert probe.passes == {(True, torch.float32)}
    ckpt = next((tmp_path / "lightning_logs").rglob("last.ckpt"))
    weights = torch.load(ckpt, weights_only=True)["state_dict"]
    assert "net.features.0.weight" in weights, "compiling renamed the checkpoint's weights"


def test_an_unknown_compile_mode_is_one_line_and_nonzero(tmp_path, monkeypatch, capsys):
    status, probe = fit(["--model.compile", "fastest"], tmp_path, monkeypatch)
    assert status != 0 and probe is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "compile" in err[0], err


def test_weight_averaging_copies_the_module_before_it_compiles():
    """Lightning calls the callbacks' ``setup`` (where ``WeightAveraging`` copies the module) before the module's
    own, which compiles its forward. A compiled forward made earlier would go into the copy as the same function,
    still calling the live network: validation and checkpoints would silently use the raw weights, not the average."""
    model = MNISTClassifier(net="fast", compile="default")
    averaging = EMAWeights()
    averaging.setup(SimpleNamespace(), model, "fit")
    model.setup("fit")
    assert model._compiled_forward is not None, "compiled by setup"
    assert averaging._average_model.module._compiled_forward is None, "the average runs its own network"


def test_an_evaluation_runs_as_its_own_command_line_says(tmp_path, monkeypatch, one_thread):
    """LightningCLI reads a checkpoint's hyperparameters over the command line's: right for what the network learnt
    (its net, its normalization), wrong for how to run it, which ``test`` takes from its own options."""
    status, _ = fit(["--model.channels_last", "false", "--model.normalization", "half"], tmp_path, monkeypatch)
    assert status == 0
    ckpt = next((tmp_path / "lightning_logs").rglob("last.ckpt"))
    status = cli.main(["test", "--model", "cnn3block", "--ckpt_path", str(ckpt), "--data.data_dir",
                       str(tmp_path / "data"), "--data.val_size", "50", "--data.eval_batch_size", "50",
                       "--model.channels_last", "true", "--trainer.enable_progress_bar", "false",
                       "--trainer.callbacks+=tests.test_speed_options.Probe"])
    assert status == 0
    assert Probe.last.hparams["channels_last"] is True, "the command line's"
    assert Probe.last.hparams["normalization"] == "half", "the checkpoint's"

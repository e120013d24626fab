"""``fit``, ``validate``, ``test`` and ``predict``: LightningCLI plus the recipes in ``configs/``.

``--model NAME`` loads the recipe ``NAME.yaml`` (network, optimizer, normalization, batch size, epochs), installed
with the package as :mod:`mnist_lit.configs`; any option given after it overrides the recipe.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import warnings
from argparse import ArgumentError
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from mnist_lit.common.errors import WRITE_FAULTS, RunFailed, UserError, describe_write_fault, one_line, write_fault
from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.models.checkpoint import read_checkpoint
from mnist_lit.models.classifier import MNISTClassifier
from mnist_lit.models.nets import NETS
from mnist_lit.training.callbacks import (
    AugmentedImageGrid,
    BestScoreAsHpMetric,
    DivergenceStop,
    MisclassifiedGrid,
    PredictionCSV,
    TorchinfoSummary,
    TrainingCurves,
    TrainingImageGrid,
)
from mnist_lit.training.resume import ResumableRun, resume_advice
from mnist_lit.training.run_folders import (
    AtomicSaveConfig,
    ShareVersion,
    first_process,
    last_checkpoint,
    rank_zero_choice,
)

CONFIGS = files("mnist_lit.configs")  # configs/ of the source tree, installed inside the package


def expand_recipes(args: list[str]) -> list[str]:
    """Turn ``--model NAME`` (or ``--model=NAME``) into ``--config <the recipe NAME.yaml>`` at the same place."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--model" and i + 1 < len(args):
            value, i = args[i + 1], i + 2
        elif arg.startswith("--model="):
            value, i = arg.split("=", 1)[1], i + 1
        else:
            out.append(arg)
            i += 1
            continue
        if value in NETS:
            out += ["--config", str(CONFIGS / f"{value}.yaml")]
        elif Path(value).is_file() or value.lstrip().startswith(("{", "net:")):
            out += ["--model", value]  # a model config file or inline YAML, as plain LightningCLI takes it
        else:
            raise UserError(f"unknown model {value!r}; valid names: {', '.join(NETS)}")
    return out


def evaluation_folder(subcommand: str, config) -> None:
    """Point the logger of ``validate``, ``test`` or ``predict`` at ``RUN/SUBCOMMAND/CHECKPOINT/version_K``, where RUN
    is the training run whose ``checkpoints/`` holds the checkpoint (``<save_dir>/<name>`` for one from elsewhere):
    an evaluation is listed under the run it evaluates and never takes a training run's next version number. A
    version the user names is left alone."""
    logger = getattr(config.trainer.logger, "init_args", None)
    if logger is None or "save_dir" not in logger or logger.get("version") is not None:
        return
    ckpt = Path(config.ckpt_path or "untrained")
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else Path(logger.save_dir, logger.name)
    logger.save_dir, logger.name = str(run / subcommand), ckpt.stem


# Lightning's bar redraws after every step: 0.5–0.8 ms, a quarter of an mlp step on a CPU (bench/BARE_LOOP.md)
BAR_REFRESH_STEPS = 20
# How to run the network, not what it learnt: LightningCLI reads a checkpoint's hyperparameters over the command line's,
# and an evaluation (validate, test, predict) takes these from its own command line (or their defaults) instead.
RUN_OPTIONS = ("channels_last", "compile", "fused")
RESUME_FROM = "MNIST_LIT_RESUME_FROM"  # the last.ckpt that rank 0 picked for --ckpt_path last, for the other ranks


class MNISTCLI(LightningCLI):
    def __init__(self, *args, **kwargs) -> None:
        """A full disk, a read-only or deleted folder while the run writes: one line that says which file, why, and
        how to go on (``RunFailed``), instead of a traceback."""
        try:
            super().__init__(*args, **kwargs)
        except Exception as err:
            fault = write_fault(err)
            if fault is None or getattr(self, "trainer", None) is None:
                raise
            raise RunFailed(self._write_fault_line(fault)) from None

    def _write_fault_line(self, fault: OSError) -> str:
        trainer = self.trainer
        # the logger's own log_dir: trainer.log_dir is a DDP broadcast, and after a fault the other ranks are gone
        log_dir = trainer.logger.log_dir if trainer.logger is not None else None
        what = None if fault.filename or not log_dir else f"the TensorBoard events in {log_dir}"
        todo = WRITE_FAULTS[fault.errno][1]
        if self.subcommand == "fit":
            advice = resume_advice(trainer)
            if advice is not None:
                return (f"{describe_write_fault(fault, what)}; the checkpoints already written are whole. "
                        f"{todo.capitalize()}, then {advice}")
        return f"{describe_write_fault(fault, what)}. {todo.capitalize()}, then run the same command again"

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(DivergenceStop, "divergence")
        parser.add_argument(
            "--select_on", type=Literal["test", "val"], default="test",
            help="Which split's accuracy picks the best checkpoint. 'test' follows the tutorials; 'val' keeps the "
                 "reported test accuracy an unbiased estimate.",
        )
        parser.link_arguments("select_on", "checkpoint.monitor", compute_fn=lambda split: f"{split}/acc")
        parser.link_arguments("select_on", "checkpoint.filename",
                              compute_fn=lambda split: f"epoch={{epoch}}-{split}_acc={{{split}/acc:.4f}}")
        # last.ckpt is written by its own ModelCheckpoint (see main): with save_top_k=1, Lightning ≥ 2.6 updates this
        # one's last.ckpt only in epochs that improve the best score.
        parser.set_defaults({"checkpoint.mode": "max", "checkpoint.save_last": False,
                             "checkpoint.auto_insert_metric_name": False})
        parser.link_arguments("model.net", "trainer.logger.init_args.name")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Vet ``ckpt_path``, from the command line or a ``--config`` file alike, before LightningCLI reads the
        model's hyperparameters (its normalization among them) from it: a missing, truncated, foreign or crafted
        file is one line, not a traceback, and no code in it runs (weights only)."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path not in (None, "last", "best"):
            read_checkpoint(ckpt_path)
        self._run_options = {key: self.config[subcommand].model[key] for key in RUN_OPTIONS} if subcommand else {}

    def before_instantiate_classes(self) -> None:
        """``fit --ckpt_path last`` resumes the newest run of this model, logging on into its version folder;
        evaluations log beside the run they evaluate (``evaluation_folder``)."""
        config = self.config.get(self.subcommand)
        if config.checkpoint.save_last:  # Lightning would write a second one, last-v1.ckpt, beside ours
            raise UserError("--checkpoint.save_last: last.ckpt is always written, after every epoch and before the "
                            "first step; leave the option out")
        if self.subcommand in ("validate", "test", "predict"):
            if config.get("ckpt_path") in ("last", "best"):  # Lightning would evaluate the untrained network
                raise UserError(f"--ckpt_path {config.ckpt_path} names a checkpoint of the run in this process, and "
                                f"{self.subcommand} trains none: give the path of a .ckpt file")
            evaluation_folder(self.subcommand, config)
            for key, value in self._run_options.items():
                config.model[key] = value
            # an evaluation saves no checkpoint, so the checkpoint callbacks' state in CKPT has nothing to resume
            warnings.filterwarnings("ignore", message="The dirpath has changed from")
            return
        if self.subcommand != "fit" or config.get("ckpt_path") != "last":
            return
        logger = getattr(config.trainer.logger, "init_args", None)
        if logger is None or "save_dir" not in logger:
            raise UserError("--ckpt_path last finds runs through the TensorBoard logger; give --ckpt_path PATH")
        last = None if first_process() else os.environ.get(RESUME_FROM)  # DDP ranks resume the run rank 0 picked
        if last is None:  # rank 0, or a rank torchrun started (rank_zero_choice hands it rank 0's choice)
            last = Path(rank_zero_choice("resume_from", lambda: str(last_checkpoint(
                Path(logger.save_dir, logger.name), logger.get("version"), first_process()))))
            os.environ[RESUME_FROM] = str(last)  # inherited by the processes Lightning launches for the other ranks
            if logger.get("version") is None and first_process():
                print(f"resuming {last.parent.parent}, the newest stopped run of {logger.name} "
                      f"(--trainer.logger.init_args.version names another)", file=sys.stderr)
        last = Path(last)
        config.ckpt_path = str(last)
        logger.version = last.parent.parent.name
        if "exist_ok" in logger:
            logger.exist_ok = True

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The progress bar redraws every ``BAR_REFRESH_STEPS`` steps, unless the run turns it off or brings its own
        (``--trainer.callbacks+=TQDMProgressBar --trainer.callbacks.refresh_rate 1``). Added here, not as a default
        callback: Lightning refuses ``--trainer.enable_progress_bar false`` beside a progress bar callback."""
        config = self._get(self.config_init, "trainer", default={})
        callbacks = config.get("callbacks") or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            kwargs["callbacks"] = [*callbacks, TQDMProgressBar(refresh_rate=BAR_REFRESH_STEPS)]
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        """Test the best checkpoint and say where it is, so a run ends with the figure users look for; then fail a run
        that diverged (``DivergenceStop``), with one line."""
        best = self.trainer.checkpoint_callback.best_model_path
        if not best:
            return self._fail_if_diverged()
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best)
        if self.trainer.is_global_zero:
            print(f"best checkpoint: {best}")
            print(f"test accuracy: {self.trainer.callback_metrics['test/acc'].item():.4f}")
        self._fail_if_diverged()

    def _fail_if_diverged(self) -> None:
        stop = next((c for c in self.trainer.callbacks if isinstance(c, DivergenceStop)), None)
        if stop is None or not stop.diverged:
            return
        best = self.trainer.checkpoint_callback.best_model_path
        raise RunFailed(f"training diverged in epoch {stop.stopped_epoch}: its mean training loss was {stop.loss:.4g} "
                        f"(--divergence.max_loss {stop.max_loss:g}), so the run stopped after that epoch; try a lower "
                        f"learning rate than --model.lr {self.model.hparams.lr:g}"
                        + (f". The best checkpoint so far is kept: {best}" if best else ""))


def main(argv: list[str]) -> int:
    """Run LightningCLI on ``argv``; returns the exit status (0, or 1, 2, 143 after a one-line error)."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning vs. newer torch
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)  # the seed is in config.yaml
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(no_tips)
    threading.excepthook = quiet_event_writer
    try:
        # LightningCLI reads sys.argv; DDP launches the other ranks with it, recipes expanded
        sys.argv[1:] = expand_recipes(argv)
        MNISTCLI(
            MNISTClassifier,
            MNISTDataModule,
            auto_configure_optimizers=False,  # the module owns its optimizer: one way to set it
            seed_everything_default=0,
            save_config_callback=AtomicSaveConfig,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                "logger": {
                    # TensorBoard's, with a version no other run takes
                    "class_path": "mnist_lit.training.run_folders.RunLogger",
                    "init_args": {"save_dir": "lightning_logs", "default_hp_metric": False},
                },
                "max_epochs": 10,
                # One device unless asked: Lightning's "auto" takes every GPU, which multiplies the global batch and
                # divides the steps per epoch, so the recipes would no longer be the recipes (README).
                "devices": 1,
                "enable_model_summary": False,
                "callbacks": [TorchinfoSummary(), TrainingImageGrid(), BestScoreAsHpMetric(), PredictionCSV(),
                              AugmentedImageGrid(), MisclassifiedGrid(), TrainingCurves(), ResumableRun(),
                              ShareVersion(),
                              ModelCheckpoint(filename="last", enable_version_counter=False)],  # every epoch
                "plugins": [{"class_path": "mnist_lit.training.resume.AtomicCheckpointIO"}],
            },
            parser_kwargs={"prog": "python -m mnist_lit.cli",  # not argparse's "cli.py"
                           "description": "Train, evaluate and use the classic MNIST tutorial networks. "
                                          "`predict-images --help` predicts your own image files; "
                                          "`export --help` writes a checkpoint as ONNX or TorchScript; "
                                          "`serve --help` serves one over HTTP, with a page to draw digits on; "
                                          "`tune --help` searches a recipe's options with Optuna.",
                           "exit_on_error": False},  # errors come back here and are reported in one line
        )
    except (UserError, ArgumentError, MisconfigurationException) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except SIGTERMException:  # Lightning stopped after the step it was in; ResumableRun said how to resume
        return 128 + signal.SIGTERM
    except RunFailed as err:  # a write fault, a diverged run: said once, by the process that is (or was) rank 0
        if first_process():
            print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    atexit.unregister(destroy_process_group)  # once, however many fits this process runs (tune)
    atexit.register(destroy_process_group)  # after a success only: a failed rank's peers may be stuck in a collective
    return 0


def destroy_process_group() -> None:
    """A process that exits with its gloo process group alive can abort at the very end ("terminate called without an
    active exception", pytorch/pytorch#190489): its DDP launcher, or tune, takes that for a crashed rank. Lightning
    destroys the group at exit for NCCL only; this does for every backend, while the interpreter is still whole."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def no_tips(record: logging.LogRecord) -> bool:
    """Drops Lightning's promotional start-up tip (for its litlogger service); its real warnings still show."""
    return not str(record.msg).startswith("💡 Tip:")


def quiet_event_writer(args: threading.ExceptHookArgs) -> None:
    """TensorBoard's writer thread dies with a traceback when the disk is full; the run's next write raises the same
    error in the main thread, which reports it in one line."""
    if write_fault(args.exc_value) is None:
        threading.__excepthook__(args)


"""``python -m mnist_lit.cli fit|validate|test|predict``: LightningCLI plus the recipes in ``configs/``.

``--model NAME`` loads ``configs/NAME.yaml`` (network, optimizer, batch size, normalization, epochs); any option
given after it overrides the recipe.

``python -m mnist_lit.cli --help`` prints ``cli_help.txt``, LightningCLI's own top-level help rendered ahead of
time, and ``predict-images`` runs, before Lightning is imported: that import alone takes about 4 s.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # before the imports below on purpose: they are the 4 s
    if sys.argv[1:] in (["--help"], ["-h"]):  # tests/test_cli.py checks the file against the live help
        sys.stdout.write(Path(__file__).with_name("cli_help.txt").read_text(encoding="utf-8"))
        raise SystemExit(0)
    if sys.argv[1:2] == ["predict-images"]:  # images from files, not the MNIST test set: see predict_images.py
        from mnist_lit.predict_images import main as predict_images

        raise SystemExit(predict_images(sys.argv[2:]))

import logging
import signal
import warnings
from argparse import ArgumentError
from typing import Literal

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from mnist_lit.callbacks import BestScoreAsHpMetric, PredictionCSV, TorchinfoSummary, TrainingImageGrid
from mnist_lit.data import MNISTDataModule
from mnist_lit.errors import UserError, one_line
from mnist_lit.module import MNISTClassifier
from mnist_lit.nets import NETS
from mnist_lit.predict import Predictor
from mnist_lit.resume import ResumableRun

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def expand_recipes(args: list[str]) -> list[str]:
    """Turn ``--model NAME`` (or ``--model=NAME``) into ``--config configs/NAME.yaml`` at the same place."""
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


def checkpoint_normalization(args: list[str]) -> list[str]:
    """Vet each ``--ckpt_path`` file (weights only, no code run) before LightningCLI reads it: one line, not a
    traceback, for a missing, truncated, foreign or crafted file. Returns ``--data.normalization`` set to the
    checkpoint's own: a network only means what it says on inputs normalized as in training (LightningCLI restores
    the model's hyperparameters from the checkpoint, not the data module's)."""
    extra: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--ckpt_path" and i + 1 < len(args):
            path = args[i + 1]
        elif arg.startswith("--ckpt_path="):
            path = arg.split("=", 1)[1]
        else:
            continue
        if path not in ("last", "best"):
            extra = ["--data.normalization", Predictor.from_checkpoint(path).normalization]
    return extra


class MNISTCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
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

    def before_instantiate_classes(self) -> None:
        """``fit --ckpt_path last`` resumes the newest run of this model, logging on into its version folder."""
        config = self.config.get(self.subcommand)
        if config.checkpoint.save_last:  # Lightning would write a second one, last-v1.ckpt, beside ours
            raise UserError("--checkpoint.save_last: last.ckpt is always written, after every epoch and before the "
                            "first step; leave the option out")
        if self.subcommand != "fit" or config.get("ckpt_path") != "last":
            return
        logger = getattr(config.trainer.logger, "init_args", None)
        if logger is None or "save_dir" not in logger:
            raise UserError("--ckpt_path last finds runs through the TensorBoard logger; give --ckpt_path PATH")
        runs = sorted(Path(logger.save_dir, logger.name).glob("version_*/checkpoints/last.ckpt"),
                      key=lambda p: p.stat().st_mtime)
        if not runs:
            raise UserError(f"no last.ckpt under {Path(logger.save_dir, logger.name)} to resume from")
        config.ckpt_path = str(runs[-1])
        logger.version = runs[-1].parent.parent.name

    def after_fit(self) -> None:
        """Test the best checkpoint and say where it is, so a run ends with the figure users look for."""
        best = self.trainer.checkpoint_callback.best_model_path
        if not best:
            return
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best)
        if self.trainer.is_global_zero:
            print(f"best checkpoint: {best}")
            print(f"test accuracy: {self.trainer.callback_metrics['test/acc'].item():.4f}")


def main() -> None:
    if sys.argv[1:2] == ["export"]:  # a checkpoint as ONNX or TorchScript: see export.py
        from mnist_lit.export import main as export

        raise SystemExit(export(sys.argv[2:]))
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning vs. newer torch
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)  # the seed is in config.yaml
    try:
        sys.argv[1:] = expand_recipes(sys.argv[1:])
        sys.argv += checkpoint_normalization(sys.argv[1:])
        MNISTCLI(
            MNISTClassifier,
            MNISTDataModule,
            auto_configure_optimizers=False,  # the module owns its optimizer: one way to set it
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                "logger": {
                    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": "lightning_logs", "default_hp_metric": False},
                },
                "max_epochs": 10,
                "enable_model_summary": False,
                "callbacks": [TorchinfoSummary(), TrainingImageGrid(), BestScoreAsHpMetric(), PredictionCSV(),
                              ResumableRun(),
                              ModelCheckpoint(filename="last", enable_version_counter=False)],  # every epoch
                "plugins": [{"class_path": "mnist_lit.resume.AtomicCheckpointIO"}],
            },
            parser_kwargs={"prog": "python -m mnist_lit.cli",  # not argparse's "cli.py"
                           "description": "Train, evaluate and use the classic MNIST tutorial networks. "
                                          "`predict-images --help` predicts your own image files; "
                                          "`export --help` writes a checkpoint as ONNX or TorchScript.",
                           "exit_on_error": False},  # errors come back here and are reported in one line
        )
    except (UserError, ArgumentError, MisconfigurationException) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    except SIGTERMException:  # Lightning stopped after the step it was in; ResumableRun said how to resume
        raise SystemExit(128 + signal.SIGTERM) from None


if __name__ == "__main__":
    main()

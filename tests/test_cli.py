"""The CLI as a user runs it: a subprocess, real MNIST, real TensorBoard files and checkpoints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lit.models.classifier import MNISTClassifier

pytestmark = pytest.mark.slow  # real MNIST training, subprocesses, servers or a browser

# Batch limits are counts from 2 up: LightningCLI reads "1" as the float 1.0, which Lightning takes as 100 %.
TINY = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "5", "--trainer.limit_val_batches", "2",
        "--trainer.limit_test_batches", "2", "--trainer.enable_progress_bar", "false"]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return cli_together((list(args), cwd))[0]


def cli_together(*runs: tuple[list[str], Path]) -> list[subprocess.CompletedProcess]:
    """Independent runs (arguments, folder) started at once: each spends most of its seconds importing Lightning, and
    side by side those imports share the cores instead of waiting for each other."""
    processes = [subprocess.Popen([sys.executable, "-m", "mnist_lit.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for args, cwd in runs]
    try:
        outputs = [process.communicate(timeout=300) for process in processes]
        return [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(processes, outputs)]
    finally:
        for process in processes:
            process.kill()  # only those a timeout left running; the others have exited


def test_fit_writes_checkpoints_events_and_config(tmp_path, mnist_dir):
    run = cli("fit", "--model", "cnn3block", "--data.data_dir", mnist_dir, *TINY, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    version = tmp_path / "lightning_logs" / "cnn3block" / "version_0"
    checkpoints = sorted(p.name for p in (version / "checkpoints").iterdir())
    best = [name for name in checkpoints if name.startswith("epoch=")]
    assert len(best) == 1 and "last.ckpt" in checkpoints, checkpoints
    assert best[0].split("-test_acc=")[1].removesuffix(".ckpt").replace(".", "").isdigit()
    assert f"best checkpoint: lightning_logs/cnn3block/version_0/checkpoints/{best[0]}" in run.stdout
    assert "test accuracy: 0." in run.stdout
    assert "Total params: 103,162" in run.stdout  # the torchinfo summary

    config = yaml.safe_load((version / "config.yaml").read_text())
    assert config["model"]["net"] == "cnn3block" and config["model"]["lr"] == 0.005
    assert config["model"]["warmup_steps"] == 100
    assert config["model"]["normalization"] == "unit" and config["seed_everything"] == 0

    events = EventAccumulator(str(version)).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "test/acc", "test/loss", "hp_metric"} <= scalars
    assert len(events.Scalars("val/acc")) == 2 and len(events.Scalars("test/acc")) >= 2  # per epoch, + final test
    hp_metric = events.Scalars("hp_metric")[-1].value
    assert hp_metric == pytest.approx(max(e.value for e in events.Scalars("test/acc")[:2]), abs=1e-6)
    assert "train/images" in events.Tags()["images"]
    table = events.Tensors("test/confusion_matrix/text_summary")[-1].tensor_proto.string_val[0].decode()
    counts = [[int(c) for c in row.split("|")[2:-1]] for row in table.splitlines()[2:]]
    assert len(counts) == 10 and sum(map(sum, counts)) == 2 * 1000  # the final test's 2 batches of 1,000 images

    loaded = MNISTClassifier.load_from_checkpoint(version / "checkpoints" / best[0])
    assert loaded.hparams.net == "cnn3block"

    # predict and test need only the checkpoint: network and normalization come from it, not from --model. They log
    # beside the run that made the checkpoint, and add no training-run folder (no version_1 without curves).
    for subcommand in ("predict", "test"):
        run = cli(subcommand, "--ckpt_path", str(version / "checkpoints" / best[0]), "--data.data_dir", mnist_dir,
                  f"--trainer.limit_{subcommand}_batches", "2", "--trainer.enable_progress_bar", "false", cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
    assert [p.name for p in (tmp_path / "lightning_logs" / "cnn3block").iterdir()] == ["version_0"]
    assert yaml.safe_load((version / "config.yaml").read_text())["ckpt_path"] is None, "the training run's own"
    predicted = version / "predict" / Path(best[0]).stem / "version_0"
    assert yaml.safe_load((predicted / "config.yaml").read_text())["model"]["normalization"] == "unit"
    rows = (predicted / "predictions.csv").read_text().splitlines()
    assert rows[0] == "index,digit,probability" and len(rows) == 1 + 2 * 1000
    tested = EventAccumulator(str(version / "test" / Path(best[0]).stem / "version_0")).Reload()
    assert len(tested.Scalars("test/acc")) == 1

    # The checkpoint carries its normalization ("unit"; the model's default is "half"): a --config file that names
    # ckpt_path, and a checkpoint of mnist_lit 0.1 (which kept it among the data module's hyperparameters), score
    # exactly what the command line scored.
    checkpoint = torch.load(version / "checkpoints" / best[0], weights_only=True)
    checkpoint["datamodule_hyper_parameters"]["normalization"] = checkpoint["hyper_parameters"].pop("normalization")
    torch.save(checkpoint, version / "checkpoints" / "format-0.1.ckpt")
    options = {"data": {"data_dir": mnist_dir}, "trainer": {"limit_test_batches": 2, "enable_progress_bar": False}}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump({"ckpt_path": str(version / "checkpoints" / best[0]),
                                                        **options}))
    runs = cli_together((["test", "--config", "test.yaml"], tmp_path),
                        (["test", "--ckpt_path", str(version / "checkpoints" / "format-0.1.ckpt"), "--data.data_dir",
                          mnist_dir, "--trainer.limit_test_batches", "2", "--trainer.enable_progress_bar", "false"],
                         tmp_path))
    assert all(run.returncode == 0 for run in runs), [run.stderr[-3000:] for run in runs]
    for folder in (version / "test" / Path(best[0]).stem / "version_1", version / "test" / "format-0.1" / "version_0"):
        assert (EventAccumulator(str(folder)).Reload().Scalars("test/acc")[0].value
                == tested.Scalars("test/acc")[0].value)


def test_running_again_in_the_same_folder_works(tmp_path, mnist_dir):
    for _ in range(2):
        run = cli("fit", "--model", "mlp", "--data.data_dir", mnist_dir, *TINY, cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "lightning_logs" / "mlp").iterdir()) == ["version_0", "version_1"]


def test_select_on_val_names_the_checkpoint_after_val(tmp_path, mnist_dir):
    run = cli("fit", "--model", "mlp", "--select_on", "val", "--data.data_dir", mnist_dir, *TINY, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    names = [p.name for p in (tmp_path / "lightning_logs" / "mlp" / "version_0" / "checkpoints").iterdir()]
    assert any(n.startswith("epoch=") and "-val_acc=" in n for n in names), names


def test_progress_bar_redraws_every_20_steps_unless_the_run_brings_its_own(tmp_path, mnist_dir):
    steps = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "40", "--trainer.limit_val_batches", "2",
             "--trainer.limit_test_batches", "2", "--data.data_dir", mnist_dir]
    default, own = cli_together((["fit", "--model", "mlp", *steps], tmp_path),
                                (["fit", "--model", "mlp", *steps, "--trainer.callbacks+=TQDMProgressBar",
                                  "--trainer.callbacks.refresh_rate", "1"], tmp_path))
    assert default.returncode == 0, default.stderr[-3000:]
    assert "20/40" in default.stdout and "40/40" in default.stdout and "3/40" not in default.stdout
    assert own.returncode == 0, own.stderr[-3000:]
    assert "3/40" in own.stdout and "40/40" in own.stdout


def test_unknown_model_is_one_line_and_nonzero(tmp_path):
    run = cli("fit", "--model", "resnet50", cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip() == ("error: unknown model 'resnet50'; valid names: "
                                  "lenet5, lenet, cnn3block, cnn3block5x5, mlp, bncnn, fast, best")
    assert not any(tmp_path.iterdir()), "a refused run creates nothing"


def test_print_config_resolves_the_recipe(tmp_path):
    run = cli("fit", "--model", "lenet5", "--model.lr", "0.02", "--print_config", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    config = yaml.safe_load(run.stdout)
    assert config["model"] == {"net": "lenet5", "normalization": "x255", "optimizer": "sgd", "lr": 0.02,
                               "momentum": 0.0, "weight_decay": 0.0, "warmup_steps": 0, "channels_last": True,
                               "betas": [0.9, 0.999], "scheduler": "none", "pct_start": 0.25,
                               "compile": "none", "fused": False,
                               "outlier_weight": 0.0, "reject_digits": 0.005, "reject_augmented": 0.02}
    assert config["trainer"]["max_epochs"] == 5
    assert config["trainer"]["devices"] == 1, "one device unless asked, even on a machine with several GPUs"


BAD_CONFIGURATIONS = [
    (["--model", "mlp", "--trainer.max_epochz", "3"], "unrecognized arguments: --trainer.max_epochz"),
    (["--data.batch_size", "abc"], '"data.batch_size": Not of type PositiveInt'),
    (["--data.batch_size", "0"], '"data.batch_size": Not of type PositiveInt'),
    (["--model.lr", "-0.1"], '"model.lr": Not of type PositiveFloat'),
    (["--data.val_size", "60000"], "--data.val_size 60000 leaves no training images"),
    (["--data.batch_size", "55001"], "--data.batch_size 55001 is more than the 55,000 training images"),
    (["--checkpoint.save_last", "true"], "--checkpoint.save_last: last.ckpt is always written"),
    (["--trainer.accelerator", "gpu"], "gpu"),
    (["--config", "missing.yaml"], "missing.yaml"),
    (["--config", "broken.yaml"], "Problems parsing config"),
    (["--ckpt_path", "missing.ckpt"], "missing.ckpt: no such checkpoint file"),
]


@pytest.fixture(scope="module")
def refused_runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """``fit`` with each bad configuration, all at once, each in a folder of its own holding a broken YAML file."""
    folders = [tmp_path_factory.mktemp("refused") for _ in BAD_CONFIGURATIONS]
    for folder in folders:
        (folder / "broken.yaml").write_text("model: [unclosed\n")
    runs = cli_together(*((["fit", *args], folder) for (args, _), folder in zip(BAD_CONFIGURATIONS, folders)))
    return {" ".join(args): (run, folder) for (args, _), run, folder in zip(BAD_CONFIGURATIONS, runs, folders)}


@pytest.mark.parametrize("args, message", BAD_CONFIGURATIONS)
def test_bad_configuration_is_one_line_and_creates_nothing(refused_runs, args, message):
    run, folder = refused_runs[" ".join(args)]
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, run.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], run.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["broken.yaml"], "a refused run writes nothing"


def test_evaluating_last_or_best_without_a_run_is_one_line(tmp_path):
    names = ("last", "best")
    runs = cli_together(*((["test", "--model", "mlp", "--ckpt_path", name], tmp_path) for name in names))
    for name, run in zip(names, runs):
        assert run.returncode == 2 and run.stderr.strip().startswith(f"error: --ckpt_path {name} names a checkpoint")
    assert not any(tmp_path.iterdir()), "a refused run writes nothing"


def test_help_lists_every_subcommand(tmp_path):
    """``--help`` through each way of launching: the module, ``python -m mnist_lit`` and the console script."""
    launchers = [[sys.executable, "-m", "mnist_lit.cli"], [sys.executable, "-m", "mnist_lit"],
                 [str(Path(sys.executable).with_name("mnist-lit"))]]
    runs = [subprocess.run([*launcher, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
            for launcher in launchers]
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
        assert all(name in run.stdout for name in ("fit", "validate", "test", "predict", "predict-images", "export",
                                                   "serve")), run.stdout

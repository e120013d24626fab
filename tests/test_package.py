"""The package as users get it: a wheel that trains from any folder, and the import rule of its layers."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_layers_import_only_downwards():
    """``lint-imports`` checks the contracts in pyproject.toml (docs/design.md): no module imports a higher layer,
    and the networks, the checkpoint reader and predict-images never import Lightning."""
    run = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and "0 broken" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]


@pytest.mark.slow
def test_the_wheel_trains_from_another_folder(tmp_path, mnist_dir):
    """Build the wheel, install it (not the source tree) into a fresh venv, and run the console script from a folder
    far from the checkout: the recipes come from inside the wheel. The fresh venv reaches torch & co. through a
    ``.pth`` line to this venv's site-packages (appended to sys.path; this venv's editable finder does not run)."""
    wheels = tmp_path / "wheels"
    # sdist, then the wheel from the unpacked sdist: no stale build/ folder of the checkout can slip into it
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(wheels), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("mnist_lit-*.whl"))
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], check=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([python, "-c", "import mnist_lit.configs as c; print(c.__file__)"], cwd=elsewhere,
                           capture_output=True, text=True, check=True).stdout
    assert str(env) in where and str(ROOT) not in where, where

    script = env / "bin" / "mnist-lit"
    printed = subprocess.run([script, "fit", "--model", "fast", "--print_config"], cwd=elsewhere, capture_output=True,
                             text=True, timeout=300)
    assert printed.returncode == 0, printed.stderr[-3000:]
    config = yaml.safe_load(printed.stdout)
    assert config["model"]["net"] == "fast" and config["data"]["batch_size"] == 256

    fit = subprocess.run([python, "-m", "mnist_lit.cli", "fit", "--model", "fast", "--data.data_dir", mnist_dir,
                          "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                          "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2",
                          "--trainer.enable_progress_bar", "false"], cwd=elsewhere, capture_output=True, text=True,
                         timeout=300)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "test accuracy:" in fit.stdout
    assert list((elsewhere / "lightning_logs" / "fast" / "version_0" / "checkpoints").glob("epoch=*.ckpt"))

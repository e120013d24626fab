"""Shared fixtures: tiny MNIST-format files made on the spot, and the real MNIST provisioned once per session."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.data.provision import Pin, provision, sha256_of, write_idx_set
from mnist_lit.models.classifier import MNISTClassifier

ROOT = Path(__file__).resolve().parent.parent


def tiny_arrays(n_train: int = 300, n_test: int = 100, seed: int = 0):
    """Random uint8 'digits' whose label is written into the image (a bright bar at row 2 + label), so it is learnable."""
    rng = np.random.default_rng(seed)

    def make(n: int):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        images[np.arange(n), 2 + 2 * labels.astype(int)] = 255
        return images, labels

    return make(n_train), make(n_test)


def write_tiny_mnist(data_dir: Path, **kwargs) -> dict[str, Pin]:
    """Write tiny IDX files into ``data_dir/MNIST/raw`` and return their pins."""
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    train, test = tiny_arrays(**kwargs)
    write_idx_set(raw, train, test)
    return {p.name: Pin(sha256_of(p), p.stat().st_size) for p in sorted(raw.iterdir())}


@pytest.fixture
def tiny_data(tmp_path: Path):
    """A data module over tiny generated files, through the same provisioning and loading code as real MNIST."""

    def make(**kwargs) -> MNISTDataModule:
        dm = MNISTDataModule(data_dir=str(tmp_path / "data"), **{"val_size": 50, "batch_size": 32, **kwargs})
        dm.pins = write_tiny_mnist(tmp_path / "data")
        return dm

    return make


@pytest.fixture(scope="session")
def mnist_dir() -> str:
    """The real MNIST, provisioned (or verified) in the project's data folder."""
    data_dir = os.environ.get("MNIST_LIT_DATA_DIR", str(ROOT / "data"))
    provision(Path(data_dir) / "MNIST" / "raw")
    return data_dir


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks: one thread is as fast, and several fight each other on a busy machine (8× slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory, mnist_dir) -> Path:
    """A LeNet trained for one epoch (859 steps) on the real MNIST (about 96% accurate), as a Lightning checkpoint.

    Shorter training works too, but a weaker network disagrees with itself on more of the re-drawn digits in
    test_images, and its 1-point comparison would then hang on a handful of borderline images.
    """
    root = tmp_path_factory.mktemp("ckpt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = MNISTClassifier(net="lenet", normalization="mnist", optimizer="adam", lr=1e-3)
    datamodule = MNISTDataModule(data_dir=mnist_dir)
    trainer = L.Trainer(max_epochs=1, limit_val_batches=0, logger=False, accelerator="cpu",
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=root)
    trainer.fit(model, datamodule=datamodule)
    torch.set_num_threads(threads)
    path = root / "lenet.ckpt"
    trainer.save_checkpoint(path)
    return path

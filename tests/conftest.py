"""Shared fixtures: tiny MNIST-format files made on the spot, and the real MNIST provisioned once per session."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.data.provision import Pin, provision, sha256_of, write_idx_set
from mnist_lit.models.classifier import MNISTClassifier
from mnist_lit.models.rejection import Rejection

ROOT = Path(__file__).resolve().parent.parent

# A shell starts background jobs (`make test &`, CI runners) with Ctrl+C ignored, and every process started from them
# would inherit that; the Ctrl+C tests need it handled as in a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def tiny_arrays(n_train: int = 300, n_test: int = 100, seed: int = 0):
    """Random uint8 'digits' whose label is written into the image (a bright bar at row 2 + label), so it is
    learnable."""
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


@pytest.fixture(autouse=True)
def environment_as_found():
    """Each test leaves os.environ as it found it. Runs in the test process write to it (``seed_everything`` its
    PL_GLOBAL_SEED, ``--ckpt_path last`` its choice for DDP ranks), and every later test's runs and subprocesses
    would inherit that."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


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
    # the data order follows PL_GLOBAL_SEED, which earlier tests may leave set
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PL_GLOBAL_SEED", "0")
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


@pytest.fixture(scope="session")
def rejecting_ckpt(ckpt, tmp_path_factory) -> Path:
    """A checkpoint that carries a "not a digit" rule (``checkpoint["rejection"]``), for the readers' tests.

    This is ``ckpt``'s LeNet with a rule written into it: at threshold 0.9 it rejects the drawn letter and the blank
    photo of ``non_digits`` and the X test_browser draws (top probabilities 0.80, 0.27 and 0.75 on this network) and
    accepts the photographed and drawn digits the tests read (0.93 and above). The readers' tests take the rule from
    the checkpoint, never this number: a checkpoint trained with outliers (``fit --model fast``) can stand in for
    this one by returning its path here.
    """
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    checkpoint["rejection"] = Rejection(threshold=0.9).as_dict()
    path = tmp_path_factory.mktemp("rejecting_ckpt") / "lenet_with_rule.ckpt"
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="session")
def non_digits(tmp_path_factory) -> dict[str, Path]:
    """Images that are clearly no digit, as users bring them: a capital A drawn as on the page (280×280, round pen
    of width 20, black on white) and a photo of blank paper (uneven light, sensor noise, JPEG), whose noise is "ink"
    to the preprocessing, so that it is read rather than refused as blank."""
    folder = tmp_path_factory.mktemp("non_digits")
    page = Image.new("L", (280, 280), 255)
    pen = ImageDraw.Draw(page)
    for stroke in ([(56, 238), (140, 42), (224, 238)], [(92, 154), (188, 154)]):
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
            for t in np.linspace(0, 1, 200):  # the page's round pen: a disc at each point along the stroke
                x, y = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
                pen.ellipse((x - 10, y - 10, x + 10, y + 10), fill=0)
    page.convert("RGB").save(folder / "letter_a.png")
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:480, 0:640]
    paper = 200 + 30 * cols / 640 - 20 * rows / 480 + rng.normal(0, 8, rows.shape)
    Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8)).convert("RGB").save(folder / "blank_paper.jpg",
                                                                                  quality=85)
    return {"letter": folder / "letter_a.png", "blank_photo": folder / "blank_paper.jpg"}

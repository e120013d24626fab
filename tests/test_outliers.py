"""Outlier data: Fashion-MNIST provisioned and verified like MNIST (tiny generated files through the same code, and
the real Debian package), and the synthetic non-digits: deterministic, MNIST-shaped, read through to_mnist."""

from __future__ import annotations

import gzip
import hashlib
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from torchvision.datasets import FashionMNIST

from mnist_lit.data import outliers
from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.data.preprocess import to_mnist
from mnist_lit.data.provision import Pin, sha256_of, write_idx_set
from mnist_lit.training import cli
from tests.conftest import tiny_arrays, write_tiny_mnist

DEBIAN_SOURCE = f"Debian's package {outliers.DEBIAN_PACKAGE}"


def write_tiny_fashion(folder: Path, gzipped: bool = False) -> dict[str, Pin]:
    """Tiny IDX files under Fashion-MNIST's four names (NAME.gz as Debian ships them); their pins."""
    folder.mkdir(parents=True, exist_ok=True)
    train, test = tiny_arrays(n_train=40, n_test=20, seed=7)
    write_idx_set(folder, train, test)
    pins = {p.name: Pin(sha256_of(p), p.stat().st_size) for p in sorted(folder.iterdir())}
    if gzipped:
        for name in pins:
            (folder / f"{name}.gz").write_bytes(gzip.compress((folder / name).read_bytes()))
            (folder / name).unlink()
    return pins


def unreachable(workdir: Path) -> Path:
    raise OSError("Temporary failure in name resolution")


@pytest.fixture
def tiny_debian(tmp_path: Path, monkeypatch) -> Path:
    """Tiny files in a stand-in for Debian's package folder; the pins point at them; no download is ever tried."""
    debian = tmp_path / "debian" / "fashion-mnist"
    monkeypatch.setattr(outliers, "PINS", write_tiny_fashion(debian, gzipped=True))
    monkeypatch.setattr(outliers, "DEBIAN_DIR", debian)
    monkeypatch.setitem(outliers.SOURCES, "torchvision's download", unreachable)
    return debian


def test_tiny_fashion_is_provisioned_from_the_package_and_read_by_torchvision(tmp_path: Path, tiny_debian):
    data = tmp_path / "data"
    assert outliers.provision_fashion(data) == DEBIAN_SOURCE
    raw = data / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(outliers.PINS), "no temporary files left behind"
    assert outliers.provision_fashion(data) == f"the verified files in {raw}"
    (train_x, _), (test_x, _) = tiny_arrays(n_train=40, n_test=20, seed=7)
    for train, expected in ((True, train_x), (False, test_x)):
        images = outliers.fashion_images(data, train=train)
        assert images.dtype == torch.uint8 and torch.equal(images, torch.from_numpy(expected))


def test_missing_files_give_one_line_that_says_what_to_do(tmp_path: Path, monkeypatch, tiny_debian):
    monkeypatch.setattr(outliers, "DEBIAN_DIR", tmp_path / "not-installed")
    data = tmp_path / "data"
    for load in (lambda: outliers.provision_fashion(data), lambda: outliers.fashion_images(data, train=True)):
        with pytest.raises(outliers.OutlierDataError) as err:
            load()
        message = str(err.value)
        assert "\n" not in message
        assert f"apt-get install {outliers.DEBIAN_PACKAGE}" in message and "internet" in message
        assert "not-installed" in message and "name resolution" in message  # why each source failed
        assert str(data / "FashionMNIST" / "raw") in message and "train-images-idx3-ubyte" in message


CORRUPTIONS = {
    "truncated": lambda data: data[: len(data) // 2],
    "one bit flipped": lambda data: data[:-1] + bytes([data[-1] ^ 1]),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_corrupt_file_is_refused_in_one_line_and_left_alone(tmp_path: Path, monkeypatch, tiny_debian, corruption):
    data = tmp_path / "data"
    outliers.provision_fashion(data)
    victim = data / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte"
    damaged = CORRUPTIONS[corruption](victim.read_bytes())
    victim.write_bytes(damaged)
    monkeypatch.setitem(outliers.SOURCES, DEBIAN_SOURCE, unreachable)
    with pytest.raises(outliers.OutlierDataError) as err:
        outliers.fashion_images(data, train=False)
    assert "\n" not in str(err.value) and "put t10k-images-idx3-ubyte (plain or .gz) into" in str(err.value)
    assert victim.read_bytes() == damaged, "a failed provisioning must leave files as they were"


def test_a_corrupt_file_is_replaced_from_the_package(tmp_path: Path, tiny_debian):
    data = tmp_path / "data"
    outliers.provision_fashion(data)
    victim = data / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte"
    victim.write_bytes(victim.read_bytes()[:-3])
    assert outliers.provision_fashion(data) == DEBIAN_SOURCE
    assert sha256_of(victim) == outliers.PINS[victim.name].sha256


def test_fit_with_outliers_and_no_fashion_mnist_stops_in_one_line(tmp_path: Path, monkeypatch, capsys, tiny_debian):
    """``fit --model fast`` (outliers on) as a user runs it, with Fashion-MNIST nowhere to be had."""
    monkeypatch.setattr(outliers, "DEBIAN_DIR", tmp_path / "not-installed")
    monkeypatch.setattr(MNISTDataModule, "pins", write_tiny_mnist(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    status = cli.main(["fit", "--model", "fast", "--data.data_dir", str(tmp_path / "data"),
                       "--data.val_size", "50", "--data.batch_size", "32", "--trainer.max_epochs", "1",
                       "--trainer.limit_train_batches", "1", "--trainer.enable_progress_bar", "false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status != 0
    assert len(err) == 1 and f"apt-get install {outliers.DEBIAN_PACKAGE}" in err[0], err[-5:]
    assert not (tmp_path / "lightning_logs").exists() or not list((tmp_path / "lightning_logs").rglob("*.ckpt"))


# The upstream .gz files' gzip headers, which Debian's repacking dropped: the file's name and this mtime.
UPSTREAM_MTIMES = {"train": 1504176606, "t10k": 1504176627}


def test_the_real_package_is_provisioned_and_its_pins_are_torchvisions_files(tmp_path: Path):
    """Debian's files, put back into upstream's gzip header, are the files torchvision downloads and checks by md5;
    unpacked, they match PINS; provisioned, torchvision reads 60,000 + 10,000 images of 28×28."""
    expected_md5 = {url[: -len(".gz")]: md5 for url, md5 in FashionMNIST.resources}
    assert sorted(expected_md5) == sorted(outliers.PINS)
    for name in outliers.PINS:
        packed = (outliers.DEBIAN_DIR / f"{name}.gz").read_bytes()
        assert packed[:4] == b"\x1f\x8b\x08\x00", "Debian's .gz has no file name in its header"
        mtime = UPSTREAM_MTIMES[name.split("-")[0]].to_bytes(4, "little")
        upstream = b"\x1f\x8b\x08\x08" + mtime + packed[8:10] + name.encode() + b"\0" + packed[10:]
        assert hashlib.md5(upstream).hexdigest() == expected_md5[name], name
    assert outliers.provision_fashion(tmp_path) == DEBIAN_SOURCE
    assert outliers.fashion_images(tmp_path, train=True).shape == (60_000, 28, 28)
    assert outliers.fashion_images(tmp_path, train=False).shape == (10_000, 28, 28)


# --- synthetic outliers ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pool() -> torch.Tensor:
    return outliers.synthetic_outliers(300, seed=3)


def test_synthetic_outliers_are_deterministic_per_seed(pool):
    assert pool.dtype == torch.uint8 and pool.shape == (300, 28, 28)
    assert torch.equal(outliers.synthetic_outliers(20, seed=3), pool[:20]), "same seed, same images; n only extends"
    assert torch.equal(outliers.synthetic_outliers(300, seed=3, workers=2), pool), "the same on several processes"
    other = outliers.synthetic_outliers(20, seed=4)
    assert not any(torch.equal(a, b) for a in other for b in pool[:20])
    assert outliers.synthetic_outliers(0, seed=3).shape == (0, 28, 28)


def test_every_synthetic_outlier_is_a_page_read_by_to_mnist(monkeypatch):
    """Rendered on the drawing page's 280×280 canvas and read by preprocess.to_mnist, whose output is kept as is."""
    pages, results = [], []

    def spy(image: Image.Image, preprocess: bool = True) -> torch.Tensor:
        pages.append((image.size, preprocess))
        results.append(to_mnist(image, preprocess))
        return results[-1]

    monkeypatch.setattr(outliers, "to_mnist", spy)
    made = outliers.synthetic_outliers(30, seed=11)
    assert set(pages) == {((280, 280), True)}
    kept = [r for r in results if any(torch.equal(r, m) for m in made)]
    assert len(kept) == 30


def test_synthetic_outliers_have_mnists_geometry(pool):
    """As to_mnist leaves a figure: its larger side 20 pixels (±1 after resampling), its centre of mass at (14, 14),
    its ink strong (stretched to 255 before scaling, which softens thin strokes' peaks), never a faint smudge."""
    images = pool.float()
    assert bool((pool.amax((1, 2)) >= 160).all())
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    mass = images.sum((1, 2))
    com_y, com_x = (images * ys).sum((1, 2)) / mass, (images * xs).sum((1, 2)) / mass
    off_centre = torch.maximum((com_y - 14).abs(), (com_x - 14).abs())
    assert float((off_centre <= 1).float().mean()) >= 0.97  # a lopsided figure may reach the field's edge and be cut
    for image in pool:
        height, width = outliers._ink_box(image)
        assert 16 <= max(height, width) <= 21


def test_no_synthetic_outlier_is_tall_and_narrow_like_a_1(pool):
    for image in pool:
        height, width = outliers._ink_box(image)
        assert width >= 0.45 * height


def test_typed_characters_leave_out_digits_and_their_look_alikes():
    look_alikes = "0123456789OoDCcQIlijtf|!/\\()[]{}ZzSs$§BGbqgaeTJ&?£€ΓΩΦYy¥√∠μ"
    assert not set(outliers.CHARACTERS) & set(look_alikes)
    for _, chars in outliers._fonts():
        assert set(chars) <= set(outliers.CHARACTERS) and len(chars) >= 70  # each font has most of them


def test_handwritten_characters_are_ones_the_typed_outliers_may_show():
    assert set(outliers.HANDWRITTEN) <= set(outliers.CHARACTERS)


def test_the_one_filter_catches_a_stroke_drawn_like_a_1():
    page = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(page).line([(150, 40), (135, 240)], fill=0, width=20)
    assert outliers._looks_like_a_one(to_mnist(page))


def test_the_loop_filter_finds_a_0_and_not_an_x():
    ring, cross = Image.new("L", (280, 280), 255), Image.new("L", (280, 280), 255)
    ImageDraw.Draw(ring).ellipse((70, 30, 210, 250), outline=0, width=20)
    ImageDraw.Draw(cross).line([(40, 40), (240, 240)], fill=0, width=20)
    ImageDraw.Draw(cross).line([(40, 240), (240, 40)], fill=0, width=20)
    assert outliers._holes(to_mnist(ring)) >= 12 and outliers._holes(to_mnist(cross)) == 0


def test_missing_fonts_give_one_line(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(outliers, "FONT_DIR", tmp_path)
    outliers._fonts.cache_clear()
    try:
        with pytest.raises(outliers.OutlierDataError, match=r"apt-get install fonts-dejavu-core fonts-liberation"):
            outliers.synthetic_outliers(1, seed=0)
    finally:
        outliers._fonts.cache_clear()

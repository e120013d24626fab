"""Inference on real image files: MNIST-style preprocessing, ``predict-images``, and every kind of bad input.

One small LeNet is trained on the real MNIST for this module; MNIST test digits are then re-drawn the way a user
would photograph them (dark on white, 3–6× larger, off-centre on a larger canvas, RGB/RGBA PNG or JPEG, some stored
sideways with an EXIF orientation) and must be read as well as the original 28×28 digits.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import struct
import subprocess
import sys
import zlib
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.datasets import MNIST

from mnist_lit.data.preprocess import ImageError, load_image, to_mnist
from mnist_lit.inference.predict_images import NOT_A_DIGIT, main
from mnist_lit.inference.predictor import CheckpointError, Predictor, predict_files
from mnist_lit.models.rejection import recorded_rejection
from tests.digits import photograph

N_PHOTOS = 300
EXIF_ORIENTATION = 0x0112


# ---------------------------------------------------------------------------------------------------- fixtures ---

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits(mnist_dir) -> tuple[torch.Tensor, torch.Tensor]:
    """The first MNIST test digits (uint8, N×28×28) and their labels."""
    test = MNIST(mnist_dir, train=False)
    return test.data[:N_PHOTOS], test.targets[:N_PHOTOS]


def save_as_user_file(picture: Image.Image, folder: Path, stem: str, kind: int) -> Path:
    """Kind 0: RGB PNG; 1: RGBA PNG, black ink on a transparent background; 2: JPEG; 3: JPEG stored sideways + EXIF."""
    if kind == 0:
        path = folder / f"{stem}.png"
        picture.convert("RGB").save(path)
    elif kind == 1:
        path = folder / f"{stem}.png"
        rgba = np.zeros((picture.height, picture.width, 4), np.uint8)  # colour under transparency: black
        rgba[..., 3] = 255 - np.asarray(picture)
        Image.fromarray(rgba).save(path)
    elif kind == 2:
        path = folder / f"{stem}.jpg"
        picture.convert("RGB").save(path, quality=90)
    else:
        path = folder / f"{stem}.jpeg"
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = 6  # "rotate 90° clockwise to display", as phones write it
        picture.transpose(Image.Transpose.ROTATE_90).convert("RGB").save(path, quality=90, exif=exif)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory, digits) -> Path:
    """A folder of the test digits as user files, named by index (000.png, 001.png, ...)."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i, digit in enumerate(digits[0].numpy()):
        save_as_user_file(photograph(digit, rng), folder, f"{i:03d}", i % 4)
    return folder


def run_command(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """The command as a user runs it."""
    return subprocess.run([sys.executable, "-m", "mnist_lit.cli", "predict-images", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def write_big_png(path: Path, side: int) -> Path:
    """A valid, white, 1-bit ``side``×``side`` PNG, written row by row: a few kB on disk, side² pixels decoded."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = b"\x00" + b"\xff" * ((side + 7) // 8)  # filter type 0, then the packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale, no interlace
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# ------------------------------------------------------------------------------------------- the preprocessing ---

@pytest.mark.slow  # the trained checkpoint (conftest.ckpt)
def test_photographed_digits_are_read_as_well_as_the_originals(ckpt, digits, photos, tmp_path):
    images, labels = digits[0], digits[1].tolist()
    original = Predictor.from_checkpoint(ckpt).probabilities(images).argmax(1).tolist()
    original_correct = sum(d == label for d, label in zip(original, labels))

    def correct(*options: str) -> int:
        run = run_command("--ckpt", ckpt, "--format", "json", *options, photos, cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        results = json.loads(run.stdout)
        assert len(results) == N_PHOTOS
        return sum(r["digit"] == labels[int(Path(r["path"]).stem)] for r in results)

    preprocessed, plain = correct(), correct("--no-preprocess")
    numbers = (f"accuracy on {N_PHOTOS} digits: original 28×28 {original_correct / N_PHOTOS:.1%}, photographed + "
               f"preprocessed {preprocessed / N_PHOTOS:.1%}, photographed + --no-preprocess {plain / N_PHOTOS:.1%}")
    print(numbers)
    assert abs(preprocessed - original_correct) <= N_PHOTOS // 100, numbers  # within 1 point
    assert plain <= original_correct - 0.30 * N_PHOTOS, numbers  # at least 30 points lower


def test_preprocessing_leaves_mnist_digits_almost_unchanged(digits):
    """MNIST digits are already made this way: the pipeline must (nearly) reproduce them, inverted or not."""
    images = digits[0]
    out = torch.stack([to_mnist(Image.fromarray(d)) for d in images.numpy()])
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert (out.float() - images.float()).abs().mean() < 0.5
    inverted = torch.stack([to_mnist(Image.fromarray(255 - d)) for d in images[:20].numpy()])
    assert torch.equal(inverted, out[:20])


def test_preprocessed_digit_fits_20x20_with_its_centre_of_mass_at_14_14(digits):
    rng = np.random.default_rng(1)
    for digit in digits[0][:10].numpy():
        out = to_mnist(photograph(digit, rng)).double()
        rows, cols = torch.nonzero(out > 0, as_tuple=True)
        assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 in (20, 21, 22)  # Lanczos spills ≤ 1 px
        ys, xs = torch.meshgrid(torch.arange(28.0, dtype=torch.float64), torch.arange(28.0, dtype=torch.float64),
                                indexing="ij")
        mass = out.sum()
        assert abs((out * ys).sum() / mass - 14) <= 0.5 and abs((out * xs).sum() / mass - 14) <= 0.5


def test_no_preprocess_only_resizes(digits):
    picture = photograph(digits[0][0].numpy(), np.random.default_rng(2))
    out = to_mnist(picture, preprocess=False)
    assert out.shape == (28, 28) and out.dtype == torch.uint8
    assert out.float().mean() > 200  # still dark on white: not inverted


def test_every_pixel_format_gives_the_same_digit(digits, tmp_path):
    """L, RGB, RGBA/LA (transparency onto white), P (with and without transparency), 16-bit and EXIF-rotated."""
    picture = photograph(digits[0][3].numpy(), np.random.default_rng(3))
    grey = np.asarray(picture)
    transparent = np.zeros((*grey.shape, 4), np.uint8)
    transparent[..., 3] = 255 - grey
    palette = picture.convert("P")
    palette_transparent = picture.convert("P")
    palette_transparent.info["transparency"] = palette_transparent.getpixel((0, 0))  # the white background
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    variants = {
        "l.png": lambda p: picture.save(p),
        "rgb.png": lambda p: picture.convert("RGB").save(p),
        "rgba.png": lambda p: Image.fromarray(transparent).save(p),
        "la.png": lambda p: Image.fromarray(transparent).convert("LA").save(p),
        "p.png": lambda p: palette.save(p),
        "p_transparent.png": lambda p: palette_transparent.save(p),
        "p.gif": lambda p: palette.save(p),
        "i16.png": lambda p: Image.fromarray(grey.astype(np.uint16) * 257).save(p),
        "l.tiff": lambda p: picture.save(p),
        "l.bmp": lambda p: picture.save(p),
        "l.webp": lambda p: picture.save(p, lossless=True),
        "rotated.png": lambda p: picture.transpose(Image.Transpose.ROTATE_90).save(p, exif=exif),
    }
    reference = to_mnist(picture).float()
    for name, save in variants.items():
        save(tmp_path / name)
        loaded = load_image(tmp_path / name)
        assert loaded.mode in ("L", "RGB"), name
        assert (to_mnist(loaded).float() - reference).abs().max() <= 2, name
    assert Image.open(tmp_path / "i16.png").mode.startswith("I")  # it really is 16-bit on disk


def test_blank_image_is_refused(tmp_path):
    for colour in (0, 128, 255):
        with pytest.raises(ImageError, match="no ink found"):
            to_mnist(Image.new("L", (300, 200), colour))
    noisy = np.clip(255 - np.abs(np.random.default_rng(0).normal(0, 3, (200, 300))), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).convert("RGB").save(tmp_path / "paper.jpg", quality=90)
    with pytest.raises(ImageError, match="no ink found"):
        to_mnist(load_image(tmp_path / "paper.jpg"))


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    """PIL only warns between MAX_IMAGE_PIXELS and twice that; the warning must be an error, or it is decoded."""
    assert np.asarray(Image.open(write_big_png(tmp_path / "small.png", 64))).all()  # the writer makes real PNGs
    side = math.isqrt(int(Image.MAX_IMAGE_PIXELS * 1.2))
    bomb = write_big_png(tmp_path / "bomb.png", side)
    assert bomb.stat().st_size < 1_000_000
    with pytest.warns(Image.DecompressionBombWarning):
        Image.open(bomb).close()
    with pytest.raises(ImageError, match=r"bomb\.png: image too large"):
        load_image(bomb)


# ------------------------------------------------------------------------------------------------ the command ---

def bad_input(kind: str, folder: Path, good_photo: Path) -> tuple[Path, str]:
    """Make one bad input in ``folder``; returns its path and the phrase its error message must contain."""
    if kind == "missing":
        return folder / "missing.png", "no such file"
    if kind == "empty_folder":
        (folder / "empty").mkdir()
        (folder / "empty" / "notes.txt").write_text("no images here")
        return folder / "empty", "folder has no images"
    if kind == "not_an_image":
        (folder / "notes.png").write_text("these are notes, not pixels\n")
        return folder / "notes.png", "not an image"
    if kind in ("truncated_png", "truncated_jpeg"):
        buf = io.BytesIO()
        load_image(good_photo).save(buf, "PNG" if kind == "truncated_png" else "JPEG")
        path = folder / ("cut.png" if kind == "truncated_png" else "cut.jpg")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        return path, "truncated"
    if kind == "blank":
        Image.new("RGB", (400, 300), "white").save(folder / "blank.png")
        return folder / "blank.png", "no ink found"
    if kind == "bomb_warning_size":
        return write_big_png(folder / "bomb1.png", math.isqrt(int(Image.MAX_IMAGE_PIXELS * 1.2))), "too large"
    if kind == "bomb_error_size":
        return write_big_png(folder / "bomb2.png", 20_000), "too large"
    raise AssertionError(kind)


BAD_INPUTS = ["missing", "empty_folder", "not_an_image", "truncated_png", "truncated_jpeg", "blank",
              "bomb_warning_size", "bomb_error_size"]


@pytest.mark.slow  # the trained checkpoint (conftest.ckpt)
@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_is_one_line_naming_it_and_the_others_are_still_predicted(kind, ckpt, photos, tmp_path, capsys):
    good = sorted(photos.iterdir())[:2]
    bad, phrase = bad_input(kind, tmp_path, good[0])
    assert main(["--ckpt", str(ckpt), str(good[0]), str(bad), str(good[1])]) == 1
    out, err = capsys.readouterr()
    errors = error_lines(err)
    assert len(errors) == 1 and len(err.splitlines()) == 1, err
    assert str(bad) in errors[0] and phrase in errors[0], errors[0]
    lines = out.splitlines()
    assert lines[0].split() == ["path", "digit", "probability", "top-3"]
    assert [line.split()[0] for line in lines[1:]] == [str(good[0]), str(good[1])]


@pytest.mark.slow  # the trained checkpoint (conftest.ckpt)
def test_all_bad_inputs_at_once_as_a_user_runs_it(ckpt, photos, tmp_path):
    good = sorted(photos.iterdir())[:3]
    bad = [bad_input(kind, tmp_path, good[0]) for kind in BAD_INPUTS]
    args = [good[0], *(path for path, _ in bad[:4]), good[1], *(path for path, _ in bad[4:]), good[2]]
    run = run_command("--ckpt", ckpt, "--format", "csv", *args, cwd=tmp_path)
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    errors = error_lines(run.stderr)
    assert len(errors) == len(run.stderr.splitlines()) == len(bad), run.stderr
    for line, (path, phrase) in zip(errors, bad):
        assert str(path) in line and phrase in line, line
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    assert [row["path"] for row in rows] == list(map(str, args))
    assert [bool(row["digit"]) for row in rows] == [not row["error"] for row in rows]
    assert sum(bool(row["digit"]) for row in rows) == 3


@pytest.fixture(scope="module")
def bad_checkpoints(ckpt, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Every kind of file that is not a usable checkpoint, with the phrase its error message must contain."""
    folder = tmp_path_factory.mktemp("bad_ckpt")
    real = torch.load(ckpt, map_location="cpu", weights_only=True)
    cases: dict[str, tuple[Path, str]] = {"missing": (folder / "missing.ckpt", "no such checkpoint")}
    (folder / "notes.ckpt").write_text("not a checkpoint\n")
    cases["not_a_checkpoint"] = (folder / "notes.ckpt", "not a readable PyTorch checkpoint")
    data = ckpt.read_bytes()
    (folder / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    cases["truncated"] = (folder / "truncated.ckpt", "not a readable PyTorch checkpoint")
    torch.save(nn.Linear(784, 10).state_dict(), folder / "plain_state_dict.pt")
    cases["plain_state_dict"] = (folder / "plain_state_dict.pt", "not a Lightning checkpoint")
    torch.save({"state_dict": {}}, folder / "empty_state.ckpt")
    cases["empty_state_dict"] = (folder / "empty_state.ckpt", "not a Lightning checkpoint")
    torch.save({**real, "hyper_parameters": {"hidden": 64}}, folder / "other_model.ckpt")
    cases["other_model"] = (folder / "other_model.ckpt", "not a checkpoint of MNISTClassifier")
    torch.save({**real, "hyper_parameters": {**real["hyper_parameters"], "net": "mlp"}}, folder / "wrong_net.ckpt")
    cases["weights_of_another_net"] = (folder / "wrong_net.ckpt", "weights do not fit")
    hparams = {k: v for k, v in real["hyper_parameters"].items() if k != "normalization"}
    no_norm = {k: v for k, v in real.items() if k != "datamodule_hyper_parameters"}
    torch.save({**no_norm, "hyper_parameters": hparams}, folder / "no_norm.ckpt")
    cases["no_normalization"] = (folder / "no_norm.ckpt", "records no normalization")
    torch.save({**real, "rejection": {"threshold": 1.5, "score": "max_softmax"}}, folder / "bad_rule.ckpt")
    cases["bad_rejection_rule"] = (folder / "bad_rule.ckpt", "rejection threshold 1.5 is not a number in [0, 1]")
    torch.save(Namespace(payload="code would run here"), folder / "pickled_object.ckpt")
    cases["pickled_object"] = (folder / "pickled_object.ckpt", "not a readable PyTorch checkpoint")
    return cases


@pytest.mark.slow  # the trained checkpoint (conftest.ckpt)
@pytest.mark.parametrize("kind", ["missing", "not_a_checkpoint", "truncated", "plain_state_dict", "empty_state_dict",
                                  "other_model", "weights_of_another_net", "no_normalization", "bad_rejection_rule",
                                  "pickled_object"])
def test_bad_checkpoint_is_one_line_and_exit_2(kind, bad_checkpoints, photos, capsys):
    path, phrase = bad_checkpoints[kind]
    with pytest.raises(CheckpointError):
        Predictor.from_checkpoint(path)
    assert main(["--ckpt", str(path), str(sorted(photos.iterdir())[0])]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {path}") and phrase in err, err


@pytest.mark.slow  # the trained checkpoint (conftest.ckpt)
def test_bad_checkpoint_as_a_user_runs_it(bad_checkpoints, photos, tmp_path):
    path, _ = bad_checkpoints["truncated"]
    run = run_command("--ckpt", path, photos, cwd=tmp_path)
    assert run.returncode == 2 and run.stdout == ""
    assert "Traceback" not in run.stderr and run.stderr.startswith(f"error: {path}: ")
    assert len(run.stderr.splitlines()) == 1, run.stderr


@pytest.mark.slow  # the trained checkpoint (conftest.ckpt)
def test_bad_usage_exits_2(ckpt, photos, tmp_path, capsys):
    photo = str(sorted(photos.iterdir())[0])
    with pytest.raises(SystemExit) as exit_:
        main([photo])  # no --ckpt
    assert exit_.value.code == 2
    assert main(["--ckpt", str(ckpt), "--sheet", str(tmp_path / "nowhere" / "sheet.png"), photo]) == 2
    assert main(["--ckpt", str(ckpt), "--sheet", str(tmp_path / "sheet.xyz"), photo]) == 2
    assert main(["--ckpt", str(ckpt), "--device", "toaster", photo]) == 2
    if not torch.cuda.is_available():
        assert main(["--ckpt", str(ckpt), "--device", "cuda", photo]) == 2
    for value in ("1.5", "-0.1", "nan", "high"):
        with pytest.raises(SystemExit) as exit_:
            main(["--ckpt", str(ckpt), "--threshold", value, photo])
        assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 8 + (not torch.cuda.is_available()), err
    assert err.count("--threshold: must be a number from 0 to 1") == 4, err


@pytest.mark.slow  # the trained checkpoint (conftest.ckpt)
def test_json_and_csv_parse(ckpt, photos, tmp_path, capsys):
    files = sorted(photos.iterdir())[:5]
    (tmp_path / "notes.txt").write_text("not an image")
    args = ["--ckpt", str(ckpt), *map(str, files), str(tmp_path / "notes.txt")]

    assert main([*args, "--format", "json"]) == 1
    results = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in results] == [*map(str, files), str(tmp_path / "notes.txt")]
    for r in results[:5]:
        assert r["error"] is None and 0 <= r["digit"] <= 9 and r["top3"][0] == [r["digit"], r["probability"]]
        assert [p for _, p in r["top3"]] == sorted((p for _, p in r["top3"]), reverse=True)
        assert sum(p for _, p in r["top3"]) <= 1 + 1e-6
    assert results[5]["digit"] is None and "not an image" in results[5]["error"]

    assert main([*args, "--format", "csv", "--batch-size", "2"]) == 1
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [int(row["digit"]) for row in rows[:5]] == [r["digit"] for r in results[:5]]  # batching changes nothing
    assert all(len(row["top3"].split()) == 3 for row in rows[:5]) and rows[5]["error"]


@pytest.mark.slow  # the trained checkpoint (conftest.ckpt)
def test_contact_sheet_is_a_valid_png(ckpt, photos, tmp_path, capsys):
    files = sorted(photos.iterdir())[:7]
    sheet = tmp_path / "sheet.png"
    assert main(["--ckpt", str(ckpt), "--sheet", str(sheet), *map(str, files)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + len(files)
    with Image.open(sheet) as image:
        image.verify()
    with Image.open(sheet) as image:
        assert image.format == "PNG" and image.size == (3 * 112, 3 * (112 + 34))  # 7 images: a 3×3 grid
        assert len(image.convert("L").getcolors(1 << 16)) > 10  # thumbnails and captions drawn, not a blank page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheet.png"]  # no temporary file left behind


@pytest.mark.slow  # the trained checkpoint (conftest.ckpt)
def test_predict_files_keeps_input_order_and_batches(ckpt, photos):
    predictor = Predictor.from_checkpoint(ckpt)
    files = sorted(photos.iterdir())[:9]
    one_batch = predict_files(predictor, files)
    small_batches = predict_files(predictor, files, batch_size=4)
    assert [r.path for r in one_batch] == list(map(str, files))
    assert [r.digit for r in one_batch] == [r.digit for r in small_batches]
    for r, s in zip(one_batch, small_batches):
        assert r.top3 == [(d, pytest.approx(p, abs=1e-5)) for d, p in s.top3]
    assert all(r.ok and r.thumbnail is None for r in one_batch)


@pytest.mark.slow  # the trained checkpoint (conftest.ckpt)
def test_predict_images_from_the_cli_does_not_import_lightning(ckpt, photos, tmp_path):
    """Inference needs torch only; Lightning's import alone would double the time to the first prediction."""
    photo = sorted(photos.iterdir())[0]
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "mnist_lit.cli", "predict-images", "--ckpt",
                          str(ckpt), str(photo)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and str(photo) in run.stdout, run.stderr[-3000:]
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in run.stderr.splitlines()
                if line.startswith("import time:")}
    assert "torch" in imported and not imported & {"lightning", "torchmetrics", "torchvision"}, sorted(imported)


# ------------------------------------------------------------------------------------------------ not a digit ---

@pytest.mark.slow  # the trained checkpoint (conftest.ckpt)
def test_non_digits_are_results_marked_not_a_digit_and_digits_still_read(rejecting_ckpt, non_digits, digits, photos,
                                                                          tmp_path, capsys):
    """A drawn letter and a blank-but-noisy photo, under the checkpoint's rule: no digit named, the score below the
    threshold, the top 3 still given, exit 0; the digits beside them are read as before."""
    rule = recorded_rejection(torch.load(rejecting_ckpt, map_location="cpu", weights_only=True))
    assert rule is not None
    files = [*sorted(photos.iterdir())[:4], non_digits["letter"], non_digits["blank_photo"]]
    labels = digits[1][:4].tolist()
    assert main(["--ckpt", str(rejecting_ckpt), "--format", "csv", *map(str, files)]) == 0
    out, err = capsys.readouterr()
    assert err == "", err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["path", "digit", "probability", "top3", "is_digit", "score", "error"]
    assert [row["path"] for row in rows] == list(map(str, files))
    assert [row["is_digit"] for row in rows] == ["true"] * 4 + ["false"] * 2, rows
    assert [int(row["digit"]) for row in rows[:4]] == labels
    for row in rows:
        assert (float(row["score"]) >= rule.threshold) == (row["is_digit"] == "true") and not row["error"], row
    for row in rows:  # the network's guess, for whoever wants it
        assert row["top3"].split()[0] == f"{row['digit']}:{row['probability']}", row

    sheet = tmp_path / "sheet.png"
    assert main(["--ckpt", str(rejecting_ckpt), "--sheet", str(sheet), *map(str, files)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines[1:]] == [*map(str, labels), "-", "-"]
    for line, row in zip(lines[5:], rows[4:]):
        assert line.endswith(f"not a digit (score {float(row['score']):.4f})"), line
    with Image.open(sheet) as image:  # 6 images in 3 columns of 112 × (112 + 34): the non-digits end the 2nd row
        captions = np.asarray(image.convert("RGB"))[[range(112, 130), range(258, 276)]]
    said = (captions == NOT_A_DIGIT).all(axis=-1).any(axis=1)  # (row, x): "not a digit" written in that column
    assert not said[0].any() and not said[1, :112].any() and said[1, 112:224].any() and said[1, 224:].any()


@pytest.mark.slow  # the trained checkpoint (conftest.ckpt)
def test_threshold_override_and_old_checkpoints_never_reject(ckpt, rejecting_ckpt, non_digits, photos, capsys):
    """A checkpoint without a rule (all those written before it) reads everything as a digit, as before, until a
    threshold is given; ``--threshold`` replaces a checkpoint's own."""
    files = [*map(str, sorted(photos.iterdir())[:6]), str(non_digits["letter"]), str(non_digits["blank_photo"])]

    def results(*options: str) -> list[dict]:
        assert main([*options, "--format", "json", *files]) == 0
        return json.loads(capsys.readouterr().out)

    old = results("--ckpt", str(ckpt))
    assert all(r["is_digit"] for r in old), old
    assert [r["score"] for r in old] == [r["probability"] for r in old]  # max_softmax
    threshold = sorted(r["score"] for r in old)[len(old) // 2]
    given = results("--ckpt", str(ckpt), "--threshold", str(threshold))
    assert [r["is_digit"] for r in given] == [r["score"] >= threshold for r in old]
    assert 0 < sum(r["is_digit"] for r in given) < len(given)
    assert [(r["digit"], r["top3"]) for r in given] == [(r["digit"], r["top3"]) for r in old]

    assert [r["is_digit"] for r in results("--ckpt", str(rejecting_ckpt))][-2:] == [False, False]
    assert all(r["is_digit"] for r in results("--ckpt", str(rejecting_ckpt), "--threshold", "0"))

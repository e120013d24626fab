"""How fast ``predict-images`` reads photographed digits on CPU, how long one image takes, and how many it gets right.

    python bench/predict_images.py --ckpt PATH                    # 1,000 photos, 5 latency runs
    python bench/predict_images.py --ckpt PATH --count 40 --repeats 1 --out-dir /tmp/smoke   # a smoke run

The first ``--count`` MNIST test digits are re-drawn as a user would photograph them (dark on white, 3–6× larger,
off-centre on a larger canvas; the same drawing as tests/test_images.py) and saved as RGB PNGs in a temporary folder.
Then the real command runs as a subprocess, each time from launch to exit:

* throughput: the whole folder, with and without ``--no-preprocess`` (images/s = count / wall time, so Python and
  torch start-up and the checkpoint load are included, as a user sees them); accuracy from its ``--format csv``;
  the rate once started is estimated as (count − 1) / (wall time − median one-image latency), since start-up
  dominates a short run and would hide the cost of preprocessing;
* latency: ONE image, from launch to the first prediction line on stdout; median, min and max of ``--repeats`` runs;
* a contact sheet (``--sheet``) of the first 24 photos.

Writes PREDICT.md and contact_sheet.png to ``--out-dir`` (default bench/). Smoke runs belong elsewhere (/tmp), so
that bench/ only holds real measurements.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
COMMAND = [sys.executable, "-m", "mnist_lit.cli", "predict-images"]
SHOWN = "python -m mnist_lit.cli predict-images"  # COMMAND as a reader would type it
SHEET_IMAGES = 24


# ------------------------------------------------------------------------------------------------- the photos ---

def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format), plain or gzipped, as a numpy array."""
    if not path.is_file() and Path(f"{path}.gz").is_file():
        path = Path(f"{path}.gz")
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    zero, dtype_code, ndim = data[0] << 8 | data[1], data[2], data[3]
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def test_digits(data_dir: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` MNIST test digits (uint8, N×28×28) and their labels."""
    raw = data_dir / "MNIST" / "raw"
    try:
        images, labels = read_idx(raw / "t10k-images-idx3-ubyte"), read_idx(raw / "t10k-labels-idx1-ubyte")
    except FileNotFoundError as err:
        sys.exit(f"error: {err.filename}: missing; --data-dir must hold MNIST/raw (e.g. after `make data`)")
    if count > len(images):
        sys.exit(f"error: --count {count}: the MNIST test set has only {len(images)} digits")
    return images[:count], labels[:count]


def photograph(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """An MNIST digit as a user would photograph it: dark on white, 3–6× larger, off-centre on a larger canvas.

    tests/test_images.py photographs its digits with this function too.
    """
    size = round(28 * rng.uniform(3, 6))
    ink = Image.fromarray(255 - digit).resize((size, size), Image.Resampling.BICUBIC)
    width, height = size + int(rng.integers(40, 300)), size + int(rng.integers(40, 300))
    canvas = Image.new("L", (width, height), 255)
    canvas.paste(ink, (int(rng.integers(0, width - size)), int(rng.integers(0, height - size))))
    return canvas


def write_photos(digits: np.ndarray, folder: Path, seed: int) -> list[Path]:
    """Each digit photographed and saved as an RGB PNG named by its index in the test set (0000.png, ...)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i, digit in enumerate(digits):
        path = folder / f"{i:04d}.png"
        photograph(digit, rng).convert("RGB").save(path)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------------ the command ---

def run_command(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """The command as a user runs it; returns it and its wall time (launch to exit). Exit 0 or 1 (some file failed)
    is a result; anything else (bad checkpoint, crash) stops the benchmark."""
    start = time.perf_counter()
    done = subprocess.run([*COMMAND, *args], cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        sys.exit(f"error: `{SHOWN} {shlex.join(args)}` exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done, seconds


def throughput(ckpt: str, folder: Path, labels: np.ndarray, options: list[str], cwd: Path) -> dict:
    """One run on the whole folder with ``--format csv``: wall time, images/s and accuracy against the labels."""
    done, seconds = run_command(["--ckpt", ckpt, "--format", "csv", *options, str(folder)], cwd)
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    if len(rows) != len(labels):
        sys.exit(f"error: expected {len(labels)} CSV rows, got {len(rows)}:\n{done.stderr[-3000:]}")
    predicted = [row for row in rows if row["digit"]]
    correct = sum(int(row["digit"]) == labels[int(Path(row["path"]).stem)] for row in predicted)
    return {"seconds": seconds, "per_s": len(labels) / seconds, "correct": correct, "failed": len(rows) - len(predicted),
            "n": len(labels), "exit": done.returncode}


def first_prediction(ckpt: str, image: Path, cwd: Path) -> float:
    """Seconds from launching the command on one image to its first prediction line on stdout (the table's header
    line, which starts with "path", is not a prediction)."""
    start = time.perf_counter()
    with subprocess.Popen([*COMMAND, "--ckpt", ckpt, str(image)], cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, bufsize=1) as proc:
        seconds = None
        for line in proc.stdout:
            if line.strip() and not line.startswith("path "):
                seconds = time.perf_counter() - start
                break
        proc.stdout.read()  # let it finish writing
        err = proc.stderr.read()
    if seconds is None or proc.returncode != 0:
        sys.exit(f"error: no prediction line for {image} (exit {proc.returncode}):\n{err[-3000:]}")
    return seconds


# ----------------------------------------------------------------------------------------------------- report ---

def network_name(ckpt: str) -> str:
    try:
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
        return str(checkpoint["hyper_parameters"]["net"])
    except Exception as err:  # the command itself says what is wrong with a bad checkpoint
        sys.exit(f"error: --ckpt {ckpt}: not a checkpoint of this project ({type(err).__name__}: {err})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a .ckpt written by `python -m mnist_lit.cli fit`")
    parser.add_argument("--data-dir", default="data", help="folder holding MNIST/raw (default: data)")
    parser.add_argument("--count", type=int, default=1000, help="photographed test digits to predict (default 1000)")
    parser.add_argument("--repeats", type=int, default=5, help="one-image latency runs (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the photographs' sizes and positions")
    parser.add_argument("--out-dir", default=str(ROOT / "bench"),
                        help="where PREDICT.md and contact_sheet.png go (default: bench/)")
    opts = parser.parse_args()
    if opts.count < 1 or opts.repeats < 1:
        parser.error("--count and --repeats must be at least 1")
    ckpt = str(Path(opts.ckpt).resolve())
    if not Path(ckpt).is_file():
        sys.exit(f"error: --ckpt {opts.ckpt}: no such file")
    out_dir = Path(opts.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    net = network_name(ckpt)
    load = os.getloadavg()

    digits, labels = test_digits(Path(opts.data_dir), opts.count)
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        tmp = Path(tmp)
        folder = tmp / "photos"
        folder.mkdir()
        cwd = tmp / "cwd"  # the command writes nothing, but run it where anything it did write would vanish
        cwd.mkdir()
        print(f"photographing {opts.count} test digits into {folder} ...", flush=True)
        photos = write_photos(digits, folder, opts.seed)
        single = tmp / "single"
        single.mkdir()
        one = single / photos[0].name  # alone in its folder: the latency run reads no more than one file
        one.write_bytes(photos[0].read_bytes())

        first_prediction(ckpt, one, cwd)  # warm-up, not counted: torch and the checkpoint into the page cache
        results = {}
        for name, options in (("preprocessed (default)", []), ("--no-preprocess", ["--no-preprocess"])):
            results[name] = throughput(ckpt, folder, labels, options, cwd)
            r = results[name]
            print(f"{name}: {r['seconds']:.2f} s, {r['per_s']:.1f} images/s, {r['correct']}/{r['n']} correct",
                  flush=True)
        latencies = [first_prediction(ckpt, one, cwd) for _ in range(opts.repeats)]
        print("first-prediction latency: " + ", ".join(f"{s:.2f} s" for s in latencies), flush=True)

        sheet_files = photos[:SHEET_IMAGES]
        sheet = out_dir / "contact_sheet.png"
        done, _ = run_command(["--ckpt", ckpt, "--format", "csv", "--sheet", str(sheet.resolve()),
                               *map(str, sheet_files)], cwd)
        if done.returncode != 0 or not sheet.is_file():
            sys.exit(f"error: the contact sheet run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        sheet_correct = sum(row["digit"] != "" and int(row["digit"]) == labels[int(Path(row["path"]).stem)]
                            for row in csv.DictReader(io.StringIO(done.stdout)))
        print(f"contact sheet: {sheet} ({sheet_correct}/{len(sheet_files)} correct)", flush=True)

    pre, plain = results["preprocessed (default)"], results["--no-preprocess"]

    def accuracy(r: dict) -> str:
        failed = f", {r['failed']} failed" if r["failed"] else ""
        return f"{100 * r['correct'] / r['n']:.1f} % ({r['correct']}/{r['n']}{failed})"

    n = opts.count
    startup = statistics.median(latencies)  # launch to one image predicted: start-up, checkpoint load, one image

    def after_startup(r: dict) -> str:
        """Images/s once started: (count − 1) / (wall − median one-image latency); an estimate from two runs."""
        rest = r["seconds"] - startup
        if n < 2 or rest <= 0:
            return "n/a (start-up is all of it)"
        return f"{(n - 1) / rest:.1f} images/s ({1000 * rest / (n - 1):.1f} ms per image)"

    lines = [
        "# predict-images: speed and accuracy on photographed digits (CPU)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (torch uses {torch.get_num_threads()} threads), "
        f"{platform.system()}; torch {torch.__version__}, Python {platform.python_version()}. "
        f"Load average at start: {load[0]:.2f}.",
        "",
        f"Produced by: `python bench/{Path(__file__).name} {shlex.join(sys.argv[1:])}`".rstrip(),
        "",
        f"Checkpoint: `{Path(ckpt).name}`, network **{net}**.",
        "",
        f"The first {n:,} MNIST test digits, re-drawn as a user would photograph them (dark on white, 3–6× larger, "
        f"off-centre on a larger canvas; seed {opts.seed}) and saved as RGB PNGs. Every time is the command's wall "
        f"time from launch as a subprocess, so Python and torch start-up and the checkpoint load are included; one "
        f"untimed run first warms the page cache.",
        "",
        "| measurement | result |",
        "|---|---|",
        f"| throughput, {n:,} photos, preprocessed (default) | {pre['per_s']:.1f} images/s ({pre['seconds']:.2f} s) |",
        f"| throughput, {n:,} photos, `--no-preprocess` | {plain['per_s']:.1f} images/s ({plain['seconds']:.2f} s) |",
        f"| after start-up, preprocessed (default) ¹ | {after_startup(pre)} |",
        f"| after start-up, `--no-preprocess` ¹ | {after_startup(plain)} |",
        f"| accuracy on the photos, preprocessed (default) | {accuracy(pre)} |",
        f"| accuracy on the photos, `--no-preprocess` | {accuracy(plain)} |",
        f"| first prediction for ONE photo, launch to first line on stdout, {opts.repeats} runs | median "
        f"{statistics.median(latencies):.2f} s (min {min(latencies):.2f} s, max {max(latencies):.2f} s) |",
        "",
        "¹ (count − 1) / (throughput wall time − median first-prediction latency): the rate once Python, torch and the "
        "checkpoint are loaded, where the cost of preprocessing shows; an estimate from two separate runs, so it is "
        "noisy when the start-up is most of the wall time.",
        "",
        "Commands timed (PHOTOS: the folder of photos; ONE.png: the first of them, alone):",
        "",
        f"- throughput: `{SHOWN} --ckpt CKPT --format csv PHOTOS` and the same with `--no-preprocess`",
        f"- latency: `{SHOWN} --ckpt CKPT ONE.png`",
        f"- contact sheet: `{SHOWN} --ckpt CKPT --format csv --sheet contact_sheet.png` with the first {len(sheet_files)} photos "
        f"({sheet_correct} of {len(sheet_files)} correct)",
        "",
        "![contact sheet: each photo with its predicted digit and probability](contact_sheet.png)",
    ]
    (out_dir / "PREDICT.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""How fast ``predict-images`` reads photographed digits on CPU, how long ONE takes, and how many it gets right.

    python -m bench.predict_images --ckpt PATH       # 1,000 photos, 5 latency runs: PREDICT.md, contact_sheet.png
    python -m bench.predict_images --ckpt PATH --count 40 --repeats 1 --out-dir /tmp/smoke   # a smoke run
"""

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import CLI, ROOT, arguments, checkpoint, header, option, photo_folder, predict_images, table, write

SHOWN = "python -m mnist_lit.cli predict-images"
SHEET_IMAGES = 24


def first_prediction(ckpt: str, image: Path, cwd: Path) -> float:
    """Seconds from launching the command on one image to its first prediction line on stdout (not the header)."""
    start = time.perf_counter()
    with subprocess.Popen([*CLI, "predict-images", "--ckpt", ckpt, str(image)], cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, bufsize=1) as proc:
        seconds = next((time.perf_counter() - start for line in proc.stdout
                        if line.strip() and not line.startswith("path ")), None)
        proc.stdout.read()  # let it finish writing
        err = proc.stderr.read()
    if seconds is None or proc.returncode != 0:
        raise SystemExit(f"error: no prediction line for {image} (exit {proc.returncode}):\n{err[-3000:]}")
    return seconds


def main() -> None:
    opts = arguments(__doc__, option("--repeats", type=int, default=5, help="one-image latency runs (default 5)"),
                     option("--out-dir", default=str(ROOT / "bench"), help="PREDICT.md's folder"), photos=True)
    if opts.count < 2 or opts.repeats < 1:
        raise SystemExit("error: --count must be at least 2 and --repeats at least 1")
    (ckpt, net), out_dir = checkpoint(opts.ckpt), Path(opts.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        cwd = Path(tmp)  # the command writes nothing, but run it where anything it did write would vanish
        photos, labels = photo_folder(cwd / "photos", opts.count, opts.data_dir)
        one = cwd / "single" / photos[0].name  # alone in its folder: the latency run reads no more than one file
        one.parent.mkdir()
        one.write_bytes(photos[0].read_bytes())
        first_prediction(ckpt, one, cwd)  # warm-up, not counted: torch and the checkpoint into the page cache
        pre = predict_images(ckpt, [cwd / "photos"], labels, cwd=cwd)
        plain = predict_images(ckpt, [cwd / "photos"], labels, ["--no-preprocess"], cwd=cwd)
        latencies = [first_prediction(ckpt, one, cwd) for _ in range(opts.repeats)]
        shown = predict_images(ckpt, photos[:SHEET_IMAGES], labels, ["--sheet", str(out_dir / "contact_sheet.png")],
                               cwd=cwd)
        if shown["exit"] != 0 or not (out_dir / "contact_sheet.png").is_file():
            raise SystemExit("error: the contact sheet run failed")

    startup = statistics.median(latencies)  # launch to one image predicted: start-up, checkpoint load, one image
    cells = {  # the table's rows, each side's figure from its run
        f"throughput, {opts.count:,} photos": lambda r: f"{r['per_s']:.1f} images/s ({r['seconds']:.2f} s)",
        "after start-up ¹": lambda r: "n/a (start-up is all of it)" if r["seconds"] <= startup else (
            f"{(r['n'] - 1) / (r['seconds'] - startup):.1f} images/s "
            f"({1000 * (r['seconds'] - startup) / (r['n'] - 1):.1f} ms per image)"),
        "accuracy on the photos": lambda r: f"{100 * r['correct'] / r['n']:.1f} % ({r['correct']}/{r['n']}"
                                            + (f", {r['failed']} failed)" if r["failed"] else ")"),
    }
    write(out_dir / "PREDICT.md", header(
        "predict-images: speed and accuracy on photographed digits",
        f"Checkpoint: `{Path(ckpt).name}`, network **{net}**. The first {opts.count:,} MNIST test digits, "
        "photographed (seed 0) and saved as RGB PNGs. Every time is the command's wall time from launch "
        "as a subprocess, so Python and torch start-up and the checkpoint load are included; one untimed run first "
        "warms the page cache.",
    ) + table("measurement", "preprocessed (default)", "`--no-preprocess`") + [
        *(f"| {name} | {cell(pre)} | {cell(plain)} |" for name, cell in cells.items()), "",
        (f"First prediction for ONE photo, launch to its line on stdout, {opts.repeats} runs: median {startup:.2f} s "
         f"(min {min(latencies):.2f} s, max {max(latencies):.2f} s)."), "",
        ("¹ (count − 1) / (throughput wall time − median first-prediction latency): the rate once Python, torch and "
         "the checkpoint are loaded; an estimate from two separate runs, "
         "noisy when start-up is most of the wall time."),
        "", (f"Commands timed: `{SHOWN} --ckpt CKPT --format csv PHOTOS` (and with `--no-preprocess`); `{SHOWN} --ckpt "
             f"CKPT ONE.png`; `{SHOWN} --ckpt CKPT --format csv --sheet contact_sheet.png` with the first "
             f"{SHEET_IMAGES} photos ({shown['correct']} of {SHEET_IMAGES} correct):"),
        "", "![contact sheet: each photo with its predicted digit and probability](contact_sheet.png)"])


if __name__ == "__main__":
    main()

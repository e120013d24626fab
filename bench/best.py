"""Train the ``best`` recipe for one seed with the real CLI and record the run in bench/BEST.md as soon as it finishes,
so that seeds can be run one at a time (each takes about 45 minutes on a 2-core CPU).

    python bench/best.py --seed 0                 # the full recipe
    python bench/best.py --seed 0 --epochs 3      # a shorter budget: recorded as such, never mixed into the mean

Each row: seed, epochs, the checkpoint the validation split picked, its test accuracy (the official 10,000), wall
time and the exact command. Below the rows, mean ± sd of the test accuracy over the full-recipe runs.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
HEADER = ["# `best` recipe: test accuracy per seed", "",
          "The checkpoint is selected on the validation split; the test accuracy is that checkpoint's on the official "
          "10,000 test digits. Rows are appended by `python bench/best.py --seed N [--epochs E]` as each run finishes.",
          "",
          "| seed | epochs | selected checkpoint | test accuracy | wall time | command | notes |",
          "|---|---|---|---|---|---|---|"]


def device() -> str:
    """Where Lightning's default accelerator ("auto") trains: the first GPU if there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU, {torch.get_num_threads()} torch threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--epochs", type=int, help="override the recipe's epoch count (recorded, not averaged)")
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "BEST.md"))
    parser.add_argument("--keep", help="run in this folder and keep its lightning_logs (default: a temporary one)")
    parser.add_argument("--note", default="", help="written in the row's notes, after the device it ran on")
    opts = parser.parse_args()
    full = yaml.safe_load((ROOT / "configs" / "best.yaml").read_text())["trainer"]["max_epochs"]

    args = ["fit", "--model", "best", "--seed_everything", str(opts.seed), "--trainer.enable_progress_bar", "false"]
    if opts.epochs is not None:
        args += ["--trainer.max_epochs", str(opts.epochs)]
    with tempfile.TemporaryDirectory() as tmp:
        cwd = opts.keep or tmp
        Path(cwd).mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "mnist_lit.cli", *args, "--data.data_dir", opts.data_dir],
                              cwd=cwd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    best = re.search(r"^best checkpoint: (.+)$", done.stdout, re.M)
    acc = re.search(r"^test accuracy: ([0-9.]+)$", done.stdout, re.M)
    if done.returncode != 0 or not (best and acc):
        sys.exit(f"error: the run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")

    out = Path(opts.out)
    lines = out.read_text().splitlines() if out.is_file() else list(HEADER)
    lines = [line for line in lines if not line.startswith("Mean over")]
    epochs = opts.epochs or full
    end = max(i for i, line in enumerate(lines) if line.startswith("|")) + 1  # the new row goes below the table
    lines.insert(end, f"| {opts.seed} | {epochs}{'' if epochs == full else f' of {full}'} | "
                      f"`{Path(best.group(1)).name}` | {100 * float(acc.group(1)):.2f} % | {seconds / 60:.0f} min | "
                      f"`python -m mnist_lit.cli {' '.join(args)}` | {'; '.join(filter(None, [device(), opts.note]))} |")
    full_runs = [float(line.split("|")[4].strip(" %")) for line in lines
                 if line.startswith("| ") and line.split("|")[2].strip() == str(full)]
    if full_runs:
        sd = statistics.stdev(full_runs) if len(full_runs) > 1 else float("nan")
        lines[end + 1:end + 1] = ["", f"Mean over the {len(full_runs)} full-recipe run(s): "
                                      f"{statistics.mean(full_runs):.2f} ± {sd:.2f} % (sd)."]
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""How often cnn3block's tutorial recipe (Adam lr 0.005) collapses, with and without the 100-step warm-up.

    python bench/collapse.py --seeds 0 1 2 3 4 5 6 7 --steps 300

Each run trains cnn3block for ``--steps`` steps from one seed through the real CLI and scores the official test
set; a run below 20 % predicts (nearly) one digit. Writes bench/COLLAPSE.md.
"""

from __future__ import annotations

import argparse
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {"tutorial (warmup_steps 0)": "0", "recipe (warmup_steps 100)": "100"}


def test_accuracy(seed: int, steps: int, warmup: str) -> float:
    args = ["fit", "--model", "cnn3block", "--seed_everything", str(seed), "--model.warmup_steps", warmup,
            "--trainer.max_epochs", "1", "--trainer.limit_train_batches", str(steps),
            "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
            "--data.data_dir", str(ROOT / "data")]
    with tempfile.TemporaryDirectory() as cwd:
        done = subprocess.run([sys.executable, "-m", "mnist_lit.cli", *args], cwd=cwd, capture_output=True,
                              text=True)
    found = re.search(r"^test accuracy: ([0-9.]+)$", done.stdout, re.M)
    if not found:
        raise RuntimeError(done.stderr[-2000:])
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="*", type=int, default=list(range(8)))
    parser.add_argument("--steps", type=int, default=300)
    opts = parser.parse_args()
    results = {name: [test_accuracy(s, opts.steps, w) for s in opts.seeds] for name, w in VARIANTS.items()}
    lines = [
        "# cnn3block: collapse of the tutorial recipe",
        "",
        f"Machine: {platform.machine()}, CPU, torch {torch.__version__}. Produced by: "
        f"`python bench/collapse.py {' '.join(sys.argv[1:])}`".rstrip(),
        "",
        f"Test accuracy after {opts.steps} steps of cnn3block (Adam lr 0.005, batch 64, pixels 0–1), one run per seed.",
        "",
        "| variant | " + " | ".join(f"seed {s}" for s in opts.seeds) + " | collapsed (< 20 %) |",
        "|---|" + "---|" * (len(opts.seeds) + 1),
    ]
    for name, accs in results.items():
        collapsed = sum(a < 0.2 for a in accs)
        lines.append(f"| {name} | " + " | ".join(f"{100 * a:.2f} %" for a in accs)
                     + f" | {collapsed} of {len(accs)} |")
    (ROOT / "bench" / "COLLAPSE.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

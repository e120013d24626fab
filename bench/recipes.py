"""Train each recipe with the real CLI and record its test accuracy: the figures README's model table cites.

    python bench/recipes.py                     # every recipe, full epochs except where --epochs caps one
    python bench/recipes.py --only mlp --seeds 0 1 2

Writes bench/RECIPES.md (machine, versions, the exact commands, accuracy and wall time per run).
"""

from __future__ import annotations

import argparse
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = {"lenet5": "≈ 98.4 %", "lenet": "—", "cnn3block": "98–99 %", "cnn3block5x5": "98–99 %", "mlp": "≈ 98 %",
            "bncnn": "≈ 99 %"}


def run(model: str, seed: int, epochs: int | None, data_dir: str) -> dict:
    args = ["fit", "--model", model, "--seed_everything", str(seed), "--trainer.enable_progress_bar", "false"]
    if epochs is not None:
        args += ["--trainer.max_epochs", str(epochs)]
    with tempfile.TemporaryDirectory() as cwd:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "mnist_lit.cli", *args, "--data.data_dir", data_dir],
                              cwd=cwd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    found = re.search(r"^test accuracy: ([0-9.]+)$", done.stdout, re.M)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"{model} seed {seed} failed:\n{done.stderr[-2000:]}")
    full = yaml.safe_load((ROOT / "configs" / f"{model}.yaml").read_text())["trainer"]["max_epochs"]
    return {"model": model, "seed": seed, "epochs": epochs or full, "of": full, "acc": float(found.group(1)),
            "seconds": seconds, "command": "python -m mnist_lit.cli " + " ".join(args)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=list(TUTORIAL), help="recipes to run")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--epochs", nargs="*", default=[], metavar="MODEL=N", help="cap a recipe's epochs")
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "RECIPES.md"))
    opts = parser.parse_args()
    caps = {k: int(v) for k, v in (item.split("=") for item in opts.epochs)}

    rows = []
    for model in opts.only:
        for seed in opts.seeds:
            rows.append(run(model, seed, caps.get(model), opts.data_dir))
            print(rows[-1], flush=True)

    lines = [
        "# Recipe accuracy",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} threads, "
        f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}; "
        f"torch {torch.__version__}, lightning {lightning.__version__}, Python {platform.python_version()}.",
        "",
        f"Produced by: `{' '.join(['python bench/recipes.py', *sys.argv[1:]])}`",
        "",
        "Best-checkpoint test accuracy (selected on the test split, as the tutorials report it).",
        "",
        "| model | seed | epochs | test accuracy | tutorial | wall time | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        epochs = f"{r['epochs']}" + ("" if r["epochs"] == r["of"] else f" of {r['of']}")
        lines.append(f"| {r['model']} | {r['seed']} | {epochs} | {100 * r['acc']:.2f} % | {TUTORIAL[r['model']]} "
                     f"| {r['seconds']:.0f} s | `{r['command']}` |")
    Path(opts.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""Where the wall time of ``python -m mnist_lit.cli fit --model fast`` goes, phase by phase, as a user runs it.

    python bench/fit_cost.py                  # fast, 3 runs
    python bench/fit_cost.py --model mlp --runs 1

Each run is the real command in a fresh process, plus one callback (``PhaseClock``, added with
``--trainer.callbacks+=``) that notes the time at Lightning's hooks; the launch time comes from this script. The
provisioning check (the sha256 of the four MNIST files, inside the data module's set-up phase) is also timed on
its own. Writes bench/FIT_COST.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

ROOT = Path(__file__).resolve().parent.parent
PHASES = [
    ("start", "callback", "Python start-up, imports (torch, Lightning), command line and recipe parsing"),
    ("callback", "setup", "Trainer and logger built, provisioning check, MNIST read into memory, split"),
    ("setup", "train_start", "optimizer, torchinfo summary, TensorBoard hparams, first last.ckpt"),
    ("train_start", "train_end", "training: every step, the epoch-end evaluations and checkpoint writes"),
    ("train_end", "test_start", "end of fit, the best checkpoint loaded"),
    ("test_start", "test_end", "the final test of the best checkpoint (10,000 images)"),
    ("test_end", "exit", "results printed, TensorBoard files closed, interpreter exit"),
]


class PhaseClock(L.Callback):
    """Appends ``{"hook": seconds since the epoch}`` lines to $PHASE_CLOCK_OUT."""

    def __init__(self) -> None:
        self._note("callback")

    @staticmethod
    def _note(name: str) -> None:
        with open(os.environ["PHASE_CLOCK_OUT"], "a") as f:
            f.write(json.dumps({name: time.time()}) + "\n")

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self._note("setup")

    def on_train_start(self, trainer, pl_module) -> None:
        self._note("train_start")

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._note("val_start")

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._note("val_end")

    def on_train_end(self, trainer, pl_module) -> None:
        self._note("train_end")

    def on_test_start(self, trainer, pl_module) -> None:
        self._note("test_start")

    def on_test_end(self, trainer, pl_module) -> None:
        self._note("test_end")


def one_run(model: str, data_dir: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as cwd:
        out = Path(cwd) / "phases.jsonl"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PHASE_CLOCK_OUT": str(out)}
        start = time.time()
        done = subprocess.run([sys.executable, "-m", "mnist_lit.cli", "fit", "--model", model, "--data.data_dir",
                               data_dir, "--trainer.callbacks+=bench.fit_cost.PhaseClock"],
                              cwd=cwd, env=env, capture_output=True, text=True)
        end = time.time()
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        marks: dict[str, float] = {"start": start, "exit": end}
        validation = 0.0
        for line in out.read_text().splitlines():
            (name, stamp), = json.loads(line).items()
            if name == "val_end":
                validation += stamp - marks["val_start"]
            marks[name] = stamp
    phases = {f"{a}-{b}": marks[b] - marks[a] for a, b, _ in PHASES}
    return {**phases, "validation": validation, "total": end - start, "load": os.getloadavg()[0],
            "accuracy": float(done.stdout.split("test accuracy: ")[1].split()[0])}


def provisioning_check(data_dir: str) -> float:
    from mnist_lit.provision import provision

    start = time.perf_counter()
    provision(Path(data_dir) / "MNIST" / "raw")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fast")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "FIT_COST.md"))
    opts = parser.parse_args()

    import torch

    runs = []
    for _ in range(opts.runs):
        runs.append(one_run(opts.model, opts.data_dir))
        print(runs[-1], flush=True)
    check = statistics.median(provisioning_check(opts.data_dir) for _ in range(3))
    med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    accuracies = ", ".join(f"{100 * r['accuracy']:.2f} %" for r in runs)
    loads = ", ".join(f"{r['load']:.1f}" for r in runs)
    lines = [
        f"# Where `fit --model {opts.model}` spends its wall time",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, CPU only; "
        f"torch {torch.__version__}, lightning {L.__version__}, Python {platform.python_version()}.",
        "",
        f"Produced by: `{' '.join(['python bench/fit_cost.py', *sys.argv[1:]])}`: {opts.runs} runs of "
        f"`python -m mnist_lit.cli fit --model {opts.model}`, the median of each phase (phases need not add up to "
        f"the median total). Test accuracy of the runs: "
        f"{accuracies}. 1-minute load average after each run (2 cores; above 2 other work ran beside it): "
        f"{loads}.",
        "",
        "| phase | seconds | what happens |",
        "|---|---|---|",
        *[f"| {a} → {b} | {med[f'{a}-{b}']:.2f} | {what} |" for a, b, what in PHASES],
        f"| of which the evaluations after epochs | {med['validation']:.2f} | validation split and test set |",
        f"| of which the provisioning check | {check:.2f} | sha256 of the four raw files (timed on its own) |",
        f"| **whole command** | **{med['total']:.2f}** | |",
    ]
    Path(opts.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

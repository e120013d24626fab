"""Time to accuracy: training seconds until the official test accuracy first reaches 98 / 99 / 99.5 %, for each
recipe through the real CLI (``python -m mnist_lit.cli fit --model NAME``) and for the tutorial's own plain loop of
the same network and settings (bench/speed.py's), side by side in one run.

    python bench/time_to_accuracy.py                                  # every recipe, seed 0; fast: seeds 0-4
    python bench/time_to_accuracy.py --only fast mlp --seeds 0 1 2    # some recipes, these seeds
    python bench/time_to_accuracy.py --max-seconds 120                # cap each run's training time

mnist_lit: the CLI as a user runs it, plus one callback (``AccuracyClock``, added with ``--trainer.callbacks+=``)
that records the test accuracy of every evaluation against the training seconds so far: the wall time since
training started less the evaluation passes (checkpoint writes count as training). The test set is scored after
every epoch, as the recipes do (``fast``'s epochs are three quarters of the split: every 160 steps, about 3 s).
The command is otherwise the recipe unchanged, so its final accuracy and wall time are what ``make fit`` gives.
Plain loop: bench/speed.py's ``tutorial_loop`` (torchvision MNIST's 60,000 training images, per-sample
ToTensor/Normalize, a DataLoader, the recipe's optimizer, schedule, epochs and share of each epoch), scored after
every epoch, its test pass not counted. Both stop at the recipe's
epochs, once the test accuracy reaches the highest threshold, or when ``--max-seconds`` of training is spent
(then the thresholds not reached are marked as capped). Each run is a fresh process: "command" is its whole wall
time, start-up included. Writes bench/TIME_TO_ACCURACY.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS = (0.98, 0.99, 0.995)
RECIPES = ["lenet5", "lenet", "cnn3block", "cnn3block5x5", "mlp", "bncnn", "fast", "best"]
STOP_AT = THRESHOLDS[-1]


class AccuracyClock(L.Callback):
    """Appends one JSON line per evaluation to $TTA_OUT: training seconds so far, val and test accuracy. Stops the
    run once the test accuracy reaches $TTA_STOP_AT or $TTA_MAX_SECONDS of training are spent."""

    def __init__(self) -> None:
        self.out = Path(os.environ["TTA_OUT"])
        self.stop_at = float(os.environ.get("TTA_STOP_AT", "inf"))
        self.max_seconds = float(os.environ.get("TTA_MAX_SECONDS", "inf"))
        self.trained = 0.0
        self.since: float | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.since = time.perf_counter()

    def _seconds(self) -> float:
        return self.trained + (time.perf_counter() - self.since if self.since is not None else 0.0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._seconds() > self.max_seconds:
            trainer.should_stop = True

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and self.since is not None:
            self.trained, self.since = self._seconds(), None

    def on_validation_end(self, trainer, pl_module) -> None:  # before ModelCheckpoint's: its writes count as training
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = trainer.callback_metrics
        record = {"epoch": trainer.current_epoch, "step": trainer.global_step, "seconds": self.trained,
                  "val_acc": float(metrics["val/acc"]), "test_acc": float(metrics["test/acc"])}
        with self.out.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if record["test_acc"] >= self.stop_at or self.trained > self.max_seconds:
            trainer.should_stop = True
        self.since = time.perf_counter()


def mnist_lit_run(model: str, seed: int, opts: argparse.Namespace) -> dict:
    args = ["fit", "--model", model, "--seed_everything", str(seed), "--trainer.enable_progress_bar", "false",
            "--trainer.callbacks+=bench.time_to_accuracy.AccuracyClock"]
    with tempfile.TemporaryDirectory() as cwd:
        out = Path(cwd) / "clock.jsonl"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TTA_OUT": str(out), "TTA_STOP_AT": str(STOP_AT),
               "TTA_MAX_SECONDS": str(opts.max_seconds or "inf")}
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "mnist_lit.cli", *args, "--data.data_dir", opts.data_dir],
                              cwd=cwd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        found = re.search(r"^test accuracy: ([0-9.]+)$", done.stdout, re.M)
        if done.returncode != 0 or not found:
            raise RuntimeError(f"{model} seed {seed} failed:\n{done.stderr[-3000:]}")
        curve = [json.loads(line) for line in out.read_text().splitlines()]
    return {"side": "mnist_lit", "model": model, "seed": seed, "curve": curve, "acc": float(found.group(1)),
            "wall": wall, "load": os.getloadavg()[0], "seconds": curve[-1]["seconds"],
            "last_lines": done.stdout.strip().splitlines()[-2:],
            "epochs": curve[-1]["step"] / steps_per_epoch(model),
            "command": "python -m mnist_lit.cli " + " ".join(args)}


def steps_per_epoch(model: str) -> int:
    import yaml

    return 55_000 // yaml.safe_load((ROOT / "configs" / f"{model}.yaml").read_text())["data"]["batch_size"]


def plain_run(model: str, seed: int, opts: argparse.Namespace) -> dict:
    """bench/speed.py's tutorial loop in a fresh process (``--one``), scored after every epoch."""
    cmd = [sys.executable, __file__, "--one", model, "--seeds", str(seed), "--data-dir", opts.data_dir]
    if opts.max_seconds:
        cmd += ["--max-seconds", str(opts.max_seconds)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"plain loop {model} seed {seed} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall": wall, "load": os.getloadavg()[0]}


PLAIN_KNOWS = {"net", "optimizer", "lr", "momentum", "warmup_steps", "betas", "scheduler", "pct_start"}


def plain_can_run(model: str) -> bool:
    """The plain loop reproduces the recipe's network, optimizer and schedule, nothing else: not ``best``'s
    augmentation or weight averaging, so such a recipe has no plain-loop row."""
    import yaml

    recipe = yaml.safe_load((ROOT / "configs" / f"{model}.yaml").read_text())
    extras = recipe.get("data", {}).get("augment") or recipe["trainer"].get("callbacks")
    return set(recipe["model"]) <= PLAIN_KNOWS and not extras


def plain_in_process(model: str, seed: int, opts: argparse.Namespace) -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    import yaml
    from speed import tutorial_loop

    cfg = yaml.safe_load((ROOT / "configs" / f"{model}.yaml").read_text())
    epochs, limit = cfg["trainer"]["max_epochs"], cfg["trainer"].get("limit_train_batches", 1.0)
    steps = None if limit == 1.0 else int(-(-60_000 // cfg["data"]["batch_size"]) * limit)  # the recipe's share
    curve: list[dict] = []

    def after_epoch(epoch: int, seconds: float, acc: float) -> bool:
        curve.append({"epoch": epoch, "seconds": seconds, "test_acc": acc})
        return acc >= STOP_AT

    result = tutorial_loop(model, epochs, steps, opts.data_dir, seed, after_epoch, opts.max_seconds)
    return {"side": "plain loop", "model": model, "seed": seed, "curve": curve, "acc": result["acc"],
            "seconds": result["seconds"], "epochs": result["samples"] / 60_000}


def first_reached(run: dict, threshold: float) -> float | None:
    return next((point["seconds"] for point in run["curve"] if point["test_acc"] >= threshold), None)


def cell(runs: list[dict], threshold: float, cap: float | None) -> str:
    """Mean training seconds to the threshold over the runs that reached it, and how many did."""
    times = [t for t in (first_reached(r, threshold) for r in runs) if t is not None]
    if not times:
        longest = max(r["seconds"] for r in runs)
        return f"not in {longest:.0f} s" + (" (capped)" if cap and longest >= cap else "")
    text = f"{statistics.mean(times):.1f}" + (f" ± {statistics.stdev(times):.1f}" if len(times) > 1 else "")
    if cap and max(times) >= cap:  # first seen at the evaluation the cap forced: reached somewhere before it
        text = f"≤ {text} (at the cap)"
    return text + (f" ({len(times)} of {len(runs)})" if len(runs) > 1 else "")


def mean_sd(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    values = [scale * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="recipes (default: every one in configs/, best included once it "
                                                  "exists)")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0], help="seeds for every recipe but fast")
    parser.add_argument("--fast-seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    parser.add_argument("--max-seconds", type=float, help="cap on each run's training seconds")
    parser.add_argument("--no-plain", nargs="*", default=[], help="recipes whose plain loop is not run")
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "TIME_TO_ACCURACY.md"))
    parser.add_argument("--merge", action="store_true",
                        help="keep the recipes of the last run's .json beside --out and add (or redo) these")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.one:
        print(json.dumps(plain_in_process(opts.one, opts.seeds[0], opts)))
        return
    models = opts.only or [m for m in RECIPES if (ROOT / "configs" / f"{m}.yaml").exists()]

    raw = Path(opts.out).with_suffix(".json")
    saved = json.loads(raw.read_text()) if opts.merge and raw.exists() else {"commands": [], "results": {}}
    command = " ".join(["python bench/time_to_accuracy.py", *sys.argv[1:]])
    saved["commands"].append({"command": command, "models": models, "max_seconds": opts.max_seconds})
    for model in models:
        sides: dict[str, list[dict]] = {"mnist_lit": [], "plain loop": []}
        for seed in opts.fast_seeds if model == "fast" else opts.seeds:
            sides["mnist_lit"].append(mnist_lit_run(model, seed, opts))
            print(json.dumps(sides["mnist_lit"][-1]), flush=True)
            if model not in opts.no_plain and plain_can_run(model):
                sides["plain loop"].append(plain_run(model, seed, opts))
                print(json.dumps(sides["plain loop"][-1]), flush=True)
            saved["results"][model] = sides  # after every seed: a long run that is stopped still reports
            raw.write_text(json.dumps(saved, indent=1))
            report(saved, Path(opts.out))


def report(saved: dict, out: Path) -> None:
    """Writes the Markdown table of every recipe measured so far."""
    import torch

    results: dict[str, dict[str, list[dict]]] = saved["results"]
    cap = min((c["max_seconds"] for c in saved["commands"] if c["max_seconds"]), default=None)
    lines = [
        "# Time to accuracy: mnist_lit's recipes against the tutorials' plain loops",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, CPU only "
        f"(the Load column says whether other work ran beside a run); torch {torch.__version__}, lightning "
        f"{L.__version__}, Python {platform.python_version()}.",
        "",
        "Produced by: " + "; ".join(f"`{c['command']}`" for c in saved["commands"])
        + (" (where a command was run more than once for a recipe, the last run's figures are shown)."
           if len(saved["commands"]) > 1 else "."),
        "",
        "Seconds of training (evaluation passes excluded) until the official test accuracy first reaches each "
        "threshold; mean ± sd over the seeds that reached it. Final accuracy: mnist_lit's is the best checkpoint "
        "as the CLI prints it (selected as the recipe says), the plain loop's the network after its last epoch. "
        "Command: the whole process's wall time. Stopped at the recipe's epochs, at 99.5 % or at the cap on "
        "training seconds, where both sides are scored once more: a threshold first seen there reads \"≤ cap (at "
        "the cap)\" (it was reached somewhere in the last stretch) and gives no ratio. Load: the highest "
        "1-minute load average at the end of a run (2 cores: above 2, other work was running beside it and the "
        "times are inflated).",
        "",
        "| recipe | side | seeds | epochs of data | to 98 % | to 99 % | to 99.5 % | final test acc | command s "
        "| load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for model, sides in results.items():
        for side, runs in sides.items():
            if not runs:
                continue
            seeds = ", ".join(str(r["seed"]) for r in runs)
            lines.append(
                f"| {model} | {side} | {seeds} | {mean_sd([r['epochs'] for r in runs])} "
                f"| {' | '.join(cell(runs, t, cap) for t in THRESHOLDS)} "
                f"| {mean_sd([r['acc'] for r in runs], 100)} % | {mean_sd([r['wall'] for r in runs], digits=1)} "
                f"| {max(r['load'] for r in runs):.1f} |")
        for threshold in reversed(THRESHOLDS if sides["plain loop"] else ()):
            lit = [first_reached(r, threshold) for r in sides["mnist_lit"]]
            plain = [first_reached(r, threshold) for r in sides["plain loop"]]
            if None not in lit and None not in plain and not (cap and max(lit + plain) >= cap):
                lit_s, plain_s = statistics.mean(lit), statistics.mean(plain)
                ratios.append(f"| {model} | {100 * threshold:g} % | {plain_s:.1f} | {lit_s:.1f} "
                              f"| **{lit_s / plain_s:.2f}** |")
                break
    to_99 = sorted((statistics.mean(times), model, side) for model, sides in results.items()
                   for side, runs in sides.items()
                   if runs and None not in (times := [first_reached(r, 0.99) for r in runs]))
    lines += [
        "",
        "Headline: training seconds to the highest threshold both sides reached on every seed before the cap, "
        "mnist_lit / plain loop (< 1: mnist_lit gets there sooner).",
        "",
        "| recipe | threshold | plain loop s | mnist_lit s | ratio |",
        "|---|---|---|---|---|",
        *ratios,
        "",
        "Every row that reached 99 % on all its seeds, soonest first (mean training seconds): "
        + ", ".join(f"{model} {side} {seconds:.1f} s" for seconds, model, side in to_99) + ".",
        "",
        "Commands (mnist_lit side; seeds as above):",
        "",
        *sorted({f"- `{r['command']}`" for sides in results.values() for r in sides["mnist_lit"][:1]}),
    ]
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()

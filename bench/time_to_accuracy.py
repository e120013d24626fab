"""Training seconds to 98 / 99 / 99.5 % test accuracy: each recipe's CLI run against the tutorials' loop of it.

    python -m bench.time_to_accuracy --max-seconds 150           # every recipe: bench/TIME_TO_ACCURACY.md (+ .json)
    python -m bench.time_to_accuracy --only mlp --seeds 0 1 2 --out /tmp/TTA.md
"""

import json
import os
import statistics
import time
from pathlib import Path

import lightning as L

from bench import common
from bench.common import arguments, fit_cli, fresh, header, mean_sd, option, recipe, table, this_run, write

THRESHOLDS = (0.98, 0.99, 0.995)
RECIPES = ["lenet5", "lenet", "cnn3block", "cnn3block5x5", "mlp", "bncnn", "fast", "best"]


class AccuracyClock(L.Callback):
    """Per evaluation, a JSON line: training seconds so far, val and test accuracy; a stop at 99.5 % or the cap."""

    def __init__(self) -> None:
        self.out, self.max_seconds = Path(os.environ["BENCH_RECORDS"]), float(os.environ.get("TTA_MAX_SECONDS", "inf"))
        self.trained, self.since = 0.0, None

    def on_train_start(self, trainer, pl_module) -> None:
        self.since = time.perf_counter()

    def _seconds(self) -> float:
        return self.trained + (time.perf_counter() - self.since if self.since is not None else 0.0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        trainer.should_stop |= self._seconds() > self.max_seconds

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and self.since is not None:
            self.trained, self.since = self._seconds(), None

    def on_validation_end(self, trainer, pl_module) -> None:  # before ModelCheckpoint's: its writes count as training
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        record = {"epoch": trainer.current_epoch, "step": trainer.global_step, "seconds": self.trained,
                  **{f"{split}_acc": float(trainer.callback_metrics[f"{split}/acc"]) for split in ("val", "test")}}
        with self.out.open("a") as f:
            f.write(json.dumps(record) + "\n")
        trainer.should_stop |= record["test_acc"] >= THRESHOLDS[-1] or self.trained > self.max_seconds
        self.since = time.perf_counter()


def lit_run(model: str, seed: int, opts) -> dict:
    run = fit_cli(model, seed, "--trainer.callbacks+=bench.time_to_accuracy.AccuracyClock", data_dir=opts.data_dir,
                  env={"TTA_MAX_SECONDS": str(opts.max_seconds or "inf")})
    curve, per_epoch = run["records"], (60_000 - 5_000) // recipe(model)["data"]["batch_size"]
    return {"curve": curve, "acc": run["acc"], "wall": run["seconds"], "seconds": curve[-1]["seconds"],
            "command": run["command"], "epochs": curve[-1]["step"] / per_epoch}


def plain_run(model: str, seed: int, opts) -> dict | None:
    cfg = recipe(model)  # a recipe the loop cannot reproduce has no plain row
    if set(cfg["model"]) - {"net", "normalization", "lr", *common.PLAIN_DEFAULTS} or cfg["data"].get("augment") \
            or cfg["trainer"].get("callbacks"):
        return None
    limit = cfg["trainer"].get("limit_train_batches", 1.0)
    steps = None if limit == 1.0 else int(-(-60_000 // cfg["data"]["batch_size"]) * limit)  # the recipe's share
    start = time.perf_counter()
    run = fresh("bench.common:plain_loop", name=model, seed=seed, epochs=cfg["trainer"]["max_epochs"], steps=steps,
                data_dir=opts.data_dir, max_seconds=opts.max_seconds, stop_at=THRESHOLDS[-1])
    return {"curve": run["curve"], "acc": run["acc"], "wall": time.perf_counter() - start, "seconds": run["seconds"],
            "epochs": run["samples"] / 60_000}


def first_reached(run: dict, threshold: float) -> float | None:
    return next((point["seconds"] for point in run["curve"] if point["test_acc"] >= threshold), None)


def cell(runs: list[dict], threshold: float, cap: float | None) -> str:
    """Mean training seconds to the threshold over the runs that reached it, and how many did."""
    times = [t for t in (first_reached(r, threshold) for r in runs) if t is not None]
    if not times:
        longest = max(r["seconds"] for r in runs)
        return f"not in {longest:.0f} s" + (" (capped)" if cap and longest >= cap else "")
    at_cap = cap and max(times) >= cap  # first seen at the evaluation the cap forced: reached somewhere before it
    text = f"≤ {mean_sd(times, digits=1)} (at the cap)" if at_cap else mean_sd(times, digits=1)
    return text + (f" ({len(times)} of {len(runs)})" if len(runs) > 1 else "")


def report(saved: dict, out: Path) -> None:
    cap = min((c["max_seconds"] for c in saved["commands"] if c["max_seconds"]), default=None)
    lines = header(
        "Time to accuracy: mnist_lit's recipes against the tutorials' plain loop",
        "Seconds of training (evaluation passes excluded) until the official test accuracy first reaches each "
        "threshold; mean ± sd over the seeds that reached it. Final accuracy: mnist_lit's is the checkpoint the CLI "
        "prints (selected as the recipe says), the plain loop's the network after its last epoch. A threshold first "
        "seen at the evaluation the cap forced reads \"≤ … (at the cap)\" and gives no ratio. Load: the highest "
        "1-minute load average at the end of a run (above the number of cores, other work ran beside it).",
        saved["commands"],
    ) + table("recipe", "side", "seeds", "epochs of data", "to 98 %", "to 99 %", "to 99.5 %", "final test acc",
              "command s", "load")
    ratios = []
    for model, sides in saved["results"].items():
        for side, runs in sides.items():
            if runs:
                lines.append(f"| {model} | {side} | {', '.join(str(r['seed']) for r in runs)} "
                             f"| {mean_sd([r['epochs'] for r in runs])} "
                             f"| {' | '.join(cell(runs, t, cap) for t in THRESHOLDS)} "
                             f"| {mean_sd([r['acc'] for r in runs], 100)} % "
                             f"| {mean_sd([r['wall'] for r in runs], digits=1)} | {max(r['load'] for r in runs):.1f} |")
        for threshold in reversed(THRESHOLDS if sides["plain loop"] else ()):
            lit, plain = ([first_reached(r, threshold) for r in sides[side]] for side in ("mnist_lit", "plain loop"))
            if None not in lit + plain and not (cap and max(lit + plain) >= cap):
                lit_s, plain_s = statistics.mean(lit), statistics.mean(plain)
                ratios.append(f"| {model} | {100 * threshold:g} % | {plain_s:.1f} | {lit_s:.1f} "
                              f"| **{lit_s / plain_s:.2f}** |")
                break
    lines += ["", ("Headline: training seconds to the highest threshold both sides reached on every seed before the "
                   "cap, mnist_lit / plain loop (< 1: mnist_lit gets there sooner)."), "",
              *table("recipe", "threshold", "plain loop s", "mnist_lit s", "ratio"), *ratios, "",
              ("The mnist_lit side runs `python -m mnist_lit.cli fit --model NAME --seed_everything S "
               "--trainer.enable_progress_bar false --trainer.callbacks+=bench.time_to_accuracy.AccuracyClock`.")]
    write(out, lines)


def main() -> None:
    opts = arguments(__doc__, option("--only", nargs="*", default=RECIPES, help="recipes (default: all)"),
                     option("--seeds", type=int, nargs="*", help="seeds for every recipe (default: 0; fast: 0–4)"),
                     option("--max-seconds", type=float, help="cap on each run's training"), out="TIME_TO_ACCURACY.md")
    raw = Path(opts.out).with_suffix(".json")
    saved = {"commands": [{**this_run(), "models": opts.only, "max_seconds": opts.max_seconds}], "results": {}}
    for model in opts.only:
        sides: dict[str, list[dict]] = {"mnist_lit": [], "plain loop": []}
        for seed in opts.seeds or ([0, 1, 2, 3, 4] if model == "fast" else [0]):
            for side, run in (("mnist_lit", lit_run), ("plain loop", plain_run)):
                if result := run(model, seed, opts):
                    sides[side].append({"seed": seed, **result, "load": os.getloadavg()[0]})
            saved["results"][model] = sides  # after every seed: a long run that is stopped still reports
            raw.write_text(json.dumps(saved, indent=1))
            report(saved, Path(opts.out))


if __name__ == "__main__":
    main()

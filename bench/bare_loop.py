"""mnist_lit's epoch (``trainer_fit`` and the CLI) against a bare PyTorch loop with its tricks and no Lightning.

    python -m bench.bare_loop                          # mlp, cnn3block, fast; seeds 0 1; 2 epochs: bench/BARE_LOOP.md
    python -m bench.bare_loop --only fast --seeds 0 1 2
"""

import json
import os
import statistics
import time

import lightning as L

from bench.common import arguments, fit_cli, fresh, header, option, table, trainer_fit, write

SIDES = ("bare", "Trainer", "CLI")


class EpochClock(L.Callback):
    """Each training epoch's seconds, its first step to the end of its last; appended to $BENCH_RECORDS if set."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.last = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(self.last - self.start)
        if os.environ.get("BENCH_RECORDS"):
            with open(os.environ["BENCH_RECORDS"], "a") as f:
                f.write(json.dumps(self.seconds[-1]) + "\n")


def trainer_side(name: str, seed: int, epochs: int, data_dir: str) -> list[float]:
    trainer_fit(name, seed, epochs, data_dir=data_dir, callbacks=(clock := EpochClock(),), test=False)
    return clock.seconds


def epochs_of(side: str, name: str, seed: int, epochs: int, data_dir: str) -> list[float]:
    run = {"name": name, "seed": seed, "epochs": epochs, "data_dir": data_dir}
    if side != "CLI":
        return (fresh("bench.common:plain_loop", bare=True, **run)["epochs"] if side == "bare"
                else fresh("bench.bare_loop:trainer_side", **run))
    return fit_cli(name, seed, "--trainer.max_epochs", str(epochs), "--trainer.limit_train_batches", "1.0",  # all
                   "--trainer.callbacks+=bench.bare_loop.EpochClock", data_dir=data_dir, bar=True)["records"]


def main() -> None:
    opts = arguments(__doc__, option("--only", nargs="*", default=["mlp", "cnn3block", "fast"]),
                     option("--seeds", type=int, nargs="*", default=[0, 1]), option("--epochs", type=int, default=2),
                     out="BARE_LOOP.md")
    rows, loads = [], []
    for net in opts.only:
        epochs: dict[str, list[float]] = {side: [] for side in SIDES}
        for seed in opts.seeds:
            for side in SIDES:
                epochs[side] += epochs_of(side, net, seed, opts.epochs, opts.data_dir)
            print(net, seed, {side: [round(s, 2) for s in v] for side, v in epochs.items()}, flush=True)
            loads.append(os.getloadavg()[0])
        m = {side: statistics.median(v) for side, v in epochs.items()}
        rows.append(f"| {net} | {m['bare']:.2f} | {m['Trainer']:.2f} | {m['CLI']:.2f} "
                    f"| **{m['Trainer'] / m['bare']:.3f}** | **{m['CLI'] / m['bare']:.3f}** | "
                    + "; ".join(" ".join(f"{s:.2f}" for s in epochs[side]) for side in SIDES) + " |")
    write(opts.out, header(
        "mnist_lit against a bare PyTorch loop",
        f"{opts.epochs} epochs per run, seeds {', '.join(map(str, opts.seeds))}; seconds per epoch: the median of the "
        f"{opts.epochs * len(opts.seeds)} epochs per side. 1-minute load average after each seed's runs (above the "
        f"number of cores, other work ran beside them): {', '.join(f'{x:.1f}' for x in loads)}.",
    ) + table("network", "bare s/epoch", "Trainer s/epoch", "CLI s/epoch", "Trainer / bare", "CLI / bare",
              "every epoch: bare; Trainer; CLI") + rows)


if __name__ == "__main__":
    main()

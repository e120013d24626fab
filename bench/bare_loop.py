"""How close mnist_lit comes to the limit: its epoch against a bare PyTorch loop with every trick it uses and no
Lightning; same network, recipe, data split, batch-order rule and seed.

    python -m bench.bare_loop                          # mlp, cnn3block, fast; seeds 0 1; 2 epochs: bench/BARE_LOOP.md
    python -m bench.bare_loop --only fast --seeds 0 1 2

bare: ``bench.common.plain_loop(bare=True)``. Trainer: ``bench.common.trainer_fit``. CLI: ``fit --model NAME`` as a
user runs it (TensorBoard, checkpoints, progress bar, callbacks, an evaluation after each epoch). An epoch is timed
from its first step to the end of its last (for mnist_lit by ``EpochClock``), so start-up and evaluation are not in
it. Each run is a fresh process; the sides take turns, seed by seed.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time

import lightning as L

from bench.common import fit_cli, fresh, header, parser, table, trainer_fit, write

SIDES = ("bare", "Trainer", "CLI")


class EpochClock(L.Callback):
    """Each training epoch's seconds, start to end of its last step; also appended to $EPOCH_CLOCK_OUT if set."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.last = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(self.last - self.start)
        if os.environ.get("EPOCH_CLOCK_OUT"):
            with open(os.environ["EPOCH_CLOCK_OUT"], "a") as f:
                f.write(json.dumps(self.seconds[-1]) + "\n")


def trainer_side(name: str, seed: int, epochs: int, data_dir: str) -> list[float]:
    clock = EpochClock()
    trainer_fit(name, seed, epochs, data_dir=data_dir, callbacks=(clock,), test=False)
    return clock.seconds


def epochs_of(side: str, name: str, seed: int, epochs: int, data_dir: str) -> list[float]:
    run = {"name": name, "seed": seed, "epochs": epochs, "data_dir": data_dir}
    if side != "CLI":
        return (fresh("bench.common:plain_loop", bare=True, **run)["epochs"] if side == "bare"
                else fresh("bench.bare_loop:trainer_side", **run))
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
        fit_cli(["--model", name, "--seed_everything", str(seed), "--trainer.max_epochs", str(epochs),
                 "--trainer.limit_train_batches", "1.0",  # whole epochs, as the other sides
                 "--trainer.callbacks+=bench.bare_loop.EpochClock"], data_dir, env={"EPOCH_CLOCK_OUT": out.name})
        return [json.loads(line) for line in out.read().splitlines()]


def main() -> None:
    options = parser(__doc__, "BARE_LOOP.md")
    options.add_argument("--only", nargs="*", default=["mlp", "cnn3block", "fast"])
    options.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    options.add_argument("--epochs", type=int, default=2)
    opts = options.parse_args()

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

"""How close mnist_lit comes to the limit: its epoch against a bare PyTorch loop with every trick it uses and no
Lightning, same network, recipe, data split, batch order rule and seed.

    python bench/bare_loop.py                           # mlp, cnn3block, fast; seeds 0 1; 2 epochs each
    python bench/bare_loop.py --only fast --seeds 0 1 2

bare: the training split as one uint8 tensor in memory, a batch by one indexing operation, normalization per
batch, channels_last for convolutions, a foreach optimizer (and the recipe's warm-up or OneCycle), no .item() or
any other sync per step, no metrics. mnist_lit: ``Trainer.fit`` as bench/speed.py runs it (no logger, checkpoint,
progress bar or evaluation), and the CLI as a user runs it (``fit --model NAME``: TensorBoard logger, checkpoints,
progress bar, callbacks, evaluation after each epoch). Seconds per epoch are timed from the epoch's first step to
its last (a callback's on_train_epoch_start/end for mnist_lit), so start-up and evaluation are not in them. Each
run is a fresh process; the sides alternate, seed by seed. Writes bench/BARE_LOOP.md.
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
sys.path.insert(0, str(ROOT / "bench"))
from speed import recipe  # noqa: E402

SIDES = ("bare", "trainer", "cli")


class EpochClock(L.Callback):
    """Appends each training epoch's seconds, from its start to the end of its last step, to $EPOCH_CLOCK_OUT (one
    JSON number a line). Lightning validates before on_train_epoch_end, hence the last step's end."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.last = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        with open(os.environ["EPOCH_CLOCK_OUT"], "a") as f:
            f.write(json.dumps(self.last - self.start) + "\n")


def bare(net_name: str, epochs: int, data_dir: str, seed: int) -> list[float]:
    import torch
    import torch.nn.functional as F
    from torchvision.datasets import MNIST

    from mnist_lit.nets import build_net
    from mnist_lit.normalization import normalize

    cfg = recipe(net_name)
    hp = {"optimizer": "adam", "momentum": 0.0, "weight_decay": 0.0, "warmup_steps": 0, "betas": (0.9, 0.999),
          "scheduler": "none", "pct_start": 0.25, **cfg["model"]}
    batch, normalization = cfg["data"]["batch_size"], cfg["data"]["normalization"]
    torch.manual_seed(seed)
    train = MNIST(data_dir, train=True)
    order = torch.randperm(len(train.targets), generator=torch.Generator().manual_seed(0))  # mnist_lit's split
    images, labels = train.data[order[5_000:]], train.targets[order[5_000:]]
    net = build_net(hp["net"])
    conv = any(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    if conv:
        net.to(memory_format=torch.channels_last)
    if hp["optimizer"] == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=hp["lr"], momentum=hp["momentum"], foreach=True)
    else:
        opt = torch.optim.Adam(net.parameters(), lr=hp["lr"], betas=tuple(hp["betas"]), foreach=True)
    steps = len(labels) // batch
    if hp["scheduler"] == "onecycle":
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp["lr"], total_steps=epochs * steps,
                                                       pct_start=hp["pct_start"], cycle_momentum=False)
    elif hp["warmup_steps"]:
        schedule = torch.optim.lr_scheduler.LinearLR(opt, 1 / hp["warmup_steps"], 1.0, hp["warmup_steps"])
    else:
        schedule = None
    shuffle = torch.Generator()
    seconds = []
    for epoch in range(epochs):
        shuffle.manual_seed(seed + epoch)
        start = time.perf_counter()
        perm = torch.randperm(len(labels), generator=shuffle)
        for i in range(steps):
            index = perm[i * batch:(i + 1) * batch]
            x = normalize(images[index], normalization)
            if conv:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(net(x), labels[index])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if schedule:
                schedule.step()
        seconds.append(time.perf_counter() - start)
    return seconds


def trainer(net_name: str, epochs: int, data_dir: str, seed: int) -> list[float]:
    from mnist_lit.data import MNISTDataModule
    from mnist_lit.module import MNISTClassifier

    cfg = recipe(net_name)
    L.seed_everything(seed, verbose=False)
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
        os.environ["EPOCH_CLOCK_OUT"] = out.name
        trainer = L.Trainer(max_epochs=epochs, limit_val_batches=0, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, callbacks=[EpochClock()])
        trainer.fit(MNISTClassifier(**cfg["model"]), datamodule=MNISTDataModule(data_dir=data_dir, **cfg["data"]))
        return [json.loads(line) for line in out.read().splitlines()]


def cli(net_name: str, epochs: int, data_dir: str, seed: int) -> list[float]:
    with tempfile.TemporaryDirectory() as cwd:
        out = Path(cwd) / "epochs.jsonl"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "EPOCH_CLOCK_OUT": str(out)}
        done = subprocess.run([sys.executable, "-m", "mnist_lit.cli", "fit", "--model", net_name, "--seed_everything",
                               str(seed), "--trainer.max_epochs", str(epochs), "--data.data_dir", data_dir,
                               "--trainer.limit_train_batches", "1.0",  # whole epochs, as the other sides
                               "--trainer.callbacks+=bench.bare_loop.EpochClock"],
                              cwd=cwd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        return [json.loads(line) for line in out.read_text().splitlines()]


def measure(side: str, net: str, opts: argparse.Namespace, seed: int) -> list[float]:
    cmd = [sys.executable, __file__, "--one", side, "--only", net, "--epochs", str(opts.epochs), "--seeds", str(seed),
           "--data-dir", opts.data_dir]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{side} {net} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=["mlp", "cnn3block", "fast"])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "BARE_LOOP.md"))
    parser.add_argument("--one", choices=SIDES, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.one:
        run = {"bare": bare, "trainer": trainer, "cli": cli}[opts.one]
        print(json.dumps(run(opts.only[0], opts.epochs, opts.data_dir, opts.seeds[0])))
        return

    import torch

    rows, loads = [], []
    for net in opts.only:
        epochs: dict[str, list[float]] = {side: [] for side in SIDES}
        for seed in opts.seeds:
            for side in SIDES:
                epochs[side] += measure(side, net, opts, seed)
            print(net, seed, {side: [round(s, 2) for s in v] for side, v in epochs.items()}, flush=True)
        loads.append(os.getloadavg()[0])
        rows.append((net, epochs))
    median = {net: {side: statistics.median(v) for side, v in epochs.items()} for net, epochs in rows}
    lines = [
        "# mnist_lit against a bare PyTorch loop",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, CPU only; "
        f"torch {torch.__version__}, lightning {L.__version__}, Python {platform.python_version()}.",
        "",
        f"Produced by: `{' '.join(['python bench/bare_loop.py', *sys.argv[1:]])}` ({opts.epochs} epochs per run, "
        f"seeds {', '.join(map(str, opts.seeds))}; the median of the {opts.epochs * len(opts.seeds)} epochs per side). "
        f"1-minute load average after each seed's runs (2 cores; above 2 other work ran beside them): "
        f"{', '.join(f'{x:.1f}' for x in loads)}.",
        "",
        "| network | bare s/epoch | Trainer s/epoch | CLI s/epoch | Trainer / bare | CLI / bare | every epoch: bare; "
        "Trainer; CLI |",
        "|---|---|---|---|---|---|---|",
    ]
    for net, epochs in rows:
        m = median[net]
        lines.append(f"| {net} | {m['bare']:.2f} | {m['trainer']:.2f} | {m['cli']:.2f} "
                     f"| **{m['trainer'] / m['bare']:.3f}** | **{m['cli'] / m['bare']:.3f}** | "
                     + "; ".join(" ".join(f"{s:.2f}" for s in epochs[side]) for side in SIDES) + " |")
    Path(opts.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

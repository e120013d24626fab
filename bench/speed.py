"""Side by side, in one run: each tutorial's plain PyTorch loop (a) against ``mnist_lit`` (b), same recipe.

    python bench/speed.py            # full: one epoch per network, every network, seeds 0–4
    python bench/speed.py --quick    # smoke run: 50 steps per network, seed 0

(a) is the tutorials' loop: ``torchvision.datasets.MNIST`` with per-sample ``ToTensor``/``Normalize``,
``DataLoader(batch_size=64, shuffle=True)``, the recipe's optimizer, ``zero_grad/backward/step``.
(b) is ``Trainer.fit`` on ``MNISTClassifier`` + ``MNISTDataModule`` with the same network, optimizer, learning
rate (and warm-up), batch size, seed and epochs. Each run is its own process, so peak memory is its own; a and b
alternate, seed by seed, so a change in the machine's load falls on both. One epoch of a small network is far from
converged and its test accuracy moves by points from seed to seed, so accuracy is compared over several seeds.
Training time excludes the test pass; both then score the 10,000 official test images. Writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
NETS = ["mlp", "lenet5", "lenet", "cnn3block", "bncnn"]


def recipe(net: str) -> dict:
    return yaml.safe_load((ROOT / "configs" / f"{net}.yaml").read_text())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tutorial_loop(net_name: str, epochs: int, steps: int | None, data_dir: str, seed: int,
                  after_epoch: Callable[[int, float, float], bool] | None = None, max_seconds: float | None = None,
                  ) -> dict:
    """The tutorial's loop with the recipe's settings. ``after_epoch(epoch, training seconds, test accuracy)`` is
    called after each epoch, its test pass not counted as training, and returns True to stop; ``max_seconds`` caps
    the training time (checked every step)."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from mnist_lit.normalization import NORMALIZATIONS
    from mnist_lit.nets import build_net

    cfg = recipe(net_name)
    hp = {"optimizer": "adam", "momentum": 0.0, "weight_decay": 0.0, "warmup_steps": 0, "betas": (0.9, 0.999),
          "scheduler": "none", "pct_start": 0.25, **cfg["model"]}
    mean, std = NORMALIZATIONS[cfg["data"]["normalization"]]
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
    torch.manual_seed(seed)
    train = datasets.MNIST(data_dir, train=True, transform=transform)
    test = datasets.MNIST(data_dir, train=False, transform=transform)
    loader = DataLoader(train, batch_size=cfg["data"]["batch_size"], shuffle=True)
    net = build_net(hp["net"])
    if hp["optimizer"] == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=hp["lr"], momentum=hp["momentum"])
    else:
        opt = torch.optim.Adam(net.parameters(), lr=hp["lr"], betas=tuple(hp["betas"]))
    if hp["scheduler"] == "onecycle":  # as tuomaso/train_mnist_fast's loop: OneCycleLR stepped every batch
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp["lr"], pct_start=hp["pct_start"],
                                                       total_steps=epochs * min(len(loader), steps or len(loader)),
                                                       cycle_momentum=False)
    elif hp["warmup_steps"]:
        schedule = torch.optim.lr_scheduler.LinearLR(opt, 1 / hp["warmup_steps"], 1.0, hp["warmup_steps"])
    else:
        schedule = None
    loss_fn = nn.CrossEntropyLoss()

    def test_accuracy() -> float:
        net.eval()
        correct = 0
        with torch.no_grad():
            for x, y in DataLoader(test, batch_size=1000):
                correct += (net(x).argmax(1) == y).sum().item()
        net.train()
        return correct / len(test)

    samples = 0
    start = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        for i, (x, y) in enumerate(loader):
            if steps is not None and i >= steps or max_seconds and time.perf_counter() - start > max_seconds:
                break
            opt.zero_grad()
            loss_fn(net(x), y).backward()
            opt.step()
            if schedule:
                schedule.step()
            samples += len(y)
        if after_epoch is not None:
            paused = time.perf_counter()
            stop = after_epoch(epoch, paused - start, test_accuracy())
            start += time.perf_counter() - paused  # the test pass is not training
            if stop:
                break
        if max_seconds and time.perf_counter() - start > max_seconds:
            break
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "samples": samples, "acc": test_accuracy(), "rss_mb": peak_rss_mb()}


def mnist_lit_fit(net_name: str, epochs: int, steps: int | None, data_dir: str, seed: int,
                  channels_last: bool = True, precision: str = "32-true", compile_net: bool = False,
                  drop_last: bool = True) -> dict:
    import lightning as L

    from mnist_lit.data import MNISTDataModule
    from mnist_lit.module import MNISTClassifier

    cfg = recipe(net_name)
    L.seed_everything(seed, verbose=False)
    dm = MNISTDataModule(data_dir=data_dir, **cfg["data"], drop_last=drop_last)
    model = MNISTClassifier(**cfg["model"], channels_last=channels_last)
    if compile_net:
        model.net.compile()  # in place: the state_dict keeps its keys; compile time counts as training time
    trainer = L.Trainer(max_epochs=epochs, limit_train_batches=steps, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        precision=precision)
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - start
    acc = trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"]
    samples = min(trainer.num_training_batches * cfg["data"]["batch_size"], len(dm.train_set)) * epochs
    return {"seconds": seconds, "samples": samples, "acc": acc, "rss_mb": peak_rss_mb()}


SIDES = {"a": tutorial_loop, "b": mnist_lit_fit,
         "b-contiguous": lambda *args: mnist_lit_fit(*args, channels_last=False),
         "b-bf16": lambda *args: mnist_lit_fit(*args, precision="bf16-mixed"),
         "b-compile": lambda *args: mnist_lit_fit(*args, compile_net=True)}
CONV_NETS = {"lenet5", "lenet", "cnn3block", "bncnn"}
OPTIONS = {"b-bf16": "`--trainer.precision bf16-mixed`", "b-compile": "`torch.compile` of the network"}


def measure(side: str, net: str, opts: argparse.Namespace, seed: int) -> dict:
    """One side of one network with one seed, in a fresh process."""
    cmd = [sys.executable, __file__, "--one", side, "--only", net, "--epochs", str(opts.epochs),
           "--seeds", str(seed), "--data-dir", opts.data_dir] + (["--quick"] if opts.quick else [])
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{side} {net} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def accuracy(runs: list[dict]) -> str:
    """Test accuracy in %: mean ± standard deviation over the seeds."""
    values = [100 * r["acc"] for r in runs]
    if len(values) == 1:
        return f"{values[0]:.2f} %"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} %"


def paired_gap(a: list[dict], b: list[dict]) -> str:
    """b − a test accuracy in points, seed by seed: the mean ± its standard error."""
    gaps = [100 * (rb["acc"] - ra["acc"]) for ra, rb in zip(a, b)]
    if len(gaps) == 1:
        return f"{gaps[0]:+.2f}"
    return f"{statistics.mean(gaps):+.2f} ± {statistics.stdev(gaps) / len(gaps) ** 0.5:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=NETS, help="networks to compare")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="50 steps per epoch: a smoke run, not figures")
    parser.add_argument("--seeds", type=int, nargs="*", help="one run per side and seed (default: 0–4; quick: 0)")
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument("--options-for", nargs="*", default=["mlp", "lenet5", "cnn3block"],
                        help="networks on which bf16-mixed and torch.compile are also measured (first seed only)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    parser.add_argument("--one", choices=SIDES, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    steps = 50 if opts.quick else None
    seeds = opts.seeds or ([0] if opts.quick else [0, 1, 2, 3, 4])

    if opts.one:
        print(json.dumps(SIDES[opts.one](opts.only[0], opts.epochs, steps, opts.data_dir, seeds[0])))
        return

    import lightning
    import torch

    rows, layout, options = [], [], []
    for net in opts.only:
        a, b = [], []
        for seed in seeds:
            a.append(measure("a", net, opts, seed))
            b.append(measure("b", net, opts, seed))
            print(net, seed, a[-1], b[-1], flush=True)
        rows.append((net, a, b))
        if net in CONV_NETS:
            layout.append((net, measure("b-contiguous", net, opts, seeds[0]), b[0]))
        if net in opts.options_for:
            options.append((net, b[0], {side: measure(side, net, opts, seeds[0]) for side in OPTIONS}))
    per_epoch = lambda r: r["seconds"] / opts.epochs  # noqa: E731
    median = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
    lines = [
        "# Speed: the tutorials' loops (a) against mnist_lit (b)",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, CPU only; torch {torch.__version__}, "
        f"lightning {lightning.__version__}, Python {platform.python_version()}.",
        "",
        f"Produced by: `{' '.join(['python bench/speed.py', *sys.argv[1:]])}` "
        f"({'quick: 50 steps per epoch' if opts.quick else f'{opts.epochs} epoch(s), full'}; "
        f"seeds {', '.join(map(str, seeds))}: one run of each side per seed, a and b alternating).",
        "",
        "Times, samples/s and b/a: the median run. Test accuracy: mean ± standard deviation over the seeds. b − a: "
        "the seed-by-seed difference in test accuracy (points), mean ± its standard error.",
        "",
        "| network | a s/epoch | b s/epoch | b/a | a samples/s | b samples/s | a peak RSS | b peak RSS "
        "| a test acc | b test acc | b − a |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for net, a, b in rows:
        sa, sb = median(a, "seconds"), median(b, "seconds")
        lines.append(
            f"| {net} | {sa / opts.epochs:.1f} | {sb / opts.epochs:.1f} | **{sb / sa:.3f}** "
            f"| {a[0]['samples'] / sa:,.0f} | {b[0]['samples'] / sb:,.0f} "
            f"| {max(r['rss_mb'] for r in a):,.0f} MB | {max(r['rss_mb'] for r in b):,.0f} MB "
            f"| {accuracy(a)} | {accuracy(b)} | {paired_gap(a, b)} |")
    lines += [
        "",
        f"What `channels_last` (on by default, `--model.channels_last false` turns it off) buys in (b), "
        f"seed {seeds[0]}:",
        "",
        "| network | b s/epoch, contiguous | b s/epoch, channels_last | ratio |",
        "|---|---|---|---|",
    ]
    lines += [f"| {net} | {per_epoch(c):.1f} | {per_epoch(b):.1f} | {b['seconds'] / c['seconds']:.3f} |"
              for net, c, b in layout]
    lines += [
        "",
        f"What the other options would buy in (b) (time relative to (b)'s seed-{seeds[0]} run above; < 1 is faster):",
        "",
        "| network | b s/epoch | " + " | ".join(f"{label}: s/epoch, ratio, test acc" for label in OPTIONS.values())
        + " |",
        "|---|---|" + "---|" * len(OPTIONS),
    ]
    lines += [f"| {net} | {per_epoch(b):.1f} | " + " | ".join(
        f"{per_epoch(r):.1f}, **{r['seconds'] / b['seconds']:.2f}**, {100 * r['acc']:.2f} %" for r in measured.values())
        + " |" for net, b, measured in options]
    Path(opts.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

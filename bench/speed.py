"""Side by side, in one run: each tutorial's plain PyTorch loop (a) against ``mnist_lit`` (b), same recipe.

    python bench/speed.py            # full: one epoch per network, every network
    python bench/speed.py --quick    # smoke run: 50 steps per network

(a) is the tutorials' loop: ``torchvision.datasets.MNIST`` with per-sample ``ToTensor``/``Normalize``,
``DataLoader(batch_size=64, shuffle=True)``, the recipe's optimizer, ``zero_grad/backward/step``.
(b) is ``Trainer.fit`` on ``MNISTClassifier`` + ``MNISTDataModule`` with the same network, optimizer, learning
rate (and warm-up), batch size, seed and epochs. Each side runs in its own process so peak memory is its own.
Training time excludes the test pass; both then score the 10,000 official test images. Writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
NETS = ["mlp", "lenet5", "lenet", "cnn3block", "bncnn"]


def recipe(net: str) -> dict:
    return yaml.safe_load((ROOT / "configs" / f"{net}.yaml").read_text())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tutorial_loop(net_name: str, epochs: int, steps: int | None, data_dir: str, seed: int) -> dict:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from mnist_lit.normalization import NORMALIZATIONS
    from mnist_lit.nets import build_net

    cfg = recipe(net_name)
    hp = {"optimizer": "adam", "momentum": 0.0, "weight_decay": 0.0, "warmup_steps": 0, **cfg["model"]}
    mean, std = NORMALIZATIONS[cfg["data"]["normalization"]]
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
    torch.manual_seed(seed)
    train = datasets.MNIST(data_dir, train=True, transform=transform)
    test = datasets.MNIST(data_dir, train=False, transform=transform)
    loader = DataLoader(train, batch_size=cfg["data"]["batch_size"], shuffle=True)
    net = build_net(net_name)
    if hp["optimizer"] == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=hp["lr"], momentum=hp["momentum"])
    else:
        opt = torch.optim.Adam(net.parameters(), lr=hp["lr"])
    warmup = (torch.optim.lr_scheduler.LinearLR(opt, 1 / hp["warmup_steps"], 1.0, hp["warmup_steps"])
              if hp["warmup_steps"] else None)
    loss_fn = nn.CrossEntropyLoss()
    samples = 0
    start = time.perf_counter()
    for _ in range(epochs):
        net.train()
        for i, (x, y) in enumerate(loader):
            if steps is not None and i >= steps:
                break
            opt.zero_grad()
            loss_fn(net(x), y).backward()
            opt.step()
            if warmup:
                warmup.step()
            samples += len(y)
    seconds = time.perf_counter() - start
    net.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(test, batch_size=1000):
            correct += (net(x).argmax(1) == y).sum().item()
    return {"seconds": seconds, "samples": samples, "acc": correct / len(test), "rss_mb": peak_rss_mb()}


def mnist_lit_fit(net_name: str, epochs: int, steps: int | None, data_dir: str, seed: int,
                  channels_last: bool = True, precision: str = "32-true", compile_net: bool = False) -> dict:
    import lightning as L

    from mnist_lit.data import MNISTDataModule
    from mnist_lit.module import MNISTClassifier

    cfg = recipe(net_name)
    L.seed_everything(seed, verbose=False)
    dm = MNISTDataModule(data_dir=data_dir, **cfg["data"])
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


def measure(side: str, net: str, opts: argparse.Namespace) -> dict:
    """One side of one network, in a fresh process."""
    cmd = [sys.executable, __file__, "--one", side, "--only", net, "--epochs", str(opts.epochs),
           "--seed", str(opts.seed), "--data-dir", opts.data_dir] + (["--quick"] if opts.quick else [])
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{side} {net} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=NETS, help="networks to compare")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="50 steps per epoch: a smoke run, not figures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument("--options-for", nargs="*", default=["mlp", "lenet5", "cnn3block"],
                        help="networks on which bf16-mixed and torch.compile are also measured")
    parser.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    parser.add_argument("--one", choices=SIDES, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    steps = 50 if opts.quick else None

    if opts.one:
        print(json.dumps(SIDES[opts.one](opts.only[0], opts.epochs, steps, opts.data_dir, opts.seed)))
        return

    import lightning
    import torch

    rows, layout, options = [], [], []
    for net in opts.only:
        a, b = measure("a", net, opts), measure("b", net, opts)
        rows.append((net, a, b))
        print(net, a, b, flush=True)
        if net in CONV_NETS:
            layout.append((net, measure("b-contiguous", net, opts), b))
        if net in opts.options_for:
            options.append((net, b, {side: measure(side, net, opts) for side in OPTIONS}))
    per_epoch = lambda r: r["seconds"] / opts.epochs  # noqa: E731
    lines = [
        "# Speed: the tutorials' loops (a) against mnist_lit (b)",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, CPU only; torch {torch.__version__}, "
        f"lightning {lightning.__version__}, Python {platform.python_version()}.",
        "",
        f"Produced by: `{' '.join(['python bench/speed.py', *sys.argv[1:]])}` "
        f"({'quick: 50 steps per epoch' if opts.quick else f'{opts.epochs} epoch(s), full'}).",
        "",
        "| network | a s/epoch | b s/epoch | b/a | a samples/s | b samples/s | a peak RSS | b peak RSS | a test acc | b test acc |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for net, a, b in rows:
        lines.append(
            f"| {net} | {per_epoch(a):.1f} | {per_epoch(b):.1f} | **{b['seconds'] / a['seconds']:.3f}** "
            f"| {a['samples'] / a['seconds']:,.0f} | {b['samples'] / b['seconds']:,.0f} "
            f"| {a['rss_mb']:,.0f} MB | {b['rss_mb']:,.0f} MB | {100 * a['acc']:.2f} % | {100 * b['acc']:.2f} % |")
    lines += [
        "",
        "What `channels_last` (on by default, `--model.channels_last false` turns it off) buys in (b):",
        "",
        "| network | b s/epoch, contiguous | b s/epoch, channels_last | ratio |",
        "|---|---|---|---|",
    ]
    lines += [f"| {net} | {per_epoch(c):.1f} | {per_epoch(b):.1f} | {b['seconds'] / c['seconds']:.3f} |"
              for net, c, b in layout]
    lines += [
        "",
        "What the other options would buy in (b) (time relative to (b) as run above; < 1 is faster):",
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

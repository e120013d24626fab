"""Why cnn3block5x5's recipe (the tutorial's Adam lr 0.005, plus the 100-step warm-up) ends below the tutorial's
98–99 %: one epoch, watched every few steps — mean and worst batch loss, largest gradient norm, test accuracy.

    python bench/cnn3block5x5_lr.py --seed 0                              # the recipe
    python bench/cnn3block5x5_lr.py --seed 0 --lr 0.001 --warmup 0        # Adam's default lr, no warm-up

Trains as mnist_lit does (the 55,000-image split, batches of 64 sliced from tensors in memory, channels_last,
foreach Adam, pixels 0–1), without Lightning; one torch thread, so that it can share a busy machine: times are not
figures. Intermediate test accuracies use the first 2,000 test images (``--eval-images``), the last one all 10,000.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.datasets import MNIST

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mnist_lit.nets import build_net  # noqa: E402
from mnist_lit.normalization import normalize  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=859, help="859 = one epoch of 64-image batches")
    parser.add_argument("--every", type=int, default=172)
    parser.add_argument("--eval-images", type=int, default=2000)
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    opts = parser.parse_args()
    torch.set_num_threads(1)

    train, test = MNIST(opts.data_dir, train=True), MNIST(opts.data_dir, train=False)
    order = torch.randperm(len(train.targets), generator=torch.Generator().manual_seed(0))  # mnist_lit's split
    images, labels = train.data[order[5_000:]], train.targets[order[5_000:]]

    def batch(x: torch.Tensor) -> torch.Tensor:
        return normalize(x, "unit").contiguous(memory_format=torch.channels_last)

    torch.manual_seed(opts.seed)
    net = build_net("cnn3block5x5").to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=opts.lr, foreach=True)
    warmup = torch.optim.lr_scheduler.LinearLR(opt, 1 / opts.warmup, 1.0, opts.warmup) if opts.warmup else None

    def test_accuracy(n: int) -> float:
        net.eval()
        with torch.no_grad():
            correct = sum((net(batch(test.data[i:i + 1000])).argmax(1) == test.targets[i:i + 1000]).sum().item()
                          for i in range(0, n, 1000))
        net.train()
        return correct / n

    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(opts.seed))
    window: list[tuple[float, float]] = []
    for step in range(opts.steps):
        index = perm[step * 64 % 54_976:][:64]
        loss = F.cross_entropy(net(batch(images[index])), labels[index])
        opt.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(net.parameters(), float("inf"))  # measures, does not clip
        opt.step()
        if warmup:
            warmup.step()
        window.append((loss.item(), norm.item()))
        if (step + 1) % opts.every == 0 or step + 1 == opts.steps:
            n = 10_000 if step + 1 == opts.steps else opts.eval_images
            losses, norms = zip(*window)
            print(json.dumps({"step": step + 1, "mean_loss": round(sum(losses) / len(losses), 4),
                              "max_loss": round(max(losses), 3), "max_grad_norm": round(max(norms), 1),
                              "test_acc": test_accuracy(n), "test_images": n}), flush=True)
            window = []


if __name__ == "__main__":
    main()

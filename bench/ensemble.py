"""How much averaging several checkpoints' probabilities would add: each checkpoint's accuracy on the official
10,000 test digits, then the accuracy of their mean probabilities (what closes the gap between one `best` network
and Deotte's 99.75 % ensemble; mnist_lit has no ensemble command, this only measures one).

    python bench/ensemble.py CKPT CKPT CKPT
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchvision.datasets import MNIST

from mnist_lit.predict import Predictor

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpts", nargs="+")
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    opts = parser.parse_args()
    test = MNIST(opts.data_dir, train=False)
    total = torch.zeros(len(test.targets), 10)
    for path in opts.ckpts:
        probabilities = Predictor.from_checkpoint(path).probabilities(test.data)
        total += probabilities
        print(f"{path}: {100 * (probabilities.argmax(1) == test.targets).float().mean():.2f} %")
    print(f"mean of the {len(opts.ckpts)}: {100 * (total.argmax(1) == test.targets).float().mean():.2f} %")


if __name__ == "__main__":
    main()

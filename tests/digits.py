"""Digits as users bring them, made from real MNIST test digits; ``bench/`` photographs its digits with these too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets import MNIST


def test_digits(data_dir: str | Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` MNIST test digits (uint8, N×28×28) and their labels, from ``data_dir/MNIST/raw``."""
    test = MNIST(str(data_dir), train=False)
    if count > len(test.data):
        raise ValueError(f"count {count}: the MNIST test set has only {len(test.data)} digits")
    return test.data[:count].numpy(), test.targets[:count].numpy()


def photograph(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """An MNIST digit as a user would photograph it: dark on white, 3–6× larger, off-centre on a larger canvas."""
    size = round(28 * rng.uniform(3, 6))
    ink = Image.fromarray(255 - digit).resize((size, size), Image.Resampling.BICUBIC)
    width, height = size + int(rng.integers(40, 300)), size + int(rng.integers(40, 300))
    canvas = Image.new("L", (width, height), 255)
    canvas.paste(ink, (int(rng.integers(0, width - size)), int(rng.integers(0, height - size))))
    return canvas

"""How each recipe feeds pixels to its network. Kept free of Lightning, so inference from a checkpoint needs only
torch (``predict-images`` starts in half the time)."""

from __future__ import annotations

from typing import Literal

import torch

Normalization = Literal["unit", "x255", "mnist", "half"]

# (mean, std) applied to pixels scaled to 0–1: the tutorials' ToTensor(), ToTensor()×255, Normalize((0.1307,),
# (0.3081,)) and Normalize((0.5,), (0.5,)).
NORMALIZATIONS: dict[str, tuple[float, float]] = {
    "unit": (0.0, 1.0),
    "x255": (0.0, 1 / 255),
    "mnist": (0.1307, 0.3081),
    "half": (0.5, 0.5),
}


def normalize(images: torch.Tensor, normalization: str) -> torch.Tensor:
    """uint8 images (N, 28, 28) or (N, 1, 28, 28) → float32 (N, 1, 28, 28) as the recipe's network expects."""
    mean, std = NORMALIZATIONS[normalization]
    x = images.reshape(-1, 1, *images.shape[-2:]).float()
    return (x / 255 - mean) / std

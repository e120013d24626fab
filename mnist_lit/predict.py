"""Inference from a ``.ckpt`` alone: the network and its normalization both come from the checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mnist_lit.data import normalize
from mnist_lit.module import MNISTClassifier


@dataclass
class Predictor:
    """A trained classifier plus the normalization it was trained with."""

    model: MNISTClassifier
    normalization: str

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> Predictor:
        """Load without running code from the file (``weights_only``); the data module's hparams give the recipe."""
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        normalization = checkpoint.get("datamodule_hyper_parameters", {}).get("normalization")
        if normalization is None:
            raise ValueError(f"{path} records no normalization: it was not trained with MNISTDataModule")
        model = MNISTClassifier.load_from_checkpoint(path, map_location=device, weights_only=True)
        return cls(model.eval(), normalization)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 MNIST-style images (white digit on black, 28×28), shape (N, 28, 28) or (N, 1, 28, 28) → (N, 10)."""
        x = normalize(images.to(self.model.device), self.normalization)
        return self.model(x).softmax(dim=1)

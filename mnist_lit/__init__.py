"""The classic MNIST tutorial networks, trained, compared and served with PyTorch Lightning.

``from mnist_lit import Predictor`` reads your own digits with a checkpoint (:mod:`mnist_lit.inference.predictor`);
the package's layout and its import rule are in docs/design.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Predictor"]


def __getattr__(name: str) -> Any:
    """``Predictor`` is imported on first use: ``import mnist_lit`` (every command starts with it) stays light."""
    if name == "Predictor":
        from mnist_lit.inference.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'mnist_lit' has no attribute {name!r}")

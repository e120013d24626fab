"""The rule that says "that is not a digit": a score of the network's output and the threshold it must reach.

Training picks the threshold on validation data and stores the rule in the checkpoint (``checkpoint["rejection"]``);
every reader (``Predictor``, ``predict-images``, ``serve``) applies the same rule. Checkpoints without one (all those
written before the rule existed) never reject, unless a reader is given a threshold.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

CHECKPOINT_KEY = "rejection"
SCORES = ("max_softmax",)


@dataclass(frozen=True)
class Rejection:
    """Images whose ``score`` is below ``threshold`` are not digits.

    ``max_softmax`` is the largest class probability: a network trained with outlier exposure spreads its
    probabilities evenly over the ten digits on images that are none of them (Hendrycks et al., ICLR 2019).
    """

    threshold: float
    score: str = "max_softmax"

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"unknown rejection score {self.score!r} (known: {', '.join(SCORES)})")
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold)
                and 0.0 <= self.threshold <= 1.0):
            raise ValueError(f"rejection threshold {self.threshold!r} is not a number in [0, 1]")

    @staticmethod
    def scores(probs: torch.Tensor) -> torch.Tensor:
        """(N, 10) probabilities → (N,) scores; higher reads more like a digit."""
        return probs.max(dim=1).values

    def is_digit(self, probs: torch.Tensor) -> torch.Tensor:
        """(N, 10) probabilities → (N,) booleans."""
        return self.scores(probs) >= self.threshold

    def as_dict(self) -> dict[str, Any]:
        """Plain data, as the checkpoint stores it (checkpoints are read with ``weights_only``)."""
        return asdict(self)


def recorded_rejection(checkpoint: dict[str, Any]) -> Rejection | None:
    """The checkpoint's rule, or None if it has none; ``ValueError`` (one line) if the entry is malformed."""
    entry = checkpoint.get(CHECKPOINT_KEY)
    if entry is None:
        return None
    if not isinstance(entry, dict) or "threshold" not in entry:
        raise ValueError(f"its {CHECKPOINT_KEY!r} entry is not a rule (a dict with a threshold)")
    return Rejection(threshold=entry["threshold"], score=entry.get("score", "max_softmax"))

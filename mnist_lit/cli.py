"""``mnist-lit`` and ``python -m mnist_lit.cli``: one entry point, one table of subcommands.

``fit``, ``validate``, ``test`` and ``predict`` are LightningCLI's (:mod:`mnist_lit.training.cli`); the others are
the inference and serving commands. A subcommand's module is imported only when it runs: Lightning alone takes
seconds to import, and LitServe's worker processes re-import the main module, which this keeps light.
"""

from __future__ import annotations

import sys
from importlib import import_module

COMMANDS = {
    "predict-images": "mnist_lit.inference.predict_images",  # your own image files
    "export": "mnist_lit.inference.export",  # a checkpoint as ONNX or TorchScript
    "serve": "mnist_lit.serving.server",  # an HTTP API and a drawing page
    "tune": "mnist_lit.training.tune",  # an Optuna search over a recipe's options, each trial a fit
}
LIGHTNING = "mnist_lit.training.cli"  # fit, validate, test, predict, and the top-level --help


def main(argv: list[str] | None = None) -> int:
    """Run the subcommand named first in ``argv`` (default ``sys.argv[1:]``); returns its exit status."""
    argv = sys.argv[1:] if argv is None else argv
    command = COMMANDS.get(argv[0]) if argv else None
    if command is None:
        return import_module(LIGHTNING).main(argv)
    return import_module(command).main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())

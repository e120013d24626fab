"""``python -m mnist_lit.cli export --ckpt PATH --format onnx|torchscript [--out FILE]``: a checkpoint for deployment.

The exported model (the same contract in both formats)
------------------------------------------------------
input ``pixels``: **uint8 pixels 0–255**, shape (N, 1, 28, 28), N any batch size, MNIST-style (white digit on black,
centred; ``mnist_lit.data.preprocess.to_mnist`` makes such images from photos). The checkpoint's normalization (unit,
x255, mnist or half) is part of the exported graph, so nothing is done to the pixels beforehand. TorchScript also
accepts float32 0–255 pixels (it casts); the ONNX graph declares uint8.

output ``logits``: float32 (N, 10). ``softmax`` gives the probabilities, ``argmax`` the digit.

Neither file needs Lightning or ``mnist_lit`` to run: ``torch.jit.load`` (torch alone) for TorchScript, and
``onnxruntime`` (or any ONNX runtime) for ONNX.

Formats
-------
``torchscript`` (default file ``<checkpoint stem>.pt``): ``torch.jit.script``, saved with ``torch.jit.save``. torch
2.14 marks TorchScript deprecated: ``torch.jit.load`` prints a FutureWarning.
``onnx`` (default file ``<checkpoint stem>.onnx``): ``torch.onnx.export(dynamo=True)``, the torch.export-based
exporter (it needs the ``onnx`` and ``onnxscript`` packages; the older TorchScript-based one is deprecated and is
going away). One self-contained file, no external-data file.

The check
---------
The exported file is loaded back from disk and run on the 10,000 MNIST test images next to the checkpoint (its
network on the checkpoint's normalization, as ``Predictor`` runs it). It passes if the predicted classes agree on
every image and the largest absolute difference of the *logits* is at most ``TOLERANCE`` (1e-3; float32 rounding is
about 1e-6 here). Only a file that passes is moved into place; ``--no-check`` writes without checking (and needs no
MNIST data).

The file is written atomically (a temporary file in the same folder, then renamed) and an existing file is only
replaced with ``--overwrite``.

Exit status: 0 written (and checked); 1 the check failed (nothing written), the file could not be written (a full
disk, a read-only folder: nothing written) or an unexpected error; 2 bad usage, a checkpoint that is missing, unreadable
or not this project's, an output that exists or whose folder does not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mnist_lit.common.atomic_files import Discard, replaced_on_success
from mnist_lit.common.errors import UserError, first_line, run_reporting_errors
from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.data.normalization import NORMALIZATIONS, normalize
from mnist_lit.inference.predictor import Predictor

PROG = "python -m mnist_lit.cli export"
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
TOLERANCE = 1e-3  # largest |Δ logit| accepted between the exported model and the checkpoint
INPUT_NAME, OUTPUT_NAME = "pixels", "logits"
CONTRACT = ("input 'pixels': uint8 0-255, shape (N, 1, 28, 28), white digit on black (normalization built in); "
            "output 'logits': float32 (N, 10)")
CHECK_BATCH = 1_000

# torch 2.14 deprecates all of torch.jit with a FutureWarning per call (several per script: one per submodule)
JIT_DEPRECATION = r"`torch\.jit\.\w+` is deprecated"


class PixelsToLogits(nn.Module):
    """The checkpoint's network behind its normalization: uint8 (or float) 0–255 pixels (N, 1, 28, 28) → logits."""

    def __init__(self, net: nn.Module, normalization: str) -> None:
        super().__init__()
        self.net = net
        self.mean, self.std = NORMALIZATIONS[normalization]
        self.normalization = normalization

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # the same operations, in the same order, as mnist_lit.data.normalization.normalize
        return self.net((pixels.to(torch.float32) / 255 - self.mean) / self.std)


def exportable(predictor: Predictor) -> PixelsToLogits:
    """The module that is exported, in eval mode on the CPU; the checkpoint's network itself is left untouched."""
    return PixelsToLogits(predictor.net, predictor.normalization).cpu().eval()


def metadata(predictor: Predictor, ckpt: str | Path) -> dict[str, str]:
    """What the file says about itself (ONNX metadata_props; a ``mnist_lit.json`` extra file in TorchScript)."""
    return {"mnist_lit.contract": CONTRACT, "mnist_lit.net": predictor.net_name,
            "mnist_lit.normalization": predictor.normalization, "mnist_lit.checkpoint": Path(ckpt).name}


def default_output(ckpt: str | Path, fmt: str) -> Path:
    """Next to the checkpoint, same stem: ``runs/x/best.ckpt`` → ``runs/x/best.onnx`` / ``runs/x/best.pt``."""
    return Path(ckpt).with_suffix(FORMATS[fmt])


def save_torchscript(module: PixelsToLogits, path: str | Path, meta: dict[str, str] | None = None) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=JIT_DEPRECATION, category=FutureWarning)
        scripted = torch.jit.script(module)
        with open(path, "wb") as f:  # a file object: a full disk then raises OSError(ENOSPC), not "unexpected pos"
            torch.jit.save(scripted, f, _extra_files={"mnist_lit.json": json.dumps(meta or {})})


def save_onnx(module: PixelsToLogits, path: str | Path, meta: dict[str, str] | None = None) -> None:
    try:
        import onnx  # noqa: F401  (torch imports both lazily, and fails deep inside the export without them)
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise UserError(f"--format onnx needs the onnx and onnxscript packages ({err}); "
                        "pip install 'mnist_lit[export]'") from None
    example = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)  # not 1: a size-1 dimension would be specialized
    program = torch.onnx.export(module, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False, verbose=False)
    program.model.metadata_props.update(meta or {})
    program.save(str(path), external_data=False)


SAVERS: dict[str, Callable[..., None]] = {"onnx": save_onnx, "torchscript": save_torchscript}


def load_exported(path: str | Path, fmt: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The exported file as a function: uint8 pixels (N, 1, 28, 28) → float32 logits (N, 10), both torch tensors.

    ONNX runs in onnxruntime with as many threads as torch uses (``torch.set_num_threads``, $OMP_NUM_THREADS).
    """
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=JIT_DEPRECATION, category=FutureWarning)
            scripted = torch.jit.load(str(path), map_location="cpu")

        @torch.no_grad()
        def run_torchscript(pixels: torch.Tensor) -> torch.Tensor:
            return scripted(pixels)

        return run_torchscript
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("checking an ONNX export needs onnxruntime: "
                        "pip install 'mnist_lit[export]' (or use --no-check)") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run_onnx(pixels: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: pixels.numpy()})[0])

    return run_onnx


@dataclass
class Comparison:
    """The exported model against the checkpoint on the same images."""

    max_abs_diff: float  # of the logits
    agree: int  # images whose predicted class is the same
    total: int
    correct: int  # images the exported model classifies correctly

    @property
    def ok(self) -> bool:
        return self.agree == self.total and self.max_abs_diff <= TOLERANCE

    def __str__(self) -> str:
        return (f"max |Δ logit| {self.max_abs_diff:.1e}, classes agree on {self.agree}/{self.total} test images "
                f"(exported model's test accuracy {self.correct / max(self.total, 1):.2%})")


@torch.no_grad()
def compare(predictor: Predictor, exported: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
            labels: torch.Tensor, batch_size: int = CHECK_BATCH) -> Comparison:
    """Run both on uint8 ``images`` (N, 28, 28) or (N, 1, 28, 28), ``batch_size`` at a time."""
    net = predictor.net.cpu().eval()
    pixels = images.reshape(-1, 1, 28, 28).cpu()
    max_diff, agree, correct = 0.0, 0, 0
    for start in range(0, len(pixels), batch_size):
        batch = pixels[start:start + batch_size]
        reference = net(normalize(batch, predictor.normalization)).float()
        logits = exported(batch).float()
        if logits.shape != reference.shape:
            raise UserError(f"the exported model returned shape {tuple(logits.shape)}, "
                            f"expected {tuple(reference.shape)}")
        max_diff = max(max_diff, (logits - reference).abs().max().item())  # NaN-safe below: nan > x is False
        if not torch.isfinite(logits).all():
            max_diff = float("inf")
        classes = logits.argmax(1)
        agree += (classes == reference.argmax(1)).sum().item()
        correct += (classes == labels[start:start + batch_size]).sum().item()
    return Comparison(max_diff, agree, len(pixels), correct)


def mnist_test_set(data_dir: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The 10,000 official MNIST test images (uint8) and labels, provisioned into ``data_dir`` if needed."""
    datamodule = MNISTDataModule(data_dir=data_dir)
    datamodule.prepare_data()  # ProvisionError (a UserError) when the files are neither there nor obtainable
    datamodule.setup("test")
    return datamodule.test_set.images, datamodule.test_set.labels


def output_target(ckpt: str | Path, fmt: str, out: str | None, overwrite: bool) -> Path:
    """Where to write, checked before any work is done: its folder exists, and it is not there (or may be replaced)."""
    target = Path(out) if out else default_output(ckpt, fmt)
    if not target.parent.is_dir():
        raise UserError(f"{target}: folder {target.parent} does not exist")
    if target.is_dir():
        raise UserError(f"{target}: is a folder; give a file name")
    if target.exists() and target.resolve() == Path(ckpt).resolve():
        raise UserError(f"{target}: is the checkpoint itself; give another --out")
    if target.exists() and not overwrite:
        raise UserError(f"{target} already exists; pass --overwrite to replace it")
    return target


def export(ckpt: str | Path, fmt: str, out: str | Path | None = None, overwrite: bool = False,
           data_dir: str | None = None, check: bool = True, report: Callable[[str], None] = print
           ) -> tuple[Path | None, Comparison | None]:
    """Export ``ckpt`` as ``fmt`` to ``out`` (default: beside it) and, if ``check``, compare on the MNIST test set.

    Raises ``UserError`` (``CheckpointError``, ``ProvisionError``, ...) for bad input. Returns the file written
    (None when the comparison failed: then nothing is written) and the comparison (None without ``check``).
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    predictor = Predictor.from_checkpoint(ckpt)  # CheckpointError: one line naming the file
    target = output_target(ckpt, fmt, None if out is None else str(out), overwrite)
    data = mnist_test_set(data_dir if data_dir is not None else os.environ.get("MNIST_LIT_DATA_DIR", "data")) \
        if check else None
    comparison = None
    with replaced_on_success(target) as tmp:
        try:
            SAVERS[fmt](exportable(predictor), tmp, metadata(predictor, ckpt))
        except UserError:
            raise
        except Exception as err:
            raise RuntimeError(f"{fmt} export of {ckpt} failed ({first_line(err)})") from err
        if data is not None:
            comparison = compare(predictor, load_exported(tmp, fmt), *data)
            report(str(comparison))
            if not comparison.ok:
                raise Discard
        if target.exists() and not overwrite:  # it appeared while we were exporting
            raise UserError(f"{target} already exists; pass --overwrite to replace it")
    if comparison is not None and not comparison.ok:
        return None, comparison
    return target, comparison


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a checkpoint's network as ONNX or TorchScript, then check the file against the\n"
                    "checkpoint on the 10,000 MNIST test images.\n\n"
                    "The exported model takes raw pixels: uint8 0-255, shape (N, 1, 28, 28), any N, white digit on\n"
                    "black (the checkpoint's normalization is built in; TorchScript also accepts float 0-255), and\n"
                    "returns logits, float32 (N, 10). It runs without Lightning or mnist_lit: torch.jit.load, or\n"
                    "onnxruntime.",
        epilog=f"The check passes when the predicted classes agree on every test image and the largest\n"
               f"|difference| of the logits is at most {TOLERANCE:g}; only a file that passes is written.\n\n"
               f"Exit status: 0 written, 1 the check failed (nothing written), 2 bad usage, checkpoint or output.")
    parser.add_argument("--ckpt", required=True, metavar="PATH",
                        help="a .ckpt written by `fit` (network and normalization come from it)")
    parser.add_argument("--format", required=True, choices=tuple(FORMATS), help="onnx or torchscript")
    parser.add_argument("--out", metavar="FILE", help="output file (default: beside the checkpoint, same name, "
                                                      ".onnx for onnx, .pt for torchscript)")
    parser.add_argument("--overwrite", action="store_true", help="replace FILE if it exists (default: refuse, exit 2)")
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_LIT_DATA_DIR", "data"),
                        help="folder holding MNIST/raw for the check, provisioned if missing "
                             "(default: $MNIST_LIT_DATA_DIR, else data)")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="write without comparing with the checkpoint (no MNIST data needed)")
    return parser


def run(args: argparse.Namespace) -> int:
    target, comparison = export(args.ckpt, args.format, args.out, args.overwrite, args.data_dir, args.check)
    if target is None:
        print(f"error: the {args.format} export of {args.ckpt} does not match the checkpoint (tolerance: classes agree "
              f"on every image, |Δ logit| ≤ {TOLERANCE:g}); nothing written", file=sys.stderr)
        return 1
    print(f"wrote {target} ({args.format}; {CONTRACT})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), export, check; returns the exit status (argparse exits 2 itself)."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning vs. newer torch
    args = build_parser().parse_args(argv)
    return run_reporting_errors(lambda: run(args))


"""``python -m mnist_lit.cli predict-images --ckpt PATH [options] PATHS...``: the digit in each image file.

Photos, scans and drawings (dark digit on a light background or the reverse, any size, anywhere in the frame) are
first brought to MNIST's form (see ``mnist_lit.data.preprocess``); ``--no-preprocess`` skips that for images that are
MNIST-like already. One line per image on stdout; each file that fails is one line on stderr and the others are
still predicted. An image that does not read as a digit under the checkpoint's rule (``mnist_lit.models.rejection``)
or ``--threshold`` is a result like the others, marked "not a digit".

Exit status: 0 every file predicted (a digit or not); 1 some file failed (or the contact sheet could not be written);
2 bad usage or a checkpoint that is missing, unreadable or not one of this project's classifiers.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import warnings
from pathlib import Path
from typing import TextIO

from PIL import Image, ImageDraw, ImageFont

from mnist_lit.common.atomic_files import replaced_on_success
from mnist_lit.common.errors import WRITE_FAULTS, UserError, describe_write_fault, run_reporting_errors, write_fault
from mnist_lit.inference.predictor import FileResult, Predictor, predict_files, resolve_device
from mnist_lit.models.rejection import Rejection

PROG = "python -m mnist_lit.cli predict-images"
THUMBNAIL = 112  # contact-sheet cell size, pixels
NOT_A_DIGIT = (107, 114, 128)  # caption of an image that does not read as a digit: the drawing page's grey
SHEET_LIMIT = 1_000  # images drawn on a contact sheet at most: 1,000 in 10 columns is already 1120×14600 pixels


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def score_threshold(text: str) -> float:
    """``--threshold``: a score from 0 to 1 (the rule's own check, as an argparse error)."""
    try:
        return Rejection(threshold=float(text)).threshold
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Predict the digit in image files (png, jpg, bmp, gif, tiff, webp) with a checkpoint.",
        epilog="Exit status: 0 all predicted, 1 some file failed, 2 bad usage or checkpoint.")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, or folders of images (not recursive)")
    parser.add_argument("--ckpt", required=True,
                        help="a .ckpt written by `fit` (the network and its normalization come from it)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table",
                        help="stdout format: an aligned table (default), a JSON array or CSV; JSON and CSV also list "
                             "the failed files, with their error")
    parser.add_argument("--no-preprocess", dest="preprocess", action="store_false",
                        help="only make grayscale and resize to 28×28 (for images that are MNIST-like already: white "
                             "digit on black, centred); default: invert, crop, fit 20×20 and centre as MNIST was made")
    parser.add_argument("--sheet", metavar="OUT.png", help="also write a contact sheet: each image captioned with its "
                                                           "predicted digit and probability")
    parser.add_argument("--threshold", type=score_threshold, metavar="T",
                        help="an image whose score (its top probability) is below T is marked not a digit; replaces "
                             "the threshold the checkpoint carries, or gives one to a checkpoint that has none (which "
                             "otherwise reads every image as a digit); 0 reads every image as a digit")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--batch-size", type=positive_int, default=256, help="images per forward pass (default 256)")
    return parser


def _sheet_target(name: str) -> tuple[Path, str]:
    """Check the sheet can be written before any work is done: its folder exists and PIL knows its format."""
    target = Path(name)
    image_format = Image.registered_extensions().get(target.suffix.lower())
    if image_format is None or image_format not in Image.SAVE:
        raise UserError(f"--sheet {name}: unknown image format {target.suffix!r}; use .png")
    if not target.parent.is_dir():
        raise UserError(f"--sheet {name}: folder {target.parent} does not exist")
    return target, image_format


def _top3(result: FileResult) -> str:
    return " ".join(f"{digit}:{prob:.4f}" for digit, prob in result.top3)


def write_results(results: list[FileResult], fmt: str, out: TextIO | None = None) -> None:
    """``table``: predicted files only (failures go to stderr), a non-digit with ``-`` for its digit and a note;
    ``json``/``csv``: every file, with ``is_digit``, ``score`` and an error field."""
    out = out or sys.stdout
    if fmt == "json":
        rows = [json.dumps(r.as_dict()) for r in results]
        out.write("[\n" + ",\n".join(rows) + "\n]\n" if rows else "[]\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["path", "digit", "probability", "top3", "is_digit", "score", "error"])
        for r in results:
            writer.writerow([r.path, "" if r.digit is None else r.digit,
                             "" if r.probability is None else f"{r.probability:.4f}", _top3(r),
                             "" if r.is_digit is None else str(r.is_digit).lower(),
                             "" if r.score is None else f"{r.score:.4f}", r.error or ""])
    else:
        ok = [r for r in results if r.ok]
        if not ok:
            return
        width = max(len("path"), *(len(r.path) for r in ok))
        out.write(f"{'path':<{width}}  digit  probability  top-3\n")
        for r in ok:
            if r.is_digit:
                out.write(f"{r.path:<{width}}  {r.digit:>5}  {r.probability:>11.4f}  {_top3(r)}\n")
            else:
                out.write(f"{r.path:<{width}}  {'-':>5}  {'-':>11}  {_top3(r)}  not a digit (score {r.score:.4f})\n")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow ≥ 10.1 with FreeType: a scalable font
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: float, keep_end: bool = True) -> str:
    """Shorten until it fits: from the left for file names (their end says most), else from the right."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(f"…{text}" if keep_end else f"{text}…", font=font) > width:
        text = text[1:] if keep_end else text[:-1]
    return f"…{text}" if keep_end else f"{text}…"


def render_sheet(results: list[FileResult], cell: int = THUMBNAIL) -> Image.Image:
    """A grid of thumbnails, each captioned with its predicted digit and probability (or its error, in red) and file
    name; an image that does not read as a digit is faded, as the drawing page greys it, and captioned so."""
    big, small = _font(16), _font(11)
    caption = 34
    columns = max(1, min(len(results), 10, math.ceil(math.sqrt(len(results)))))
    rows = max(1, math.ceil(len(results) / columns))
    sheet = Image.new("RGB", (columns * cell, rows * (cell + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, result in enumerate(results):
        x, y = (i % columns) * cell, (i // columns) * (cell + caption)
        if result.thumbnail is not None:
            thumb = result.thumbnail if result.is_digit is not False else Image.blend(
                result.thumbnail, Image.new("RGB", result.thumbnail.size, "white"), 0.6)
            sheet.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
        else:
            draw.rectangle((x + 4, y + 4, x + cell - 5, y + cell - 5), fill=(220, 220, 220))
        if result.ok and result.is_digit:
            draw.text((x + 4, y + cell), f"{result.digit}  ({result.probability:.1%})", fill=(0, 0, 0), font=big)
        elif result.ok:
            draw.text((x + 4, y + cell), "not a digit", fill=NOT_A_DIGIT, font=big)
        else:  # the reason, without the path (the next line names the file)
            reason = result.error.removeprefix(f"{result.path}: ")
            draw.text((x + 4, y + cell + 2), _fit_text(draw, reason, small, cell - 8, keep_end=False),
                      fill=(200, 0, 0), font=small)
        draw.text((x + 4, y + cell + 19), _fit_text(draw, Path(result.path).name, small, cell - 8), fill=(90, 90, 90),
                  font=small)
        draw.rectangle((x, y, x + cell - 1, y + cell + caption - 1), outline=(200, 200, 200))
    return sheet


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    sheet = _sheet_target(args.sheet) if args.sheet else None
    predictor = Predictor.from_checkpoint(args.ckpt, device, args.threshold)  # CheckpointError: a UserError, exit 2
    results = predict_files(predictor, args.paths, preprocess=args.preprocess, batch_size=args.batch_size,
                            thumbnail_size=THUMBNAIL - 8 if sheet else None)
    write_results(results, args.format)
    sys.stdout.flush()
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"error: {r.error}", file=sys.stderr)
    if sheet:
        target, image_format = sheet
        if len(results) > SHEET_LIMIT:
            print(f"note: the contact sheet shows the first {SHEET_LIMIT} of {len(results)} images", file=sys.stderr)
        try:
            with replaced_on_success(target) as tmp:
                render_sheet(results[:SHEET_LIMIT]).save(tmp, format=image_format)
        except (OSError, ValueError) as err:
            fault = write_fault(err)  # a full disk, a read-only folder: say so, and what to do
            print(f"error: {describe_write_fault(fault)}: {WRITE_FAULTS[fault.errno][1]} and run the command again"
                  if fault else
                  f"error: {target}: cannot write the contact sheet ({' '.join(str(err).split())})", file=sys.stderr)
            return 1
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), predict, print; returns the exit status (argparse exits 2 itself)."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning vs. newer torch
    args = build_parser().parse_args(argv)
    return run_reporting_errors(lambda: run(args))


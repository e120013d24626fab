"""Handwriting shift: test digits re-drawn by other pens and devices, read through ``predict-images``' preprocessing.

    python -m bench.shift --count 500 --ckpt best=PATH --ckpt mlp=PATH ...   # bench/SHIFT.md (+ .json)
    python -m bench.shift --merge --count 500 --ckpt fast=PATH               # add (or redo) a row, keep the others

The families (FAMILIES below), dark ink on light paper unless said: ``photo``, photographed; ``marker``, strokes widened
(solid black); ``pencil``, narrowed (dark grey); ``small``, 8–12 px high, enlarged 4–8×; ``blur``; ``slant``, 10–20°
either way; ``offcentre``, 2× MNIST on a 640×480 page; ``grey``, pale ink on grey, grainy paper.
"""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from bench.common import arguments, header, option, table, this_run, write
from mnist_lit.inference.predictor import Predictor, predict_files
from tests.digits import photograph, test_digits

SCALE = 4  # families drawn at 4× MNIST's size, as a pen on paper is drawn at a finer scale than the 28×28 field


def _ink(digit: np.ndarray, scale: int = SCALE) -> Image.Image:
    """The digit's ink (white on black, ``L``) enlarged ``scale``× with a smooth (bicubic) filter."""
    return Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)


def _on_paper(ink: Image.Image, rng: np.random.Generator, darkness: float = 1.0, paper: int = 255,
              grain: float = 0.0, page: tuple[int, int] | None = None) -> Image.Image:
    """Ink (white on black) as dark ink on light paper, on a page with a random margin (or the given page size)."""
    w, h = ink.size
    width, height = page or (w + int(rng.integers(20, 120)), h + int(rng.integers(20, 120)))
    sheet = np.full((height, width), float(paper))
    x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    sheet[y:y + h, x:x + w] -= darkness * np.asarray(ink, dtype=np.float64) / 255 * paper
    if grain:
        sheet += rng.normal(0, grain, sheet.shape)
    return Image.fromarray(np.clip(np.round(sheet), 0, 255).astype(np.uint8))


def small(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    rows, cols = np.nonzero(digit > 25)
    box = Image.fromarray(digit[rows.min():rows.max() + 1, cols.min():cols.max() + 1])
    height = int(rng.integers(8, 13))
    tiny = box.resize((max(1, round(box.width * height / box.height)), height), Image.Resampling.BOX)  # a coarse scan
    factor, tiny = int(rng.integers(4, 9)), Image.fromarray(np.pad(np.asarray(tiny), 2))
    return _on_paper(tiny.resize((tiny.width * factor, tiny.height * factor), Image.Resampling.NEAREST), rng)


def slant(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    ink = _ink(digit)
    shear = np.tan(np.deg2rad(rng.uniform(10, 20) * rng.choice([-1, 1])))
    wide = Image.new("L", (ink.width * 2, ink.height), 0)
    wide.paste(ink, (ink.width // 2, 0))
    # x_in = x_out + shear·(y − centre): the top leans right for a positive shear
    return _on_paper(wide.transform(wide.size, Image.Transform.AFFINE, (1, shear, -shear * ink.height / 2, 0, 1, 0),
                                    resample=Image.Resampling.BICUBIC), rng)


FAMILIES = {  # each draws a digit (white on black, uint8) with a random generator, as the docstring above says
    "photo": photograph,
    "marker": lambda d, rng: _on_paper(_ink(d).filter(ImageFilter.MaxFilter(int(rng.choice([5, 7, 9]))))
                                       .point(lambda v: min(255, 2 * v)), rng),
    "pencil": lambda d, rng: _on_paper(_ink(d).filter(ImageFilter.MinFilter(int(rng.choice([3, 5])))), rng,
                                       darkness=rng.uniform(0.7, 0.9), grain=3.0),
    "small": small,
    "blur": lambda d, rng: _on_paper(_ink(d).filter(ImageFilter.GaussianBlur(SCALE * rng.uniform(0.75, 1.5))), rng),
    "slant": slant,
    "offcentre": lambda d, rng: _on_paper(_ink(d, 2), rng, page=(640, 480)),
    "grey": lambda d, rng: _on_paper(_ink(d), rng, darkness=rng.uniform(0.35, 0.55), paper=int(rng.integers(235, 251)),
                                     grain=2.5),
}


def main() -> None:
    opts = arguments(__doc__, option("--ckpt", action="append", required=True, metavar="NAME=PATH", help="one per row"),
                     option("--count", type=int, default=1000, help="test digits per family (default 1000)"),
                     option("--merge", action="store_true", help="keep the rows of the .json (same --count)"),
                     out="SHIFT.md")
    saved_at = Path(opts.out).with_suffix(".json")
    saved = (json.loads(saved_at.read_text()) if opts.merge and saved_at.exists()
             else {"count": opts.count, "seed": 0, "rows": []})
    if saved["count"] != opts.count:
        sys.exit(f"error: {saved_at} holds --count {saved['count']}: merge with the same")

    images, labels = test_digits(Path(opts.data_dir), 10_000)
    with tempfile.TemporaryDirectory(prefix="bench_shift_") as tmp:
        root = Path(tmp)
        for k, (family, draw) in enumerate(FAMILIES.items()):
            (root / family).mkdir()
            rng = np.random.default_rng([saved["seed"], k])
            for i in range(opts.count):
                draw(images[i], rng).convert("RGB").save(root / family / f"{i:04d}.png")
        for name, path in (item.split("=", 1) for item in opts.ckpt):
            predictor = Predictor.from_checkpoint(path)
            clean = predictor.probabilities(torch.from_numpy(images.copy())).argmax(1).numpy() == labels
            row = {"name": name, "path": path, **this_run(), "clean": float(clean.mean())}
            row |= {family: float(np.mean([r.digit == labels[int(Path(r.path).stem)]
                                           for r in predict_files(predictor, [root / family])])) for family in FAMILIES}
            saved["rows"] = [r for r in saved["rows"] if r["name"] != name] + [row]
            saved_at.write_text(json.dumps(saved, indent=1))  # after every checkpoint: a stopped run still reports
            print(name, {k: round(v, 4) for k, v in row.items() if k in FAMILIES or k == "clean"}, flush=True)

    lines = header(
        "Handwriting shift: MNIST test digits re-drawn by other pens and devices",
        f"The first {opts.count:,} MNIST test digits per family (seed {saved['seed']}), saved as PNG files and read "
        "through `predict_files` (`predict-images`' own preprocessing); accuracy in %. The families are described "
        "in bench/shift.py; \"clean\" is all 10,000 test digits as they are. Raw figures: the .json beside this file.",
        saved["rows"],
    ) + table("recipe", "clean test (10,000)", *FAMILIES, "mean of the shifts")
    for row in saved["rows"]:
        shifts = [row[f] for f in FAMILIES]
        lines.append(f"| {row['name']} | " + " | ".join(f"{100 * v:.2f}" for v in [row["clean"], *shifts])
                     + f" | {100 * np.mean(shifts):.2f} |")
    write(opts.out, [*lines, "", "Checkpoints (each row by the command that names it):", "",
                     *(f"- {r['name']}: `{r['path']}`" for r in saved["rows"])])


if __name__ == "__main__":
    main()

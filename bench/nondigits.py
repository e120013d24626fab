"""The non-digit benchmark's images: letters, symbols and doodles as people draw them on the page or photograph them.

    python -m bench.nondigits        # (re)writes bench/nondigits/: the images and their README.md

Each shape is a set of pen strokes written here by hand in a unit box (x right, y down): ``x,y x,y ...`` is a
polyline, ``~`` before it a smooth curve through its points, ``o cx cy rx ry a0 a1`` an elliptical arc (degrees,
0 = right, 90 = down), a single point a dot. Every image jitters the strokes (wobble, slant, rotation, width, size,
place) with its own seed and draws them either as the drawing page does (a 280×280 white canvas, black pen of width
280/14 with round caps and joins, anti-aliased) or as a photograph (dark ink on lighter paper in a larger frame, a
perspective warp, uneven light, blur, sensor noise, JPEG). Evaluation only: nothing here may be used to train or to
tune (mnist_lit's own outliers come from mnist_lit/data/outliers.py, which shares no code or image with this).
"""

import itertools
import shutil

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from bench.common import ROOT, this_run

OUT = ROOT / "bench" / "nondigits"
SEED = 22
PAGE, PEN = 280, 280 / 14  # the drawing page's canvas and pen (mnist_lit/serving/ui/app.js)
BLANK_PHOTOS = 6

SHAPES = {  # kind → name → strokes, separated by "|"
    "letter": {
        "A": ".1,1 .5,0 .9,1 | .27,.62 .73,.62", "C": "o .55 .5 .45 .5 -45 -315",
        "E": ".82,0 .15,0 .15,1 .85,1 | .15,.5 .7,.5", "F": ".85,0 .15,0 .15,1 | .15,.48 .65,.48",
        "H": ".15,0 .15,1 | .85,0 .85,1 | .15,.5 .85,.5", "K": ".2,0 .2,1 | .85,0 .2,.6 | .38,.45 .88,1",
        "M": ".08,1 .15,0 .5,.65 .85,0 .92,1", "N": ".15,1 .15,0 .85,1 .85,0",
        "P": ".2,1 .2,0 | ~.2,0 .62,.02 .8,.25 .62,.47 .2,.5", "R": ".2,1 .2,0 | ~.2,0 .62,.02 .8,.25 .62,.47 .2,.5 "
        "| .45,.5 .85,1", "U": "~.15,0 .15,.65 .3,.95 .5,1 .7,.95 .85,.65 .85,0", "V": ".1,0 .5,1 .9,0",
        "W": ".02,0 .25,1 .5,.35 .75,1 .98,0", "X": ".15,0 .85,1 | .85,0 .15,1", "Y": ".12,0 .5,.5 .88,0 | .5,.5 .5,1",
        "small-h": ".2,0 .2,1 | ~.2,.55 .45,.38 .7,.45 .75,.65 .75,1",
        "small-k": ".25,0 .25,1 | .75,.35 .25,.72 | .42,.6 .8,1",
        "small-m": ".1,.35 .1,1 | ~.1,.5 .3,.35 .47,.5 .47,1 | ~.47,.5 .67,.35 .88,.5 .88,1",
        "small-n": ".2,.35 .2,1 | ~.2,.5 .45,.35 .75,.45 .8,.65 .8,1",
        "small-r": ".3,.35 .3,1 | ~.3,.6 .45,.4 .6,.35 .75,.38",
        "small-w": ".05,.35 .28,1 .5,.5 .72,1 .95,.35", "small-x": ".2,.35 .8,1 | .8,.35 .2,1",
    },
    "symbol": {
        "hash": ".38,.05 .3,.95 | .72,.05 .64,.95 | .1,.33 .92,.33 | .07,.67 .9,.67",
        "at": "o .48 .52 .14 .16 0 360 | ~.62,.36 .62,.62 .7,.7 .82,.62 .9,.45 .85,.25 .7,.1 .5,.05 .28,.12 .12,.32 "
              ".1,.58 .2,.82 .42,.95 .65,.92",
        "percent": ".8,.05 .2,.95 | o .27 .2 .12 .14 0 360 | o .73 .8 .12 .14 0 360",
        "ampersand": "~.85,1 .35,.45 .28,.22 .4,.05 .55,.1 .55,.3 .25,.6 .15,.8 .3,.97 .55,.95 .85,.6",
        "plus": ".5,.1 .5,.9 | .1,.5 .9,.5", "equals": ".1,.35 .9,.35 | .1,.65 .9,.65",
        "question": "~.2,.25 .35,.05 .6,.02 .78,.18 .72,.4 .5,.55 .5,.75 | .5,.95",
        "exclamation": ".5,0 .5,.7 | .5,.95",
        "asterisk": ".5,.05 .5,.95 | .1,.28 .9,.72 | .9,.28 .1,.72",
        "dollar": "~.8,.2 .6,.08 .35,.1 .22,.28 .4,.45 .65,.55 .8,.72 .65,.9 .4,.92 .2,.8 | .5,0 .5,1",
        "arrow-right": ".05,.5 .95,.5 | .7,.28 .95,.5 .7,.72", "arrow-up": ".5,1 .5,.05 | .25,.3 .5,.05 .75,.3",
        "check": ".1,.55 .38,.9 .92,.08", "cross": "~.15,.2 .5,.55 .85,.85 | ~.8,.1 .5,.5 .2,.9",
    },
    "doodle": {
        "smiley": "o .5 .5 .45 .45 0 360 | .35,.38 | .65,.38 | o .5 .55 .25 .2 20 160",
        "star": ".5,0 .79,.9 .02,.35 .98,.35 .21,.9 .5,0",
        "heart": "~.5,.3 .35,.08 .12,.1 .05,.35 .2,.6 .5,.95 | ~.5,.3 .65,.08 .88,.1 .95,.35 .8,.6 .5,.95",
        "house": ".15,.45 .15,1 .85,1 .85,.45 | .05,.5 .5,.05 .95,.5 | .42,1 .42,.72 .58,.72 .58,1",
        "sun": "o .5 .5 .2 .2 0 360 | .5,.22 .5,.02 | .5,.78 .5,.98 | .22,.5 .02,.5 | .78,.5 .98,.5 | .3,.3 .15,.15 "
               "| .7,.3 .85,.15 | .3,.7 .15,.85 | .7,.7 .85,.85",
        "spiral": "~.5,.5 .58,.45 .6,.55 .5,.65 .38,.55 .4,.38 .55,.3 .72,.4 .75,.6 .62,.78 .4,.8 .22,.65 .2,.4 .3,.2 "
                  ".5,.1 .75,.15 .92,.38",
        "cloud": "~.15,.75 .05,.6 .15,.45 .25,.45 .3,.3 .45,.22 .6,.28 .65,.35 .78,.3 .92,.42 .9,.6 .95,.7 .85,.78 "
                 ".15,.75",
        "tree": ".5,0 .15,.45 .35,.45 .05,.8 .95,.8 .65,.45 .85,.45 .5,0 | .5,.8 .5,1",
        "face": "o .5 .52 .38 .46 0 360 | o .36 .4 .05 .04 0 360 | o .64 .4 .05 .04 0 360 | .5,.45 .46,.6 .52,.62 "
                "| .38,.78 .62,.78 | ~.15,.35 .3,.1 .5,.05 .7,.1 .85,.35",
        "waves": "~0,.3 .12,.18 .25,.3 .38,.42 .5,.3 .62,.18 .75,.3 .88,.42 1,.3 | ~0,.7 .12,.58 .25,.7 .38,.82 .5,.7 "
                 ".62,.58 .75,.7 .88,.82 1,.7",
        "zigzag": "0,.6 .14,.3 .28,.7 .42,.3 .56,.7 .7,.3 .84,.7 1,.4", "dot": ".5,.5",
        "scribble": "~.2,.5 .5,.2 .8,.4 .3,.7 .6,.8 .85,.6 .4,.3 .15,.6 .5,.9 .9,.2 .7,.1",
        "flower": "o .5 .5 .1 .1 0 360 | o .5 .22 .1 .17 0 360 | o .5 .78 .1 .17 0 360 | o .22 .5 .17 .1 0 360 "
                  "| o .78 .5 .17 .1 0 360",
        "fish": "~.2,.5 .45,.28 .7,.32 .85,.5 .7,.68 .45,.72 .2,.5 | .2,.5 .05,.3 .05,.7 .2,.5 | .68,.45",
        "envelope": ".05,.2 .95,.2 .95,.8 .05,.8 .05,.2 | .05,.2 .5,.55 .95,.2",
    },
}


def _curve(points: np.ndarray, per_segment: int = 12) -> np.ndarray:
    """A Catmull-Rom curve through the points, as a hand draws one smooth stroke through them."""
    p = np.vstack([points[:1], points, points[-1:]])
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    out = [0.5 * (2 * p[i] + (p[i + 1] - p[i - 1]) * t + (2 * p[i - 1] - 5 * p[i] + 4 * p[i + 1] - p[i + 2]) * t**2
                  + (3 * p[i] - p[i - 1] - 3 * p[i + 1] + p[i + 2]) * t**3) for i in range(1, len(p) - 2)]
    return np.vstack([*out, points[-1:]])


def _strokes(spec: str, rng: np.random.Generator) -> list[np.ndarray]:
    """The strokes of a shape, each a dense (N, 2) path, its hand-written points nudged a little (a hand's error)."""
    strokes = []
    for part in (s.strip() for s in spec.split("|")):
        if part.startswith("o "):
            cx, cy, rx, ry, a0, a1 = map(float, part[2:].split())
            a = np.deg2rad(np.linspace(a0 + rng.normal(0, 8), a1 + rng.normal(0, 8), 48))  # gaps and overlaps
            path = np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], 1) + rng.normal(0, 0.012, 2)
        else:
            points = np.array([[float(v) for v in xy.split(",")] for xy in part.lstrip("~").split()])
            points = points + rng.normal(0, 0.015, points.shape)
            path = _curve(points) if part.startswith("~") else np.vstack(
                [np.linspace(a, b, 12, endpoint=False) for a, b in itertools.pairwise(points)] + [points[-1:]])
        along = np.linspace(0, 1, len(path))[:, None]  # wobble: a slow, smooth drift along the stroke
        phase, freq = rng.uniform(0, 2 * np.pi, 2), rng.uniform(1, 3, 2)
        strokes.append(path + rng.uniform(0.004, 0.018) * np.sin(2 * np.pi * freq * along + phase))
    return strokes


def _place(strokes: list[np.ndarray], rng: np.random.Generator, size: float, centre: np.ndarray) -> list[np.ndarray]:
    """Slanted, rotated and stretched a little, then scaled so that the longer side is ``size`` around ``centre``."""
    angle, shear = np.deg2rad(rng.uniform(-10, 10)), np.tan(np.deg2rad(rng.uniform(-12, 20)))  # > 0: leaning right
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    m = rotate @ np.array([[rng.uniform(0.8, 1.2), -shear], [0, 1]])
    moved = [s @ m.T for s in strokes]
    every = np.vstack(moved)
    low, high = every.min(0), every.max(0)
    scale = size / max(float((high - low).max()), 0.05)  # a dot is drawn at its pen's size
    return [(s - (low + high) / 2) * scale + centre for s in moved]


def _ink(shape: tuple[int, int], strokes: list[np.ndarray], width: float, supersample: int = 4) -> np.ndarray:
    """Ink coverage in [0, 1]: round pen, round caps and joins, anti-aliased by drawing ``supersample``× larger."""
    k = supersample
    canvas = Image.new("L", (shape[0] * k, shape[1] * k), 0)
    draw, r = ImageDraw.Draw(canvas), width * k / 2
    for stroke in strokes:
        points = [tuple(p) for p in stroke * k]
        if len(points) > 1:
            draw.line(points, fill=255, width=max(1, round(2 * r)))
        for x, y in points:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return np.asarray(canvas.reduce(k), dtype=np.float64) / 255


def page(spec: str, rng: np.random.Generator) -> Image.Image:
    """Drawn on the page: black on white, the pen's width fixed, the shape 45–85 % of the canvas, anywhere on it."""
    size = rng.uniform(0.45, 0.85) * PAGE
    centre = rng.uniform(PEN / 2 + size / 2, PAGE - PEN / 2 - size / 2, 2)
    ink = _ink((PAGE, PAGE), _place(_strokes(spec, rng), rng, size, centre), PEN)
    return Image.fromarray(np.round(255 * (1 - ink)).astype(np.uint8))


def photo(spec: str | None, rng: np.random.Generator) -> Image.Image:
    """Photographed: ink (felt pen to marker) on tinted paper, warped, lit unevenly, blurred, noisy (``None``: blank
    paper, some of it as noisy as a photo in dim light)."""
    w, h = int(rng.integers(320, 520)), int(rng.integers(260, 420))
    if rng.random() < 0.3:
        w, h = h, w  # a portrait frame
    size = rng.uniform(0.3, 0.65) * min(w, h)
    strokes = _place(_strokes(spec, rng), rng, size, np.array([w, h]) * rng.uniform(0.4, 0.6, 2)) if spec else []
    ink = _ink((w, h), strokes, size * rng.uniform(0.05, 0.12), supersample=2)[..., None]
    paper = rng.uniform(205, 250) * np.array([1, rng.uniform(0.96, 1), rng.uniform(0.88, 0.99)])
    colour = rng.uniform(15, 70) * np.array([1, 1, rng.uniform(1, 2.2)])  # black to ballpoint blue
    picture = Image.fromarray(np.round(paper * (1 - ink) + colour * ink).astype(np.uint8))
    frame = np.array([[0, 0], [w, 0], [w, h], [0, h]])  # each corner of the picture shows a jittered corner of this
    corners = frame + rng.uniform(-0.07, 0.07, (4, 2)) * [w, h]
    a = [[x, y, 1, 0, 0, 0, -u * x, -u * y] for (x, y), (u, _) in zip(frame, corners)]
    a += [[0, 0, 0, x, y, 1, -v * x, -v * y] for (x, y), (_, v) in zip(frame, corners)]
    coeffs = np.linalg.solve(np.array(a, dtype=float), np.concatenate([corners[:, 0], corners[:, 1]]))
    picture = picture.transform((w, h), Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BICUBIC,
                                fillcolor=tuple(int(c) for c in paper))
    picture = picture.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.6)))
    ys, xs = np.mgrid[0:h, 0:w] / max(w, h)
    direction = rng.uniform(0, 2 * np.pi)  # light falling off across the sheet, and darker towards the corners
    light = 1 - rng.uniform(0.03, 0.15) * (np.cos(direction) * xs + np.sin(direction) * ys + 0.5) \
        - rng.uniform(0, 0.1) * ((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2) * 4
    for _ in range(0 if spec else int(rng.integers(1, 4))):  # blank paper: smudges, a shadow, as dim light shows them
        (cx, cy), spread = rng.uniform(0.25, 0.75, 2) * [xs.max(), ys.max()], rng.uniform(0.03, 0.15)
        light -= rng.uniform(0.04, 0.2) * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * spread**2))
    noise = rng.uniform(1, 4) if spec else rng.uniform(2, 10)  # sensor noise, before the JPEG encoder smooths it
    pixels = np.asarray(picture, dtype=np.float64) * light[..., None] + rng.normal(0, noise, (h, w, 3))
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))


def main() -> None:
    tmp = OUT.with_name(OUT.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    rows = []
    jobs = [(kind, name, spec, style) for kind, shapes in SHAPES.items()  # each shape 3 times, page and photo mixed
            for k, (name, spec) in enumerate(shapes.items())
            for style in (["page", "photo", "page"] if k % 2 == 0 else ["photo", "page", "photo"])]
    jobs += [("blank", "paper", None, "photo")] * BLANK_PHOTOS
    for n, (kind, name, spec, style) in enumerate(jobs):
        rng = np.random.default_rng([SEED, n])
        path = tmp / f"{n:03d}-{kind}-{name}-{style}.{'png' if style == 'page' else 'jpg'}"
        if style == "page":
            page(spec, rng).save(path, optimize=True)
        else:
            photo(spec, rng).save(path, quality=int(rng.integers(55, 90)))
        rows.append(f"| {path.name} | {kind} | {name} | {style} |")
    styles, run = {s: sum(j[3] == s for j in jobs) for s in ("page", "photo")}, this_run()
    (tmp / "README.md").write_text("\n".join([
        "# Non-digits for evaluation only", "",
        (f"Made by `python -m bench.nondigits` (seed {SEED}) on {run['date']} at commit {run['commit']}: {len(jobs)} "
         f"images, {styles['page']} drawn as on the page (PNG) and {styles['photo']} photographed (JPEG), of which "
         f"{BLANK_PHOTOS} are blank paper. How they are drawn: the docstring of bench/nondigits.py. Never use them to "
         "train or to tune anything; bench/reject.py reads them."), "", "| file | kind | shape | drawn |",
        "|---|---|---|---|", *rows]) + "\n")
    shutil.rmtree(OUT, ignore_errors=True)
    tmp.rename(OUT)
    print(f"{len(jobs)} images in {OUT}")


if __name__ == "__main__":
    main()

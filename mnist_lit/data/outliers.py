"""Images that are not digits, for teaching a network to say so (outlier exposure, Hendrycks et al., ICLR 2019).

Two sources: Fashion-MNIST (provisioned and verified like MNIST, in torchvision's ``FashionMNIST/raw`` layout) and
synthetic outliers made on the fly: pen strokes, scribbles, doodles, and handwritten and typed characters that
are not digit look-alikes, each rendered as a user image (the drawing page's 280×280 canvas and pen, or a photo of
ink on paper) and read through :func:`mnist_lit.data.preprocess.to_mnist`, exactly as ``predict-images`` reads a
file. A network only ever sees what that preprocessing makes of an image, so that is what its outliers must look like.
Plain torch/numpy/PIL: no Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from torch.utils.data import DataLoader, Dataset

from mnist_lit.common.errors import UserError
from mnist_lit.data.preprocess import ImageError, to_mnist
from mnist_lit.data.provision import Pin, provision_from

# sha256 and size of the four raw (unpacked) IDX files, as MNIST's OFFICIAL_PINS. They are the files torchvision
# downloads: Debian's .gz files hold the very deflate streams of the upstream ones; given back the gzip header's file
# name and mtime (1504176606 for train-*, 1504176627 for t10k-*), they match the md5s in
# torchvision.datasets.FashionMNIST.resources byte for byte (checked by tests/test_outliers.py).
PINS: Mapping[str, Pin] = {
    "train-images-idx3-ubyte": Pin("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47_040_016),
    "train-labels-idx1-ubyte": Pin("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60_008),
    "t10k-images-idx3-ubyte": Pin("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7_840_016),
    "t10k-labels-idx1-ubyte": Pin("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10_008),
}

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # where the package puts the four NAME.gz files


class OutlierDataError(UserError):
    """The outlier data cannot be had (Fashion-MNIST missing or corrupt, fonts missing); the message says what to do."""


# --- Fashion-MNIST ----------------------------------------------------------------------------------------------

def _from_debian(workdir: Path) -> Path:
    if not DEBIAN_DIR.is_dir():
        raise FileNotFoundError(f"{DEBIAN_DIR} not found (the package is not installed)")
    return DEBIAN_DIR


def _from_torchvision(workdir: Path) -> Path:
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(workdir), train=True, download=True)  # fetches and checks (md5) all four files
    return workdir / "FashionMNIST" / "raw"


SOURCES: dict[str, Callable[[Path], Path]] = {
    f"Debian's package {DEBIAN_PACKAGE}": _from_debian,
    "torchvision's download": _from_torchvision,
}


def _raw_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "FashionMNIST" / "raw"


def provision_fashion(data_dir: str | Path) -> str:
    """Make ``<data_dir>/FashionMNIST/raw`` hold the four verified Fashion-MNIST IDX files, as MNIST's are made;
    return where they came from. Sources in order: the files already there (plain or .gz); Debian's
    ``dataset-fashion-mnist``; torchvision's download. Raises :class:`OutlierDataError`."""
    advice = f"Install them with `apt-get install {DEBIAN_PACKAGE}`, or connect to the internet, or put"
    return provision_from(_raw_dir(data_dir), PINS, SOURCES, "Fashion-MNIST", advice, OutlierDataError)


def fashion_images(data_dir: str | Path, train: bool) -> torch.Tensor:
    """Fashion-MNIST's training (60,000) or test (10,000) images, uint8 (N, 28, 28), read by torchvision.

    Provisions first (:func:`provision_fashion`, which only verifies files already in place), so a missing or corrupt
    file is replaced or reported as a one-line :class:`OutlierDataError`, never read.
    """
    from torchvision.datasets import FashionMNIST

    provision_fashion(data_dir)
    images = FashionMNIST(str(data_dir), train=train).data
    if images.dtype != torch.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise OutlierDataError(f"{_raw_dir(data_dir)}: the Fashion-MNIST files are not 28×28 uint8 images")
    return images


# --- synthetic outliers -----------------------------------------------------------------------------------------

CANVAS = 280  # the drawing page's canvas (mnist_lit/serving/ui/app.js) ...
PEN = CANVAS / 14  # ... and its round pen

# Fonts the typed outliers are set in, relative to /usr/share/fonts/truetype (Debian's fonts-dejavu-core and
# fonts-liberation). A fixed list, all required: other fonts would give other images for the same seed.
FONT_DIR = Path("/usr/share/fonts/truetype")
FONTS = (
    "dejavu/DejaVuSans.ttf", "dejavu/DejaVuSans-Bold.ttf", "dejavu/DejaVuSansMono.ttf", "dejavu/DejaVuSerif.ttf",
    "dejavu/DejaVuSerif-Bold.ttf", "liberation/LiberationSans-Regular.ttf", "liberation/LiberationSans-Bold.ttf",
    "liberation/LiberationSerif-Regular.ttf", "liberation/LiberationSerif-Italic.ttf",
    "liberation/LiberationMono-Regular.ttf", "liberation/LiberationSansNarrow-Bold.ttf",
)

# Characters that are not digit look-alikes once scaled to MNIST's 20×20 box. Left out, and why: O o D C c Q Ω Φ Ф
# ⊂ ¢ (a 0); I l i j t r f | ! / \ ( ) [ ] { } ↑ ↓ ∫ (a 1: tall and narrow, or a stroke with a flag); Z z ? £ (a 2);
# Ʒ З ε ∈ € (a 3); Ч Y y ¥ √ μ (a 4); S s $ § (a 5); b G б δ ∂ ∠ ♪ (a 6); T J Γ ⌐ (a 7); B & β (an 8); q g a e ¶ α
# (a 9).
CHARACTERS = (
    "AEFHKLMNPRUVWX" "dhkmnpuvwx"
    "#%*+=@<>^~×÷±©®™¤•∞≈≠≤≥∑π∆ΨΛΞΠλ"
    "ЖШЩЯЮДЛИЦ"
    "★☆♥♦♣♠☺☹♫☼✓✗→←⇒∀∃∩∪⊕⊗⌘"
)

WORDS_FROM = "AEFHKMNRUVWXdhkmnpuvwx"  # short typed "words" (2–3 characters) are drawn from these

KINDS = ("scribble", "strokes", "doodle", "typed", "texture", "hand")
KIND_WEIGHTS = (0.18, 0.22, 0.14, 0.26, 0.05, 0.15)
# The pen's width relative to the figure, per kind: a dense scribble with a thick pen is a filled blob.
PEN_RANGE = {"scribble": (0.04, 0.12), "strokes": (0.05, 0.25), "doodle": (0.05, 0.2), "hand": (0.05, 0.18)}
PHOTO_CHANCE = 0.35  # the rest are drawings as on the page: black ink on white
MAX_TRIES = 20


def synthetic_outliers(n: int, seed: int, workers: int = 0) -> torch.Tensor:
    """``n`` synthetic non-digits, uint8 (n, 28, 28), white on black as MNIST.

    Image ``i`` depends only on ``(seed, i)``: the same seed gives the same images, and a larger ``n`` extends a
    smaller one, made by any number of DataLoader ``workers`` (a pool of 10,000 takes about half a CPU minute).
    Raises :class:`OutlierDataError` when the fonts are not installed.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    _fonts()  # a missing font is one clear error here, not one per worker
    if n == 0:
        return torch.empty((0, 28, 28), dtype=torch.uint8)
    loader = DataLoader(_SyntheticOutliers(n, seed), batch_size=max(1, min(500, n // max(1, workers))),
                        num_workers=workers)
    return torch.cat(list(loader))


class _SyntheticOutliers(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return _one_outlier(np.random.default_rng([self.seed, i]), _fonts())


def _one_outlier(rng: np.random.Generator, fonts: list[tuple[Path, str]]) -> torch.Tensor:
    """Draw, render and preprocess until the result is a figure (not blank, not lost in shading), not a 1, and, for
    random strokes, no chance loop."""
    for _ in range(MAX_TRIES):
        kind = KINDS[rng.choice(len(KINDS), p=KIND_WEIGHTS)]
        if kind == "typed":
            page = _typed(rng, fonts)
        elif kind == "texture":
            page = _texture(rng)
        else:
            draw = {"scribble": _scribble, "strokes": _random_strokes, "doodle": _doodle, "hand": _handwritten}[kind]
            strokes = draw(rng)
            page = _draw(strokes, rng, PEN_RANGE[kind])
        if kind == "texture" or rng.random() < PHOTO_CHANCE:
            page = _photo(page, rng)
        try:
            digit = to_mnist(page)
        except ImageError:  # a texture faint enough to be blank
            continue
        chance_loop = kind == "strokes" and _holes(digit) >= 12
        if _found_the_figure(digit) and not _looks_like_a_one(digit) and not chance_loop:
            return digit
    raise RuntimeError("no non-digit found in MAX_TRIES draws")  # a bug in the generator, not bad input


def _ink_box(digit: torch.Tensor) -> tuple[int, int]:
    """Height and width of the ink (pixels above a quarter of full scale) in a 28×28 image."""
    rows, cols = np.nonzero(digit.numpy() > 64)
    if len(rows) == 0:
        return 0, 0
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def _found_the_figure(digit: torch.Tensor) -> bool:
    """to_mnist scales the figure to fill 20 pixels; a smaller one means it took shading for ink (the box held both).

    Such images are left out: a digit photographed in that light comes out as small, and the network must not learn
    that small means "not a digit"."""
    return max(_ink_box(digit)) >= 16


def _holes(digit: torch.Tensor) -> int:
    """Pixels of background the ink encloses. Random strokes that happen to close a loop draw a 0, a 6, an 8 or a 9
    far more often than anything else (faces, stars, letters are drawn with their loops on purpose)."""
    background = digit.numpy() <= 64
    outside = np.zeros_like(background)
    outside[[0, -1], :], outside[:, [0, -1]] = background[[0, -1], :], background[:, [0, -1]]
    while True:  # flood the background from the border
        grown = outside.copy()
        grown[1:] |= outside[:-1]
        grown[:-1] |= outside[1:]
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown &= background
        if np.array_equal(grown, outside):
            return int((background & ~outside).sum())
        outside = grown


def _looks_like_a_one(digit: torch.Tensor) -> bool:
    """A 1 at any slant: ink much taller than wide (it becomes a 1 once scaled to 20 pixels high), or ink lying along
    one line within 50° of vertical (a stroke with a stray dot beside it, an i). On MNIST's test set the two take
    1,114 of the 1,135 1s and 193 of the 8,865 other digits (the most: 53 narrow 7s)."""
    height, width = _ink_box(digit)
    if width < 0.45 * height:
        return True
    ink = digit.numpy().astype(np.float64)
    ys, xs = np.indices(ink.shape, dtype=np.float64)
    mass = ink.sum()
    dy, dx = ys - (ink * ys).sum() / mass, xs - (ink * xs).sum() / mass
    cov = np.array([[(ink * dy * dy).sum(), (ink * dy * dx).sum()], [(ink * dy * dx).sum(), (ink * dx * dx).sum()]])
    spread, axes = np.linalg.eigh(cov / mass)  # ascending: the major axis is the last column, (dy, dx)
    from_vertical = math.degrees(math.acos(min(1.0, abs(float(axes[0, 1])))))
    return float(spread[0] / spread[1]) < 0.35 ** 2 and from_vertical < 50


@cache
def _fonts() -> list[tuple[Path, str]]:
    """Each font with the characters it has a glyph for (PIL would draw a missing one as a box: a 0)."""
    missing = [name for name in FONTS if not (FONT_DIR / name).is_file()]
    if missing:
        raise OutlierDataError(f"fonts for the typed outliers are missing ({', '.join(missing)} under {FONT_DIR}): "
                               f"install them with `apt-get install fonts-dejavu-core fonts-liberation`")
    found = []
    for name in FONTS:
        font = ImageFont.truetype(str(FONT_DIR / name), 48)
        tofu = _glyph(font, "\uffff")  # what this font draws for a character it lacks
        found.append((FONT_DIR / name, "".join(c for c in CHARACTERS if _glyph(font, c) != tofu)))
    return found


def _glyph(font: ImageFont.FreeTypeFont, char: str) -> bytes:
    """The pixels ``font`` draws for ``char``: equal to those of a character it lacks means it lacks this one too."""
    sheet = Image.new("L", (96, 96))
    ImageDraw.Draw(sheet).text((8, 8), char, font=font, fill=255)
    return sheet.tobytes()


# Strokes are lists of (k, 2) point arrays in arbitrary units; _draw scales them onto the canvas.
Strokes = list[np.ndarray]


def _smooth_noise(rng: np.random.Generator, k: int, knots: int, scale: float) -> np.ndarray:
    """A smooth random function sampled at ``k`` points: ``knots`` random values, linearly interpolated and smoothed."""
    values = rng.normal(0, scale, knots + 1)
    xs = np.linspace(0, knots, k)
    wobble = np.interp(xs, np.arange(knots + 1), values)
    kernel = np.hanning(max(3, k // max(knots, 1)))
    padded = np.pad(wobble, len(kernel), mode="edge")
    return np.convolve(padded, kernel / kernel.sum(), mode="same")[len(kernel):-len(kernel)]


def _pen_curve(rng: np.random.Generator, steps: int, bend: float, wiggle: float) -> np.ndarray:
    """A hand-drawn curve: unit steps whose heading turns with a smooth random curvature (``bend`` its mean size,
    ``wiggle`` how much it varies), as a pen moved by hand, not a geometric figure."""
    knots = int(rng.integers(2, 5)) + steps // 30  # a long stroke changes its mind more often, or it coils up
    turn = rng.normal(0, bend) + _smooth_noise(rng, steps, knots, wiggle)
    heading = rng.uniform(0, 2 * math.pi) + np.cumsum(turn)
    return np.cumsum(np.stack([np.cos(heading), np.sin(heading)], 1), 0)


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    """Points (x, y) turned by ``angle`` radians about the origin."""
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _jitter(points: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """A hand's unsteadiness along a path: smooth, small offsets."""
    k = len(points)
    dx = _smooth_noise(rng, k, max(2, k // 12), amount)
    dy = _smooth_noise(rng, k, max(2, k // 12), amount)
    return points + np.stack([dx, dy], 1)


def _scribble(rng: np.random.Generator) -> Strokes:
    """One long stroke that no digit is: loops along a wandering line, a back-and-forth scribble, a telephone cord
    or a wave, or a spiral.

    Simple single strokes (an arc, a hook, a line, a loop) are what digits are made of, so none are drawn alone.
    """
    style = rng.choice(4, p=(0.3, 0.3, 0.3, 0.1))  # spirals are few: their middle is a small ring
    if style == 0:  # loops of varying size along a wandering path (kept apart: loops on one spot are a re-traced 0)
        k = int(rng.integers(150, 300))
        t = np.linspace(0, rng.uniform(3, 6) * 2 * math.pi, k) * rng.choice([-1.0, 1.0])
        radius = np.exp(_smooth_noise(rng, k, 4, 0.3)) * rng.uniform(0.2, 0.4)
        wander = _pen_curve(rng, k, 0.0, 0.03) / k * rng.uniform(1.5, 3.0)
        across, down = wander[-1] - wander[0]  # mostly sideways, as writing goes: a column of loops is an 8 or a 3
        wander = _rotate(wander, rng.uniform(-0.6, 0.6) - math.atan2(down, across))
        return [wander + radius[:, None] * np.stack([np.cos(t), np.sin(t)], 1)]
    if style == 1:  # scribbling out: a zigzag back and forth, drifting sideways
        t = np.linspace(0, 1, int(rng.integers(120, 260)))
        zig = np.sin(2 * math.pi * rng.uniform(4, 9) * t + rng.uniform(0, 6)) * rng.uniform(0.4, 1.0)
        path = np.stack([t * rng.uniform(1.2, 2.5), zig], 1)
        return [_jitter(_rotate(path, rng.uniform(0, math.pi)), rng, 0.05)]
    if style == 2:  # a telephone cord of loops or a wave, mostly sideways
        t = np.linspace(0, rng.uniform(3, 6) * 2 * math.pi, int(rng.integers(150, 300)))
        loop = rng.uniform(0.3, 1.6)
        path = np.stack([t * rng.uniform(0.15, 0.4) - loop * 0.5 * np.sin(t), -np.cos(t)], 1)
        return [_jitter(path, rng, 0.06) @ np.diag([1.0, rng.choice([-1.0, 1.0])])]
    turns = rng.uniform(2.2, 4)  # a spiral of more than two turns (one turn would be a 0 or a 6)
    theta = np.linspace(0, turns * 2 * math.pi, int(rng.integers(150, 300)))
    r = 0.15 + theta / theta[-1]
    return [_jitter(np.stack([r * np.cos(theta), r * np.sin(theta)], 1), rng, 0.04)]


def _random_strokes(rng: np.random.Generator) -> Strokes:
    """Three or four strokes drawn over each other: curves, lines, ticks and dots, anywhere in a shared box.

    Not two, and the curves gentle: two strokes are the commonest way for chance to draw a 4 or a 7 (two lines) or a
    2, a 6 or a 9 (a hook and a line); the doodles draw their two-stroke figures (crosses, arrows) on purpose."""
    strokes = []
    for _ in range(int(rng.integers(3, 5))):
        shape = rng.random()
        if shape < 0.5:
            path = _pen_curve(rng, int(rng.integers(20, 80)), 0.03, 0.08)
        elif shape < 0.85:  # a line with a slight bow
            path = _pen_curve(rng, int(rng.integers(20, 60)), 0.0, 0.02)
        else:  # a dot
            path = np.zeros((1, 2))
        path = path - path.mean(0)
        span = max(float(np.ptp(path, 0).max()), 1.0)
        strokes.append(path / span * rng.uniform(0.4, 1.0) + rng.uniform(-0.5, 0.5, 2))
    return strokes


def _circle(k: int, start: float = 0.0, extent: float = 2 * math.pi) -> np.ndarray:
    theta = np.linspace(start, start + extent, k)
    return np.stack([np.cos(theta), np.sin(theta)], 1)


def _doodle(rng: np.random.Generator) -> Strokes:
    """A quick drawing of a common non-digit figure, by hand (jittered, skewed): faces, stars, arrows, crosses..."""
    style = int(rng.integers(9))
    if style == 0:  # a face: the ring alone would be a 0, its eyes and mouth are what make it not one
        eye = rng.uniform(0.25, 0.4)
        r = rng.uniform(0.4, 0.6)
        mouth = _circle(20, math.pi * 0.2, math.pi * 0.6) * r  # a smile, or turned over a frown: below the eyes
        if rng.random() < 0.3:
            mouth = mouth * [1, -1] + [0, 1.7 * r]
        strokes = [_circle(60, rng.uniform(0, 6)), np.array([[-eye, -0.3]]), np.array([[eye, -0.3]]), mouth]
    elif style == 1:  # a star, drawn in one go
        k = int(rng.choice([5, 5, 7]))
        step = 2 if k == 5 else 3
        points = _circle(k + 1, -math.pi / 2, 2 * math.pi)[:-1]
        strokes = [points[[(i * step) % k for i in range(k + 1)]]]
    elif style == 2:  # an arrow
        head = rng.uniform(0.25, 0.45)
        strokes = [np.array([[-1.0, 0.0], [1.0, 0.0]]), np.array([[1 - head, -head], [1.0, 0.0], [1 - head, head]])]
    elif style == 3:  # a cross or an X, or an asterisk
        arms = int(rng.choice([2, 2, 3, 4]))
        angle = rng.uniform(0, math.pi)
        strokes = [np.array([[-math.cos(a), -math.sin(a)], [math.cos(a), math.sin(a)]])
                   for a in angle + np.arange(arms) * math.pi / arms]
    elif style == 4:  # a hash or a grid
        k = int(rng.integers(2, 4))
        at = np.linspace(-0.5, 0.5, k)
        strokes = [np.array([[x, -1.0], [x, 1.0]]) for x in at] + [np.array([[-1.0, y], [1.0, y]]) for y in at]
    elif style == 5:  # a triangle (or a house: a square with a roof)
        strokes = [np.array([[-1.0, 0.8], [0.0, -0.9], [1.0, 0.8], [-1.0, 0.8]])]
        if rng.random() < 0.4:
            strokes = [np.array([[-0.8, -0.1], [-0.8, 1.0], [0.8, 1.0], [0.8, -0.1]]),
                       np.array([[-1.0, 0.0], [0.0, -1.0], [1.0, 0.0]])]
    elif style == 6:  # a sun: a ring with rays
        rays = int(rng.integers(6, 11))
        strokes = [_circle(40) * 0.45] + [np.array([[0.6 * math.cos(a), 0.6 * math.sin(a)],
                                                     [math.cos(a), math.sin(a)]])
                                          for a in np.linspace(0, 2 * math.pi, rays, endpoint=False)]
    elif style == 7:  # a heart
        t = np.linspace(0, 2 * math.pi, 70)
        strokes = [np.stack([16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t)
                                                      - np.cos(4 * t))], 1) / 16]
    else:  # a few dots: a single tap is the smallest thing a page gets
        strokes = [rng.uniform(-1, 1, (1, 2)) for _ in range(int(rng.integers(1, 5)))]
    skew = np.array([[rng.uniform(0.75, 1.25), rng.uniform(-0.25, 0.25)], [rng.uniform(-0.2, 0.2), 1.0]])
    angle = rng.uniform(-0.35, 0.35)
    return [_rotate(_jitter(_densify(s), rng, 0.03) @ skew, angle) for s in strokes]


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, extent: float) -> list[list[float]]:
    """Points of an elliptic arc in a letter's box (y down: 90° is the bottom), angles in degrees."""
    return (_circle(12, math.radians(start), math.radians(extent)) * [rx, ry] + [cx, cy]).tolist()


# Letters and symbols of CHARACTERS as a hand writes them: strokes in a unit box, x right, y down (lowercase letters
# from 0.4 down, with their ascenders and descenders). Typed glyphs alone taught the network what fonts look like,
# not what a pen on the page does with the same letters.
_BOWL = [[0, 0], [0.45, 0], *_arc(0.45, 0.25, 0.3, 0.25, -90, 180), [0.45, 0.5], [0, 0.5]]  # P's and R's
HANDWRITTEN: Mapping[str, list[list[list[float]]]] = {
    "A": [[[0, 1], [0.5, 0], [1, 1]], [[0.22, 0.62], [0.78, 0.62]]],
    "E": [[[0.9, 0], [0, 0], [0, 1], [0.9, 1]], [[0, 0.5], [0.7, 0.5]]],
    "F": [[[0.9, 0], [0, 0], [0, 1]], [[0, 0.48], [0.7, 0.48]]],
    "H": [[[0, 0], [0, 1]], [[0.8, 0], [0.8, 1]], [[0, 0.5], [0.8, 0.5]]],
    "K": [[[0, 0], [0, 1]], [[0.8, 0], [0, 0.6]], [[0.25, 0.42], [0.85, 1]]],
    "L": [[[0, 0], [0, 1], [0.7, 1]]],
    "M": [[[0, 1], [0.08, 0], [0.5, 0.65], [0.92, 0], [1, 1]]],
    "N": [[[0, 1], [0, 0], [0.8, 1], [0.8, 0]]],
    "P": [[[0, 1], [0, 0]], _BOWL],
    "R": [[[0, 1], [0, 0]], _BOWL, [[0.3, 0.5], [0.85, 1]]],
    "U": [[[0, 0], [0, 0.6], *_arc(0.4, 0.6, 0.4, 0.4, 180, -180), [0.8, 0]]],
    "V": [[[0, 0], [0.5, 1], [1, 0]]],
    "W": [[[0, 0], [0.25, 1], [0.5, 0.3], [0.75, 1], [1, 0]]],
    "X": [[[0, 0], [1, 1]], [[1, 0], [0, 1]]],
    "d": [_arc(0.35, 0.72, 0.33, 0.28, 0, 360), [[0.7, 0], [0.7, 1]]],
    "h": [[[0, 0], [0, 1]], [[0, 0.62], *_arc(0.33, 0.62, 0.33, 0.2, 180, 180), [0.66, 1]]],
    "k": [[[0, 0], [0, 1]], [[0.6, 0.4], [0, 0.75]], [[0.2, 0.65], [0.65, 1]]],
    "m": [[[0, 0.4], [0, 1]], [[0, 0.55], *_arc(0.25, 0.55, 0.25, 0.13, 180, 180), [0.5, 1]],
          [[0.5, 0.55], *_arc(0.75, 0.55, 0.25, 0.13, 180, 180), [1, 1]]],
    "n": [[[0, 0.4], [0, 1]], [[0, 0.58], *_arc(0.3, 0.58, 0.3, 0.16, 180, 180), [0.6, 1]]],
    "p": [[[0, 0], [0, 1]], _arc(0.3, 0.28, 0.3, 0.26, 0, 360)],
    "u": [[[0, 0.4], [0, 0.8], *_arc(0.3, 0.8, 0.3, 0.2, 180, -180)], [[0.6, 0.4], [0.6, 1]]],
    "%": [_arc(0.2, 0.2, 0.15, 0.18, 0, 360), _arc(0.8, 0.8, 0.15, 0.18, 0, 360), [[0.9, 0], [0.1, 1]]],
    "=": [[[0, 0.35], [1, 0.35]], [[0, 0.65], [1, 0.65]]],
    "<": [[[1, 0], [0, 0.5], [1, 1]]],
    ">": [[[0, 0], [1, 0.5], [0, 1]]],
    "π": [[[0, 0.1], [1, 0.1]], [[0.3, 0.1], [0.25, 1]], [[0.7, 0.1], [0.75, 1]]],
    "И": [[[0, 0], [0, 1], [0.8, 0], [0.8, 1]]],
    "Л": [[[0, 1], [0.3, 0], [0.8, 0], [0.8, 1]]],
    "Ш": [[[0, 0], [0, 1], [1, 1], [1, 0]], [[0.5, 0], [0.5, 1]]],
    "Ж": [[[0.5, 0], [0.5, 1]], [[0, 0], [0.5, 0.5], [1, 0]], [[0, 1], [0.5, 0.5], [1, 1]]],
}


def _handwritten(rng: np.random.Generator) -> Strokes:
    """A letter or symbol of HANDWRITTEN as a hand writes it: its corners moved a little, wider or narrower, then
    jittered, skewed and turned as the doodles are."""
    strokes = HANDWRITTEN[list(HANDWRITTEN)[rng.integers(len(HANDWRITTEN))]]
    wide = np.array([rng.uniform(0.7, 1.3), 1.0])
    moved = [(np.array(s, dtype=np.float64) + rng.normal(0, 0.04, (len(s), 2))) * wide for s in strokes]
    skew = np.array([[1.0, 0.0], [rng.uniform(-0.3, 0.3), 1.0]])  # slanted writing, either way
    angle = rng.uniform(-0.25, 0.25)
    return [_rotate(_jitter(_densify(s), rng, 0.025) @ skew, angle) for s in moved]


def _densify(points: np.ndarray, per_unit: float = 30) -> np.ndarray:
    """Points every 1/per_unit along a polyline: more, so the hand's jitter bends straight segments too, or fewer,
    so the pen is not drawn again and again over the same spot (PIL joins every vertex in Python)."""
    if len(points) < 2:
        return points
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    dist = np.concatenate([[0.0], np.cumsum(seg)])
    at = np.linspace(0, dist[-1], max(2, int(dist[-1] * per_unit) + 1))
    return np.stack([np.interp(at, dist, points[:, 0]), np.interp(at, dist, points[:, 1])], 1)


def _draw(strokes: Strokes, rng: np.random.Generator, pen: tuple[float, float]) -> Image.Image:
    """Strokes drawn on the page as the browser draws them: black on white, round pen, the figure 30–90 % of the
    canvas. What the network sees of the pen is its width relative to the figure (once scaled to 20×20), drawn
    log-uniformly from ``pen`` (the page's pen on a digit drawn 3/4 of the canvas high is 10 %)."""
    points = np.concatenate(strokes)
    low, high = points.min(0), points.max(0)
    span = float(max((high - low).max(), 1e-6))
    size = rng.uniform(0.3, 0.9) * CANVAS
    dots = all(len(stroke) == 1 for stroke in strokes)  # taps spread wide with a thin pen would be specks
    width = size * (rng.uniform(0.2, 0.45) if dots else math.exp(rng.uniform(math.log(pen[0]), math.log(pen[1]))))
    size = min(size, CANVAS - width)
    scale = size / span
    extent = (high - low) * scale
    origin = rng.uniform(width / 2, np.maximum(CANVAS - width / 2 - extent, width / 2 + 1))
    page = Image.new("L", (CANVAS, CANVAS), 255)
    draw = ImageDraw.Draw(page)
    for stroke in strokes:
        xy = [tuple(p) for p in _densify((stroke - low) * scale + origin, 1.5 / max(width, 4))]
        w = width * rng.uniform(0.85, 1.15)
        if len(xy) > 1:
            draw.line(xy, fill=0, width=max(1, round(w)), joint="curve")
        else:  # a dot, at least 8 % of the figure: a thinner one fades away at 28×28 (a face without its eyes is a 0)
            w = max(w, 0.08 * size)
        for x, y in (xy[0], xy[-1]):  # round caps; a single point is a dot
            draw.ellipse((x - w / 2, y - w / 2, x + w / 2, y + w / 2), fill=0)
    return page


def _typed(rng: np.random.Generator, fonts: list[tuple[Path, str]]) -> Image.Image:
    """A typed character (sometimes a short word) in one of the fonts, at a size, weight and slant of its own."""
    path, chars = fonts[rng.integers(len(fonts))]
    if rng.random() < 0.15:
        letters = "".join(c for c in WORDS_FROM if c in chars)
        text = "".join(letters[i] for i in rng.integers(len(letters), size=int(rng.integers(2, 4))))
    else:
        text = chars[rng.integers(len(chars))]
    font = ImageFont.truetype(str(path), int(rng.integers(60, 170)))
    bold = int(rng.integers(0, 4))
    left, top, right, bottom = font.getbbox(text, stroke_width=bold)
    margin = 10
    sheet = Image.new("L", (right - left + 2 * margin, bottom - top + 2 * margin), 255)
    ImageDraw.Draw(sheet).text((margin - left, margin - top), text, font=font, fill=0, stroke_width=bold, stroke_fill=0)
    shear = rng.uniform(-0.3, 0.3)  # slanted type (italic-like), either way
    sheet = sheet.transform(sheet.size, Image.Transform.AFFINE, (1, shear, -shear * sheet.height / 2, 0, 1, 0),
                            Image.Resampling.BILINEAR, fillcolor=255)
    sheet = sheet.rotate(rng.uniform(-15, 15), Image.Resampling.BILINEAR, expand=True, fillcolor=255)
    fit = min(1.0, (CANVAS - 20) / max(sheet.size))
    if fit < 1:
        sheet = sheet.resize((max(1, round(sheet.width * fit)), max(1, round(sheet.height * fit))),
                             Image.Resampling.BILINEAR)
    page = Image.new("L", (CANVAS, CANVAS), 255)
    page.paste(sheet, (int(rng.integers(0, CANVAS - sheet.width + 1)), int(rng.integers(0, CANVAS - sheet.height + 1))))
    return page


def _texture(rng: np.random.Generator) -> Image.Image:
    """A photo of no drawing at all: blotches and smudges on paper, shadows."""
    knots = int(rng.integers(3, 9))
    field = rng.normal(0, 1, (knots, knots)).astype(np.float32)
    smooth = np.asarray(Image.fromarray(field).resize((CANVAS, CANVAS), Image.Resampling.BICUBIC))
    level = rng.uniform(0.2, 1.0)
    pixels = 255 - np.clip(smooth - level, 0, None) * rng.uniform(60, 200)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _photo(page: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The page as a phone photo of ink on paper: grey paper and ink, uneven light, sensor noise, blur.

    The noise is blurred with the image, as a camera's is by demosaicing and compression: sharp pixel noise strong
    enough to see would make to_mnist take stray pixels for ink (real photos then fail the same way)."""
    paper, pen = rng.uniform(160, 245), rng.uniform(0, 80)
    pixels = pen + np.asarray(page, dtype=np.float32) * ((paper - pen) / 255)
    ramp = np.linspace(-0.5, 0.5, CANVAS, dtype=np.float32)
    direction, shade = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.1)
    light = 1 - shade * (0.5 + ramp[None, :] * math.cos(direction) + ramp[:, None] * math.sin(direction))
    noise = rng.standard_normal((CANVAS, CANVAS), dtype=np.float32) * rng.uniform(2, 12)
    photo = Image.fromarray(np.clip(pixels * light + noise, 0, 255).astype(np.uint8))
    return photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.7, 3)))

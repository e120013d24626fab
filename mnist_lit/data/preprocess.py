"""Real-world images → MNIST-style 28×28 digits, made the way MNIST itself was made.

MNIST digits are white on black, their ink fits a 20×20 box (aspect ratio kept, anti-aliased), and they are placed in a
28×28 field so that their centre of mass sits at pixel (14, 14) (LeCun et al.). A network trained on MNIST has only
ever seen digits like that: a photo or a scan of a dark digit on white paper, of any size and anywhere in the frame,
must be brought to that form first, or the predictions are close to chance.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps

from mnist_lit.common.errors import UserError, one_line

FIELD = 28  # MNIST images are 28×28 ...
BOX = 20  # ... with the digit scaled to fit a 20×20 box ...
CENTRE = 14.0  # ... and its centre of mass at row 14, column 14 (pixel indices; measured mean on MNIST: 14.0, 14.0)
MIN_CONTRAST = 24  # grey levels (of 255) the ink must stand out from the background by; less is a blank image
BBOX_FRACTION = 0.1  # pixels above this fraction of the strongest ink count when finding the digit's bounding box


class ImageError(UserError):
    """A file that cannot be turned into a digit (unreadable, truncated, too large, blank); the message names it."""


class BlankImageError(ImageError):
    """An image with no ink in it: a valid answer for the drawing page (nothing drawn yet), not a broken file."""


def load_image(path: str | Path | BinaryIO, name: str | None = None) -> Image.Image:
    """Open any image file as an 8-bit ``L`` or ``RGB`` image, upright, fully decoded, transparency on white.

    ``path`` may also be an open binary file (the server's uploads); ``name`` then names it in messages.
    Every failure is an :class:`ImageError` naming the file. The full decode happens here (``load()``), so a truncated
    file fails here rather than half-way through a batch; an image with more pixels than ``Image.MAX_IMAGE_PIXELS``
    is refused before it is decoded (PIL only warns below twice that limit, which would let a small file claim gigabytes
    of memory); EXIF orientation is applied because phones store photos sideways and say so only in EXIF.
    """
    if isinstance(path, str):
        path = Path(path)
    label = name or path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                upright = ImageOps.exif_transpose(img)  # a new image: still valid once the file is closed
                return flatten(upright)
    except ImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageError(f"{label}: image too large (more than {Image.MAX_IMAGE_PIXELS:,} pixels), "
                         f"refused as a possible decompression bomb") from None
    except FileNotFoundError:
        raise ImageError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{label}: is a folder, not an image") from None
    except PermissionError:
        raise ImageError(f"{label}: permission denied") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{label}: not an image (unrecognised file format)") from None
    except Exception as err:  # decoders raise OSError, SyntaxError, ValueError, struct.error, EOFError, ...
        raise ImageError(f"{label}: unreadable or truncated image ({type(err).__name__}: {one_line(err)})") from None


def flatten(image: Image.Image) -> Image.Image:
    """Any PIL mode → 8-bit ``L`` or ``RGB``: transparency composited onto white, 16/32-bit scaled (not clipped).

    Onto white because a transparent background is what drawing programs give a digit drawn in black; the colour
    stored under transparent pixels is arbitrary (often black) and must not be read as ink. PIL's own ``convert('L')``
    of 16-bit data clips at 255 instead of scaling, which would turn most 16-bit scans white.
    """
    if image.mode in ("L", "RGB"):
        return image
    if image.mode == "1":
        return image.convert("L")
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = float(pixels.max(initial=0.0))
        full_scale = 255.0 if top <= 255 else 65535.0 if top <= 65535 else top  # 8-bit data stored wide, 16-bit, other
        return Image.fromarray(np.clip(np.round(pixels * (255.0 / full_scale)), 0, 255).astype(np.uint8))
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV, ...


def _grey_array(image: Image.Image) -> np.ndarray:
    """8-bit grayscale pixels of any image, as a uint8 array (H, W)."""
    return np.asarray(flatten(image).convert("L"), dtype=np.uint8)


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Float resampling with PIL's Lanczos filter, which low-passes when shrinking (antialiased, as MNIST's digits)."""
    resized = Image.fromarray(pixels.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)  # size is (W, H)
    return np.clip(np.asarray(resized, dtype=np.float32), 0, 255)


def _border(pixels: np.ndarray) -> np.ndarray:
    """The image's outer ring (2% of the shorter side, at least one pixel): where the background shows."""
    h, w = pixels.shape
    k = max(1, min(h, w) // 50)
    return np.concatenate([pixels[:k].ravel(), pixels[-k:].ravel(), pixels[:, :k].ravel(), pixels[:, -k:].ravel()])


def to_mnist(image: Image.Image, preprocess: bool = True) -> torch.Tensor:
    """A PIL image → uint8 tensor (28, 28), white digit on black as in MNIST.

    With ``preprocess`` (for photos, scans and drawings): a light background (median of the border above 127) is
    inverted; the background level is subtracted and the strongest ink stretched to 255; the digit's bounding box is
    cropped, scaled to fit 20×20 keeping its aspect ratio, and placed in the 28×28 field with its centre of mass at
    (14, 14). Raises :class:`ImageError` ("no ink found") for a blank image. Without ``preprocess`` the image is only
    made grayscale and resized to 28×28: for images that are MNIST-like already.
    """
    grey = _grey_array(image)
    if not preprocess:
        return torch.from_numpy(np.round(_resize(grey, (FIELD, FIELD))).astype(np.uint8))

    if np.median(_border(grey)) > 127:
        grey = 255 - grey  # dark ink on light paper → light ink on dark, as MNIST
    border = _border(grey)
    background = float(np.median(border))
    ink = np.clip(grey.astype(np.int16) - int(round(background)), 0, 255).astype(np.uint8)
    strongest = int(ink.max())
    noise = float(np.percentile(_border(ink), 95))  # what the background itself reaches (paper grain, JPEG noise)
    if strongest - noise < MIN_CONTRAST:
        raise BlankImageError(f"no ink found (the image is blank: contrast {strongest - noise:.0f} of 255 "
                              f"is below {MIN_CONTRAST})")

    rows, cols = np.nonzero(ink > noise + BBOX_FRACTION * (strongest - noise))
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    # Ink from the noise level up to the strongest stroke is stretched to 0–255: MNIST strokes are saturated and its
    # background is exactly 0, while a photo's pencil may be grey and its paper is never uniform.
    digit = np.clip((ink[top:bottom, left:right].astype(np.float32) - noise) * (255.0 / (strongest - noise)), 0, 255)

    h, w = digit.shape
    scale = BOX / max(h, w)
    digit = _resize(digit, (max(1, round(w * scale)), max(1, round(h * scale))))

    mass = digit.sum()
    ys, xs = np.indices(digit.shape)
    com_y, com_x = (ys * digit).sum() / mass, (xs * digit).sum() / mass
    # Integer shift, as the original: a sub-pixel shift would blur the strokes.
    dy, dx = int(round(CENTRE - com_y)), int(round(CENTRE - com_x))
    field = np.zeros((FIELD, FIELD), np.float32)
    dh, dw = digit.shape
    y0, x0 = max(dy, 0), max(dx, 0)
    y1, x1 = min(dy + dh, FIELD), min(dx + dw, FIELD)
    field[y0:y1, x0:x1] = digit[y0 - dy : y1 - dy, x0 - dx : x1 - dx]
    return torch.from_numpy(np.round(field).astype(np.uint8))


def load_mnist(path: str | Path | BinaryIO, preprocess: bool = True, name: str | None = None) -> torch.Tensor:
    """:func:`load_image` then :func:`to_mnist`; every failure is an :class:`ImageError` that names the file."""
    image = load_image(path, name)
    try:
        return to_mnist(image, preprocess)
    except ImageError as err:
        raise type(err)(f"{name or path}: {err}") from None  # a BlankImageError stays one

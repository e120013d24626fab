"""Pictures a person looks at: the confusion matrix as a heat map, captioned digit grids, training curves.

Drawn with PIL's ``ImageDraw`` and its built-in font, which is already installed (torchvision needs PIL) and writes
nothing to disk: matplotlib, the usual choice, builds a font cache in the home folder when it is imported. Plain
torch and PIL, no Lightning: the callbacks in ``callbacks.py`` decide when to draw and where the picture goes.
"""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw, ImageFont

WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (150, 150, 150)
SPLIT_COLOURS = {"train": (31, 119, 180), "val": (255, 127, 14), "test": (44, 160, 44)}


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size)  # PIL's embedded font: read from memory, no file, no cache


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL RGB image as the uint8 (3, H, W) tensor TensorBoard's ``add_image`` takes."""
    return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(image.height, image.width, 3) \
        .permute(2, 0, 1)


def confusion_image(matrix: torch.Tensor, cell: int = 44) -> Image.Image:
    """A 10×10 confusion matrix (rows: true digit, columns: predicted) as a heat map with the count in each cell.

    A cell's colour is its share of the row (of that true digit's images), so the diagonal is dark blue and a
    mistake made often enough to matter stands out in orange, whatever the class sizes.
    """
    counts = matrix.detach().cpu().long()
    share = counts.float() / counts.sum(dim=1, keepdim=True).clamp(min=1)
    n = len(counts)
    left, top = 70, 60
    image = Image.new("RGB", (left + n * cell + 10, top + n * cell + 10), WHITE)
    draw = ImageDraw.Draw(image)
    font, small = _font(15), _font(12)
    draw.text((left + n * cell / 2, 8), "predicted", fill=BLACK, font=small, anchor="mt")
    draw.text((6, top + n * cell / 2), "true", fill=BLACK, font=small, anchor="lm")
    for i in range(n):
        draw.text((left + i * cell + cell / 2, top - 8), str(i), fill=BLACK, font=font, anchor="mb")
        draw.text((left - 10, top + i * cell + cell / 2), str(i), fill=BLACK, font=font, anchor="rm")
        for j in range(n):
            s = float(share[i, j])
            if i == j:  # white → dark blue
                colour = tuple(round(255 + (c - 255) * s) for c in (8, 48, 107))
            else:  # white → orange, already strong at a few percent of the row
                colour = tuple(round(255 + (c - 255) * min(1.0, 10 * s)) for c in (230, 85, 13))
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1)
            draw.rectangle(box, fill=colour, outline=(220, 220, 220))
            dark = (i == j and s > 0.5) or (i != j and 10 * s > 0.6)
            draw.text((box[0] + cell / 2, box[1] + cell / 2), str(int(counts[i, j])), font=small,
                      fill=WHITE if dark else BLACK, anchor="mm")
    return image


def captioned_grid(images: torch.Tensor, captions: list[str], columns: int = 8, scale: int = 3) -> Image.Image:
    """Digits (N, 1, 28, 28), any value range (each is stretched to black–white), each with a caption below."""
    x = images.detach().float().cpu().reshape(len(images), *images.shape[-2:])
    low = x.flatten(1).amin(dim=1).view(-1, 1, 1)
    high = x.flatten(1).amax(dim=1).view(-1, 1, 1)
    x = ((x - low) / (high - low).clamp(min=1e-6) * 255).round().to(torch.uint8)
    size, caption_height, pad = 28 * scale, 18, 6
    rows = max(1, -(-len(x) // columns))
    image = Image.new("RGB", (columns * (size + pad) + pad, rows * (size + caption_height + pad) + pad), WHITE)
    draw = ImageDraw.Draw(image)
    font = _font(12)
    for k, (digit, caption) in enumerate(zip(x, captions)):
        left = pad + (k % columns) * (size + pad)
        top = pad + (k // columns) * (size + caption_height + pad)
        tile = Image.fromarray(digit.numpy(), "L").resize((size, size), Image.Resampling.NEAREST)
        image.paste(tile.convert("RGB"), (left, top))
        draw.text((left + size / 2, top + size + 3), caption, fill=BLACK, font=font, anchor="mt")
    return image


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], title: str,
           series: dict[str, list[tuple[int, float]]], epochs: int) -> None:
    """One line chart in ``box`` (left, top, right, bottom): a line per split, epochs on x, the value range on y."""
    left, top, right, bottom = box
    font = _font(13)
    values = [v for points in series.values() for _, v in points]
    draw.text(((left + right) / 2, top - 22), title, fill=BLACK, font=_font(15), anchor="mb")
    draw.rectangle(box, outline=BLACK)
    if not values:
        return
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    span = epochs - 1 or 1

    def xy(epoch: int, value: float) -> tuple[float, float]:
        return (left + (right - left) * epoch / span, bottom - (bottom - top) * (value - low) / (high - low))

    for k in range(5):  # horizontal grid lines with their values
        value = low + (high - low) * k / 4
        y = xy(0, value)[1]
        draw.line((left, y, right, y), fill=(230, 230, 230))
        draw.text((left - 6, y), f"{value:.4g}", fill=BLACK, font=font, anchor="rm")
    step = max(1, epochs // 10)
    for epoch in range(0, epochs, step):
        draw.text((xy(epoch, low)[0], bottom + 6), str(epoch), fill=BLACK, font=font, anchor="mt")
    draw.text(((left + right) / 2, bottom + 24), "epoch", fill=GREY, font=font, anchor="mt")
    for k, (split, points) in enumerate(series.items()):
        colour = SPLIT_COLOURS.get(split, GREY)
        coords = [xy(e, v) for e, v in points]
        if len(coords) > 1:
            draw.line(coords, fill=colour, width=2)
        for cx, cy in coords:
            draw.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), fill=colour)
        draw.text((right - 60, top + 10 + 18 * k), split, fill=colour, font=font)


def curves_image(loss: dict[str, list[tuple[int, float]]], accuracy: dict[str, list[tuple[int, float]]]) -> Image.Image:
    """Loss and accuracy per epoch, a line per split ({"train": [(epoch, value), ...], "val": ..., "test": ...})."""
    epochs = 1 + max((e for series in (loss, accuracy) for points in series.values() for e, _ in points), default=0)
    image = Image.new("RGB", (1100, 440), WHITE)
    draw = ImageDraw.Draw(image)
    _panel(draw, (80, 50, 520, 380), "loss", loss, epochs)
    _panel(draw, (630, 50, 1070, 380), "accuracy", accuracy, epochs)
    return image

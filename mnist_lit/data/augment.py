"""Per-sample random distortions of whole training batches, on the batch's device: other pens, other writers,
other scanners. Plain torch (no Lightning), so it can be tested and benchmarked on its own.

Every image of a batch gets its own random parameters, drawn from a ``torch.Generator`` the caller seeds (the data
module seeds it from the run's seed and the epoch), on the CPU and then moved to the batch's device: the same seed
gives the same distortions on a CPU and on a GPU, and the global random state (dropout, shuffling) is never touched.
``torchvision.transforms.v2`` would draw one set of parameters for the whole batch tensor.

The families, in the order they are applied (each off at its default, so the default :class:`Augmentation` is off):

1. stroke width: a thicker or thinner pen (grey-level dilation or erosion, ``max_pool2d``);
2. resolution and blur: a digit written small or scanned coarsely (down-sampled, then enlarged again), or blurred;
3. geometry: affine (rotation, scale with an aspect change, shear/slant, translation) and an elastic distortion
   (a smooth random displacement field), one ``grid_sample`` for both. The digit is kept inside the 28×28 field: a
   transform that would push its ink (every pixel above ``INK``, blur included) out is scaled down and its
   translation clamped;
4. ink contrast: a grey pencil rather than a black marker (the ink's peak and its grey-level curve).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, PositiveFloat, PositiveInt

from mnist_lit.common.errors import UserError

INK = 0.05  # pixels brighter than this (of 1) are ink: they are kept inside the field


@dataclass
class Affine:
    """Random affine transform of each digit (all 0 = off).

    Args:
        rotation: largest rotation, degrees (uniform in ±rotation).
        scale: largest relative size change (uniform in 1 ± scale).
        aspect: largest relative change of width against height (log-uniform in 1 ± aspect).
        shear: largest slant, degrees (horizontal shear, uniform in ±shear).
        translate: largest shift, pixels, each axis (uniform; clamped so that the ink stays inside the field).
    """

    rotation: NonNegativeFloat = 0.0
    scale: NonNegativeFloat = 0.0
    aspect: NonNegativeFloat = 0.0
    shear: NonNegativeFloat = 0.0
    translate: NonNegativeFloat = 0.0

    def __post_init__(self) -> None:
        if self.scale >= 1 or self.shear >= 90:
            raise UserError(f"--data.augment.affine: scale {self.scale} and shear {self.shear} must be below 1 and "
                            f"90 degrees")


@dataclass
class Elastic:
    """Elastic distortion: a smooth random displacement field, as Simard et al. (2003) used on MNIST (0 = off).

    Args:
        alpha: largest displacement, pixels.
        grid: the random field is drawn on a grid×grid lattice and smoothly (bicubic) enlarged to 28×28: fewer
            points, smoother and wider bends.
    """

    alpha: NonNegativeFloat = 0.0
    grid: PositiveInt = 4


@dataclass
class Stroke:
    """Pen width: grey-level dilation (thicker, 3×3 window) or erosion (thinner, 2×2), blended by a random amount.

    Args:
        p: probability that a digit's pen changes (half thicker, half thinner); 0 = off.
        strength: largest blend towards the full 3×3 dilation or erosion (1 = all the way).
    """

    p: ClosedUnitInterval = 0.0
    strength: ClosedUnitInterval = 1.0


@dataclass
class Resolution:
    """Digits written small or scanned coarsely, and blurred ones.

    Args:
        p_low: probability that a digit is down-sampled to a field of ``low_min``–``low_max`` pixels (area average)
            and enlarged back to 28 (bilinear); 0 = off.
        low_min: smallest down-sampled field, pixels (MNIST's 20-pixel digit box becomes 20·low_min/28 pixels).
        low_max: largest down-sampled field, pixels.
        p_blur: probability of a Gaussian blur; 0 = off.
        blur_sigma: largest blur standard deviation, pixels (uniform in 0.3–blur_sigma).
    """

    p_low: ClosedUnitInterval = 0.0
    low_min: PositiveInt = 10
    low_max: PositiveInt = 18
    p_blur: ClosedUnitInterval = 0.0
    blur_sigma: PositiveFloat = 1.2

    def __post_init__(self) -> None:
        if not self.low_min <= self.low_max <= 28 or self.blur_sigma < 0.3:
            raise UserError(f"--data.augment.resolution: low_min {self.low_min} ≤ low_max {self.low_max} ≤ 28 and "
                            f"blur_sigma {self.blur_sigma} ≥ 0.3 are required")


@dataclass
class Contrast:
    """Ink contrast: a grey pencil rather than a black marker.

    Args:
        p: probability that a digit's ink changes; 0 = off.
        min_peak: the ink's brightest level is scaled to a uniform value in min_peak–1.
        gamma: largest change of the grey-level curve, as a power (log-uniform in 1/gamma–gamma; 1 = none).
    """

    p: ClosedUnitInterval = 0.0
    min_peak: ClosedUnitInterval = 0.5
    gamma: PositiveFloat = 1.0

    def __post_init__(self) -> None:
        if self.gamma < 1:
            raise UserError(f"--data.augment.contrast.gamma {self.gamma}: must be at least 1 (it draws from 1/gamma "
                            f"to gamma)")


@dataclass
class Augmentation:
    """Per-sample random distortions of training batches (validation, test and predict batches never are). Every
    family is off by default, which leaves a recipe's batches and random numbers exactly as without augmentation.

    Args:
        affine: rotation, scale with aspect, shear, translation.
        elastic: smooth random displacement field.
        stroke: thicker and thinner pens.
        resolution: down-sampled (small or coarsely scanned) and blurred digits.
        contrast: grey pencil vs. black marker.
    """

    affine: Affine = field(default_factory=Affine)
    elastic: Elastic = field(default_factory=Elastic)
    stroke: Stroke = field(default_factory=Stroke)
    resolution: Resolution = field(default_factory=Resolution)
    contrast: Contrast = field(default_factory=Contrast)

    @property
    def enabled(self) -> bool:
        a, r = self.affine, self.resolution
        return any([a.rotation, a.scale, a.aspect, a.shear, a.translate, self.elastic.alpha, self.stroke.p,
                    r.p_low, r.p_blur, self.contrast.p])


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _chosen(n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator) < p


def _stroke(x: torch.Tensor, cfg: Stroke, g: torch.Generator) -> torch.Tensor:
    n = len(x)
    amount = _uniform(n, -cfg.strength, cfg.strength, g) * _chosen(n, cfg.p, g)  # > 0 thicker, < 0 thinner
    amount = amount.to(x.device).view(n, 1, 1, 1)
    thick = F.max_pool2d(x, 3, stride=1, padding=1)  # 2 pixels wider
    thin = -F.max_pool2d(-F.pad(x, (0, 1, 0, 1)), 2, stride=1)  # 1 pixel narrower
    # a pen too thin for the digit's own strokes would erase it: those digits keep their stroke
    erased = thin.flatten(1).amax(dim=1) < 0.5 * x.flatten(1).amax(dim=1)
    thin = torch.where(erased.view(n, 1, 1, 1), x, thin)
    return x + amount.clamp(min=0) * (thick - x) + (-amount).clamp(min=0) * (thin - x)


def _ink_box(x: torch.Tensor) -> torch.Tensor:
    """Each image's ink bounding box in normalized coordinates (x0, y0, x1, y1), pixel centres in −1..1."""
    n, _, h, w = x.shape
    ink = x[:, 0] > INK
    rows, cols = ink.any(dim=2), ink.any(dim=1)
    coords_y = torch.arange(h, device=x.device).expand(n, h)
    coords_x = torch.arange(w, device=x.device).expand(n, w)
    y0 = torch.where(rows, coords_y, h).amin(dim=1)
    y1 = torch.where(rows, coords_y, -1).amax(dim=1)
    x0 = torch.where(cols, coords_x, w).amin(dim=1)
    x1 = torch.where(cols, coords_x, -1).amax(dim=1)
    empty = y1 < 0  # a blank image: any box will do
    box = torch.stack([x0, y0, x1, y1], dim=1).float()
    box[empty] = torch.tensor([w / 2, h / 2, w / 2, h / 2], device=x.device)
    size = torch.tensor([w, h, w, h], device=x.device)
    return (2 * box + 1) / size - 1


def _geometry(x: torch.Tensor, affine: Affine, elastic: Elastic, g: torch.Generator) -> torch.Tensor:
    """Affine and elastic in one ``grid_sample``: output pixel p reads the input at A⁻¹(p + d(p))."""
    n, _, h, w = x.shape
    angle = torch.deg2rad(_uniform(n, -affine.rotation, affine.rotation, g))
    shear = torch.tan(torch.deg2rad(_uniform(n, -affine.shear, affine.shear, g)))
    size = _uniform(n, 1 - affine.scale, 1 + affine.scale, g)
    aspect = torch.exp(_uniform(n, -math.log1p(affine.aspect), math.log1p(affine.aspect), g))
    shift = _uniform(2 * n, -1, 1, g).view(n, 2)  # fraction of the room the ink has, each axis
    displacement = None
    if elastic.alpha:
        displacement = _uniform(n * 2 * elastic.grid**2, -1, 1, g).view(n, 2, elastic.grid, elastic.grid)

    # Forward transform A (input → output, normalized coordinates): rotation · shear · (scale × aspect).
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    shearing = torch.eye(2).repeat(n, 1, 1)
    shearing[:, 0, 1] = shear
    scaling = torch.diag_embed(torch.stack([size * aspect.sqrt(), size / aspect.sqrt()], 1))
    forward = (rotation @ shearing @ scaling).to(x.device)

    # Keep the ink off the field's outer ring: its box's transformed corners (pixel centres) stay away from the ring
    # by what bilinear sampling spreads one input pixel to (|A| applied to a pixel) plus the elastic displacement.
    # A transform whose box would not fit is shrunk; then the translation is clamped to the room that is left.
    margin = forward.abs().sum(dim=2) + elastic.alpha  # (n, [x, y]), pixels
    limit = (1 - (2 * margin + 1) / torch.tensor([w, h], device=x.device)).clamp(min=0.1)
    box = _ink_box(x)
    corners = torch.stack([box[:, [0, 1]], box[:, [2, 1]], box[:, [0, 3]], box[:, [2, 3]]], dim=1)  # (n, 4, 2)
    moved = corners @ forward.transpose(1, 2)
    low, high = moved.amin(dim=1), moved.amax(dim=1)
    fit = ((2 * limit) / (high - low).clamp(min=1e-6)).amin(dim=1).clamp(max=1.0)
    forward, low, high = forward * fit.view(n, 1, 1), low * fit.view(n, 1), high * fit.view(n, 1)
    room_low, room_high = -limit - low, limit - high  # the translations that keep it inside lie between the two
    wanted = shift.to(x.device) * torch.tensor([2 * affine.translate / w, 2 * affine.translate / h], device=x.device)
    translation = torch.minimum(torch.maximum(wanted, room_low), room_high)

    ys = (2 * torch.arange(h, device=x.device) + 1) / h - 1
    xs = (2 * torch.arange(w, device=x.device) + 1) / w - 1
    points = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).expand(n, h, w, 2)  # (n, h, w, [x, y])
    if displacement is not None:
        smooth = F.interpolate(displacement.to(x.device), size=(h, w), mode="bicubic", align_corners=True).clamp(-1, 1)
        scale = torch.tensor([2 * elastic.alpha / w, 2 * elastic.alpha / h], device=x.device)
        points = points + smooth.permute(0, 2, 3, 1) * scale
    inverse = torch.linalg.inv(forward)
    grid = (points - translation.view(n, 1, 1, 2)).reshape(n, -1, 2) @ inverse.transpose(1, 2)
    return F.grid_sample(x, grid.view(n, h, w, 2), mode="bilinear", padding_mode="zeros", align_corners=False)


def _shift(x: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Each image moved by its own (x, y) shift in pixels, sub-pixel (bilinear)."""
    n, _, h, w = x.shape
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = -pixels * torch.tensor([2 / w, 2 / h], device=x.device)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _resolution(x: torch.Tensor, cfg: Resolution, g: torch.Generator) -> torch.Tensor:
    """Down-sampled to a random field size (the coarse pixels at a random sub-pixel phase, as a scanner's grid falls
    anywhere on the page) and enlarged back; and/or a Gaussian blur of random width."""
    n, _, h, w = x.shape
    sizes = torch.randint(cfg.low_min, cfg.low_max + 1, (n,), generator=g)
    low = _chosen(n, cfg.p_low, g)
    sigma = _uniform(n, 0.3, cfg.blur_sigma, g)
    blur = _chosen(n, cfg.p_blur, g)
    phase = _uniform(2 * n, -0.5, 0.5, g).view(n, 2) * (h / sizes).view(n, 1)  # where the coarse pixels fall, px
    out = x
    if low.any():
        out = x.clone()
        for size in sizes[low].unique().tolist():  # one resize per size drawn: at most low_max − low_min + 1
            index = (low & (sizes == size)).nonzero().squeeze(1)
            shift = phase[index].to(x.device)
            index = index.to(x.device)
            small = F.interpolate(_shift(x[index], shift), size=(size, size), mode="area")
            out[index] = _shift(F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False), -shift)
    if blur.any():
        radius = math.ceil(2 * cfg.blur_sigma)
        taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (taps / sigma.view(n, 1)) ** 2)
        kernel = torch.where(blur.view(n, 1), kernel, (taps == 0).float())  # identity for the unblurred
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).to(x.device)
        # separable: one grouped convolution along each axis, every image with its own kernel
        out = F.conv2d(out.view(1, n, h, w), kernel.view(n, 1, 1, -1), padding=(0, radius), groups=n)
        out = F.conv2d(out, kernel.view(n, 1, -1, 1), padding=(radius, 0), groups=n).view(n, 1, h, w)
    return out


def _contrast(x: torch.Tensor, cfg: Contrast, g: torch.Generator) -> torch.Tensor:
    n = len(x)
    chosen = _chosen(n, cfg.p, g)
    peak = torch.where(chosen, _uniform(n, cfg.min_peak, 1.0, g), 1.0)
    log_gamma = math.log(cfg.gamma)
    gamma = torch.where(chosen, torch.exp(_uniform(n, -log_gamma, log_gamma, g)), 1.0)
    view = (n, 1, 1, 1)
    return peak.to(x.device).view(view) * x.clamp(0, 1) ** gamma.to(x.device).view(view)


def augment(images: torch.Tensor, cfg: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """uint8 images (N, 28, 28) or (N, 1, 28, 28), 0–255 → float32 (N, 1, 28, 28), 0–255, each image distorted
    with its own parameters from ``generator`` (a CPU generator; its draws do not depend on the batch's device)."""
    x = images.reshape(-1, 1, *images.shape[-2:]).float() / 255
    if cfg.stroke.p:
        x = _stroke(x, cfg.stroke, generator)
    if cfg.resolution.p_low or cfg.resolution.p_blur:
        x = _resolution(x, cfg.resolution, generator)
    a = cfg.affine
    if any([a.rotation, a.scale, a.aspect, a.shear, a.translate, cfg.elastic.alpha]):
        x = _geometry(x, a, cfg.elastic, generator)
    if cfg.contrast.p:
        x = _contrast(x, cfg.contrast, generator)
    return x.clamp(0, 1) * 255

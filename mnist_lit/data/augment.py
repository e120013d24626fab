"""Per-sample random distortions of whole training batches, on the batch's device: other pens, other writers,
other scanners. Plain torch (no Lightning), so it can be tested and benchmarked on its own.

Every image of a batch gets its own random parameters, drawn from a ``torch.Generator`` the caller seeds (the data
module seeds it from the run's seed and the epoch), on the CPU: the same seed draws the same parameters on a CPU and
on a GPU, and the global random state (dropout, shuffling) is never touched. ``torchvision.transforms.v2`` would draw
one set of parameters for the whole batch tensor. On a GPU, a batch's parameters reach it in one pinned buffer, copied
without waiting, and the distortions read nothing back (no ``.item()``, ``.tolist()``, ``nonzero`` or mask index), so
the host never waits for the GPU (tests/test_cuda.py); on the CPU the results are bit for bit those of before.

The families, in the order they are applied (each off at its default, so the default :class:`Augmentation` is off):

1. stroke width: a thicker or thinner pen (grey-level dilation or erosion, ``max_pool2d``);
2. resolution and blur: a digit written small or scanned coarsely (down-sampled, then enlarged again, smoothly or
   in square blocks), or blurred;
3. geometry: affine (rotation, scale with an aspect change, shear/slant, translation) and an elastic distortion
   (a smooth random displacement field), one ``grid_sample`` for both. The digit is kept inside the 28×28 field: a
   transform that would push any of its ink out (the faint edge of a blurred or coarse pixel too: the contrast's
   grey-level curve can darken it) is scaled down and its translation clamped;
4. ink contrast: a grey pencil rather than a black marker (the ink's peak and its grey-level curve).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, PositiveFloat, PositiveInt

from mnist_lit.common.errors import UserError


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
        blocky: share of the down-sampled digits enlarged back with nearest-neighbour pixels instead, as a zoomed
            screenshot or a small drawing enlarged shows them (square blocks); 0 = all bilinear.
        p_blur: probability of a Gaussian blur; 0 = off.
        blur_sigma: largest blur standard deviation, pixels (uniform in 0.3–blur_sigma).
    """

    p_low: ClosedUnitInterval = 0.0
    low_min: PositiveInt = 10
    low_max: PositiveInt = 18
    blocky: ClosedUnitInterval = 0.0
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


class _Parameters:
    """A batch's random parameters (and the few constants the families need), made on the CPU and sent to the batch's
    device together: on a GPU as one pinned buffer in one asynchronous copy, so the host never waits for the GPU
    (a plain ``.to(device)`` from pageable memory waits for all the work already queued). On the CPU the tensors
    are used as they are."""

    def __init__(self) -> None:
        self.cpu: dict[str, torch.Tensor] = {}

    def __setitem__(self, name: str, value: torch.Tensor) -> None:
        self.cpu[name] = value

    def to(self, device: torch.device) -> dict[str, torch.Tensor]:
        return dict(self.cpu) if device.type == "cpu" or not self.cpu else _packed(self.cpu, device)


def _packed(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """``tensors`` (float32, small integers or flags) on ``device`` through one (pinned, for CUDA) float32 buffer."""
    parts = [t.reshape(-1).float() for t in tensors.values()]
    buffer = torch.empty(sum(p.numel() for p in parts), pin_memory=device.type == "cuda")
    torch.cat(parts, out=buffer)
    sent = buffer.to(device, non_blocking=True).split([p.numel() for p in parts])
    return {name: part.view(t.shape).to(t.dtype) for (name, t), part in zip(tensors.items(), sent)}


def _fixed_shapes(x: torch.Tensor) -> bool:
    """Off the CPU every step has the same shapes and never reads back from the device; on the CPU the cheaper
    gathers (of the chosen digits only) stay, driven by the CPU-drawn parameters, which nothing has to wait for."""
    return x.device.type != "cpu"


# ---- the draws, in the order the families are applied (the generator's stream is the same on every device) ----

def _draw_stroke(p: _Parameters, n: int, cfg: Stroke, g: torch.Generator) -> None:
    p["stroke"] = _uniform(n, -cfg.strength, cfg.strength, g) * _chosen(n, cfg.p, g)  # > 0 thicker, < 0 thinner


def _draw_resolution(p: _Parameters, n: int, h: int, w: int, cfg: Resolution, g: torch.Generator) -> None:
    sizes = torch.randint(cfg.low_min, cfg.low_max + 1, (n,), generator=g)
    low = _chosen(n, cfg.p_low, g)
    sigma = _uniform(n, 0.3, cfg.blur_sigma, g)
    blur = _chosen(n, cfg.p_blur, g)
    phase = _uniform(2 * n, -0.5, 0.5, g).view(n, 2) * (h / sizes).view(n, 1)  # where the coarse pixels fall, px
    p["low_size"] = torch.where(low, sizes, 0)  # each digit's coarse field, 0: left alone
    p["low_there"], p["low_back"] = _shift_theta(phase, h, w), _shift_theta(-phase, h, w)
    radius = math.ceil(2 * cfg.blur_sigma)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps / sigma.view(n, 1)) ** 2)
    kernel = torch.where(blur.view(n, 1), kernel, (taps == 0).float())  # identity for the unblurred
    p["blur_kernel"] = kernel / kernel.sum(dim=1, keepdim=True)
    p["blur_any"] = blur.any().view(1)
    if cfg.blocky:  # drawn last, and only when asked: configurations without it keep their random streams
        p["low_blocky"] = _chosen(n, cfg.blocky, g)


def _draw_geometry(p: _Parameters, n: int, h: int, w: int, affine: Affine, elastic: Elastic,
                   g: torch.Generator) -> None:
    angle = torch.deg2rad(_uniform(n, -affine.rotation, affine.rotation, g))
    shear = torch.tan(torch.deg2rad(_uniform(n, -affine.shear, affine.shear, g)))
    size = _uniform(n, 1 - affine.scale, 1 + affine.scale, g)
    aspect = torch.exp(_uniform(n, -math.log1p(affine.aspect), math.log1p(affine.aspect), g))
    shift = _uniform(2 * n, -1, 1, g).view(n, 2)  # fraction of the room the ink has, each axis
    if elastic.alpha:
        p["displacement"] = _uniform(n * 2 * elastic.grid**2, -1, 1, g).view(n, 2, elastic.grid, elastic.grid)
        p["elastic_scale"] = torch.tensor([2 * elastic.alpha / w, 2 * elastic.alpha / h])

    # Forward transform A (input → output, normalized coordinates): rotation · shear · (scale × aspect).
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    shearing = torch.eye(2).repeat(n, 1, 1)
    shearing[:, 0, 1] = shear
    scaling = torch.diag_embed(torch.stack([size * aspect.sqrt(), size / aspect.sqrt()], 1))
    p["forward"] = rotation @ shearing @ scaling
    p["wanted"] = shift * torch.tensor([2 * affine.translate / w, 2 * affine.translate / h])


def _draw_contrast(p: _Parameters, n: int, cfg: Contrast, g: torch.Generator) -> None:
    chosen = _chosen(n, cfg.p, g)
    p["peak"] = torch.where(chosen, _uniform(n, cfg.min_peak, 1.0, g), 1.0)
    log_gamma = math.log(cfg.gamma)
    p["gamma"] = torch.where(chosen, torch.exp(_uniform(n, -log_gamma, log_gamma, g)), 1.0)


# ---- the families, on the batch's device: no host round trip (no .item(), .tolist(), nonzero, mask index) ----

def _stroke(x: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    n = len(x)
    amount = amount.view(n, 1, 1, 1)
    thick = F.max_pool2d(x, 3, stride=1, padding=1)  # 2 pixels wider
    thin = -F.max_pool2d(-F.pad(x, (0, 1, 0, 1)), 2, stride=1)  # 1 pixel narrower
    # a pen too thin for the digit's own strokes would erase it: those digits keep their stroke
    erased = thin.flatten(1).amax(dim=1) < 0.5 * x.flatten(1).amax(dim=1)
    thin = torch.where(erased.view(n, 1, 1, 1), x, thin)
    return x + amount.clamp(min=0) * (thick - x) + (-amount).clamp(min=0) * (thin - x)


def _ink_box(x: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """Each image's ink bounding box (every pixel that is not blank) in normalized coordinates (x0, y0, x1, y1),
    pixel centres in −1..1. ``field``: (w, h), float32, on x's device."""
    n, _, h, w = x.shape
    ink = x[:, 0] > 0
    rows, cols = ink.any(dim=2), ink.any(dim=1)
    coords_y = torch.arange(h, device=x.device).expand(n, h)
    coords_x = torch.arange(w, device=x.device).expand(n, w)
    y0 = torch.where(rows, coords_y, h).amin(dim=1)
    y1 = torch.where(rows, coords_y, -1).amax(dim=1)
    x0 = torch.where(cols, coords_x, w).amin(dim=1)
    x1 = torch.where(cols, coords_x, -1).amax(dim=1)
    empty = y1 < 0  # a blank image: any box will do (the field's centre)
    size = field.repeat(2)  # (w, h, w, h)
    box = torch.where(empty.view(n, 1), size / 2, torch.stack([x0, y0, x1, y1], dim=1).float())
    return (2 * box + 1) / size - 1


def _inverse(forward: torch.Tensor) -> torch.Tensor:
    """Inverses of (n, 2, 2) matrices. On the CPU ``torch.linalg.inv``; elsewhere the closed form, because
    ``linalg.inv`` reads its error flags back to the host (a wait for the GPU)."""
    if not _fixed_shapes(forward):
        return torch.linalg.inv(forward)
    a, b, c, d = forward.flatten(1).unbind(1)
    det = a * d - b * c
    return torch.stack([d, -b, -c, a], dim=1).view(-1, 2, 2) / det.view(-1, 1, 1)


def _geometry(x: torch.Tensor, p: dict[str, torch.Tensor], elastic: Elastic) -> torch.Tensor:
    """Affine and elastic in one ``grid_sample``: output pixel p reads the input at A⁻¹(p + d(p))."""
    n, _, h, w = x.shape
    forward, field = p["forward"], p["field"]

    # Keep the ink off the field's outer ring: its box's transformed corners (pixel centres) stay away from the ring
    # by what bilinear sampling spreads one input pixel to (|A| applied to a pixel) plus the elastic displacement.
    # A transform whose box would not fit is shrunk; then the translation is clamped to the room that is left.
    margin = forward.abs().sum(dim=2) + elastic.alpha  # (n, [x, y]), pixels
    limit = (1 - (2 * margin + 1) / field).clamp(min=0.1)
    x0, y0, x1, y1 = _ink_box(x, field).unbind(1)
    corners = torch.stack([x0, y0, x1, y0, x0, y1, x1, y1], dim=1).view(n, 4, 2)
    moved = corners @ forward.transpose(1, 2)
    low, high = moved.amin(dim=1), moved.amax(dim=1)
    fit = ((2 * limit) / (high - low).clamp(min=1e-6)).amin(dim=1).clamp(max=1.0)
    forward, low, high = forward * fit.view(n, 1, 1), low * fit.view(n, 1), high * fit.view(n, 1)
    room_low, room_high = -limit - low, limit - high  # the translations that keep it inside lie between the two
    translation = torch.minimum(torch.maximum(p["wanted"], room_low), room_high)

    ys = (2 * torch.arange(h, device=x.device) + 1) / h - 1
    xs = (2 * torch.arange(w, device=x.device) + 1) / w - 1
    points = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).expand(n, h, w, 2)  # (n, h, w, [x, y])
    if elastic.alpha:
        smooth = F.interpolate(p["displacement"], size=(h, w), mode="bicubic", align_corners=True).clamp(-1, 1)
        points = points + smooth.permute(0, 2, 3, 1) * p["elastic_scale"]
    inverse = _inverse(forward)
    grid = (points - translation.view(n, 1, 1, 2)).reshape(n, -1, 2) @ inverse.transpose(1, 2)
    return F.grid_sample(x, grid.view(n, h, w, 2), mode="bilinear", padding_mode="zeros", align_corners=False)


def _shift_theta(pixels: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The (n, 2, 3) ``affine_grid`` matrices that move each image by its own (x, y) shift in pixels."""
    theta = torch.zeros(len(pixels), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = -pixels * torch.tensor([2 / w, 2 / h])
    return theta


def _shift_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The ``grid_sample`` grid of ``_shift_theta``'s shifts."""
    return F.affine_grid(theta, [len(theta), 1, h, w], align_corners=False)


def _sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _coarse(shifted: torch.Tensor, back: torch.Tensor, size: int, blocky: torch.Tensor | None) -> torch.Tensor:
    """Digits already moved to their coarse pixels' phase, down-sampled to a size×size field, enlarged back
    (bilinear, or nearest-neighbour where ``blocky``) and moved back (``back``: the grid of the opposite shift)."""
    small = F.interpolate(shifted, size=(size, size), mode="area")
    large = F.interpolate(small, size=shifted.shape[-2:], mode="bilinear", align_corners=False)
    if blocky is not None:
        large = torch.where(blocky.view(-1, 1, 1, 1), F.interpolate(small, size=shifted.shape[-2:]), large)
    return _sample(large, back)


def _resolution(x: torch.Tensor, p: dict[str, torch.Tensor], cfg: Resolution) -> torch.Tensor:
    """Down-sampled to a random field size (the coarse pixels at a random sub-pixel phase, as a scanner's grid falls
    anywhere on the page) and enlarged back; and/or a Gaussian blur of random width."""
    n, _, h, w = x.shape
    out, sizes, there, back, blocky = x, p["low_size"], p["low_there"], p["low_back"], p.get("low_blocky")
    if not _fixed_shapes(x):
        # the chosen digits only, one resize per size drawn (the parameters are CPU tensors: nothing waits)
        if sizes.any():
            out = x.clone()
            for size in sizes[sizes > 0].unique().tolist():  # at most low_max − low_min + 1
                index = (sizes == size).nonzero().squeeze(1)
                shifted = _sample(x[index], _shift_grid(there[index], h, w))
                out[index] = _coarse(shifted, _shift_grid(back[index], h, w), size,
                                     None if blocky is None else blocky[index])
    elif cfg.p_low:
        # every digit at every size, each keeping its own: fixed shapes, nothing read back to the host. The shifts
        # do not depend on the size: their grids and the shifted digits are made once (a launch-bound GPU step
        # spends most of its time making each kernel's launch, not running it).
        shifted, back = _sample(x, _shift_grid(there, h, w)), _shift_grid(back, h, w)
        for size in range(cfg.low_min, cfg.low_max + 1):
            out = torch.where((sizes == size).view(n, 1, 1, 1), _coarse(shifted, back, size, blocky), out)
    if cfg.p_blur and (_fixed_shapes(x) or p["blur_any"].any()):
        kernel = p["blur_kernel"]
        radius = (kernel.shape[1] - 1) // 2
        # separable: one grouped convolution along each axis, every image with its own kernel
        out = F.conv2d(out.view(1, n, h, w), kernel.view(n, 1, 1, -1), padding=(0, radius), groups=n)
        out = F.conv2d(out, kernel.view(n, 1, -1, 1), padding=(radius, 0), groups=n).view(n, 1, h, w)
    return out


def _contrast(x: torch.Tensor, peak: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    view = (len(x), 1, 1, 1)
    return peak.view(view) * x.clamp(0, 1) ** gamma.view(view)


def augment(images: torch.Tensor, cfg: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """uint8 images (N, 28, 28) or (N, 1, 28, 28), 0–255 → float32 (N, 1, 28, 28), 0–255, each image distorted
    with its own parameters from ``generator`` (a CPU generator; its draws do not depend on the batch's device).

    All of a batch's parameters are drawn first, on the CPU, in the order the families are applied, and reach the
    batch's device in one asynchronous copy; the distortions themselves never read anything back from it."""
    x = images.reshape(-1, 1, *images.shape[-2:]).float() / 255
    n, _, h, w = x.shape
    a, r = cfg.affine, cfg.resolution
    stroke, resolution = bool(cfg.stroke.p), bool(r.p_low or r.p_blur)
    geometry = any([a.rotation, a.scale, a.aspect, a.shear, a.translate, cfg.elastic.alpha])
    contrast = bool(cfg.contrast.p)

    drawn = _Parameters()
    if stroke:
        _draw_stroke(drawn, n, cfg.stroke, generator)
    if resolution:
        _draw_resolution(drawn, n, h, w, r, generator)
    if geometry:
        _draw_geometry(drawn, n, h, w, a, cfg.elastic, generator)
        drawn["field"] = torch.tensor([w, h], dtype=torch.float32)
    if contrast:
        _draw_contrast(drawn, n, cfg.contrast, generator)
    p = drawn.to(x.device)

    if stroke:
        x = _stroke(x, p["stroke"])
    if resolution:
        x = _resolution(x, p, r)
    if geometry:
        x = _geometry(x, p, cfg.elastic)
    if contrast:
        x = _contrast(x, p["peak"], p["gamma"])
    return x.clamp(0, 1) * 255

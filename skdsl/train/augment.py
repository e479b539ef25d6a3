"""RandAugment (`--augment randaugment`) on C×H×W float tensors in 0..1, without torchvision.

Cubuk et al., "RandAugment" (2019): each training image gets N operations drawn uniformly (with
replacement) from the list below, all at one magnitude M on a 0..30 scale, each signed operation
flipped with probability 1/2. N = 2, M = 9 is the usual ImageNet setting. The magnitudes follow
torchvision's RandAugment, which follows the paper's code:

    identity, autocontrast                              no magnitude
    shear_x, shear_y          0.3 × M/30 (a shear factor)
    translate_x, translate_y  0.45 × M/30 of the image side (torchvision: 150/331)
    rotate                    30° × M/30
    brightness, color, contrast, sharpness   factor 1 ± 0.9 × M/30
    posterize                 8 − round(M / 7.5) bits kept
    solarize                  pixels ≥ 1 − M/30 inverted

Geometric operations sample the nearest pixel and fill with black, as torchvision does.
Equalize (histogram equalisation) is left out: its per-image histogram is slow on tensors and the
paper's ablation shows it among the least useful. Every draw comes from the image's generator
(seed, epoch, index), so an epoch's augmentation does not depend on workers or processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Generator, Tensor

MAX_MAGNITUDE = 30
GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as PIL's convert("L")


def _grayscale(image: Tensor) -> Tensor:
    """1×H×W luma of an RGB image."""
    weights = torch.tensor(GRAY, dtype=image.dtype).view(3, 1, 1)
    return (image * weights).sum(0, keepdim=True)


def _blend(image: Tensor, other: Tensor, factor: float) -> Tensor:
    """PIL's ImageEnhance: other + factor × (image − other), clamped to 0..1."""
    return (other + factor * (image - other)).clamp(0, 1)


def _affine(image: Tensor, matrix: list[list[float]]) -> Tensor:
    """Sample `image` at matrix × (x, y, 1) in normalised coordinates; black outside."""
    theta = torch.tensor(matrix, dtype=image.dtype)[None]  # 1×2×3
    grid = F.affine_grid(theta, [1, *image.shape], align_corners=False)
    return F.grid_sample(image[None], grid, mode="nearest", padding_mode="zeros",
                         align_corners=False)[0]


def _sharpen_source(image: Tensor) -> Tensor:
    """PIL's SMOOTH filter (3×3, centre 5, total 13) inside, the image itself on the border."""
    kernel = torch.ones(3, 3, dtype=image.dtype)
    kernel[1, 1] = 5
    kernel = (kernel / 13).expand(image.shape[0], 1, 3, 3)
    smooth = F.conv2d(image[None], kernel, groups=image.shape[0])[0]  # C×(H−2)×(W−2)
    result = image.clone()
    result[..., 1:-1, 1:-1] = smooth
    return result


def _posterize(image: Tensor, bits: int) -> Tensor:
    levels = (image * 255).round().to(torch.uint8)
    mask = 0xFF ^ ((1 << (8 - bits)) - 1)
    return (levels & mask).to(image.dtype) / 255


def _autocontrast(image: Tensor) -> Tensor:
    low = image.amin(dim=(-2, -1), keepdim=True)
    high = image.amax(dim=(-2, -1), keepdim=True)
    spread = high - low
    stretched = (image - low) / spread.clamp(min=1e-12)
    return torch.where(spread > 0, stretched, image)  # a flat channel stays as it is


# Each operation: (image, strength in 0..1 of its range, sign ±1) -> image.
OPERATIONS: dict[str, Callable[[Tensor, float, float], Tensor]] = {
    "identity": lambda x, m, s: x,
    "autocontrast": lambda x, m, s: _autocontrast(x),
    "shear_x": lambda x, m, s: _affine(x, [[1, s * 0.3 * m, 0], [0, 1, 0]]),
    "shear_y": lambda x, m, s: _affine(x, [[1, 0, 0], [s * 0.3 * m, 1, 0]]),
    # A shift of t of the side is 2t in normalised coordinates (the image spans −1..1).
    "translate_x": lambda x, m, s: _affine(x, [[1, 0, s * 2 * 0.45 * m], [0, 1, 0]]),
    "translate_y": lambda x, m, s: _affine(x, [[1, 0, 0], [0, 1, s * 2 * 0.45 * m]]),
    "rotate": lambda x, m, s: _affine(x, _rotation(s * 30 * m)),
    "brightness": lambda x, m, s: _blend(x, torch.zeros_like(x), 1 + s * 0.9 * m),
    "color": lambda x, m, s: _blend(x, _grayscale(x).expand_as(x), 1 + s * 0.9 * m),
    "contrast": lambda x, m, s: _blend(x, _grayscale(x).mean().expand_as(x), 1 + s * 0.9 * m),
    "sharpness": lambda x, m, s: _blend(x, _sharpen_source(x), 1 + s * 0.9 * m),
    "posterize": lambda x, m, s: _posterize(x, 8 - round(m * MAX_MAGNITUDE / 7.5)),
    "solarize": lambda x, m, s: torch.where(x >= 1 - m, 1 - x, x),
}


def _rotation(degrees: float) -> list[list[float]]:
    angle = math.radians(degrees)
    return [[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0]]


@dataclass(frozen=True)
class RandAugment:
    """`ops` operations per image at `magnitude` (0..30); picklable for loader workers."""

    ops: int = 2
    magnitude: int = 9

    def __call__(self, image: Tensor, generator: Generator) -> Tensor:
        names = list(OPERATIONS)
        strength = self.magnitude / MAX_MAGNITUDE
        for _ in range(self.ops):
            name = names[int(torch.randint(0, len(names), (), generator=generator))]
            sign = 1.0 if torch.rand((), generator=generator).item() < 0.5 else -1.0
            image = OPERATIONS[name](image, strength, sign)
        return image


__all__ = ["RandAugment", "OPERATIONS", "MAX_MAGNITUDE"]

"""Mixup and cutmix (`--mixup ALPHA`, `--cutmix ALPHA`): images and their labels mixed in pairs.

For a batch x with labels y and a partner order (the batch reversed, as timm pairs them):

    mixup:   x' = lam * x + (1 - lam) * x[::-1]                       lam ~ Beta(alpha, alpha)
    cutmix:  x' = x with a box of x[::-1] pasted in, of area (1 - lam); lam then the box's
             exact complement, since the box is clipped at the image's edges
    loss:    lam * CE(logits, y) + (1 - lam) * CE(logits, y[::-1])    (label smoothing in CE)

With both given, each batch takes one of them with probability 1/2 (timm's switch_prob 0.5).
Every draw comes from a generator seeded by (seed, step, batch of the step, rank): a resumed run
mixes exactly as an uninterrupted one. Training top-1 counts each image as lam of a hit on y and
1 - lam of a hit on y[::-1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Mixed:
    """A mixed batch's targets: labels, their partners' labels, and lam, the share of the first."""

    labels: Tensor
    partners: Tensor
    lam: float

    def loss(self, loss_fn, logits: Tensor) -> Tensor:
        return self.lam * loss_fn(logits, self.labels) + (1 - self.lam) * loss_fn(logits,
                                                                                  self.partners)

    def correct(self, logits: Tensor) -> Tensor:
        predicted = logits.argmax(dim=1)
        return (self.lam * (predicted == self.labels).sum()
                + (1 - self.lam) * (predicted == self.partners).sum())


@dataclass(frozen=True)
class Mixer:
    """Mixes batches as the run's --mixup and --cutmix alphas say (0: that one is off)."""

    mixup: float
    cutmix: float
    seed: int

    @property
    def enabled(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def __call__(self, images: Tensor, labels: Tensor, step: int, part: int,
                 rank: int) -> tuple[Tensor, Mixed]:
        """`images` (N×C×H×W) mixed with the batch reversed, and the targets to score them by."""
        generator = torch.Generator().manual_seed(
            hash((self.seed, step, part, rank, "mix")) & 0x7FFF_FFFF_FFFF_FFFF)
        use_cutmix = self.cutmix > 0 and (self.mixup <= 0 or _uniform(generator) < 0.5)
        alpha = self.cutmix if use_cutmix else self.mixup
        lam = _beta(alpha, generator)
        partners = images.flip(0)
        if use_cutmix:
            images, lam = paste_box(images, partners, lam, generator)
        else:
            images = images * lam + partners * (1 - lam)
        return images, Mixed(labels, labels.flip(0), lam)


def _uniform(generator: torch.Generator) -> float:
    return torch.rand((), generator=generator, dtype=torch.float64).item()


def _beta(alpha: float, generator: torch.Generator) -> float:
    """A Beta(alpha, alpha) draw from two Gamma draws of `generator` (torch's Beta sampler takes
    no generator)."""
    concentration = torch.full((2,), float(alpha), dtype=torch.float64)
    first, second = torch._standard_gamma(concentration, generator=generator).tolist()
    return first / (first + second) if first + second > 0 else 0.5


def paste_box(images: Tensor, partners: Tensor, lam: float,
              generator: torch.Generator) -> tuple[Tensor, float]:
    """Cutmix: a box of area (1 - lam) × the image's, centred uniformly and clipped at the edges,
    taken from `partners`; returns the images and the exact share of each image left."""
    height, width = images.shape[-2:]
    cut = math.sqrt(1 - lam)
    box_h, box_w = int(height * cut), int(width * cut)
    centre_y = int(torch.randint(0, height, (), generator=generator))
    centre_x = int(torch.randint(0, width, (), generator=generator))
    top, bottom = max(0, centre_y - box_h // 2), min(height, centre_y + box_h // 2)
    left, right = max(0, centre_x - box_w // 2), min(width, centre_x + box_w // 2)
    mixed = images.clone()
    mixed[..., top:bottom, left:right] = partners[..., top:bottom, left:right]
    return mixed, 1 - (bottom - top) * (right - left) / (height * width)


__all__ = ["Mixer", "Mixed", "paste_box"]

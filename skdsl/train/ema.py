"""An exponential moving average of the weights (`--ema DECAY`), evaluated and saved beside them.

After every optimiser step t (counted from 1), each floating-point tensor of the model's state
(parameters and BatchNorm's running statistics alike) moves towards the trained one:

    ema = ema + (1 - d_t) * (weights - ema),    d_t = min(DECAY, (1 + t) / (10 + t))

The warm-up d_t (TensorFlow's `num_updates`, timm's ModelEmaV3 `use_warmup`) keeps the first
steps from tying the average to the random initialisation, which matters on short runs: with
DECAY 0.9999 an average would otherwise need ~10,000 steps to forget it. Integer buffers (BN's
batch counts) are copied. The step is the run's own, so a resumed run continues exactly.

Why not timm's ModelEmaV3: timm is not a dependency (it would bring torchvision), and the
update is these few lines.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def decay_at(decay: float, step: int) -> float:
    """The decay used by the update after optimiser step `step` (from 1)."""
    return min(decay, (1 + step) / (10 + step))


class WeightAverage:
    """A frozen copy of a model whose state follows the trained model's by `decay_at`."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the average towards `model` after optimiser step `step` (from 1)."""
        weight = 1.0 - decay_at(self.decay, step)
        averaged, current = self.module.state_dict(), model.state_dict()
        floats = [name for name, tensor in averaged.items() if tensor.is_floating_point()]
        torch._foreach_lerp_([averaged[name] for name in floats],
                             [current[name].detach() for name in floats], weight)
        for name, tensor in averaged.items():
            if not tensor.is_floating_point():
                tensor.copy_(current[name])

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)


__all__ = ["WeightAverage", "decay_at"]

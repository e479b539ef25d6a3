"""The non-convolution ops of a compiled network, as small explicit torch modules.

Each module takes resolved numbers, never a config object, and keeps to elementwise and data
movement ops: no matmul, bmm or einsum, so a FLOP counter sees only convolutions and linear layers.
Shapes in comments are per batch: N images, C channels, H×W pixels, M kernel branches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "sigmoid": nn.Sigmoid,
    "hardsigmoid": nn.Hardsigmoid,
    "silu": nn.SiLU,
    "hardswish": nn.Hardswish,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "none": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    """The activation module called `name` (one of ACTIVATIONS), never in place."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class Add(nn.Module):
    """Elementwise sum of one or more tensors of one shape."""

    def forward(self, *inputs: Tensor) -> Tensor:
        out = inputs[0]
        for other in inputs[1:]:
            out = out + other
        return out


class Multiply(nn.Module):
    """Elementwise product of one or more tensors, broadcasting (C×H×W times a C×1×1 gate)."""

    def forward(self, *inputs: Tensor) -> Tensor:
        out = inputs[0]
        for other in inputs[1:]:
            out = out * other
        return out


class Concat(nn.Module):
    """Concatenation of feature maps along the channel dimension."""

    def forward(self, *inputs: Tensor) -> Tensor:
        return torch.cat(inputs, dim=1)  # N×ΣC×H×W


class ChannelSplit(nn.Module):
    """Split a feature map into consecutive channel groups of the given sizes."""

    def __init__(self, sizes: tuple[int, ...]):
        super().__init__()
        self.sizes = tuple(sizes)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return torch.split(x, self.sizes, dim=1)  # views: no copy, memory format kept

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}"


class ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle: view as g×(C/g) channels, transpose, flatten back."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        per_group = channels // self.groups
        # A reshape would copy into NCHW; writing into empty_like keeps channels_last inputs so.
        out = torch.empty_like(x)  # N×C×H×W
        shuffled = x.unflatten(1, (self.groups, per_group)).transpose(1, 2)  # N×C/g×g×H×W
        out.unflatten(1, (per_group, self.groups)).copy_(shuffled)
        return out

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class GlobalPool(nn.Module):
    """Global average or max pooling to a C×1×1 map."""

    def __init__(self, mode: str):
        super().__init__()
        if mode not in ("avg", "max"):
            raise ValueError(f"unknown global pooling mode '{mode}'; known: avg, max")
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "avg":
            return x.mean(dim=(2, 3), keepdim=True)  # N×C×1×1
        return x.amax(dim=(2, 3), keepdim=True)  # N×C×1×1

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


class ChannelPool(nn.Module):
    """Average or max over the channels to a 1×H×W map (CBAM's spatial attention input)."""

    def __init__(self, mode: str):
        super().__init__()
        if mode not in ("avg", "max"):
            raise ValueError(f"unknown channel pooling mode '{mode}'; known: avg, max")
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "avg":
            return x.mean(dim=1, keepdim=True)  # N×1×H×W
        return x.amax(dim=1, keepdim=True)  # N×1×H×W

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


class FlattenLinear(nn.Linear):
    """A fully connected layer on the input flattened to N×features (the Linear's own weights)."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)  # N×F
        return F.linear(x, self.weight, self.bias)  # N×out_features


class Select(nn.Module):
    """The SK unit's Select (SKNet, section 3.1, Eq. 5-6): softmax over M branches, weighted sum."""

    def __init__(self, branches: int, channels: int):
        super().__init__()
        self.branches = branches
        self.channels = channels

    def forward(self, logits: Tensor, *branches: Tensor) -> Tensor:
        # Path-major logits (as Caffe and timm): all C channels of branch 1, then of branch 2 ...
        logits = logits.reshape(-1, self.branches, self.channels, 1, 1)  # N×M×C×1×1
        weights = logits.softmax(dim=1)  # N×M×C×1×1: a_c + b_c + ... = 1
        # Weighted sum branch by branch: no stack, so the branches' memory format carries over.
        out = branches[0] * weights[:, 0]  # N×C×H×W
        for index in range(1, self.branches):
            out = torch.addcmul(out, branches[index], weights[:, index])  # N×C×H×W
        return out

    def extra_repr(self) -> str:
        return f"branches={self.branches}, channels={self.channels}"


__all__ = [
    "ACTIVATIONS", "make_activation", "Add", "Multiply", "Concat", "ChannelSplit",
    "ChannelShuffle", "GlobalPool", "ChannelPool", "FlattenLinear", "Select",
]

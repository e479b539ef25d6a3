"""Convolution: the `conv2d` op, and the `conv` and `dwconv` keywords."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..base.errors import SpecError
from .base import Keyword, Lowering, Op, Option, Take, item_model, keyword, lowers, op, shared
from .fields import (ACTIVATIONS, ActivationName, Groups, Kernel, Layer, NonNegativeInt,
                     PositiveInt)
from .shapes import divisor_hint, same_padding

STRIDE = Option("stride", ("stride", "s"), "positive", "stride")
GROUPS = Option("groups", ("G", "groups", "g"), "groups", "G (groups)")
DILATION = Option("dilation", ("D", "dilation", "d"), "positive", "D (dilation)")
PADDING = Option("padding", ("pad", "padding"), "pair", "padding")
BIAS = Option("bias", ("bias",), "flag", "bias")
NORM = Option("norm", ("bn", "norm"), "flag", "bn")
ACT = Option("act", ("act",), "word", "act", tuple(ACTIVATIONS))
KERNEL = Take("kernel", "a kernel such as 3x3", "kernel", noun="kernel")


# -- what the user writes: the spec model of its keyword --------------------------------


@item_model
class Conv(Layer):
    """conv k×k (+ BN + activation): `conv 3x3, 128, G=32, stride 2`."""

    kind: Literal["conv"] = "conv"
    kernel: Kernel = Field(description="Kernel height and width (k×k).")
    out_channels: PositiveInt | None = Field(
        None, description="Output channels; None keeps the input's (depthwise only)."
    )
    stride: PositiveInt = 1
    groups: Groups = Field(1, description="G, the number of groups; 'depthwise' = one per channel.")
    dilation: PositiveInt = Field(1, description="D, the dilation.")
    padding: tuple[NonNegativeInt, NonNegativeInt] | None = Field(
        None, description="Zero padding; None = dilation·(k−1)/2, which keeps the size at stride 1."
    )
    bias: bool = False
    norm: bool = Field(True, description="Batch normalisation after the convolution.")
    act: ActivationName = "relu"

    @model_validator(mode="after")
    def _width_needed(self):
        if self.out_channels is None and self.groups != "depthwise":
            raise ValueError("a convolution needs its output channels")
        return self


# -- the graph op --------------------------------------------------------------------------


def kernel_text(kernel: tuple[int, int]) -> str:
    return f"{kernel[0]}×{kernel[1]}"


@op("conv2d", field_rule="window", fresh_output="always")
class Conv2dOp(Op):
    """A 2-d convolution: C_out · (C_in / G) · k_h · k_w weights, one multiply-add each per
    output pixel."""

    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: int
    padding: tuple[int, int]
    dilation: int
    groups: int
    bias: bool

    def cost(self, node) -> tuple[int, int, int]:
        kernel = self.kernel
        weights = self.out_channels * (self.in_channels // self.groups) * kernel[0] * kernel[1]
        out_channels, height, width = node.out_shapes[0]
        params = weights + (self.out_channels if self.bias else 0)
        return params, weights * height * width, out_channels * height * width

    def reduction(self, incoming: int, node) -> int:
        return incoming * self.stride

    def module(self):
        from torch import nn

        from ..nn import layers as L

        # A dilated convolution may run as an ordinary one on polyphase sub-grids (layers.POLYPHASE).
        conv_class = L.DilatedConv2d if self.dilation > 1 else nn.Conv2d
        return conv_class(self.in_channels, self.out_channels, self.kernel, stride=self.stride,
                          padding=self.padding, dilation=self.dilation, groups=self.groups,
                          bias=self.bias)

    def text(self) -> str:
        text = f"conv2d {kernel_text(self.kernel)}"
        text += f"/{self.stride}" if self.stride > 1 else ""
        text += f" G{self.groups}" if self.groups > 1 else ""
        return text + (f" D{self.dilation}" if self.dilation > 1 else "")


def pointwise(in_channels: int, out_channels: int, bias: bool) -> Conv2dOp:
    """A 1×1 convolution (SK's and SE's fcs on a C×1×1 map)."""
    return Conv2dOp(in_channels, out_channels, (1, 1), 1, (0, 0), 1, 1, bias)


# -- its lowering: spec item -> graph nodes (core/graph.py calls it) --------------------


@lowers("conv")
def lower_conv(lowering: Lowering, item: Conv, x, scope, env, path: str | None = None):
    span = item.span()
    path = path or f"{scope.path}.{item.name}"
    channels, height, width = lowering.feature_map(x, item, "conv", path)
    groups = channels if item.groups == "depthwise" else item.groups
    out = item.out_channels if item.out_channels is not None else channels
    if channels % groups or out % groups:
        count, role = (channels, "input") if channels % groups else (out, "output")
        raise SpecError(f"G={groups} does not divide the {count} {role} channels of {path}",
                        item.span("groups" if role == "input" else "out_channels"),
                        code="SK301", hint=divisor_hint(count, groups))
    padding = item.padding or same_padding(item.kernel, item.dilation)
    shape = (out, *lowering.spatial_output(item, path, (height, width), item.kernel, item.stride,
                                           padding, item.dilation))
    y = lowering.emit(f"{path}.conv", Conv2dOp(channels, out, item.kernel, item.stride, padding,
                                               item.dilation, groups, item.bias),
                      [x], [shape], span, path, scope)
    if item.norm:
        y = lowering.emit(f"{path}.bn", shared("batchnorm", out), [y], [shape], span, path, scope)
    if item.act != "none":
        y = lowering.emit(f"{path}.act", shared("act", item.act), [y], [shape], span, path, scope)
    return y


CONV = keyword("conv", "conv", usage="write it as: conv 3x3, 128, G=32, stride 2",
               example="conv 3x3, 32, G=4, stride 2",
               takes=(KERNEL, Take("out_channels", "its output channels", "positive")),
               options=(STRIDE, GROUPS, DILATION, PADDING, BIAS, NORM, ACT), model=Conv)
DWCONV = keyword("dwconv", "conv", usage="write it as: dwconv 3x3, stride 2",
                 example="dwconv 3x3, 32, stride 2",
                 takes=(KERNEL, Take("out_channels", "its output channels", "positive",
                                     required=False)),
                 options=(STRIDE, DILATION, PADDING, BIAS, NORM, ACT), model=Conv,
                 fixed={"groups": "depthwise"})


def conv_rows(conv, show_stride: bool) -> str:
    """A conv as Table 1 writes it: '3×3, 128, G=32'."""
    parts = [kernel_text(conv.kernel)]
    if conv.out_channels is not None:
        parts.append(str(conv.out_channels))
    if conv.groups == "depthwise":
        parts.append("dw")
    elif conv.groups > 1:
        parts.append(f"G={conv.groups}")
    if conv.dilation > 1:
        parts.append(f"D={conv.dilation}")
    if show_stride and conv.stride > 1:
        parts.append(f"stride {conv.stride}")
    return ", ".join(parts)


__all__ = ["Conv2dOp", "pointwise", "CONV", "DWCONV", "Keyword", "conv_rows", "kernel_text"]

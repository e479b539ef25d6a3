"""ECA's convolution across the channels: the `channel_conv` op and the `channelconv` keyword.

Efficient Channel Attention (Wang et al., CVPR 2020) replaces SE's two fcs by one 1-D
convolution along the channel axis of the pooled C-vector: k weights shared by every channel, so
channel c sees channels c − (k−1)/2 … c + (k−1)/2. `channelconv 5` is that convolution; with
`circular yes` the channel axis wraps around (timm's CecaModule: the first channels see the
last ones), and `hidden N` puts timm's ECA-MLP in front (a 1-wide conv 1→N with bias and a ReLU,
then the k-wide conv N→1). On a C×H×W map it runs at every pixel. std/attention.sk builds the
eca, ecam and ceca blocks from it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..base.errors import SpecError
from .base import Op, Option, Take, item_model, keyword, op
from .conv import BIAS
from .fields import Layer, PositiveInt
from .shapes import elements


@item_model
class ChannelConv(Layer):
    """A 1-D convolution across the channels, its k weights shared by all: `channelconv 5`."""

    kind: Literal["channelconv"] = "channelconv"
    kernel: PositiveInt = Field(description="k, an odd number of neighbouring channels.")
    circular: bool = Field(False, description="Wrap the channel axis around instead of "
                           "padding it with zeros (timm's CecaModule).")
    hidden: PositiveInt | None = Field(None, description="ECA-MLP's width: a 1-wide conv to "
                                       "this many maps and a ReLU before the k-wide conv.")
    bias: bool = False


@op("channel_conv", spec_kinds=("channelconv",), fresh_output="always",
    torch_module="layers.ChannelConv", label="channel conv k{kernel}",
    row="channel conv, k={kernel}")
class ChannelConvOp(Op):
    """k weights (and a bias) slide along the channels at every pixel: k multiply-adds per output
    element, as torch's counter counts the conv1d it runs. With `hidden` N: N + N·k weights and
    multiply-adds per element, plus N + 1 biases."""

    kernel: int
    circular: bool
    hidden: int
    bias: bool

    def cost(self, node) -> tuple[int, int, int]:
        out = elements(node.out_shapes[0])
        if self.hidden:
            weights = self.hidden + self.hidden * self.kernel
            return weights + (self.hidden + 1) * self.bias, out * weights, out * (self.hidden + 1)
        return self.kernel + self.bias, out * self.kernel, out

    @classmethod
    def from_item(cls, item, shape, path) -> "ChannelConvOp":
        if item.kernel % 2 == 0:
            raise SpecError(f"channelconv {item.kernel} at {path}: the kernel must be odd, so "
                            "that channel c is its centre", item.span("kernel"), code="SK313",
                            hint=f"use {item.kernel - 1} or {item.kernel + 1}")
        if item.circular and item.kernel > 2 * shape[0] + 1:
            raise SpecError(f"channelconv {item.kernel}, circular yes at {path} wraps its "
                            f"{shape[0]} channels around more than once", item.span("kernel"),
                            code="SK313", hint=f"a kernel of at most {2 * shape[0] + 1}, or "
                            "circular no")
        return cls(item.kernel, item.circular, item.hidden or 0, item.bias)

    def text(self) -> str:
        text = f"channel conv k{self.kernel}" + (" circular" if self.circular else "")
        return text + (f" hidden {self.hidden}" if self.hidden else "")


CHANNELCONV = keyword(
    "channelconv", "channel_conv", usage="write it as: channelconv 5, circular yes",
    model=ChannelConv, example="gap\nchannelconv 3, circular yes",
    takes=(Take("kernel", "an odd kernel size such as 3", "positive", noun="kernel"),),
    options=(Option("circular", ("circular",), "flag", "circular"),
             Option("hidden", ("hidden",), "positive", "hidden (ECA-MLP's width)"), BIAS))

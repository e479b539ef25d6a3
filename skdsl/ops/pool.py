"""Pooling: the `max_pool`, `avg_pool`, `global_pool` and `channel_pool` ops, and the
`maxpool`, `avgpool`, `gap` and `channelpool` keywords."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field

from ..base.errors import SpecError
from .base import (OPS, Lowering, Op, Option, Reading, Take, item_model, keyword, lowers, op,
                   writes_rows)
from .conv import PADDING, STRIDE, kernel_text
from .fields import Kernel, Layer, NonNegativeInt, PositiveInt
from .shapes import elements, fmt, same_padding


# -- what the user writes: the spec models of its keywords ------------------------------


@item_model
class Pool(Layer):
    """max or average pooling: `maxpool 3x3, stride 2`."""

    kind: Literal["pool"] = "pool"
    mode: Literal["max", "avg"]
    kernel: Kernel
    stride: PositiveInt = Field(description="Defaults to the kernel size when not written.")
    padding: tuple[NonNegativeInt, NonNegativeInt] | None = Field(None, description="None = (k−1)/2.")
    ceil_mode: bool = False
    count_include_pad: bool = Field(True, description="avg: divide by the whole window, padding "
                                    "included (PyTorch's default); False: by the real pixels "
                                    "only, as TensorFlow and timm's Inception-v4 pool.")


class _Reduction(Layer):
    """A pooling whose extent is fixed by its kind, so only the mode is written."""

    mode: Literal["max", "avg"] = "avg"


@item_model
class GlobalPool(_Reduction):
    """Global pooling to 1×1: `avgpool global`."""

    kind: Literal["global_pool"] = "global_pool"


@item_model
class ChannelPool(_Reduction):
    """Pool across channels to a 1×H×W map (CBAM's spatial attention): `channelpool max`."""

    kind: Literal["channel_pool"] = "channel_pool"


# -- the graph op --------------------------------------------------------------------------


@dataclass(slots=True)
class _WindowPoolOp(Op):
    """A k×k pooling window: k·k reads per output element under the `pool` convention."""

    field_rule: ClassVar[str] = "window"
    counted_by: ClassVar[str | None] = "pool"
    dilation: ClassVar[int] = 1
    kernel: tuple[int, int]
    stride: int
    padding: tuple[int, int]
    ceil_mode: bool
    count_include_pad: bool = True  # avg only: a max pool never reads its padding

    def extra(self, node) -> int:
        return elements(node.out_shapes[0]) * self.kernel[0] * self.kernel[1]

    def reduction(self, incoming: int, node) -> int:
        return incoming * self.stride

    def module(self):
        from torch import nn

        if self.name == "max_pool":
            return nn.MaxPool2d(self.kernel, stride=self.stride, padding=self.padding,
                                ceil_mode=self.ceil_mode)
        return nn.AvgPool2d(self.kernel, stride=self.stride, padding=self.padding,
                            ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)

    def text(self) -> str:
        return f"{self.name} {kernel_text(self.kernel)}/{self.stride}"


@op("max_pool")
class MaxPoolOp(_WindowPoolOp):
    """Max pooling over a k×k window."""

@op("avg_pool")
class AvgPoolOp(_WindowPoolOp):
    """Average pooling over a k×k window."""

@dataclass(slots=True)
class _ReadingPoolOp(Op):
    """A pool that reads every input element once (`pool` convention)."""

    counted_by: ClassVar[str | None] = "pool"
    mode: str

    def extra(self, node) -> int:
        return elements(node.in_shapes[0])


@op("global_pool", spec_kinds=("global_pool",), spatial="global pool", field_rule="global",
    torch_module="layers.GlobalPool", label="global_pool {mode}")
class GlobalPoolOp(_ReadingPoolOp):
    """Global average or max pooling to C×1×1; its output has seen the whole image."""

    def output(self, shape):
        return (shape[0], 1, 1)

    def reduction(self, incoming: int, node) -> int:
        """One pixel for the whole map: the stride is the map's height in input pixels."""
        return incoming * node.in_shapes[0][1]

    @classmethod
    def rows(cls, item, in_block: bool) -> list[str]:
        return ["global average pool" if item.mode == "avg" else "global max pool"]


@op("channel_pool", spec_kinds=("channel_pool",), spatial="channel pool",
    torch_module="layers.ChannelPool")
class ChannelPoolOp(_ReadingPoolOp):
    """Average or max across channels to 1×H×W (CBAM's spatial attention)."""


    def output(self, shape):
        return (1, *shape[1:])


POOL_OPTIONS = (STRIDE, PADDING, Option("ceil_mode", ("ceil",), "flag", "ceil"))
# `count_pad no`: average over the real pixels only (TensorFlow's pools, timm's Inception-v4);
# the counts do not change, only the values near the border.
AVGPOOL_OPTIONS = (*POOL_OPTIONS,
                   Option("count_include_pad", ("count_pad", "count_include_pad"), "flag",
                          "count_pad"))


# -- its lowering: spec item -> graph nodes (core/graph.py calls it) --------------------


@lowers("pool")
def lower_pool(lowering: Lowering, item: Pool, x, scope, env):
    path = f"{scope.path}.{item.name}"
    channels, height, width = lowering.feature_map(x, item, "pool", path)
    padding = item.padding or same_padding(item.kernel, 1)
    if any(2 * p > k for p, k in zip(padding, item.kernel)):
        raise SpecError(f"padding {fmt(padding)} is more than half the {fmt(item.kernel)} "
                        f"window of {path}", item.span("padding"), code="SK203",
                        hint="PyTorch pools accept padding up to half the kernel")
    size = lowering.spatial_output(item, path, (height, width), item.kernel, item.stride, padding,
                                   1, item.ceil_mode)
    window = OPS[f"{item.mode}_pool"](item.kernel, item.stride, padding, item.ceil_mode,
                                      item.count_include_pad)
    return lowering.emit(path, window, [x], [(channels, *size)], item.span(), path, scope)


MAXPOOL = keyword("maxpool", "pool", usage="write it as: maxpool 3x3, stride 2",
                  example="maxpool 3x3, stride 2",
                  options=POOL_OPTIONS, reading=Reading.WINDOW_OR_GLOBAL)
AVGPOOL = keyword("avgpool", "pool", example="avgpool 2x2",
                  usage="write it as: avgpool 2x2, stride 2 (or avgpool global)",
                  options=AVGPOOL_OPTIONS, reading=Reading.WINDOW_OR_GLOBAL)
GAP = keyword("gap", "pool", reading=Reading.WINDOW_OR_GLOBAL, example="gap")
CHANNELPOOL = keyword("channelpool", "pool", model=ChannelPool, example="channelpool max",
                      takes=(Take("mode", "avg or max", "word", noun="channelpool mode",
                                  required=False, choices=("avg", "max")),))


@writes_rows("pool")
def pool_rows(item, in_block: bool) -> list[str]:
    text = f"{kernel_text(item.kernel)} {item.mode} pool"
    return [text if in_block else f"{text}, stride {item.stride}"]

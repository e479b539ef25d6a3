"""Resampling: the `upsample` op and keyword."""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

from pydantic import Field, model_validator

from ..base.errors import SpecError
from .base import Lowering, Op, Option, Take, item_model, keyword, lowers, op
from .fields import Layer, PositiveInt
from .shapes import fmt

MODES = ("nearest", "bilinear")


# -- what the user writes: the spec model of its keyword --------------------------------


@item_model
class Upsample(Layer):
    """Enlarge H×W by an integer factor, `upsample 2` (nearest) or `upsample 2, mode bilinear`,
    or to a named tensor's size, `upsample to x` (Residual Attention Networks' mask branch)."""

    kind: Literal["upsample"] = "upsample"
    factor: PositiveInt | None = Field(None, description="The integer factor of both H and W.")
    to: str | None = Field(None, description="Or: the tensor whose H×W the output takes.")
    mode: Literal["nearest", "bilinear"] = Field("nearest", description="Interpolation.")

    @model_validator(mode="after")
    def _one_size(self):
        if (self.factor is None) == (self.to is None):
            raise ValueError("upsample takes a factor (upsample 2) or a tensor to match "
                             "(upsample to x), one of the two")
        return self


# -- the graph op --------------------------------------------------------------------------


@op("upsample", spec_kinds=("upsample",), spatial="upsample", field_rule="own")
class UpsampleOp(Op):
    """H×W enlarged to `size`, nearest or bilinear (align_corners=False, torch's default): by
    an integer factor (`upsample 2`) or to a named tensor's size (`upsample to x`, lower_upsample).
    No parameters, and no multiply-adds under any convention: like a pool's, its interpolation
    is not a multiply-add of weights (torch's FLOP counter agrees: it counts 0)."""

    size: tuple[int, int]  # output H×W
    mode: str

    @classmethod
    def from_item(cls, item, shape, path) -> "UpsampleOp":
        return cls((shape[1] * item.factor, shape[2] * item.factor), item.mode)

    def output(self, shape):
        return (shape[0], *self.size)

    def reduction(self, incoming: int, node) -> int:
        """Divided by the factor, which an `upsample to` a tensor of odd size (7 -> 14, or
        28 -> 57) makes inexact: the nearest whole stride, at least 1."""
        factor = self.size[0] / node.in_shapes[0][1]
        return max(1, round(incoming / factor))

    def field(self, node, incoming: tuple) -> tuple:
        """The receptive-field step (analysis.field_step): the output grid is finer by
        H_out/H_in, so the jump divides by it; nearest copies one input pixel (the field stays),
        bilinear blends two neighbours per axis (the field grows by one input step)."""
        rf_h, rf_w, jump_h, jump_w = incoming
        _, height, width = node.in_shapes[0]
        grown = self.mode == "bilinear"
        return (rf_h + jump_h * grown, rf_w + jump_w * grown,
                jump_h * Fraction(height, self.size[0]), jump_w * Fraction(width, self.size[1]))

    def module(self):
        from torch import nn

        return nn.Upsample(size=self.size, mode=self.mode)

    def text(self) -> str:
        return f"upsample {self.size[0]}×{self.size[1]} {self.mode}"

    @classmethod
    def rows(cls, item, in_block: bool) -> list[str]:
        how = f"×{item.factor}" if item.to is None else f"to {item.to}"
        return [f"upsample {how}, {item.mode}"]


# -- its lowering: spec item -> graph nodes (core/graph.py calls it) --------------------


@lowers("upsample")
def lower_upsample(lowering: Lowering, item: Upsample, x, scope, env):
    """`upsample F` by the generic rule; `upsample to NAME` to that tensor's H×W."""
    if item.to is None:
        return lowering.primitive(item, x, scope, env)
    path = f"{scope.path}.{item.name}"
    shape = lowering.feature_map(x, item, "upsample", path)
    target = lowering.feature_map(lowering.tensor(env, item.to, item, "to"), item, "upsample", path)
    if target[1] < shape[1] or target[2] < shape[2]:
        raise SpecError(f"upsample to {item.to} would shrink {fmt(shape[1:])} to "
                        f"{fmt(target[1:])} at {path}", item.span("to"), code="SK234",
                        hint="upsample enlarges; a pool or a strided conv shrinks")
    attrs = UpsampleOp(tuple(target[1:]), item.mode)
    return lowering.emit(path, attrs, [x], [attrs.output(shape)], item.span(), path, scope)


UPSAMPLE = keyword("upsample", "upsample", usage="write it as: upsample 2, mode bilinear   "
                   "(or upsample to NAME)", model=Upsample,
                   example="maxpool 2x2\nupsample 2, mode bilinear",
                   takes=(Take("factor", "a factor such as 2", "positive", required=False,
                               noun="upsample factor"),),
                   options=(Option("mode", ("mode",), "word", "upsample mode", MODES),
                            Option("to", ("to",), "tensor", "upsample's target")))

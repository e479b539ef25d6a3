"""Resampling: the `upsample` op and keyword."""

from __future__ import annotations

from fractions import Fraction

from typing import Literal

from pydantic import Field, model_validator

from .fields import Layer, PositiveInt
from .base import item_model, keyword, Op, op, Option, Take

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
    an integer factor (`upsample 2`) or to a named tensor's size (`upsample to x`, graph.py).
    No parameters, and no multiply-adds under any convention: like a pool's, its interpolation
    is not a multiply-add of weights (torch's FLOP counter agrees: it counts 0)."""

    size: tuple[int, int]  # output H×W
    mode: str

    @classmethod
    def from_item(cls, item, shape, path) -> "UpsampleOp":
        return cls((shape[1] * item.factor, shape[2] * item.factor), item.mode)

    def output(self, shape):
        return (shape[0], *self.size)

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


UPSAMPLE = keyword("upsample", "upsample", usage="write it as: upsample 2, mode bilinear   "
                   "(or upsample to NAME)", model=Upsample,
                   takes=(Take("factor", "a factor such as 2", "positive", required=False,
                               noun="upsample factor"),),
                   options=(Option("mode", ("mode",), "word", "upsample mode", MODES),
                            Option("to", ("to",), "tensor", "upsample's target")))

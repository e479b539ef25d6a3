"""Resampling: the `upsample` op and keyword."""

from __future__ import annotations

from fractions import Fraction

from .. import spec as S
from .base import Op, Option, Take, keyword, op

MODES = ("nearest", "bilinear")


@op("upsample", spec_kinds=("upsample",), spatial="upsample", field_rule="own")
class Upsample(Op):
    """H×W enlarged to `size`, nearest or bilinear (align_corners=False, torch's default): by
    an integer factor (`upsample 2`) or to a named tensor's size (`upsample to x`, graph.py).
    No parameters, and no multiply-adds under any convention: like a pool's, its interpolation
    is not a multiply-add of weights (torch's FLOP counter agrees: it counts 0)."""

    size: tuple[int, int]  # output H×W
    mode: str

    @classmethod
    def from_item(cls, item, shape, path) -> "Upsample":
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
                   "(or upsample to NAME)", model=S.Upsample,
                   takes=(Take("factor", "a factor such as 2", "positive", required=False,
                               noun="upsample factor"),),
                   options=(Option("mode", ("mode",), "word", "upsample mode", MODES),
                            Option("to", ("to",), "tensor", "upsample's target")))

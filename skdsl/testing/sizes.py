"""Sizes the random writers work out for themselves, apart from skdsl.core.graph (so that they test
it): PyTorch's conv/pool output size, divisors for groups, and indented lines of .sk text as
(depth, text) pairs.
"""

from __future__ import annotations

import math

Line = tuple[int, str]  # (depth, text)
Shape = tuple[int, int, int]


def out_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1,
             ceil_mode: bool = False) -> int:
    """PyTorch's conv/pool output size, written independently of skdsl.core.graph."""
    numerator = size + 2 * padding - dilation * (kernel - 1) - 1
    if numerator < 0:
        return 0
    if not ceil_mode:
        return numerator // stride + 1
    out = math.ceil(numerator / stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def divisors(n: int, limit: int = 64) -> list[int]:
    """The divisors of `n` up to `limit`, ascending."""
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def common_divisors(*counts: int, limit: int = 32) -> list[int]:
    """The numbers up to `limit` that divide every count: the groups both widths allow."""
    return divisors(math.gcd(*counts), limit)


def nest(lines: list[Line], by: int = 1) -> list[Line]:
    """`lines` indented `by` levels deeper."""
    return [(depth + by, text) for depth, text in lines]


def render(lines: list[Line], indent: str) -> list[str]:
    """(depth, text) lines as text, each level one `indent`."""
    return [indent * depth + text for depth, text in lines]


"""Shape arithmetic the ops' shape rules share: window outputs, padding, broadcasting, and the
hint of a divisibility error. No torch, no graph."""

from __future__ import annotations

import math

Shape = tuple[int, ...]


def elements(shape: Shape) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def fmt(shape: Shape) -> str:
    return "×".join(map(str, shape))


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1,
                     ceil_mode: bool = False) -> int:
    """PyTorch's output size: floor((size + 2p − d(k−1) − 1) / s) + 1."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if span < 0:
        return 0
    out = -(-span // stride) + 1 if ceil_mode else span // stride + 1
    # PyTorch drops a last window of a ceil-mode pool that starts in the right padding.
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def same_padding(kernel: tuple[int, int], dilation: int) -> tuple[int, int]:
    # d·(k−1)/2 keeps the size at stride 1 for odd k; dilation widens the kernel to d·(k−1)+1.
    return (dilation * (kernel[0] - 1) // 2, dilation * (kernel[1] - 1) // 2)


def broadcast(shapes: list[Shape]) -> Shape | None:
    """The shape of tensors combined elementwise, broadcasting 1-sized dims (a C×1×1 gate, a
    1×H×W spatial map); None when they cannot combine."""
    rank = len(shapes[0])
    if any(len(s) != rank for s in shapes):
        return None
    out = []
    for sizes in zip(*shapes):
        big = {s for s in sizes if s != 1}
        if len(big) > 1:
            return None
        out.append(big.pop() if big else 1)
    return tuple(out)


def divisor_hint(count: int, groups: int) -> str:
    lower = count - count % groups
    candidates = [c for c in (lower, lower + groups) if c > 0]
    widths = " or ".join(map(str, candidates))
    return (f"pick a width that is a multiple of {groups} ({widths}), or a G that divides "
            f"{count} (such as {largest_divisor(count, groups)})")


def largest_divisor(count: int, limit: int) -> int:
    """A large divisor of `count` up to `limit` (the largest, unless `count` is huge): divisors
    come in pairs (d, count // d) with d ≤ √count, so a few thousand trials find it where a
    count down from `limit` could take 2³¹ (and more for a concat's channels)."""
    best = 1
    for small in range(1, min(math.isqrt(count), 1 << 16) + 1):
        if count % small == 0:
            for divisor in (small, count // small):
                if best < divisor <= limit:
                    best = divisor
    return best

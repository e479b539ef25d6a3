"""`meeting_inputs()`: tiny networks in which one multi-input op (SK or SUM branches, add, mul,
concat, a residual, a shared branch) meets inputs that may not agree, with the error code the
spec must give, worked out here apart from skdsl.core.graph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from .sizes import Shape, out_size

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

MEETING_KINDS = ("sk", "sum", "add", "mul", "concat", "residual", "shares")


def meeting_inputs(kinds: Iterable[str] = MEETING_KINDS, sizes: Iterable[int] = range(2, 13)
                   ) -> "SearchStrategy[tuple[str, str | None]]":
    """(.sk text, expected code): a tiny network in which one multi-input op meets inputs
    made by convolutions of drawn kernels (odd, even, asymmetric), strides, paddings and
    dilations, on an 8×H×W input with H and W from `sizes`.

    Kinds (MEETING_KINDS): `sk` and `sum` (a branch list, padded by D·(k−1)//2), `add` and
    `mul` of two branches (a size-1 axis broadcasts), `concat`, `residual` (a body and an
    explicit shortcut), `shares` (a branch that reuses another's weights on a tensor of
    another size, then an `add` or a `concat`). The code is None when the inputs agree: the
    spec is valid, and its compiled module must count as analysed. Otherwise it is the code of
    the located error the spec must give: SK309 for SK or SUM branches, SK303 for add, mul
    and concat, SK305 for a residual. Shapes are worked out here, apart from skdsl.core.graph.
    """
    from hypothesis import strategies as st

    chosen, pool = tuple(kinds), tuple(sizes)
    unknown = set(chosen) - set(MEETING_KINDS)
    if unknown:
        raise ValueError(f"unknown kinds {sorted(unknown)}; known: {MEETING_KINDS}")

    @st.composite
    def meeting(draw) -> tuple[str, str | None]:
        kind = draw(st.sampled_from(chosen))
        size = (draw(st.sampled_from(pool)), draw(st.sampled_from(pool)))
        lines, code = _MEETINGS[kind](draw, st, size)
        header = [f"network meet_{kind}:", f"    input 8x{size[0]}x{size[1]}", "    stage s:"]
        return "\n".join(header + [f"        {line}" for line in lines]) + "\n", code

    return meeting()


def _drawn_window(draw, st, padded: bool):
    """A kernel (mostly square), stride, dilation and, if `padded`, maybe an explicit padding."""
    height = draw(st.integers(1, 4))
    width = height if draw(st.booleans()) else draw(st.integers(1, 4))
    stride, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.none() | st.integers(0, 3)) if padded else None
    return (height, width), stride, dilation, padding


def _window_size(size, kernel, stride, dilation, padding) -> tuple[int, int]:
    """Output H, W; None padding is skdsl's default, D·(k−1)//2 per axis."""
    return tuple(out_size(s, k, stride, dilation * (k - 1) // 2 if padding is None else padding,
                           dilation) for s, k in zip(size, kernel))


def _drawn_conv(draw, st, sizes: list, channels: int) -> tuple[str, list[Shape]]:
    """A `conv` line and its output shape on each input size (H, W) of `sizes`; a padding that
    would leave no pixel is dropped (the default always leaves one on a 2×2 or larger input)."""
    kernel, stride, dilation, padding = _drawn_window(draw, st, padded=True)
    if any(min(_window_size(size, kernel, stride, dilation, padding)) < 1 for size in sizes):
        padding = None
    text = f"conv {kernel[0]}x{kernel[1]}, {channels}, stride {stride}, D={dilation}"
    if padding is not None:
        text += f", pad {padding}"
    return text, [(channels, *_window_size(size, kernel, stride, dilation, padding))
                  for size in sizes]


def _meet_selective(draw, st, size, attention: bool):
    stride = draw(st.integers(1, 3))
    options = "G=2, r=2, L=4" if attention else "G=2"
    lines, shapes = [f"{'SK' if attention else 'SUM'}[{options}, stride={stride}], 8:"], set()
    for _ in range(draw(st.integers(2, 3))):
        kernel, _, dilation, _ = _drawn_window(draw, st, padded=False)
        lines.append(f"    {kernel[0]}x{kernel[1]}, D={dilation}")
        shapes.add(_window_size(size, kernel, stride, dilation, None))
    return lines, None if len(shapes) == 1 else "SK309"


def _broadcasts(shapes) -> bool:
    """Whether shapes combine elementwise: on every axis, one size apart from 1s."""
    return all(len({s for s in sizes if s != 1}) <= 1 for sizes in zip(*shapes))


def _meets(merge: str, shapes) -> bool:
    if merge == "concat":
        return len({shape[1:] for shape in shapes}) == 1
    return _broadcasts(shapes)


def _meet_merge(draw, st, size, merge: str):
    widths = (4, 8) if merge == "concat" else draw(st.sampled_from([(8, 8), (8, 1), (1, 8)]))
    lines, shapes = [], []
    for name, width in zip("ab", widths):
        conv, (shape,) = _drawn_conv(draw, st, [size], width)
        lines.append(f"branch {name}: {conv}")
        shapes.append(shape)
    return lines + [f"{merge} a, b"], None if _meets(merge, shapes) else "SK303"


def _meet_residual(draw, st, size):
    body, (body_shape,) = _drawn_conv(draw, st, [size], 8)
    shortcut, (shortcut_shape,) = _drawn_conv(draw, st, [size], 8)
    lines = ["residual:", f"    {body}", "    shortcut:", f"        {shortcut}, act none"]
    return lines, None if body_shape == shortcut_shape else "SK305"


def _meet_shared(draw, st, size):
    """Branch b runs branch a's layers (and weights) on a tensor of another spatial size:
    strided, or grown by a padding where a stride would leave less than 2×2."""
    step = draw(st.integers(2, 3))
    other = tuple(out_size(s, 1, step, 0) for s in size)
    other_line = f"y = conv 1x1, 8, stride {step}"
    if min(other) < 2 or draw(st.booleans()):
        other, other_line = tuple(s + 2 for s in size), "y = conv 3x3, 8, pad 2"
    conv, shapes = _drawn_conv(draw, st, [size, other], 8)
    merge = draw(st.sampled_from(["add", "concat"]))
    lines = ["x = conv 1x1, 8", other_line, f"branch a from x: {conv}",
             "branch b from y shares a", f"{merge} a, b"]
    return lines, None if _meets(merge, shapes) else "SK303"


_MEETINGS = {
    "sk": lambda draw, st, size: _meet_selective(draw, st, size, attention=True),
    "sum": lambda draw, st, size: _meet_selective(draw, st, size, attention=False),
    "add": lambda draw, st, size: _meet_merge(draw, st, size, "add"),
    "mul": lambda draw, st, size: _meet_merge(draw, st, size, "mul"),
    "concat": lambda draw, st, size: _meet_merge(draw, st, size, "concat"),
    "residual": _meet_residual,
    "shares": _meet_shared,
}

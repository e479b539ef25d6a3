"""Property-testing helpers for people who test their own architectures (and for skdsl's tests).

Strategies (need `hypothesis`, imported when a strategy is built):

    specs(...)            random *valid* .sk texts, valid by construction
    networks(...)         the same, parsed: specs().map(skdsl.parse)
    variants(spec, **p)   a spec's declared `param`s drawn from strategies, invalid draws rejected
    mutations(text)       (broken text or bytes, description): a valid spec broken in one place
    broken_specs(...)     specs().flatmap(mutations)
    meeting_inputs(...)   (text, expected error code or None): a multi-input op (SK branches,
                          add, mul, concat, a residual, a shared branch) on inputs that may
                          not agree

Assertions (need `torch`, imported when called):

    assert_compiles_exactly(spec)   module leaves == graph nodes, params, FLOPs/2 and output
                                    shape all equal skdsl.analyze's numbers
    assert_shapes(spec, input=...)  a real forward pass gives the inferred shapes
    assert_rejected(text)           a SpecError located at file:line:col that renders

and `run_check(path)`, the `skdsl check` command (or, without skdsl.cli, what it does) as
(exit status, output), and `time_limit(seconds)`, which turns a hang into a TimeoutError.
See docs/testing.md for a worked example.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import re
import signal
import tempfile
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import skdsl
from skdsl import spec as S
from skdsl.errors import SpecError, printable
from skdsl.ops import conv as _conv
from skdsl.ops import pool as _pool

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

__all__ = [
    "specs", "networks", "variants", "mutations", "broken_specs", "assert_compiles_exactly",
    "assert_shapes", "assert_rejected", "run_check", "ExactReport", "WIDTHS", "MUTATION_KINDS",
    "INSERT_TOKENS", "INVALID_UTF8", "time_limit", "meeting_inputs", "MEETING_KINDS",
]

WIDTHS = (8, 16, 24, 32, 48, 64)
# The language's activations (spec.ACTIVATIONS), relu and none first: hypothesis shrinks to them.
ACTIVATIONS = ("relu", "none", *(a for a in S.ACTIVATIONS if a not in ("relu", "none")))
# How the options are spelled: the registry's (skdsl.ops), so a new spelling is drawn too.
SPELT_STRIDE, SPELT_GROUPS, SPELT_DILATION = (_conv.STRIDE.names, _conv.GROUPS.names,
                                             _conv.DILATION.names)
SPELT_PADDING, SPELT_ACT, SPELT_BIAS, SPELT_NORM = (_conv.PADDING.names, _conv.ACT.names,
                                                   _conv.BIAS.names, _conv.NORM.names)

# ---------------------------------------------------------------------------------------------
# Loading whatever the user hands us
# ---------------------------------------------------------------------------------------------


def _as_network(spec, overrides: dict | None = None) -> S.Network:
    """A Network as is; a Path or a one-line str as a file; a str with newlines as .sk text."""
    if isinstance(spec, S.Network):
        return spec
    if isinstance(spec, Path) or (isinstance(spec, str) and "\n" not in spec):
        return skdsl.load(spec, overrides)
    if isinstance(spec, str):
        return skdsl.parse(spec, overrides=overrides)
    raise TypeError(f"expected a Network, a path or .sk text, not {type(spec).__name__}")


def _out_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1,
              ceil_mode: bool = False) -> int:
    """PyTorch's conv/pool output size, written independently of skdsl.graph."""
    numerator = size + 2 * padding - dilation * (kernel - 1) - 1
    if numerator < 0:
        return 0
    if not ceil_mode:
        return numerator // stride + 1
    out = math.ceil(numerator / stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _divisors(n: int, limit: int = 64) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def _common_divisors(*counts: int, limit: int = 32) -> list[int]:
    return _divisors(math.gcd(*counts), limit)


# ---------------------------------------------------------------------------------------------
# specs(): random valid .sk text
# ---------------------------------------------------------------------------------------------

Line = tuple[int, str]  # (depth, text)
Shape = tuple[int, int, int]


def _nest(lines: list[Line], by: int = 1) -> list[Line]:
    return [(depth + by, text) for depth, text in lines]


class _Writer:
    """Writes one random network, tracking the C×H×W shape so that every line is valid."""

    def __init__(self, draw, st, *, widths, max_width, selective, shuffle, asymmetric, blocks,
                 std, params, decorate, max_blocks):
        self.draw, self.st = draw, st
        self.widths = [w for w in widths if w <= max_width] or [min(widths)]
        self.max_width = max_width
        self.allow_selective, self.allow_shuffle, self.asymmetric = selective, shuffle, asymmetric
        self.blocks, self.std, self.params, self.decorate = blocks, std, params, decorate
        self.max_blocks = max_blocks
        self.templates: dict[str, tuple[str, Any]] = {}  # name -> (family, details)
        self.template_lines: list[list[Line]] = []
        self.param_lines: list[str] = []
        self.uses: set[str] = set()  # the standard library files the calls need
        self.counter = 0

    # -- drawing --------------------------------------------------------------------------

    def pick(self, options):
        return self.draw(self.st.sampled_from(list(options)))

    def chance(self, percent: int) -> bool:
        """True with about `percent`% probability; shrinks towards False."""
        return self.draw(self.st.integers(0, 99)) >= 100 - percent

    def number(self, low: int, high: int) -> int:
        return self.draw(self.st.integers(low, high))

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def width(self, at_most: int | None = None) -> int:
        limit = at_most or self.max_width
        return self.pick([w for w in self.widths if w <= limit] or [min(self.widths)])

    # -- spelling -------------------------------------------------------------------------

    def kw(self, names: tuple[str, ...], value, bare_ok: bool = True) -> str:
        """A keyword argument in one of its spellings: `stride 2`, `stride=2`, `s=2`."""
        name = self.pick(names) if self.decorate else names[0]
        if bare_ok and self.decorate and self.chance(40):
            value = str(value)
            if not re.fullmatch(r"[A-Za-z0-9_.]+", value):
                value = f"({value})"
            return f"{name} {value}"
        return f"{name}={value}"

    def expr(self, n: int) -> str:
        """An integer, sometimes as arithmetic that evaluates to it."""
        if not self.decorate or not self.chance(20):
            return str(n)
        form = self.number(0, 3)
        if form == 0:
            return f"{n * 2}/2"
        if form == 1:
            return f"{n + 1}-1"
        if form == 2 and n % 2 == 0:
            return f"2*{n // 2}"
        return f"({n * 3}+1)//3"

    def keyword(self, word: str) -> str:
        """A layer keyword, sometimes in another case (layer keywords ignore case)."""
        if self.decorate and self.chance(10):
            return self.pick([word.upper(), word.lower(), word.capitalize()])
        return word

    def dims(self, *values: int) -> str:
        sep = "×" if self.decorate and self.chance(5) else "x"
        return sep.join(map(str, values))

    def join(self, parts: list[str]) -> str:
        """Arguments in their written order: positional first, keywords shuffled."""
        return ", ".join(parts)

    def shuffled(self, parts: list[str]) -> list[str]:
        if len(parts) < 2 or not self.decorate:
            return parts
        return self.draw(self.st.permutations(parts))

    # -- layers (each returns its lines and the shape after it) ---------------------------

    def conv(self, shape: Shape, *, stride=None, out=None, regular=False) -> tuple[list[Line], Shape]:
        c, h, w = shape
        kernels = [(1, 1), (3, 3), (5, 5)] + ([(1, 3), (3, 1)] if self.asymmetric else [])
        kernel = self.pick(kernels)
        out = out if out is not None else self.width()
        depthwise_multiplier = (not regular and out % c == 0 and self.chance(5))
        stride = stride if stride is not None else self.pick([1, 2])
        dilation = 1 if max(kernel) == 1 else self.pick([1, 1, 2, 3])
        options = []
        if depthwise_multiplier:
            options.append(self.kw(SPELT_GROUPS, self.pick(["dw", "depthwise"]), False))
        else:
            groups = self.pick(_common_divisors(c, out))
            if groups != 1 or self.chance(10):
                options.append(self.kw(SPELT_GROUPS, self.expr(groups)))
        if stride != 1 or self.chance(10):
            options.append(self.kw(SPELT_STRIDE, stride))
        if dilation != 1:
            options.append(self.kw(SPELT_DILATION, dilation))
        padding = None
        if not regular and self.chance(10):
            padding = self.number(0, 2)
            size = [_out_size(s, k, stride, padding, dilation) for s, k in zip((h, w), kernel)]
            if min(size) < 1:
                padding = None
            else:
                options.append(self.kw(SPELT_PADDING, padding))
        if padding is None:
            pads = [dilation * (k - 1) // 2 for k in kernel]
            size = [_out_size(s, k, stride, p, dilation) for s, k, p in zip((h, w), kernel, pads)]
        if self.chance(30):
            options.append(self.kw(SPELT_ACT, self.pick(ACTIVATIONS)))
        if self.chance(10):
            options.append(self.kw(SPELT_BIAS, self.pick(["yes", "true", "on", "no", 1, 0])))
        if self.chance(10):
            options.append(self.kw(SPELT_NORM, self.pick(["no", "off", "yes", "false"])))
        text = f"{self.keyword('conv')} {self.dims(*kernel)}, {self.expr(out)}"
        if options:
            text += ", " + self.join(self.shuffled(options))
        return [(0, text)], (out, *size)

    def dwconv(self, shape: Shape, *, stride=None) -> tuple[list[Line], Shape]:
        c, h, w = shape
        kernel = self.pick([(3, 3), (5, 5)] + ([(1, 3), (3, 1)] if self.asymmetric else []))
        stride = stride if stride is not None else self.pick([1, 2])
        dilation = self.pick([1, 1, 2])
        options = []
        if stride != 1:
            options.append(self.kw(SPELT_STRIDE, stride))
        if dilation != 1:
            options.append(self.kw(("D", "dilation"), dilation))
        if self.chance(60):
            options.append(self.kw(SPELT_ACT, self.pick(ACTIVATIONS)))
        text = f"{self.keyword('dwconv')} {self.dims(*kernel)}"
        if options:
            text += ", " + self.join(self.shuffled(options))
        size = [_out_size(s, k, stride, dilation * (k - 1) // 2, dilation)
                for s, k in zip((h, w), kernel)]
        return [(0, text)], (c, *size)

    def selective(self, shape: Shape, *, stride=None, out=None, attention=None
                  ) -> tuple[list[Line], Shape]:
        """SK (attention) or SUM (plain sum): shorthand M, or an explicit list of branches."""
        c, h, w = shape
        out = out if out is not None else self.width()
        stride = stride if stride is not None else self.pick([1, 2])
        attention = attention if attention is not None else self.chance(70)
        divisors = _common_divisors(c, out)
        options, lines = [], None
        explicit = self.chance(40)
        default_groups = S.SK_GROUPS if S.SK_GROUPS in divisors else None
        groups = self.pick(divisors)
        if not explicit:
            count = self.number(1, 4)
            if count != 2 or self.chance(50):
                options.append(f"M={self.expr(count)}")
            if groups != default_groups or self.chance(50):
                options.append(self.kw(("G", "groups"), groups, bare_ok=False))
        else:
            count = self.number(1, 4)
            if self.chance(20):
                options.append(f"M={count}")
            inherit = self.chance(50)
            if inherit:
                options.append(self.kw(("G", "groups"), groups, bare_ok=False))
            lines = []
            for _ in range(count):
                kernel = self.pick([(3, 3), (5, 5), (1, 1)] + ([(1, 3), (3, 1)]
                                                              if self.asymmetric else []))
                dilation = 1 if max(kernel) == 1 else self.number(1, 3)
                parts = [self.dims(*kernel)]
                if not inherit or self.chance(30):
                    if inherit or default_groups is None or self.chance(70):
                        parts.append(self.kw(("G", "groups"), self.pick(divisors), False))
                    # else: the branch takes SK's default G=32, which divides here
                if dilation != 1 or self.chance(10):
                    parts.append(self.kw(("D", "dilation"), dilation, False))
                lines.append((1, ", ".join(parts)))
        if attention:
            if self.chance(60):
                options.append(f"r={self.pick([2, 4, 8, 16])}")
            if self.chance(50):
                options.append(f"L={self.pick([4, 8, 16, 32])}")
            if self.chance(10):
                options.append(f"d={self.pick([4, 8, 12])}")
        if stride != 1 or self.chance(10):
            options.append(self.kw(("stride",), stride, bare_ok=False))
        word = self.keyword("SK" if attention else "SUM")
        text = word
        if options:
            text += "[" + ", ".join(self.shuffled(options)) + "]"
            text += ", " if not self.decorate or self.chance(80) else " "
        else:
            # `SK[], 32` would be valid syntax too, but crashes expand.py (see tests/test_properties.py)
            text += " "
        text += self.expr(out)
        size = [_out_size(s, 3, stride, 1) for s in (h, w)]  # odd kernels, same padding
        if lines is not None:
            return [(0, text + ":"), *lines], (out, *size)
        return [(0, text)], (out, *size)

    def squeeze_excite(self, shape: Shape) -> tuple[list[Line], Shape]:
        options = []
        if self.chance(70):
            options.append(f"r={self.pick([2, 4, 8, 16])}")
        if self.chance(15):
            options.append(self.kw(("gate",), self.pick(list(S.GATES)), False))
        if self.chance(10):
            options.append(f"min={self.pick([1, 2, 4])}")
        if self.chance(10):
            options.append(self.kw(SPELT_BIAS, self.pick(["no", "yes"]), False))
        word = self.keyword("SE")
        if options:
            return [(0, f"{word}[{', '.join(self.shuffled(options))}]")], shape
        return [(0, word)], shape

    def pool(self, shape: Shape) -> tuple[list[Line], Shape]:
        c, h, w = shape
        mode = self.pick(["maxpool", "avgpool"])
        if min(h, w) >= 2 and self.chance(30):
            kernel, stride, padding = 2, 2, 0
            text = f"{self.keyword(mode)} {self.dims(2, 2)}"
        else:
            kernel, padding = 3, 1
            stride = self.pick([2, 1])
            text = f"{self.keyword(mode)} {self.dims(3, 3)}, {self.kw(SPELT_STRIDE, stride)}"
        ceil_mode = self.chance(15)
        if ceil_mode:
            text += ", " + self.kw(_pool.POOL_OPTIONS[2].names, self.pick(["yes", "true", 1]))
        size = [_out_size(s, kernel, stride, padding, 1, ceil_mode) for s in (h, w)]
        return [(0, text)], (c, *size)

    def simple(self, shape: Shape) -> tuple[list[Line], Shape]:
        """A layer that keeps the shape: dropout, bn, act or a channel shuffle."""
        c = shape[0]
        kind = self.pick(["bn", "act", "dropout", "shuffle"])
        if kind == "dropout":
            return [(0, f"{self.keyword('dropout')} {self.pick(['0.1', '0.2', '0.5', '0', '0.25'])}")], shape
        if kind == "act":
            return [(0, f"{self.keyword('act')} {self.pick(ACTIVATIONS)}")], shape
        if kind == "shuffle" and self.allow_shuffle:
            return [(0, f"{self.keyword('shuffle')} {self.pick(_divisors(c))}")], shape
        return [(0, self.keyword("bn"))], shape

    def regular(self, shape: Shape, *, stride: int, out: int) -> tuple[list[Line], Shape]:
        """A short sequence whose output is `out`×ceil(H/stride)×ceil(W/stride): the stride and
        the width change in its first layer, later layers keep the shape."""
        first = self.pick(["conv", "sk", "dwconv"] if shape[0] == out else ["conv", "sk"])
        if first == "sk" and self.allow_selective:
            lines, shape = self.selective(shape, stride=stride, out=out)
        elif first == "dwconv":
            lines, shape = self.dwconv(shape, stride=stride)
        else:
            lines, shape = self.conv(shape, stride=stride, out=out, regular=True)
        for _ in range(self.number(0, 2)):
            kind = self.pick(["conv", "se", "simple", "sk", "dwconv"])
            if kind == "conv":
                more, shape = self.conv(shape, stride=1, out=out, regular=True)
            elif kind == "se":
                more, shape = self.squeeze_excite(shape)
            elif kind == "sk" and self.allow_selective:
                more, shape = self.selective(shape, stride=1, out=out)
            elif kind == "dwconv":
                more, shape = self.dwconv(shape, stride=1)
            else:
                more, shape = self.simple(shape)
            lines += more
        return lines, shape

    def residual(self, shape: Shape) -> tuple[list[Line], Shape]:
        stride = self.pick([1, 2])
        out = shape[0] if self.chance(50) else self.width()
        body, after = self.regular(shape, stride=stride, out=out)
        header = "residual"
        if self.chance(20):
            header += " " + self.kw(SPELT_ACT, self.pick(ACTIVATIONS))
        lines = [(0, header + ":"), *_nest(body)]
        if after != shape and self.chance(30) or self.chance(5):
            conv = f"conv 1x1, {out}, act none"
            if stride != 1:
                conv += f", stride {stride}"
            lines += [(1, "shortcut:"), (2, conv)]
        return lines, after

    def branches(self, shape: Shape) -> tuple[list[Line], Shape]:
        """Two named branches of the current tensor, merged by add, mul or concat."""
        merge = self.pick(["concat", "add", "mul"])
        stride = self.pick([1, 2])
        c = shape[0]
        if merge == "concat":
            outs = [self.width(max(8, self.max_width // 2)) for _ in range(2)]
        else:
            outs = [self.width()] * 2
        names = [self.fresh(self.pick(["main", "side", "path"])) for _ in range(2)]
        lines, result = [], None
        shares = self.chance(25)  # the second branch reuses the first's layers and weights
        for index, (name, out) in enumerate(zip(names, outs)):
            if index == 1 and shares:
                lines.append((0, f"branch {name} shares {names[0]}"))
                outs[1] = outs[0]
                break
            body, result = self.regular(shape, stride=stride, out=out)
            lines += [(0, f"branch {name}:"), *_nest(body)]
        channels = sum(outs) if merge == "concat" else outs[0]
        label = f"{self.fresh('merge')} = " if self.chance(20) else ""
        lines.append((0, f"{label}{self.keyword(merge)} {names[0]}, {names[1]}"))
        return lines, (channels, *result[1:])

    def gate(self, shape: Shape) -> tuple[list[Line], Shape]:
        """`mul` broadcasting a C×1×1 gate over a C×H×W map (SE written out by hand)."""
        c = shape[0]
        main, gate = self.fresh("main"), self.fresh("gate")
        squeeze = self.pick(_divisors(c))
        lines = [(0, f"branch {gate}:"), (1, self.pick(["avgpool global", "gap", "maxpool global"])),
                 (1, f"conv 1x1, {max(1, c // squeeze)}, bn no, bias yes"),
                 (1, f"conv 1x1, {c}, bn no, act sigmoid"),
                 (0, f"branch {main}:"), (1, "bn")]
        order = [main, gate] if self.chance(50) else [gate, main]
        lines.append((0, f"mul {order[0]}, {order[1]}"))
        return lines, shape

    def split(self, shape: Shape) -> tuple[list[Line], Shape]:
        """ShuffleNetV2's basic unit written inline: split, a branch on one half, concat."""
        c, h, w = shape
        left, right = self.fresh("left"), self.fresh("right")
        half = c // 2
        if self.chance(30) and c >= 16:
            sizes = f"{c // 4}, {c - c // 4}"
            half, other = c // 4, c - c // 4
        else:
            sizes, other = "2", c - half
        body = [(1, f"conv 1x1, {other}"), (1, "dwconv 3x3, act none"), (1, f"conv 1x1, {other}")]
        name = self.fresh("inner")
        if sizes == "2" and self.chance(25):
            # Siamese halves: both run one set of layers (and weights), `shares`.
            twin = self.fresh("twin")
            lines = [(0, f"split {sizes} -> {left}, {right}"),
                     (0, f"branch {name} from {left}:"), *body,
                     (0, f"branch {twin} from {right} shares {name}"),
                     (0, f"concat {name}, {twin}")]
            half = other
        else:
            lines = [(0, f"split {sizes} -> {left}, {right}"),
                     (0, f"branch {name} from {right}:"), *body,
                     (0, f"concat {left}, {name}")]
        if self.chance(70):
            lines.append((0, f"shuffle {self.pick([g for g in (2, 4) if c % g == 0] or [1])}"))
        return lines, (half + other, h, w)

    # -- templates and calls --------------------------------------------------------------

    def template(self, family: str):
        """Define (once per family variant) a block template; return its name."""
        existing = [n for n, (f, _) in self.templates.items() if f == family]
        if existing and self.chance(70):
            return self.pick(existing)
        name = self.fresh({"bottleneck": "bneck", "shuffle": "shuf", "down": "down",
                           "cbr": "cbr"}[family])
        if family == "bottleneck":
            middle = self.pick(["conv", "sk", "sum", "sk_lines"] if self.allow_selective else ["conv"])
            se = self.chance(40)
            shortcut = self.chance(20)
            act = self.pick(["relu", "none", "relu6"]) if self.chance(20) else None
            default_g = self.pick([1, 2, 4, 8])
            lines = [(0, f"block {name}(width, out, stride=1, G={default_g}):"),
                     (1, "residual" + (f" act {act}" if act else "") + ":"),
                     (2, "conv 1x1, width")]
            if middle == "conv":
                lines.append((2, "conv 3x3, width, G=G, stride stride"))
            elif middle in ("sk", "sum"):
                m = self.number(1, 3)
                opts = f"M={m}, G=G" + (f", r={self.pick([4, 8, 16])}, L=8" if middle == "sk" else "")
                lines.append((2, f"{middle.upper()}[{opts}], width, stride stride"))
            else:
                lines.append((2, "SK[G=G, r=4, L=8], width, stride=stride:"))
                lines.append((3, "3x3"))
                lines.append((3, "3x3, D=2"))
                if self.chance(50):
                    lines.append((3, "5x5, G=G, D=1"))
            lines.append((2, "conv 1x1, out, act none"))
            if se:
                uses_param = self.params and self.chance(50)
                if uses_param and not any(p.startswith("param R ") for p in self.param_lines):
                    self.param_lines.append(f"param R = {self.pick([4, 8, 16])}")
                lines.append((2, "SE[r=R]" if uses_param else f"SE[r={self.pick([4, 16])}]"))
            if shortcut:
                lines += [(2, "shortcut:"), (3, "conv 1x1, out, stride stride, act none")]
            details = {"default_g": default_g}
        elif family == "shuffle":
            lines = [(0, f"block {name}(c):"), (1, "split 2 -> left, right"),
                     (1, "branch right from right:"), (2, "conv 1x1, c/2"),
                     (2, "dwconv 3x3, act none"), (2, "conv 1x1, c/2"),
                     (1, "concat left, right"), (1, "shuffle 2")]
            details = {}
        elif family == "down":
            source = " from input" if self.chance(50) else ""
            lines = [(0, f"block {name}(out):"), (1, f"branch proj{source}:"),
                     (2, "dwconv 3x3, stride 2, act none"), (2, "conv 1x1, out/2"),
                     (1, "branch main:"), (2, "conv 1x1, out/2"),
                     (2, "dwconv 3x3, stride 2, act none"), (2, "conv 1x1, out/2"),
                     (1, "concat proj, main"), (1, "shuffle 2")]
            details = {}
        else:  # cbr: an integer kernel size passed as an argument
            lines = [(0, f"block {name}(out, k=3, stride=1):"),
                     (1, "conv k, out, stride stride")]
            details = {}
        self.templates[name] = (family, details)
        self.template_lines.append(lines)
        return name

    def call(self, shape: Shape, stage_repeat: bool = False) -> tuple[list[Line], Shape, str]:
        """A block call (maybe repeated): returns lines, the shape after and the call text."""
        c, h, w = shape
        families = ["bottleneck", "cbr"]
        if self.allow_shuffle:
            families += ["down"] + (["shuffle"] if c % 2 == 0 else [])
        if self.std:
            families += ["std", "std_attention"] + (["std_shuffle"] if self.allow_shuffle and
                                                      c % 2 == 0 else [])
        family = self.pick(families)
        repeat = self.number(1, self.max_blocks)
        if family == "std_attention":
            return self.std_attention(shape, repeat, stage_repeat)
        if family == "std_shuffle":
            return self.std_shuffle(shape, repeat, stage_repeat)
        if family == "std":
            self.uses.add("std/resnext.sk")
            unit = self.pick(["resnext_unit", "se_unit", "sk_unit"] if self.allow_selective
                             else ["resnext_unit", "se_unit"])
            width, out, stride = self.width(), self.width(), self.pick([1, 2])
            groups = self.pick(_divisors(width, 32))
            args = [self.expr(width), self.expr(out)]
            if stride != 1:
                args.append(f"stride={stride}")
            args.append(f"G={groups}")
            if unit == "sk_unit":
                args += [f"M={self.number(1, 3)}", f"r={self.pick([4, 16])}",
                         f"L={self.pick([8, 32])}"]
            elif unit == "se_unit" and self.chance(50):
                args.append(f"r={self.pick([4, 8])}")
            text = f"{unit}({', '.join(args)})"
            channels = out
            size = (h, w)
            for index in range(repeat):
                size = tuple(_out_size(s, 3, stride if index == 0 else 1, 1) for s in size)
        else:
            name = self.template(family)
            if family == "bottleneck":
                width, out, stride = self.width(), self.width(), self.pick([1, 2])
                default_g = self.templates[name][1]["default_g"]
                groups = self.pick(_divisors(width, 32))
                args = [self.expr(width), self.expr(out)]
                keywords = []
                if stride != 1 or self.chance(10):
                    keywords.append(("stride", stride))
                if groups != default_g or width % default_g:
                    keywords.append(("G", groups))
                if keywords and self.chance(40) and keywords[0][0] == "stride" and len(keywords) == 2:
                    args += [str(stride), str(groups)]  # all positional
                else:
                    args += [f"{k}={self.expr(v)}" for k, v in keywords]
                channels = out
                size = (h, w)
                for index in range(repeat):
                    size = tuple(_out_size(s, 3, stride if index == 0 else 1, 1) for s in size)
            elif family == "shuffle":
                args, channels, size = [self.expr(c)], c, (h, w)
            elif family == "down":
                out = self.width()
                args, channels, size = [self.expr(out)], out, (h, w)
                for _ in range(repeat):
                    size = tuple(_out_size(s, 3, 2, 1) for s in size)
            else:
                out, k, stride = self.width(), self.pick([3, 1, 5]), self.pick([1, 2])
                args = [self.expr(out)]
                if k != 3 or self.chance(20):
                    args.append(f"k={k}")
                if stride != 1:
                    args.append(f"stride={stride}")
                channels, size = out, (h, w)
                for index in range(repeat):
                    size = tuple(_out_size(s, k, stride if index == 0 else 1, (k - 1) // 2)
                                 for s in size)
            if self.decorate and len(args) > 1 and self.chance(10):
                text = f"{name}({args[0]},\n" + ",\n".join(f"        {a}" for a in args[1:]) + ")"
            else:
                text = f"{name}({', '.join(args)})"
        return self.finish_call(text, repeat, (channels, *size), stage_repeat)

    def finish_call(self, text: str, repeat: int, after: Shape, stage_repeat: bool):
        if stage_repeat:
            return [], after, (text, repeat)
        label = f"{self.fresh('unit')} = " if repeat == 1 and self.chance(10) else ""
        suffix = f" {self.pick(['x', '×'])}{repeat}" if repeat > 1 or self.chance(10) else ""
        if suffix.endswith("×1") or (self.decorate is False and suffix):
            suffix = f" x{repeat}"
        return [(0, f"{label}{text}{suffix}")], after, text

    def std_attention(self, shape: Shape, repeat: int, stage_repeat: bool):
        """std/attention.sk: BAM between stages, or a bottleneck with CBAM."""
        self.uses.add("std/attention.sk")
        c, h, w = shape
        if self.chance(50):
            r = self.pick([d for d in (2, 4, 8, 16) if c % d == 0] or [1])
            text = f"bam({self.expr(c)}, r={r}, D={self.number(1, 4)})"
            return self.finish_call(text, repeat, shape, stage_repeat)
        width, out, stride = self.width(), self.width(), self.pick([1, 2])
        groups = self.pick(_divisors(width, 32))
        r = self.pick([d for d in (2, 4, 8, 16) if out % d == 0])
        text = f"cbam_unit({self.expr(width)}, {self.expr(out)}, stride={stride}, G={groups}, r={r})"
        size = tuple(_out_size(s, 3, stride, 1) for s in (h, w))
        return self.finish_call(text, repeat, (out, *size), stage_repeat)

    def std_shuffle(self, shape: Shape, repeat: int, stage_repeat: bool):
        """std/shufflenetv2.sk: the plain, SE and SK units of the paper's Table 4."""
        self.uses.add("std/shufflenetv2.sk")
        c, h, w = shape
        variant = self.pick(["", "_se", "_sk", "_sk_main"])
        options = ""
        if variant == "_se" and self.chance(50):
            options = f", r={self.pick([2, 4])}"
        elif variant.startswith("_sk"):
            options = f", M={self.number(1, 3)}, r={self.pick([4, 16])}, L={self.pick([4, 8, 32])}"
        if self.chance(50):
            unit = "shuffle" + (variant if variant != "_sk_main" else "_sk") + "_unit"
            return self.finish_call(f"{unit}({self.expr(c)}, {self.expr(c)}{options})", repeat,
                                    shape, stage_repeat)
        out = self.width()
        if out != c:
            repeat = 1  # c_in is the first unit's input width: a repeat would see `out`
        size = [h, w]
        for _ in range(repeat):
            size = [_out_size(s, 3, 2, 1) for s in size]
        text = f"shuffle{variant}_down({self.expr(c)}, {self.expr(out)}{options})"
        return self.finish_call(text, repeat, (out, *size), stage_repeat)

    # -- statements and stages ------------------------------------------------------------

    def statement(self, shape: Shape) -> tuple[list[Line], Shape]:
        kinds = ["conv", "conv", "dwconv", "se", "pool", "simple", "residual", "branches", "gate"]
        if self.allow_selective:
            kinds += ["sk", "sk"]
        if self.allow_shuffle and shape[0] % 2 == 0:
            kinds.append("split")
        if self.blocks:
            kinds += ["call", "call"]
        kind = self.pick(kinds)
        if kind == "call":
            lines, shape, _ = self.call(shape)
            return lines, shape
        method = {"conv": self.conv, "dwconv": self.dwconv, "se": self.squeeze_excite,
                  "pool": self.pool, "simple": self.simple, "residual": self.residual,
                  "branches": self.branches, "gate": self.gate, "sk": self.selective,
                  "split": self.split}[kind]
        lines, shape = method(shape)
        if kind in ("conv", "dwconv", "sk", "pool") and self.chance(10):
            lines[0] = (lines[0][0], f"{self.fresh('layer')} = {lines[0][1]}")
        return lines, shape

    def stage(self, name: str, shape: Shape) -> tuple[list[Line], Shape]:
        if self.blocks and self.chance(15):
            _, after, (text, repeat) = self.call(shape, stage_repeat=True)
            return [(1, f"stage {name} x{repeat}: {text}")], after
        statements = []
        for _ in range(self.number(1, self.max_blocks)):
            lines, shape = self.statement(shape)
            statements.append(lines)
        if len(statements) == 1 and len(statements[0]) == 1 and "\n" not in statements[0][0][1] \
                and self.chance(50):
            return [(1, f"stage {name}: {statements[0][0][1]}")], shape
        lines = [(1, f"stage {name}:")]
        for statement in statements:
            lines += _nest(statement, 2)
        return lines, shape

    def head(self, shape: Shape, classes: str) -> list[Line]:
        c, h, w = shape
        lines = [(1, "stage head:")]
        if c * h * w > 1024 or self.chance(85):
            lines.append((2, self.pick(["avgpool global", "gap", "maxpool global", "AVGPOOL global"])))
        if self.chance(40):
            p = "P" if self.params and self.chance(50) else self.pick(["0.2", "0.5", "0.1"])
            if p == "P":
                self.param_lines.append("param P = 0.2")
            lines.append((2, f"dropout {p}"))
        lines.append((2, f"fc {classes}"))
        return lines


def _render(lines: list[Line], indent: str) -> list[str]:
    return [indent * depth + text for depth, text in lines]


def specs(*, max_stages: int = 3, max_blocks: int = 2, input_sizes: Iterable[int] = (16, 32),
          widths: Iterable[int] = WIDTHS, max_width: int = 64, classes: Iterable[int] = (10, 7),
          selective: bool = True, shuffle: bool = True, asymmetric: bool = True,
          blocks: bool = True, std: bool = True, params: bool = True,
          decorate: bool = True) -> "SearchStrategy[str]":
    """Random valid .sk texts, valid by construction.

    Each has a stem conv, 1..`max_stages` stages of 1..`max_blocks` units (or repeats), and a
    head (global pool, optional dropout, fc). Units are drawn from: conv (grouped, dilated,
    strided, 1×1/3×3/5×5 and 1×3/3×1, explicit padding, options in every spelling), dwconv,
    SK and SUM (shorthand M=1..4 or explicit branch lists with kernels, dilations and groups),
    SE, max/avg pools, dropout/bn/act/shuffle, residuals (identity, automatic or explicit
    projection), named branches merged by add/mul/concat, a broadcast gate, ShuffleNetV2
    split units and block templates (bottleneck with conv/SK/SUM, shuffle, down-sampling with
    two branches from the input, a conv-bn-relu with an integer kernel) and the standard
    library's units (resnext/se/sk, BAM and CBAM, ShuffleNetV2's plain/SE/SK units). Groups
    always divide, and spatial sizes never reach 0.
    With `decorate`, the text also varies in indentation (spaces or tabs), comments, blank
    lines, CRLF line ends, keyword case, `×`, arithmetic and argument order.
    """
    from hypothesis import strategies as st

    sizes, width_list, class_list = tuple(input_sizes), tuple(widths), tuple(classes)

    @st.composite
    def build(draw) -> str:
        writer = _Writer(draw, st, widths=width_list, max_width=max_width, selective=selective,
                         shuffle=shuffle, asymmetric=asymmetric, blocks=blocks, std=std,
                         params=params, decorate=decorate, max_blocks=max_blocks)
        size = draw(st.sampled_from(sizes))
        shape: Shape = (3, size, size)
        stem_width = writer.width(32)
        count = draw(st.sampled_from(class_list))
        use_params = params and writer.chance(50)
        if use_params:
            writer.param_lines += [f"param W = {stem_width}", f"param NCLS = {count}"]
        network = [(0, f"network {draw(st.sampled_from(['tiny', 'net', 'my_net', 'Net2']))}:"),
                   (1, f"input {writer.dims(3, size, size)}")]
        classes_text = "NCLS" if use_params else str(count)
        network.append((1, f"classes {classes_text}"))
        if writer.chance(10):
            network.append((1, "paper params=1.5M, gflops=0.01, source=\"made up\""))
        stem = f"conv 3x3, {'W' if use_params else writer.expr(stem_width)}"
        groups = writer.pick([1, 3]) if stem_width % 3 == 0 else 1
        if groups != 1:
            stem += f", G={groups}"
        if writer.chance(50):
            stem += ", stride 2"
            shape = (stem_width, _out_size(size, 3, 2, 1), _out_size(size, 3, 2, 1))
        else:
            shape = (stem_width, size, size)
        network.append((1, f"stage stem: {stem}"))
        prefix = draw(st.sampled_from(["s", "conv", "layer", "stage"]))
        for index in range(draw(st.integers(1, max_stages))):
            lines, shape = writer.stage(f"{prefix}{index + 2}", shape)
            network += lines
        network += writer.head(shape, "classes" if writer.chance(70) else classes_text)

        indent = "    "
        if decorate:
            indent = draw(st.sampled_from(["    ", "  ", "\t", "   "]))
        out: list[str] = []
        out += [f'use "{path}"' for path in sorted(writer.uses)]
        out += writer.param_lines
        for template in writer.template_lines:
            out += _render(template, indent)
        out += _render(network, indent)
        if decorate:
            out = _decorate(draw, st, out)
        newline = "\r\n" if decorate and draw(st.integers(0, 99)) >= 90 else "\n"
        return newline.join(line.replace("\n", newline) for line in out) + newline

    return build()


def _decorate(draw, st, lines: list[str]) -> list[str]:
    """Comments and blank lines, which must not change the meaning."""
    out = []
    for line in lines:
        roll = draw(st.integers(0, 99))
        if roll >= 95:
            out.append("")
        elif roll >= 92:
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}# {draw(st.sampled_from(['note', 'SK unit: M=2', 'x3 ×']))}")
        if draw(st.integers(0, 99)) >= 95 and "\n" not in line:
            line += "  # trailing comment"
        out.append(line)
    return out


def networks(**kwargs) -> "SearchStrategy[S.Network]":
    """specs(**kwargs), parsed and expanded with skdsl.parse."""
    return specs(**kwargs).map(lambda text: skdsl.parse(text, file="<specs>"))


# ---------------------------------------------------------------------------------------------
# variants(): a spec's params drawn from strategies
# ---------------------------------------------------------------------------------------------


def variants(path_or_text: str | Path, **param_strategies) -> "SearchStrategy[S.Network]":
    """Networks of one spec with its declared `param`s drawn from the given strategies.

    `path_or_text` is a .sk file (a Path, or a str without newlines) or .sk text. Each keyword
    names a declared parameter and gives a strategy (or a plain value) for it; the values are
    applied as overrides (`skdsl.load(path, overrides=...)`, the CLI's `--set`). Combinations
    whose expansion or lowering raises SpecError (a G that does not divide, a size that
    shrinks to zero ...) are rejected, so Hypothesis draws again. Naming a parameter the spec
    does not declare raises ValueError at once.
    """
    from hypothesis import strategies as st

    from .parser import parse_text, read_source

    is_text = isinstance(path_or_text, str) and "\n" in path_or_text
    text = path_or_text if is_text else read_source(path_or_text)
    declared = {p.name for p in parse_text(text, "<variants>" if is_text else str(path_or_text)).params}
    unknown = sorted(set(param_strategies) - declared)
    if unknown:
        raise ValueError(f"{path_or_text if not is_text else 'the spec'} declares no parameter "
                         f"{', '.join(unknown)}; it declares: {', '.join(sorted(declared)) or 'none'}")
    strategies = {name: value if isinstance(value, st.SearchStrategy) else st.just(value)
                  for name, value in param_strategies.items()}

    def build(overrides: dict):
        try:
            if is_text:
                network = skdsl.parse(text, file="<variants>", overrides=overrides)
            else:
                network = skdsl.load(path_or_text, overrides)
            skdsl.lower(network)
        except SpecError:
            return None
        return network

    return st.fixed_dictionaries(strategies).map(build).filter(lambda network: network is not None)


# ---------------------------------------------------------------------------------------------
# meeting_inputs(): multi-input ops whose inputs may not agree
# ---------------------------------------------------------------------------------------------

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
    and concat, SK305 for a residual. Shapes are worked out here, apart from skdsl.graph.
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
    return tuple(_out_size(s, k, stride, dilation * (k - 1) // 2 if padding is None else padding,
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
    other = tuple(_out_size(s, 1, step, 0) for s in size)
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


# ---------------------------------------------------------------------------------------------
# mutations(): one-place breakage
# ---------------------------------------------------------------------------------------------

MUTATION_KINDS = ("delete", "duplicate", "insert", "zero", "groups", "misspell", "indent",
                  "truncate", "line", "bytes")
# Tokens and characters `insert` may put anywhere: punctuation, keywords, numbers, odd
# whitespace and control characters (str.splitlines() and Lark disagree on some of them).
INSERT_TOKENS = (
    ",", ":", "=", "(", ")", "[", "]", "->", "x", "x3", "x0", "3x3", "0", "-1", "1.5", "1e9",
    "99999999999999999999", "27.5M", "conv", "SK", "SE", "residual:", "shortcut:", "branch",
    "stage", "block", "network", "input", "classes", "use", "param", "split 2 ->", "from",
    '"', '"std/resnext.sk"', "#", "*", "/", "//", "%", "+", "@", "$", "!", ";", "\\", "{",
    "\t", " ", "\n", "\n    ", "\x0c", "\r", "\u2028", "\u2029", "\x85", "\x0b", "\x1c",
    "\u00a0", "×", "é", "\ufeff", "G=0", "G=7", "stride 0", "D=0", "r=0", "M=0", "act nope",
    "input", "graph", "forward", "train", "é = conv 1x1, 8",
)
# Byte strings that are not UTF-8 (or are NUL): `bytes` inserts one into the encoded text.
INVALID_UTF8 = (b"\xff", b"\xfe", b"\x80", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80",
                b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"\x00")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"\d+")
_GROUPS = re.compile(r"\b(?:G|groups|g)\s*=\s*(\d+)")


def _where(text: str, index: int) -> str:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"line {line} col {column}"


def mutations(text: str, kinds: Iterable[str] | None = None,
              tokens: Iterable[str] = INSERT_TOKENS) -> "SearchStrategy[tuple[str | bytes, str]]":
    """(broken text, description): `text` changed in one place.

    Kinds (MUTATION_KINDS): delete or duplicate a character, insert a token from `tokens`,
    swap a number for 0, give a G a value that does not divide, misspell a word (keyword,
    layer, block, option or tensor name), break a line's indentation, truncate the file,
    delete/duplicate/swap a line, or insert bytes that are not UTF-8 (the result is then
    `bytes`, to be written to a file). The description starts with the kind and a colon.
    A mutation may leave the spec valid (a deleted space, a misspelt comment); only `bytes`
    always breaks it.
    """
    from hypothesis import strategies as st

    chosen = tuple(kinds) if kinds is not None else MUTATION_KINDS
    unknown = set(chosen) - set(MUTATION_KINDS)
    if unknown:
        raise ValueError(f"unknown mutation kinds {sorted(unknown)}; known: {MUTATION_KINDS}")
    pool = tuple(tokens)
    if not text:
        raise ValueError("cannot mutate an empty text")

    @st.composite
    def mutate(draw) -> tuple[str | bytes, str]:
        kind = draw(st.sampled_from(chosen))
        index = draw(st.integers(0, len(text) - 1))
        if kind == "delete":
            return text[:index] + text[index + 1:], f"delete: {text[index]!r} at {_where(text, index)}"
        if kind == "duplicate":
            return (text[:index] + text[index] + text[index:],
                    f"duplicate: {text[index]!r} at {_where(text, index)}")
        if kind == "insert":
            token = draw(st.sampled_from(pool))
            return text[:index] + token + text[index:], f"insert: {token!r} at {_where(text, index)}"
        if kind == "truncate":
            return text[:index], f"truncate: at {_where(text, index)}"
        if kind == "bytes":
            data = text.encode("utf-8")
            at = draw(st.integers(0, len(data)))
            bad = draw(st.sampled_from(INVALID_UTF8))
            line = data.count(b"\n", 0, at) + 1
            return data[:at] + bad + data[at:], f"bytes: {bad!r} at byte {at} (line {line})"
        if kind in ("zero", "groups"):
            matches = list((_NUMBER if kind == "zero" else _GROUPS).finditer(text))
            if not matches:
                return text[:index], f"truncate: at {_where(text, index)} (no number to change)"
            match = draw(st.sampled_from(matches))
            group = 0 if kind == "zero" else 1
            start, end = match.span(group)
            value = "0" if kind == "zero" else str(draw(st.sampled_from([5, 7, 9, 11, 13])))
            return (text[:start] + value + text[end:],
                    f"{kind}: {text[start:end]} -> {value} at {_where(text, start)}")
        if kind == "misspell":
            words = list(_WORD.finditer(text))
            match = draw(st.sampled_from(words))
            word = match.group()
            how = draw(st.sampled_from(["swap", "drop", "double", "replace", "case"]))
            at = draw(st.integers(0, len(word) - 1))
            if how == "swap" and len(word) > 1:
                at = min(at, len(word) - 2)
                wrong = word[:at] + word[at + 1] + word[at] + word[at + 2:]
            elif how == "drop" and len(word) > 1:
                wrong = word[:at] + word[at + 1:]
            elif how == "double":
                wrong = word[:at] + word[at] + word[at:]
            elif how == "case":
                wrong = word.swapcase()
            else:
                wrong = word[:at] + draw(st.sampled_from("aeiouxzq_1")) + word[at + 1:]
            if wrong == word:
                wrong = word + "q"
            start, end = match.span()
            return (text[:start] + wrong + text[end:],
                    f"misspell: {word!r} -> {wrong!r} at {_where(text, start)}")
        lines = text.split("\n")
        number = draw(st.integers(0, len(lines) - 1))
        if kind == "indent":
            line = lines[number]
            how = draw(st.sampled_from(["+1", "-1", "+tab", "none", "+4", "-2"]))
            stripped = line.lstrip(" \t")
            indent = line[: len(line) - len(stripped)]
            changed = {"+1": indent + " ", "-1": indent[:-1], "+tab": indent + "\t", "none": "",
                       "+4": indent + "    ", "-2": indent[:-2]}[how]
            lines[number] = changed + stripped
            return "\n".join(lines), f"indent: {how} on line {number + 1}"
        # line: delete, duplicate or swap with the next
        how = draw(st.sampled_from(["delete", "duplicate", "swap"]))
        if how == "delete":
            del lines[number]
        elif how == "duplicate":
            lines.insert(number, lines[number])
        elif number + 1 < len(lines):
            lines[number], lines[number + 1] = lines[number + 1], lines[number]
        return "\n".join(lines), f"line: {how} line {number + 1}"

    return mutate()


def broken_specs(kinds: Iterable[str] | None = None, tokens: Iterable[str] = INSERT_TOKENS,
                 **spec_options) -> "SearchStrategy[tuple[str | bytes, str]]":
    """specs(**spec_options), each broken in one place by mutations()."""
    chosen = tuple(kinds) if kinds is not None else None
    pool = tuple(tokens)
    return specs(**spec_options).flatmap(lambda text: mutations(text, chosen, pool))


# ---------------------------------------------------------------------------------------------
# Assertions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExactReport:
    """What assert_compiles_exactly checked, all numbers agreeing."""

    network: str
    params: int
    mult_adds: int
    output: tuple[int, ...]  # with the batch dimension
    modules: int


def _leaf_names(model) -> set[str]:
    return {name for name, module in model.named_modules() if name and not any(True for _ in module.children())}


def assert_compiles_exactly(spec, input_shape=None, *, threads: int | None = 1) -> ExactReport:
    """Compile `spec` and check that torch agrees with skdsl.analyze to the unit.

    `spec` is a Network, a path or .sk text. Checked, in eval mode under torch.no_grad at batch
    size 1 (and `input_shape`, C×H×W, if given): the module's leaf names are exactly the graph's
    nodes less "input"; sum(p.numel()) equals the analysis' params; FlopCounterMode's total / 2
    equals its mult_adds; the output shape is (1, *analysis.output). Raises AssertionError that
    lists every disagreement with both numbers (and the first nodes that disagree).
    torch runs on `threads` threads (None: as set); one is fastest for networks this small.
    """
    with _torch_threads(threads):
        return _compiles_exactly(spec, input_shape)


@contextlib.contextmanager
def _torch_threads(count: int | None):
    import torch

    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _compiles_exactly(spec, input_shape) -> ExactReport:
    import torch

    network = _as_network(spec)
    shape = tuple(input_shape or network.input)
    graph = skdsl.lower(network, shape)
    analysis = skdsl.analyze(network, shape)
    model = skdsl.compile(network, shape)
    model.eval()
    problems: list[str] = []

    # A branch that `shares` another's weights runs the other's modules: its nodes are
    # `tied_to` a node with a module and have none of their own.
    tied = {name: data["tied_to"] for name, data in graph.nodes(data=True) if data.get("tied_to")}
    nodes = set(graph.nodes) - {"input"} - set(tied)
    leaves = _leaf_names(model)
    if leaves != nodes:
        extra, missing = sorted(leaves - nodes), sorted(nodes - leaves)
        if extra:
            problems.append(f"module leaves that are not graph nodes: {_few(extra)}")
        if missing:
            problems.append(f"graph nodes without a module: {_few(missing)}")

    params = sum(p.numel() for p in model.parameters())
    if params != analysis.params:
        problems.append(f"parameters: the module has {params:,}, the analysis says "
                        f"{analysis.params:,} ({params - analysis.params:+,})")
        modules = dict(model.named_modules())
        wrong = [f"{name} (module {sum(p.numel() for p in modules[name].parameters())}, "
                 f"analysis {cost.params})" for name, cost in analysis.nodes.items()
                 if name in modules and name not in tied and
                 sum(p.numel() for p in modules[name].parameters()) != cost.params]
        if wrong:
            problems.append(f"  nodes that disagree: {_few(wrong)}")

    try:
        y, more = _mult_add_problems(model, torch.randn(1, *shape), analysis, tied)
    except Exception as crash:  # noqa: BLE001 - a module that cannot run is a disagreement
        problems.append(f"the forward pass failed: {type(crash).__name__}: {crash}")
        raise AssertionError(f"spec '{network.name}' (input {'x'.join(map(str, shape))}) does "
                             f"not compile exactly:\n  " + "\n  ".join(problems)) from crash
    problems += more
    output = tuple(y.shape) if isinstance(y, torch.Tensor) else None
    expected = (1, *analysis.output)
    if output != expected:
        problems.append(f"output shape: the module gives {output}, the analysis says {expected}")

    if problems:
        raise AssertionError(f"spec '{network.name}' (input {'x'.join(map(str, shape))}) does "
                             f"not compile exactly:\n  " + "\n  ".join(problems))
    return ExactReport(network.name, params, analysis.mult_adds, expected, len(leaves))


def _mult_add_problems(model, x, analysis, tied: dict[str, str]):
    """Run `model` on `x` under FlopCounterMode: its output, and how its multiply-adds
    disagree with `analysis` (in total, then by node)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = model(x)
    flops = counter.get_total_flops()
    if flops == 2 * analysis.mult_adds:
        return y, []
    problems = [f"mult-adds: FlopCounterMode total / 2 is {flops / 2:,g}, the analysis says "
                f"{analysis.mult_adds:,} ({flops / 2 - analysis.mult_adds:+,g})"]
    prefix = type(model).__name__ + "."
    counted = {name.removeprefix(prefix): sum(ops.values())
               for name, ops in counter.get_flop_counts().items() if name.startswith(prefix)}
    expected: dict[str, int] = {}  # by module: a tied node's work is its twin module's
    for name, cost in analysis.nodes.items():
        if name != "input":
            module = tied.get(name, name)
            expected[module] = expected.get(module, 0) + cost.mult_adds
    wrong = [f"{name} (torch {counted.get(name, 0) / 2:g}, analysis {mult_adds})"
             for name, mult_adds in expected.items() if counted.get(name, 0) != 2 * mult_adds]
    if wrong:
        problems.append(f"  nodes that disagree: {_few(wrong)}")
    return y, problems


def _few(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" … and {len(items) - limit} more" if len(items) > limit else "")


def assert_shapes(spec, input=None, expected_output=None, *, batch: int = 2,
                  every_node: bool = True, threads: int | None = 1) -> tuple[int, ...]:
    """A real forward pass (eval mode, `batch` images of shape `input`, default the spec's)
    gives the inferred output shape, and `expected_output` if given (with or without the batch
    dimension). With `every_node`, every graph node's output has its inferred shape too.
    Returns the output shape with the batch dimension. torch runs on `threads` threads."""
    with _torch_threads(threads):
        return _shapes_agree(spec, input, expected_output, batch, every_node)


def _shapes_agree(spec, input, expected_output, batch, every_node) -> tuple[int, ...]:
    import torch

    network = _as_network(spec)
    shape = tuple(input or network.input)
    graph = skdsl.lower(network, shape)
    model = skdsl.compile(network, shape)
    model.eval()
    x = torch.randn(batch, *shape)
    problems = []
    with torch.no_grad():
        y = model(x)
        if every_node:
            names = [n for n in graph.nodes if n != "input"]
            for name, value in model.features(x, names).items():
                got = [tuple(t.shape) for t in (value if isinstance(value, tuple) else (value,))]
                want = [(batch, *s) for s in graph.nodes[name]["out_shapes"]]
                if got != want:
                    problems.append(f"node {name}: the module gives {_shapes(got)}, the graph "
                                    f"says {_shapes(want)}")
    output_node, port = graph.graph["output"]
    inferred = (batch, *graph.nodes[output_node]["out_shapes"][port])
    if tuple(y.shape) != inferred:
        problems.insert(0, f"output: the module gives {tuple(y.shape)}, inferred {inferred}")
    if expected_output is not None:
        expected = tuple(expected_output)
        if len(expected) == len(inferred) - 1:
            expected = (batch, *expected)
        if inferred != expected:
            problems.insert(0, f"output: inferred {inferred}, expected {expected}")
    if problems:
        raise AssertionError(f"spec '{network.name}' on input {'x'.join(map(str, shape))}:\n  "
                             + "\n  ".join(problems[:10]))
    return inferred


def _shapes(shapes) -> str:
    return ", ".join("x".join(map(str, s)) for s in shapes)


_LOCATION = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<column>\d+): error (?P<code>SK\d{3}): ")


def assert_rejected(text: str | bytes, *, code: str | None = None, filename: str = "spec.sk",
                    overrides: dict | None = None, folder: str | Path | None = None) -> SpecError:
    """`text` (str, or bytes written as they are) saved as a file is rejected with a SpecError.

    Loading and lowering (so shape errors count) must raise SpecError, not any other
    exception; the error must have a span inside the file (1-based line and column, the line
    at most one past the last), `render()` must work and start with `file:line:col: error
    SKnnn: `, and when it shows the source line, it must be the line the span names. With
    `code`, the error's code must be it. Returns the error.
    """
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    with contextlib.ExitStack() as stack:
        where = Path(folder) if folder is not None else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="skdsl-")))
        path = where / filename
        path.write_bytes(data)
        try:
            network = skdsl.load(path, overrides)
            skdsl.lower(network)
        except SpecError as error:
            _check_located(error, path, data)
            if code is not None and error.code != code:
                raise AssertionError(f"expected error {code}, got {error.code}:\n{error.render()}")
            return error
        except Exception as error:  # noqa: BLE001 - any other exception is the bug we look for
            trace = "".join(traceback.format_exception(error))
            raise AssertionError(f"{path.name} crashed with {type(error).__name__}: {error} "
                                 f"instead of a SpecError\n{trace}") from error
    raise AssertionError(f"the spec was accepted, but should be rejected:\n"
                         f"{data.decode('utf-8', 'replace')}")


def _check_located(error: SpecError, path: Path, data: bytes) -> None:
    try:
        rendered = error.render()
    except Exception as crash:  # noqa: BLE001
        raise AssertionError(f"SpecError {error.code} ({error.message}) fails to render: "
                             f"{type(crash).__name__}: {crash}") from crash
    span = error.span
    if span is None:
        raise AssertionError(f"SpecError without a location:\n{rendered}")
    if not re.fullmatch(r"SK\d{3}", error.code):
        raise AssertionError(f"error code {error.code!r} is not SKnnn:\n{rendered}")
    if span.line < 1 or span.column < 1 or (span.end_line, span.end_column) < (span.line, span.column):
        raise AssertionError(f"span {span!r} is not a region of the file:\n{rendered}")
    match = _LOCATION.match(rendered)
    if not match or match["line"] != str(span.line) or match["column"] != str(span.column):
        raise AssertionError(f"render() does not start with '{span}: error {error.code}: ':\n"
                             f"{rendered}")
    if span.file != str(path):
        return  # an error in an imported file (std/...): its own text, not ours
    lines = data.decode("utf-8-sig", "replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if span.line > len(lines) + 1:
        raise AssertionError(f"span line {span.line} is past the end of the file "
                             f"({len(lines)} lines):\n{rendered}")
    shown = re.search(rf"^{span.line} \| (.*)$", rendered, re.MULTILINE)
    if shown is not None and span.line <= len(lines):
        actual = printable(lines[span.line - 1].rstrip("\r").expandtabs(1))
        # A long line may be clipped to a window around the span: a part of the line is fine.
        if shown.group(1).rstrip() not in actual:
            raise AssertionError(f"the excerpt shows another line than line {span.line} "
                                 f"({actual!r}):\n{rendered}")


# ---------------------------------------------------------------------------------------------
# The `check` command
# ---------------------------------------------------------------------------------------------


def run_check(path: str | Path, *extra: str) -> tuple[int, str]:
    """Run `skdsl check PATH` in process: (exit status, stdout + stderr).

    Uses skdsl.cli.main when skdsl/cli.py exists; otherwise does what `check` does: load and
    lower the spec, exit status 0, or 2 with the SpecError rendered. Exceptions other than
    SystemExit propagate (a crash is a bug).
    """
    if importlib.util.find_spec("skdsl.cli") is None:
        try:
            skdsl.analyze(skdsl.load(path))
        except SpecError as error:
            return error.exit_status, error.render() + "\n"
        return 0, f"{path}: ok\n"
    from skdsl import cli

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            status = cli.main(["check", str(path), *extra])
        except SystemExit as exit_:
            status = exit_.code
    if status is None:
        status = 0
    elif not isinstance(status, int):
        buffer.write(str(status))
        status = 1
    return status, buffer.getvalue()


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise TimeoutError in the block after `seconds` (a hang becomes a failing example).

    Uses SIGALRM, so it only acts in the main thread on POSIX; elsewhere it does nothing.
    """
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError(f"still running after {seconds:g} s: a hang?")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

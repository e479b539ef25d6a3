"""The random writer of whole networks: `Writer` adds to the layers and block calls the
structures around them (regular sequences, residuals, named branches merged by add, mul or
concat, a broadcast gate, ShuffleNetV2 splits), statements, stages and the head.
"""

from __future__ import annotations

from .blocks import BlockWriter
from .sizes import Line, Shape, divisors, nest
from .spelling import ACTIVATIONS, CONV_STRIDE, spellings


class Writer(BlockWriter):
    """Writes one random network, tracking the C×H×W shape so that every line is valid."""

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
        """A residual around a regular sequence, with an identity, automatic or written shortcut."""
        stride = self.pick([1, 2])
        out = shape[0] if self.chance(50) else self.width()
        body, after = self.regular(shape, stride=stride, out=out)
        header = "residual"
        if self.chance(20):
            header += " " + self.kw(spellings("residual", "act"), self.pick(ACTIVATIONS))
        lines = [(0, header + ":"), *nest(body)]
        if after != shape and self.chance(30) or self.chance(5):
            conv = f"conv 1x1, {out}, act none"
            if stride != CONV_STRIDE:
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
            lines += [(0, f"branch {name}:"), *nest(body)]
        channels = sum(outs) if merge == "concat" else outs[0]
        label = f"{self.fresh('merge')} = " if self.chance(20) else ""
        lines.append((0, f"{label}{self.keyword(merge)} {names[0]}, {names[1]}"))
        return lines, (channels, *result[1:])

    def gate(self, shape: Shape) -> tuple[list[Line], Shape]:
        """`mul` broadcasting a C×1×1 gate over a C×H×W map (SE written out by hand)."""
        c = shape[0]
        main, gate = self.fresh("main"), self.fresh("gate")
        squeeze = self.pick(divisors(c))
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
            lines += nest(statement, 2)
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


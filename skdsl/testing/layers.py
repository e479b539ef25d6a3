"""The random writer's layers: conv, dwconv, SK and SUM, SE, pools, and the layers that keep
the shape (bn, ln, act, dropout, shuffle, channelconv). Each method returns its lines and the C×H×W shape after
them; option spellings and the defaults a line may leave out come from the registry (spelling.py).
"""

from __future__ import annotations

from .drawing import Drawing
from .sizes import Line, Shape, common_divisors, divisors, out_size
from .spelling import (ACTIVATIONS, BRANCH_DILATION, BRANCH_GROUPS, CONV_DILATION, CONV_GROUPS,
                       CONV_STRIDE, GATES, SHORTHAND_BRANCHES, SK_STRIDE, spellings)

# (spec field, values drawn, percent of the time written): SK's attention options, and SE's.
SK_ATTENTION = (("reduction_ratio", (2, 4, 8, 16), 60),
                ("min_attention_width", (4, 8, 16, 32), 50),
                ("attention_width_override", (4, 8, 12), 10),
                ("attention_bias", ("no", "yes"), 10), ("attention_norm", ("yes", "no"), 10),
                ("attention_act", ACTIVATIONS, 10), ("attention_layout", ("branch", "group"), 10))
SE_OPTIONS = (("reduction_ratio", (2, 4, 8, 16), 70), ("gate", GATES, 15),
              ("min_width", (1, 2, 4), 10), ("bias", ("no", "yes"), 10), ("width", (1, 3, 8), 10))


class LayerWriter(Drawing):
    """Draws one layer line at a time, valid on the shape it is given."""

    def drawn_options(self, word: str, table) -> list[str]:
        """`name=value` options of layer `word`, each from `table` written `percent`% of the time."""
        return [self.kw(spellings(word, field), self.pick(values), False)
                for field, values, percent in table if self.chance(percent)]

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
            options.append(self.kw(spellings("conv", "groups"), self.pick(["dw", "depthwise"]), False))
        else:
            groups = self.pick(common_divisors(c, out))
            if groups != CONV_GROUPS or self.chance(10):
                options.append(self.kw(spellings("conv", "groups"), self.expr(groups)))
        if stride != CONV_STRIDE or self.chance(10):
            options.append(self.kw(spellings("conv", "stride"), stride))
        if dilation != CONV_DILATION:
            options.append(self.kw(spellings("conv", "dilation"), dilation))
        padding = None
        if not regular and self.chance(10):
            padding = self.number(0, 2)
            size = [out_size(s, k, stride, padding, dilation) for s, k in zip((h, w), kernel)]
            if min(size) < 1:
                padding = None
            else:
                options.append(self.kw(spellings("conv", "padding"), padding))
        if padding is None:
            pads = [dilation * (k - 1) // 2 for k in kernel]
            size = [out_size(s, k, stride, p, dilation) for s, k, p in zip((h, w), kernel, pads)]
        if self.chance(30):
            options.append(self.kw(spellings("conv", "act"), self.pick(ACTIVATIONS)))
        if self.chance(10):
            options.append(self.kw(spellings("conv", "bias"), self.pick(["yes", "true", "on", "no", 1, 0])))
        if self.chance(10):
            options.append(self.kw(spellings("conv", "norm"), self.pick(["no", "off", "yes", "false"])))
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
        if stride != CONV_STRIDE:
            options.append(self.kw(spellings("dwconv", "stride"), stride))
        if dilation != CONV_DILATION:
            options.append(self.kw(spellings("dwconv", "dilation"), dilation))
        if self.chance(60):
            options.append(self.kw(spellings("dwconv", "act"), self.pick(ACTIVATIONS)))
        text = f"{self.keyword('dwconv')} {self.dims(*kernel)}"
        if options:
            text += ", " + self.join(self.shuffled(options))
        size = [out_size(s, k, stride, dilation * (k - 1) // 2, dilation)
                for s, k in zip((h, w), kernel)]
        return [(0, text)], (c, *size)

    def selective(self, shape: Shape, *, stride=None, out=None, attention=None
                  ) -> tuple[list[Line], Shape]:
        """SK (attention) or SUM (plain sum): shorthand M, or an explicit list of branches."""
        c, h, w = shape
        out = out if out is not None else self.width()
        stride = stride if stride is not None else self.pick([1, 2])
        attention = attention if attention is not None else self.chance(70)
        word = "sk" if attention else "sum"
        dividing = common_divisors(c, out)
        options, lines = [], None
        explicit = self.chance(40)
        default_groups = BRANCH_GROUPS if BRANCH_GROUPS in dividing else None
        groups = self.pick(dividing)
        used_groups = {groups}  # what every branch convolves with: `split` must keep them whole
        if not explicit:
            count = self.number(1, 4)
            if count != SHORTHAND_BRANCHES or self.chance(50):
                options.append(self.kw(spellings(word, "branch_count"), self.expr(count), False))
            if groups != default_groups or self.chance(50):
                options.append(self.kw(spellings(word, "groups"), groups, bare_ok=False))
            if self.chance(15):  # branches of another odd kernel, same padding: same sizes
                options.append(self.kw(spellings(word, "branch_kernel"),
                                       self.dims(*self.pick([(1, 1), (5, 5)])), False))
            if self.chance(15):
                options.append(self.kw(spellings(word, "branch_dilate"), "no", False))
        else:
            count = self.number(1, 4)
            if self.chance(20):
                options.append(self.kw(spellings(word, "branch_count"), count, False))
            inherit = self.chance(50)
            if inherit:
                options.append(self.kw(spellings(word, "groups"), groups, bare_ok=False))
            else:
                used_groups = {BRANCH_GROUPS}  # unless a line gives its own
            lines = []
            for _ in range(count):
                kernel = self.pick([(3, 3), (5, 5), (1, 1)] + ([(1, 3), (3, 1)]
                                                              if self.asymmetric else []))
                dilation = 1 if max(kernel) == 1 else self.number(1, 3)
                parts = [self.dims(*kernel)]
                if not inherit or self.chance(30):
                    if inherit or default_groups is None or self.chance(70):
                        own = self.pick(dividing)
                        used_groups.add(own)
                        parts.append(self.kw(spellings("branch", "groups"), own, False))
                    # else: the branch takes SK's default G (32), which divides here
                if dilation != BRANCH_DILATION or self.chance(10):
                    parts.append(self.kw(spellings("branch", "dilation"), dilation, False))
                lines.append((1, ", ".join(parts)))
        # `split yes`: branch m reads the m-th of `count` slices of the c input channels.
        if c % count == 0 and all((c // count) % g == 0 for g in used_groups) and self.chance(25):
            options.append(self.kw(spellings(word, "split_input"), "yes", bare_ok=False))
        if self.chance(10):
            options.append(self.kw(spellings(word, "norm"), self.pick(["no", "yes"]), False))
        if attention:
            options += self.drawn_options(word, SK_ATTENTION)
        if stride != SK_STRIDE or self.chance(10):
            options.append(self.kw(spellings(word, "stride"), stride, bare_ok=False))
        text = self.keyword(word.upper())
        if options:
            text += "[" + ", ".join(self.shuffled(options)) + "]"
            text += ", " if not self.decorate or self.chance(80) else " "
        else:
            # `SK[], 32` would be valid syntax too, but crashes expand.py (see tests/testing/test_properties.py)
            text += " "
        text += self.expr(out)
        size = [out_size(s, 3, stride, 1) for s in (h, w)]  # odd kernels, same padding
        if lines is not None:
            return [(0, text + ":"), *lines], (out, *size)
        return [(0, text)], (out, *size)

    def squeeze_excite(self, shape: Shape) -> tuple[list[Line], Shape]:
        """SE, bare or with some of its options; it keeps the shape."""
        options = self.drawn_options("se", SE_OPTIONS)
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
            stride_option = self.kw(spellings(mode, "stride"), stride)
            text = f"{self.keyword(mode)} {self.dims(3, 3)}, {stride_option}"
        ceil_mode = self.chance(15)
        if ceil_mode:
            text += ", " + self.kw(spellings(mode, "ceil_mode"), self.pick(["yes", "true", 1]))
        size = [out_size(s, kernel, stride, padding, 1, ceil_mode) for s in (h, w)]
        return [(0, text)], (c, *size)

    def simple(self, shape: Shape) -> tuple[list[Line], Shape]:
        """A layer that keeps the shape: dropout, bn, act or a channel shuffle."""
        c = shape[0]
        kind = self.pick(["bn", "act", "dropout", "shuffle", "ln", "channelconv"])
        if kind == "ln":
            return [(0, self.keyword("ln") + self.pick(["", "[eps=1e-5]"]))], shape
        if kind == "channelconv":
            kernel = self.pick([k for k in (1, 3, 5, 7) if k <= 2 * c + 1])
            options = [self.kw(spellings("channelconv", field), value, False)
                       for field, value in (("circular", "yes"), ("hidden", self.number(1, 4)),
                                            ("bias", "yes")) if self.chance(30)]
            return [(0, ", ".join([f"{self.keyword('channelconv')} {kernel}", *options]))], shape
        if kind == "dropout":
            return [(0, f"{self.keyword('dropout')} {self.pick(['0.1', '0.2', '0.5', '0', '0.25'])}")], shape
        if kind == "act":
            return [(0, f"{self.keyword('act')} {self.pick(ACTIVATIONS)}")], shape
        if kind == "shuffle" and self.allow_shuffle:
            return [(0, f"{self.keyword('shuffle')} {self.pick(divisors(c))}")], shape
        return [(0, self.keyword("bn"))], shape

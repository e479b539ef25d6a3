"""The random writer's block templates and calls: templates it defines (a bottleneck with a
conv, SK or SUM middle, a ShuffleNetV2 unit, a two-branch down-sampling unit, a conv-bn-relu
with an integer kernel) and calls of them or of the standard library's units (std/resnext.sk,
std/attention.sk, std/shufflenetv2.sk), repeated or as a whole stage.
"""

from __future__ import annotations

from ..lang.expand import make_divisible
from .layers import LayerWriter
from .sizes import Line, Shape, common_divisors, divisors, out_size


class BlockWriter(LayerWriter):
    """Defines block templates once and draws calls of them, tracking the shape after."""

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
            groups = self.pick(divisors(width, 32))
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
                size = tuple(out_size(s, 3, stride if index == 0 else 1, 1) for s in size)
        else:
            name = self.template(family)
            if family == "bottleneck":
                width, out, stride = self.width(), self.width(), self.pick([1, 2])
                default_g = self.templates[name][1]["default_g"]
                groups = self.pick(divisors(width, 32))
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
                    size = tuple(out_size(s, 3, stride if index == 0 else 1, 1) for s in size)
            elif family == "shuffle":
                args, channels, size = [self.expr(c)], c, (h, w)
            elif family == "down":
                out = self.width()
                args, channels, size = [self.expr(out)], out, (h, w)
                for _ in range(repeat):
                    size = tuple(out_size(s, 3, 2, 1) for s in size)
            else:
                out, k, stride = self.width(), self.pick([3, 1, 5]), self.pick([1, 2])
                args = [self.expr(out)]
                if k != 3 or self.chance(20):
                    args.append(f"k={k}")
                if stride != 1:
                    args.append(f"stride={stride}")
                channels, size = out, (h, w)
                for index in range(repeat):
                    size = tuple(out_size(s, k, stride if index == 0 else 1, (k - 1) // 2)
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
        """std/attention.sk: BAM between stages, a bottleneck with CBAM, or one of timm's
        attention modules."""
        self.uses.add("std/attention.sk")
        c, h, w = shape
        if self.chance(50):
            return self.timm_attention(shape, repeat, stage_repeat)
        if self.chance(50):
            r = self.pick([d for d in (2, 4, 8, 16) if c % d == 0] or [1])
            text = f"bam({self.expr(c)}, r={r}, D={self.number(1, 4)})"
            return self.finish_call(text, repeat, shape, stage_repeat)
        width, out, stride = self.width(), self.width(), self.pick([1, 2])
        groups = self.pick(divisors(width, 32))
        r = self.pick([d for d in (2, 4, 8, 16) if out % d == 0])
        text = f"cbam_unit({self.expr(width)}, {self.expr(out)}, stride={stride}, G={groups}, r={r})"
        size = tuple(out_size(s, 3, stride, 1) for s in (h, w))
        return self.finish_call(text, repeat, (out, *size), stage_repeat)

    def timm_attention(self, shape: Shape, repeat: int, stage_repeat: bool):
        """One of the blocks of timm's create_attn modules, with some of its settings."""
        c, h, w = shape
        keeping = {
            "squeeze_excite": [f"ratio={self.pick([0.0625, 0.25])}", "divisor=4"],
            "effective_se": [], "eca": [f"k={self.pick([0, 3, 5])}", "circular=yes"],
            "circular_eca": [], "eca_mlp": [f"ratio={self.pick([0.125, 0.5])}"],
            "gather_excite": [f"extent={self.pick([0, 1, 2, 4])}"],
            "global_context": [f"add={self.pick(['yes', 'no'])}", "ratio=0.25"],
            "global_context_add": [], "cbam": [f"kernel={self.pick([3, 7])}"],
            "light_cbam": [f"kernel={self.pick([3, 7])}", "divisor=2"]}
        name = self.pick([*keeping, "selective_kernel", "split_attention"])
        if name in keeping:
            options = [option for option in keeping[name] if self.chance(50)]
            return self.finish_call(f"{name}({', '.join(options)})", repeat, shape, stage_repeat)
        # Called once: a repeat would read `out` channels, which these need to divide anew.
        out, stride, repeat = self.width(), self.pick([1, 2]), 1
        radix = 2 if name == "selective_kernel" else self.pick([1, 2, 4])
        if c % radix:
            return self.finish_call("effective_se()", repeat, shape, stage_repeat)
        args = [self.expr(out), f"stride={stride}"]
        if name == "split_attention":
            width = make_divisible(c * radix * 0.25, 8, 32)
            groups = self.pick(common_divisors(c // radix, out, width))
            args += [f"radix={radix}", f"G={groups}", f"bn={self.pick(['yes', 'no'])}"]
        size = tuple(out_size(s, 3, stride, 1) for s in (h, w))
        return self.finish_call(f"{name}({', '.join(args)})", repeat, (out, *size), stage_repeat)

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
            size = [out_size(s, 3, 2, 1) for s in size]
        text = f"shuffle{variant}_down({self.expr(c)}, {self.expr(out)}{options})"
        return self.finish_call(text, repeat, (out, *size), stage_repeat)

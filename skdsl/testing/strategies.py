"""The strategies that make valid specs: `specs()` (random .sk texts, valid by construction,
written by writer.Writer and then decorated), `networks()` (the same, parsed) and `variants()`
(one spec's declared params drawn from strategies). Hypothesis is imported when one is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from skdsl.core import spec as S
from skdsl.base.errors import SpecError
from skdsl.core.graph import lower_table
from skdsl.lang.loading import load, parse

from .sizes import Shape, out_size, render
from .writer import Writer

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

WIDTHS = (8, 16, 24, 32, 48, 64)


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
        writer = Writer(draw, st, widths=width_list, max_width=max_width, selective=selective,
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
            shape = (stem_width, out_size(size, 3, 2, 1), out_size(size, 3, 2, 1))
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
            out += render(template, indent)
        out += render(network, indent)
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
    return specs(**kwargs).map(lambda text: parse(text, file="<specs>"))


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

    from skdsl.lang.parser import parse_text, read_source

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
                network = parse(text, file="<variants>", overrides=overrides)
            else:
                network = load(path_or_text, overrides)
            lower_table(network)
        except SpecError:
            return None
        return network

    return st.fixed_dictionaries(strategies).map(build).filter(lambda network: network is not None)

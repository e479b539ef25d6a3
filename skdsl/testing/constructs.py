"""A strategy for the language's newer constructs (docs/language.md: functions, `x depth`,
`if`/`else`, `residual if`, `in_channels`, `for` tables, `upsample`, `scale`): each draw is a
small network written with one construct and the same network written without it, so a test
holds the expander to what the construct means.

    rewrites(kinds=KINDS)   Rewrite(kind, text, plain, same_names)

`text` and `plain` must give the same parameters, multiply-adds and output shape, with
`same_names` the same layer names too, and compiled with one seed, the same output. `upsample`
has no spelling without itself, so its pair is the two spellings of one size (`upsample 2` and
`upsample to input`); `scale` is a pair of reciprocal powers of two, which is no change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from .language import conditions, width_expressions

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

KINDS = ("function", "repeat", "if", "residual_if", "in_channels", "for", "upsample", "scale")
CHANNELS = (4, 8, 12, 16)


class Rewrite(NamedTuple):
    kind: str
    text: str         # written with the construct
    plain: str        # the same network without it
    same_names: bool  # whether the layer names agree too


def rewrites(kinds: tuple[str, ...] = KINDS) -> "SearchStrategy[Rewrite]":
    """Rewrite pairs for the given constructs (a subset of KINDS), on 8×8 or 16×16 inputs."""
    from hypothesis import strategies as st

    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ValueError(f"unknown construct {', '.join(unknown) or '(none)'}; "
                         f"known: {', '.join(KINDS)}")

    @st.composite
    def build(draw) -> Rewrite:
        kind = draw(st.sampled_from(kinds))
        size, stem = draw(st.sampled_from((8, 16))), draw(st.sampled_from(CHANNELS))
        c = draw(st.sampled_from(CHANNELS))
        blocks, body, plain_blocks, plain_body = _DRAW[kind](draw, st, stem, c)
        return Rewrite(kind, _network(blocks, body, size, stem),
                       _network(plain_blocks, plain_body, size, stem), kind != "scale")

    return build()


def _network(blocks: str, body: list[str], size: int, stem: int) -> str:
    stage = "".join(f"        {line}\n" for line in body)
    return (f"{blocks}network drawn:\n    input 3x{size}x{size}\n    classes 10\n"
            f"    stage stem: conv 3x3, {stem}\n    stage s:\n{stage}"
            "    stage head:\n        gap\n        fc classes\n")


# Each drawer returns (blocks, body lines) with the construct, then without it.

def _function(draw, st, stem, c):
    text, width = draw(width_expressions())
    return "", [f"conv 3x3, {text}"], "", [f"conv 3x3, {width}"]


PAIR = "block pair(c):\n    conv 3x3, c\n    conv 3x3, c, act none\n"


def _repeat(draw, st, stem, c):
    n = draw(st.integers(1, 3))
    if draw(st.booleans()):  # a param
        return (f"param depth = {n}\n{PAIR}", [f"pair({c}) x depth"], PAIR, [f"pair({c}) x{n}"])
    return (f"{PAIR}block tower(c, n):\n    pair(c) x n\n", [f"tower({c}, {n})"],
            f"{PAIR}block tower(c):\n    pair(c) x{n}\n", [f"tower({c})"])


def _if(draw, st, stem, c):
    condition, values, truth = draw(conditions(("a", "b")))
    chosen, other = ["conv 3x3, c"], ["conv 1x1, c", "dwconv 3x3"]
    has_else = draw(st.booleans())
    lines = ["conv 1x1, c", f"if {condition}:", *(f"    {line}" for line in chosen)]
    if has_else:
        lines += ["else:", *(f"    {line}" for line in other)]
    kept = ["conv 1x1, c"] + (chosen if truth else other if has_else else [])
    call = [f"unit({c}, a={values['a']}, b={values['b']})"]
    return (_block("unit(c, a, b)", lines), call, _block("unit(c, a, b)", kept), call)


def _residual_if(draw, st, stem, c):
    condition, values, truth = draw(conditions(("a", "b")))
    options = draw(st.sampled_from(("", " act none", " act relu6")))
    body = ["    conv 3x3, c", "    conv 3x3, c, act none"]
    kept = [f"residual{options}:", *body] if truth else [line[4:] for line in body]
    call = [f"unit({c}, a={values['a']}, b={values['b']})"]
    return (_block("unit(c, a, b)", [f"residual{options} if {condition}:", *body]), call,
            _block("unit(c, a, b)", kept), call)


def _in_channels(draw, st, stem, c):
    t, n = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    body = ["    conv 1x1, {c_in} * t", "    conv 1x1, c, act none"]
    text = _block("unit(c, t)", ["residual if in_channels == c:",
                                 *(line.format(c_in="in_channels") for line in body)])
    plain = (_block("unit_res(c_in, c, t)", ["residual:", *(b.format(c_in="c_in") for b in body)])
             + _block("unit(c_in, c, t)", [b[4:].format(c_in="c_in") for b in body]))
    reads = [stem] + [c] * (n - 1)
    calls = [f"unit{'_res' if c_in == c else ''}({c_in}, {c}, {t})" for c_in in reads]
    return text, [f"unit({c}, {t}) x{n}"], plain, calls


def _for(draw, st, stem, c):
    rows = draw(st.lists(st.tuples(st.sampled_from(CHANNELS), st.integers(1, 2)),
                         min_size=1, max_size=3))
    table = ", ".join(f"({width}, {n})" for width, n in rows)
    return (PAIR, [f"for c, n in {table}:", "    pair(c) x n"],
            PAIR, [f"pair({width}) x{n}" for width, n in rows])


def _upsample(draw, st, stem, c):
    mode = draw(st.sampled_from(("", ", mode bilinear")))
    before = [f"conv 3x3, {c}, stride 2"]
    after = [f"conv 3x3, {c}"]
    return ("", before + [f"upsample to input{mode}"] + after,
            "", before + [f"upsample 2{mode}"] + after)


def _scale(draw, st, stem, c):
    power = draw(st.integers(1, 4))
    convs = [f"conv 3x3, {c}", f"conv 1x1, {c}"]
    return "", [convs[0], f"scale {2 ** power}", f"scale {0.5 ** power}", convs[1]], "", convs


def _block(signature: str, lines: list[str]) -> str:
    return f"block {signature}:\n" + "".join(f"    {line}\n" for line in lines)


_DRAW = {"function": _function, "repeat": _repeat, "if": _if, "residual_if": _residual_if,
         "in_channels": _in_channels, "for": _for, "upsample": _upsample, "scale": _scale}

__all__ = ["rewrites", "Rewrite", "KINDS"]

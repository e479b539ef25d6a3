"""The strategies that break specs: `mutations()` changes a valid text in one place (a
character, a token, a number, a G, a word, an indent, a line, bytes that are not UTF-8) and
`broken_specs()` applies it to `specs()`; the tokens and bytes they insert.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable

from .spelling import spellings
from .strategies import specs

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

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
_GROUP_NAMES = "|".join(map(re.escape, spellings("conv", "groups")))  # the registry's: G|groups|g
_GROUPS = re.compile(rf"\b(?:{_GROUP_NAMES})\s*=\s*(\d+)")


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

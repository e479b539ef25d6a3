"""The random writer's base: its options, the state one network accumulates (templates,
params, standard-library uses), and how it draws numbers, names and widths and spells them
(option spellings, arithmetic, keyword case, `×`, argument order).
"""

from __future__ import annotations

import re
from typing import Any

from .sizes import Line
from .spelling import layer


class Drawing:
    """The random writer's options and state, and how it draws numbers and spells them."""

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
        # Only a plain value may follow bare: `G (4/2)` reads as a call of a function G.
        plain = re.fullmatch(r"[A-Za-z0-9_.]+", str(value))
        if bare_ok and self.decorate and self.chance(40) and plain:
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
        """A layer keyword of the registry, sometimes in another case (keywords ignore case)."""
        word = layer(word)
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

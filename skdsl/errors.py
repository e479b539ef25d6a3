"""Located, explained errors: one exception hierarchy with stable codes.

Every mistake a user can make ends as a `SkdslError` whose `render()` is what the CLI
prints before exiting with status 2. Codes are stable and documented in docs/errors.md:

    SK1xx  reading and syntax          SK2xx  names, arguments and values
    SK3xx  shapes and channels         SK4xx  JSON specs
    SK5xx  command line and files      SK6xx  checkpoints and training
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

# Source text by file name, so an error raised long after parsing can still show its line.
_SOURCES: dict[str, str] = {}


def register_source(file: str, text: str) -> None:
    _SOURCES[file] = text


@dataclass(frozen=True)
class Span:
    """A region of a source file: 1-based lines and columns, end column exclusive."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class SkdslError(Exception):
    """Base of every error skdsl reports to a user (exit status 2)."""

    code = "SK000"
    exit_status = 2

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def render(self) -> str:
        text = f"error {self.code}: {self.message}"
        if self.hint:
            text += f"\n  = hint: {self.hint}"
        return text


class SpecError(SkdslError):
    """A mistake in a spec, located at the offending text."""

    code = "SK200"

    def __init__(
        self,
        message: str,
        span: Span | None = None,
        *,
        code: str | None = None,
        expected: list[str] | None = None,
        hint: str | None = None,
        notes: list[str] | None = None,
    ):
        super().__init__(message, hint=hint, code=code)
        self.span = span
        self.expected = list(expected or [])
        self.notes = list(notes or [])

    def with_note(self, note: str) -> "SpecError":
        if note not in self.notes:
            self.notes.append(note)
        return self

    def render(self) -> str:
        where = f"{self.span}: " if self.span else ""
        lines = [f"{where}error {self.code}: {self.message}"]
        lines += _excerpt(self.span)
        if self.expected:
            lines.append(f"  = expected: {_or_list(self.expected)}")
        lines += [f"  = {note}" for note in self.notes]
        if self.hint:
            lines.append(f"  = hint: {self.hint}")
        return "\n".join(lines)


class CliError(SkdslError):
    """A bad command-line argument or an unusable file named on the command line."""

    code = "SK500"


class CheckpointError(SkdslError):
    """A checkpoint that cannot be used: missing, corrupt, foreign or of another spec."""

    code = "SK600"


_WIDEST = 100  # characters of a source line shown in an excerpt


def _excerpt(span: Span | None) -> list[str]:
    """The source line with a caret under the span, in the style of rustc and Lark."""
    if span is None or span.file not in _SOURCES:
        return []
    # Lines as Lark counts them: only "\n" ends a line (not \r, \f or \u2028).
    source_lines = _SOURCES[span.file].split("\n")
    if not 1 <= span.line <= len(source_lines) + 1:
        return []
    text = source_lines[span.line - 1] if span.line <= len(source_lines) else ""
    text = printable(text.rstrip("\r").expandtabs(1))
    if len(text) > _WIDEST:
        # Clip a long line (a minified JSON spec) to a window around the span.
        start = max(0, min(span.column - 1 - _WIDEST // 2, len(text) - _WIDEST))
        text = text[start:start + _WIDEST]
        span = Span(span.file, span.line, span.column - start, span.line,
                    (span.end_column if span.end_line == span.line else span.column + 1) - start)
    code_end = len(text.split("#", 1)[0].rstrip()) + 1
    last = span.end_column if span.end_line == span.line else code_end
    width = max(1, min(last, max(code_end, span.column + 1)) - span.column)
    number = str(span.line)
    pad = " " * len(number)
    return [
        f"{pad} |",
        f"{number} | {text}",
        f"{pad} | {' ' * (span.column - 1)}{'^' * width}",
    ]


def printable(text: str) -> str:
    """The text with control characters shown as '?', one column each, so carets still align."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _or_list(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " or " + items[-1]


def did_you_mean(word: str, candidates) -> str | None:
    """A 'did you mean' hint for a misspelt name, or None when nothing is close."""
    pool = sorted(set(candidates))
    close = difflib.get_close_matches(word, pool, n=3, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in pool}
        if word.lower() in lowered:
            close = [lowered[word.lower()]]
    if not close:
        return None
    return "did you mean " + _or_list([f"'{c}'" for c in close]) + "?"

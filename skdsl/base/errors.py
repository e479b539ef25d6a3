"""Located, explained errors: one exception hierarchy with stable codes.

Every mistake a user can make ends as a `SkdslError` whose `render()` is what the CLI
prints before exiting with status 2. Codes are stable and documented in docs/errors.md:

    SK1xx  reading and syntax          SK2xx  names, arguments and values
    SK3xx  shapes and channels         SK4xx  JSON specs
    SK5xx  command line and files      SK6xx  checkpoints and training
    SK7xx  warnings (lint): a spec that builds, but likely not as meant (`SpecWarning`)

Library code names a caller's settings (config fields and parameters such as `batch_size` or
`overrides`), never flags: a message, hint or note writes each as `{batch_size}`. A Python caller
sees the name (`str(error)`, `.message`, `.hint`, `render()`); the command line renders the error
with its flags instead (`render(flag)`: `--batch-size`, `--set`). A module declares the settings
its messages name (`declare_settings`); other braces, such as a path quoted from the user, stay.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Callable

# A setting named in a message: `{batch_size}`, a lower-case snake_case word in braces.
_SETTING = re.compile(r"\{([a-z][a-z0-9]*(?:_[a-z0-9]+)*)\}")


def named(setting: str) -> str:
    """A setting as the Python API spells it: its own name."""
    return setting


# The settings messages may name, declared by the modules that name them: only these are
# spelled, so text quoted from the user ('/tmp/{abc}/x.sk') keeps its braces.
_DECLARED: set[str] = set()


def declare_settings(*names: str) -> None:
    """Let messages name these settings as `{name}` (call it beside the messages that do)."""
    _DECLARED.update(names)


def declared_settings() -> frozenset[str]:
    return frozenset(_DECLARED)


def spell(text: str, spelled: Callable[[str], str] = named) -> str:
    """`text` with each declared `{setting}` written as `spelled(setting)`; other braces stay."""
    return _SETTING.sub(lambda match: spelled(match.group(1)) if match.group(1) in _DECLARED
                        else match.group(0), text)


# Source text by file name, so an error raised long after parsing can still show its line.
_SOURCES: dict[str, str] = {}


def register_source(file: str, text: str) -> None:
    _SOURCES[file] = text


def source_line(file: str, number: int) -> str | None:
    """Line `number` (1-based) of a registered source, or None."""
    text = _SOURCES.get(file)
    lines = None if text is None else text.split("\n")
    return lines[number - 1] if lines and 0 < number <= len(lines) else None


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
        super().__init__(spell(message))
        self._templates = (message, hint)  # with `{setting}`s, for `render(spelled)`
        self.message = spell(message)
        self.hint = spell(hint) if hint else hint
        if code is not None:
            self.code = code

    @property
    def settings(self) -> tuple[str, ...]:
        """The settings the message and hint name, in order."""
        return tuple(name for name in dict.fromkeys(
            _SETTING.findall(" ".join(filter(None, self._texts())))) if name in _DECLARED)

    def _texts(self) -> list[str | None]:
        return list(self._templates)

    def render(self, spelled: Callable[[str], str] = named) -> str:
        """The error as printed, each setting written `spelled(name)` (default: its name)."""
        message, hint = self._templates
        text = f"error {self.code}: {spell(message, spelled)}"
        if hint:
            text += f"\n  = hint: {spell(hint, spelled)}"
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

    def _texts(self) -> list[str | None]:
        return [*self._templates, *self.notes]

    def render(self, spelled: Callable[[str], str] = named) -> str:
        message, hint = self._templates
        return _located("error", self.code, message, self.span, self.expected, self.notes, hint,
                        spelled)


class SpecWarning:
    """A located remark on a spec that builds, but likely not as its writer meant (SK7xx).

    Library code returns them (`skdsl.lint`) and never prints them; the command line prints
    them on stderr, rendered as errors are but labelled `warning`, and fails on them only under
    --strict. `message`, `hint` and `notes` name settings as errors do (`{overrides}`).
    """

    def __init__(self, code: str, message: str, span: Span | None, *, hint: str | None = None,
                 notes: list[str] | tuple[str, ...] = ()):
        self.code, self.span = code, span
        self._templates = (message, hint, tuple(notes))
        self.message = spell(message)
        self.hint = spell(hint) if hint else hint
        self.notes = tuple(spell(note) for note in notes)

    def __str__(self) -> str:
        where = f"{self.span}: " if self.span else ""
        return f"{where}warning {self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"SpecWarning({self.code!r}, {self.message!r}, {self.span!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SpecWarning) and (self.code, self.span, self._templates) == (
            other.code, other.span, other._templates)

    def __hash__(self) -> int:
        return hash((self.code, self.span, self._templates))

    def render(self, spelled: Callable[[str], str] = named) -> str:
        """The warning as printed, each setting written `spelled(name)` (default: its name)."""
        message, hint, notes = self._templates
        return _located("warning", self.code, message, self.span, (), notes, hint, spelled)

    def as_error(self, *notes: str) -> SpecError:
        """The error this warning becomes where warnings are not tolerated, with more notes."""
        message, hint, own = self._templates
        return SpecError(message, self.span, code=self.code, hint=hint, notes=[*own, *notes])


def _located(label: str, code: str, message: str, span: Span | None, expected, notes, hint,
             spelled: Callable[[str], str]) -> str:
    """A diagnostic as printed: where, what, the source line with a caret, then notes and hint."""
    where = f"{span}: " if span else ""
    lines = [f"{where}{label} {code}: {spell(message, spelled)}"]
    lines += _excerpt(span)
    if expected:
        lines.append(f"  = expected: {_or_list(list(expected))}")
    lines += [f"  = {spell(note, spelled)}" for note in notes]
    if hint:
        lines.append(f"  = hint: {spell(hint, spelled)}")
    return "\n".join(lines)


class CliError(SkdslError):
    """A bad command-line argument: raised by skdsl.commands alone (the library raises domain
    errors, which the commands report as they are)."""

    code = "SK500"


class InputFileError(SkdslError):
    """A file given to skdsl that cannot be used: missing, unreadable, or not what it should be
    (a weights file, a tables manifest)."""

    code = "SK520"


class CheckpointError(SkdslError):
    """A checkpoint that cannot be used: missing, corrupt, foreign or of another spec."""

    code = "SK600"


class APIError(SkdslError):
    """A Python call given something it cannot use: skdsl.train(...) given a model that is
    neither a spec nor a module, data that is neither a Dataset nor a DataLoader, one split
    without the other, no `out`; a module that is no skdsl network with a `data` source."""

    code = "SK652"


class SettingError(SkdslError):
    """A setting's value that cannot be used. A library error: it names the setting, and only
    the command line turns that into the flag that set it (declare_settings)."""

    code = "SK510"


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

"""Text -> syntax tree, with located errors. The only module that imports Lark.

Lark parses with LALR and a Python-style indenter; every Lark exception is turned into a
`SpecError` that points at the offending token and lists, in words, what could have come there.
"""

from __future__ import annotations

import errno
import functools
import math
import re
import threading
from bisect import bisect_left
from pathlib import Path

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.indenter import Indenter

from .. import ops
from ..base import files
from ..base.errors import Span, SpecError, did_you_mean, register_source
from . import syntax as A
from .syntax import (MAX_FILE_BYTES, MAX_INTEGER, MAX_LINE_LENGTH, MAX_NESTING, MAX_READ_BYTES,
                     MAX_REPEAT, MAX_TERMS)

GRAMMAR = Path(__file__).with_name("grammar.lark")

LAYER_KEYWORDS = ops.LAYER_KEYWORDS  # the registry's: one definition per keyword
STATEMENT_KEYWORDS = ("residual", "shortcut", "branch", "split", "stage", "block", "network",
                      "param", "use", "input", "classes", "paper")

# Terminal names as a person would say them.
TERMINAL_PHRASES = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "QUANTITY": "a number such as 27.5M",
    "DIMS": "a size such as 3x3", "STRING": 'a quoted path such as "std/resnext.sk"',
    "LAYER": "a layer such as conv or SK", "REPEAT": "a repeat count such as x3",
    "ADD_OP": "'+' or '-'", "MUL_OP": "'*', '/', '//' or '%'",
    "COMPARE": "a comparison such as == or <", "_NL": "the end of the line",
    "_INDENT": "an indented block", "_DEDENT": "the end of the indented block",
    "$END": "the end of the file",
}

_SI = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}


class _Indenter(Indenter):
    NL_type = "_NL"
    OPEN_PAREN_types = ["LPAR", "LSQB"]
    CLOSE_PAREN_types = ["RPAR", "RSQB"]
    INDENT_type = "_INDENT"
    DEDENT_type = "_DEDENT"
    tab_len = 8

    def handle_NL(self, token: Token):
        if self.paren_level > 0:
            return
        yield token
        indent_text = token.rsplit("\n", 1)[1]
        indent = indent_text.count(" ") + indent_text.count("\t") * self.tab_len
        if indent > self.indent_level[-1]:
            self.indent_level.append(indent)
            if len(self.indent_level) > MAX_NESTING:
                line = token.end_line
                raise _too_deep(Span(self._file, line, 1, line, len(indent_text) + 1),
                                "indented blocks")
            yield Token.new_borrow_pos(self.INDENT_type, indent_text, token)
            return
        while indent < self.indent_level[-1]:
            self.indent_level.pop()
            yield Token.new_borrow_pos(self.DEDENT_type, indent_text, token)
        if indent != self.indent_level[-1]:
            line = token.end_line
            raise SpecError(
                "this line's indentation matches no enclosing block",
                Span(self._file, line, 1, line, len(indent_text) + 1), code="SK104",
                hint=f"indent it by {self.indent_level[-1]} columns, like the lines of its block",
            )

    @property
    def _file(self) -> str:
        return getattr(self, "file", "<spec>")

    def _process(self, stream):
        emitted = self.emitted  # read by _ToSyntax for the spans of the rules it reduces
        previous = None
        for token in super()._process(stream):
            if token.line is None and previous is not None:
                # Lark before 1.3 closes the blocks open at the end of the file with tokens
                # that have no position; 1.3 gives them the last token's, and so does this.
                token = Token.new_borrow_pos(token.type, token.value, previous)
            if self.paren_level > MAX_NESTING:  # counts the brackets before this token
                raise _too_deep(_token_span(token, self._file), "brackets")
            emitted.append(token)
            previous = token
            yield token
        emitted.append(None)  # the end: the last token is now emitted[-2], as before a lookahead


def _too_deep(span: Span, what: str) -> SpecError:
    return SpecError(f"nested too deeply: more than {MAX_NESTING} levels of {what}", span,
                     code="SK119", hint="flatten it: move the inner part into a block of its own")


@functools.cache
def _lark() -> Lark:
    """The parser. `_ToSyntax` is applied as each rule is reduced: no parse tree is built and no
    second pass walks one (which also keeps a 20,000-term sum free of recursion)."""
    postlex = _Indenter()
    return Lark(grammar(), parser="lalr", postlex=postlex, transformer=_ToSyntax(postlex),
                maybe_placeholders=True, start=["start", "space_flag", "budget_flag"])


def grammar() -> str:
    """The Lark grammar, with the registry's layer keywords in place."""
    return GRAMMAR.read_text(encoding="utf-8").replace("%KEYWORDS%", "|".join(LAYER_KEYWORDS))


_PARSING = threading.RLock()  # one Lark instance, its indenter and transformer hold a parse's state


def _run(text: str, file: str, start: str = "start"):
    """Lark's parse of `text` from the rule `start`, syntax nodes located in `file`."""
    parser = _lark()
    with _PARSING:
        parser.options.postlex.file = file
        parser.options.transformer.begin(file)
        try:
            return parser.parse(text, start=start)
        finally:
            parser.options.transformer.begin("<spec>")  # keep no token of this text


def read_source(path: str | Path, shown: str | None = None, limit: int = MAX_READ_BYTES) -> str:
    """The text of a spec file of at most `limit` bytes, or a SpecError saying why it cannot be
    read. Errors name the file `shown` (how the user wrote it) when given."""
    path = Path(path)
    shown = shown or str(path)
    where = Span(shown, 1, 1, 1, 1)
    try:
        data = files.read_bytes(path, limit)  # a regular file only, opened without blocking
    except files.FileProblem as problem:
        raise _unreadable(problem, path, shown, None, limit) from None
    if b"\0" in data:
        raise SpecError(f"'{shown}' is a binary file, not a text spec", where, code="SK112")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        register_source(shown, data.decode("utf-8", errors="replace"))
        line = data[: error.start].count(b"\n") + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise SpecError(f"'{shown}' is not UTF-8 text (byte 0x{data[error.start]:02x})",
                        Span(shown, line, column, line, column + 1), code="SK112",
                        hint="save the file as UTF-8") from None


def check_spec_file(path: Path, span: Span | None = None, shown: str | None = None,
                    limit: int = MAX_FILE_BYTES) -> None:
    """Refuse, without opening it, anything but a regular file of at most `limit` bytes.

    Only `stat` is called: opening a FIFO blocks until a writer comes, and /dev/zero never ends.
    """
    try:
        files.check_readable(path, limit)
    except files.FileProblem as problem:
        raise _unreadable(problem, path, shown or str(path), span, limit) from None


def _unreadable(problem: files.FileProblem, path: Path, shown: str, span: Span | None,
                limit: int) -> SpecError:
    """The SpecError (SK110-SK120) for a spec file the file policy refused."""
    if problem.kind == "missing":
        return SpecError(f"no such file: '{shown}'", span, code="SK110", hint=_nearby_files(path))
    if problem.kind == "directory":
        return SpecError(f"'{shown}' is a directory, not a spec file", span, code="SK111",
                         hint="name a .sk file inside it")
    if problem.kind == "special":
        return SpecError(f"'{shown}' is {problem.what}, not a spec file", span, code="SK115",
                         hint="name a regular .sk file; skdsl reads no devices, pipes or sockets")
    if problem.kind == "too_large":
        return _too_large(shown, problem.size, limit, span)
    if problem.kind == "name_too_long":
        return file_error(OSError(errno.ENAMETOOLONG, problem.reason), shown, span)
    return SpecError(f"cannot read '{shown}': {problem}", span, code="SK114")


def file_error(error: OSError, shown: str, span: Span | None) -> SpecError:
    """The SpecError for an OSError met while looking a file up."""
    if error.errno == errno.ENAMETOOLONG:
        shown = shown if len(shown) <= 60 else shown[:60] + "…"
        return SpecError(f"the path '{shown}' is too long for this system", span,
                         code="SK120", hint="shorten the path or the names of its folders")
    return SpecError(f"cannot read '{shown}': {error.strerror}", span, code="SK114")


def _too_large(shown: str, size: int, limit: int, span: Span | None) -> SpecError:
    return SpecError(f"'{shown}' is too large for a spec: {size:,} bytes (at most "
                     f"{limit:,})", span, code="SK116",
                     hint="a spec is a short text; split a generated one into blocks and repeats")


def _nearby_files(path: Path) -> str | None:
    folder = path.parent if str(path.parent) else Path(".")
    try:
        names = [p.name for p in folder.iterdir() if p.suffix == ".sk"]
    except OSError:
        return None
    return did_you_mean(path.name, names)


def parse_text(text: str, file: str = "<spec>") -> A.SourceFile:
    """Parse .sk text into its syntax tree; raises SpecError on any syntax mistake."""
    if not text.endswith("\n"):
        text += "\n"
    register_source(file, text)
    return _parse_registered(text, file)


def parse_flag(text: str, file: str, rule: str):
    """The syntax of a command-line value in the language: a domain (`rule` "space_flag",
    `--space G={16, 32}`) or a condition ("budget_flag", `--where "params <= 25M"`), located
    in `file` (the flag, as the message names it); SpecError on a mistake."""
    register_source(file, text)
    _check_size(text, file)
    try:
        return _run(text, file, rule)
    except UnexpectedInput as error:
        raise _syntax_error(error, text, file) from None


def clear_parse_cache() -> None:
    """Forget the cached trees, so the next parse of every text is a cold one (benchmarks)."""
    _parse_registered.cache_clear()


@functools.lru_cache(maxsize=64)
def _parse_registered(text: str, file: str) -> A.SourceFile:
    """The tree of a text parse_text has registered. Cached: expansion only reads the tree (a
    `for`'s unrolled copies are its one memo, the same for every reader), so a file read again,
    a std/ import or each variant of a sweep, is parsed once."""
    _check_size(text, file)
    try:
        return _run(text, file)
    except UnexpectedInput as error:
        raise _syntax_error(error, text, file) from None


def _check_size(text: str, file: str) -> None:
    """The file and line limits, checked before Lark sees the text (O(n), no parsing)."""
    if len(text) > MAX_FILE_BYTES:
        raise _too_large(file, len(text), MAX_FILE_BYTES, Span(file, 1, 1, 1, 2))
    if len(text) <= MAX_LINE_LENGTH:  # then no line can be longer
        return
    for number, line in enumerate(text.split("\n"), 1):
        if len(line) > MAX_LINE_LENGTH:
            raise SpecError(f"line {number} is {len(line):,} characters long (at most "
                            f"{MAX_LINE_LENGTH:,})", Span(file, number, MAX_LINE_LENGTH + 1,
                                                          number, len(line) + 1),
                            code="SK118", hint="break it after a comma inside ( ) or [ ], or "
                            "with a \\ at the end of the line")


# -- errors ---------------------------------------------------------------------------------


def _syntax_error(error: UnexpectedInput, text: str, file: str) -> SpecError:
    expected = _phrases(_expected_terminals(error))
    if isinstance(error, UnexpectedCharacters):
        line, column = error.line, error.column
        lines = text.split("\n")
        char = lines[line - 1][column - 1:column] if line <= len(lines) else ""
        shown = f"'{char}'" if char.isprintable() and char else repr(char) if char else "?"
        span = Span(file, line, column, line, column + 1)
        return SpecError(f"unexpected character {shown}", span, code="SK102", expected=expected,
                         hint=_hint(error, text, file))
    token = error.token if isinstance(error, UnexpectedToken) else None
    at_end = token is not None and token.type == "_DEDENT" and not text[token.end_pos:].strip()
    if isinstance(error, UnexpectedEOF) or token is None or token.type == "$END" or at_end:
        lines = text.rstrip("\n").split("\n")
        span = Span(file, len(lines), len(lines[-1]) + 1, len(lines), len(lines[-1]) + 2)
        return SpecError("unexpected end of file", span, code="SK103", expected=expected,
                         hint=_hint(error, text, file))
    span = _token_span(token, file)
    unknown = _unknown_layer(error, text, file)
    if unknown:
        return unknown
    what = {"_NL": "end of the line", "_INDENT": "indentation", "_DEDENT": "end of the block"}
    described = what.get(token.type) or f"'{token.value}'"
    return SpecError(f"unexpected {described}", span, code="SK101", expected=expected,
                     hint=_hint(error, text, file))


def _token_span(token: Token, file: str) -> Span:
    if token.type in ("_INDENT", "_DEDENT", "_NL"):
        # These tokens sit at the end of the previous line; point at the next line's text.
        line = token.end_line if token.type != "_NL" else token.line
        if token.type == "_NL":
            return Span(file, token.line, token.column, token.line, token.column + 1)
        width = len(token.value)
        return Span(file, line, 1, line, width + 1)
    end = token.end_column if token.end_line == token.line else token.column + len(token.value)
    return Span(file, token.line, token.column, token.line, end)


# After a name that starts a statement the parser takes only a label's '=' or a call's '(':
# a word followed there by anything else (`eca 5`, `eca[k=3]`, `eca` alone) is a layer it lacks.
_AFTER_STATEMENT_NAME = frozenset({"EQUAL", "LPAR"})


def _unknown_layer(error: UnexpectedToken, text: str, file: str) -> SpecError | None:
    """`cnv 3x3, 64`: a statement starts with a word that is neither a layer nor a call."""
    expected = _expected_terminals(error)
    if "LPAR" not in expected or not expected <= _AFTER_STATEMENT_NAME:
        return None  # a name in a value or a condition (`if s 1:`), not a statement's first word
    found = _name_before(error, text, file)
    if found is None:
        return None
    word, span = found
    if word == "else":
        return SpecError("`else:` without an `if` just above it", span, code="SK212",
                         hint="write `if CONDITION:` and its body, then `else:` at the same "
                         "indentation as the `if`")
    layers = ", ".join(shown_keyword(keyword) for keyword in ops.LAYER_KEYWORDS)
    hint = (did_you_mean(word, ops.LAYER_KEYWORDS + STATEMENT_KEYWORDS) or
            f"the layers are {layers}; a block is called with parentheses: {word}(...)")
    return SpecError(f"unknown layer '{word}'", span, code="SK201", hint=hint,
                     expected=["a layer such as conv or SK", "a block call such as sk_unit(128, 256)"])


def _name_before(error: UnexpectedToken, text: str, file: str) -> tuple[str, Span] | None:
    """The name just before the unexpected token, and where it is written."""
    history = getattr(error, "token_history", None) or []
    if history:
        previous = history[-1]
        return (str(previous), _token_span(previous, file)) if previous.type == "NAME" else None
    if error.token.type != "_NL":
        return None
    # Lark keeps no history when the unexpected token ends the line (`eca` alone on it): the
    # name is the last word before the line's end (or its comment).
    line = text.split("\n")[error.token.line - 1][:error.token.column - 1]
    word = re.search(r"[A-Za-z_][A-Za-z0-9_]*(?=[\t \f]*$)", line)
    if word is None:
        return None
    number = error.token.line
    return word.group(), Span(file, number, word.start() + 1, number, word.end() + 1)


def shown_keyword(word: str) -> str:
    """A layer keyword as messages write it: SK, SUM and SE, whose options the paper brackets,
    in capitals (`SK[M=2]`), the others as they are written (`conv`)."""
    return word.upper() if ops.KEYWORDS[word].brackets else word


def _expected_terminals(error: UnexpectedInput) -> set[str]:
    """What the parser could have taken here (the lexer's own list is wider and noisier)."""
    parser = getattr(error, "interactive_parser", None)
    if parser is not None:
        return set(parser.accepts())
    return set(getattr(error, "expected", None) or getattr(error, "allowed", None) or ())


# The order in which expected tokens are listed: closers first, the end of the line last.
_PHRASE_ORDER = ("COMMA", "RSQB", "RPAR", "COLON", "EQUAL", "LPAR")


def _phrases(terminals) -> list[str]:
    parser = _lark()
    names = set(terminals)
    if names - {"ADD_OP", "MUL_OP"}:
        names -= {"ADD_OP", "MUL_OP"}  # an expression could go on anywhere: not worth listing
    ordered = sorted(names, key=lambda n: (n == "_NL" or n == "$END",
                                           _PHRASE_ORDER.index(n) if n in _PHRASE_ORDER else 99, n))
    phrases = []
    for name in ordered:
        if name in TERMINAL_PHRASES:
            phrases.append(TERMINAL_PHRASES[name])
            continue
        try:
            pattern = parser.get_terminal(name).pattern
        except KeyError:
            phrases.append(name.lower())
            continue
        phrases.append(f"'{pattern.value}'" if pattern.type == "str" else name.lower())
    return list(dict.fromkeys(phrases))


# Typical mistakes, each a tiny bad snippet: Lark matches the parser state of an error to them.
MISTAKES = {
    "separate options with commas: SK[M=2, G=32, r=16]": [
        "network n:\n    stage s: SK[M=2 G=32], 64\n",
        "network n:\n    stage s: SE[r=16 x=1]\n",
        "network n:\n    stage s: SK[M=2, G=w r=1], 64\n",
    ],
    "separate a layer's arguments with commas: conv 3x3, 64, stride 2": [
        "network n:\n    stage s: conv 3x3 64\n",
        "network n:\n    stage s: conv 3x3, 64 stride 2\n",
        "network n:\n    stage s: conv 3x3, w stride 2\n",
        "network n:\n    stage s: conv 3x3, 64, stride 2 G 4\n",
        "network n:\n    stage s: conv 3x3, 64, G=4 stride 2\n",
    ],
    "a stage name is followed by ':' and its layers: stage conv2: sk_unit(128, 256) x3": [
        "network n:\n    stage s sk_unit(1)\n",
        "network n:\n    stage s x3 sk_unit(1)\n",
    ],
    "a block template lists its parameters in parentheses: block unit(width, stride=1):": [
        "block b:\n    conv 1x1, 8\n",
        "block b width:\n    conv 1x1, 8\n",
    ],
    "close the argument list with ')'": [
        "network n:\n    stage s: unit(1, 2\n",
    ],
    "a repeat count is written right after the call, as x3: sk_unit(128, 256) x3": [
        "network n:\n    stage s: unit(1) 3\n",
        "network n:\n    stage s: unit(1) * 3\n",
    ],
    "a condition compares values: if stride == 1 and c_in == c:": [
        "block b(s):\n    if s 1:\n        gap\n",
        "block b(s):\n    residual if s 1:\n        gap\n",
    ],
    "each row of a `for` table is in parentheses: for c, n in (16, 1), (24, 2):": [
        "block b(s):\n    for c in 1, 2:\n        gap\n",
        "block b(s):\n    for c in [1, 2]:\n        gap\n",
        "block b(s):\n    for c, n in (1, 2) (3, 4):\n        gap\n",
    ],
    "a network is written `network NAME:` with its input, classes and stages indented below": [
        "network:\n    input 3x32x32\n",
        "network n\n    input 3x32x32\n",
    ],
}


def _hint(error: UnexpectedInput, text: str, file: str) -> str | None:
    """The catalogue hint whose snippet fails in the same parser state, on the same token kind."""
    wanted = _state_key(error)
    for hint, snippets in MISTAKES.items():
        for snippet in snippets:
            try:
                _run(snippet, "<hint>")
            except UnexpectedInput as example:
                if _state_key(example) == wanted:
                    return hint
            except SpecError:
                continue
    return None


def _state_key(error: UnexpectedInput) -> tuple:
    state = getattr(error, "state", None)
    position = getattr(state, "position", state)
    token = getattr(error, "token", None)
    return (position, getattr(token, "type", None), frozenset(_expected_terminals(error)))


# -- tree -> syntax ---------------------------------------------------------------------------


class _ToSyntax(Transformer):
    """Syntax nodes from the rules Lark reduces, each located where its text starts and ends.

    A rule ends at the token emitted before the lookahead that reduced it (the indenter logs
    them); it starts at its first child, or at the keyword or bracket it opens with (`opener`),
    the nearest such token before that child. These are the spans Lark's propagate_positions
    gives (tests/lang/test_parser.py compares them), at a fraction of its cost.
    """

    def __init__(self, indenter: _Indenter):
        super().__init__()
        self._indenter = indenter
        self.begin("<spec>")

    def begin(self, file: str) -> None:
        self.file = file
        self._emitted: list[Token | None] = []
        self._indenter.emitted = self._emitted
        self._starts: dict[int, tuple[int, int]] = {}  # id(node) -> where its brackets open

    def _tok(self, token: Token) -> Span:
        return _token_span(token, self.file)

    def _span(self, children, opener: str | None = None) -> Span:
        line, column = self._start(children, opener)
        last = self._emitted[-2]
        return Span(self.file, line, column, last.end_line, last.end_column)

    def _first_line(self, children, opener: str) -> Span:
        """A header line's span, without the newline the rule ends with."""
        line, column = self._start(children, opener)
        return Span(self.file, line, column, line, 10_000)

    def _start(self, children, opener: str | None) -> tuple[int, int]:
        first = next(c for c in children if c is not None and c != [])  # [] : `SK[]`
        start = self._start_of(first)
        return start if opener is None else self._opener_before(start, opener)

    def _start_of(self, child) -> tuple[int, int]:
        start = self._starts.get(id(child))
        if start is not None:
            return start
        if isinstance(child, Token):
            return child.line, child.column
        if isinstance(child, list):
            return self._start_of(child[0])
        span = child[1] if isinstance(child, tuple) else child.span  # a row is (values, span)
        return span.line, span.column

    def _opener_before(self, start: tuple[int, int], opener: str) -> tuple[int, int]:
        emitted = self._emitted
        index = bisect_left(emitted, start, hi=len(emitted) - 1, key=_position) - 1
        while index >= 0 and emitted[index] != opener:
            index -= 1
        token = emitted[index]
        return token.line, token.column

    def paren(self, children):
        inner = children[0]
        self._starts[id(inner)] = self._start(children, "(")  # its parent starts at the '('
        return inner

    # expressions
    def int(self, children):
        return A.Int(_integer(children[0], self._tok(children[0])), self._tok(children[0]))

    def float(self, children):
        return A.Float(_finite(float(children[0]), children[0], self._tok(children[0])),
                       self._tok(children[0]))

    def quantity(self, children):
        token = children[0]
        value = _finite(float(token[:-1]) * _SI[token[-1]], token, self._tok(token))
        return A.Quantity(value, str(token), self._tok(token))

    def string(self, children):
        return A.String(children[0][1:-1], self._tok(children[0]))

    def name(self, children):
        return A.Name(str(children[0]), self._tok(children[0]))

    def binary(self, children):
        left, op, right = children
        terms = getattr(left, "terms", 1) + getattr(right, "terms", 1)
        span = self._span(children)
        if terms > MAX_TERMS:
            raise SpecError(f"this expression has more than {MAX_TERMS:,} terms", span,
                            code="SK216", hint="compute the value outside and write the number")
        return A.Binary(str(op), left, right, span, terms)

    def function(self, children):
        name, *args = children
        args = tuple(a for a in args if a is not None)  # `f()` has one empty placeholder
        return A.Call(str(name), args, self._span(children), self._tok(name))

    def compare(self, children):
        left, op, right = children
        return A.Compare(str(op), left, right, self._span(children))

    def both(self, children):
        return A.Logic("and", children[0], children[1], self._span(children))

    def either(self, children):
        return A.Logic("or", children[0], children[1], self._span(children))

    def negated(self, children):
        return A.Logic("not", children[0], None, self._span(children, "not"))

    def _dims(self, token: Token) -> A.Dims:
        span = self._tok(token)
        values = tuple(_integer(v, span) for v in token.replace("×", "x").split("x"))
        return A.Dims(values, span)

    def _option_value(self, value):
        return self._dims(value) if isinstance(value, Token) and value.type == "DIMS" else value

    # arguments
    def positional(self, children):
        return A.Arg(None, self._option_value(children[0]), self._span(children))

    def keyword(self, children):
        name, value = children
        return A.Arg(str(name), self._option_value(value), self._span(children), self._tok(name))

    def args(self, children):
        return [child for child in children if child is not None]  # `SK[]` has an empty list

    options = actuals = args

    def label(self, children):
        return A.Label(str(children[0]), self._tok(children[0]))

    # statements
    def layer(self, children):
        label, keyword, options, args, *lines = children
        return A.LayerStmt(label, str(keyword).lower(), str(keyword), options, args or [],
                           list(lines) if lines else None, self._span(children),
                           self._tok(keyword))

    def kernel_line(self, children):
        return children[0]

    def call(self, children):
        label, name, args, repeat = children
        repeat_span = self._tok(repeat) if repeat else None
        return A.CallStmt(label, str(name), self._tok(name), args or [],
                          _repeat(repeat, repeat_span), repeat_span, self._span(children))

    def residual(self, children):
        args, condition, *body = children
        return A.ResidualStmt(args or [], body, self._span(children, "residual"), condition)

    def if_stmt(self, children):
        condition, *body, orelse = children
        return A.IfStmt(condition, body, orelse or [], self._span(children, "if"))

    def else_body(self, children):
        return list(children)

    def row(self, children):
        return (tuple(c for c in children if c is not None), self._span(children, "("))

    def for_stmt(self, children):
        names = [A.Label(str(c), self._tok(c)) for c in children if isinstance(c, Token)]
        rows = [c for c in children if isinstance(c, tuple)]
        body = [c for c in children[len(names):] if c is not None and not isinstance(c, tuple)]
        return A.ForStmt(names, [values for values, _ in rows], [span for _, span in rows], body,
                         self._span(children, "for"))

    stage_table = for_stmt  # `for` around stages: expand.py unrolls it as around statements

    def shortcut(self, children):
        return A.ShortcutStmt(list(children), self._span(children, "shortcut"))

    def branch(self, children):
        name, source, *rest = children
        source_label = A.Label(str(source), self._tok(source)) if source else None
        shares = None
        if len(rest) == 1 and isinstance(rest[0], Token) and rest[0].type == "NAME":
            shares, rest = A.Label(str(rest[0]), self._tok(rest[0])), []
        return A.BranchStmt(A.Label(str(name), self._tok(name)), source_label, rest,
                            self._span(children, "branch"), shares)

    def split(self, children):
        label, args, *outputs = children
        return A.SplitStmt(label, args or [], [A.Label(str(o), self._tok(o)) for o in outputs],
                           self._span(children) if label else self._span(children, "split"))

    # definitions
    def stage(self, children):
        name, repeat, *body = children
        repeat_span = self._tok(repeat) if repeat else None
        return A.StageDecl(A.Label(str(name), self._tok(name)), _repeat(repeat, repeat_span),
                           repeat_span, body, self._span(children, "stage"))

    def network(self, children):
        name, *items = children
        decl = A.NetworkDecl(A.Label(str(name), self._tok(name)), None, None, None, [],
                             self._span(children, "network"))
        for item in items:
            if isinstance(item, (A.StageDecl, A.ForStmt)):
                decl.stages.append(item)
                continue
            header, value, span = item
            if getattr(decl, header) is not None:
                raise SpecError(f"`{header}` is given twice", span, code="SK205",
                                hint=f"a network has one `{header}` line: keep the one you mean")
            setattr(decl, header, value)
        return decl

    def input_decl(self, children):
        return ("input", self._dims(children[0]), self._first_line(children, "input"))

    def classes_decl(self, children):
        return ("classes", children[0], self._first_line(children, "classes"))

    def paper_decl(self, children):
        return ("paper", children[0], self._first_line(children, "paper"))

    def formal(self, children):
        name, default, domain = children
        return A.Formal(str(name), default, self._span(children), domain)

    def formals(self, children):
        return list(children)

    def block_def(self, children):
        name, formals, *body = children
        return A.BlockDef(str(name), formals or [], body, self._span(children, "block"), self._tok(name),
                          self.file)

    def param(self, children):
        name, value, domain = children
        return A.ParamDecl(str(name), value, self._span(children, "param"), self._tok(name),
                           domain)

    def choice(self, children):
        values = tuple(child for child in children if child is not None)  # a trailing comma
        return A.Domain("choice", values, False, self._span(children, "{"))

    def span(self, children):
        log, low, high, step = children
        values = (low, high) if step is None else (low, high, step)
        return A.Domain("range", values, log is not None, self._span(children))

    def where(self, children):
        return A.WhereDecl(children[0], self._first_line(children, "where"))

    def divides(self, children):
        left, right = children
        return A.Compare("divides", left, right, self._span(children))

    def space_flag(self, children):
        return children[0]

    budget_flag = space_flag

    def use(self, children):
        return A.UseDecl(children[0][1:-1], self._span(children, "use"))

    def start(self, children):
        source = A.SourceFile(self.file)
        buckets = {A.UseDecl: source.uses, A.ParamDecl: source.params, A.BlockDef: source.blocks,
                   A.NetworkDecl: source.networks, A.WhereDecl: source.wheres}
        for child in children:
            buckets[type(child)].append(child)
        return source


def _repeat(token: Token | None, span: Span | None) -> int | A.Name | None:
    if not token:
        return None
    written = token[1:].strip()
    if not written[0].isdigit():  # `x depth`: expand.py reads the name's value
        return A.Name(written, Span(span.file, span.line, span.end_column - len(written),
                                    span.line, span.end_column))
    return check_repeat(_integer(written, span), span)


def check_repeat(count: int, span: Span) -> int:
    """A repeat count within MAX_REPEAT (literal here, or a name's value in expand.py)."""
    if count > MAX_REPEAT:
        raise SpecError(f"repeat count {count:,} is over the limit of {MAX_REPEAT:,}", span,
                        code="SK214", hint="a network of that many blocks would not fit in "
                        "memory; use fewer, wider blocks")
    return count


def _integer(digits: str, span: Span) -> int:
    """An integer literal, refused beyond MAX_INTEGER before Python converts a huge one."""
    significant = digits.lstrip("0")
    if len(significant) <= len(str(MAX_INTEGER)) and int(significant or "0") <= MAX_INTEGER:
        return int(significant or "0")
    shown = digits if len(digits) <= 30 else f"{digits[:20]}… ({len(digits):,} digits)"
    raise SpecError(f"the integer {shown} is too large (at most {MAX_INTEGER:,})", span,
                    code="SK213", hint="skdsl's integers are sizes and counts; check the number")


def _finite(value: float, text: str, span: Span) -> float:
    if math.isfinite(value):
        return value
    shown = text if len(text) <= 30 else f"{text[:20]}…"
    raise SpecError(f"the number {shown} is too large to represent", span, code="SK213",
                    hint="numbers are at most about 1.8e308; check the exponent")


def _position(token: Token) -> tuple[int, int]:
    return token.line, token.column

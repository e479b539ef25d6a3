"""Specs loaded for every caller, and the errors that name a caller's settings.

    load("specs/sknet50.sk", {"M": 3})        # a .sk file or zoo name: parsed and expanded
    load("sknet50.json")                      # a spec written by `skdsl spec --json`: validated
    load("sknet50", num_classes=10)           # the `classes` header replaced (fine-tuning)
    parse(text, "<string>", {"M": 3})         # .sk text: parsed and expanded
    lint("my_net.sk")                         # its warnings (SK7xx): [] when it reads clean

`use` reads only files under the spec's folder and std/ unless `allow_imports_outside`.

Library code (this module, the runner, export, weights) speaks of settings: config fields and
parameters such as `batch_size` or `overrides`, never of flags. Its errors write them as
`{batch_size}` (skdsl/base/errors.py): shown as `batch_size` to a Python caller, and by the command
line as its flag (`--batch-size`). `SettingError` (base.errors) is one such error.
No torch here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..base.errors import SettingError, Span, SpecError, declare_settings, register_source

declare_settings("overrides", "input_shape", "allow_imports_outside", "num_classes")


# -- loading ------------------------------------------------------------------------------------


def load(path: str | Path, overrides: dict | None = None, num_classes: int | None = None,
         allow_imports_outside: bool = False):
    """A .sk file or zoo name (parsed, expanded) or a .json spec (validated): a `spec.Network`.

    `overrides` set `param`s and `num_classes` replaces the `classes` header; neither can
    change a JSON spec, which is already expanded (SK503).
    """
    if str(path).lower().endswith(".json"):
        changes = [name for name, given in (("overrides", bool(overrides)),
                                            ("num_classes", num_classes is not None)) if given]
        if changes:
            raise SettingError(f"{{{changes[0]}}} cannot change '{path}': a JSON spec is "
                               f"already expanded", code="SK503",
                               hint=f"use {{{changes[0]}}} with the .sk spec it came from")
        return load_json_spec(path)
    from .zoo import load as load_sk

    return load_sk(path, overrides or None, num_classes, allow_imports_outside)


def parse(text: str, file: str = "<string>", overrides: dict | None = None,
          allow_imports_outside: bool = False):
    """.sk text parsed and expanded into a `spec.Network`; `use` paths resolve against the
    current directory."""
    from .expand import expand
    from .parser import parse_text
    from .space import check_space

    source = parse_text(text, file)
    check_space(source)
    return expand(source, overrides, allow_imports_outside)


def lint(path: str | Path, allow_imports_outside: bool = False) -> list:
    """The warnings (SK7xx, `SpecWarning`) of a .sk file or zoo name and of what it imports; a
    JSON spec has none (it is expanded: its text says nothing of how it was written)."""
    if str(path).lower().endswith(".json"):
        return []
    from .lint import lint_file

    return lint_file(path, allow_imports_outside)


def load_json_spec(path: str | Path):
    """A spec written by `skdsl spec --json`; a mistake is an SK401 located at its JSON value."""
    from pydantic import ValidationError

    from .parser import read_source
    from ..core.spec import Network

    file = str(path)
    text = read_source(path)
    if max(map(len, text.splitlines()), default=0) <= 400:
        register_source(file, text)  # excerpts of minified JSON would print the whole file
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SpecError(f"not valid JSON: {error.msg}",
                        Span(file, error.lineno, error.colno, error.lineno, error.colno + 1),
                        code="SK401") from None
    except RecursionError:
        raise SpecError("the JSON is nested too deeply to be a spec", Span(file, 1, 1, 1, 2),
                        code="SK401") from None
    except ValueError:  # Python reads no integer of over 4,300 digits
        raise _huge_number(file, text) from None
    try:
        return Network.model_validate_json(text)
    except ValidationError as error:
        raise _json_spec_error(file, text, data, error) from None


def _huge_number(file: str, text: str) -> SpecError:
    found = re.search(r"\d{4301,}", text)
    start = found.start() if found else 0
    line = text.count("\n", 0, start) + 1
    column = start - (text.rfind("\n", 0, start) + 1) + 1
    return SpecError("a whole number of more than 4,300 digits, more than any spec holds",
                     Span(file, line, column, line, column + 1), code="SK401")


def _json_spec_error(file: str, text: str, data, error) -> SpecError:
    """One SpecError for pydantic's errors: the first located at its JSON path, the rest as notes."""
    problems: dict[str, list[str]] = {}  # JSON path -> messages (a union gives one per member)
    where: dict[str, tuple] = {}
    for item in error.errors(include_url=False):
        path, keys = _json_path(data, item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        problems.setdefault(path, [])
        if message not in problems[path]:
            problems[path].append(message)
        where.setdefault(path, keys)
    described = [f"{path}: {' or '.join(messages)}" for path, messages in problems.items()]
    first = next(iter(problems))
    span = _json_span(file, text, where[first])
    count = len(described)
    return SpecError(f"invalid spec: {described[0]}", span, code="SK401",
                     notes=[f"also: {d}" for d in described[1:6]] +
                     ([f"and {count - 6} more"] if count > 6 else []),
                     hint="`skdsl spec --schema` prints what a JSON spec may contain")


def _json_path(data, loc) -> tuple[str, tuple]:
    """pydantic's error location as a JSON path ('stages[1].body[0].kernel'), and the keys of
    the deepest value present in the file. Union tags in the location are skipped."""
    text, keys, node, present = "", (), data, True
    for key in loc:
        if present and isinstance(node, dict) and isinstance(key, str) and key in node:
            node, keys = node[key], keys + (key,)
        elif present and isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            node, keys = node[key], keys + (key,)
        elif present and isinstance(node, dict) and key == node.get("kind"):
            continue  # the discriminator of a layer: `stages.0.body.0.conv.kernel`
        elif present and not isinstance(node, (dict, list)):
            break  # the members of a union tried on a plain value: `groups.int`
        else:
            present = False  # a missing field, or inside one
        text += f"[{key}]" if isinstance(key, int) else f".{key}"
    return text.lstrip(".") or "(the whole spec)", keys


def _json_span(file: str, text: str, keys: tuple) -> Span | None:
    """Where the value at `keys` starts in the JSON text, found by walking the text."""
    try:
        start, end = _JsonLocator(text).find(keys)
    except (ValueError, IndexError, RecursionError):
        return None
    line = text.count("\n", 0, start) + 1
    column = start - (text.rfind("\n", 0, start) + 1) + 1
    end_line = text.count("\n", 0, end) + 1
    end_column = end - (text.rfind("\n", 0, end) + 1) + 1
    return Span(file, line, column, end_line, end_column)


class _JsonLocator:
    """The start and end offsets of one value in well-formed JSON text."""

    _SPACE = re.compile(r"[ \t\n\r]*")
    _SCALAR = re.compile(r'-?[0-9.eE+-]+|true|false|null')

    def __init__(self, text: str):
        self.text = text

    def find(self, keys: tuple) -> tuple[int, int]:
        return self._value(self._skip(0), keys)

    def _skip(self, index: int) -> int:
        return self._SPACE.match(self.text, index).end()

    def _value(self, index: int, keys: tuple) -> tuple[int, int]:
        """(start, end) of the value at `keys` below the value starting at `index`."""
        if not keys:
            return index, self._end(index)
        char = self.text[index]
        if char == "{":
            index = self._skip(index + 1)
            while self.text[index] != "}":
                key, index = json.decoder.scanstring(self.text, index + 1)
                index = self._skip(self._skip(index) + 1)  # past ':'
                if key == keys[0]:
                    return self._value(index, keys[1:])
                index = self._skip(self._end(index))
                if self.text[index] == ",":
                    index = self._skip(index + 1)
        elif char == "[":
            index, position = self._skip(index + 1), 0
            while self.text[index] != "]":
                if position == keys[0]:
                    return self._value(index, keys[1:])
                index = self._skip(self._end(index))
                if self.text[index] == ",":
                    index = self._skip(index + 1)
                position += 1
        raise ValueError(f"no value at {keys}")

    def _end(self, index: int) -> int:
        """The offset just past the value starting at `index`."""
        char = self.text[index]
        if char == '"':
            return json.decoder.scanstring(self.text, index + 1)[1]
        if char in "[{":
            closing = "]" if char == "[" else "}"
            index = self._skip(index + 1)
            while self.text[index] != closing:
                if char == "{":
                    index = json.decoder.scanstring(self.text, index + 1)[1]
                    index = self._skip(self._skip(index) + 1)
                index = self._skip(self._end(index))
                if self.text[index] == ",":
                    index = self._skip(index + 1)
            return index + 1
        match = self._SCALAR.match(self.text, index)
        if not match:
            raise ValueError(f"no JSON value at offset {index}")
        return match.end()


__all__ = ["SettingError", "load", "lint", "load_json_spec"]

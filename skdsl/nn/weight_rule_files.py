"""Rule files: a family of weights described in TOML, for `--rules FILE` and `load_rules(path)`.

    [family]
    name = "resnest"                      # --family resnest
    title = "ResNeSt"
    models = ["resnest14d", "resnest26d"]
    block = "resnest_unit"
    markers = ['\\.sk\\.branch\\d+\\.conv\\.weight$']
    extends = "skresnet-d"                # its rules follow this file's

    [words]
    bn_tensor = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]

    [[rule]]
    from = "layer{s}.{b}.conv2.conv.weight"
    to = "conv{s+1}.block{b+1}.sk.branch{m+1}.conv.weight"
    split = { field = "m", axis = 0 }

The file becomes a `Family` of weight_rules.py, the structure of the built-in tables; `dump_rules`
writes any family back as such a file. A mistake is a WeightsError (SK528) naming the file, the
key and what was expected. docs/weights.md documents the format. No torch here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

from ..base import files
from .weight_rules import FAMILIES, WORDS, Family, Rule, Split, WeightsError

_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
_NAME = re.compile(r"[A-Za-z0-9][\w.-]*")
_HINT = "see the rule file format in docs/weights.md"


class _Mistake(Exception):
    """A value that is not what its key expects: what was expected."""


def _text(value) -> str:
    if not isinstance(value, str) or not value:
        raise _Mistake("a non-empty string")
    return value


def _name(value) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise _Mistake("a name of letters, digits, '_', '-' and '.'")
    return value


def _texts(value) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(
            isinstance(item, str) and item for item in value):
        raise _Mistake("a non-empty list of non-empty strings")
    return tuple(value)


def _regexes(value) -> tuple[str, ...]:
    for index, pattern in enumerate(_texts(value)):
        try:
            re.compile(pattern)
        except re.error as error:
            raise _Mistake(f"regular expressions; item {index + 1} is not one ({error})") from None
    return tuple(value)


def _count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _Mistake("a whole number from 1")
    return value


def _flag(value) -> bool:
    if not isinstance(value, bool):
        raise _Mistake("true or false")
    return value


# [family]'s keys: TOML key -> (Family field, reads the value, required). `extends` is read apart.
_FAMILY_KEYS: dict[str, tuple[str, Callable[[Any], Any], bool]] = {
    "name": ("name", _name, True), "title": ("title", _text, True),
    "models": ("models", _texts, True), "block": ("block", _name, True),
    "markers": ("markers", _regexes, True), "origin": ("origin", _name, False),
    "block_file": ("library", _text, False), "also": ("also", _text, False),
    "unit_layers": ("unit_layers", _count, False), "prefix": ("prefix", _name, False),
    "suffix": ("suffix", _text, False), "grouped": ("grouped", _text, False),
    "split_input": ("split_input", _flag, False),
}
_TOP_KEYS = ("family", "words", "rule")


def load_rules(path: str | Path) -> Family:
    """The family a rule file describes (registered nowhere: pass it to a conversion, or to
    register_family); a WeightsError (SK528) naming the file, the key and what was expected."""
    try:
        values, text = files.read_toml(path)
    except files.FileProblem as problem:
        words = "no rule file" if problem.kind == "missing" else "cannot read rule file"
        detail = "" if problem.kind == "missing" else f": {problem}"
        raise WeightsError(f"{words} '{path}'{detail}", code="SK528", hint=_HINT) from None
    where = _Where(path, text)
    where.only(values, _TOP_KEYS, "the file")
    if not isinstance(values.get("family"), dict):
        raise where.error("[family]", "a table [family] with the family's name, title, "
                                      "models, block and markers")
    fields = _family_fields(values["family"], where)
    words = _words(values.get("words", {}), where)
    own = _rules(values.get("rule", []), words, where)
    base = _base(values["family"], fields.get("origin", "timm"), where)
    if not own and base is None:
        raise where.error("[[rule]]", "at least one [[rule]] table (or [family] extends)")
    return Family(**fields, rules=own + (base.rules if base else ()))


class _Where:
    """Where in a rule file a mistake is: its path, and the lines of its [[rule]] tables."""

    def __init__(self, path, text: str):
        self.path = path
        self.rule_lines = [number for number, line in enumerate(text.splitlines(), 1)
                           if re.match(r"\s*\[\[\s*rule\s*\]\]", line)]

    def rule(self, index: int) -> str:
        line = (f" (line {self.rule_lines[index]})" if index < len(self.rule_lines) else "")
        return f"[[rule]] {index + 1}{line}"

    def error(self, key: str, expected: str, found=None) -> WeightsError:
        got = "" if found is None else f", not {_shown(found)}"
        return WeightsError(f"rule file '{self.path}', {key}: expected {expected}{got}",
                            code="SK528", hint=_HINT)

    def only(self, table: dict, keys, what: str) -> None:
        """A WeightsError for the first key of `table` that is not one of `keys`."""
        for key in table:
            if key not in keys:
                raise WeightsError(f"rule file '{self.path}', {what}: '{key}' is not a key of "
                                   f"it (there are {', '.join(keys)})", code="SK528",
                                   hint=_HINT)


def _shown(value) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:39] + "…"


def _family_fields(table: dict, where: _Where) -> dict:
    where.only(table, (*_FAMILY_KEYS, "extends"), "[family]")
    fields = {"library": ""}  # no block file unless it names one
    for key, (field, read, required) in _FAMILY_KEYS.items():
        if key not in table:
            if required:
                raise where.error(f"[family] {key}", "a value: the family's " + key)
            continue
        try:
            fields[field] = read(table[key])
        except _Mistake as mistake:
            raise where.error(f"[family] {key}", str(mistake), table[key]) from None
    return fields


def _words(table, where: _Where) -> dict[str, tuple[str, ...]]:
    if not isinstance(table, dict):
        raise where.error("[words]", "a table of word lists", table)
    lists = {}
    for name, value in table.items():
        if not _IDENTIFIER.fullmatch(name) or name in WORDS:
            raise where.error(f"[words] {name}", "a name of your own (a letter or '_', then "
                              f"letters, digits, '_'; not {', '.join(WORDS)})")
        try:
            lists[name] = _texts(value)
        except _Mistake as mistake:
            raise where.error(f"[words] {name}", str(mistake), value) from None
    return lists


def _rules(tables, words: dict, where: _Where) -> tuple[Rule, ...]:
    if not isinstance(tables, list):
        raise where.error("rule", "[[rule]] tables", tables)
    return tuple(_rule(table, words, where, index) for index, table in enumerate(tables))


def _rule(table, words: dict, where: _Where, index: int) -> Rule:
    at = where.rule(index)
    if not isinstance(table, dict):
        raise where.error(at, "a table with from and to", table)
    where.only(table, ("from", "to", "split"), at)
    for key in ("from", "to"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise where.error(f"{at} {key}", "a key pattern (a non-empty string)",
                              table.get(key))
    source, target = table["from"], table["to"]
    split = _split(table["split"], where, at) if "split" in table else None
    try:
        return Rule(source, target, split, tuple(words.items()))
    except ValueError as error:
        raise WeightsError(f"rule file '{where.path}', {at}: {error}", code="SK528",
                           hint=_HINT) from None


def _split(table, where: _Where, at: str) -> Split:
    if not isinstance(table, dict) or "field" not in table:
        raise where.error(f"{at} split", "a table { field = NAME, axis = N }", table)
    where.only(table, ("field", "axis"), f"{at} split")
    if not isinstance(table["field"], str):
        raise where.error(f"{at} split field", "a field name", table["field"])
    return Split(table["field"], table.get("axis", 0))


def _base(table: dict, origin: str, where: _Where) -> Family | None:
    """The family `extends` names: registered, of the same origin."""
    name = table.get("extends")
    if name is None:
        return None
    known = FAMILIES.get(origin, ())
    found = next((family for family in known if family.name == name), None)
    if found is None:
        raise where.error("[family] extends", f"the name of a registered {origin} family ("
                          f"{', '.join(family.name for family in known) or 'none'})", name)
    return found


# -- writing ---------------------------------------------------------------------------------------


def dump_rules(family: Family) -> str:
    """`family` as a rule file's text: `load_rules` of it gives an equal family (a place to
    start a family of one's own from a built-in one)."""
    defaults = Family("", "", "", (), (), (), library="")  # as load_rules reads a key left out
    lines = ["[family]"]
    for key, (field, _, required) in _FAMILY_KEYS.items():
        value = getattr(family, field)
        if required or value != getattr(defaults, field):
            lines.append(f"{key} = {_toml(value)}")
    if words := dict(word for rule in family.rules for word in rule.words):
        lines += ["", "[words]", *(f"{name} = {_toml(value)}"
                                   for name, value in sorted(words.items()))]
    for rule in family.rules:
        lines += ["", "[[rule]]", f"from = {_toml(rule.source)}", f"to = {_toml(rule.target)}"]
        if rule.split:
            lines.append(f"split = {{ field = {_toml(rule.split.field)}, "
                         f"axis = {rule.split.axis} }}")
    return "\n".join(lines) + "\n"


def _toml(value) -> str:
    """A TOML value: a literal string where it can be (regexes keep their backslashes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(map(_toml, value)) + "]"
    if "'" not in value and not any(ord(char) < 32 for char in value):
        return f"'{value}'"
    return json.dumps(value, ensure_ascii=False)


__all__ = ["load_rules", "dump_rules"]

"""Syntax tree -> spec: imports, parameters, integer arithmetic, templates, repeats and names.

The result is a fully expanded `spec.Network`. Every value remembers where it came from (a
literal, a call's argument, a template's default), so an error found later points at the text
that chose the value, not at the template line that used it.
"""

from __future__ import annotations

import functools
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

from pydantic import ValidationError

from .. import ops
from ..base.errors import Span, SpecError, declare_settings, did_you_mean
from ..core import spec as S
from ..core.graph import lower_table
from ..core.space import Choice, FloatRange, IntRange
from . import syntax as A
from .parser import (LAYER_KEYWORDS, check_repeat, check_spec_file, file_error, parse_text,
                     read_source, shown_keyword)
from .syntax import (MAX_BRANCHES, MAX_FILE_BYTES, MAX_INTEGER, MAX_LAYERS, MAX_NESTING,
                     MAX_PATH_LENGTH)

declare_settings("overrides", "allow_imports_outside")

STD_PREFIX = "std/"
STD_DIR = Path(__file__).with_name("std")


class Symbol(str):
    """A bare word that is not a bound name: `act none`, `avgpool global`, or a typo."""


@dataclass(frozen=True)
class Value:
    value: object
    span: Span
    # names in scope, for "did you mean" when a Symbol was a typo
    known: Iterable[str] = field(default=(), compare=False)


Env = dict[str, Value]

# -- loading ---------------------------------------------------------------------------------


@dataclass
class _Template:
    definition: A.BlockDef
    env: Env  # the parameters of the file that defines it


class Program:
    """A root file with everything it imports, ready to expand its network.

    `use` reaches only the root file's folder tree and the standard library, unless
    `allow_imports_outside` is set: a spec from elsewhere must not read the rest of the disk.
    """

    def __init__(self, root: A.SourceFile, overrides: dict[str, str | int | float] | None = None,
                 allow_imports_outside: bool = False, cache: "ExpansionCache | None" = None):
        self.root = root
        self.cache = cache
        self.templates: dict[str, _Template] = {}
        self.overrides = dict(overrides or {})
        found = None if cache is None else cache.places.get((id(root), allow_imports_outside))
        if found is None:
            found = (None if allow_imports_outside else (Path(root.path).parent.resolve(),
                                                         _std_dir()), Path(root.path).resolve())
            if cache is not None:
                cache.places[(id(root), allow_imports_outside)] = found
        self.folders, root_path = found
        self._imported: set[Path] = set()
        self._import(root, stack=[(root_path, root.path)])

    def _import(self, source: A.SourceFile, stack: list[tuple[Path, str]],
                own: bool = True) -> None:
        env = file_params(source, self.overrides if source is self.root else {})
        if not own and source.networks:
            raise SpecError(f"'{source.path}' is imported, so it may not hold a network",
                            source.networks[0].name.span, code="SK209",
                            hint="move the network into a file of its own; a file that is "
                            "imported holds blocks and params only")
        for use in source.uses:
            resolved, shown = self._resolved(use, source.path)
            if resolved in (path for path, _ in stack):  # compared resolved: sub/../a.sk is a.sk
                chain = " -> ".join([*(name for _, name in stack), shown])
                raise SpecError(f"import cycle: {chain}", use.span, code="SK113",
                                hint="move the shared blocks into a file that imports neither")
            if resolved in self._imported:  # a diamond: its blocks are known already
                continue
            if len(stack) >= MAX_NESTING:
                raise SpecError(f"imports nested too deeply: more than {MAX_NESTING} files "
                                "deep", use.span, code="SK119",
                                hint="import the files you need from the spec itself")
            self._import(self._parsed(resolved, shown), [*stack, (resolved, shown)], own=False)
            self._imported.add(resolved)
        for block in source.blocks:
            earlier = self.templates.get(block.name)
            if earlier and not own and earlier.definition.file != source.path:
                raise SpecError(f"block '{block.name}' is defined twice, also at "
                                f"{earlier.definition.span}", block.name_span, code="SK205",
                                hint="rename one of them")
            if own and earlier and earlier.definition.file == source.path:
                raise SpecError(f"block '{block.name}' is already defined at "
                                f"{earlier.definition.span}", block.name_span, code="SK205")
            self.templates[block.name] = _Template(block, env)
        if source is self.root:
            self.env = env

    def _resolved(self, use: A.UseDecl, importer: str) -> tuple[Path, str]:
        if self.cache is None:
            return _resolve(use, importer, self.folders)
        key = (id(use), importer, self.folders)
        found = self.cache.places.get(key)
        if found is None:
            found = self.cache.places[key] = _resolve(use, importer, self.folders)
        return found

    def _parsed(self, path: Path, shown: str) -> A.SourceFile:
        if self.cache is None:
            return parse_file(path, shown)
        tree = self.cache.files.get((path, shown))
        if tree is None:
            tree = self.cache.files[(path, shown)] = parse_file(path, shown)
        return tree


def parse_file(path: str | Path, shown_as: str | None = None) -> A.SourceFile:
    """Parse a file; errors name it `shown_as` (the standard library's files as std/...)."""
    return parse_text(read_source(path, shown_as, MAX_FILE_BYTES), shown_as or str(path))


def _resolve(use: A.UseDecl, importer: str, folders: tuple[Path, ...] | None) -> tuple[Path, str]:
    """The file a `use` names (resolved: no `..`, no links), and the name errors show for it."""
    if len(use.path) > MAX_PATH_LENGTH:
        raise SpecError(f"this path is {len(use.path):,} characters long (at most "
                        f"{MAX_PATH_LENGTH:,})", use.span, code="SK120",
                        hint="shorten the path or the names of its folders")
    if use.path.startswith(STD_PREFIX):
        candidate, shown = STD_DIR / use.path[len(STD_PREFIX):], use.path
    else:
        candidate = Path(importer).parent / use.path
        shown = os.path.normpath(candidate)
    try:
        resolved = candidate.resolve()
        _confine(use, resolved, folders)
        exists = resolved.exists()
    except OSError as error:
        raise file_error(error, use.path, use.span) from None
    if not exists:
        shipped = sorted(f"std/{p.name}" for p in STD_DIR.glob("*.sk"))
        raise SpecError(f"cannot import '{use.path}': no such file", use.span, code="SK110",
                        hint=did_you_mean(use.path, shipped) or
                        f"the standard library has: {', '.join(shipped)}")
    check_spec_file(resolved, use.span, use.path)
    return resolved, shown


@functools.cache
def _std_dir() -> Path:
    """STD_DIR without links, resolved once: every `use` is checked against it."""
    return STD_DIR.resolve()


def _confine(use: A.UseDecl, resolved: Path, folders: tuple[Path, ...] | None) -> None:
    """Refuse a `use` that leaves the spec's folder tree and std/ (the file is not read)."""
    inside_std = resolved.is_relative_to(_std_dir())
    if use.path.startswith(STD_PREFIX) and not inside_std:
        raise SpecError(f"cannot import '{use.path}': it leaves the standard library",
                        use.span, code="SK117", hint="std/ paths name files of skdsl/lang/std, "
                        "without ..")
    if folders is None or any(resolved.is_relative_to(folder) for folder in folders):
        return
    raise SpecError(f"cannot import '{use.path}': it is outside the spec's folder",
                    use.span, code="SK117", hint="a spec imports files from its own folder "
                    "(and those below it) and std/; copy the file there, or allow it with "
                    "{allow_imports_outside}")


def file_params(source: A.SourceFile, overrides: dict) -> Env:
    """The values of a file's params, in order, with `overrides` (NAME -> value) in place of
    their defaults; a later param may use the earlier ones."""
    env: Env = {}
    declared = {p.name for p in source.params}
    for name in overrides:
        if name not in declared:
            raise SpecError(f"{{overrides}} {name}: this spec declares no parameter '{name}'",
                            code="SK210", hint=did_you_mean(name, declared) or
                            (f"its parameters are: {', '.join(sorted(declared))}" if declared
                             else "declare one in the spec: param NAME = VALUE"))
    for param in source.params:
        if param.name in env:
            raise SpecError(f"parameter '{param.name}' is declared twice", param.name_span,
                            code="SK205")
        value = evaluate(param.value, env)
        if param.name in overrides:
            value = _override(param, value, overrides[param.name])
        env[param.name] = value
    return env


def _override(param: A.ParamDecl, default: Value, raw) -> Value:
    wanted = type(default.value)
    try:
        if wanted is int and not isinstance(raw, int):
            raw = int(str(raw), 10)
        elif wanted is float:
            raw = float(raw)
        elif isinstance(default.value, str):
            raw = Symbol(str(raw))
    except ValueError:
        raise SpecError(f"{{overrides}} {param.name}={raw}: expected {_TYPE_WORDS[wanted]} "
                        f"like its default {default.value}", param.span, code="SK210") from None
    return Value(raw, param.span)


_TYPE_WORDS = {int: "an integer", float: "a number", Symbol: "a word", str: "a word"}

# -- expressions -------------------------------------------------------------------------------


class _Unbound(Exception):
    """A formal of a block no network calls was used: its value is unknown (see check_block)."""


_UNBOUND = object()


def fold_binary(expr: A.Expr, leaf, combine):
    """`expr` folded bottom-up: `leaf(operand)` for each operand, `combine(node, left, right)`
    for each binary node. Post-order with a stack of its own: `1+1+…` is a tree as deep as it
    has terms, too deep for recursion."""
    results: list = []
    pending: list[tuple[A.Expr, bool]] = [(expr, False)]
    while pending:
        node, operands_done = pending.pop()
        if not isinstance(node, A.Binary):
            results.append(leaf(node))
        elif operands_done:
            right, left = results.pop(), results.pop()
            results.append(combine(node, left, right))
        else:
            pending += [(node, True), (node.right, False), (node.left, False)]
    return results[0]


def evaluate(expr: A.Expr, env: Env) -> Value:
    if not isinstance(expr, A.Binary):
        return _operand(expr, env)
    return fold_binary(expr, lambda operand: _operand(operand, env), lambda node, left, right:
                       Value(_arithmetic(node, _number(left), _number(right)), node.span))


def _operand(expr: A.Expr, env: Env) -> Value:
    if isinstance(expr, A.Call):
        return _function(expr, env)
    if isinstance(expr, (A.Int, A.Float, A.Quantity)):
        return Value(expr.value, expr.span)
    if isinstance(expr, A.String):
        return Value(expr.value, expr.span)
    if isinstance(expr, A.Dims):
        return Value(expr.values, expr.span)
    if expr.id in env:
        value = env[expr.id]
        if value.value is _UNBOUND:
            raise _Unbound(expr.id)
        if isinstance(value.value, InputChannels):
            return Value(value.value.count(expr.span), expr.span)
        return value
    return Value(Symbol(expr.id), expr.span, env)  # the names, for a typo's hint: read then


def _number(value: Value) -> int | float:
    if isinstance(value.value, Symbol):
        raise _unknown_name(value)
    if not isinstance(value.value, (int, float)):
        raise SpecError(f"expected a number, got {_show(value.value)}", value.span, code="SK203")
    return value.value


def _unknown_name(value: Value) -> SpecError:
    known = [k for k in value.known if not k.startswith("_")]
    return SpecError(f"unknown name '{value.value}'", value.span, code="SK201",
                     hint=did_you_mean(value.value, known) or
                     (f"the names defined here are: {', '.join(sorted(known))}" if known else None))


def _arithmetic(expr: A.Binary, left, right):
    return _in_range(_operation(expr, left, right), expr.span)


def _in_range(result, span: Span):
    """An integer within MAX_INTEGER or a finite number; SK213 otherwise."""
    if isinstance(result, int) and abs(result) > MAX_INTEGER:
        raise SpecError(f"this value is too large: it passes {MAX_INTEGER:,}", span,
                        code="SK213", hint="skdsl's integers are sizes and counts; check the "
                        "expression")
    if isinstance(result, float) and not math.isfinite(result):
        raise SpecError("this value is too large to represent", span, code="SK213",
                        hint="numbers are at most about 1.8e308; check the expression")
    return result


def make_divisible(value: float, divisor: int, least: int | None = None,
                   limit: float = 0.9) -> int:
    """timm's and TensorFlow's rounding of a width to a multiple of `divisor`: to the nearest
    multiple (halves up), at least `least` (default `divisor`), and one multiple more when
    rounding lost more than 1 − `limit` of `value` (timm's round_limit: 0.9, and 0 in its
    attention modules, which never add one)."""
    least = divisor if least is None else least
    rounded = max(least, int(value + divisor / 2) // divisor * divisor)
    if rounded < limit * value:
        rounded += divisor
    return rounded


def eca_kernel(channels: float, gamma: float = 2, beta: float = 1) -> int:
    """ECA's adaptive kernel size (Wang et al. 2020, Eq. 12): the odd number nearest above
    |log2(C) + b| / γ, at least 3, as timm's EcaModule computes it from `channels`."""
    t = int(abs(math.log2(channels) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


# The built-in functions of expressions: name -> (the function, its parameters, how many of them
# are required). Every argument is a number; `int` truncates towards zero, `round` rounds halves
# to even (Python's).
FUNCTIONS: dict[str, tuple[Callable, tuple[str, ...], int]] = {
    "int": (int, ("x",), 1),
    "round": (round, ("x",), 1),
    "make_divisible": (make_divisible, ("v", "divisor", "least", "limit"), 2),
    "eca_kernel": (eca_kernel, ("channels", "gamma", "beta"), 1),
}
# The parameters of a function that must be positive (SK203 otherwise), by function.
POSITIVE_ARGUMENTS = {make_divisible: ("divisor", "least"), eca_kernel: ("channels", "gamma")}


def _function(expr: A.Call, env: Env) -> Value:
    entry = FUNCTIONS.get(expr.name)
    if entry is None:
        raise SpecError(f"unknown function '{expr.name}'", expr.name_span, code="SK230",
                        hint=did_you_mean(expr.name, FUNCTIONS) or
                        f"the functions are: {', '.join(FUNCTIONS)}")
    function, parameters, required = entry
    usage = f"write it as: {expr.name}({', '.join(parameters[:required])}" + (
        f"[, {', '.join(parameters[required:])}])" if len(parameters) > required else ")")
    if len(expr.args) < required:
        raise SpecError(f"{expr.name}() needs {required} argument{'s' * (required > 1)}, got "
                        f"{len(expr.args)}", expr.span, code="SK204", hint=usage)
    if len(expr.args) > len(parameters):
        raise SpecError(f"too many arguments for {expr.name}()", expr.args[len(parameters)].span,
                        code="SK207", hint=usage)
    values = [evaluate(arg, env) for arg in expr.args]
    numbers = [_number(value) for value in values]
    for parameter, value in zip(parameters, values):
        if parameter in POSITIVE_ARGUMENTS.get(function, ()):
            _positive(value, f"{expr.name}'s {parameter}")
    return Value(_in_range(function(*numbers), expr.span), expr.span)


# -- domains: the values a param (`param G = 32 in {16, 32}`) or a formal may take --------


def formal_domain(formal: A.Formal, value: Value, definition: str) -> None:
    """SK244 unless `value`, an argument of block `definition`, lies in its formal's domain."""
    plain = str(value.value) if isinstance(value.value, Symbol) else value.value
    if formal.domain.kind == "choice":
        made = read_choice(formal.domain)
    elif isinstance(plain, str):
        raise SpecError(f"{formal.name}={plain} is a word, and block {definition}'s "
                        f"{formal.name} ranges over numbers", value.span or formal.span,
                        code="SK244")
    else:
        made = read_range(formal.domain, value)
    if isinstance(made, Choice) and isinstance(plain, str):
        plain = next((v for v in made.values if str(v).lower() == plain.lower()), plain)
    if plain in made:
        return
    words = [v for v in made.finite() if isinstance(v, str)] if isinstance(made, Choice) else []
    raise SpecError(f"{formal.name}={value_text(plain)} is not one of block {definition}'s "
                    f"{formal.name} values {made.text()}", value.span or formal.span,
                    code="SK244", hint=(did_you_mean(str(plain), words) if words else None)
                    or f"{formal.name} takes {made.text()}")


def read_choice(domain: A.Domain) -> Choice:
    values, seen = [], set()
    for item in domain.values:
        value = evaluate(item, {}).value
        plain = str(value) if isinstance(value, Symbol) else value
        if not isinstance(plain, (int, float, str)) or isinstance(plain, bool):
            raise SpecError(f"a choice holds numbers or words, not {value_text(plain)}", item.span,
                            code="SK240")
        if plain in seen:
            raise SpecError(f"{value_text(plain)} is listed twice", item.span, code="SK240")
        seen.add(plain)
        values.append(plain)
    words = [isinstance(v, str) for v in values]
    if any(words) and not all(words):
        raise SpecError("a choice holds numbers or words, not both", domain.span,
                        code="SK240", hint="quote nothing; write {relu, swish} or {16, 32}")
    return Choice(tuple(values))


def matching_choice(choice: Choice, default, domain: A.Domain) -> Choice:
    """The choice in its default's type: a float param's {1, 2} is {1.0, 2.0}."""
    numbers = not isinstance(choice.values[0], str)
    if isinstance(default, str) == numbers or (
            isinstance(default, int) and any(isinstance(v, float) for v in choice.values)):
        raise SpecError(f"the default {value_text(default)} is {value_kind(default)}, and the choice "
                        f"{choice.text()} holds {value_kind(choice.values[0], plural=True)}", domain.span,
                        code="SK241", hint="a param keeps one type: write the default like "
                                           "the choice's values")
    if isinstance(default, float):
        return Choice(tuple(float(v) for v in choice.values))
    return choice


def read_range(domain: A.Domain, default: Value) -> IntRange | FloatRange:
    low, high, *step = (_bound(item) for item in domain.values)
    step = step[0] if step else None
    integral = isinstance(default.value, int) and not isinstance(default.value, bool)
    if not integral and not isinstance(default.value, float):
        raise SpecError(f"a range is of numbers, and the default {value_text(default.value)} is a "
                        "word", domain.span, code="SK241", hint="list the words: {relu, swish}")
    if integral and not all(isinstance(v, int) for v in (low, high, step or 1)):
        raise SpecError("an integer param ranges over integers", domain.span, code="SK240",
                        hint="write whole bounds and step, or a float default such as 1.0")
    if low > high:
        raise SpecError(f"the range {low}..{high} is empty: its low end is above its high end",
                        domain.span, code="SK240", hint=f"write {high}..{low}")
    if step is not None and step <= 0:
        raise SpecError(f"a range's step is positive, not {step}", domain.values[2].span,
                        code="SK240")
    if domain.log and (low <= 0 or step not in (None, 1)):
        raise SpecError("a log range has a positive low end and no step", domain.span,
                        code="SK240", hint="log-uniform draws need low > 0; for powers of two "
                                           "list them: {16, 32, 64}")
    if step is not None and not _on_step(high - low, step):
        below = low + int((high - low) // step) * step
        raise SpecError(f"{low}..{high} does not end on a step of {step}", domain.span,
                        code="SK240", hint=f"end it at {below!r} or {below + step!r}")
    if integral:
        return IntRange(low, high, step or 1, domain.log)
    return FloatRange(float(low), float(high), None if step is None else float(step), domain.log)


def _bound(item) -> int | float:
    value = evaluate(item, {})
    if isinstance(value.value, (int, float)) and not isinstance(value.value, bool):
        return value.value
    raise SpecError(f"a range's bounds and step are numbers, not {value_text(value.value)}",
                    item.span, code="SK240", hint="a bound is a constant: what one param may "
                    "be never depends on another; write that as a `where`")


def _on_step(width, step) -> bool:
    steps = width / step
    return math.isclose(steps, round(steps), rel_tol=0, abs_tol=1e-9)


def value_text(value, bare: bool = False) -> str:
    if isinstance(value, str):
        return value if bare else f"'{value}'"
    return repr(value)


def value_kind(value, plural: bool = False) -> str:
    kind = "word" if isinstance(value, str) else "integer" if isinstance(value, int) else "number"
    return f"{kind}s" if plural else ("an " if kind == "integer" else "a ") + kind


# -- conditions ------------------------------------------------------------------------------


def condition_holds(condition: A.Condition, env: Env) -> bool:
    """The truth of an `if`'s condition; a located SpecError if it has none."""
    if isinstance(condition, A.Logic):
        left = condition_holds(condition.left, env)
        if condition.op == "not":
            return not left
        if condition.op == "and":
            return left and condition_holds(condition.right, env)
        return left or condition_holds(condition.right, env)
    if isinstance(condition, A.Compare):
        return _compare(condition, env)
    value = evaluate(condition, env)
    if isinstance(value.value, bool):
        return value.value
    if isinstance(value.value, int) and not isinstance(value.value, bool):
        return value.value != 0
    if isinstance(value.value, str) and value.value.lower() in _TRUE + _FALSE:
        return value.value.lower() in _TRUE
    if isinstance(condition, A.Name) and condition.id not in env:
        raise _unknown_name(value)
    raise SpecError(f"a condition is true or false, got {_show(value.value)}", value.span,
                    code="SK231", hint="compare it: if stride == 1:   (or name a flag such as "
                    "yes or no, or an integer: 0 is false)")


_ORDER = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
          ">=": lambda a, b: a >= b}


def _compare(condition: A.Compare, env: Env) -> bool:
    left, right = evaluate(condition.left, env), evaluate(condition.right, env)
    if condition.op == "divides":  # `where G divides width`
        divisor, multiple = _number(left), _number(right)
        if divisor == 0:
            raise SpecError("0 divides nothing", condition.left.span, code="SK206")
        return multiple % divisor == 0
    if condition.op in _ORDER:
        return _ORDER[condition.op](_number(left), _number(right))
    # A bare word is compared as a word (`act == relu`) only against a word: `strde == 1` is a
    # typo, not a false condition.
    unbound = [isinstance(e, A.Name) and e.id not in env for e in (condition.left, condition.right)]
    for is_unbound, value, other, other_unbound in ((unbound[0], left, right, unbound[1]),
                                                     (unbound[1], right, left, unbound[0])):
        if is_unbound and (other_unbound or not isinstance(other.value, str)):
            raise _unknown_name(value)
    same = _plain(left.value) == _plain(right.value)
    if isinstance(left.value, str) and isinstance(right.value, str):
        same = left.value.lower() == right.value.lower()
    return same if condition.op == "==" else not same


def _operation(expr: A.Binary, left, right):
    op = expr.op
    if op in ("/", "//", "%") and right == 0:
        raise SpecError("division by zero", expr.span, code="SK206")
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if op == "//":
        return left // right
    if op == "%":
        return left % right
    if isinstance(left, int) and isinstance(right, int):
        if left % right:
            raise SpecError(f"{left}/{right} is not a whole number", expr.span, code="SK206",
                            hint="use // to round down, or pick values that divide exactly")
        return left // right
    return left / right


def _show(value) -> str:
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    return f"'{value}'" if isinstance(value, str) else str(value)


# -- the input's channels inside a block -------------------------------------------------------

IN_CHANNELS = "in_channels"


class InputChannels:
    """`in_channels` inside a block: the channels of the call's input. Expansion knows no
    shapes, so the first read lowers the network as expanded up to the call (`prefix`: the
    finished stages, then the open scopes' items so far, innermost last)."""

    def __init__(self, network: tuple[str, tuple[int, ...]], stages: list, prefix: list):
        self.network, self.stages, self.prefix = network, stages, prefix
        self.read = False  # whether the block read it: then its repeats are expanded anew
        self._count: int | None = None

    def count(self, span: Span) -> int:
        self.read = True
        if self._count is None:
            self._count = self._lower(span)
        return self._count

    def _lower(self, span: Span) -> int:
        items: list = []
        stages = self.stages
        for kind, name, written in reversed(self.prefix):
            if kind == "opaque":
                raise SpecError(f"{IN_CHANNELS} is not known in a block called inside a "
                                "branch or a shortcut", span, code="SK232",
                                hint="pass the width to the block as an argument")
            items = [*written, *items]
            if kind == "block" and items:
                items = [S.Block(name=name, template=name, body=items)]
            elif kind == "stage":
                stages = [*self.stages, S.Stage(name=name, body=items)] if items else self.stages
        name, shape = self.network
        if not stages:
            return shape[0]
        # The shape rules are the lowering's (core sits below lang): asked, not written twice.
        return lower_table(S.Network(name=name, input=shape, stages=stages)).output_shape[0]


# -- typed arguments ---------------------------------------------------------------------------

ACTIVATIONS = tuple(S.ACTIVATIONS)
_TRUE, _FALSE = ("yes", "true", "on"), ("no", "false", "off", "none")


def _positive(value: Value, what: str, minimum: int = 1) -> int:
    number = _number(value)
    if not isinstance(number, int) or number < minimum:
        bound = "a positive integer" if minimum == 1 else f"an integer ≥ {minimum}"
        raise SpecError(f"{what} must be {bound}, got {_show(number)}", value.span, code="SK203",
                        hint=_WHOLE_NUMBER_HINT if number >= minimum else None)
    if number > S.LARGEST:
        raise SpecError(f"{what} is too large: {number} (at most {S.LARGEST})", value.span,
                        code="SK203")
    return number


# A width such as 64 * k is a number, not a count: say how to make it one.
_WHOLE_NUMBER_HINT = ("make it a whole number: int(...) rounds down, round(...) to the nearest, "
                      "make_divisible(..., 8) to a multiple of 8 as timm does")


def _kernel(value: Value, what: str) -> tuple[int, int]:
    if isinstance(value.value, tuple):
        if len(value.value) != 2 or min(value.value) < 1:
            raise SpecError(f"{what} must be a size such as 3x3, got {_show(value.value)}",
                            value.span, code="SK203")
        return value.value
    size = _positive(value, what)
    return (size, size)


def _pair(value: Value, what: str) -> tuple[int, int]:
    if isinstance(value.value, tuple):
        if len(value.value) != 2:
            raise SpecError(f"{what} must be one number or two such as 0x1, got "
                            f"{_show(value.value)}", value.span, code="SK203")
        return value.value
    size = _positive(value, what, minimum=0)
    return (size, size)


def _word(value: Value, what: str, choices) -> str:
    word = value.value
    if not isinstance(word, str):
        raise SpecError(f"{what} must be one of {', '.join(choices)}, got {_show(word)}",
                        value.span, code="SK203")
    if word.lower() not in choices:
        raise SpecError(f"unknown {what} '{word}'", value.span, code="SK203",
                        hint=did_you_mean(word, choices) or f"choose one of {', '.join(choices)}")
    return word.lower()


def _flag(value: Value, what: str) -> bool:
    if isinstance(value.value, int) and value.value in (0, 1):
        return bool(value.value)
    return _word(value, what, _TRUE + _FALSE) in _TRUE


def _groups(value: Value, what: str):
    if isinstance(value.value, str) and value.value.lower() in ("dw", "depthwise"):
        return "depthwise"
    return _positive(value, what)


def _probability(value: Value, what: str) -> float:
    number = _number(value)
    if not 0 <= number < 1:
        raise SpecError(f"{what} must be at least 0 and below 1, got {number}", value.span,
                        code="SK203")
    return float(number)


def _literal(expr: A.Expr):
    return getattr(expr, "value", getattr(expr, "values", "an expression"))


def _number_value(value: Value, what: str) -> float:
    return float(_number(value))


Convert = Callable[[Value, str], object]


def _named(convert: Convert, noun: str) -> Convert:
    """`convert` with the noun its messages use: `take`'s phrase ("a kernel such as 3x3") says
    what is missing and would garble "unknown … 'x'" or "… must be …"."""
    return lambda value, what: convert(value, noun)


class _Args:
    """The evaluated arguments of one statement, taken by name; whatever is left is an error."""

    def __init__(self, where: str, args: list[A.Arg], env: Env, span: Span,
                 usage: str | None = None):
        self.where, self.span, self.usage = where, span, usage
        self.positional = [evaluate(a.value, env) for a in args if a.keyword is None]
        self.keywords: dict[str, tuple[A.Arg, Value]] = {}
        for arg in args:
            if arg.keyword is None:
                continue
            if arg.keyword in self.keywords:
                raise SpecError(f"{arg.keyword} is given twice", arg.keyword_span, code="SK205")
            self.keywords[arg.keyword] = (arg, evaluate(arg.value, env))
        self.spans: dict[str, Span] = {"": span}
        self.taken = 0

    def take(self, what: str, convert: Convert, field: str, required: bool = True):
        if self.taken >= len(self.positional):
            if required:
                raise SpecError(f"{self.where} needs {what}", self.span, code="SK204",
                                hint=self.usage)
            return None
        value = self.positional[self.taken]
        self.taken += 1
        self.spans[field] = value.span
        return convert(value, what)

    def rest(self, what: str, convert: Convert, field: str) -> list:
        values = self.positional[self.taken:]
        self.taken = len(self.positional)
        if values:
            self.spans[field] = _join(values[0].span, values[-1].span)
        for index, value in enumerate(values):
            self.spans[f"{field}.{index}"] = value.span
        return [convert(v, what) for v in values]

    def options(self, table: tuple[Option, ...]) -> dict:
        spelled = {name: option for option in table for name in option.names}
        found = {}
        for keyword, (arg, value) in self.keywords.items():
            option = spelled.get(keyword)  # exact: SK's d (attention width) is not D (dilation)
            if option is None:
                raise SpecError(f"{self.where} has no option '{keyword}'", arg.keyword_span,
                                code="SK202", hint=did_you_mean(keyword, spelled) or
                                f"its options are: {', '.join(o.names[0] for o in table)}")
            if option.field in found:
                raise SpecError(f"{option.what} is given twice", arg.keyword_span, code="SK205")
            self.spans[option.field] = value.span
            found[option.field] = _converter(option)(value, option.what)
        return found

    def finish(self) -> None:
        if self.taken < len(self.positional):
            extra = self.positional[self.taken]
            raise SpecError(f"too many arguments for {self.where}", extra.span, code="SK207",
                            hint=self.usage)


def _join(first: Span, last: Span) -> Span:
    return Span(first.file, first.line, first.column, last.end_line, last.end_column)


# How each kind of value is read (an `ops.Option`'s or `ops.Take`'s `kind`).
CONVERTERS: dict[str, Convert] = {
    "positive": _positive, "kernel": _kernel, "pair": _pair, "flag": _flag, "groups": _groups,
    "probability": _probability, "number": _number_value, "word": None,
    # the paper's parameter count, in millions or as a count (`params=27.5M`)
    "millions": lambda v, w: _number_value(v, w) / 1e6 if _number_value(v, w) >= 1e3
    else _number_value(v, w),
    "text": lambda v, w: str(v.value),
    "tensor": lambda v, w: _tensor_name(v, w),
}


def _tensor_name(value: Value, what: str) -> str:
    """A tensor's name, as written (a word that no param or formal binds)."""
    if not isinstance(value.value, Symbol):
        raise SpecError(f"{what} is a tensor's name, got {_show(value.value)}", value.span,
                        code="SK203", hint="name a layer, a branch or input: upsample to input")
    return str(value.value)


def _converter(entry) -> Convert:
    """The reader of an option or positional: its kind's, with its noun for messages."""
    if entry.kind == "word":
        choices = entry.choices
        convert = lambda value, what: _word(value, what, choices)  # noqa: E731
    else:
        convert = CONVERTERS[entry.kind]
    noun = getattr(entry, "noun", None)
    return _named(convert, noun) if noun else convert


# The option tables, as the registry defines them (docs/language.md lists every spelling).
CONV_OPTIONS = ops.KEYWORDS["conv"].options
DWCONV_OPTIONS = ops.KEYWORDS["dwconv"].options
SK_OPTIONS = ops.KEYWORDS["sk"].options
SUM_OPTIONS = ops.KEYWORDS["sum"].options
BRANCH_OPTIONS = ops.attention.BRANCH_OPTIONS
SE_OPTIONS = ops.KEYWORDS["se"].options
POOL_OPTIONS = ops.pool.POOL_OPTIONS
FC_OPTIONS = ops.KEYWORDS["fc"].options
RESIDUAL_OPTIONS = (ops.conv.ACT,)
PAPER_OPTIONS = (ops.Option("params_millions", ("params",), "millions", "params"),
                 ops.Option("gflops", ("gflops",), "number", "gflops"),
                 ops.Option("source", ("source",), "text", "source"))

# -- statements --------------------------------------------------------------------------------

_BASE_NAMES = {word: keyword.base_name for word, keyword in ops.KEYWORDS.items()}


_CHOOSING = (A.IfStmt, A.ForStmt)


def _chosen(statements: list[A.Statement], env: Env) -> list[A.Statement]:
    """The statements with each `if` replaced by the side its condition chooses. An `if` on a
    formal of a block no network calls (check_block) is left out: its value is unknown.
    Callers only read the list: most bodies hold no `if` or `for` and are returned as they are."""
    if not any(isinstance(st, _CHOOSING) for st in statements):
        return statements
    chosen: list[A.Statement] = []
    pending = list(reversed(statements))
    while pending:
        st = pending.pop()
        if isinstance(st, A.ForStmt):
            pending += reversed(_unrolled(st))
            continue
        if not isinstance(st, A.IfStmt):
            chosen.append(st)
            continue
        try:
            holds = condition_holds(st.condition, env)
        except _Unbound:
            continue
        pending += reversed(st.body if holds else st.orelse)
    return chosen


def _unrolled(st: A.ForStmt) -> list[A.Statement]:
    """A `for`'s body once per row, each loop name replaced by the row's value (made once, so
    that naming and expansion see the same statements)."""
    if st.unrolled is not None:
        return st.unrolled
    seen = set()
    for name in st.names:
        if name.name in seen:
            raise SpecError(f"the loop name '{name.name}' is given twice", name.span, code="SK205")
        seen.add(name.name)
    unrolled = []
    for values, span in zip(st.rows, st.row_spans):
        if len(values) != len(st.names):
            names = ", ".join(n.name for n in st.names)
            raise SpecError(f"this row has {len(values)} value{'s' * (len(values) != 1)} for the "
                            f"{len(st.names)} names {names}", span, code="SK233",
                            hint=f"give each row one value per name, in order: ({names})")
        mapping = {name.name: value for name, value in zip(st.names, values)}
        unrolled += [_substitute(statement, mapping) for statement in st.body]
    st.unrolled = unrolled
    return unrolled


def _substitute(node, mapping: dict):
    """A copy of a syntax node with each Name in `mapping` replaced by its expression."""
    if isinstance(node, A.Name):
        return mapping.get(node.id, node)
    if isinstance(node, A.StageDecl) and node.name.name in mapping:
        return _substitute(replace(node, name=_stage_name(mapping[node.name.name])), mapping)
    if isinstance(node, A.Binary):
        return _substitute_binary(node, mapping)
    if isinstance(node, list):
        return [_substitute(item, mapping) for item in node]
    if isinstance(node, tuple):
        return tuple(_substitute(item, mapping) for item in node)
    if is_dataclass(node) and not isinstance(node, Span):
        return replace(node, **{f.name: _substitute(getattr(node, f.name), mapping)
                                for f in fields(node) if f.init})
    return node


def _stage_name(value: A.Expr) -> A.Label:
    """A stage named by a loop name: the row's word (`conv2`), where the row wrote it."""
    if not isinstance(value, A.Name):
        raise SpecError(f"a stage's name is a word such as conv2, got {_show(_literal(value))}",
                        value.span, code="SK203", hint="write the stage names in the table as "
                        "words: for name, c in (conv2, 256), (conv3, 512):")
    return A.Label(value.id, value.span)


def _substitute_binary(expr: A.Binary, mapping: dict) -> A.Expr:
    return fold_binary(expr, lambda operand: _substitute(operand, mapping),
                       lambda node, left, right: replace(node, left=left, right=right))


def _residual_holds(st: A.ResidualStmt, env: Env) -> bool:
    """Whether a residual adds its shortcut: always, unless `residual if COND:` says not."""
    return st.condition is None or condition_holds(st.condition, env)


def _repeat_count(st: A.CallStmt, env: Env) -> int:
    """How many times a call repeats: `x3`, or `x depth` read from a param or formal."""
    if st.repeat is None or isinstance(st.repeat, int):
        return st.repeat or 1
    value = evaluate(st.repeat, env)  # a name, or what a `for` put in its place
    if isinstance(value.value, Symbol):
        raise _unknown_name(value)
    return check_repeat(_positive(value, "a repeat count"), value.span)


def _plan_names(statements: list[A.Statement], env: Env) -> dict:
    """Local names for a scope: a kind's base name, numbered when it occurs more than once.

    A residual is transparent: its body is named in the enclosing scope, beside its shortcut,
    add and act. Block calls are always numbered (block1, block2 ...), as the paper's conv3_1.
    Only the chosen side of an `if` is named.
    """
    entries: list[tuple[object, str, A.Label | None]] = []
    # In source order, with a stack of its own: `residual: residual: …` may nest deeply on one
    # line, and the expander's depth limit comes only after this.
    pending: list = list(reversed(_chosen(statements, env)))
    while pending:
        st = pending.pop()
        if isinstance(st, A.LayerStmt):
            entries.append((id(st), _BASE_NAMES[st.keyword], st.label))
        elif isinstance(st, A.CallStmt):
            for index in range(_known_repeat_count(st, env)):
                entries.append(((id(st), index), "block", st.label))
        elif isinstance(st, A.SplitStmt):
            entries.append((id(st), "split", st.label))
        elif isinstance(st, A.BranchStmt):
            entries.append((id(st), "branch", st.name))
        elif isinstance(st, A.ResidualStmt):
            try:
                holds = _residual_holds(st, env)
            except _Unbound:  # check_block: this residual is checked at each call
                continue
            if holds:
                pending.append(("after", st))
            body = _chosen(st.body, env)
            pending += reversed([s for s in body if not isinstance(s, A.ShortcutStmt)])
        elif isinstance(st, tuple):  # ("after", residual): its parts follow its body
            for part in ("shortcut", "add", "act"):
                entries.append(((id(st[1]), part), part, None))
    counts: dict[str, int] = {}
    for _, base, label in entries:
        if label is None:
            counts[base] = counts.get(base, 0) + 1
    label_counts: dict[str, int] = {}
    for _, _, label in entries:
        if label is not None:
            label_counts[label.name] = label_counts.get(label.name, 0) + 1
    names, seen, numbers = {}, {}, {}
    for key, base, label in entries:
        if label is not None:
            if label_counts[label.name] > 1:
                numbers[label.name] = numbers.get(label.name, 0) + 1
                name = f"{label.name}{numbers[label.name]}"
            else:
                name = label.name
            span = label.span
        elif counts[base] > 1 or base == "block":
            numbers[base] = numbers.get(base, 0) + 1
            name, span = f"{base}{numbers[base]}", None
        else:
            name, span = base, None
        if name in seen:
            raise SpecError(f"two layers here are named '{name}'", span or seen[name],
                            code="SK205", hint="give one of them another name: other = conv ...")
        if label is not None:
            _check_label(label, name)
        seen[name] = span
        names[key] = name
    return names


def _known_repeat_count(st: A.CallStmt, env: Env) -> int:
    try:
        return _repeat_count(st, env)
    except _Unbound:  # check_block: the call is checked where the block is called
        return 1


def _check_label(label: A.Label, name: str) -> None:
    try:
        S.check_name(name)
    except ValueError as error:
        raise SpecError(str(error), label.span, code="SK211") from None


@dataclass
class _Context:
    env: Env
    names: dict
    calls: tuple[str, ...]  # the block templates being expanded, innermost last
    branches: dict = field(default_factory=dict)  # the scope's branches so far, for `shares`
    branch_layers: dict = field(default_factory=dict)  # their layer counts, for MAX_LAYERS


_NOT_READ = InputChannels(("", (1, 1, 1)), [], [])  # a cached call's: it did not read its input


class ExpansionCache:
    """What the variants of one spec share (`skdsl explore`): the imported files' trees, read
    once, and the items of each block call by its arguments, expanded once. A call's items
    depend only on its block, its arguments, the block file's params and where it sits (its
    nesting depth and the calls around it, for their limits and cycles), unless the block
    reads in_channels: those are expanded at every call, as within one network."""

    def __init__(self, limit: int = 8192):
        self.limit = limit
        self.files: dict[tuple, A.SourceFile] = {}
        self.places: dict[tuple, tuple] = {}  # the resolved root, folders and `use` targets
        self.checked: set[tuple] = set()  # blocks no network calls, checked with these params
        self.bodies: dict[tuple, tuple[list, int, tuple | None]] = {}  # key -> items, layers, …
        self.blocks: dict[tuple, tuple[list, S.Block]] = {}  # (key, name) -> its items, block
        # id of a stage's declaration -> the names it read -> their values -> the stage
        self.stages: dict[int, dict[tuple, dict[tuple, _RememberedStage]]] = {}
        self.reads_input: set[int] = set()  # ids of block definitions that read in_channels
        self.definitions: dict[int, A.BlockDef] = {}  # keeps each id's definition alive

    def key(self, definition: A.BlockDef, bound: Env, template_env: Env, context: "_Context",
            depth: int) -> tuple | None:
        if id(definition) in self.reads_input:
            return None
        self.definitions[id(definition)] = definition
        return (id(definition), depth, context.calls, _frozen(bound), _frozen(template_env))

    def remember(self, names: tuple, values: tuple, entry: "_RememberedStage") -> None:
        """A stage, found again where the params `names` have `values`."""
        made = self.stages.setdefault(id(entry.decl), {}).setdefault(names, {})
        if len(made) >= self.limit:
            made.clear()
        made[values] = entry

    def store(self, key: tuple, body: list, layers: int, spec_params: tuple | None) -> None:
        """A call's items; `spec_params`: the spec's params they were made with, when they
        read them (then they serve only where the params are the same)."""
        if len(self.bodies) >= self.limit:  # a long study of many distinct calls
            self.bodies.clear()
            self.blocks.clear()
        self.bodies[key] = (body, layers, spec_params)


@dataclass
class _Frame:
    """What a call being expanded (or a stage) read beyond its arguments, itself or through the
    calls inside it: the spec's own params, or its input's channels."""

    spec_params: bool
    input: bool


@dataclass(frozen=True)
class _RememberedStage:
    decl: A.StageDecl  # held, so that its id stays its own
    stage: S.Stage
    layers: int
    called: set


class _Watched(dict):
    """An env that notes the names looked up in it. Iterating it (copying it, listing its
    names) counts as reading every name: `everything`."""

    def __init__(self, env: Env):
        super().__init__(env)
        self.read: dict[str, None] = {}
        self.everything = False

    def __contains__(self, name) -> bool:
        self.read[name] = None
        return dict.__contains__(self, name)

    def __getitem__(self, name):
        self.read[name] = None
        return dict.__getitem__(self, name)

    def get(self, name, default=None):
        self.read[name] = None
        return dict.get(self, name, default)

    def __iter__(self):
        self.everything = True
        return dict.__iter__(self)

    def keys(self):
        self.everything = True
        return dict.keys(self)

    def items(self):
        self.everything = True
        return dict.items(self)

    def values(self):
        self.everything = True
        return dict.values(self)

    def copy(self):
        self.everything = True
        return dict(dict.items(self))


_MISSING = object()


def _current(env: Env, name: str):
    value = env.get(name, _MISSING)
    return value if value is _MISSING else (type(value.value), value.value)


def _frozen(env: Env) -> tuple:
    return tuple((name, type(value.value), value.value) for name, value in env.items())


class Expander:
    def __init__(self, program: Program):
        self.program = program
        self.cache = program.cache
        self.frames: list[_Frame] = []  # the calls (and the stage) being expanded, innermost last
        self.depth = 0  # items nested in items: residuals, branches, block calls
        self.layers = 0  # layers of the network so far, repeats unrolled
        self.called: set[str] = set()  # block templates some call reached
        self.stages: list[S.Stage] = []  # the stages expanded so far
        self.open: list[tuple[str, str, list]] = []  # the scopes being expanded: kind, name, items
        self.network_shape: tuple[str, tuple[int, ...]] = ("", (1, 1, 1))

    @contextmanager
    def nested(self, span: Span):
        """One level deeper; refused past MAX_NESTING, before Python's stack runs out."""
        if self.depth >= MAX_NESTING:
            raise SpecError(f"nested too deeply: more than {MAX_NESTING} levels of residuals, "
                            "branches and block calls", span, code="SK119",
                            hint="flatten it: a network is a sequence of stages and blocks")
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def count_layers(self, added: int, span: Span) -> None:
        self.layers += added
        if self.layers > MAX_LAYERS:
            raise SpecError(f"the network has more than {MAX_LAYERS:,} layers once its repeats "
                            "are unrolled", span, code="SK215",
                            hint="lower the repeat counts; skdsl's analysis and models are "
                            "built layer by layer")

    # -- network ---------------------------------------------------------------------------

    def network(self) -> S.Network:
        root = self.program.root
        if not root.networks:
            raise SpecError(f"{root.path} defines no network", Span(root.path, 1, 1, 1, 1),
                            code="SK209", hint="add `network NAME:` with its input and stages; "
                            "a file of blocks only is imported with `use`")
        if len(root.networks) > 1:
            raise SpecError("a spec file holds one network; this one has several",
                            root.networks[1].name.span, code="SK209",
                            hint="move each network into a file of its own")
        decl = root.networks[0]
        env = dict(self.program.env)
        if decl.input is None:
            raise SpecError(f"network {decl.name.name} has no input shape", decl.name.span,
                            code="SK204", hint="add a line such as: input 3x224x224")
        if len(decl.input.values) != 3 or min(decl.input.values) < 1:
            raise SpecError("the input is written C×H×W, such as 3x224x224", decl.input.span,
                            code="SK203")
        classes = None
        if decl.classes is not None:
            value = evaluate(decl.classes, env)
            classes = _positive(value, "classes")
            env["classes"] = value
        if not decl.stages:
            raise SpecError(f"network {decl.name.name} has no stages", decl.name.span,
                            code="SK204", hint="add stages such as: stage conv1: conv 7x7, 64, "
                            "stride 2")
        decl_stages = _chosen(decl.stages, env)
        seen = set()
        for stage in decl_stages:
            if stage.name.name in seen:
                raise SpecError(f"two stages are named '{stage.name.name}'", stage.name.span,
                                code="SK205", hint="stage names must be unique")
            seen.add(stage.name.name)
        self.network_shape = (decl.name.name, decl.input.values)
        for stage in decl_stages:
            self.stages.append(self.remembered_stage(stage, env))
        stages = self.stages
        parameters = {k: v.value for k, v in self.program.env.items()}
        network = _build(S.Network, decl.span, {"name": decl.name.span, "input": decl.input.span},
                         name=decl.name.name, input=decl.input.values, classes=classes,
                         stages=stages, parameters=parameters, paper=self.paper(decl, env))
        for name, template in list(self.program.templates.items()):
            if name not in self.called and self.unchecked(template):
                self.check_block(template)
                if self.cache is not None:  # once it passed: a mistake is reported every time
                    self.cache.definitions[id(template.definition)] = template.definition
                    self.cache.checked.add((id(template.definition), _frozen(template.env)))
        return network

    def unchecked(self, template: _Template) -> bool:
        """Whether `template` still needs `check_block`: always, but once per file params with
        a cache (the check reads nothing else)."""
        return self.cache is None or (
            (id(template.definition), _frozen(template.env)) not in self.cache.checked)

    # -- blocks no network calls ---------------------------------------------------------------

    def check_block(self, template: _Template) -> None:
        """Check what a block's body says on its own: literal values, names, layer options.

        Formals have no value here; a statement that uses one is left for its calls."""
        definition = template.definition
        env = {IN_CHANNELS: Value(_UNBOUND, definition.span), **template.env,
               **{f.name: Value(_UNBOUND, f.span) for f in definition.formals}}
        context = _Context(env, _plan_names(definition.body, env), (definition.name,))
        try:
            self.check_scope(definition.body, context)
        except SpecError as error:
            raise error.with_note(f"in block {definition.name}, which no network calls") from None

    def check_scope(self, statements: list, context: _Context) -> None:
        for st in _chosen(statements, context.env):
            try:
                self.check_statement(st, context)
            except _Unbound:
                continue

    def check_statement(self, st: A.Statement, context: _Context) -> None:
        if isinstance(st, A.ResidualStmt):  # its body is named in the enclosing scope
            with self.nested(_first_line(st.span)):
                body = _chosen(st.body, context.env)
                shortcuts = [s for s in body if isinstance(s, A.ShortcutStmt)]
                self.check_scope([s for s in body if s not in shortcuts], context)
                for shortcut in shortcuts:
                    self.check_scope(shortcut.body, _Context(
                        context.env, _plan_names(shortcut.body, context.env), context.calls))
        elif isinstance(st, A.BranchStmt):
            with self.nested(_first_line(st.span)):
                self.check_scope(st.body, _Context(context.env, _plan_names(st.body, context.env),
                                                   context.calls))
        else:
            self.statement(st, context)

    def paper(self, decl: A.NetworkDecl, env: Env) -> S.PaperFigures | None:
        if decl.paper is None:
            return None
        args = _Args("paper", decl.paper, env, decl.span)
        found = args.options(PAPER_OPTIONS)
        args.finish()
        return _build(S.PaperFigures, decl.span, args.spans, **found)

    def remembered_stage(self, decl: A.StageDecl, env: Env) -> S.Stage:
        """`stage`, or with a cache the stage another variant made when every param it read
        then has the same value now (what a stage reads decides all it does)."""
        if self.cache is None:
            return self.stage(decl, env)
        for names, made in self.cache.stages.get(id(decl), {}).items():
            entry = made.get(tuple([_current(env, name) for name in names]))
            if entry is not None and entry.decl is decl:
                self.count_layers(entry.layers, decl.span)
                self.called.update(entry.called)
                return entry.stage
        watched = _Watched(env)
        layers, called = self.layers, set(self.called)
        self.called, frame = set(), _Frame(False, False)
        self.frames.append(frame)
        try:
            stage = self.stage(decl, watched)
        finally:
            self.frames.pop()
            fresh, self.called = self.called, called | self.called
        if watched.everything or frame.input:
            return stage  # every name, or an input's channels, read: not remembered
        names = tuple({**watched.read, **dict.fromkeys(self.program.env)} if frame.spec_params
                      else watched.read)
        self.cache.remember(names, tuple([_current(env, name) for name in names]),
                            _RememberedStage(decl, stage, self.layers - layers, fresh))
        return stage

    def stage(self, decl: A.StageDecl, env: Env) -> S.Stage:
        _check_label(decl.name, decl.name.name)
        body = decl.body
        if decl.repeat is not None:
            if len(body) != 1 or not isinstance(body[0], A.CallStmt) or body[0].repeat:
                raise SpecError("a stage's repeat count applies to one block call",
                                decl.repeat_span, code="SK212",
                                hint="write the count after the call instead: sk_unit(128, 256) x3")
            call = body[0]
            body = [A.CallStmt(call.label, call.name, call.name_span, call.args, decl.repeat,
                               decl.repeat_span, call.span)]
        context = _Context(env, _plan_names(body, env), ())
        items = self.scope(body, context, ("stage", decl.name.name))
        return _build(S.Stage, decl.span, {"name": decl.name.span}, name=decl.name.name, body=items)

    # -- scopes and statements ---------------------------------------------------------------

    def scope(self, statements: list[A.Statement], context: _Context,
              kind: tuple[str, str] = ("flat", "")) -> list:
        """The items of `statements`; `kind` says how an `in_channels` read inside them sees
        them: a stage's or a block's items, a residual's (flat), or a branch's (opaque)."""
        items: list = []
        self.open.append((*kind, items))
        try:
            for statement in _chosen(statements, context.env):
                items.extend(self.statement(statement, context))
        finally:
            self.open.pop()
        return items

    def statement(self, st: A.Statement, context: _Context) -> list:
        if isinstance(st, A.LayerStmt):
            return [self.layer(st, context)]
        if isinstance(st, A.CallStmt):
            return self.call(st, context)
        if isinstance(st, A.ResidualStmt):
            return self.residual(st, context)
        if isinstance(st, A.BranchStmt):
            return [self.branch(st, context)]
        if isinstance(st, A.SplitStmt):
            return [self.split(st, context)]
        raise SpecError("`shortcut:` belongs inside a residual block", st.span, code="SK212",
                        hint="indent it under `residual:`")

    def layer(self, st: A.LayerStmt, context: _Context):
        self.count_layers(1, st.span)
        keyword = ops.KEYWORDS[st.keyword]
        build = READERS[keyword.reading]
        where = shown_keyword(st.keyword)
        options = _name_bracket_positionals(st, where, keyword)
        args = _Args(where, options + st.args, context.env, _first_line(st.span), keyword.usage)
        if st.kernel_lines is not None and not keyword.branches:
            raise SpecError(f"only SK and SUM take a list of branches, not {st.keyword}",
                            st.keyword_span, code="SK212")
        name = context.names[id(st)]
        return build(self, st, args, name, context)

    def call(self, st: A.CallStmt, context: _Context) -> list:
        template = self.program.templates.get(st.name)
        if template is None:
            choices = list(self.program.templates) + list(LAYER_KEYWORDS)
            raise SpecError(f"unknown block '{st.name}'", st.name_span, code="SK201",
                            hint=did_you_mean(st.name, choices) or _known_blocks(self.program))
        if st.name in context.calls:
            chain = " -> ".join([*context.calls, st.name])
            raise SpecError(f"block '{st.name}' calls itself: {chain}", st.name_span, code="SK208")
        bound = self.bind(template.definition, st, context.env, template.env)
        self.called.add(st.name)
        blocks, body, channels, key = [], None, None, None
        self.open.append(("flat", "", blocks))  # the earlier copies feed the later ones
        try:
            for index in range(_repeat_count(st, context.env)):
                if index == 1 and "stride" in bound:
                    # The first block of a repeat takes the stride; the others keep the size.
                    bound = {**bound, "stride": Value(1, bound["stride"].span)}
                    body = None
                name = context.names[(id(st), index)]
                if body is None or channels.read:
                    # Equal arguments expand to equal items: the repeats share them, which saves
                    # expanding them again and lets the lowering recognise them. A block that
                    # reads in_channels may differ with its input, so each copy is expanded.
                    body, body_layers, channels, key = self.call_body(template, bound, st,
                                                                      context, name)
                    arguments = {k: _plain(v.value) for k, v in bound.items()}
                else:
                    self.count_layers(body_layers, st.repeat_span or st.span)
                blocks.append(self.block(st, template, name, arguments, body, key))
        finally:
            self.open.pop()
        return blocks

    def block(self, st: A.CallStmt, template: _Template, name: str, arguments: dict,
              body: list, key: tuple | None) -> S.Block:
        """The block a call places: built, or the cache's (`key`: its call's cache key)."""
        found = None if key is None else self.cache.blocks.get((key, name))
        if found is not None and found[0] is body:
            return found[1]
        block = _build(S.Block, _first_line(st.span), {}, name=name,
                       template=template.definition.name, arguments=arguments, body=body)
        if key is not None:
            self.cache.blocks[(key, name)] = (body, block)
        return block

    def call_body(self, template: _Template, bound: Env, st: A.CallStmt, context: _Context,
                  name: str) -> tuple[list, int, InputChannels, tuple | None]:
        """A call's items, the layers they hold, what they read of their input, and its cache
        key (None: not cached): expanded, or the cache's when another variant made it."""
        key = None if self.cache is None else self.cache.key(
            template.definition, bound, template.env, context, self.depth)
        found = None if key is None else self.cache.bodies.get(key)
        if found is not None:
            body, layers, spec_params = found
            if spec_params is None or spec_params == _frozen(self.program.env):
                self.count_layers(layers, st.span)
                self.note(_Frame(spec_params is not None, False))
                return body, layers, _NOT_READ, key
        before = self.layers
        open_now = [(kind, n, list(items)) for kind, n, items in self.open]
        channels = InputChannels(self.network_shape, list(self.stages), open_now)
        # What the body reads beyond its arguments: the spec's own params (a block of the spec
        # file sees them), or its input's channels, in itself or in a block it calls.
        frame = _Frame(template.env is self.program.env, key is None and self.cache is not None)
        self.frames.append(frame)
        try:
            body = self.expand_body(template.definition, bound, st, context, name, channels)
        finally:
            self.frames.pop()
        frame.input = frame.input or channels.read
        self.note(frame)
        layers = self.layers - before
        if key is None:
            return body, layers, channels, None
        if frame.input:
            self.cache.reads_input.add(id(template.definition))
            return body, layers, channels, None
        self.cache.store(key, body, layers, _frozen(self.program.env) if frame.spec_params
                         else None)
        return body, layers, channels, key

    def note(self, frame: "_Frame") -> None:
        """Pass what a call read on to the call or stage around it."""
        if self.frames:
            self.frames[-1].spec_params |= frame.spec_params
            self.frames[-1].input |= frame.input

    def expand_body(self, definition: A.BlockDef, bound: Env, st: A.CallStmt,
                    context: _Context, name: str, channels: InputChannels) -> list:
        # A formal or a parameter may be called in_channels: then it is that, not the input's.
        env = {IN_CHANNELS: Value(channels, st.span), **self.program.templates[definition.name].env,
               **bound}
        inner = _Context(env, _plan_names(definition.body, env), context.calls + (definition.name,))
        try:
            with self.nested(st.span):
                return self.scope(definition.body, inner, ("block", name))
        except SpecError as error:
            raise error.with_note(f"in block {definition.name}, called at {st.span}") from None

    def bind(self, definition: A.BlockDef, st: A.CallStmt, env: Env, template_env: Env) -> Env:
        formals = {f.name: f for f in definition.formals}
        bound: Env = {}
        positional = [a for a in st.args if a.keyword is None]
        if len(positional) > len(definition.formals):
            extra = positional[len(definition.formals)]
            raise SpecError(f"too many arguments: block {definition.name} takes "
                            f"{len(definition.formals)}", extra.span, code="SK207",
                            hint=f"its parameters are ({_signature(definition)})")
        for formal, arg in zip(definition.formals, positional):
            bound[formal.name] = evaluate(arg.value, env)
        for arg in st.args:
            if arg.keyword is None:
                continue
            if arg.keyword not in formals:
                raise SpecError(f"block {definition.name} has no parameter '{arg.keyword}'",
                                arg.keyword_span, code="SK202",
                                hint=did_you_mean(arg.keyword, formals) or
                                f"its parameters are ({_signature(definition)})")
            if arg.keyword in bound:
                raise SpecError(f"{arg.keyword} is given twice", arg.keyword_span, code="SK205")
            bound[arg.keyword] = evaluate(arg.value, env)
        for formal in definition.formals:
            if formal.name in bound:
                continue
            if formal.default is None:
                raise SpecError(f"block {definition.name} needs its argument '{formal.name}'",
                                st.span and _first_line(st.span), code="SK204",
                                hint=f"its parameters are ({_signature(definition)})")
            # Defaults may use the template file's parameters and the earlier arguments.
            bound[formal.name] = evaluate(formal.default, {**template_env, **bound})
        for formal in definition.formals:
            if formal.domain is not None:
                formal_domain(formal, bound[formal.name], definition.name)
        return bound

    def residual(self, st: A.ResidualStmt, context: _Context) -> list:
        """[the residual], or its body's items alone when `residual if COND:` is false."""
        args = _Args("residual", st.args, context.env, _first_line(st.span))
        found = args.options(RESIDUAL_OPTIONS)
        args.finish()
        statements = _chosen(st.body, context.env)
        shortcuts = [s for s in statements if isinstance(s, A.ShortcutStmt)]
        if len(shortcuts) > 1:
            raise SpecError("a residual has one shortcut", shortcuts[1].span, code="SK212")
        shortcut = None
        with self.nested(_first_line(st.span)):
            body = self.scope([s for s in statements if s not in shortcuts], context)
            if not _residual_holds(st, context.env):
                return body
            if shortcuts:
                inner = _Context(context.env, _plan_names(shortcuts[0].body, context.env),
                                 context.calls)
                shortcut = self.scope(shortcuts[0].body, inner, ("opaque", ""))
        names = {part: context.names[(id(st), part)] for part in ("shortcut", "add", "act")}
        return [_build(S.Residual, args.spans[""], args.spans, body=body, shortcut=shortcut,
                       shortcut_name=names["shortcut"], add_name=names["add"],
                       act_name=names["act"], **found)]

    def branch(self, st: A.BranchStmt, context: _Context) -> S.Branch:
        spans = {"name": st.name.span, "inputs": st.source.span if st.source else st.span}
        shares = None
        if st.shares is not None:
            earlier = context.branches.get(st.shares.name)
            if earlier is None:
                raise SpecError(f"no earlier branch named '{st.shares.name}' to share",
                                st.shares.span, code="SK306",
                                hint=did_you_mean(st.shares.name, context.branches) or
                                "`shares` names a branch written above it in the same block")
            body, shares, spans["shares"] = earlier.body, earlier.name, st.shares.span
            layers = context.branch_layers[earlier.name]
            self.count_layers(layers, st.shares.span)
        else:
            before = self.layers
            with self.nested(_first_line(st.span)):
                body = self.scope(st.body, _Context(context.env, _plan_names(st.body, context.env),
                                                    context.calls), ("opaque", ""))
            layers = self.layers - before
        item = _build(S.Branch, _first_line(st.span), spans, name=context.names[id(st)],
                      source=st.source.name if st.source else None, body=body, shares=shares)
        context.branches[item.name] = item
        context.branch_layers[item.name] = layers
        return item

    def split(self, st: A.SplitStmt, context: _Context) -> S.ChannelSplit:
        source, written = split_source(st)
        if source is not None:
            self.check_split_source(source)
        args = _Args("split", written, context.env, _first_line(st.span))
        sizes = args.rest("a split size", _positive, "sizes")
        args.options(())
        outputs = [o.name for o in st.outputs]
        for output in st.outputs:
            _check_label(output, output.name)
        if len(sizes) == 1:
            if sizes[0] != len(outputs):
                raise SpecError(f"split {sizes[0]} makes {sizes[0]} parts but names "
                                f"{len(outputs)}", args.spans["sizes"], code="SK307",
                                hint="name one tensor per part: split 2 -> left, right")
            sizes = None
        elif not sizes:
            sizes = None
        return _build(S.ChannelSplit, args.spans[""], args.spans, name=context.names[id(st)],
                      outputs=outputs, sizes=sizes)

    def check_split_source(self, source: A.Label) -> None:
        """`split y 2 -> a, b` names the tensor it cuts, which must be the current one."""
        current = self.current_tensor()
        if current is None or current == source.name:
            return
        cut = (f"'{current}'" if current else
               "the output of the residual above it, which has no name")
        where = ("to the top of the scope" if source.name == "input" else
                 f"to just below the statement that makes '{source.name}'")
        raise SpecError(f"split names '{source.name}', but the tensor it cuts is {cut}",
                        source.span, code="SK307",
                        hint=f"a split cuts the current tensor and leaves it current: to split "
                        f"'{source.name}', move the split {where}")

    def current_tensor(self) -> str | None:
        """The name of the tensor a statement expanded now reads: the last item made in its scope
        (a residual's body reads what the residual reads), else `input`. "" for a residual's
        output, which has no name; None outside an expansion (check_block's statements)."""
        for kind, _, items in reversed(self.open):
            made = [item for item in items if not isinstance(item, (S.Branch, S.ChannelSplit))]
            if made:
                return "" if isinstance(made[-1], S.Residual) else made[-1].name
            if kind != "flat":
                return "input"
        return None


def split_source(st: A.SplitStmt) -> tuple[A.Label | None, list[A.Arg]]:
    """The tensor a split names, and the arguments of its sizes: `split y 2 -> a, b` names y.

    The grammar reads `y 2` as an option, as in `stride 2`; a split has no options, so a first
    argument written so names its tensor (lint.py reads the same)."""
    if not st.args or st.args[0].keyword is None:
        return None, st.args
    first = st.args[0]
    return (A.Label(first.keyword, first.keyword_span),
            [A.Arg(None, first.value, first.value.span), *st.args[1:]])


def _name_bracket_positionals(st: A.LayerStmt, where: str, keyword: ops.Keyword) -> list[A.Arg]:
    """The paper writes SK[2, 32, 16] for SK[M=2, G=32, r=16]: bracket positions have names."""
    if not st.options:
        return []
    names = keyword.brackets
    named, position = [], 0
    for arg in st.options:
        if arg.keyword is not None:
            named.append(arg)
            continue
        if position >= len(names):
            raise SpecError(f"{where}[...] takes at most {len(names)} unnamed values "
                            f"({', '.join(names) or 'none'})", arg.span, code="SK207",
                            hint=keyword.usage)
        named.append(A.Arg(names[position], arg.value, arg.span, arg.span))
        position += 1
    return named


# -- layers --------------------------------------------------------------------------------------


def _generic(expander, st, args: _Args, name, context):
    """A layer as its registry entry reads: its positionals in order, then its options."""
    keyword = ops.KEYWORDS[st.keyword]
    fields = {}
    for take in keyword.takes:
        value = args.take(take.what, _converter(take), take.field, required=take.required)
        if value is not None:
            fields[take.field] = value
    found = args.options(keyword.options)
    args.finish()
    return _build(keyword.model, args.spans[""], args.spans, name=name, **fields, **found,
                  **(keyword.fixed or {}))


def _selective(expander, st: A.LayerStmt, args: _Args, name, context):
    attention = st.keyword == "sk"
    for keyword in ("D", "dilation"):
        if keyword in args.keywords:
            raise SpecError(f"{args.where} has no option '{keyword}': each branch has its own "
                            "dilation", args.keywords[keyword][0].keyword_span, code="SK202",
                            hint="M=2 gives dilations 1 and 2; for others list the branches: "
                            "SK[r=16], 128: then one line each such as 3x3, G=32, D=3")
    found = args.options(SK_OPTIONS if attention else SUM_OPTIONS)
    out = args.take("its width C", _positive, "out_channels")
    args.finish()
    count = found.pop("branch_count", None)
    groups = found.pop("groups", S.SK_GROUPS)
    _check_branch_count(count if st.kernel_lines is None else len(st.kernel_lines),
                        args.spans.get("branch_count", args.span))
    # Every branch is a convolution of its own: they count toward the layer limit too.
    expander.count_layers(len(st.kernel_lines or ()) or count or 2, args.span)
    if st.kernel_lines is not None:
        if count is not None and count != len(st.kernel_lines):
            raise SpecError(f"M={count} but {len(st.kernel_lines)} branches are listed",
                            args.spans["branch_count"], code="SK203",
                            hint="drop M when the branches are listed")
        for option in ("branch_kernel", "branch_dilate"):
            if option in found:
                raise SpecError(f"{args.where} lists its branches, so '{option[7:]}' has "
                                "nothing to shape", args.spans[option], code="SK202",
                                hint="give each listed branch its own kernel and D, or drop "
                                "the list and write M")
        branches = [_branch_line(line, context.env, groups, args) for line in st.kernel_lines]
    else:
        # The paper's shorthand: M 3×3 branches with dilation 1 … M (K3, K5, K7 of Table 7);
        # `dilate no`: M alike (ResNeSt's radix); `kernel`: of another size.
        kernel, dilate = found.pop("branch_kernel", (3, 3)), found.pop("branch_dilate", True)
        spans = {"groups": args.spans.get("groups", args.span),
                 "kernel": args.spans.get("branch_kernel", args.span)}
        branches = [S.KernelBranch(kernel=kernel, dilation=m if dilate else 1,
                                   groups=groups).located(spans)
                    for m in range(1, (count or 2) + 1)]
    return _build(S.SelectiveKernel, args.spans[""], args.spans, name=name, out_channels=out,
                  branches=branches, attention=attention, **found)


def _check_branch_count(count: int | None, span: Span) -> None:
    if count is not None and count > MAX_BRANCHES:
        raise SpecError(f"{count:,} branches are over the limit of {MAX_BRANCHES}", span,
                        code="SK217", hint="an SK unit selects among a few kernels (the paper "
                        "uses M=2 or 3); write more units instead")


def _branch_line(line: list[A.Arg], env: Env, groups, parent: _Args) -> S.KernelBranch:
    first = line[0].span
    args = _Args("an SK branch", line, env, _join(first, line[-1].span))
    kernel = args.take("a kernel such as 3x3", _named(_kernel, "kernel"), "kernel")
    found = args.options(BRANCH_OPTIONS)
    args.finish()
    spans = dict(args.spans)
    if "groups" not in found:
        spans["groups"] = parent.spans.get("groups", args.span)
    return _build(S.KernelBranch, args.span, spans, kernel=kernel,
                  **{"groups": groups, **found})


def _pool(expander, st: A.LayerStmt, args: _Args, name, context):
    mode = "max" if st.keyword == "maxpool" else "avg"
    first = args.positional[0] if args.positional else None
    if st.keyword == "gap" or (first is not None and first.value == "global"):
        if first is not None and first.value == "global":
            args.take("global", lambda v, w: v, "kernel")
        args.finish()
        args.options(())
        return _build(S.GlobalPool, args.spans[""], args.spans, name=name, mode=mode)
    kernel = args.take("a window such as 3x3 (or global)", _named(_kernel, "window"), "kernel")
    found = args.options(ops.KEYWORDS[st.keyword].options)
    args.finish()
    found.setdefault("stride", kernel[0])
    return _build(S.Pool, args.spans[""], args.spans, name=name, mode=mode, kernel=kernel,
                  **found)


def _merge(expander, st: A.LayerStmt, args: _Args, name, context):
    # Tensor names are read as written: a parameter called `a` must not turn `add a, b` into 2.
    inputs = []
    for index, arg in enumerate(a for a in st.args if a.keyword is None):
        if not isinstance(arg.value, A.Name):
            raise SpecError(f"{st.keyword} takes tensor names, got {_show(_literal(arg.value))}",
                            arg.span, code="SK203", hint=f"write it as: {st.keyword} left, right")
        inputs.append(arg.value.id)
        args.spans[f"inputs.{index}"] = arg.span
    if inputs:
        args.spans["inputs"] = _join(args.spans["inputs.0"], args.spans[f"inputs.{len(inputs) - 1}"])
    args.taken = len(args.positional)
    args.options(())
    if len(inputs) < 2:
        raise SpecError(f"{st.keyword} combines two or more named tensors", args.span,
                        code="SK204", hint=ops.KEYWORDS[st.keyword].usage
                        or f"write it as: {st.keyword} left, right")
    model = ops.KEYWORDS[st.keyword].model or S.Merge  # add, concat, mul, select: Merge
    return _build(model, args.spans[""], args.spans, name=name, kind=st.keyword, inputs=inputs)


# One reader per way a keyword is written (ops.Reading): the op files say how, this reads it.
READERS = {ops.Reading.GENERIC: _generic, ops.Reading.KERNEL_BRANCHES: _selective,
           ops.Reading.WINDOW_OR_GLOBAL: _pool, ops.Reading.TENSOR_NAMES: _merge}
assert set(READERS) == set(ops.Reading), "a Reading without its reader in lang/expand.py"
LAYERS = {word: READERS[keyword.reading] for word, keyword in ops.KEYWORDS.items()}


def _build(model: type, span: Span, spans: dict[str, Span], **fields):
    """Construct a spec model, turning a validation failure into an error at the field's text."""
    try:
        item = model(**fields)
    except ValidationError as error:
        problem = error.errors()[0]
        field = str(problem["loc"][0]) if problem["loc"] else ""
        message = problem["msg"].removeprefix("Value error, ")
        raise SpecError(f"{field}: {message}" if field else message, spans.get(field, span),
                        code="SK203") from None
    return item.located({**spans, "": span})


def _first_line(span: Span) -> Span:
    if span.end_line == span.line:
        return span
    return Span(span.file, span.line, span.column, span.line, 10_000)


def _plain(value):
    return str(value) if isinstance(value, Symbol) else value


def _signature(definition: A.BlockDef) -> str:
    return ", ".join(f.name if f.default is None else f"{f.name}=…" for f in definition.formals)


def _known_blocks(program: Program) -> str:
    if not program.templates:
        return "define it with `block NAME(...):`, or import one with `use \"std/resnext.sk\"`"
    return f"the blocks defined here are: {', '.join(sorted(program.templates))}"


def expand(source: A.SourceFile, overrides: dict | None = None,
           allow_imports_outside: bool = False, cache: ExpansionCache | None = None) -> S.Network:
    """The network of a parsed file; `use` stays inside its folder and std/ unless allowed.
    `cache`: shared by the variants of one spec (ExpansionCache)."""
    return Expander(Program(source, overrides, allow_imports_outside, cache)).network()

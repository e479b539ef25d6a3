"""Lint: located warnings (SK7xx) on a spec that builds, but likely not as its writer meant.

    lint_file("my_net.sk")          # [SpecWarning, ...] in the order of the text; [] when clean
    lint_text(text, "<string>")     # the same for .sk text

    SK701  a `split` after a labelled layer cuts that layer's output without naming it
    SK702  a tensor made and never used: a branch no statement names, or an output that the
           next statement does not read (add, concat, mul and select read only the tensors
           they name) and that nothing names
    SK703  a `param` nothing reads: a value given for it changes nothing

The checks read the syntax tree of the spec and of the files it imports, but not std/, whose
blocks are skdsl's own. They read statements as written (both sides of an `if`, one copy of a
`for`'s body) and warn only where the flow of tensors is certain, so that a spec that says
what it means is never flagged. A spec that cannot be read is a SpecError, as for `load`.
Nothing here prints: the command line prints what these return. No torch here.
"""

from __future__ import annotations

import re
from dataclasses import fields, is_dataclass
from pathlib import Path

from .. import ops
from ..base.errors import Span, SpecWarning, source_line
from . import syntax as A
from .expand import STD_PREFIX, Program, parse_file, split_source
from .parser import parse_text
from .syntax import MAX_NESTING

IMPLICIT_SPLIT = "SK701"
UNUSED_TENSOR = "SK702"
UNUSED_PARAM = "SK703"


def lint_file(path: str | Path, allow_imports_outside: bool = False) -> list[SpecWarning]:
    """The warnings of a .sk file or zoo name, and of the files it imports (std/ aside)."""
    from .zoo import resolve

    return lint_source(parse_file(resolve(path)), allow_imports_outside)


def lint_text(text: str, file: str = "<string>",
              allow_imports_outside: bool = False) -> list[SpecWarning]:
    """The warnings of .sk text; `use` paths resolve against the current directory."""
    return lint_source(parse_text(text, file), allow_imports_outside)


def lint_source(source: A.SourceFile, allow_imports_outside: bool = False) -> list[SpecWarning]:
    """The warnings of a parsed file and of its imports, which are read as `load` reads them."""
    program = Program(source, None, allow_imports_outside)
    blocks = {name: template.definition for name, template in program.templates.items()}
    bodies = [block.body for block in blocks.values() if not block.file.startswith(STD_PREFIX)]
    bodies += [stage.body for stage in _stages(source)]
    found = _unused_params(source) + _scope_warnings(bodies, blocks)
    return sorted(found, key=lambda w: (w.span.file != source.path, w.span.file, w.span.line,
                                        w.span.column))


def _stages(source: A.SourceFile) -> list[A.StageDecl]:
    """The stages of the file's network, those of `for` tables once each."""
    stages, pending = [], [item for network in source.networks for item in network.stages]
    while pending:
        item = pending.pop(0)
        if isinstance(item, A.ForStmt):
            pending[:0] = item.body
        else:
            stages.append(item)
    return stages


# -- SK703: params -----------------------------------------------------------------------------


def _unused_params(source: A.SourceFile) -> list[SpecWarning]:
    """A file's params that nothing in the file reads (a file's params are its own: imports
    cannot read them). A param with a domain is left alone: it is a dimension of a design
    space, which the docs show declared before the network reads it (language.md, SK243)."""
    read = {node.id for node in _nodes([source.params, source.wheres, source.blocks,
                                        source.networks]) if isinstance(node, A.Name)}
    return [SpecWarning(UNUSED_PARAM, f"param '{param.name}' is never used", param.name_span,
                        hint="use it or remove it: a value given for it with {overrides} "
                        "changes nothing")
            for param in source.params if param.name not in read and param.domain is None]


def _nodes(root):
    """Every syntax node below `root`, without recursion: an expression may hold 50,000 terms.
    A `for`'s unrolled copies are skipped: its body is walked as written."""
    pending = [root]
    while pending:
        node = pending.pop()
        if isinstance(node, (list, tuple)):
            pending += node
        elif is_dataclass(node) and not isinstance(node, Span):
            yield node
            pending += [getattr(node, f.name) for f in fields(node) if f.name != "unrolled"]


# -- SK701, SK702: the tensors of a scope ---------------------------------------------------------


def _scope_warnings(bodies: list[list[A.Statement]],
                    blocks: dict[str, A.BlockDef]) -> list[SpecWarning]:
    """The warnings of these scopes and of the branches and shortcuts inside them; `blocks`:
    the templates their calls may name."""
    found, pending = [], [(body, 0) for body in bodies]
    while pending:
        body, depth = pending.pop()
        scope = _Scope(blocks)
        found += scope.warnings(body, depth)
        pending += [(inner, inner_depth) for inner, inner_depth in scope.inner
                    if inner_depth <= MAX_NESTING]  # deeper, expansion refuses it (SK119)
    return found


class _Tensor:
    """The current tensor: the statement that made it (None: the scope's input, or a tensor not
    known before expansion), and whether a statement read it as the current one."""

    def __init__(self, maker: A.LayerStmt | A.CallStmt | A.ResidualStmt | None = None):
        self.maker = maker
        self.read = False


class _Scope:
    """One scope (a stage's, block's, branch's or shortcut's body): its statements in order,
    with the tensor each one leaves current. A residual's body and an `if`'s or a `for`'s are
    part of the scope around them; a branch's and a shortcut's are scopes of their own."""

    def __init__(self, blocks: dict[str, A.BlockDef]):
        self.blocks = blocks
        self.found: list[SpecWarning] = []
        self.names: set[str] = set()  # the tensor names the scope's statements read
        self.dropped: list[tuple[_Tensor, A.LayerStmt]] = []  # an output, and the merge after it
        self.branches: list[A.BranchStmt] = []
        self.inner: list[tuple[list, int]] = []  # branch and shortcut bodies, with their depth

    def warnings(self, body: list[A.Statement], depth: int) -> list[SpecWarning]:
        self.flow(body, _Tensor(), depth).read = True  # the scope's output
        # Names are read anywhere in the scope: an output is unused only once all are known.
        unused = [_unused_output(tensor.maker, merge) for tensor, merge in self.dropped
                  if not tensor.read and not self.named(_base_name(tensor.maker))]
        unused += [_unused_branch(branch) for branch in self.branches
                   if not self.named(branch.name.name) and self.makes_feature_map(branch)]
        return self.found + unused

    def makes_feature_map(self, branch: A.BranchStmt) -> bool:
        """Whether a branch certainly ends in a layer other than an fc. One that ends in an fc
        is a head, such as Inception's auxiliary classifier, which a network may compute and
        leave unused (its parameters count); one whose end only expansion knows (an `if`, a
        `for`) is given the benefit of the doubt."""
        earlier = {b.name.name: b for b in self.branches}
        for _ in self.branches:  # `shares` runs the layers of an earlier branch
            if branch.shares is None or branch.shares.name not in earlier:
                break
            branch = earlier[branch.shares.name]
        body = branch.body
        for _ in range(MAX_NESTING):  # a call ends as its block's body ends
            made = [st for st in body if not isinstance(st, (A.BranchStmt, A.SplitStmt))]
            last = made[-1] if made else None
            if not (isinstance(last, A.CallStmt) and last.name in self.blocks):
                return isinstance(last, A.ResidualStmt) or (
                    isinstance(last, A.LayerStmt) and last.keyword != "fc")
            body = self.blocks[last.name].body
        return False

    def named(self, base: str | None) -> bool:
        """Whether a statement reads the tensor named `base`, or a numbered one (`unit2`: a label
        used twice is numbered)."""
        return base is not None and any(
            name == base or (name.startswith(base) and name[len(base):].isdigit())
            for name in self.names)

    def flow(self, statements: list[A.Statement], current: _Tensor, depth: int) -> _Tensor:
        """The tensor current after `statements`, run on `current`."""
        if depth > MAX_NESTING:  # expansion refuses it (SK119): nothing is known for certain
            current.read = True
            return _Tensor()
        for st in statements:
            current = self.step(st, current, depth)
        return current

    def step(self, st: A.Statement, current: _Tensor, depth: int) -> _Tensor:
        if isinstance(st, A.LayerStmt):
            self.names |= _names_in([st.args, st.options, st.kernel_lines])
            if ops.KEYWORDS[st.keyword].reading is ops.Reading.TENSOR_NAMES:
                if current.maker is not None:
                    self.dropped.append((current, st))  # unless named: known at the end
            else:
                current.read = True
            return _Tensor(st)
        if isinstance(st, A.CallStmt):
            self.names |= _names_in(st.args)
            current.read = True
            return _Tensor(st)
        if isinstance(st, A.SplitStmt):
            source, _ = split_source(st)
            if source is not None:
                self.names.add(source.name)
            elif _labelled(current.maker):
                self.found.append(_implicit_split(st, current.maker))
            current.read = True
            return current
        if isinstance(st, A.BranchStmt):
            self.branch(st, current, depth)
            return current
        if isinstance(st, A.ResidualStmt):
            current.read = True  # by its shortcut
            body = [s for s in st.body if not isinstance(s, A.ShortcutStmt)]
            self.inner += [(s.body, depth + 1) for s in st.body if isinstance(s, A.ShortcutStmt)]
            self.flow(body, current, depth + 1).read = True  # by its add
            return _Tensor(st)
        if isinstance(st, A.IfStmt):
            return self.either(st, current, depth)
        if isinstance(st, A.ForStmt):
            end = self.flow(st.body, current, depth + 1)
            if end is current:
                return current
            end.read = True  # the next copy of the body may read it: not known here
            return _Tensor()
        self.inner.append((st.body, depth + 1))  # a shortcut out of place: expansion says so
        return current

    def branch(self, st: A.BranchStmt, current: _Tensor, depth: int) -> None:
        if st.source is None:
            current.read = True
        else:
            self.names.add(st.source.name)
        if st.shares is None:
            self.inner.append((st.body, depth + 1))
        else:
            self.names.add(st.shares.name)  # its layers are read: not a branch left unused
        self.branches.append(st)

    def either(self, st: A.IfStmt, current: _Tensor, depth: int) -> _Tensor:
        """After an `if`: the current tensor, when neither side makes one; else one of the two
        sides' outputs, which only expansion knows (each is taken as read)."""
        sides = [self.flow(st.body, current, depth + 1), self.flow(st.orelse, current, depth + 1)]
        if all(side is current for side in sides):
            return current
        for side in sides:
            side.read = True
        return _Tensor()


def _names_in(node) -> set[str]:
    """The names written in arguments: a merge's tensors, `upsample to`'s, and values (a value
    is no tensor, but taking it for one only keeps a warning back)."""
    return {found.id for found in _nodes(node) if isinstance(found, A.Name)}


def _labelled(maker) -> bool:
    return isinstance(maker, (A.LayerStmt, A.CallStmt)) and maker.label is not None


def _base_name(maker) -> str | None:
    """The name a maker's output goes by (before numbering); None for a residual's, which has
    none."""
    if isinstance(maker, (A.LayerStmt, A.CallStmt)) and maker.label is not None:
        return maker.label.name
    if isinstance(maker, A.LayerStmt):
        return ops.KEYWORDS[maker.keyword].base_name
    return "block" if isinstance(maker, A.CallStmt) else None


# -- the warnings' words ---------------------------------------------------------------------------


def _implicit_split(split: A.SplitStmt, maker: A.LayerStmt | A.CallStmt) -> SpecWarning:
    name = maker.label.name
    what = "block call" if isinstance(maker, A.CallStmt) else "layer"
    written = " ".join(filter(None, ["split", name, _sizes_text(split), "->",
                                     ", ".join(o.name for o in split.outputs)]))
    return SpecWarning(
        IMPLICIT_SPLIT, f"this split cuts '{name}', the output of the labelled {what} above it",
        _word_span(split.span, "split"),
        notes=["a split cuts the current tensor: the output of the statement just above it, "
               "not the scope's input nor a tensor named earlier"],
        hint=f"if '{name}' is meant, name it: `{written}`; to cut "
        "another tensor, move the split to just below the statement that makes it (to the top "
        "of the scope for input)")


def _sizes_text(split: A.SplitStmt) -> str:
    """The sizes as written (`16, 48`), or the count of the outputs when none are."""
    if not split.args:
        return str(len(split.outputs))
    first, last = split.args[0].span, split.args[-1].span
    line = source_line(first.file, first.line) if first.line == last.end_line else None
    return line[first.column - 1:last.end_column - 1] if line else str(len(split.outputs))


def _unused_output(maker, merge: A.LayerStmt) -> SpecWarning:
    if _labelled(maker):
        subject, span = f"'{maker.label.name}'", maker.label.span
        hint = (f"name it where it is meant to go (such as `{merge.keyword} {maker.label.name}, "
                f"…`), or remove it")
    elif isinstance(maker, A.ResidualStmt):  # it cannot be labelled
        subject, span = "this residual", _word_span(maker.span, "residual")
        hint = ("a residual's output goes on only as the current tensor: remove the residual, "
                "or read its output in the statement after it")
    else:
        subject, span = ((f"this {maker.keyword_text}", maker.keyword_span)
                         if isinstance(maker, A.LayerStmt) else
                         (f"this call of {maker.name}", maker.name_span))
        hint = "label it (`y = …`) and name it where it is meant to go, or remove it"
    return SpecWarning(UNUSED_TENSOR, f"the output of {subject} is never used", span,
                       notes=[f"the `{merge.keyword_text}` on line {merge.span.line} reads only "
                              "the tensors it names, and no statement names this one"],
                       hint=hint)


def _unused_branch(branch: A.BranchStmt) -> SpecWarning:
    name = branch.name.name
    return SpecWarning(UNUSED_TENSOR, f"branch '{name}' is never used", branch.name.span,
                       notes=["a branch's output goes on only by its name, and no statement of "
                              "its scope names it"],
                       hint=f"name it where it is meant to go (such as `concat input, {name}`), "
                       "or remove the branch")


def _word_span(span: Span, word: str) -> Span:
    """Where `word` is first written in `span`'s first line (a keyword after a label), or the
    start of the span when the source is not at hand."""
    line = source_line(span.file, span.line) or ""
    found = re.compile(rf"\b{word}\b").search(line, span.column - 1)
    start = found.start() + 1 if found else span.column
    return Span(span.file, span.line, start, span.line, start + len(word))


__all__ = ["lint_file", "lint_text", "lint_source", "IMPLICIT_SPLIT", "UNUSED_TENSOR",
           "UNUSED_PARAM"]

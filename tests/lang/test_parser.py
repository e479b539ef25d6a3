"""Parser: the syntax of .sk files, source spans, and syntax errors that say what was expected."""

import pytest

from skdsl.lang import syntax as A
from skdsl.base.errors import SpecError
from skdsl.lang.parser import parse_text, read_source


def parse(text):
    return parse_text(text, "t.sk")


def error_of(text) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse(text)
    return caught.value


def test_table_1_column_parses_with_spans():
    tree = parse('use "std/resnext.sk"\n# comment\nnetwork sknet50:  # trailing\n'
                 "    input 3x224x224\n    classes 1000\n\n"
                 "    stage conv1: conv 7x7, 64, stride 2\n"
                 "    stage conv3 x4: sk_unit(256, 512, stride=2)\n")
    network = tree.networks[0]
    assert tree.uses[0].path == "std/resnext.sk"
    assert network.input.values == (3, 224, 224)
    conv = network.stages[0].body[0]
    assert isinstance(conv, A.LayerStmt) and conv.keyword == "conv"
    assert [a.keyword for a in conv.args] == [None, None, "stride"]
    assert (conv.args[0].value.span.line, conv.args[0].value.span.column) == (7, 23)
    assert network.stages[1].repeat == 4


def test_sk_options_branch_list_and_labels():
    tree = parse("network n:\n    input 3x8x8\n    stage s:\n"
                 "        attention = SK[M=2, G=32, r=16], 128, stride 2\n"
                 "        SK[r=16], 64:\n            3x3, G=32\n            5×5, G=64, D=1\n")
    first, second = tree.networks[0].stages[0].body
    assert first.label.name == "attention" and first.keyword_text == "SK"
    assert [o.keyword for o in first.options] == ["M", "G", "r"]
    assert [line[0].value.values for line in second.kernel_lines] == [(3, 3), (5, 5)]


def test_blocks_params_arithmetic_and_repeats():
    tree = parse("param M = 2\nblock unit(width, out=2*width, stride=1):\n"
                 "    conv 1x1, (width + 1) // 2 * 2\n"
                 "network n:\n    input 3x8x8\n    stage s: unit(8) x3\n")
    assert tree.params[0].name == "M"
    block = tree.blocks[0]
    assert [f.name for f in block.formals] == ["width", "out", "stride"]
    expr = block.body[0].args[1].value
    assert isinstance(expr, A.Binary) and expr.op == "*"
    call = tree.networks[0].stages[0].body[0]
    assert (call.name, call.repeat) == ("unit", 3)


def test_general_constructs():
    tree = parse("network n:\n    input 3x8x8\n    stage s:\n        split 2 -> left, right\n"
                 "        branch right from right:\n            dwconv 3x3\n"
                 "        concat left, right\n        residual act none:\n"
                 "            conv 3x3, 8\n            shortcut:\n                conv 1x1, 8\n")
    split, branch, concat, residual = tree.networks[0].stages[0].body
    assert [o.name for o in split.outputs] == ["left", "right"]
    assert (branch.name.name, branch.source.name) == ("right", "right")
    assert concat.keyword == "concat"
    assert isinstance(residual.body[1], A.ShortcutStmt)


def test_missing_final_newline_and_crlf_are_fine():
    parse("network n:\r\n    input 3x8x8\r\n    stage s: conv 3x3, 8")


@pytest.mark.parametrize("text, code, line, column", [
    ("network n:\n    input 3x8x8\n    stage s: conv 3x3 8\n", "SK101", 3, 23),
    ("network n:\n    input 3x8x8\n    stage s: conv 3x3, 8 $\n", "SK102", 3, 26),
    ("network n:\n    input 3x8x8\n    stage s: conv 3x3, (8\n", "SK103", 3, 26),
    ("network n:\n    input 3x8x8\n    stage s:\n        bn\n      bn\n", "SK104", 5, 1),
    ("network n:\n    input 3x8x8\n    stage s: cnv 3x3, 8\n", "SK201", 3, 14),
    ("network n:\n  input 3x8x8\n    stage s: bn\n", "SK101", 3, 1),
])
def test_syntax_errors_are_located(text, code, line, column):
    error = error_of(text)
    assert (error.code, error.span.line, error.span.column) == (code, line, column)
    assert error.span.file == "t.sk"


def test_syntax_error_lists_expected_tokens_and_a_hint():
    error = error_of("network n:\n    input 3x8x8\n    stage s: SK[M=2, G=32 r=16], 64\n")
    assert error.expected == ["','", "']'"]
    assert error.hint == "separate options with commas: SK[M=2, G=32, r=16]"
    assert error.render() == (
        "t.sk:3:27: error SK101: unexpected 'r'\n"
        "  |\n"
        "3 |     stage s: SK[M=2, G=32 r=16], 64\n"
        "  |                           ^\n"
        "  = expected: ',' or ']'\n"
        "  = hint: separate options with commas: SK[M=2, G=32, r=16]")


def test_unknown_layer_suggests_the_closest():
    error = error_of("network n:\n    input 3x8x8\n    stage s:\n        maxpol 3x3\n")
    assert error.message == "unknown layer 'maxpol'"
    assert "'maxpool'" in error.hint


def test_read_source_refuses_what_is_not_a_spec(tmp_path):
    (tmp_path / "dir.sk").mkdir()
    (tmp_path / "binary.sk").write_bytes(b"network\0")
    (tmp_path / "latin.sk").write_bytes("# r\xe9duite\n".encode("latin-1"))
    codes = {}
    for name in ("dir.sk", "binary.sk", "latin.sk", "missing.sk"):
        with pytest.raises(SpecError) as caught:
            read_source(tmp_path / name)
        codes[name] = caught.value.code
    assert codes == {"dir.sk": "SK111", "binary.sk": "SK112", "latin.sk": "SK112",
                     "missing.sk": "SK110"}


def test_missing_file_suggests_a_neighbour(tmp_path):
    (tmp_path / "sknet50.sk").write_text("")
    with pytest.raises(SpecError) as caught:
        read_source(tmp_path / "sknet05.sk")
    assert caught.value.hint == "did you mean 'sknet50.sk'?"


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.sk"
    path.write_bytes("\ufeffnetwork n:\n".encode("utf-8"))
    assert read_source(path) == "network n:\n"


# -- the language's limits: each exceeded limit is a located error, never a crash -------------

NET = "network n:\n    input 3x32x32\n    stage s: conv 3x3, "


@pytest.mark.parametrize("text, code, message", [
    (NET + "9" * 5000 + "\n", "SK213",
     "the integer 99999999999999999999… (5,000 digits) is too large"),
    (NET + "9223372036854775808\n", "SK213", "is too large (at most 9,223,372,036,854,775,807)"),
    (NET + "8, stride 1e309\n", "SK213", "the number 1e309 is too large to represent"),
    (NET + "8, stride " + "9" * 400 + "G\n", "SK213", "is too large to represent"),
    (NET + "8, stride " + "9" * 5000 + "x3\n", "SK213", "is too large"),
    ("network n:\n    input 3x32x32\n    stage s: u(8) x1000000000000\n", "SK214",
     "repeat count 1,000,000,000,000 is over the limit of 10,000"),
    (NET + "(" * 65 + "8" + ")" * 65 + "\n", "SK119", "more than 64 levels of brackets"),
    (NET + "8" + ", 1" * 4000 + "\n", "SK118", "line 3 is 12,024 characters long"),
    ("network n:\n    input 3x32x32\n    input 3x8x8\n    stage s: bn\n", "SK205",
     "`input` is given twice"),
    ("network n:\n    classes 10\n    input 3x8x8\n    classes 5\n    stage s: bn\n", "SK205",
     "`classes` is given twice"),
    ("network n:\n    paper params=1M\n    paper gflops=1\n    stage s: bn\n", "SK205",
     "`paper` is given twice"),
])
def test_limits_and_repeated_headers_are_located_errors(text, code, message):
    error = error_of(text)
    assert error.code == code and message in error.message and error.span is not None


def test_deep_indentation_meets_the_nesting_limit():
    lines = "".join(f"{'    ' * (i + 2)}residual:\n" for i in range(300))
    error = error_of("network n:\n    input 3x8x8\n    stage s:\n" + lines)
    assert error.code == "SK119" and error.span.line == 66  # the line that opens level 65


def test_zeros_before_an_integer_do_not_make_it_large():
    tree = parse(NET + "0" * 5000 + "8\n")
    assert tree.networks[0].stages[0].body[0].args[1].value.value == 8


def test_a_20000_term_sum_parses_without_recursion():
    tree = parse("param p = (" + "\n    + ".join(["1"] * 20_000) + ")\n")
    assert tree.params[0].value.terms == 20_000


def test_over_long_file_text_is_refused_before_parsing():
    error = error_of("# " + "x" * 9_000 + "\n" * 200_000)
    assert error.code == "SK116" and "at most 200,000" in error.message


def test_only_regular_files_are_read(tmp_path):
    import os

    fifo = tmp_path / "pipe.sk"
    os.mkfifo(fifo)  # opening it would block until a writer came
    for path, code, words in [(fifo, "SK115", "is a pipe (FIFO), not a spec file"),
                              ("/dev/zero", "SK115", "is a character device"),
                              (tmp_path, "SK111", "is a directory")]:
        with pytest.raises(SpecError) as caught:
            read_source(path)
        assert caught.value.code == code and words in caught.value.message


def test_a_file_over_the_size_cap_is_not_read(tmp_path):
    from skdsl.lang.syntax import MAX_FILE_BYTES

    path = tmp_path / "big.sk"
    path.write_text("#" * 200_001)
    with pytest.raises(SpecError) as caught:
        read_source(path, limit=MAX_FILE_BYTES)
    error = caught.value
    assert error.code == "SK116" and "200,001 bytes (at most 200,000)" in error.message
    assert len(read_source(path)) == 200_001  # a JSON spec may be larger than a .sk file


# -- expressions and control (issue 11) --------------------------------------------------------


def test_functions_conditions_repeat_names_and_tables_parse_to_their_nodes():
    tree = parse_text("block b(c, s=1, n=2):\n"
                      "    residual act none if s == 1 and not c < 8 or c >= 100:\n"
                      "        conv 1x1, make_divisible(c * 1.5, 8)\n"
                      "    if s != 1:\n        conv 1x1, int(c)\n    else:\n        gap\n"
                      "    b2(c) x n\n"
                      "    for w, k in (8, 1), (16, 2):\n        conv 3x3, w, stride k\n")
    residual, branch, call, loop = tree.blocks[0].body
    condition = residual.condition
    assert isinstance(condition, A.Logic) and condition.op == "or"
    assert condition.left.op == "and" and condition.left.right.op == "not"
    assert residual.body[0].args[1].value.name == "make_divisible"
    assert [type(s).__name__ for s in branch.body + branch.orelse] == ["LayerStmt", "LayerStmt"]
    assert call.repeat == A.Name("n", call.repeat.span) and call.repeat_span.column == 11
    assert [n.name for n in loop.names] == ["w", "k"] and len(loop.rows) == 2


@pytest.mark.parametrize("text, hint", [
    ("block b(s):\n    if s 1:\n        gap\n", "a condition compares values"),
    ("block b(s):\n    for c in 1, 2:\n        gap\n", "each row of a `for` table"),
])
def test_control_syntax_mistakes_get_catalogue_hints(text, hint):
    with pytest.raises(SpecError) as error:
        parse_text(text)
    assert error.value.code == "SK101" and error.value.hint.startswith(hint)


CACHED = """param width = 16
block unit(c):
    for k, s in (3, 1), (5, 1):
        conv k, c, stride s
network cached:
    input 3x16x16
    classes 10
    stage s: unit(width) x2
    stage head:
        gap
        fc classes
"""


def test_a_text_parsed_again_is_the_cached_tree_and_expands_afresh():
    """parse_text caches trees; expansion must not leave anything in them that a later
    expansion (another --set, a `for` unrolled again) would read."""
    import skdsl
    from skdsl.lang.parser import clear_parse_cache

    clear_parse_cache()
    first = parse_text(CACHED, "cached.sk")
    assert parse_text(CACHED, "cached.sk") is first
    assert parse_text(CACHED + "\n", "cached.sk") is not first  # another text, another tree
    assert parse_text(CACHED, "other.sk") is not first         # spans name their file
    counts = [skdsl.analyze(skdsl.parse(CACHED, overrides=overrides)).params
              for overrides in ({}, {"width": 32}, {})]
    assert counts[0] == counts[2] != counts[1]
    clear_parse_cache()
    assert parse_text(CACHED, "cached.sk") is not first


def test_an_error_is_raised_again_not_cached():
    for _ in range(2):
        with pytest.raises(SpecError) as error:
            parse_text("network n:\n    input 3x\n", "bad.sk")
        assert error.value.code == "SK101"


# -- spans: the transformer runs inside Lark's parse, located without propagate_positions ---


class _LocatedByLark:
    """parser._ToSyntax's callbacks over the tree Lark builds with propagate_positions=True,
    each node located by Lark's own meta: the reference the in-parse spans must equal."""

    def __init__(self):
        from lark import Lark

        from skdsl.lang import parser as P

        class Reference(P._ToSyntax):
            def _call_userfunc(self, tree, new_children=None):
                self.meta = tree.meta
                return super()._call_userfunc(tree, new_children)

            def _span(self, children, opener=None):
                meta = self.meta
                return P.Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

            def _first_line(self, children, opener):
                return P.Span(self.file, self.meta.line, self.meta.column, self.meta.line, 10_000)

            def paren(self, children):
                return children[0]

        self.indenter = P._Indenter()
        self.lark = Lark(P.grammar(), parser="lalr", postlex=self.indenter,
                         propagate_positions=True, maybe_placeholders=True)
        self.transformer = Reference(self.indenter)

    def parse(self, text: str, file: str) -> A.SourceFile:
        self.indenter.file = file
        self.transformer.begin(file)
        return self.transformer.transform(self.lark.parse(text))


def _flat(node) -> list:
    """Every node, field and span of a syntax tree, in order (iterative: deep sums)."""
    import dataclasses

    out, stack = [], [node]
    while stack:
        item = stack.pop()
        if dataclasses.is_dataclass(item):
            out.append(type(item).__name__)
            stack.extend(reversed([getattr(item, f.name) for f in dataclasses.fields(item)]))
        elif isinstance(item, (list, tuple)):
            out.append(len(item))
            stack.extend(reversed(item))
        else:
            out.append(repr(item))
    return out


SPAN_CASES = [
    "param p = ((1 + 2)) * (3 - (4))\nparam q = f((1), 2) - 1\n",
    "block b(s, c=(2 * 3)):\n    if not not s == (1) and c > 2 or (s) < 0:\n        gap\n"
    "    else:\n        x = split 2 -> u, v\n        split (2) -> y, z\n"
    "    residual if s == 1:\n        conv 3x3, (c), stride (s)\n",
    "network n:\n    input 3x8x8\n    classes (10)\n    paper params=1M\n"
    "    for name, c in ((a), (2 + 1)), (b, 4):\n        stage name: conv 3x3, c\n",
]


def test_spans_are_those_of_larks_propagate_positions():
    from skdsl.fuzz import spec as fuzz

    reference = _LocatedByLark()
    texts = [text for _, text in fuzz.seed_texts()] + SPAN_CASES
    assert len(texts) > 40  # every shipped spec and the standard library
    for text in texts:
        text = text if text.endswith("\n") else text + "\n"
        assert _flat(parse_text(text, "s.sk")) == _flat(reference.parse(text, "s.sk")), text


def test_spans_of_random_specs_are_those_of_larks_propagate_positions():
    from hypothesis import given, settings

    from skdsl.testing import specs

    reference = _LocatedByLark()

    @settings(max_examples=60, deadline=None)
    @given(specs())
    def check(text):
        assert _flat(parse_text(text, "r.sk")) == _flat(reference.parse(text, "r.sk"))

    check()


def test_the_first_mistake_in_the_file_is_the_one_reported():
    """Literals are checked as they are read, so a number too large on line 2 is reported
    before a syntax error further down (once, the whole file was parsed first)."""
    error = error_of("network n:\n    classes 99999999999999999999\n    stage s: conv 3x3 64\n")
    assert (error.code, error.span.line) == ("SK213", 2)
    error = error_of("network n:\n    stage s: conv 3x3 64\n    classes 99999999999999999999\n")
    assert (error.code, error.span.line) == ("SK101", 2)


def test_blocks_closed_at_the_end_of_the_file_get_a_position_from_any_lark(monkeypatch):
    """Lark before 1.3 closes the blocks still open at the end with position-less _DEDENTs;
    an error there (`conv 3x3, (8` as the last line) must still be located."""
    from lark import Token
    from lark.indenter import Indenter

    from skdsl.lang import parser as P

    def lark_1_2_process(self, stream):
        yield from stream
        yield Token("_DEDENT", "")

    monkeypatch.setattr(Indenter, "_process", lark_1_2_process)
    indenter = P._Indenter()
    indenter.emitted, indenter.paren_level, indenter.indent_level = [], 0, [0]
    last = Token("_NL", "\n", start_pos=30, line=3, column=26, end_line=4, end_column=1,
                 end_pos=31)
    closing = list(indenter._process(iter([last])))[-1]
    assert closing.type == "_DEDENT"
    assert (closing.line, closing.column, closing.end_line, closing.end_column) == (3, 26, 4, 1)


def test_no_transformer_helper_is_taken_for_an_inlined_rule():
    """Lark calls any _ToSyntax attribute named like a rule; a `_rule` is inlined into its
    parent and must reach it as a tree (a helper once called `_value` broke every option)."""
    from skdsl.lang import parser as P

    inlined = {rule.origin.name for rule in P._lark().rules
               if str(rule.origin.name).startswith("_")}
    assert inlined and not {name for name in inlined if hasattr(P._ToSyntax, str(name))}

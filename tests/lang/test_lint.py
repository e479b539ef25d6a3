"""skdsl/lang/lint.py: warnings (SK7xx) on specs that build but likely not as meant; the explicit
source of a split; the unknown-layer error of the parser."""

import re
from pathlib import Path

import pytest

import skdsl
from skdsl import ops
from skdsl.base.errors import SpecError, SpecWarning
from test_docs import examples as doc_examples  # the docs' ```sk blocks, fragments wrapped

ROOT = Path(__file__).resolve().parents[2]
HEAD = "network n:\n    input 16x8x8\n    classes 10\n    stage s:\n"


def lint(body: str, before: str = "") -> list[SpecWarning]:
    """The warnings of a one-stage network whose stage body is `body` (lines indented 8)."""
    return skdsl.lint_text(before + HEAD + body, "t.sk")


def where(warning: SpecWarning) -> tuple:
    span = warning.span
    return warning.code, span.file, span.line, span.column, span.end_column


def build(body: str, before: str = "") -> skdsl.Network:
    return skdsl.parse(before + HEAD + body, "t.sk")


# -- SK701: a split that cuts a labelled output without naming it ----------------------------------

IMPLICIT = "        y = conv 1x1, 16\n        split 2 -> a, b\n        concat b, a\n"


def test_a_split_after_a_labelled_layer_warns_at_the_split():
    [warning] = lint(IMPLICIT)
    assert where(warning) == ("SK701", "t.sk", 6, 9, 14)
    assert warning.message == "this split cuts 'y', the output of the labelled layer above it"
    assert warning.notes == ("a split cuts the current tensor: the output of the statement just "
                             "above it, not the scope's input nor a tensor named earlier",)
    assert warning.hint.startswith("if 'y' is meant, name it: `split y 2 -> a, b`; ")
    assert warning.render().splitlines()[:4] == [
        "t.sk:6:9: warning SK701: this split cuts 'y', the output of the labelled layer above it",
        "  |",
        "6 |         split 2 -> a, b",
        "  |         ^^^^^"]


def test_naming_the_tensor_silences_it_and_builds_the_same_network():
    named = IMPLICIT.replace("split 2", "split y 2")
    assert lint(named) == []
    assert build(named) == build(IMPLICIT)
    sizes = "        y = conv 1x1, 16\n        split y 4, 12 -> a, b\n        concat b, a\n"
    assert lint(sizes) == [] and build(sizes).stages[0].body[1].sizes == [4, 12]


@pytest.mark.parametrize("body, position, words", [
    # a labelled split: the caret is under `split`, and the hint keeps the sizes as written
    ("        y = conv 1x1, 16\n        parts = split 4, 12 -> a, b\n        concat b, a\n",
     (8, 17, 22), "`split y 4, 12 -> a, b`"),
    # the first statement of a residual's body reads what the residual reads
    ("        y = conv 1x1, 16\n        residual:\n            split 2 -> a, b\n"
     "            concat b, a\n", (9, 13, 18), "'y'"),
    # a labelled block call
    ("        t = pair()\n        split -> a, b\n        concat b, a\n", (8, 9, 14),
     "`split t 2 -> a, b`"),
])
def test_the_split_warning_follows_the_current_tensor(body, position, words):
    [warning] = lint(body, "block pair():\n    conv 1x1, 16\n")
    assert where(warning)[0] == "SK701" and where(warning)[2:] == position
    assert words in warning.message + warning.hint


def test_an_if_side_sees_the_tensor_above_the_if():
    text = ("block u(c):\n    y = conv 1x1, c\n    if c == 16:\n        split 2 -> a, b\n"
            "        concat b, a\n\n" + HEAD + "        u(16)\n")
    [warning] = skdsl.lint_text(text, "t.sk")
    assert where(warning) == ("SK701", "t.sk", 4, 9, 14)


@pytest.mark.parametrize("body", [
    "        conv 1x1, 16\n        split 2 -> a, b\n        concat b, a\n",  # unlabelled
    "        split 2 -> a, b\n        y = concat b, a\n",  # the scope's input
    "        y = conv 1x1, 16\n        branch z: conv 1x1, 16\n        split y 2 -> a, b\n"
    "        concat a, b, z\n",  # named, after a branch, which leaves y current
])
def test_no_split_warning_where_the_split_says_what_it_cuts(body):
    assert lint(body) == []


# -- the explicit source of a split (SK307 when it is not the current tensor) ----------------------


@pytest.mark.parametrize("body, message, hint", [
    ("        conv 1x1, 16\n        split input 2 -> a, b\n        concat a, b\n",
     "split names 'input', but the tensor it cuts is 'conv'",
     "move the split to the top of the scope"),
    ("        y = conv 1x1, 16\n        z = conv 1x1, 16\n        split y 2 -> a, b\n"
     "        concat a, b\n", "split names 'y', but the tensor it cuts is 'z'",
     "move the split to just below the statement that makes 'y'"),
    ("        y = conv 1x1, 16\n        residual:\n            conv 3x3, 16\n"
     "        split y 2 -> a, b\n        concat a, b\n",
     "split names 'y', but the tensor it cuts is the output of the residual above it, which has "
     "no name", "to split 'y'"),
])
def test_a_split_can_name_only_the_tensor_it_cuts(body, message, hint):
    with pytest.raises(SpecError) as caught:
        build(body)
    error = caught.value
    assert (error.code, error.message) == ("SK307", message) and hint in error.hint
    assert error.span.line == 4 + body[:body.index(" split ")].count("\n") + 1
    assert error.span.column == 15


def test_the_source_of_a_split_is_checked_where_the_scope_is_known():
    # top of a stage, of a block and of a branch; a block no network calls is not checked for it
    text = ("block b():\n    split input 2 -> p, q\n    concat q, p\n"
            "block unused():\n    conv 1x1, 8\n    split other 2 -> p, q\n    concat q, p\n"
            + HEAD + "        split input 2 -> a, b\n        b()\n"
            "        branch c:\n            split input 2 -> d, e\n            concat e, d\n"
            "        concat a, b, c\n")
    assert [s.kind for s in skdsl.parse(text).stages[0].body] == ["split", "block", "branch",
                                                                  "concat"]


# -- SK702: a tensor made and never used -----------------------------------------------------------


@pytest.mark.parametrize("body, position, message, note", [
    ("        branch b: conv 1x1, 16\n        conv 1x1, 16\n", (5, 16, 17),
     "branch 'b' is never used", "a branch's output goes on only by its name"),
    ("        y = conv 1x1, 16\n        z = conv 3x3, 16\n        add input, y\n", (6, 9, 10),
     "the output of 'z' is never used", "the `add` on line 7 reads only the tensors it names"),
    ("        conv 1x1, 16\n        add input, input\n", (5, 9, 13),
     "the output of this conv is never used", "the `add` on line 6"),
    ("        branch b: conv 1x1, 16\n        residual:\n            conv 3x3, 16\n"
     "        mul input, b\n", (6, 9, 17), "the output of this residual is never used", "`mul`"),
])
def test_a_tensor_nothing_reads_warns_where_it_is_made(body, position, message, note):
    [warning] = lint(body)
    assert where(warning)[0] == "SK702" and where(warning)[2:] == position
    assert warning.message == message and note in warning.notes[0]


@pytest.mark.parametrize("body", [
    "        branch b: conv 1x1, 16\n        add input, b\n",  # read by name
    "        y = conv 1x1, 16\n        z = conv 3x3, 16\n        add z, y\n",
    # the branch reads the conv's output
    "        conv 1x1, 16\n        branch b: conv 1x1, 16\n        add input, b\n",
    "        branch b: conv 1x1, 16\n        branch c from b: gap\n        mul input, c\n",
    "        branch a: gap\n        branch m from input shares a\n        add a, m\n",
    "        branch aux:\n            gap\n            fc 10\n        conv 1x1, 16\n",  # a head
    "        branch aux: head()\n        conv 1x1, 16\n",  # a head, in a block
    "        u = pair() x2\n        add input, u2\n",  # a numbered label
])
def test_no_unused_warning_for_a_tensor_that_is_read_or_a_head(body):
    assert lint(body, "block head():\n    gap\n    fc 10\nblock pair():\n    conv 1x1, 16\n") == []


def test_a_branch_that_ends_in_a_block_of_convolutions_is_unused():
    [warning] = lint("        branch b: pair()\n        conv 1x1, 16\n",
                     "block pair():\n    conv 1x1, 16\n")
    assert warning.message == "branch 'b' is never used"


def test_the_side_an_if_takes_is_left_to_expansion():
    text = ("block u(c):\n    if c == 16:\n        y = conv 1x1, c\n    else:\n"
            "        y = conv 3x3, c\n    add input, input\n\n" + HEAD + "        u(16)\n")
    assert skdsl.lint_text(text, "t.sk") == []


# -- SK703: a param nothing reads ------------------------------------------------------------------


def test_a_param_nothing_reads_warns_at_its_name():
    before = ("param unused = 3\nparam depth = 2\nparam base = 8\nparam wide = base * 2\n"
              "param act_ = relu\nparam ranged = 2 in {1, 2}\nparam gate = 1\nwhere gate > 0\n"
              "block pair(c, k=base):\n    conv 1x1, c, act act_\n")
    warnings = lint("        if wide > 0:\n            pair(16) x depth\n", before)
    assert [(w.code, w.span.line, w.span.column, w.message) for w in warnings] == [
        ("SK703", 1, 7, "param 'unused' is never used")]
    assert warnings[0].hint == ("use it or remove it: a value given for it with overrides "
                                "changes nothing")


# -- the API, imports, order -----------------------------------------------------------------------


def test_lint_reads_a_file_and_what_it_imports_but_not_std(tmp_path):
    (tmp_path / "blocks.sk").write_text("block unit(c):\n    branch b: conv 1x1, c\n"
                                        "    conv 1x1, c\n")
    (tmp_path / "net.sk").write_text('use "blocks.sk"\nuse "std/dpn.sk"\nparam p = 1\n' + HEAD +
                                     "        unit(16)\n")
    warnings = skdsl.lint(tmp_path / "net.sk")
    assert [(Path(w.span.file).name, w.code) for w in warnings] == [("net.sk", "SK703"),
                                                                     ("blocks.sk", "SK702")]
    assert all(isinstance(w, SpecWarning) for w in warnings)
    assert str(warnings[0]) == f"{tmp_path / 'net.sk'}:3:7: warning SK703: param 'p' is never used"
    assert skdsl.lint("sknet50") == [] and skdsl.lint(tmp_path / "none.json") == []
    with pytest.raises(SpecError):
        skdsl.lint(tmp_path / "missing.sk")


def test_a_warning_becomes_the_error_strict_mode_prints():
    [warning] = lint(IMPLICIT)
    error = warning.as_error("a warning, made an error by --strict")
    assert (error.code, error.span, error.message) == (warning.code, warning.span, warning.message)
    assert error.render().startswith("t.sk:6:9: error SK701: this split cuts 'y'")
    assert error.notes[-1] == "a warning, made an error by --strict"


def test_lint_is_not_undone_by_deep_nesting():
    # nesting one line deeply is the expander's SK119; lint must not run out of stack first
    deep = "        " + "residual: " * 500 + "conv 1x1, 16\n"
    assert lint(deep) == []


# -- every shipped spec and every documented example reads clean -----------------------------------

SHIPPED = sorted({*ROOT.glob("skdsl/specs/**/*.sk"), *ROOT.glob("specs/**/*.sk"),
                  *ROOT.glob("examples/**/*.sk")})


def test_every_shipped_spec_lints_clean():
    assert len(SHIPPED) > 50
    found = [w.render() for path in SHIPPED for w in skdsl.lint(path)]
    assert found == [], "\n\n".join(found)


WARNS = re.compile(r"<!--\s*sk-warns\s+(.*?)\s*-->")
DOC_FILES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]


def _expected_warnings(doc: Path, line: int) -> list[str]:
    """The codes a `<!-- sk-warns SK701 ... -->` among the comments above a fence promises."""
    lines = doc.read_text(encoding="utf-8").splitlines()[:line - 1]
    codes = []
    while lines and lines[-1].strip().startswith("<!--"):
        marker = WARNS.fullmatch(lines.pop().strip())
        codes += marker.group(1).split() if marker else []
    return codes


def _error_sections() -> list[tuple[str, str, str]]:
    """docs/errors.md's examples: (section code, the example's file name, its text)."""
    page = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    sections = re.findall(r"^## (SK\d{3}) — .*?\n(.*?)(?=^## |\Z)", page, re.S | re.M)
    fence = re.compile(r"^```sk file=(\S+)[^\n]*\n(.*?)^```", re.S | re.M)
    return [(code, name, text) for code, body in sections for name, text in fence.findall(body)]


def _loads(text: str, file: str) -> bool:
    try:
        skdsl.analyze(skdsl.parse(text, file))
    except SpecError:
        return False
    return True


def test_every_documented_example_lints_as_its_page_says():
    checked, problems = 0, []
    for doc in DOC_FILES:
        for example in doc_examples(doc):
            complete = re.search(r"^network\s", example.text, re.M)
            if not complete and "fragment" not in example.markers:
                continue  # not a spec: the docs' own test says which blocks must be
            try:
                found = [w.code for w in skdsl.lint_text(example.source(), example.id)]
            except SpecError:
                continue  # an example of an error
            checked += 1
            expected = _expected_warnings(doc, example.line)
            if found != expected and (expected or _loads(example.source(), example.id)):
                problems.append(f"{example.id}: warns {found}, its page says {expected}")
    for code, name, text in _error_sections():
        try:
            found = [w.code for w in skdsl.lint_text(text, name)]
        except SpecError:
            continue
        checked += 1
        expected = [code] if code.startswith("SK7") else []
        if found != expected and (expected or _loads(text, name)):
            problems.append(f"errors.md {code}: warns {found}, expected {expected}")
    assert checked > 80 and problems == [], "\n".join(problems)


# -- unknown layers (SK201) ------------------------------------------------------------------------


@pytest.mark.parametrize("line", ["reshape 16", "reshape[k=3], 16", "reshape", "y = reshape 16",
                                  "reshape 3x3, 16   # a comment"])
def test_an_unknown_keyword_with_arguments_is_an_unknown_layer(line):
    assert "reshape" not in ops.KEYWORDS  # the test's premise
    with pytest.raises(SpecError) as caught:
        build(f"        conv 3x3, 16\n        {line}\n")
    error = caught.value
    column = 9 + line.index("reshape")
    assert (error.code, error.message) == ("SK201", "unknown layer 'reshape'")
    assert (error.span.line, error.span.column, error.span.end_column) == (6, column, column + 7)
    # no keyword is near: every layer of the registry is listed, as it is now
    words = [word.upper() if ops.KEYWORDS[word].brackets else word for word in ops.LAYER_KEYWORDS]
    assert error.hint == (f"the layers are {', '.join(words)}; a block is called with "
                          "parentheses: reshape(...)")


def test_an_unknown_layer_near_a_keyword_suggests_it():
    with pytest.raises(SpecError) as caught:
        build("        shufle 2\n")
    assert caught.value.message == "unknown layer 'shufle'"
    assert caught.value.hint == "did you mean 'shuffle'?"


def test_a_word_inside_a_value_is_no_unknown_layer():
    with pytest.raises(SpecError) as caught:
        skdsl.parse("param m = convv 3\n" + HEAD + "        gap\n")
    assert caught.value.code == "SK101"

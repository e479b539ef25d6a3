"""Parser: the syntax of .sk files, source spans, and syntax errors that say what was expected."""

import pytest

from skdsl import syntax as A
from skdsl.errors import SpecError
from skdsl.parser import parse_text, read_source


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

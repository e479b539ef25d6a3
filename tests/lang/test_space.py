"""Design spaces in the language (issue 22): `param G = 32 in {16, 32}`, `lo..hi step s`, `log`,
`where` with `divides`, `--space NAME=DOMAIN`; every mistake located (SK240, SK241, SK242, SK560);
a spec with domains still builds its defaults everywhere; `plain_text` writes one point out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import skdsl
from skdsl.base.errors import SkdslError, SpecError
from skdsl.commands import main
from skdsl.core.space import Choice, FloatRange, IntRange
from skdsl.lang.parser import _lark, parse_flag, parse_text
from skdsl.lang.space import plain_text, read_space

ROOT = Path(__file__).resolve().parents[2]

# A small network every domain below is declared for: w (a width), G (its groups), act.
NETWORK = """\
network n:
    input 3x16x16
    classes 10
    stage stem: conv 3x3, 8
    stage body: conv 3x3, w, G=G
    stage head:
        avgpool global
        fc classes
"""

SPACE_SPEC = """\
use "std/resnext.sk"
param w = 64 in 32..256 step 16      # a width
param G = 8 in {4, 8, 16,}
param M = 2 in 1..3
param k = 32 in log 16..128
param f = 0.5 in 0.25..1.0
param g = 0.5 in 0.25..1.0 step 0.25
param lr = 0.01 in log 1e-3..1e-1
param act = relu in {relu, relu6, silu}
param depth = 2
where G divides w
where not w > 240 and M <= 3 or w == 32

network spaced:
    input 3x32x32
    classes 10
    stage stem: conv 3x3, make_divisible(w * f, 8), act act
    stage body: sk_unit(w, 2 * w, M=M, G=G, r=16, L=k) x depth
    stage head:
        avgpool global
        fc classes
"""


def space_of(text: str, flags: dict | None = None, file: str = "space.sk"):
    return read_space(parse_text(text, file), flags)


def dimensions(text: str, flags: dict | None = None) -> dict:
    return {d.name: d for d in space_of(text, flags).dimensions}


def underlined(text: str, span) -> str:
    """The text a span covers (the error's ^^^ in its excerpt)."""
    lines = text.split("\n")
    if span.line == span.end_line:
        return lines[span.line - 1][span.column - 1:span.end_column - 1]
    first = lines[span.line - 1][span.column - 1:]
    return "\n".join([first, *lines[span.line:span.end_line - 1],
                      lines[span.end_line - 1][:span.end_column - 1]])


def without_domains(text: str) -> str:
    """`text` with every ` in DOMAIN` of a param and every `where` line blanked out (line
    numbers kept)."""
    text = re.sub(r"^(param \w+ = [^#\n]*?) in [^#\n]*", r"\1", text, flags=re.M)
    return re.sub(r"^where [^\n]*", "", text, flags=re.M)


def counts(network) -> tuple[int, int, int]:
    total = skdsl.analyze(network).total
    return total.params, total.mult_adds, total.activations


# -- what parses ------------------------------------------------------------------------------


def test_every_kind_of_domain_parses():
    found = dimensions(SPACE_SPEC)
    assert list(found) == ["w", "G", "M", "k", "f", "g", "lr", "act"]  # declared order; depth
    # has no domain, so no dimension
    assert found["w"].domain == IntRange(32, 256, 16, False)
    assert found["G"].domain == Choice((4, 8, 16))  # the trailing comma is allowed
    assert found["M"].domain == IntRange(1, 3, 1, False)
    assert found["k"].domain == IntRange(16, 128, 1, True)
    assert found["f"].domain == FloatRange(0.25, 1.0, None, False)
    assert found["g"].domain == FloatRange(0.25, 1.0, 0.25, False)
    assert found["lr"].domain == FloatRange(1e-3, 1e-1, None, True)
    assert found["act"].domain == Choice(("relu", "relu6", "silu"))
    assert {name: d.default for name, d in found.items()} == {
        "w": 64, "G": 8, "M": 2, "k": 32, "f": 0.5, "g": 0.5, "lr": 0.01, "act": "relu"}
    assert found["w"].domain.size() == 15 and list(found["w"].domain.finite())[:3] == [32, 48, 64]
    assert found["g"].domain.finite() == (0.25, 0.5, 0.75, 1.0)
    assert found["f"].domain.finite() is None and found["f"].domain.size() == float("inf")


def test_each_dimension_remembers_where_its_domain_is_written():
    for dimension in space_of(SPACE_SPEC).dimensions:
        line = SPACE_SPEC.split("\n")[dimension.span.line - 1]
        assert dimension.span.file == "space.sk"
        written = line.split(" in ", 1)[1].split("#")[0].strip()
        assert underlined(SPACE_SPEC, dimension.span).strip() == written, dimension.name


def test_where_with_divides_and_or_not():
    space = space_of(SPACE_SPEC)
    divides, logic = space.constraints
    assert divides.text == "G divides w"
    assert logic.text == "not w > 240 and M <= 3 or w == 32"
    assert divides.span.line == 11 and logic.span.line == 12
    assert divides.holds({"G": 16, "w": 64}) and not divides.holds({"G": 16, "w": 72})
    # not binds tightest, then and, then or
    assert logic.holds({"w": 64, "M": 2})
    assert not logic.holds({"w": 256, "M": 2})
    assert logic.holds({"w": 32, "M": 2})
    # a param the point leaves out takes its default: w = 64, M = 2
    assert logic.holds({}) and divides.holds({"G": 4})
    assert space.broken({"G": 16, "w": 72}) is divides
    assert space.broken({"G": 8, "w": 256}) is logic
    assert space.broken({"G": 8, "w": 32}) is None


@pytest.mark.parametrize("condition, values, holds", [
    ("a divides b", {"a": 4, "b": 12}, True),
    ("a divides b", {"a": 5, "b": 12}, False),
    ("a divides b and b divides c", {"a": 2, "b": 4, "c": 8}, True),
    ("a divides b and b divides c", {"a": 2, "b": 4, "c": 6}, False),
    ("a divides b or b divides c", {"a": 3, "b": 4, "c": 8}, True),
    ("not a divides b", {"a": 3, "b": 4, "c": 8}, True),
    ("a * 2 divides b + c", {"a": 2, "b": 4, "c": 8}, True),
    ("a divides c or not b > 3 and c == 8", {"a": 3, "b": 4, "c": 8}, False),
])
def test_divides_is_a_comparison(condition, values, holds):
    text = ("param a = 1 in 1..8\nparam b = 4 in 1..16\nparam c = 8 in 1..16\n"
            f"where {condition} or a == 1\n" + NETWORK.replace("w, G=G", "8"))
    (constraint,) = space_of(text).constraints
    assert constraint.holds(values) is holds


def test_space_flags_add_or_replace_domains():
    text = "param w = 64\nparam G = 8 in {4, 8}\n" + NETWORK
    found = dimensions(text, {"w": "log 16..128"})
    assert list(found) == ["w", "G"]
    assert found["w"].domain == IntRange(16, 128, 1, True)
    assert found["w"].span.file == "--space w"
    # a flag replaces the spec's domain, and may leave the default out (it looks elsewhere)
    found = dimensions(text, {"G": "{1, 2}", "w": "{16, 32}"})
    assert found["G"].domain == Choice((1, 2)) and found["G"].default == 8
    assert found["w"].domain == Choice((16, 32)) and found["w"].default == 64
    assert dimensions(text, {"w": "32..256 step 16"})["w"].domain == IntRange(32, 256, 16)


def test_float_params_take_their_type_from_the_default():
    text = "param f = 0.5 in {0.5, 1}\nparam g = 1.0 in 0..2\nparam w = 8\nparam G = 1\n" + NETWORK
    found = dimensions(text)
    assert found["f"].domain == Choice((0.5, 1.0))
    assert all(isinstance(v, float) for v in found["f"].domain.values)
    assert found["g"].domain == FloatRange(0.0, 2.0)


def test_ranges_lex_without_float_eating_the_dots():
    lexed = lambda text: [(token.type, str(token)) for token in _lark().lex(text)]  # noqa: E731
    assert lexed("32..256") == [("INT", "32"), (lexed("..")[0][0], ".."), ("INT", "256")]
    assert [kind for kind, _ in lexed("1.5..2.5")] == ["FLOAT", lexed("..")[0][0], "FLOAT"]
    assert lexed("1.5") == [("FLOAT", "1.5")]
    assert lexed("1e-3") == [("FLOAT", "1e-3")]
    assert lexed("2.0e3") == [("FLOAT", "2.0e3")]
    # and through the language: a range of ints, of floats, and float literals elsewhere
    assert dimensions("param w = 32 in 32..256\nparam G = 1\n" + NETWORK)["w"].domain == \
        IntRange(32, 256)
    assert dimensions("param f = 1.5 in 1.5..2.5\nparam w = 8\nparam G = 1\n" + NETWORK)[
        "f"].domain == FloatRange(1.5, 2.5)
    assert dimensions("param f = 1e-3 in log 1e-3..1e-1\nparam w = 8\nparam G = 1\n" + NETWORK)[
        "f"].domain == FloatRange(0.001, 0.1, None, True)
    flag = parse_flag("32..256 step 16", "--space w", "space_flag")
    assert flag.kind == "range" and len(flag.values) == 3 and not flag.log
    network = skdsl.parse("param k = 1.5\nparam e = 1e-3\n" + NETWORK.replace(
        "w, G=G", "int(16 * k + e)"))
    assert network.stages[1].body[0].out_channels == 24


# -- mistakes, located ------------------------------------------------------------------------

# (the param lines, code, what the error underlines, a fragment of its message)
BAD_DOMAINS = [
    ("param w = 64 in 256..32", "SK240", "256..32", "is empty"),
    ("param w = 64 in 32..256 step 0", "SK240", "0", "step is positive"),
    ("param w = 64 in log 0..256", "SK240", "log 0..256", "positive low end"),
    ("param w = 64 in log 16..256 step 16", "SK240", "log 16..256 step 16", "no step"),
    ("param w = 64 in 32..250 step 16", "SK240", "32..250 step 16", "does not end on a step"),
    ("param w = 8\nparam f = 0.5 in 0.25..1.0 step 0.3", "SK240", "0.25..1.0 step 0.3",
     "does not end on a step"),
    ("param w = 64 in {32, relu}", "SK240", "{32, relu}", "numbers or words"),
    ("param w = 64 in {32, 64, 32}", "SK240", "32", "listed twice"),
    ("param w = 64 in 32.0..256", "SK240", "32.0..256", "integer param"),
    ("param w = 64 in 32..256 step 0.5", "SK240", "32..256 step 0.5", "integer param"),
    ("param w = 64 in 32..relu", "SK240", "relu", "bounds and step are numbers"),
    ("param a = 16\nparam w = 64 in a..128", "SK240", "a", "bounds and step are numbers"),
    ("param w = 64 in {32.0, 64.0}", "SK241", "{32.0, 64.0}", "holds numbers"),
    ("param w = relu in 1..3", "SK241", "1..3", "is a word"),
    ("param w = 64 in {32, 48}", "SK241", "64", "not in its domain {32, 48}"),
    ("param w = 64 in 80..256", "SK241", "64", "not in its domain 80..256"),
    ("param w = 64 in {32, 64}\nparam G = 1 in {1, 3}\nwhere G == 3", "SK241", "where G == 3",
     "defaults break `where G == 3`"),
]


@pytest.mark.parametrize("params, code, text, message", BAD_DOMAINS,
                         ids=[case[0].split("\n")[-1] for case in BAD_DOMAINS])
def test_bad_domains_are_located(params, code, text, message):
    bad_line = params.count("\n") + 1  # the last line given: the bad one
    params = params + ("\nparam G = 1" if "param G" not in params else "")
    spec = params + "\n" + NETWORK
    with pytest.raises(SpecError) as caught:
        space_of(spec, file="bad.sk")
    error = caught.value
    assert error.code == code, error.message
    assert message in error.message
    assert error.span is not None and error.span.file == "bad.sk"
    assert error.span.line == bad_line
    assert underlined(spec, error.span).strip().startswith(text), underlined(spec, error.span)
    if "listed twice" in message:  # the second 32, not the first
        assert error.span.column == spec.split("\n")[0].rindex("32") + 1
    if code == "SK240" and "does not end" in message:
        assert "end it at" in error.hint


def test_every_loader_reports_a_bad_domain():
    text = "param w = 64 in 256..32\nparam G = 1\n" + NETWORK
    with pytest.raises(SpecError) as caught:
        skdsl.parse(text, "p.sk")
    assert caught.value.code == "SK240" and caught.value.span.line == 1
    assert caught.value.hint == "write 32..256"


def test_a_where_no_point_meets_is_sk242_at_the_where():
    text = "param w = 64\nparam G = 1\nwhere G divides w\n" + NETWORK
    assert space_of(text).constraints[0].text == "G divides w"  # the defaults meet it
    with pytest.raises(SpecError) as caught:
        space_of(text, {"G": "{3, 5}", "w": "{7, 11}"})
    assert caught.value.code == "SK242"
    assert caught.value.span.line == 3 and "`where G divides w`" in caught.value.message
    assert "all 4 points" in caught.value.hint
    # each where met by some point, but no point meets both
    text = "param w = 64\nparam G = 1\nwhere w > 16\nwhere w < 32\n" + NETWORK
    with pytest.raises(SpecError) as caught:
        space_of(text, {"w": "{16, 32}"})
    assert caught.value.code == "SK242" and "together" in caught.value.message
    assert caught.value.span.line == 3
    # a domain the --space moves away from the default is fine where some point meets it
    space = space_of(text, {"w": "{16, 24, 32}"})
    assert space.broken({"w": 24}) is None and space.broken({"w": 16}) is not None


def test_bad_space_flags_are_located_in_the_flag():
    text = "param w = 64\nparam G = 1\n" + NETWORK
    for flag, code, column in (("256..32", "SK240", 1), ("{1,,2}", "SK101", 4),
                               ("log 0..2", "SK240", 1), ("{16, 16}", "SK240", 6)):
        with pytest.raises(SpecError) as caught:
            space_of(text, {"w": flag})
        assert caught.value.code == code, (flag, caught.value.message)
        assert caught.value.span.file == "--space w" and caught.value.span.column == column


def test_space_for_an_undeclared_param_is_sk560_with_did_you_mean():
    text = "param width = 64\nparam G = 1\n" + NETWORK.replace("w, G=G", "width, G=G")
    with pytest.raises(SkdslError) as caught:
        space_of(text, {"widht": "{16, 32}"})
    assert caught.value.code == "SK560"
    assert "widht" in caught.value.message and "'width'" in caught.value.hint
    with pytest.raises(SkdslError) as caught:
        space_of(text, {"M": "{1, 2}"})
    assert caught.value.code == "SK560" and "width, G" in caught.value.hint
    with pytest.raises(SkdslError) as caught:
        space_of(NETWORK.replace("w, G=G", "8"), {"M": "{1, 2}"})
    assert caught.value.code == "SK560" and "param NAME" in caught.value.hint


def test_check_and_build_report_a_bad_domain(capsys, tmp_path):
    path = tmp_path / "bad.sk"
    path.write_text("param w = 64 in 32..256 step 0\nparam G = 1\n" + NETWORK)
    for command in ("check", "build"):
        status = main([command, str(path)])
        out, err = capsys.readouterr()
        assert status == 2 and out == ""
        assert f"{path}:1:30: error SK240" in err
        assert "Traceback" not in err and "internal error" not in err
    path.write_text("param w = 64 in {32, 48}\nparam G = 1\n" + NETWORK)
    assert main(["check", str(path)]) == 2
    assert "error SK241" in capsys.readouterr().err


# -- a spec with domains builds its defaults everywhere ---------------------------------------


@pytest.mark.parametrize("name", ["sk_cifar", "resnext_cifar", "sknet50_space"])
def test_example_spaces_build_exactly_their_defaults(name, tmp_path):
    path = ROOT / "examples" / "spaces" / f"{name}.sk"
    text = path.read_text()
    plain = without_domains(text)
    assert " in {" not in plain and "\nwhere" not in plain and plain != text
    plain_path = tmp_path / f"{name}.sk"
    plain_path.write_text(plain)
    spaced, flat = skdsl.load(path), skdsl.load(plain_path)
    assert spaced == flat
    assert counts(spaced) == counts(flat)
    assert skdsl.parse(text, "a.sk") == skdsl.parse(plain, "a.sk")


def test_domains_change_no_path_that_builds_the_defaults(capsys, tmp_path):
    spaced = tmp_path / "spaced.sk"
    spaced.write_text(SPACE_SPEC)
    flat = tmp_path / "flat.sk"
    flat.write_text(without_domains(SPACE_SPEC))
    assert " in " not in flat.read_text().split("network")[0].replace('use "', "")
    # the library
    assert counts(skdsl.load(spaced)) == counts(skdsl.load(flat))
    assert skdsl.load(spaced) == skdsl.load(flat)
    assert counts(skdsl.parse(SPACE_SPEC)) == counts(skdsl.parse(without_domains(SPACE_SPEC)))
    # overrides, inside a domain and outside it (a domain is explore's, not a limit on --set)
    for overrides in ({"w": 96, "G": 16}, {"w": 40, "G": 4}, {"act": "relu6", "f": 1.0}):
        assert counts(skdsl.load(spaced, overrides)) == counts(skdsl.load(flat, overrides))
    assert counts(skdsl.load(spaced, num_classes=7)) == counts(skdsl.load(flat, num_classes=7))
    # the command line
    results = []
    graphs = []
    for path in (spaced, flat):
        assert main(["graph", str(path), "--depth", "2"]) == 0
        graphs.append(capsys.readouterr().out)
        assert main(["check", str(path)]) == 0
        assert main(["build", str(path), "--json"]) == 0
        out = capsys.readouterr().out
        results.append(json.loads(out[out.index("{"):]))
    assert results[0]["params"] == results[1]["params"]
    assert results[0]["macs"] == results[1]["macs"]
    assert graphs[0] == graphs[1] and graphs[0]
    assert main(["spec", str(spaced), "--json"]) == 0
    spec_json = capsys.readouterr().out
    assert main(["spec", str(flat), "--json"]) == 0
    assert capsys.readouterr().out == spec_json


def test_the_compiled_default_has_the_counted_parameters(tmp_path):
    path = tmp_path / "small.sk"
    path.write_text(SPACE_SPEC.replace("input 3x32x32", "input 3x8x8"))
    model = skdsl.create_model(path)
    expected = skdsl.analyze(skdsl.load(path)).total.params
    assert sum(p.numel() for p in model.parameters()) == expected
    flat = tmp_path / "flat.sk"
    flat.write_text(without_domains(path.read_text()))
    assert expected == skdsl.analyze(skdsl.load(flat)).total.params


# -- a point written out as a plain spec ------------------------------------------------------


@pytest.mark.parametrize("values", [
    {"w": 96, "G": 16, "M": 3, "k": 20, "f": 0.75, "g": 1.0, "lr": 0.002, "act": "silu"},
    {"w": 32, "G": 4, "M": 1, "k": 128, "f": 0.25, "g": 0.25, "lr": 0.1, "act": "relu6"},
    {"w": 64, "G": 8, "M": 2, "k": 32, "f": 0.5, "g": 0.5, "lr": 0.01, "act": "relu"},
])
def test_plain_text_is_the_point_without_domains_or_wheres(values):
    source = parse_text(SPACE_SPEC, "space.sk")
    plain = plain_text(SPACE_SPEC, source, values)
    assert " in {" not in plain and ".." not in plain and "where" not in plain
    assert len(plain.split("\n")) == len(SPACE_SPEC.split("\n"))  # lines kept in place
    assert read_space(parse_text(plain, "plain.sk")).dimensions == ()
    for name, value in values.items():
        assert f"param {name} = {value}\n" in plain
    assert skdsl.parse(plain, "plain.sk") == skdsl.parse(SPACE_SPEC, "plain.sk", values)
    network = skdsl.parse(plain)
    assert counts(network) == counts(skdsl.parse(without_domains(SPACE_SPEC), "x", values))


def test_plain_text_of_declarations_continued_over_lines():
    text = ("param w = 16 in {8, 16, \\\n"
            "                 24, 32}\n"
            "param G = 2 in {1, 2}\n"
            "where G divides w and \\\n"
            "    w >= 8\n" + NETWORK)
    source = parse_text(text, "long.sk")
    assert dimensions(text)["w"].domain == Choice((8, 16, 24, 32))
    plain = plain_text(text, source, {"w": 24, "G": 1})
    assert "24, 32}" not in plain and "w >= 8" not in plain and "where" not in plain
    assert counts(skdsl.parse(plain)) == counts(skdsl.parse(text, overrides={"w": 24, "G": 1}))


def test_a_continued_where_is_shown_whole():
    # found while writing these tests: the text was its first line, backslash and all
    text = ("param w = 16 in {8, 16, 24, 32}\n"
            "param G = 2 in {1, 2}\n"
            "where G divides w and \\\n"
            "    w >= 8\n" + NETWORK)
    (constraint,) = space_of(text).constraints
    assert " ".join(constraint.text.split()) == "G divides w and w >= 8"


@pytest.mark.parametrize("name", ["params", "macs", "status", "index", "error", "peak_bytes"])
def test_a_ranging_param_may_not_be_called_like_a_column_of_the_points(name):
    # found while writing these tests: explore's row lost the param's value to the column's
    text = (f"param w = 8\nparam G = 1\nparam {name} = 2 in {{1, 2}}\n" + NETWORK)
    with pytest.raises(SpecError) as caught:
        space_of(text, file="named.sk")
    assert caught.value.code == "SK240" and f"'{name}'" in caught.value.message
    assert caught.value.span.file == "named.sk" and caught.value.span.line == 3
    assert underlined(text, caught.value.span) == name
    plain = text.replace(" in {1, 2}", "")
    assert space_of(plain).dimensions == ()  # a param that does not range may be called so
    with pytest.raises(SpecError) as caught:
        space_of(plain, {name: "{1, 2}"})
    assert caught.value.code == "SK240" and caught.value.span.line == 3

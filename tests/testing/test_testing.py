"""skdsl.testing's own tests: the strategies make what they promise, and every assertion can
fail (a check that cannot fail checks nothing)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import skdsl
from skdsl.nn import compiler, layers
from skdsl import ops
from skdsl.lang import expand as expand_module
from skdsl import testing as T
from skdsl.base.errors import Span, SpecError, register_source

ROOT = Path(__file__).resolve().parents[2]
FAST = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SMALL = """\
network small:
    input 3x16x16
    classes 10
    stage stem: conv 3x3, 16, stride 2
    stage body:
        SK[M=2, G=4, r=4, L=8], 16
        maxpool 3x3, stride 2
        SE[r=4]
    stage head:
        avgpool global
        fc classes
"""


@pytest.fixture
def small():
    return skdsl.parse(SMALL, file="small.sk")


# -- specs() ------------------------------------------------------------------------------------

FEATURES = {
    "SK": "SK", "SUM": "SUM[", "SE": "SE", "dwconv": "dwconv", "split": "split ",
    "shares": " shares ", "residual": "residual", "explicit shortcut": "shortcut:",
    "branch": "branch ", "concat": "concat ", "add": "add ", "mul": "mul ", "shuffle": "shuffle ",
    "maxpool": "maxpool", "avgpool": "avgpool", "dropout": "dropout", "block": "block ",
    "repeat": re.compile(r"\) [x×]\d"), "param": "param ", "asymmetric": re.compile(r"1x3|3x1"),
    "dilation": re.compile(r"\b(D|dilation|d)[= ]+[23]\b"), "comment": "#", "CRLF": "\r\n",
    "tab indentation": "\n\t", "stride 2": re.compile(r"stride[= ]2|s=2"),
    "explicit SK branches": re.compile(r"(SK|SUM)\b[^\n]*:\r?\n"),
    "std resnext": "std/resnext.sk", "std attention": "std/attention.sk",
    "std shufflenet": "std/shufflenetv2.sk",
}


def test_specs_cover_the_language():
    seen: set[str] = set()

    @settings(max_examples=500, derandomize=True, database=None, **FAST)
    @given(T.specs())
    def collect(text):
        for name, pattern in FEATURES.items():
            if (pattern.search(text) if isinstance(pattern, re.Pattern) else pattern in text):
                seen.add(name)

    collect()
    assert set(FEATURES) - seen == set()


@settings(max_examples=30, **FAST)
@given(T.specs(input_sizes=(16,), max_width=32))
def test_specs_keep_to_their_limits(text):
    network = skdsl.parse(text)
    assert network.input == (3, 16, 16)
    graph = skdsl.lower(network)
    for name, node in graph.nodes(data=True):
        if node["op"] == "conv2d" and not name.endswith((".logits", ".reduce", ".expand")):
            assert node["out_channels"] <= 32, name


@settings(max_examples=30, **FAST)
@given(T.specs(selective=False, shuffle=False, std=False, decorate=False))
def test_specs_leave_out_what_they_are_told_to(text):
    assert not re.search(r"\b(SK|SUM|sk_unit)\b", text, re.I)
    assert "split" not in text and "shuffle" not in text and "use " not in text
    assert "#" not in text and "\r" not in text and "×" not in text and "\t" not in text
    skdsl.analyze(skdsl.parse(text))


@settings(max_examples=10, **FAST)
@given(T.networks(max_stages=1))
def test_networks_are_parsed_specs(network):
    assert isinstance(network, skdsl.Network)
    assert [stage.name for stage in network.stages][0] == "stem"
    assert network.stages[-1].name == "head"


# -- variants() ----------------------------------------------------------------------------------

PARAMETRISED = """\
param G = 4
param W = 16
network p:
    input 3x8x8
    stage stem: conv 3x3, 16
    stage s: conv 3x3, W, G=G
"""


def test_variants_refuse_undeclared_parameters_at_once():
    with pytest.raises(ValueError, match="declares no parameter 'Q'|declares no parameter Q"):
        T.variants(PARAMETRISED, Q=st.just(1))


def test_variants_reject_invalid_draws_and_accept_plain_values():
    @settings(max_examples=20, **FAST)
    @given(T.variants(PARAMETRISED, G=st.sampled_from([1, 3, 4, 5, 8]), W=16))
    def check(network):
        assert network.parameters["W"] == 16
        assert network.parameters["G"] in (1, 4, 8)  # 3 and 5 do not divide 16
        conv = network.stages[1].body[0]
        assert conv.groups == network.parameters["G"]

    check()


def test_variants_of_a_file(tmp_path):
    path = tmp_path / "p.sk"
    path.write_text(PARAMETRISED)

    @settings(max_examples=5, **FAST)
    @given(T.variants(path, W=st.sampled_from([8, 24])))
    def check(network):
        assert network.stages[1].body[0].out_channels == network.parameters["W"]

    check()


# -- mutations() ----------------------------------------------------------------------------------


@settings(max_examples=60, **FAST)
@given(T.broken_specs(kinds=("delete", "duplicate", "insert", "truncate", "bytes")))
def test_mutations_change_the_text_and_say_how(case):
    broken, description = case
    kind = description.split(":", 1)[0]
    assert kind in T.MUTATION_KINDS
    if kind == "bytes":
        assert isinstance(broken, bytes)
        if b"\0" not in broken:  # NUL is UTF-8, but makes a binary file
            with pytest.raises(UnicodeDecodeError):
                broken.decode("utf-8")
    else:
        assert isinstance(broken, str)


@pytest.mark.parametrize("kind", T.MUTATION_KINDS)
def test_every_mutation_kind_runs(kind):
    @settings(max_examples=10, **FAST)
    @given(T.mutations(SMALL, kinds=[kind]))
    def check(case):
        broken, description = case
        assert description.startswith(f"{kind}:") or description.startswith("truncate:")
        assert broken != SMALL or kind in ("indent", "line")

    check()


def test_mutations_refuse_unknown_kinds():
    with pytest.raises(ValueError, match="unknown mutation kinds"):
        T.mutations(SMALL, kinds=["explode"])


# -- meeting_inputs() ------------------------------------------------------------------------------


def test_meeting_inputs_draw_every_kind_agreeing_and_not():
    seen: set[tuple[str, str | None]] = set()

    @settings(max_examples=400, derandomize=True, database=None, **FAST)
    @given(T.meeting_inputs())
    def collect(case):
        text, code = case
        seen.add((re.match(r"network meet_(\w+):", text).group(1), code))

    collect()
    expected = {"sk": "SK309", "sum": "SK309", "add": "SK303", "mul": "SK303",
                "concat": "SK303", "residual": "SK305", "shares": "SK303"}
    assert seen == {*expected.items(), *((kind, None) for kind in expected)}


@settings(max_examples=40, **FAST)
@given(T.meeting_inputs(kinds=("sk", "residual"), sizes=(5,)))
def test_meeting_inputs_keep_to_their_kinds_and_sizes(case):
    text, code = case
    assert "input 8x5x5" in text and re.search(r"network meet_(sk|residual):", text)
    try:
        skdsl.analyze(skdsl.parse(text))
    except skdsl.SpecError as error:
        assert error.code == code
    else:
        assert code is None


def test_meeting_inputs_refuse_unknown_kinds():
    with pytest.raises(ValueError, match="unknown kinds"):
        T.meeting_inputs(kinds=["pool"])


# -- assert_compiles_exactly ------------------------------------------------------------------------


def test_compiles_exactly_reports_the_agreed_numbers(small):
    report = T.assert_compiles_exactly(small)
    analysis = skdsl.analyze(small)
    assert (report.params, report.mult_adds) == (analysis.params, analysis.mult_adds)
    assert report.output == (1, 10) and report.network == "small"
    assert report.modules == len(skdsl.lower(small).nodes) - 1


def test_compiles_exactly_takes_text_paths_and_another_input(tmp_path):
    path = tmp_path / "small.sk"
    path.write_text(SMALL)
    assert T.assert_compiles_exactly(path).params == T.assert_compiles_exactly(SMALL).params
    assert T.assert_compiles_exactly(str(path), input_shape=(3, 40, 24)).output == (1, 10)


def test_compiles_exactly_restores_torch_threads(small):
    before = torch.get_num_threads()
    T.assert_compiles_exactly(small)
    assert torch.get_num_threads() == before


def _wrap_compile(monkeypatch, change):
    """Make skdsl.compile return a module changed by `change(model)`."""
    original = compiler.compile

    def compile_changed(*args, **kwargs):
        model = original(*args, **kwargs)
        change(model)
        return model

    monkeypatch.setattr(compiler, "compile", compile_changed)


def test_compiles_exactly_fails_when_the_analysis_miscounts_parameters(small, monkeypatch):
    # Every count, total or per node, goes through the op's `cost` in the registry.
    original = ops.norm.BatchNormOp.cost

    def one_too_many(self, node):
        params, mult_adds, activations = original(self, node)
        return (params + 1, mult_adds, activations)

    monkeypatch.setattr(ops.norm.BatchNormOp, "cost", one_too_many)
    wrong = skdsl.analyze(small).params
    with pytest.raises(AssertionError) as failure:
        T.assert_compiles_exactly(small)
    message = str(failure.value)
    assert "spec 'small'" in message and "parameters" in message
    assert f"{wrong:,}" in message and f"{wrong - 4:,}" in message  # 4 batchnorms here
    assert "stem.conv.bn" in message


def test_compiles_exactly_fails_when_the_analysis_miscounts_mult_adds(small, monkeypatch):
    original = ops.dense.LinearOp.cost

    def more_work(self, node):
        params, mult_adds, activations = original(self, node)
        return (params, mult_adds + 7, activations)

    monkeypatch.setattr(ops.dense.LinearOp, "cost", more_work)
    with pytest.raises(AssertionError, match=r"mult-adds.*\(-7\)") as failure:
        T.assert_compiles_exactly(small)
    assert "head.fc" in str(failure.value)


def test_compiles_exactly_fails_on_a_module_with_other_parameters(small, monkeypatch):
    monkeypatch.setitem(compiler.MODULES, "linear", lambda node: layers.FlattenLinear(
        node["in_features"], node["out_features"], bias=False))
    with pytest.raises(AssertionError, match=r"parameters: the module has .*\(-10\)"):
        T.assert_compiles_exactly(small)


def test_compiles_exactly_fails_on_a_module_doing_more_work(small, monkeypatch):
    def extra_matmul(model):
        forward = model.forward
        model.forward = lambda x: forward(x) @ torch.eye(10)

    _wrap_compile(monkeypatch, extra_matmul)
    with pytest.raises(AssertionError, match=r"mult-adds: FlopCounterMode total / 2 is .*\(\+100\)"):
        T.assert_compiles_exactly(small)


def test_compiles_exactly_fails_on_the_wrong_output_shape(small, monkeypatch):
    def truncated(model):
        forward = model.forward
        model.forward = lambda x: forward(x)[:, :5]

    _wrap_compile(monkeypatch, truncated)
    with pytest.raises(AssertionError, match=r"output shape: the module gives \(1, 5\), the "
                                             r"analysis says \(1, 10\)"):
        T.assert_compiles_exactly(small)


def test_compiles_exactly_fails_on_modules_that_are_not_nodes(small, monkeypatch):
    # nn.Module's own add_module: the compiled network refuses a child its graph never calls
    _wrap_compile(monkeypatch, lambda model: torch.nn.Module.add_module(model, "stray",
                                                                        torch.nn.ReLU()))
    with pytest.raises(AssertionError, match="module leaves that are not graph nodes: stray"):
        T.assert_compiles_exactly(small)


def test_compiles_exactly_fails_on_nodes_without_modules(small, monkeypatch):
    def drop_fc(model):
        del model.head._modules["fc"]

    _wrap_compile(monkeypatch, drop_fc)
    with pytest.raises(AssertionError, match="graph nodes without a module: head.fc") as caught:
        T.assert_compiles_exactly(small)
    assert "the forward pass failed: KeyError" in str(caught.value)  # reported, not raised


def test_compiles_exactly_fails_on_a_module_that_crashes(small, monkeypatch):
    """The miscount of issue 14 showed as a crash in forward: an assertion, with its cause."""
    def crash(*inputs):
        raise RuntimeError("The size of tensor a (16) must match the size of tensor b (15)")

    _wrap_compile(monkeypatch, lambda model: setattr(model.head.fc, "forward", crash))
    with pytest.raises(AssertionError, match=r"the forward pass failed: RuntimeError: The size"):
        T.assert_compiles_exactly(small)


# -- assert_shapes -------------------------------------------------------------------------------------


def test_shapes_agree_on_the_spec_input_and_another(small):
    assert T.assert_shapes(small, expected_output=(10,)) == (2, 10)
    assert T.assert_shapes(small, input=(3, 64, 64), expected_output=(2, 10), batch=2) == (2, 10)
    assert T.assert_shapes(SMALL, batch=1) == (1, 10)


def test_shapes_fail_on_an_unexpected_output(small):
    with pytest.raises(AssertionError, match=r"inferred \(2, 10\), expected \(2, 11\)"):
        T.assert_shapes(small, expected_output=(11,))


def test_shapes_fail_when_a_node_differs_from_the_graph(small, monkeypatch):
    monkeypatch.setitem(compiler.MODULES, "max_pool", lambda node: torch.nn.MaxPool2d(
        node["kernel"], stride=node["stride"], padding=node["padding"], ceil_mode=True))
    # 8×8 -> 4×4 in the graph; with ceil_mode, (8 + 2 − 3)/2 rounds up to 5×5.
    with pytest.raises(AssertionError, match=r"node body.pool: the module gives 2x16x5x5, the "
                                             r"graph says 2x16x4x4"):
        T.assert_shapes(small)


# -- assert_rejected ----------------------------------------------------------------------------------


def test_rejected_returns_the_located_error():
    error = T.assert_rejected(SMALL.replace("maxpool", "maxpol"), code="SK201")
    assert error.span.line == 7 and error.span.column == 9


def test_rejected_takes_bytes():
    error = T.assert_rejected(b"network n:\n    input 3x8x8\xff\n", code="SK112")
    assert (error.span.line, error.span.column) == (2, 16)


def test_rejected_fails_on_a_valid_spec():
    with pytest.raises(AssertionError, match="accepted"):
        T.assert_rejected(SMALL)


def test_rejected_fails_on_another_code():
    with pytest.raises(AssertionError, match="expected error SK999, got SK201"):
        T.assert_rejected(SMALL.replace("maxpool", "maxpol"), code="SK999")


def test_rejected_fails_on_a_crash(monkeypatch):
    def crash(source, *arguments, **options):
        raise KeyError("oops")

    monkeypatch.setattr(expand_module, "expand", crash)
    with pytest.raises(AssertionError, match="crashed with KeyError"):
        T.assert_rejected(SMALL)


def test_rejected_fails_on_an_error_without_a_location(monkeypatch):
    def unlocated(source, *arguments, **options):
        raise SpecError("somewhere")

    monkeypatch.setattr(expand_module, "expand", unlocated)
    with pytest.raises(AssertionError, match="without a location"):
        T.assert_rejected(SMALL)


def test_rejected_fails_on_an_error_that_cannot_render(monkeypatch):
    class Unrenderable(SpecError):
        def render(self):
            raise IndexError("no such line")

    def broken(source, *arguments, **options):
        raise Unrenderable("bad", Span(source.path, 1, 1, 1, 2))

    monkeypatch.setattr(expand_module, "expand", broken)
    with pytest.raises(AssertionError, match="fails to render: IndexError"):
        T.assert_rejected(SMALL)


def test_rejected_fails_when_the_excerpt_shows_another_line(monkeypatch):
    def misplaced(source, *arguments, **options):
        register_source(source.path, "something else\n")
        raise SpecError("bad", Span(source.path, 1, 1, 1, 2))

    monkeypatch.setattr(expand_module, "expand", misplaced)
    with pytest.raises(AssertionError, match="excerpt shows another line"):
        T.assert_rejected(SMALL)


def test_rejected_fails_on_a_span_past_the_end(monkeypatch):
    def past(source, *arguments, **options):
        raise SpecError("bad", Span(source.path, 99, 1, 99, 2))

    monkeypatch.setattr(expand_module, "expand", past)
    with pytest.raises(AssertionError, match="past the end of the file"):
        T.assert_rejected(SMALL)


# -- run_check and time_limit -----------------------------------------------------------------------


def test_run_check_statuses(tmp_path):
    good, bad = tmp_path / "good.sk", tmp_path / "bad.sk"
    good.write_text(SMALL)
    bad.write_text(SMALL.replace("SE[r=4]", "SE[r=0]"))
    status, output = T.run_check(good)
    assert status == 0 and "small" in output
    status, output = T.run_check(bad)
    assert status == 2 and f"{bad}:8:" in output and "Traceback" not in output


def test_run_check_says_what_skdsl_check_says(tmp_path, capsys):
    from skdsl import commands

    good, bad = tmp_path / "good.sk", tmp_path / "bad.sk"
    good.write_text(SMALL)
    bad.write_text(SMALL.replace("SE[r=4]", "SE[r=0]"))
    for path in (good, bad):
        status = commands.main(["check", str(path)])
        captured = capsys.readouterr()
        assert T.run_check(path) == (status, captured.out + captured.err)
    assert T.run_check(bad)[1].startswith(f"{bad}:8:")


def test_time_limit_turns_a_hang_into_an_error():
    with pytest.raises(TimeoutError):
        with T.time_limit(0.2):
            while True:
                pass
    with T.time_limit(5):
        pass  # and leaves nothing behind when the block ends in time

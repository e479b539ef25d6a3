"""Properties over random specs (skdsl.testing's strategies): the compiler, the analysis, the
JSON schema and the error reporting agree for every network the language can describe.

The example counts keep the whole file well under a minute on two CPU cores. To search harder
for a bug, multiply them: SKDSL_PROPERTY_SCALE=20 pytest tests/testing/test_properties.py

The bugs these properties found are pinned by regression tests at the end of the file. While a
bug is open, pin it with a strict xfail and steer the properties around it, so they stay green
and keep looking for new ones.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import skdsl
from skdsl import testing as T
from skdsl.core.analysis import EXTRA_COUNTS, Cost
from skdsl.core.graph import lower_table
from skdsl.core.spec import Network

SCALE = float(os.environ.get("SKDSL_PROPERTY_SCALE", "1"))
EXAMPLES = {name: max(1, round(count * SCALE)) for name, count in
            {"compile": 40, "json": 60, "broken": 300, "mutant": 40, "variants": 20,
             "meeting": 60}.items()}
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.data_too_large,
                                                     HealthCheck.filter_too_much])

COMPILABLE_TOKENS = T.INSERT_TOKENS


def _text(broken: str | bytes) -> str:
    return broken if isinstance(broken, str) else broken.decode("utf-8", "replace")


# -- (a) random valid specs compile to exactly the analysed module ------------------------------


@settings(max_examples=EXAMPLES["compile"], **SETTINGS)
@given(T.specs())
def test_random_specs_compile_exactly(text):
    network = skdsl.parse(text, file="<random>")
    T.assert_compiles_exactly(network)
    T.assert_shapes(network, batch=2)


@settings(max_examples=10, **SETTINGS)
@given(T.networks(max_stages=2, input_sizes=(16,)), st.sampled_from([(3, 24, 24), (3, 17, 9)]))
def test_random_specs_compile_exactly_on_another_input(network, shape):
    T.assert_compiles_exactly(network, input_shape=shape)


@settings(max_examples=EXAMPLES["json"], **SETTINGS)
@given(T.networks(max_blocks=4))
def test_blocks_lowered_once_count_as_when_spelled_out(network):
    """Repeated blocks are lowered once and placed again (graph.py): the node table spelled
    out, and every count and receptive field taken from the placed blocks, are the same as
    lowering every block anew."""
    table, plain = lower_table(network), lower_table(network, reuse=False)
    assert list(table.nodes.items()) == list(plain.nodes.items())
    assert table.edges == plain.edges and table.graph == plain.graph
    for count in ((), tuple(EXTRA_COUNTS)):
        fast, full = skdsl.analyze(network, count=count), skdsl.analyze(plain.to_networkx(),
                                                                       count=count)
        assert fast.total == full.total == sum(full.nodes.values(), Cost())
        assert fast.stages == full.stages and fast.output == full.output
        for stage in fast.stages:  # a stage's output is its last node's
            last = [name for name, node in plain.nodes.items() if node["stage"] == stage.name][-1]
            assert stage.receptive_field == full.fields[last]
            assert stage.output == plain.nodes[last]["out_shapes"][0]


@settings(max_examples=EXAMPLES["meeting"], **SETTINGS)
@given(T.meeting_inputs())
def test_inputs_that_meet_agree_or_are_located_errors(case):
    """Never a silent miscount: where SK branches, add, mul, concat, a residual or a shared
    branch meet inputs of drawn kernels, strides, paddings and dilations, either the shapes
    agree and torch counts what the analysis counts, or the spec is a located error."""
    text, code = case
    if code is None:
        T.assert_compiles_exactly(text)
    else:
        error = T.assert_rejected(text, code=code)
        assert code == "SK305" or error.hint, error.render()  # SK305 is documented without one


# -- (b) the JSON form of a spec means the same network ----------------------------------------


@settings(max_examples=EXAMPLES["json"], **SETTINGS)
@given(T.networks())
def test_json_round_trip_keeps_the_counts(network):
    restored = Network.model_validate_json(network.model_dump_json())
    assert restored.model_dump() == network.model_dump()
    before, after = skdsl.analyze(network), skdsl.analyze(restored)
    assert after.to_json() == before.to_json()
    assert (after.params, after.mult_adds, after.output) == (before.params, before.mult_adds,
                                                             before.output)
    assert after.nodes == before.nodes
    assert after.layers == before.layers and after.blocks == before.blocks


# -- (c) broken specs: located errors, exit status 2, never a traceback -------------------------


@settings(max_examples=EXAMPLES["broken"], **SETTINGS)
@given(T.broken_specs())
def test_broken_specs_are_reported_never_crash(case):
    broken, description = case
    with tempfile.TemporaryDirectory(prefix="skdsl-") as folder:
        path = Path(folder) / "broken.sk"
        path.write_bytes(broken if isinstance(broken, bytes) else broken.encode("utf-8"))
        with T.time_limit(20):
            status, output = T.run_check(path)
        assert "Traceback" not in output, f"{description}:\n{output}"
        assert status in (0, 2), f"{description}: exit status {status}:\n{output}"
        if description.startswith("bytes:"):
            assert status == 2, f"{description}: bytes that are not UTF-8 were accepted"
        if status == 2:
            assert re.search(rf"{re.escape(str(path))}:\d+:\d+", output), (
                f"{description}: no {path.name}:LINE:COL in\n{output}")
            with T.time_limit(20):
                T.assert_rejected(broken, folder=folder, filename="again.sk")


@settings(max_examples=EXAMPLES["mutant"], **SETTINGS)
@given(T.broken_specs(kinds=("insert", "delete", "duplicate", "misspell", "line", "zero",
                             "groups"), tokens=COMPILABLE_TOKENS))
def test_mutants_that_still_load_compile_exactly(case):
    """A mutation that leaves the spec valid leaves a network the compiler must get right."""
    broken, description = case
    try:
        network = skdsl.parse(broken, file="<mutant>")
        analysis = skdsl.analyze(network)
    except skdsl.SpecError:
        assume(False)
    assume(analysis.params < 5_000_000 and analysis.mult_adds < 500_000_000
           and analysis.total.activations < 5_000_000)
    T.assert_compiles_exactly(network)


# -- (d) variants of a parametrised spec ----------------------------------------------------------

MINI_SKNET = """\
use "std/resnext.sk"
param M = 2
param G = 8
param W = 16
param R = 4
network mini_sknet:
    input 3x32x32
    classes 10
    stage conv1: conv 3x3, W
    stage conv2: sk_unit(W, 2*W, M=M, G=G, r=R, L=8) x2
    stage conv3: sk_unit(2*W, 4*W, stride=2, M=M, G=G, r=R, L=8)
    stage head:
        avgpool global
        fc classes
"""


@pytest.fixture(scope="module")
def mini_sknet(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("variants") / "mini_sknet.sk"
    path.write_text(MINI_SKNET, encoding="utf-8")
    return path


@settings(max_examples=EXAMPLES["variants"], **SETTINGS)
@given(data=st.data())
def test_variants_compile_exactly_and_keep_the_draw(mini_sknet, data):
    network = data.draw(T.variants(mini_sknet, M=st.integers(1, 4),
                                   G=st.sampled_from([1, 2, 4, 8, 16, 32, 64]),
                                   W=st.sampled_from([8, 12, 16, 24])))
    p = network.parameters
    assert p["W"] % p["G"] == 0, "variants let a G through that does not divide the width"
    unit = network.stages[1].body[0]
    sk = unit.body[0].body[1]
    assert len(sk.branches) == p["M"] and {b.groups for b in sk.branches} == {p["G"]}
    T.assert_compiles_exactly(network)


@settings(max_examples=EXAMPLES["variants"], **SETTINGS)
@given(data=st.data())
def test_another_branch_adds_parameters_and_mult_adds(mini_sknet, data):
    """A property of the architecture itself: each SK branch costs parameters and compute."""
    network = data.draw(T.variants(mini_sknet, M=st.integers(1, 3), G=st.sampled_from([1, 4, 8]),
                                   R=st.sampled_from([2, 4, 16])))
    wider = skdsl.load(mini_sknet, {**network.parameters, "M": network.parameters["M"] + 1})
    before, after = skdsl.analyze(network), skdsl.analyze(wider)
    assert after.params > before.params and after.mult_adds > before.mult_adds


def test_variants_from_text():
    strategy = T.variants(MINI_SKNET.replace('use "std/resnext.sk"\n', 'use "std/resnext.sk"\n\n'),
                          G=st.sampled_from([3, 8]))

    @settings(max_examples=5, **SETTINGS)
    @given(strategy)
    def check(network):
        assert network.parameters["G"] == 8  # G=3 divides no width: always rejected

    check()


# -- the bugs these properties found --------------------------------------------------------------

LINE_SEPARATOR_CASES = {
    "line separator": "network n:\u2028\n",
    "file separator": "network n:\x1c\n",
    "lone carriage return": "param W = 16\rparam X = 1\n",
    "form feed in a comment": "# a\x0cb\nnetwork n:\n    $\n",
}


@pytest.mark.parametrize("text", LINE_SEPARATOR_CASES.values(), ids=LINE_SEPARATOR_CASES.keys())
def test_line_separators_are_spec_errors(text):
    T.assert_rejected(text)


@pytest.mark.parametrize("layer", ["SK[], 8", "SE[]", "SUM[] 8"])
def test_empty_option_brackets_do_not_crash(layer):
    text = f"network n:\n    input 3x8x8\n    stage s: {layer}\n"
    try:
        skdsl.analyze(skdsl.parse(text))
    except skdsl.SpecError as error:
        error.render()


# An integer past 2⁶³−1 is out of the language's range (SK213) before it is a bad G.
@pytest.mark.parametrize("layer, code", [("conv 3x3, 8, G=99999999999999999999", "SK213"),
                                         ("shuffle 1000000000000", "SK203"),
                                         ("conv 3x3, 8, G=1000000000", "SK301")])
def test_huge_groups_are_rejected_quickly(layer, code):
    """Bug 3, fixed: graph._divisor_hint looped over range(G), so a huge G hung `check`."""
    text = f"network n:\n    input 3x8x8\n    stage s: {layer}\n"
    with T.time_limit(2):
        T.assert_rejected(text, code=code)


@pytest.mark.parametrize("layer", ["conv 3x3, 8, stride 99999999999999999999",
                                   "conv 3x3, 8, D=99999999999999999999",
                                   "maxpool 3x3, stride 99999999999999999999",
                                   "conv 3x3, 8, pad 9999999999999",
                                   "conv 3x3, 8, pad 2147483647"])
def test_numbers_torch_cannot_take_are_spec_errors(layer):
    text = f"network n:\n    input 3x8x8\n    stage s: {layer}\n    stage h:\n        gap\n"
    try:
        network = skdsl.parse(text)
        skdsl.analyze(network)
    except skdsl.SpecError as error:
        error.render()
        return  # rejected by check: fine
    T.assert_compiles_exactly(network)

"""Property tests for your own architecture with skdsl.testing and Hypothesis (docs/testing.md).

    pytest examples/property_test_my_net.py      (or: python examples/property_test_my_net.py)

MY_NET stands in for your spec: pass a path instead (`T.variants("specs/my_net.sk", ...)`).
"""

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import skdsl
from skdsl import testing as T

MY_NET = """\
use "std/resnext.sk"
param M = 2      # SK branches
param G = 8      # groups of each branch
param W = 32     # width of the first stage
network my_net:
    input 3x32x32
    classes 10
    stage stem: conv 3x3, W
    stage body: sk_unit(W, 2*W, M=M, G=G, r=4, L=8) x2
    stage down: sk_unit(2*W, 4*W, stride=2, M=M, G=G, r=4, L=8)
    stage head:
        avgpool global
        fc classes
"""

# Every combination we might train; ones that do not fit (G=32 with W=16 ...) are skipped.
MY_VARIANTS = T.variants(MY_NET, M=st.integers(1, 4), G=st.sampled_from([4, 8, 16, 32]),
                         W=st.sampled_from([16, 24, 32]))
FAST = settings(max_examples=10, deadline=None)


@FAST
@given(MY_VARIANTS)
def test_every_variant_compiles_to_the_counted_model(network):
    # Module names, parameters, FLOPs and output shape all equal skdsl.analyze's numbers.
    T.assert_compiles_exactly(network)


@FAST
@given(MY_VARIANTS, st.sampled_from([32, 47, 64, 96]))
def test_every_input_size_gives_the_logits(network, size):
    T.assert_shapes(network, input=(3, size, size), expected_output=(10,))


@FAST
@given(MY_VARIANTS)
def test_another_branch_costs_parameters_and_compute(network):
    # For a file: skdsl.load(path, overrides=...).
    wider = skdsl.parse(MY_NET, overrides={**network.parameters, "M": network.parameters["M"] + 1})
    before, after = skdsl.analyze(network), skdsl.analyze(wider)
    assert after.params > before.params and after.mult_adds > before.mult_adds


def test_a_misspelt_block_is_located():
    error = T.assert_rejected(MY_NET.replace("sk_unit(W", "sk_uint(W"), code="SK201")
    assert (error.span.line, error.span.column) == (9, 17)  # stage body: sk_uint(...


@settings(max_examples=50, deadline=None)
@given(T.mutations(MY_NET, kinds=("delete", "duplicate", "misspell", "indent", "truncate",
                                  "line", "zero", "groups", "bytes")))
def test_no_typo_crashes_skdsl_check(case):
    broken, description = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "my_net.sk"
        path.write_bytes(broken if isinstance(broken, bytes) else broken.encode())
        status, output = T.run_check(path)
    assert status in (0, 2) and "Traceback" not in output, f"{description}\n{output}"


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))

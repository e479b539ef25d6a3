"""SK generalised: `split` (timm's split_input), the attention fcs' options, `select` written
by hand, and timm's SK ResNets (specs/skresnet*.sk) counted as timm counts them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings

import skdsl
from skdsl.core import spec as S
from skdsl import testing as T
from skdsl.core.analysis import EXTRA_COUNTS

ROOT = Path(__file__).resolve().parents[2]
LANGUAGE = ROOT / "docs" / "language.md"


def network(body: str, shape: str = "32x16x16") -> str:
    """A one-stage network whose stage body is `body`, on a `shape` input."""
    lines = "".join(f"        {line}\n" for line in body.strip("\n").splitlines())
    return f"network t:\n    input {shape}\n    stage s:\n{lines}"


def counts(text: str) -> list[tuple[int, int]]:
    """(params, multiply-adds) under the default convention and under every extra one."""
    spec = skdsl.parse(text)
    return [(a.params, a.mult_adds) for a in
            (skdsl.analyze(spec, count=count) for count in ((), tuple(EXTRA_COUNTS)))]


def compiled(text: str, seed: int) -> torch.nn.Module:
    """The compiled network in eval mode, with random batch-norm statistics and affines."""
    torch.manual_seed(seed)
    model = skdsl.compile(skdsl.parse(text)).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model


def same_outputs(first: str, second: str, shape: tuple[int, ...]) -> float:
    """The largest difference between the two networks' outputs when the second one takes the
    first one's weights, tensor for tensor in order (their state dicts must pair by shape)."""
    one, two = compiled(first, 0), compiled(second, 1)
    pairs = list(zip(one.state_dict().values(), two.state_dict()))
    assert len(pairs) == len(two.state_dict()) == len(one.state_dict())
    two.load_state_dict({key: value for value, key in pairs})
    x = torch.randn(2, *shape)
    with torch.no_grad():
        return (one(x) - two(x)).abs().max().item()


# -- split: each branch reads its own slice of the input ------------------------------------------

SPLIT_SK = network("SK[M=2, G=4, r=4, L=8, split yes], 32")
# The same by hand: the input split in two, a branch on each half, Fuse, and select.
SPLIT_BY_HAND = network("""
split 2 -> a, b
branch k3 from a: conv 3x3, 32, G=4
branch k5 from b: conv 3x3, 32, G=4, D=2
u = add k3, k5
branch z from u:
    gap
    conv 1x1, 8
    conv 1x1, 64, bn no, act none
select z, k3, k5
""")


def test_split_branches_read_their_own_slice_of_the_input():
    assert counts(SPLIT_SK) == counts(SPLIT_BY_HAND)
    assert same_outputs(SPLIT_SK, SPLIT_BY_HAND, (32, 16, 16)) < 1e-5
    # Branch 1 on the second half instead is another network: the comparison can fail.
    swapped = SPLIT_BY_HAND.replace("k3 from a", "k3 from b").replace("k5 from b", "k5 from a")
    assert same_outputs(SPLIT_SK, swapped, (32, 16, 16)) > 1e-3


def test_split_keeps_the_modules_and_keys_of_an_sk_unit():
    plain = skdsl.compile(skdsl.parse(SPLIT_SK.replace(", split yes", "")))
    split = skdsl.compile(skdsl.parse(SPLIT_SK))
    assert {n for n, _ in split.named_modules()} - {n for n, _ in plain.named_modules()} == {
        "s.sk.split"}
    assert not list(split.s.sk.split.parameters())
    plain_shapes = {key: tuple(v.shape) for key, v in plain.state_dict().items()}
    split_shapes = {key: tuple(v.shape) for key, v in split.state_dict().items()}
    assert split_shapes.keys() == plain_shapes.keys()
    changed = {key for key in plain_shapes if plain_shapes[key] != split_shapes[key]}
    assert changed == {"s.sk.branch1.conv.weight", "s.sk.branch2.conv.weight"}
    assert split_shapes["s.sk.branch1.conv.weight"] == (32, 16 // 4, 3, 3)  # 16 inputs, G=4


@pytest.mark.parametrize("body, shape", [
    ("SK[M=3, G=2, r=4, L=8, split yes, stride 2], 24", "48x16x16"),
    ("SUM[M=2, G=1, split yes], 16", "32x8x8"),
    ("SK[G=2, d=8, split yes], 16:\n    3x3\n    5x5, G=4\n    1x1", "24x8x8"),
])
def test_split_compiles_exactly(body, shape):
    report = T.assert_compiles_exactly(network(body, shape))
    assert report.params > 0


def test_split_of_one_branch_is_no_split():
    one = network("SK[M=1, G=2, r=4, L=8, split yes], 16")
    assert counts(one) == counts(one.replace(", split yes", ""))
    assert "s.sk.split" not in skdsl.lower(skdsl.parse(one))


def test_split_that_does_not_divide_the_input_is_located():
    text = network("conv 3x3, 30\nSK[M=4, G=1, split yes], 32", "3x32x32")
    error = T.assert_rejected(text, code="SK310")
    assert (error.span.line, error.span.column) == (5, 28)  # at `yes`
    assert "30 input channels" in error.message and "28 or 32" in error.hint


def test_split_draws_groups_that_fit_its_slices():
    branch_groups = T.assert_rejected(network("SK[M=2, G=32, split yes], 32", "32x8x8"),
                                      code="SK301")
    assert "16 input channels of s.sk.branch1" in branch_groups.message


def test_random_specs_write_split():
    written: list[str] = []

    @settings(max_examples=200, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(T.specs())
    def collect(text):
        if "split=yes" in text and not written:
            written.append(text)

    collect()
    assert written, "the random writer never wrote `split yes`"
    T.assert_compiles_exactly(written[0])


# -- the attention fcs ----------------------------------------------------------------------------


def test_the_fcs_default_to_the_papers():
    paper = skdsl.parse(network("SK[2, 32, 16], 128", "128x8x8"))
    spelt = skdsl.parse(network("SK[M=2, G=32, r=16, fc_bias no, fc_groups 1, fc_bn yes, "
                                "fc_act relu, split no], 128", "128x8x8"))
    assert spelt == paper
    sknet50 = skdsl.analyze(skdsl.load("sknet50"))
    assert (sknet50.params, sknet50.mult_adds) == (27_479_784, 4_462_710_784)


def test_fc_options_count_exactly():
    text = network("SK[M=3, G=4, d=12, fc_bias yes, fc_groups 4, fc_bn no, fc_act silu], 32")
    branches = 3 * (32 * (32 // 4) * 9 + 2 * 32)  # grouped 3×3 convs + their BNs
    reduce = 12 * (32 // 4) + 12  # C -> d in 4 groups, with bias, no BN
    logits = 96 * (12 // 4) + 96  # d -> M·C in 4 groups, with bias
    assert skdsl.analyze(skdsl.parse(text)).params == branches + reduce + logits
    T.assert_compiles_exactly(text)
    sk = skdsl.compile(skdsl.parse(text)).s.sk
    assert isinstance(sk.reduce.act, torch.nn.SiLU) and not hasattr(sk.reduce, "bn")
    assert sk.logits.groups == 4 and sk.logits.bias is not None


def test_fc_act_none_leaves_the_reduce_linear():
    sk = skdsl.compile(skdsl.parse(network("SK[G=4, r=4, L=8, fc_act none], 32"))).s.sk
    assert [name for name, _ in sk.reduce.named_children()] == ["conv", "bn"]


@pytest.mark.parametrize("options, what", [("d=12, fc_groups 8", "attention width d=12"),
                                           ("d=16, fc_groups 3", "the 32 channels")])
def test_fc_groups_must_divide_both_widths(options, what):
    error = T.assert_rejected(network(f"SK[G=1, {options}], 32"), code="SK311")
    assert what in error.message and error.span.column == error.span.end_column - 1


# -- select by hand --------------------------------------------------------------------------------


def docs_example(containing: str) -> str:
    """The ```sk example of docs/language.md that contains `containing`."""
    found = [block for block in re.findall(r"^```sk\n(.*?)^```", LANGUAGE.read_text(), re.M | re.S)
             if containing in block]
    assert len(found) == 1, containing
    return found[0]


def test_the_docs_sk_by_hand_is_sk_2_32_16():
    by_hand = network(docs_example("select z, k3, k5"), "128x56x56")
    composite = network("SK[M=2, G=32, r=16], 128", "128x56x56")
    assert counts(by_hand) == counts(composite) == [(22_080, 28_913_664), (22_080, 32_125_248)]
    small = (by_hand.replace("128x56x56", "128x8x8"), composite.replace("128x56x56", "128x8x8"))
    assert same_outputs(small[1], small[0], (128, 8, 8)) < 1e-5
    graph = skdsl.lower(skdsl.parse(by_hand))
    assert graph.nodes["s.select"]["op"] == "select" and graph.nodes["s.select"]["branches"] == 2


def test_select_takes_logits_from_an_fc():
    text = network("""
branch a: conv 3x3, 8
branch b: conv 5x5, 8
u = add a, b
branch z from u:
    gap
    fc 16
select z, a, b
""", "8x8x8")
    T.assert_compiles_exactly(text)


@pytest.mark.parametrize("body, code", [
    ("branch a: conv 3x3, 16\nbranch z:\n    gap\n    conv 1x1, 16, bn no\nselect z, a, input",
     "SK312"),
    ("branch a: conv 3x3, 16\nbranch b: conv 3x3, 8\nbranch z:\n    gap\n"
     "    conv 1x1, 24, bn no\nselect z, a, b", "SK303"),
    ("select input", "SK204"),
    ("select z, input", "SK306"),
])
def test_select_mistakes_are_located(body, code):
    T.assert_rejected(network(body, "16x8x8"), code=code)


# -- timm's SK ResNets ------------------------------------------------------------------------------

# Measured on timm 1.0.31: sum(p.numel()) of timm.create_model(name), and FlopCounterMode's
# total / 2 for one 3×224×224 image.
TIMM = {
    "skresnet18": (11_958_056, 1_814_337_536),
    "skresnet34": (22_282_376, 3_664_237_568),
    "skresnet50": (25_803_160, 4_089_422_336),
    "skresnet50d": (25_822_392, 4_329_062_912),
}
# timm's sk_kwargs: (rd_ratio, rd_divisor) of the SK convolutions.
TIMM_ATTENTION = {"skresnet18": (1 / 8, 16), "skresnet34": (1 / 8, 16),
                  "skresnet50": (1 / 16, 8), "skresnet50d": (1 / 16, 8)}


def timm_make_divisible(value: float, divisor: int) -> int:
    """timm.layers.make_divisible with its defaults, written out."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def sk_items(items):
    for item in items:
        if isinstance(item, S.SelectiveKernel):
            yield item
        for field in ("body", "shortcut"):
            yield from sk_items(getattr(item, field, None) or [])


@pytest.mark.parametrize("name", sorted(TIMM))
def test_timm_sk_resnets_count_as_timm(name):
    spec = skdsl.load(name)
    analysis = skdsl.analyze(spec)
    assert (analysis.params, analysis.mult_adds) == TIMM[name]
    ratio, divisor = TIMM_ATTENTION[name]
    units = list(sk_items(item for stage in spec.stages for item in stage.body))
    assert len(units) == {"skresnet18": 8, "skresnet34": 16}.get(name, 16)
    for sk in units:
        assert sk.split_input and [b.groups for b in sk.branches] == [1, 1]
        assert sk.attention_width == timm_make_divisible(sk.out_channels * ratio, divisor)


@pytest.mark.parametrize("name", ["skresnet18", "skresnet50d"])
def test_timm_sk_resnets_compile_exactly(name):
    T.assert_compiles_exactly(skdsl.load(name), (3, 64, 64))


def test_an_sk_unit_of_skresnet_keeps_sknet50s_layout():
    def unit(name: str) -> set[str]:
        graph = skdsl.lower(skdsl.load(name))
        prefix = "conv3.block1.sk."
        return {node[len(prefix):] for node in graph.nodes if node.startswith(prefix)}

    assert unit("skresnet50") - unit("sknet50") == {"split"}
    assert unit("sknet50") - unit("skresnet50") == set()


def test_skresnet50d_pools_before_its_strided_shortcuts():
    graph = skdsl.lower(skdsl.load("skresnet50d"))
    shortcut = [name for name in graph.nodes if ".shortcut." in name]
    assert [n for n in shortcut if n.startswith("conv2.")] == [
        "conv2.block1.shortcut.conv.conv", "conv2.block1.shortcut.conv.bn"]
    assert [n for n in shortcut if n.startswith("conv3.")] == [
        "conv3.block1.shortcut.pool", "conv3.block1.shortcut.conv.conv",
        "conv3.block1.shortcut.conv.bn"]
    pool = graph.nodes["conv3.block1.shortcut.pool"]
    assert (pool["kernel"], pool["stride"], pool["ceil_mode"]) == ((2, 2), 2, True)
    assert [stage for stage in ("conv2", "conv3", "conv4", "conv5")
            if any(n.startswith(f"{stage}.block2.shortcut") for n in graph.nodes)] == []

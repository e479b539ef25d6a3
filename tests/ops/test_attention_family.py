"""timm's attention family without timm: the new ops against plain-PyTorch references written
from the papers (ECA, ECA-MLP, circular ECA, GCNet's attention pooling and LayerNorm, ResNeSt's
group-major split attention), every std/attention.sk block exact on random inputs, and the
language around them (SK's shorthand options, formal domains, the functions).
benchmarks/timm_attention.py compares the same blocks with timm's modules."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import skdsl
from skdsl.lang.expand import eca_kernel, make_divisible
from skdsl.nn import layers as L
from skdsl.testing import assert_compiles_exactly, assert_rejected

F64 = torch.float64


def network(body: str, shape: str = "16x8x8", uses: str = "") -> str:
    lines = "\n".join(f"        {line}" for line in body.splitlines())
    return f"{uses}network t:\n    input {shape}\n    stage s:\n{lines}\n"


# -- references ---------------------------------------------------------------------------------


def channel_conv_reference(y, weight, bias, circular: bool):
    """out[c] = Σ_j w[j] · y[c + j − p] (+ b), y padded with zeros or wrapped: the 1-D
    cross-correlation along the channels of ECA (Wang et al. 2020, Eq. 14)."""
    channels, k = y.shape[-1], weight.shape[-1]
    pad = (k - 1) // 2
    out = torch.zeros_like(y) + (bias if bias is not None else 0)
    for c in range(channels):
        for j in range(k):
            source = c + j - pad
            if circular:
                source %= channels
            elif not 0 <= source < channels:
                continue
            out[..., c] += weight[j] * y[..., source]
    return out


@pytest.mark.parametrize("circular", [False, True])
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_channel_conv_is_ecas_convolution(kernel, circular):
    module = L.ChannelConv(kernel, circular, 0, bias=True).double()
    x = torch.randn(2, 7, 3, 4, dtype=F64)
    expected = channel_conv_reference(x.movedim(1, -1), module.weight[0, 0], module.bias[0],
                                       circular).movedim(-1, 1)
    torch.testing.assert_close(module(x), expected)


def test_channel_conv_with_hidden_maps_is_eca_mlp():
    module = L.ChannelConv(3, False, 4, bias=True).double()
    y = torch.randn(2, 9, dtype=F64)
    hidden = torch.relu(module.weight[:, 0, 0, None, None] * y + module.bias[:, None, None])
    expected = sum(channel_conv_reference(hidden[n], module.weight2[0, n], None, False)
                   for n in range(4)) + module.bias2
    torch.testing.assert_close(module(y[:, :, None, None])[:, :, 0, 0], expected)


def test_attention_pool_weighs_positions_by_their_softmax():
    x, logits = torch.randn(2, 5, 3, 4, dtype=F64), torch.randn(2, 1, 3, 4, dtype=F64)
    weights = torch.exp(logits.flatten(1)) / torch.exp(logits.flatten(1)).sum(1, keepdim=True)
    expected = torch.einsum("ncp,np->nc", x.flatten(2), weights)
    torch.testing.assert_close(L.AttentionPool()(logits, x)[:, :, 0, 0], expected)


def test_channel_layer_norm_normalises_each_pixel_over_the_channels():
    module = L.ChannelLayerNorm(6, eps=1e-6).double()
    torch.nn.init.normal_(module.weight)
    torch.nn.init.normal_(module.bias)
    x = torch.randn(2, 6, 3, 3, dtype=F64)
    mean, var = x.mean(1, keepdim=True), x.var(1, unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-6) * module.weight[:, None, None] + \
        module.bias[:, None, None]
    torch.testing.assert_close(module(x), expected)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_group_major_select_reads_resnests_radix_softmax_layout(groups):
    branches, channels = 3, 8
    module = L.Select(branches, channels, groups)
    logits = torch.randn(2, branches * channels, dtype=F64)
    inputs = [torch.randn(2, channels, 2, 2, dtype=F64) for _ in range(branches)]
    width = channels // groups
    expected = torch.zeros_like(inputs[0])
    for c in range(channels):
        group, j = divmod(c, width)
        # ResNeSt: group g of the fc writes [branch 0 of its channels, branch 1, ...]
        scores = torch.stack([logits[:, group * branches * width + m * width + j]
                              for m in range(branches)], 1).softmax(1)
        for m in range(branches):
            expected[:, c] += scores[:, m, None, None] * inputs[m][:, c]
    torch.testing.assert_close(module(logits, *inputs), expected)


def test_branch_major_and_group_major_differ_once_the_fc_has_groups():
    logits = torch.randn(1, 16, dtype=F64)
    inputs = [torch.randn(1, 8, 1, 1, dtype=F64), torch.randn(1, 8, 1, 1, dtype=F64)]
    assert not torch.allclose(L.Select(2, 8, 1)(logits, *inputs), L.Select(2, 8, 2)(logits, *inputs))


# -- the std/attention.sk blocks: exact counts on any input ------------------------------------

BLOCKS = ["squeeze_excite()", "effective_se()", "eca()", "eca(k=5, circular=yes)",
          "circular_eca()", "eca_mlp()", "gather_excite()", "gather_excite(extent=2)",
          "global_context()", "global_context_add()", "global_context(add=yes)", "cbam()",
          "light_cbam(kernel=3)", "selective_kernel({c})", "selective_kernel(32, stride=2)",
          "split_attention({c})", "split_attention(32, radix=1, bn=yes)",
          "split_attention(32, stride=2, radix=4, G=2, bn=yes)"]


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(call=st.sampled_from(BLOCKS), channels=st.sampled_from([8, 16, 24, 64]),
       size=st.integers(3, 11))
def test_every_attention_block_compiles_exactly(call, channels, size):
    text = network(call.format(c=channels), f"{channels}x{size}x{size}",
                   'use "std/attention.sk"\n')
    assert_compiles_exactly(text)


# -- the language around them -------------------------------------------------------------------


@pytest.mark.parametrize("call", [
    *(f"attn_bottleneck(16, 64, stride=2, G=4, attn={attn}, avg_down=yes)"
      for attn in ("none", "se", "eca", "gc", "lcbam")),
    "resnest_bottleneck(16, 64, stride=2)", "resnest_bottleneck(16, 32, radix=4, G=2)"])
def test_std_resnet_units_compile_exactly(call):
    assert_compiles_exactly(network(call, "32x9x9", 'use "std/resnet.sk"\n'))


def test_shorthand_branches_take_a_kernel_and_may_all_be_alike():
    spec = skdsl.parse(network("SK[M=3, G=4, kernel 5x5, dilate no, bn no], 16"))
    branches = spec.stages[0].body[0].branches
    assert [(b.kernel, b.dilation) for b in branches] == [((5, 5), 1)] * 3
    assert spec.stages[0].body[0].norm is False
    assert_compiles_exactly(network("SK[M=3, G=4, kernel 5x5, dilate no, bn no], 16"))


def test_listed_branches_refuse_the_shorthand_options():
    error = assert_rejected(network("SK[G=4, dilate no], 16:\n    3x3\n    3x3"), code="SK202")
    assert "lists its branches" in error.message


def test_a_formal_with_a_domain_names_the_value_it_refuses():
    text = ('block unit(c, attn=none in {none, se}):\n    conv 3x3, c\n    if attn == se:\n'
            '        SE\n\n' + network("unit(16, attn=ses)"))
    error = assert_rejected(text, code="SK244")
    assert "did you mean 'se'" in error.hint
    ranged = 'block unit(c, n=1 in 1..3):\n    conv 3x3, c\n\n' + network("unit(16, n=4)")
    assert_rejected(ranged, code="SK244")


def test_attn_bottleneck_refuses_an_unknown_attention():
    error = assert_rejected(network("attn_bottleneck(16, 64, attn=eac)", "64x8x8",
                                    'use "std/resnet.sk"\n'), code="SK244")
    assert "did you mean 'eca'" in error.hint


def test_channel_conv_needs_an_odd_kernel_and_wraps_once():
    assert_rejected(network("channelconv 4"), code="SK313")
    assert_rejected(network("channelconv 35, circular yes"), code="SK313")
    assert_compiles_exactly(network("channelconv 33, circular yes"))


def test_attnpool_needs_one_logit_map_of_the_inputs_size():
    error = assert_rejected(network("branch z: conv 1x1, 2\nattnpool z, input"), code="SK303")
    assert "1×8×8" in error.message


@pytest.mark.parametrize("channels, kernel", [(64, 3), (128, 5), (256, 5), (512, 5),
                                              (1024, 5), (2048, 7)])
def test_eca_kernel_is_the_papers_adaptive_size(channels, kernel):
    assert eca_kernel(channels) == kernel  # ECA-Net, Eq. 12 with γ = 2, b = 1


def test_make_divisible_limit_is_timms_round_limit():
    assert make_divisible(20, 16) == 32  # lost 20% of 20: one multiple more
    assert make_divisible(20, 16, 16, 0) == 16  # timm's attention modules never add one
    assert make_divisible(64 * 0.0625, 8, 8, 0) == 8

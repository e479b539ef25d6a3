"""timm's attention modules against std/attention.sk's blocks: counts and outputs.

For each module of timm's `create_attn` (se, ese, eca, ecam, ceca, ge, gc, gca, cbam, lcbam, sk,
splat) and a few other settings of it, this builds timm's module with random weights and
buffers, a one-stage spec that calls the skdsl block of the same settings on an input of the
same shape, and prints: parameters (timm's `sum(p.numel())` beside `skdsl.analyze`),
multiply-adds (timm's `FlopCounterMode` total / 2 beside the analysis) and the largest output
difference in float32 and float64 after loading timm's tensors into the compiled block. Exits 1
when a count differs or a float64 output differs by more than 1e-9 of its scale.

The weights go over by order: the two state dicts list the same tensors in the same order,
except that timm's SplitAttn runs its radix branches as one conv (and one BN) of radix·C
channels, which fill skdsl's radix branch convs (and BNs) in turn. The networks' converter
(`skdsl weights convert`) maps by name; this script checks the modules themselves.

    python benchmarks/timm_attention.py
    python benchmarks/timm_attention.py --only eca --only splat

Not a test: it needs timm (see benchmarks/timm_equality.py for how it is imported without
torchvision); tests/ops/test_attention_family.py checks the same modules in CI against plain
PyTorch references.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import skdsl  # noqa: E402
from benchmarks.timm_equality import import_timm, randomise  # noqa: E402

# name -> (timm's constructor call, as text over `channels`; skdsl's block call; input C×H×W)
CASES = {
    "se": ("create_attn('se', 64)", "squeeze_excite()", (64, 14, 14)),
    "ese": ("create_attn('ese', 64)", "effective_se()", (64, 14, 14)),
    "eca": ("create_attn('eca', 256)", "eca()", (256, 7, 7)),
    "eca k=7": ("EcaModule(kernel_size=7)", "eca(k=7)", (64, 14, 14)),
    "ecam": ("create_attn('ecam', 256)", "eca_mlp()", (256, 7, 7)),
    "ceca": ("create_attn('ceca', 256)", "circular_eca()", (256, 7, 7)),
    "ge": ("create_attn('ge', 64)", "gather_excite()", (64, 14, 14)),
    "ge extent=2": ("GatherExcite(64, extent=2)", "gather_excite(extent=2)", (64, 15, 13)),
    "ge extent=4": ("GatherExcite(64, extent=4)", "gather_excite(extent=4)", (64, 16, 16)),
    "gc": ("create_attn('gc', 64)", "global_context()", (64, 14, 14)),
    "gca": ("create_attn('gca', 64)", "global_context_add()", (64, 14, 14)),
    "gc add+scale": ("GlobalContext(64, fuse_add=True)", "global_context(add=yes)",
                     (64, 14, 14)),
    "cbam": ("create_attn('cbam', 64)", "cbam()", (64, 14, 14)),
    "lcbam": ("create_attn('lcbam', 64)", "light_cbam()", (64, 14, 14)),
    "sk": ("create_attn('sk', 64)", "selective_kernel(64)", (64, 14, 14)),
    "sk 64→128/2": ("SelectiveKernel(64, 128, stride=2)", "selective_kernel(128, stride=2)",
                    (64, 15, 15)),
    "splat": ("create_attn('splat', 64)", "split_attention(64)", (64, 14, 14)),
    "splat radix=1": ("SplitAttn(64, radix=1)", "split_attention(64, radix=1)", (64, 14, 14)),
    "splat G=2 r=4 bn /2": (
        "SplitAttn(64, 128, stride=2, groups=2, radix=4, norm_layer=torch.nn.BatchNorm2d)",
        "split_attention(128, stride=2, G=2, radix=4, bn=yes)", (64, 15, 15)),
}


def timm_module(timm, call: str) -> torch.nn.Module:
    from timm import layers
    from timm.layers import gather_excite

    # timm 1.0.31's GatherExcite passes its device/dtype dict to ConvMlp with `*dd` (the keys
    # as positional arguments), so it cannot be built at all; this passes none, as intended.
    if not getattr(gather_excite.ConvMlp, "_skdsl_shim", False):
        original = gather_excite.ConvMlp

        def conv_mlp(in_features, hidden, *stray, **options):
            return original(in_features, hidden, **options)

        conv_mlp._skdsl_shim = True
        gather_excite.ConvMlp = conv_mlp
    names = {name: getattr(layers, name) for name in dir(layers) if not name.startswith("_")}
    return eval(call, {"torch": torch, **names})  # noqa: S307: the calls above, nothing else


def block_spec(call: str, shape) -> skdsl.Network:
    text = (f'use "std/attention.sk"\nnetwork attention:\n    input {"x".join(map(str, shape))}'
            f"\n    stage a: {call}\n")
    return skdsl.parse(text, file=str(Path(skdsl.__file__).parent / "specs" / "attention.sk"))


# SplitAttn's one conv and one BN of radix·C channels -> skdsl's radix branches, in turn.
RADIX_SPLITS = {"conv.weight": r"\.branch\d+\.conv\.weight$",
                **{f"bn0.{leaf}": rf"\.branch\d+\.bn\.{leaf}$" for leaf in
                   ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}}


def transfer(source: dict, target: dict) -> dict:
    """timm's tensors onto skdsl's keys: SplitAttn's radix tensors split across the branches
    (a BN's batch counter copied to each), every other tensor in order."""
    out, split = {}, set()
    radix = "fc1.weight" in source and any(".sk.branch" in key for key in target)
    for key, value in source.items():
        if radix and key in RADIX_SPLITS:
            keys = [k for k in target if re.search(RADIX_SPLITS[key], k)]
            pieces = value.chunk(len(keys)) if value.dim() else [value] * len(keys)
            out.update(zip(keys, pieces))
            split.add(key)
    rest = [key for key in target if key not in out]
    out.update(zip(rest, (value for key, value in source.items() if key not in split)))
    return out


def flops(module: torch.nn.Module, shape) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(torch.randn(1, *shape))
    return counter.get_total_flops() // 2


def compare(timm, name: str, seed: int = 0) -> tuple:
    call, block, shape = CASES[name]
    torch.manual_seed(seed)
    reference = timm_module(timm, call).eval()
    randomise(reference, seed)
    spec = block_spec(block, shape)
    analysis = skdsl.analyze(spec)
    compiled = skdsl.compile(spec).eval()
    state = compiled.state_dict()
    compiled.load_state_dict(transfer(reference.state_dict(), state))
    image = torch.randn(2, *shape, generator=torch.Generator().manual_seed(seed + 1))
    differences = []
    for dtype in (torch.float32, torch.float64):
        with torch.no_grad():
            expected = reference.to(dtype)(image.to(dtype))
            got = compiled.to(dtype)(image.to(dtype))
        differences.append(((expected - got).abs().max() / expected.abs().max()).item())
    params = sum(p.numel() for p in reference.parameters())
    return (name, params, analysis.params, flops(reference.float(), shape), analysis.mult_adds,
            *differences)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=list(CASES), action="append",
                        help="check only this module (repeatable)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    timm = import_timm()
    print(f"timm {timm.__version__}, torch {torch.__version__}, skdsl {skdsl.__version__}; "
          "max |Δ| relative to max |output|, batch 2")
    print(f"{'module':<22} {'params timm':>11} {'skdsl':>7} {'mult-adds timm':>14} "
          f"{'skdsl':>10} {'|Δ| f32':>9} {'|Δ| f64':>9}")
    failed = []
    for name in args.only or CASES:
        row = compare(timm, name)
        print(f"{row[0]:<22} {row[1]:>11,} {row[2]:>7,} {row[3]:>14,} {row[4]:>10,} "
              f"{row[5]:>9.1e} {row[6]:>9.1e}")
        if row[1] != row[2] or row[3] != row[4] or not row[6] <= 1e-9:
            failed.append(name)
    print(f"DIFFER: {', '.join(failed)}" if failed else "equal: every module, counts to the "
          "unit, float64 outputs within 1e-9")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

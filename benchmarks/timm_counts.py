"""Exact counts against timm: parameters and multiply-adds of timm's models and of skdsl's specs.

For each timm model that a shipped spec reproduces, and each of timm's attention modules
(benchmarks/timm_attention.py's cases), this prints timm's `sum(p.numel())` and
`FlopCounterMode` total / 2 on one image, beside `skdsl.analyze` of the spec (no module is
built on skdsl's side), and exits 1 when any pair differs. Not a test: it needs timm, which
CI does not have (tests/data/timm_keys holds what the tests need of it).

    python benchmarks/timm_counts.py                 # every pair
    python benchmarks/timm_counts.py --only skresnet18
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import skdsl  # noqa: E402
from benchmarks.timm_attention import CASES, block_spec, flops, timm_module  # noqa: E402
from benchmarks.timm_equality import PAIRS, ROOT, import_timm  # noqa: E402

# Count-only pairs: outputs of these are compared by tests/nn/test_inception.py's own means.
COUNT_PAIRS = [*PAIRS, ("inception_v4", "specs/rivals/inception_v4.sk"),
               ("inception_resnet_v2", "specs/rivals/inception_resnet_v2.sk")]


def timm_counts(timm, name: str, size: int) -> tuple[int, int]:
    model = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, size, size))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=[name for name, _ in COUNT_PAIRS], action="append",
                        help="count only this timm model (repeatable)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    timm = import_timm()
    print(f"timm {timm.__version__}, torch {torch.__version__}, skdsl {skdsl.__version__}")
    print(f"{'timm model':<20} {'params timm':>12} {'skdsl':>12} {'mult-adds timm':>15} "
          f"{'skdsl':>15}")
    differ = []
    for name, spec in COUNT_PAIRS:
        if args.only and name not in args.only:
            continue
        analysis = skdsl.analyze(skdsl.load(ROOT / spec))
        params, macs = timm_counts(timm, name, analysis.input[-1])
        print(f"{name:<20} {params:>12,} {analysis.params:>12,} {macs:>15,} "
              f"{analysis.mult_adds:>15,}")
        if (params, macs) != (analysis.params, analysis.mult_adds):
            differ.append(name)
    if not args.only:
        differ += attention_counts(timm)
    print(f"DIFFER: {', '.join(differ)}" if differ else "equal: every pair, to the unit")
    return 1 if differ else 0


def attention_counts(timm) -> list[str]:
    """timm's attention modules (create_attn) beside std/attention.sk's blocks: the names of
    those whose counts differ (outputs: benchmarks/timm_attention.py)."""
    print(f"\n{'timm attention':<22} {'params timm':>12} {'skdsl':>12} {'mult-adds timm':>15} "
          f"{'skdsl':>15}")
    differ = []
    for name, (call, block, shape) in CASES.items():
        analysis = skdsl.analyze(block_spec(block, shape))
        module = timm_module(timm, call).eval()
        params, macs = sum(p.numel() for p in module.parameters()), flops(module, shape)
        print(f"{name:<22} {params:>12,} {analysis.params:>12,} {macs:>15,} "
              f"{analysis.mult_adds:>15,}")
        if (params, macs) != (analysis.params, analysis.mult_adds):
            differ.append(name)
    return differ


if __name__ == "__main__":
    sys.exit(main())

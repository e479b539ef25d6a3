"""Compile a spec to a torch module, run a random batch, and check torch agrees with the analysis.

    python examples/compile_and_run.py [examples/tiny_sk.sk]
"""

import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import skdsl

path = sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent / "tiny_sk.sk"
spec = skdsl.load(path)
report = skdsl.analyze(spec)
model = skdsl.compile(spec).eval()         # one leaf module per graph node, He-initialised

torch.manual_seed(0)
batch = torch.randn(4, *spec.input)        # N×C×H×W
with torch.no_grad():
    logits = model(batch)
print(f"{spec.name}: {tuple(batch.shape)} -> {tuple(logits.shape)}")

params = sum(p.numel() for p in model.parameters())   # BN running statistics are buffers
with torch.no_grad(), FlopCounterMode(display=False) as counter:
    model(batch[:1])                                   # one image: the analysis is per image
mult_adds = counter.get_total_flops() // 2             # torch counts a multiply-add as 2 FLOPs

print(f"parameters   torch {params:>14,}   analysis {report.params:>14,}")
print(f"mult-adds    torch {mult_adds:>14,}   analysis {report.mult_adds:>14,}")
assert params == report.params and mult_adds == report.mult_adds
assert tuple(logits.shape[1:]) == report.output

"""Sweep SKNet-50's SK settings through parameter overrides, by analysis alone (no model built).

    python examples/sweep_sk_options.py
"""

from pathlib import Path

import skdsl

SPEC = Path(__file__).resolve().parent / "sknet50_options.sk"   # declares param M, G, r, L

print(f"{'M':>2}{'G':>4}{'params':>14}{'GMACs':>8}")
for groups in (16, 32):
    for branches in (1, 2, 3, 4):
        # Like `skdsl build examples/sknet50_options.sk --set M=3 --set G=16` on the CLI.
        spec = skdsl.load(SPEC, overrides={"M": branches, "G": groups})
        report = skdsl.analyze(spec)
        print(f"{branches:>2}{groups:>4}{report.params:>14,}{report.mult_adds / 1e9:>8.3f}")

# Overrides work on inline text as well; M=2, G=32 is the paper's SKNet-50.
text = SPEC.read_text()
paper = skdsl.analyze(skdsl.parse(text, overrides={"M": 2, "G": 32}))
print(f"paper setting: {paper.params:,} params, {paper.mult_adds:,} mult-adds")

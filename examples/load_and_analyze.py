"""Load a spec file and print its exact complexity, stage by stage (no torch needed).

    python examples/load_and_analyze.py [specs/sknet50.sk]
"""

import sys
from pathlib import Path

import skdsl

ROOT = Path(__file__).resolve().parent.parent
path = sys.argv[1] if len(sys.argv) > 1 else ROOT / "specs" / "sknet50.sk"

spec = skdsl.load(path)          # text -> validated, fully expanded spec
report = skdsl.analyze(spec)     # parameters, multiply-adds, shapes, receptive fields

print(f"{spec.name}: input {'x'.join(map(str, report.input))}")
print(f"{'stage':<8}{'output':>14}{'params':>14}{'mult-adds':>16}{'RF':>6}")
for stage in report.stages:
    shape = "x".join(map(str, stage.output))
    field = stage.receptive_field[0] if stage.receptive_field else "all"
    print(f"{stage.name:<8}{shape:>14}{stage.cost.params:>14,}{stage.cost.mult_adds:>16,}"
          f"{field:>6}")
print(f"{'total':<22}{report.params:>14,}{report.mult_adds:>16,}")
print(f"FLOPs (= 2 x mult-adds): {report.total.flops / 1e9:.2f} G")
if spec.paper is not None:
    print(f"paper ({spec.paper.source}): {spec.paper.params_millions}M params, "
          f"{spec.paper.gflops} GFLOPs (multiply-adds)")

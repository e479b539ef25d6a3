"""Parse a spec written inline as a string, then list its layers with their costs.

    python examples/parse_text.py
"""

import skdsl

SPEC = """
block basic(width, stride=1):       # a ResNet basic block, written out
    residual:                       # the 1x1 projection appears when the shape changes
        conv 3x3, width, stride stride
        conv 3x3, width, act none

network little_resnet:
    input 3x32x32
    classes 10
    stage conv1: conv 3x3, 16
    stage conv2: basic(16) x2
    stage conv3: basic(32, stride=2) x2
    stage head:
        avgpool global
        fc classes
"""

spec = skdsl.parse(SPEC)               # `use` paths would resolve against the current directory
report = skdsl.analyze(spec)
for layer in report.layers:            # conv3.block1.shortcut is the automatic projection
    print(f"{layer.name:<24}{str(layer.output):>16}{layer.cost.params:>9,}"
          f"{layer.cost.mult_adds:>13,}")
print(f"{spec.name}: {report.params:,} parameters, {report.mult_adds:,} multiply-adds")

"""How well the latency model predicts: predicted against measured time, per network.

Calibrates this machine (or reads `--calibration`), then for the zoo's ImageNet networks (input
224×224 or larger) and N sampled SKNet-50 variants (examples/spaces/sknet50_space.sk, random
draws, seed 0) predicts one forward pass from the graph alone and times the compiled network
(eval, no gradients, median of passes after warm-up). Prints each network's error, the share
within ±10% per family and overall, and Spearman's rank correlation across the variants; for a
network outside ±10%, the stage whose prediction is furthest off and the op classes that make
most of that stage's predicted time. Not a test: it times things (docs/latency.md).

    python benchmarks/latency_accuracy.py                      # batch 1, 1 thread, 50 variants
    python benchmarks/latency_accuracy.py --batch 8 --variants 20
    python benchmarks/latency_accuracy.py --calibration cal.json --json out.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FAMILIES = [  # (family, pattern on the zoo name), first match wins
    ("SKNet", r"^sknet"), ("SK-ResNet (timm)", r"^skresnet"), ("ResNeSt", r"^resnest"),
    ("ECA / SE-ResNeXt-D", r"^(ecaresnet|seresnext)"), ("SENet", r"^senet"),
    ("ResNeXt (+ BAM/CBAM)", r"^resnext"), ("ShuffleNetV2", r"^shufflenet"),
    ("Inception", r"^inception"), ("DPN", r"^dpn"), ("Residual Attention", r"^attention"),
]


def family(name: str) -> str:
    return next((title for title, pattern in FAMILIES if re.search(pattern, name)), "other")


def imagenet_networks() -> list[str]:
    from skdsl.lang import zoo

    return [name for name in zoo.list_models() if zoo.load(name).input[-1] >= 224]


def variants(count: int) -> list[tuple[str, dict]]:
    from skdsl.explore.counting import Counter
    from skdsl.explore.sampling import draw

    space = Counter(ROOT / "examples/spaces/sknet50_space.sk").space
    points = draw(space, count, "random", seed=0)
    return [("sknet50 " + ",".join(f"{k}={v}" for k, v in point.items()), point)
            for point in points]


def spearman(xs: list[float], ys: list[float]) -> float:
    def ranks(values):
        order = sorted(range(len(values)), key=values.__getitem__)
        result = [0.0] * len(values)
        index = 0
        while index < len(order):
            end = index
            while end + 1 < len(order) and values[order[end + 1]] == values[order[index]]:
                end += 1
            for position in range(index, end + 1):
                result[order[position]] = (index + end) / 2
            index = end + 1
        return result
    rx, ry = ranks(xs), ranks(ys)
    mean_x, mean_y = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mean_x) * (b - mean_y) for a, b in zip(rx, ry))
    norm = (sum((a - mean_x) ** 2 for a in rx) * sum((b - mean_y) ** 2 for b in ry)) ** 0.5
    return cov / norm


def where_off(spec, prediction, calibration) -> str:
    """The stage furthest off (in milliseconds) and the op classes making most of its
    predicted time."""
    from skdsl.core import latency as T
    from skdsl.core.graph import lower_table
    from skdsl.nn.calibration import time_network

    measured = time_network(spec, calibration.device)
    stages = {name.removeprefix("stage "): seconds for name, seconds in measured.items()
              if name != "total"}
    stage = max(stages, key=lambda s: abs(prediction.stages.get(s, 0) - stages[s]))
    by_class: dict[str, float] = {}
    for name, node in lower_table(spec).nodes.items():
        if node.stage == stage and name in prediction.nodes:
            key = T.node_class(node)
            by_class[key] = by_class.get(key, 0.0) + prediction.nodes[name].seconds
    top = sorted(by_class.items(), key=lambda kv: -kv[1])[:3]
    share = sum(by_class.values())
    return (f"stage {stage} {prediction.stages.get(stage, 0) / stages[stage] - 1:+.0%}: "
            + ", ".join(f"{key} {seconds / share:.0%}" for key, seconds in top))


def evaluate(batch: int, threads: int = 1, variant_count: int = 50, calibration_path=None,
             zoo_names=None, say=print) -> tuple[list[dict], str]:
    """Calibrate this machine at `batch` (or read `calibration_path`), then predict and time
    the zoo's ImageNet networks (or `zoo_names`) and `variant_count` SKNet-50 variants: one row
    each, and how the calibration was had."""
    import torch

    import skdsl
    from skdsl.core import latency as T
    from skdsl.lang import zoo
    from skdsl.nn import calibration as C

    torch.set_num_threads(threads)
    device = C.current_device("cpu", threads, batch, "fp32")
    if calibration_path:
        calibration = T.load_calibration(calibration_path)
        T.check_device(calibration, device)
        made = f"read from {calibration_path}"
    else:
        start = time.perf_counter()
        calibration = C.calibrate(device)
        made = f"made in {time.perf_counter() - start:.0f} s"
    say(f"{device.text()}; calibration {made}")
    names = zoo_names if zoo_names is not None else imagenet_networks()
    networks = [(name, family(name), zoo.load(name)) for name in names]
    spec_path = ROOT / "examples/spaces/sknet50_space.sk"
    networks += [(label, "SKNet-50 variants", skdsl.load(spec_path, overrides=point))
                 for label, point in variants(variant_count)]
    rows = []
    for name, group, spec in networks:
        prediction = T.predict(spec, calibration)
        measured = C.time_network(spec, device, stages=False)["total"]
        error = prediction.total / measured - 1
        row = {"network": name, "family": group, "batch": batch,
               "predicted_ms": prediction.milliseconds, "measured_ms": measured * 1e3,
               "error": error, "fallbacks": list(prediction.fallbacks)}
        if abs(error) > 0.10:
            row["where"] = where_off(spec, prediction, calibration)
        rows.append(row)
        say(f"{name:<44} {row['predicted_ms']:9.2f} ms {row['measured_ms']:9.2f} ms "
            f"{error:+7.1%}" + (f"   {row['where']}" if "where" in row else ""))
    return rows, made


def summary(rows: list[dict]) -> tuple[list[list[str]], dict]:
    """Per family and in all: networks, within ±10%, median |error|, the worst; and the
    headline numbers (share within ±10% of the zoo and of the variants, Spearman's ρ)."""
    table = []
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["family"], []).append(row)
    for group, members in [*sorted(groups.items()), ("all", rows)]:
        errors = sorted(abs(r["error"]) for r in members)
        within = sum(e <= 0.10 for e in errors)
        worst = max(members, key=lambda r: abs(r["error"]))
        table.append([group, str(len(members)), f"{within} ({within / len(members):.0%})",
                      f"{errors[len(errors) // 2]:.1%}",
                      f"{worst['network']} {worst['error']:+.1%}"])
    variant_rows = groups.get("SKNet-50 variants", [])
    zoo_rows = [r for r in rows if r["family"] != "SKNet-50 variants"]
    headline = {
        "zoo": (sum(abs(r["error"]) <= 0.10 for r in zoo_rows), len(zoo_rows)),
        "variants": (sum(abs(r["error"]) <= 0.10 for r in variant_rows), len(variant_rows)),
        "spearman": spearman([r["predicted_ms"] for r in variant_rows],
                             [r["measured_ms"] for r in variant_rows])
        if len(variant_rows) > 2 else None,
    }
    return table, headline


def latency_section(settings):
    """Section i of benchmarks/run.py: the accuracy table at each batch of the settings."""
    from benchmarks.suite import Section

    section = Section("i", "Latency model: predicted ÷ measured, 1 thread, fp32")
    section.headers = ["batch", "family", "networks", "within ±10%", "median |error|", "worst"]
    section.data = {"rows": []}
    for batch in settings.latency_batches:
        rows, made = evaluate(batch, settings.threads, settings.latency_variants,
                              zoo_names=settings.latency_zoo, say=lambda text: None)
        table, headline = summary(rows)
        section.rows += [[str(batch), *line] for line in table]
        zoo_within, zoo_total = headline["zoo"]
        var_within, var_total = headline["variants"]
        section.ratios[f"batch {batch}: zoo within ±10%"] = (
            f"{zoo_within}/{zoo_total} ({zoo_within / max(zoo_total, 1):.0%}, goal ≥ 90%)")
        section.ratios[f"batch {batch}: variants within ±10%"] = (
            f"{var_within}/{var_total} ({var_within / max(var_total, 1):.0%}, goal ≥ 90%)")
        if headline["spearman"] is not None:
            section.ratios[f"batch {batch}: Spearman ρ, variants"] = (
                f"{headline['spearman']:.3f} (goal ≥ 0.95)")
        section.notes.append(f"batch {batch}: calibration {made}")
        off = [r for r in rows if "where" in r]
        section.notes += [f"batch {batch}, {r['network']} {r['error']:+.1%}: {r['where']}"
                          for r in off[:12]]
        section.data["rows"] += rows
    section.notes.append("the zoo's ImageNet networks (input ≥ 224) and random draws of "
                         "examples/spaces/sknet50_space.sk (seed 0); a calibration per batch, "
                         "made in the run; each network timed as the median of passes after "
                         "warm-up, eval mode, no gradients (benchmarks/latency_accuracy.py)")
    return section


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", type=int, default=50)
    parser.add_argument("--calibration", type=Path, help="use this calibration file")
    parser.add_argument("--zoo-only", action="store_true")
    parser.add_argument("--json", type=Path, help="write every row here")
    args = parser.parse_args(argv)
    rows, _ = evaluate(args.batch, args.threads, 0 if args.zoo_only else args.variants,
                       args.calibration, say=lambda text: print(text, flush=True))
    table, headline = summary(rows)
    print(f"\n{'family':<28} {'networks':>8} {'within ±10%':>12} {'median |error|':>15}   worst")
    for line in table:
        print(f"{line[0]:<28} {line[1]:>8} {line[2]:>12} {line[3]:>15}   {line[4]}")
    if headline["spearman"] is not None:
        print(f"Spearman's rank correlation over the SKNet-50 variants: {headline['spearman']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

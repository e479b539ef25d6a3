"""Section h: counting the points of a design space (`skdsl explore`'s inner loop).

N draws of examples/spaces/sknet50_space.sk (SKNet-50's SK settings and stage depths, 9,720
networks) are counted by one `Counter` (a shared parse; block calls, stages and stage-level units
expanded, lowered and summed once for all the variants that repeat them; peak memory included),
against, in the same run, what counting a variant cost before explore: `skdsl.analyze` of the
spec loaded afresh with the point as overrides (what `--sweep` does), on the first points of the
same draws, and the peers' way, build + FlopCounterMode, on two of them. Goal: 10,000 variants in
at most 10 s (1 ms a variant) on this 2-core machine.
"""

from __future__ import annotations

import time

from benchmarks.suite import ROOT, Section, Settings, ratio_text


def explore_section(settings: Settings) -> Section:
    import skdsl
    from skdsl.explore.counting import Counter
    from skdsl.explore.points import OK
    from skdsl.explore.sampling import draw

    spec = ROOT / settings.explore_spec
    start = time.perf_counter()
    counter = Counter(spec)
    drawn = draw(counter.space, settings.explore_count, "random", seed=0)
    drawing = time.perf_counter() - start
    start = time.perf_counter()
    points = [counter.count(values, index) for index, values in enumerate(drawn)]
    counting = time.perf_counter() - start
    per_point = counting / len(points)

    built = [point for point in points if point.status == OK][:settings.explore_baseline]
    start = time.perf_counter()
    fresh = [skdsl.analyze(skdsl.load(spec, overrides=point.values)) for point in built]
    before = (time.perf_counter() - start) / len(built)
    agree = all((p.params, p.macs, p.activations) == (a.params, a.mult_adds, a.total.activations)
                for p, a in zip(built, fresh))
    traced = [_build_and_trace(spec, point.values) for point in built[:2]]
    peer = sum(traced) / len(traced)

    distinct = len({tuple(values.values()) for values in drawn})
    section = Section("h", f"Counting a design space: {len(points):,} sampled variants of "
                           f"{spec.stem}")
    section.headers = ["what", "per variant", f"for {len(points):,} variants", "÷ explore"]
    section.rows = [
        ["explore's Counter (shared parse, calls, stages, units)", _ms(per_point),
         f"{counting:.2f} s", "1×"],
        ["before: skdsl.analyze(skdsl.load(spec, overrides))", _ms(before),
         f"{before * len(points):.1f} s (estimated)", f"{before / per_point:.1f}×"],
        ["peers: skdsl.compile + FlopCounterMode", _ms(peer),
         f"{peer * len(points) / 60:.0f} min (estimated)", f"{peer / per_point:,.0f}×"],
        ["drawing the points (Optuna's RandomSampler)", _ms(drawing / len(points)),
         f"{drawing:.2f} s", ""],
    ]
    section.ratios = {
        "per variant": f"{per_point * 1e3:.3f} ms (goal ≤ 1 ms)",
        "speed-up over analyze(load())": ratio_text(before / per_point),
    }
    section.notes = [
        f"{distinct:,} distinct points among the {len(points):,} draws (seed 0) of "
        f"{settings.explore_spec}; every count includes peak memory (resources.inference_bytes)",
        f"counts agree with skdsl.analyze of the freshly loaded variant on the first "
        f"{len(built):,} that build: {'yes' if agree else 'NO'}",
        "before = the way every variant was counted until explore (the --sweep path): read, "
        "parse (cached), expand, lower and count each variant from scratch",
    ]
    section.data = {"per_point": per_point, "before": before, "peer": peer, "agree": agree,
                    "points": len(points), "distinct": distinct}
    return section


def _build_and_trace(spec, values) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import skdsl

    start = time.perf_counter()
    network = skdsl.load(spec, overrides=values)
    model = skdsl.compile(network).eval()
    with torch.no_grad(), FlopCounterMode(display=False):
        model(torch.zeros(1, *network.input))
    return time.perf_counter() - start


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds < 1 else f"{seconds:.2f} s"

"""Sections a and b: counting without a model, and the command line's start-up.

a. `skdsl.analyze` from text (read, parse, expand, lower, count) and from a parsed spec, against
   the peers' way (fvcore, ptflops, thop, torchinfo, FlopCounterMode all build the module and
   trace a forward pass): `skdsl.compile` + `FlopCounterMode` on one image. Then a sweep of
   variants end to end, and a profile of where analysis time goes.
b. `skdsl build SPEC --report` in a fresh interpreter against `python -c pass`.
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from benchmarks.suite import ROOT, Section, Settings, ratio_text


def _median_time(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peer_count(spec) -> tuple[float, float, int]:
    """Build the module and count with FlopCounterMode: (build s, count s, multiply-adds)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import skdsl

    start = time.perf_counter()
    model = skdsl.compile(spec).eval()
    built = time.perf_counter()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, *spec.input))
    counted = time.perf_counter()
    return built - start, counted - built, counter.get_total_flops() // 2


def analysis_section(settings: Settings) -> Section:
    import skdsl
    from skdsl.lang.expand import expand, parse_file
    from skdsl.core.graph import lower_table

    network = settings.analysis
    source = network.file(Path(tempfile.mkdtemp(prefix="skdsl-bench-")))
    spec = skdsl.load(source)
    analysis = skdsl.analyze(spec)
    repeats = 5 if settings.quick else 20
    skdsl.analyze(skdsl.load(source))  # warm: grammar built, std library read
    # What the peers deliver: the totals. The per-stage table is timed on its own row; the
    # per-block, per-layer and per-node tables are built when first read (skdsl.core.analysis).
    # Cold: parse_text caches trees (a sweep or a second load parses once); a first load does not
    from_text = _median_time(_cold(lambda: skdsl.analyze(skdsl.load(source)).mult_adds), repeats)
    again = _median_time(lambda: skdsl.analyze(skdsl.load(source)).mult_adds, repeats)
    from_spec = _median_time(lambda: skdsl.analyze(spec).mult_adds, repeats)
    with_stages = _median_time(lambda: skdsl.analyze(spec).stages, repeats)
    # Where the time from text goes, phase by phase.
    parse = _median_time(_cold(lambda: parse_file(source)), repeats)
    parsed = parse_file(source)
    expand_time = _median_time(_cold(lambda: expand(parsed)), repeats)  # imports parsed afresh
    lower = _median_time(lambda: lower_table(spec), repeats)
    tables = iter([lower_table(spec) for _ in range(repeats)])  # fresh: nothing counted yet
    count = _median_time(lambda: skdsl.analyze(next(tables)).mult_adds, repeats)

    peer_runs = [_peer_count(spec) for _ in range(2 if settings.quick else 3)]
    build = statistics.median(run[0] for run in peer_runs)
    trace = statistics.median(run[1] for run in peer_runs)
    peer = statistics.median(run[0] + run[1] for run in peer_runs)
    agree = all(run[2] == analysis.mult_adds for run in peer_runs)

    sweep_seconds, variants = _sweep(settings)
    sampled = settings.sweep[:: max(1, len(settings.sweep) // (1 if settings.quick else 3))]
    sampled = sampled[: 1 if settings.quick else 3]
    peer_variant = statistics.mean(
        sum(_peer_count(settings.sweep_spec.load(overrides))[:2]) for overrides in sampled)

    section = Section("a", f"Analysis vs build + FlopCounterMode ({network.name})")
    section.headers = ["what", "time", "peers' time ÷ this"]
    section.rows = [
        ["skdsl.analyze(skdsl.load(file)): from text", _ms(from_text), f"{peer / from_text:,.0f}×"],
        ["  of which: parse (lark)", _ms(parse), ""],
        ["  of which: expand (blocks, params, pydantic)", _ms(expand_time), ""],
        ["skdsl.analyze(skdsl.load(file)): again (its trees cached)", _ms(again),
         f"{peer / again:,.0f}×"],
        ["skdsl.analyze(spec): from a parsed spec", _ms(from_spec), f"{peer / from_spec:,.0f}×"],
        ["  of which: lower (repeated blocks once)", _ms(lower), ""],
        ["  of which: count the totals", _ms(count), ""],
        ["skdsl.analyze(spec).stages: with the per-stage table", _ms(with_stages),
         f"{peer / with_stages:,.0f}×"],
        ["peers: skdsl.compile(spec) + FlopCounterMode, 1 image", _ms(peer), "1×"],
        ["  of which: build and initialise the module", _ms(build), ""],
        ["  of which: traced forward pass under FlopCounterMode", _ms(trace), ""],
        [f"sweep of {variants} variants ({settings.sweep_spec.name}, M×G×r), end to end",
         _ms(sweep_seconds), f"{peer_variant * variants / sweep_seconds:,.0f}× (estimated)"],
        [f"  peers, estimated: {variants} × {_ms(peer_variant)} (mean of {len(sampled)} "
         f"measured variants)", _ms(peer_variant * variants), ""],
    ]
    section.ratios = {
        "from a parsed spec": ratio_text(peer / from_spec, "≥ 1000×"),
        "from a parsed spec, with the stage table": ratio_text(peer / with_stages, "≥ 1000×"),
        "from text": ratio_text(peer / from_text, "≥ 100×"),
        "sweep, per variant": _ms(sweep_seconds / variants),
    }
    section.notes = [
        f"multiply-adds agree with FlopCounterMode: {'yes' if agree else 'NO'} "
        f"({analysis.mult_adds:,}); parameters {analysis.params:,}",
        "the peers' time includes building the module, which fvcore, ptflops, thop, torchinfo "
        "and FlopCounterMode all need; skdsl.analyze imports no torch",
        "timed: the totals (what FlopCounterMode's total and sum(p.numel()) give); the stage "
        "table on its own row; block, layer and node tables are built when first read",
        "a repeated block is lowered and counted once per distinct body and input shape "
        f"({_distinct_units(spec)}), then placed again under its own name",
        *_profile_notes(spec, 5 if settings.quick else 20),
    ]
    section.data = dict(from_text=from_text, from_spec=from_spec, with_stages=with_stages,
                        peer=peer, build=build,
                        trace=trace, sweep=sweep_seconds, variants=variants, agree=agree,
                        parse=parse, expand=expand_time, lower=lower, count=count,
                        peer_variant=peer_variant)
    return section


def _distinct_units(spec) -> str:
    from skdsl.core.graph import _Instance, lower_table

    placed = [s for s in lower_table(spec).segments if isinstance(s, _Instance)]
    return f"{len(placed)} blocks, {len({id(p.unit) for p in placed})} distinct"


def _cold(function):
    """`function` with the parsed-tree cache emptied before each call."""
    from skdsl.lang.parser import clear_parse_cache

    def cold():
        clear_parse_cache()
        return function()

    return cold


def _sweep(settings: Settings) -> tuple[float, int]:
    import skdsl

    start = time.perf_counter()
    for overrides in settings.sweep:
        skdsl.analyze(settings.sweep_spec.load(overrides))
    return time.perf_counter() - start, len(settings.sweep)


def _profile_notes(spec, calls: int) -> list[str]:
    """Where `skdsl.analyze(spec)` spends its time, by module and by function (cProfile)."""
    import skdsl

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        skdsl.analyze(spec)
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    total = max(entry[3] for entry in stats.values())  # the outermost call's cumulative time
    by_module: dict[str, float] = defaultdict(float)
    for (filename, _, _), entry in stats.items():
        by_module[_module(filename)] += entry[2]
    modules = sorted(by_module.items(), key=lambda item: -item[1])[:6]
    functions = sorted(stats.items(), key=lambda item: -item[1][3])  # cumulative
    top = [f"{_module(f)}:{name} {entry[3] / total:.0%}" for (f, _, name), entry in functions
           if not name.startswith("<") and _module(f) != "skdsl/__init__.py"][:8]
    return [
        "profile of analyze(spec), own time by module: "
        + ", ".join(f"{name} {seconds / total:.0%}" for name, seconds in modules),
        "profile, cumulative share by function: " + ", ".join(top),
    ]


def _module(filename: str) -> str:
    path = Path(filename)
    if "skdsl" in path.parts:
        return "/".join(path.parts[path.parts.index("skdsl"):])
    if "site-packages" in path.parts:
        return path.parts[path.parts.index("site-packages") + 1]
    return "builtins" if filename == "~" else path.name


def cli_section(settings: Settings) -> Section:
    repeats = 3 if settings.quick else 9
    spec = str(settings.cli_spec.file(Path(tempfile.mkdtemp(prefix="skdsl-bench-"))))
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import skdsl.commands'": [sys.executable, "-c", "import skdsl.commands"],
        f"skdsl build {Path(spec).name} --report": [sys.executable, "-m", "skdsl", "build", spec,
                                                    "--report"],
    }
    times = {name: [] for name in commands}
    for name, command in commands.items():  # warm the file cache
        _run(command)
    for repeat in range(repeats):
        for name, command in commands.items():
            start = time.perf_counter()
            _run(command)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    build = list(commands)[-1]
    probe = _run([sys.executable, "-c",
                  "import sys, skdsl.commands, contextlib, io\n"
                  "with contextlib.redirect_stdout(io.StringIO()):\n"
                  f"    skdsl.commands.main(['build', {spec!r}, '--report'])\n"
                  "print(sorted(m for m in ('torch', 'networkx', 'rich', 'lark', 'pydantic') "
                  "if m in sys.modules))"])
    section = Section("b", "CLI latency (fresh interpreter per run)")
    section.headers = ["command", "median wall time", "÷ python -c pass"]
    base = medians["python -c pass"]
    section.rows = [[name, _ms(seconds), f"{seconds / base:.2f}×"]
                    for name, seconds in medians.items()]
    section.ratios = {"skdsl build --report ÷ python -c pass": ratio_text(medians[build] / base)}
    section.notes = [f"median of {repeats} runs each, interleaved; modules loaded by "
                     f"`skdsl build --report`: {probe.strip()}"]
    section.data = {"medians": medians, "ratio": medians[build] / base}
    return section


def _run(command: list[str]) -> str:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def _ms(seconds: float) -> str:
    if seconds < 0.01:  # three digits where the ratios are read off
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e3:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


__all__ = ["analysis_section", "cli_section"]

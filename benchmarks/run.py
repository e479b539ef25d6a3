"""skdsl's benchmarks, one entry point: prints the ratios a–f (g on a GPU), writes RESULTS.md.

    python benchmarks/run.py                 # the real run: SKNet-50/101, ~20-30 min on 2 cores
    python benchmarks/run.py --quick         # tiny networks, every code path, seconds; written
                                             # to the temp folder, never over RESULTS.md
    python benchmarks/run.py --only c,d      # some sections
    python benchmarks/run.py --threads 2     # torch's intra-op threads (default 1, see below)

a analysis vs build + FlopCounterMode      b CLI latency           c compiled vs reference
d SKNet-50 ÷ ResNeXt-50 (+ polyphase)      e training-step memory  f torch.compile
g GPU throughput and MFU (only where torch.cuda.is_available())
h counting a design space (explore)

Every comparison interleaves its candidates and reports medians of repeats and the median of
per-repeat ratios (benchmarks/timing.py). One intra-op thread is the default: on this shared
2-core machine, two threads wait on each other whenever a colleague's process takes a core (a
forward pass of SKNet-50 measured 1.2 s with one thread and 3.5-6 s with two under load), which
drowns the differences being measured. `--threads 2` measures with both.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/run.py` puts benchmarks/, not the root, first
    sys.path.insert(0, str(ROOT))

from benchmarks.suite import Section, Settings  # noqa: E402

SECTIONS = "abcdefghi"
FULL_OUTPUT = ROOT / "benchmarks" / "RESULTS.md"  # tracked: the numbers docs/performance.md quotes
# --quick times tiny networks: its numbers go elsewhere, never over the tracked ones
QUICK_OUTPUT = Path(tempfile.gettempdir()) / "skdsl-benchmarks-quick" / "RESULTS.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny networks, a few seconds")
    parser.add_argument("--only", default=SECTIONS, metavar="LETTERS",
                        help="the sections to run, such as c,d (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, help="timed repeats per comparison")
    parser.add_argument("--output", type=Path,
                        help="where to write the results (default benchmarks/RESULTS.md, and "
                             f"{QUICK_OUTPUT} with --quick); the sections also go to the .json "
                             "beside it, and --only replaces just its sections there")
    args = parser.parse_args(argv)
    args.output = args.output or (QUICK_OUTPUT if args.quick else FULL_OUTPUT)
    if args.quick and _holds_full_results(args.output):
        parser.error(f"--quick would overwrite the full run's results in {args.output}: "
                     "give another --output")
    wanted = [letter for letter in SECTIONS if letter in args.only.lower()]
    settings = (Settings.quick_settings if args.quick else Settings.full)(
        threads=args.threads, **({"repeats": args.repeats} if args.repeats else {}))
    command = "python benchmarks/run.py" + (f" {' '.join(argv)}" if argv else
                                            f" {' '.join(sys.argv[1:])}".rstrip())
    sections = run(settings, wanted)
    for section in sections:
        repeats = f", {settings.repeats} timed repeats" if section.key in "cdfg" else ""
        section.notes.append(f"measured {_now()} by `{command}` ({settings.threads} thread"
                             f"{'s' if settings.threads > 1 else ''}{repeats})")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sections = merge(args.output.with_suffix(".json"), sections, settings)
    args.output.write_text(markdown(sections, settings, command), encoding="utf-8")
    print(f"\nwrote {args.output} and {args.output.with_suffix('.json')}")
    return 0


def _holds_full_results(output: Path) -> bool:
    """Whether `output`'s JSON holds a full run's sections (quick ones may be replaced)."""
    try:
        return json.loads(output.with_suffix(".json").read_text(encoding="utf-8"))["quick"] is False
    except (OSError, ValueError, KeyError, TypeError):
        return output.resolve() == FULL_OUTPUT.resolve()


def merge(path: Path, fresh: list[Section], settings: Settings) -> list[Section]:
    """The fresh sections, plus those of an earlier run of the same kind not measured now;
    all saved to `path` (JSON)."""
    kept: dict[str, Section] = {}
    if path.is_file():
        try:
            earlier = json.loads(path.read_text(encoding="utf-8"))
            if earlier.get("quick") == settings.quick:
                kept = {item["key"]: Section(**item) for item in earlier["sections"]}
        except (ValueError, KeyError, TypeError):
            kept = {}
    kept.update({section.key: section for section in fresh})
    sections = [kept[key] for key in SECTIONS if key in kept]
    saved = [{**dataclasses.asdict(section), "data": {}} for section in sections]
    path.write_text(json.dumps({"quick": settings.quick, "sections": saved}, indent=1,
                               ensure_ascii=False), encoding="utf-8")
    return sections


def _now() -> str:
    return f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"


def run(settings: Settings, wanted: list[str]) -> list[Section]:
    """Run the wanted sections in order, printing each as it finishes."""
    import torch

    torch.set_num_threads(settings.threads)
    from benchmarks import analysis_speed, explore_speed, gpu, latency_accuracy, memory, model_speed

    builders = {"a": analysis_speed.analysis_section, "b": analysis_speed.cli_section,
                "c": model_speed.reference_section, "d": model_speed.selection_section,
                "e": memory.memory_section, "f": model_speed.compile_section,
                "g": gpu.gpu_section, "h": explore_speed.explore_section,
                "i": latency_accuracy.latency_section}
    sections = []
    for letter in wanted:
        start = time.perf_counter()
        section = builders[letter](settings)
        section.notes.append(f"section took {time.perf_counter() - start:,.0f} s")
        print(console(section), flush=True)
        sections.append(section)
    return sections


def console(section: Section) -> str:
    lines = [f"\n{section.key}. {section.title}"]
    if section.rows:
        widths = [max(len(str(row[i])) for row in [section.headers, *section.rows])
                  for i in range(len(section.headers))]
        for row in [section.headers, *section.rows]:
            lines.append("  " + "  ".join(str(cell).ljust(width)
                                          for cell, width in zip(row, widths)))
    lines += [f"  => {name}: {value}" for name, value in section.ratios.items()]
    lines += [f"  - {note}" for note in section.notes]
    return "\n".join(lines)


def markdown(sections: list[Section], settings: Settings, command: str) -> str:
    import torch

    runs: dict[str, list[str]] = {}
    for section in sections:
        for note in section.notes:
            found = re.match(r"measured .* by `(.*)`", note)
            if found:
                runs.setdefault(found.group(1), []).append(section.key)
    commands = "; ".join(f"`{run}` ({', '.join(keys)})" for run, keys in runs.items())
    lines = [
        "# skdsl benchmark results",
        "",
        f"- commands: {commands or f'`{command}`'}",
        f"- written: {_now()}",
        f"- machine: {machine()}",
        f"- torch {torch.__version__}, Python {platform.python_version()}, "
        f"{settings.threads} intra-op thread{'s' if settings.threads > 1 else ''} "
        f"(see benchmarks/run.py for why one by default)",
        f"- GPU: {gpu_name()}",
        f"- networks: {settings.sknet.name}, {settings.resnext.name}, analysis on "
        f"{settings.analysis.name}; batch {settings.batch}; timed repeats after a warm-up, "
        f"interleaved, medians (each section says how many)",
        "",
        "## Headline ratios",
        "",
        "| section | measure | value |",
        "|---|---|---|",
    ]
    for section in sections:
        for name, value in section.ratios.items():
            lines.append(f"| {section.key} | {name} | {value} |")
    for section in sections:
        lines += ["", f"## {section.key}. {section.title}", ""]
        if section.rows:
            lines.append("| " + " | ".join(section.headers) + " |")
            lines.append("|" + "---|" * len(section.headers))
            lines += ["| " + " | ".join(str(cell) for cell in row) + " |"
                      for row in section.rows]
            lines.append("")
        lines += [f"- {note}" for note in section.notes]
    return "\n".join(lines) + "\n"


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            names = [line.split(":", 1)[1].strip() for line in info
                     if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    memory = ""
    try:
        pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages * page / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.1f} at the end (shared machine)"
    return f"{model}, {os.cpu_count()} cores{memory}, {platform.system()}{load}"


def gpu_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return "none available on this machine: the GPU section (g) was not measured"


if __name__ == "__main__":
    sys.exit(main())

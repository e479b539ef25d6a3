"""`skdsl compare`: networks side by side (the comparison itself is skdsl/report/compare.py)."""

from __future__ import annotations

from .arguments import (add_command, add_count_argument, add_imports_argument,
                        add_input_argument, add_latency_argument, add_overrides_argument,
                        add_strict_argument, add_sweep_argument, add_switches,
                        latency_calibration, variant_flags)
from .output import print_rich, to_json_text

EPILOG = """\
examples:
  skdsl compare specs/resnext50_32x4d.sk specs/senet50.sk specs/sknet50.sk \\
      --baseline specs/resnext50_32x4d.sk           Table 1, with the paper's figures beside
  skdsl compare specs/sknet50.sk --baseline specs/resnext50_32x4d.sk --stages
  skdsl compare specs/ablations/sk_pair.sk --sweep k2=3,5,7 --format markdown
  skdsl compare specs/sknet101.sk --sweep L3=32,16  the two readings of SKNet-101
  skdsl compare specs/sknet50.sk --count bn,add --format json

--set and --sweep apply to each listed spec that declares the parameter; --sweep values are
comma-separated and repeated --sweeps give their cross product. FLOPs = 2 × multiply-adds; the
paper's "GFLOPs" column counts multiply-adds.
"""


def register(commands) -> None:
    from ..report.compare import FORMATS

    parser = add_command(
        commands, "compare", run,
        "networks side by side: params, multiply-adds, Δ vs a baseline, paper",
        "Compare networks: parameters, multiply-adds and FLOPs, their difference from\n"
        "a baseline, and the paper's own figures where a spec has a `paper` line.", EPILOG)
    parser.add_argument("specs", metavar="SPEC", nargs="+",
                        help=".sk spec files (or .json specs written by `skdsl spec --json`)")
    add_overrides_argument(parser, "of the specs that declare it")
    add_sweep_argument(parser)
    parser.add_argument("--baseline", metavar="SPEC",
                        help="the spec the Δ columns compare with (default: the first row)")
    parser.add_argument("--format", choices=FORMATS, default="rich",
                        help="rich (a table, the default), markdown, csv or json")
    add_switches(parser, stages="also one row per stage of every network")
    add_input_argument(parser)
    add_count_argument(parser)
    add_latency_argument(parser, "each network's")
    add_imports_argument(parser)
    add_strict_argument(parser, "specs", "baseline")


def run(args) -> int:
    from ..report import compare

    input_shape, count, overrides, sweeps = variant_flags(args)
    comparison = compare.compare(
        args.specs, overrides=overrides, sweeps=sweeps, baseline=args.baseline,
        input_shape=input_shape, count=count, stages=args.stages,
        allow_imports_outside=args.allow_imports_outside,
        calibration=latency_calibration(args.latency))
    if args.format == "rich":
        print_rich(compare.rich_table(comparison))
    elif args.format == "markdown":
        print(compare.markdown_table(comparison), end="")
    elif args.format == "csv":
        print(compare.csv_text(comparison), end="")
    else:
        print(to_json_text(comparison.to_json()))
    return 0

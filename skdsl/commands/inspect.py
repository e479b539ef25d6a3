"""`skdsl inspect attention`: the command line of the scale experiment (docs/cli.md)."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
The paper's section 4.4: show each validation image at several scales (the central object
enlarged 1.0x, 1.5x, 2.0x) and record every SK unit's select weights. Per unit and scale it
reports the mean attention difference (the weight of the branch with the largest receptive
field minus the smallest, averaged over channels), its paired change from the first scale with
the standard error, per class and per channel, and the top-1 at each scale. Units are named as
the paper names them (SK_3_4: 4th unit of stage conv3) or by their graph name."""

EPILOG = """\
protocols:
  zoom    crop the central 1/s of the image and resize it back (the paper's; any --data)
  render  draw each synthetic object s times larger (--data synthetic only)

examples:
  skdsl inspect attention specs/sknet_tiny.sk --checkpoint runs/tiny/best.pt --out attn
  skdsl inspect attention specs/sknet_tiny.sk --checkpoint runs/tiny/best.pt --protocol render
  skdsl weights convert --from timm specs/sknet50.sk skresnext50_32x4d.pth sknet50.pt
  skdsl inspect attention specs/sknet50.sk --checkpoint sknet50.pt \\
      --data imagefolder:/data/imagenet --units SK_2_3,SK_3_4,SK_5_3 --limit 5000 --out attn50"""


def register(commands) -> argparse.ArgumentParser:
    """Add `skdsl inspect attention` to skdsl's subcommands (called from skdsl.commands)."""
    from .arguments import add_spec_argument

    inspect = commands.add_parser(
        "inspect", help="look inside a trained network: SK attention across object scales",
        description="Look inside a trained network.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = inspect.add_subparsers(dest="inspect_command", metavar="WHAT", required=True)
    parser = actions.add_parser(
        "attention", help="the paper's section 4.4: select weights as objects grow",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_spec_argument(parser)
    parser.add_argument("--checkpoint", metavar="FILE", required=True,
                        help="weights: a checkpoint of `skdsl train`, or converted weights")
    parser.add_argument("--data", metavar="SOURCE",
                        help="the images, as for `skdsl train` (default: the checkpoint's)")
    parser.add_argument("--scales", metavar="S,S,...", default="1.0,1.5,2.0",
                        help="object scales from 1 to 8; the first is the reference "
                             "(default 1.0,1.5,2.0)")
    parser.add_argument("--units", metavar="NAME,...",
                        help="the SK units to report, such as SK_2_3,SK_3_4 (default: all)")
    parser.add_argument("--protocol", choices=("zoom", "render"), default="zoom",
                        help="how objects are enlarged (default zoom)")
    parser.add_argument("--out", metavar="DIR",
                        help="write attention.json and, with matplotlib, two figures there")
    parser.add_argument("--json", action="store_true",
                        help="print every figure as JSON instead of the table")
    parser.add_argument("--batch-size", metavar="N", type=int, default=64,
                        help="images per forward pass (default 64)")
    parser.add_argument("--limit", metavar="N", type=int,
                        help="use N images spread over the validation split (default: all)")
    parser.add_argument("--memory-budget", metavar="SIZE",
                        help="memory the forward passes may use, such as 8GiB (default: what is "
                             "free); a --batch-size that would not fit is refused before it runs")
    parser.set_defaults(run=run)
    return inspect


def run(args: argparse.Namespace) -> int:
    """`skdsl inspect attention`: the table (or JSON) on stdout, files under --out; 0 when done."""
    from ..inspect import attention, output
    from ..inspect.units import figure_units
    from ..core.resources import parse_budget
    from .arguments import parse_data_source, parse_overrides
    from .output import print_json, print_rich

    request = attention.AttentionRequest(
        args.spec, args.checkpoint, parse_data_source(args.data), parse_overrides(args.overrides),
        _scales(args.scales), _names(args.units), args.protocol, args.limit, args.batch_size,
        bool(args.allow_imports_outside), parse_budget(args.memory_budget))
    if args.out:
        output.check_out(args.out)  # before the forward passes, which take minutes
    result = attention.inspect_attention(request)
    if args.out:
        picked = figure_units([unit["name"] for unit in result["units"]])
        written = output.write_results(result, args.out, picked)
        result = {**result, "written": [str(path) for path in written]}
    if args.json:
        print_json(result)
    else:
        print_rich(output.table(result))
        for path in result.get("written", []):
            print(f"wrote {path}")
        if args.out and not output.plotting_available():
            print("no figures: they need matplotlib (pip install 'skdsl[plot]')")
    return 0


def _scales(text: str) -> tuple[float, ...]:
    from ..inspect.attention import ScaleRequestError

    parts = text.split(",")
    if any(not part.strip() for part in parts):  # `1,,2` is a slip, not the scales 1 and 2
        raise ScaleRequestError(f"--scales {text!r}: an empty scale between commas",
                                hint="such as --scales 1.0,1.5,2.0")
    try:
        return tuple(float(part) for part in parts)
    except ValueError:
        raise ScaleRequestError(f"--scales {text!r}: expected numbers separated by commas",
                                hint="such as --scales 1.0,1.5,2.0") from None


def _names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    parts = tuple(part.strip() for part in text.split(","))
    if not all(parts):  # as --scales: `a,,b` is a slip, never the units a and b
        from ..inspect.units import UnknownUnitError

        raise UnknownUnitError(f"--units {text!r}: an empty unit name between commas",
                               hint="such as --units SK_3_1,SK_2_1")
    return parts


__all__ = ["register", "run"]

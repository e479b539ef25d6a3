"""`skdsl spec`: the expanded spec as JSON, or the JSON schema of specs."""

from __future__ import annotations

import argparse

from ..errors import CliError
from .arguments import add_spec_argument, load_spec
from .output import print_json


def register(commands) -> None:
    parser = commands.add_parser(
        "spec", help="print the expanded spec as JSON, or the JSON schema of specs",
        description="Print a spec fully expanded (templates called, repeats unrolled, every\n"
                    "layer named) as JSON; `skdsl build FILE.json` reads it back.",
        epilog="examples:\n  skdsl spec specs/sknet50.sk --json > sknet50.json\n"
               "  skdsl spec --schema > skdsl.schema.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_spec_argument(parser, optional=True)
    parser.add_argument("--json", action="store_true",
                        help="the spec as JSON (the default, and the only format)")
    parser.add_argument("--schema", action="store_true",
                        help="the JSON schema of specs instead of a spec")
    parser.set_defaults(run=run)


def run(args) -> int:
    if args.schema:
        if args.spec is not None or args.overrides:
            raise CliError("--schema takes no SPEC or --set", code="SK505")
        from ..spec import json_schema

        print_json(json_schema())
        return 0
    if args.spec is None:
        raise CliError("name a SPEC to print, or ask for --schema", code="SK505",
                       hint="skdsl spec specs/sknet50.sk --json")
    print_json(load_spec(args).model_dump(mode="json"))
    return 0

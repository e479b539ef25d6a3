"""`skdsl spec`: the expanded spec as JSON, or the JSON schema of specs."""

from __future__ import annotations

from ..base.errors import CliError
from .arguments import add_command, add_spec_argument, add_switches, load_spec
from .output import print_json


def register(commands) -> None:
    parser = add_command(
        commands, "spec", run, "print the expanded spec as JSON, or the JSON schema of specs",
        "Print a spec fully expanded (templates called, repeats unrolled, every\n"
        "layer named) as JSON; `skdsl build FILE.json` reads it back.",
        "examples:\n  skdsl spec specs/sknet50.sk --json > sknet50.json\n"
        "  skdsl spec --schema > skdsl.schema.json")
    add_spec_argument(parser, optional=True)
    add_switches(parser, json="the spec as JSON (the default, and the only format)",
                 schema="the JSON schema of specs instead of a spec")


def run(args) -> int:
    if args.schema:
        if args.spec is not None or args.overrides:
            raise CliError("--schema takes no SPEC or --set", code="SK505")
        from ..core.spec import json_schema

        print_json(json_schema())
        return 0
    if args.spec is None:
        raise CliError("name a SPEC to print, or ask for --schema", code="SK505",
                       hint="skdsl spec specs/sknet50.sk --json")
    print_json(load_spec(args).model_dump(mode="json"))
    return 0

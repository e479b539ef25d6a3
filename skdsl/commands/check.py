"""`skdsl check`: parse, expand and lower a spec, inferring every shape."""

from __future__ import annotations

from .arguments import (add_command, add_input_argument, add_spec_argument, load_spec,
                        parse_input_shape)


def register(commands) -> None:
    parser = add_command(commands, "check", run,
                         "parse, expand and infer every shape; report the first mistake",
                         "Check a spec: parse, expand and lower it, inferring every shape.")
    add_spec_argument(parser)
    add_input_argument(parser)


def run(args) -> int:
    from ..report import network as report
    from ..core.analysis import analyze

    input_shape = parse_input_shape(args.input)
    print(report.check_line(analyze(load_spec(args), input_shape)))
    return 0

"""Moved to skdsl/commands/; this alias keeps `skdsl.cli.main` and the helpers others import.

`COMMANDS` here is a copy: a caller may extend it, and `main` and `build_parser` here use it.
"""

from __future__ import annotations

from .commands import program
from .commands.arguments import (add_input_argument, add_overrides_argument,  # noqa: F401
                                 add_spec_argument, parse_input_shape, parse_overrides)
from .commands.output import print_json as _print_json  # noqa: F401
from .commands.output import print_rich as _print_rich  # noqa: F401
from .commands.output import to_json_text  # noqa: F401
from .commands.program import EXIT_OK  # noqa: F401

COMMANDS = list(program.COMMANDS)


def build_parser():
    return program.build_parser(COMMANDS)


def main(argv: list[str] | None = None) -> int:
    return program.main(argv, build_parser)

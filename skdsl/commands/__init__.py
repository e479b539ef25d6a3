"""The `skdsl` command line: a module per command, arguments.py for the flags they share,
output.py for what they print, program.py for the parser and the entry point
(`skdsl = "skdsl.commands:main"`).

Nothing below this package imports it (nor argparse): library code raises errors that name
settings, which program.py prints with the flags' names.
"""

from .program import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]

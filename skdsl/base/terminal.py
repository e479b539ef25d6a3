"""The width of the terminal that rich tables are fitted to (report.FittedTable): read here once
for every command and for the training summary, and the environment rich is given so that it
reads no other. Imports nothing but the standard library."""

from __future__ import annotations

import os
import sys

PIPED_WIDTH = 160  # a wrapped table is hard to read and to grep
MAX_WIDTH = 1_000  # rich pads every line to the width: COLUMNS=10**9 must not fill the memory


def console_width(stream=None) -> int:
    """The width rich output to `stream` (default stdout) is fitted to: COLUMNS when it is a
    positive whole number (at most MAX_WIDTH), else the terminal's, else PIPED_WIDTH. COLUMNS=0,
    negative or not a number says nothing about the screen (an unset shell variable, a broken
    wrapper), so it is read as unknown, never as zero."""
    try:
        width = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        width = 0
    if width > 0:
        return min(width, MAX_WIDTH)
    stream = sys.stdout if stream is None else stream
    if stream.isatty():
        try:
            return os.get_terminal_size(stream.fileno()).columns or PIPED_WIDTH
        except (OSError, ValueError):
            pass
    return PIPED_WIDTH


def rich_environment() -> dict[str, str]:
    """The environment to give a rich Console (its `_environ`): this process's without COLUMNS
    and LINES. The width is decided here (`console_width`); rich would read them again, and
    int() of a 5,000-digit COLUMNS raises."""
    return {name: value for name, value in os.environ.items() if name not in ("COLUMNS", "LINES")}

"""What commands print: rich tables, indented JSON, text to stdout or a file."""

from __future__ import annotations

import json
import sys

from ..base import files
from ..base.errors import CliError
from ..base.terminal import console_width, rich_environment




def rich_console():
    """A rich Console on stdout, as every command prints with."""
    from rich.console import Console

    # The width is passed so that rich never reads COLUMNS itself (it would take 0 as a width).
    return Console(file=sys.stdout, width=console_width(), highlight=False, soft_wrap=False,
                   _environ=rich_environment())


def print_rich(*renderables) -> None:
    # No cropping: a table too wide for a tiny console prints as a list whose long lines
    # must stay whole, a number with them; the terminal wraps them for the eye.
    console = rich_console()
    for renderable in renderables:
        console.print(renderable, crop=False)


def print_json(value) -> None:
    print(to_json_text(value))


def to_json_text(value, indent: str = "") -> str:
    """JSON indented by two spaces, with lists of numbers and words kept on one line."""
    inner = indent + "  "
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {to_json_text(v, inner)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in value):
        items = [f"{inner}{to_json_text(v, inner)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{indent}]"
    return json.dumps(value, ensure_ascii=False)


def check_output(output: str | None) -> None:
    """SK504 now, before the work, when the file `output` could not be written (None: stdout)."""
    if output is None:
        return
    try:
        files.check_writable(output)
    except OSError as error:
        raise _unwritable(output, error) from None


def write_text(text: str, output: str | None) -> None:
    """`text` to the file `output`, or to stdout when None; SK504 when it cannot be written."""
    if output is None:
        sys.stdout.write(text)
        return
    try:  # a device, FIFO or socket is refused, never replaced by a regular file
        files.write_text(output, text)
    except OSError as error:
        raise _unwritable(output, error) from None


def _unwritable(output: str, error: OSError) -> CliError:
    return CliError(f"cannot write '{output}': {error.strerror or error}", code="SK504")

"""What commands print: rich tables, indented JSON, text to stdout or a file."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..errors import CliError


def print_rich(*renderables) -> None:
    from rich.console import Console

    # Piped output gets a generous width (a wrapped table is hard to read and to grep), unless
    # COLUMNS asks for another; rich reads COLUMNS itself when the width is None.
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
    console = Console(file=sys.stdout, width=width, highlight=False, soft_wrap=False)
    for renderable in renderables:
        console.print(renderable)


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


def write_text(text: str, output: str | None) -> None:
    """`text` to the file `output`, or to stdout when None; SK504 when it cannot be written."""
    if output is None:
        sys.stdout.write(text)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as error:
        raise CliError(f"cannot write '{output}': {error.strerror or error}", code="SK504") from None

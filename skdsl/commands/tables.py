"""`skdsl tables`: the paper's tables regenerated from the specs (skdsl/report/tables/)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..base.errors import CliError
from ..report.tables.command import DEFAULT_MANIFEST, DEFAULT_OUTPUT
from .arguments import add_command, add_switches
from .output import check_output, write_text


def register(commands) -> None:
    parser = add_command(
        commands, "tables", run,
        "regenerate docs/paper-tables.md: the paper's tables from the specs",
        "Compute every row of the paper's Tables 1–7 (and Table 2's rivals) from\n"
        "the specs named in the manifest, check them against the paper and\n"
        "tables.md, and write the page.",
        "examples:\n  skdsl tables\n  skdsl tables --check\n"
        "  skdsl tables --output - | less\n\n"
        "exit status: 0 written (or fresh with --check); 1 with --check when the page is\n"
        "stale, or when a row's count differs from tables.md's or a gap to the paper has\n"
        "no reason in the manifest; 2 a mistake in the manifest or the command line.")
    parser.add_argument("--manifest", metavar="TOML",
                        help=f"the manifest (default: {DEFAULT_MANIFEST})")
    parser.add_argument("--output", "-o", metavar="FILE",
                        help=f"the page to write or check (default: {DEFAULT_OUTPUT}); - = stdout")
    add_switches(parser, check="write nothing; exit 1 when the page differs from a fresh one")


def run(args) -> int:
    from ..report.tables import consistency_problems, evaluate, load_manifest, render
    from ..report.tables.command import default_page, manifest_path

    path = manifest_path(args.manifest)
    manifest = load_manifest(path)
    output = args.output or default_page(manifest)
    if not args.check:
        check_output(output if output not in ("-", None) else None)
    results = evaluate(manifest)
    text = render(manifest, results)
    problems = consistency_problems(results)
    for problem in problems:
        print(f"tables: {problem}", file=sys.stderr)
    rows = len(manifest.rows)
    if args.check:
        fresh = _check(output, text, rows, path)
    else:
        fresh = _write(output, text, rows)
    return 0 if fresh and not problems else 1


def _check(output: str | None, text: str, rows: int, manifest_path: Path) -> bool:
    """Is the page at `output` the fresh `text`? (True where there is no page to compare.)"""
    if output == "-":
        raise CliError("--check compares with a file: leave out --output -", code="SK505")
    if output is None:
        print(f"{rows} rows checked; no {DEFAULT_OUTPUT} beside {manifest_path} to compare "
              f"(an installed skdsl ships its specs, not its docs)")
        return True
    from ..base import files

    try:  # a FIFO or device at `output` is refused here, as `skdsl tables -o` refuses it
        current = files.read_text(output, files.MAX_TEXT_BYTES)
    except files.FileProblem as problem:
        if problem.kind != "missing":
            raise CliError(f"cannot compare with '{output}': {problem}", code="SK504") from None
        current = None
    if current != text:
        print(f"tables: {output} is stale; run `skdsl tables` to regenerate it", file=sys.stderr)
        return False
    print(f"{output} is up to date ({rows} rows)")
    return True


def _write(output: str | None, text: str, rows: int) -> bool:
    to_file = output not in ("-", None)
    write_text(text, output if to_file else None)
    if to_file:
        print(f"wrote {output} ({rows} rows)")
    return True

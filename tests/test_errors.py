"""docs/errors.md is executable: every example runs and prints exactly what the page shows.

Sections read `## SKnnn — title`; fenced blocks `sk file=NAME` (optionally `encoding=latin-1`),
`json file=NAME` or `text file=NAME` are written into a fresh directory; a note "(`NAME` is a directory)" makes a
directory; a note "(`NAME` as written by `skdsl spec PATH --json`)" writes that JSON; the
`console` block's `$ skdsl ...` line is run with `skdsl.cli.main` and its stderr compared verbatim.
"""

import re
import shlex
from pathlib import Path

import pytest

from skdsl import cli

ROOT = Path(__file__).resolve().parent.parent
PAGE = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
SECTIONS = re.findall(r"^## (SK\d{3}) — .*?\n(.*?)(?=^## |\Z)", PAGE, re.S | re.M)
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)


def _examples():
    return [(code, body) for code, body in SECTIONS if "$ skdsl" in body and "file=" in body]


@pytest.mark.parametrize("code, body", _examples(), ids=[c for c, _ in _examples()])
def test_documented_example_prints_what_the_page_shows(code, body, tmp_path, monkeypatch,
                                                        capsys):
    monkeypatch.chdir(tmp_path)
    command, expected = None, None
    for kind, info, text in FENCE.findall(body):
        options = dict(part.split("=", 1) for part in info.split() if "=" in part)
        if kind in ("sk", "json", "text") and "file" in options:
            encoding = options.get("encoding", "utf-8")
            (tmp_path / options["file"]).write_bytes((text).encode(encoding))
        elif kind == "console":
            first, _, expected = text.partition("\n")
            command = shlex.split(first.removeprefix("$ "))
    for name in re.findall(r"\(`([^`]+)` is a directory\)", body):
        (tmp_path / name).mkdir()
    for name, spec in re.findall(r"\(`([^`]+)` as written by `skdsl spec (\S+) --json`\)", body):
        assert cli.main(["spec", str(ROOT / spec), "--json"]) == 0
        (tmp_path / name).write_text(capsys.readouterr().out)
    assert command[0] == "skdsl"
    status = cli.main(command[1:])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err == expected, f"{code}: the page shows another message"
    assert f"error {code}" in captured.err and "Traceback" not in captured.err


def test_unreadable_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "locked.sk"
    path.write_text("network n:\n")

    def refuse(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    assert cli.main(["check", str(path)]) == 2
    assert f"error SK114: cannot read '{path}': Permission denied" in capsys.readouterr().err


def test_every_code_in_the_source_is_documented():
    used = set()
    for source in (ROOT / "skdsl").rglob("*.py"):
        used |= set(re.findall(r"\"(SK\d{3})\"", source.read_text(encoding="utf-8")))
    documented = {code for code, _ in SECTIONS}
    assert used - {"SK000", "SK200", "SK500", "SK600"} <= documented


def test_codes_are_unique_and_ordered():
    codes = [code for code, _ in SECTIONS]
    assert codes == sorted(set(codes))

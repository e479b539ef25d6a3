"""docs/errors.md is executable: every example runs and prints exactly what the page shows.

Sections read `## SKnnn — title`; fenced blocks `sk file=NAME` (optionally `encoding=latin-1`),
`json file=NAME` or `text file=NAME` are written into a fresh directory; a note "(`NAME` is a directory)" makes a
directory; a note "(`NAME` as written by `skdsl spec PATH --json`)" writes that JSON; the
`console` block's `$ skdsl ...` line is run with `skdsl.commands.main` and its stderr compared verbatim.
"""

import os
import re
import shlex
from pathlib import Path

import pytest

from skdsl import commands

ROOT = Path(__file__).resolve().parents[2]
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
        assert commands.main(["spec", str(ROOT / spec), "--json"]) == 0
        (tmp_path / name).write_text(capsys.readouterr().out)
    assert command[0] == "skdsl"
    status = commands.main(command[1:])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err == expected, f"{code}: the page shows another message"
    assert f"error {code}" in captured.err and "Traceback" not in captured.err


def test_unreadable_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "locked.sk"
    path.write_text("network n:\n")

    opened = os.open

    def refuse(name, *args, **kwargs):  # root reads any file: a refusal is simulated
        if str(name) == str(path):
            raise PermissionError(13, "Permission denied")
        return opened(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    assert commands.main(["check", str(path)]) == 2
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


# -- settings: named in Python, spelled as flags by the command line ------------------------------


def test_an_error_names_settings_that_the_command_line_spells_as_flags():
    import pickle

    from skdsl.commands.arguments import flag
    from skdsl.base.errors import CheckpointError

    error = CheckpointError("{resume}: no checkpoint 'run/last.pt'", code="SK601",
                            hint="leave out {resume}, or change {batch_size} and {overrides}")
    assert str(error) == error.message == "resume: no checkpoint 'run/last.pt'"
    assert error.hint == "leave out resume, or change batch_size and overrides"
    assert error.settings == ("resume", "batch_size", "overrides")
    assert error.render(flag) == ("error SK601: --resume: no checkpoint 'run/last.pt'\n"
                                  "  = hint: leave out --resume, or change --batch-size and --set")
    again = pickle.loads(pickle.dumps(error))  # as a resumed run's processes receive it
    assert type(again) is CheckpointError and again.render(flag) == error.render(flag)


def test_a_located_error_spells_its_settings_but_not_the_source_line():
    from skdsl.commands.arguments import flag
    from skdsl.base.errors import Span, SpecError, register_source

    register_source("s.sk", "param width = 8  # {width}\n")
    error = SpecError("{overrides} width=x: expected an integer", Span("s.sk", 1, 7, 1, 12),
                      code="SK210").with_note("see {input_shape}")
    assert error.render(flag).splitlines() == [
        "s.sk:1:7: error SK210: --set width=x: expected an integer", "  |",
        "1 | param width = 8  # {width}", "  |       ^^^^^", "  = see --input"]
    assert error.settings == ("overrides", "input_shape") and "{" not in error.render()[:60]


def test_braces_quoted_from_the_user_are_left_alone(capsys):
    """Only declared settings are spelled: a path with `{abc}` (or `{width}`) is shown as given,
    from Python and from the command line."""
    import skdsl
    from skdsl.base.errors import SpecError

    with pytest.raises(SpecError) as error:
        skdsl.load("/tmp/{abc}/{width}.sk")
    assert str(error.value) == "no such file: '/tmp/{abc}/{width}.sk'"
    assert commands.main(["check", "/tmp/{abc}/{width}.sk"]) == 2
    assert capsys.readouterr().err.startswith("error SK110: no such file: '/tmp/{abc}/{width}.sk'")


def test_every_setting_a_library_error_names_is_declared():
    """A `{name}` in the text of an error the library raises is a setting only if declared
    (errors.declare_settings, beside the messages): an undeclared one would print as braces."""
    import ast
    import importlib
    import pkgutil

    import skdsl
    from skdsl.base.errors import _SETTING, declared_settings

    for module in pkgutil.walk_packages(skdsl.__path__, "skdsl."):
        importlib.import_module(module.name)
    named = {}
    for path in (ROOT / "skdsl").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            called = getattr(node, "func", None)
            name = getattr(called, "id", None) or getattr(called, "attr", "")
            if not name.endswith("Error") or name == "PydanticCustomError":
                continue  # pydantic's own templates fill their fields themselves
            for part in ast.walk(node):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    for setting in _SETTING.findall(part.value):
                        named.setdefault(setting, f"{path.relative_to(ROOT)}:{part.lineno}")
    undeclared = {name: where for name, where in named.items()
                  if name not in declared_settings()}
    assert named and not undeclared


def test_the_command_line_spells_a_checkpoint_error_with_its_flags(tmp_path, capsys):
    spec = str(ROOT / "specs" / "sknet_tiny.sk")
    status = commands.main(["train", spec, "--out", str(tmp_path / "run"), "--resume"])
    assert status == 2 and capsys.readouterr().err.startswith(
        f"error SK601: --resume: no checkpoint '{tmp_path / 'run' / 'last.pt'}' to resume from\n"
        f"  = hint: leave out --resume to start a new run there")

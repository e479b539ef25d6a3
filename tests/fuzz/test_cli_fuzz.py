"""Fuzzing the command line: no command line ends in an internal error, a hang, accepted garbage
or a side effect; the generator follows the parser, and the side-effect detector sees writes."""

import argparse
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from skdsl.fuzz import cli as cli_fuzz, spec as fuzz
from skdsl import commands
from skdsl.commands import fuzz as fuzz_command

TIMEOUT = 20.0


@pytest.fixture(scope="module")
def worker():
    """A spawned worker: the cases fork from it, never from this process (which may have run
    torch, whose OpenMP threads do not survive a fork)."""
    with cli_fuzz.session(commands.build_parser, TIMEOUT) as target:
        state = {"worker": fuzz._Worker(8192 * 2**20, commands.main, target.run, target.start)}

        def run(case):
            outcome = state["worker"].run(case, TIMEOUT + target.slack)
            if state["worker"].broken:
                state["worker"].stop()
                state["worker"] = fuzz._Worker(8192 * 2**20, commands.main, target.run,
                                               target.start)
            return outcome

        yield run
        state["worker"].stop()


# No shrinking: a seed's case has nothing to do with its neighbours'.
@settings(max_examples=12, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cli_fuzz.cases(commands.build_parser))
def test_no_command_line_ends_in_an_internal_error(worker, case):
    outcome = worker(case)
    assert outcome.kind in ("ok", "error", "usage"), (
        f"{outcome.kind}: {cli_fuzz.command_line(case)}\n{case.origin}\n{outcome.detail}")


# -- the generator ---------------------------------------------------------------------------


def test_the_generator_is_reproducible_and_covers_every_command():
    tree = cli_fuzz.command_tree(commands.build_parser)
    first = [cli_fuzz.generate(random.Random(seed), tree) for seed in range(400)]
    assert first[:20] == [cli_fuzz.generate(random.Random(seed), tree) for seed in range(20)]
    made = {case.origin.split(":")[0] for case in first}
    assert {command.name for command in tree} <= made
    assert {"train", "export", "weights convert", "inspect attention"} <= made
    assert sum(bool(case.env) for case in first) > 50
    assert sum(bool(case.garbage) for case in first) > 20


def test_the_tree_is_read_from_the_parser_so_a_new_flag_is_fuzzed():
    def build_parser():
        parser = commands.build_parser()
        sub = next(action for action in parser._actions
                   if isinstance(action, argparse._SubParsersAction))
        sub.choices["check"].add_argument("--new-limit", metavar="N")
        return parser

    tree = cli_fuzz.command_tree(build_parser)
    check = next(command for command in tree if command.name == "check")
    assert [arg.kind for arg in check.args if arg.flags == ("--new-limit",)] == ["int"]
    train = next(command for command in tree if command.name == "train")
    kinds = {arg.dest: arg.kind for arg in train.args}
    assert kinds["out"] == "outdir" and kinds["epochs"] == "int" and kinds["lr"] == "float"
    assert kinds["precision"] == "choice" and kinds["config"] == "config"
    made = [cli_fuzz.generate(random.Random(seed), tree) for seed in range(3000)]
    assert any("--new-limit" in case.argv for case in made)


def test_garbage_is_what_a_flag_type_cannot_take():
    def arg(kind, choices=()):
        return cli_fuzz.Arg(("--x",), "x", kind, choices=choices)

    reason = cli_fuzz.garbage_reason
    assert reason(arg("int"), "abc") and reason(arg("int"), "") and reason(arg("int"), "1.5")
    assert not reason(arg("int"), "-1") and not reason(arg("int"), cli_fuzz.HUGE)
    assert reason(arg("float"), "nan") and reason(arg("float"), "1e309")
    assert not reason(arg("float"), "0")
    assert reason(arg("choice", ("dot", "mermaid")), "Dot")
    assert reason(arg("count"), "") and not reason(arg("count"), "bn,add")
    assert reason(arg("shape"), "3x0x32") and not reason(arg("shape"), "3×32×32")
    assert reason(arg("set"), "M=") and not reason(arg("set"), "M=1000000")
    assert reason(arg("config"), "") and reason(arg("config"), "fifo")
    assert not reason(arg("config"), "empty.sk")
    assert not reason(arg("output"), "fifo")  # an output is never garbage: its effects are seen


# -- running and the side-effect detector -----------------------------------------------------
# The fake commands below run in a child forked from this process: they must not use torch.


def _writes_outside(argv):
    Path("stray.txt").write_text("x")
    Path(argv[0]).write_text("fine")
    return 0


def _replaces_the_fifo(argv):
    Path("new").write_text("x")
    os.replace("new", "fifo")
    return 0


def _writes_into_the_fifo(argv):
    descriptor = os.open("fifo-link", os.O_RDWR | os.O_NONBLOCK)
    os.write(descriptor, b"data")
    os.close(descriptor)
    return 0


def _writes_beside_its_folder(argv):
    (Path.cwd().parent / "escaped.txt").write_text("x")
    return 0


def _writes_its_output(argv):
    Path("nested").mkdir()
    Path("nested/out.txt").write_text("ok")
    (Path(os.environ["TMPDIR"]) / "scratch").write_text("x")
    os.unlink(Path(os.environ["TMPDIR"]) / "scratch")
    return 0


def _sleeps(argv):
    import time

    time.sleep(60)
    return 0


def _fails_quietly(argv):
    return 2


def _accepts_anything(argv):
    print("done")
    return 0


def _says_nothing(argv):
    return 0


def test_a_write_outside_the_outputs_is_a_side_effect():
    outcome = cli_fuzz.run_case(cli_fuzz.Case(["out.txt"], outputs=["out.txt"]), _writes_outside)
    assert outcome.kind == "side-effect"
    assert "created 'stray.txt', not an output" in outcome.detail
    assert "out.txt'" not in outcome.detail.splitlines()[0]


def test_a_replaced_or_written_fifo_is_a_side_effect_even_when_named_as_the_output():
    outcome = cli_fuzz.run_case(cli_fuzz.Case(["-o", "fifo"], outputs=["fifo"]),
                                _replaces_the_fifo)
    assert outcome.kind == "side-effect" and "replaced the FIFO 'fifo'" in outcome.detail
    outcome = cli_fuzz.run_case(cli_fuzz.Case(["-o", "fifo-link"], outputs=["fifo-link"]),
                                _writes_into_the_fifo)
    assert outcome.kind == "side-effect" and "into the FIFO" in outcome.detail


def test_a_write_beside_the_folder_is_a_side_effect():
    outcome = cli_fuzz.run_case(cli_fuzz.Case(["x"]), _writes_beside_its_folder)
    assert outcome.kind == "side-effect" and "outside the case's folder" in outcome.detail


def test_outputs_and_cleaned_up_temporary_files_are_no_side_effect():
    outcome = cli_fuzz.run_case(cli_fuzz.Case(["x"], outputs=["nested/out.txt"]),
                                _writes_its_output)
    assert outcome.kind == "ok", outcome.detail


def test_hangs_quiet_failures_silence_and_accepted_garbage_are_offenders():
    assert cli_fuzz.run_case(cli_fuzz.Case(["x"]), _sleeps, timeout=0.5).kind == "hang"
    assert cli_fuzz.run_case(cli_fuzz.Case(["x"]), _fails_quietly).kind == "internal"
    assert cli_fuzz.run_case(cli_fuzz.Case(["x"]), _says_nothing).kind == "silent"
    assert cli_fuzz.run_case(cli_fuzz.Case(["x"], env={"RANK": "1"}), _says_nothing,
                             timeout=60).kind == "ok"  # another rank's silence is by design

    def build_parser():
        parser = argparse.ArgumentParser(prog="skdsl")
        parser.add_argument("--depth", metavar="N")
        return parser

    arg = cli_fuzz.Arg(("--depth",), "depth", "int")
    case = cli_fuzz.Case(["--depth", "abc", "--depth", "2"],
                         garbage=[("depth", "abc", cli_fuzz.garbage_reason(arg, "abc"))])
    assert cli_fuzz.run_case(case, _accepts_anything, parser=build_parser).kind == "ok"
    case.argv = ["--depth", "2", "--depth", "abc"]  # the last one is the one kept
    outcome = cli_fuzz.run_case(case, _accepts_anything, parser=build_parser)
    assert outcome.kind == "garbage" and "not a whole number" in outcome.detail


def test_the_command_line_runs_a_cli_campaign(tmp_path, capsys):
    status = fuzz_command.main(["--target", "cli", "--count", "2", "--seed", "8",
                                "--save", str(tmp_path)])
    out = capsys.readouterr().out
    assert "fuzzing the command line: 2 command lines, seed 8" in out and "tried 2: ok" in out
    assert status == 0 or (tmp_path / "offenders.txt").is_file()


def test_a_worker_whose_skdsl_changed_on_disk_runs_afresh_and_retires(monkeypatch):
    monkeypatch.setitem(cli_fuzz._LOADED, "skdsl.fuzz.spec", 0)  # as if edited since it was imported
    outcome = cli_fuzz.run_case(cli_fuzz.Case(["--version"]), commands.main, watch=True)
    assert outcome.kind == "ok" and outcome.retire, outcome.detail
    assert not cli_fuzz.run_case(cli_fuzz.Case(["--version"]), commands.main).retire

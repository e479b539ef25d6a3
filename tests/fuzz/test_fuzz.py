"""Fuzzing the front end: no mutant of a shipped spec ends in an internal error or a hang."""

import random

from hypothesis import HealthCheck, given, settings

from skdsl import commands
from skdsl.fuzz import spec as fuzz
from skdsl.commands import fuzz as fuzz_command


@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutant=fuzz.mutants())
def test_no_mutant_ends_in_an_internal_error(mutant):
    outcome = fuzz.run_in_process(mutant, commands.main)
    assert outcome.kind in ("ok", "error"), f"{mutant.origin}\n{outcome.detail}"


def test_the_generator_is_reproducible_and_edits_the_seeds():
    first = [fuzz.generate(random.Random(7)) for _ in range(3)]
    again = [fuzz.generate(random.Random(7)) for _ in range(3)]
    assert first == again
    shipped = {text for _, text in fuzz.seed_texts()}
    made = [fuzz.generate(random.Random(seed)).files[fuzz.MAIN] for seed in range(50)]
    assert len(shipped) > 20 and sum(text not in shipped for text in made) >= 45


def test_an_internal_error_is_told_from_a_located_one():
    assert fuzz._classify(2, "t.sk:1:2: error SK101: unexpected ','", ("check",)).located
    assert fuzz._classify(70, "internal error: RecursionError", ("check",)).kind == "internal"
    assert fuzz._classify(0, "", ("check",)).kind == "ok"


def test_a_campaign_counts_each_mutant_once(tmp_path):
    tally = fuzz.campaign(count=12, seed=3, timeout=30, main=commands.main,
                          report=lambda line: None)
    assert tally.tried == 12 and sum(tally.counts.values()) == 12
    assert tally.counts["internal"] == tally.counts["hang"] == 0


def test_a_hang_is_reported_and_the_worker_replaced(monkeypatch, tmp_path):
    worker = fuzz._Worker(2**31, commands.main)
    try:
        monkeypatch.setattr(worker.connection, "poll", lambda timeout: False)
        outcome = worker.run(fuzz.Mutant({fuzz.MAIN: fuzz.HEADER}, "header"), timeout=0.1)
    finally:
        worker.stop()
    assert outcome.kind == "hang"
    tally = fuzz.Tally(offenders=[(0, fuzz.Mutant({fuzz.MAIN: "x"}, "soup"), outcome)])
    saved = fuzz.save_offenders(tally, tmp_path)
    assert (saved[0] / fuzz.MAIN).read_text() == "x"
    assert "skdsl check" in (saved[0] / "OUTCOME.txt").read_text()


def test_the_command_line_runs_a_campaign_and_says_how_it_went(tmp_path, capsys):
    assert fuzz_command.main(["--count", "3", "--seed", "5", "--save", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3 mutants, seed 5" in out and "tried 3: ok" in out and not any(tmp_path.iterdir())


def _odd_numbers_offend(case, main):
    return fuzz.Outcome("garbage" if case % 2 else "ok", detail=f"case {case}\nmore")


def test_a_target_brings_its_own_cases_and_kinds(tmp_path):
    target = fuzz.Target("numbers", lambda rng: rng.randrange(100), _odd_numbers_offend, str,
                         lambda case, outcome, folder: folder.mkdir(parents=True),
                         kinds=(*fuzz.KINDS, "garbage"), offending=("garbage",))
    tally = fuzz.campaign(8, seed=1, timeout=30, main=commands.main, report=lambda line: None,
                          target=target)
    assert tally.tried == 8 and 0 < tally.counts["garbage"] == len(tally.offenders) < 8
    assert "accepted garbage" in fuzz.summary(tally)
    saved = fuzz.save_offenders(tally, tmp_path, limit=1, target=target)
    listed = (tmp_path / "offenders.txt").read_text().splitlines()
    assert len(saved) == 1 and len(listed) == 2 * len(tally.offenders)
    assert listed[1].strip().startswith("case ")

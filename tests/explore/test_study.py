"""The study engine of `skdsl explore`: choosing the points to train, the Optuna study, trials
run as `skdsl train` children, failures, kills, resume and workers sharing one storage.

One test trains with the real runner (real children); the others run a stand-in for `skdsl
train` (FAKE_TRAIN: it takes the same flags, writes the same metrics.jsonl, and logs each call),
so that kills and races take seconds, not minutes. The two tests over ~10 s on two busy cores
are marked SLOW.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skdsl.base.errors import SkdslError
from skdsl.explore import study as S
from skdsl.explore import trial as T
from skdsl.explore.budget import Budget
from skdsl.explore.counting import Counter
from skdsl.explore.points import OVER_BUDGET, REJECTED, Point

# w = 0 is in the space but does not build (SK203): a rejected point
SPEC = """\
param w = 4 in 0..16 step 2

network tiny:
    input 3x8x8
    classes 4

    stage conv1: conv 3x3, w
    stage head:
        avgpool global
        fc classes
"""

# `skdsl train` as far as a study sees it: --out, --set; metrics.jsonl with two epochs, the
# last one's top-1 100 - w %; a line per call in $FAKE_LOG; $FAKE_SLEEP seconds of "training"; and
# for w = $FAKE_FAIL the error line and exit status of a NaN loss.
FAKE_TRAIN = """\
import json, os, sys, time
argv = sys.argv[1:]
out = argv[argv.index("--out") + 1]
values = dict(argv[i + 1].split("=") for i, a in enumerate(argv) if a == "--set")
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({"values": values, "out": out, "parent": os.getppid(),
                          "argv": argv}) + "\\n")
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
if values.get("w") == os.environ.get("FAKE_FAIL"):
    print("error SK610: the loss became nan at step 2 (epoch 1)", file=sys.stderr)
    sys.exit(2)
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "metrics.jsonl"), "w") as f:
    for epoch, top1 in ((1, 0.5), (2, 1 - int(values["w"]) / 100)):
        f.write(json.dumps({"event": "epoch", "epoch": epoch, "val_top1": top1}) + "\\n")
"""

DATA = "synthetic:train=8,val=8"  # 2 steps of batch 4, then validation


@pytest.fixture
def spec(tmp_path) -> Path:
    path = tmp_path / "tiny.sk"
    path.write_text(SPEC, encoding="utf-8")
    return path


@pytest.fixture
def fake(tmp_path, monkeypatch) -> list[str]:
    """The stand-in's command; its log at $FAKE_LOG."""
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN, encoding="utf-8")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.delenv("FAKE_SLEEP", raising=False)
    monkeypatch.delenv("FAKE_FAIL", raising=False)
    return [sys.executable, str(script)]


def calls(tmp_path) -> list[dict]:
    path = tmp_path / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def counted(spec: Path) -> tuple[Counter, list[Point]]:
    counter = Counter(spec)
    return counter, [counter.count(values, index)
                     for index, values in enumerate(counter.space.grid())]


def complete(rows) -> list[dict]:
    return [row for row in rows if row["state"] == "complete"]


def wait_for(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


# -- choosing the points --------------------------------------------------------------------------


def test_the_choice_is_stratified_over_macs_deterministic_and_skips_what_cannot_train():
    macs = [17, 3, 11, 29, 5, 23, 2, 19, 7, 13, 31, 37]  # 12 ok points, in no order
    points = [Point(i, {"w": i}, params=1, macs=m) for i, m in enumerate(macs)]
    points += [Point(12, {"w": 12}, status=REJECTED, error="SK203"),
               Point(13, {"w": 13}, status=OVER_BUDGET, params=1, macs=1),
               Point(14, {"w": 14}, params=1, macs=4)]  # ok, but the budget refuses it
    budget = lambda point: point.index != 14  # noqa: E731

    chosen = S.choose_points(points, 4, budget)
    # 12 points sorted by macs in 4 strata of 3: the middle of each
    assert [p.macs for p in chosen] == [3, 11, 19, 31]
    assert S.choose_points(list(reversed(points)), 4, budget) == chosen
    assert [p.index for p in S.choose_points(points, 4, budget)] == [p.index for p in chosen]
    # every stratum of the sorted macs gives one point
    ordered = sorted(macs)
    assert [ordered.index(p.macs) // 3 for p in chosen] == [0, 1, 2, 3]
    # K at least the eligible points: all of them, cheapest first; nothing for K of none
    assert [p.macs for p in S.choose_points(points, 20, budget)] == sorted(macs)
    assert 14 in [p.index for p in S.choose_points(points, 20)]
    assert S.choose_points(points[12:14], 3) == []


def test_without_optuna_a_study_is_SK563_naming_the_extra(monkeypatch, tmp_path, spec):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    with pytest.raises(SkdslError) as caught:
        S.require_optuna()
    assert caught.value.code == "SK563" and "pip install 'skdsl[explore]'" in caught.value.hint
    counter, points = counted(spec)
    with pytest.raises(SkdslError) as caught:
        S.train_points(tmp_path / "study", counter, points, k=2, epochs=1)
    assert caught.value.code == "SK563"
    assert not (tmp_path / "study").exists()


# -- one trial ------------------------------------------------------------------------------------


def test_a_trial_is_skdsl_train_with_the_points_values_and_the_studys_settings(tmp_path):
    settings = T.check_settings({"epochs": 1, "data": DATA, "batch_size": 4, "max_steps": 10,
                                 "compile": False, "channels_last": True, "lr": None,
                                 "crop_scale": (0.25, 1.0)})
    assert "lr" not in settings and "compile" not in settings
    command = T.train_command("a.sk", tmp_path / "trials/0003", {"w": 4, "r": 0.5, "act": "relu"},
                              settings, 2, overrides={"classes": 10, "w": 8})
    assert command[:4] == [sys.executable, "-m", "skdsl", "train"]
    line = " ".join(command[4:])
    assert line == (f"a.sk --out {tmp_path / 'trials/0003'} --set classes=10 --set w=4 "
                    f"--set r=0.5 --set act=relu --threads 2 --epochs 1 --data {DATA} "
                    f"--batch-size 4 --max-steps 10 --channels-last --crop-scale 0.25-1.0")
    for bad, words in (({"threads": 4}, "explore's own"), ({"epoch": 1}, "no setting"),
                       ({"epochs": 0}, "epochs"), ({"recipe": "fast"}, "recipe")):
        with pytest.raises(SkdslError) as caught:
            T.check_settings(bad)
        assert caught.value.code == "SK510" and words in caught.value.message


def test_what_a_child_left_says_how_its_trial_ended(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    records = [{"event": "step", "step": 1, "loss": 2.0},
               {"event": "epoch", "epoch": 1, "val_top1": 0.25},
               {"event": "epoch", "epoch": 2, "val_top1": 0.625},
               {"event": "epoch", "epoch": 3, "val_top1": 0.5}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records)
                                       + '{"event": "epo')  # a line cut short by a kill
    done = T.read_outcome(run, 0, 3.5)
    assert (done.state, done.error, done.best_error, done.time_s, done.epochs) == (
        "complete", 50.0, 37.5, 3.5, 3)

    (run / T.ERRORS).write_text("warming up\ntiny.sk:1:1: error SK610: the loss became nan "
                                "at step 2\n  = hint: lower --lr\n")
    nan = T.read_outcome(run, 2, 1.0)
    assert nan.state == "failed" and nan.exit_status == 2
    assert nan.reason == "tiny.sk:1:1: error SK610: the loss became nan at step 2 (exit status 2)"

    (run / T.ERRORS).write_text("")
    killed = T.read_outcome(run, -signal.SIGKILL, 1.0)
    assert killed.state == "failed" and "killed by SIGKILL" in killed.reason
    (run / "metrics.jsonl").write_text(json.dumps(records[0]) + "\n")
    short = T.read_outcome(run, 0, 1.0)
    assert short.state == "failed" and "validated no epoch" in short.reason
    assert T.last_error_line("Traceback (most recent call last):\n  ...\nMemoryError\n") == \
        "MemoryError"


# SLOW (~10-17 s on two busy cores): two real `skdsl train` children.
def test_real_training_records_errors_and_a_failing_point_without_stopping_the_study(
        tmp_path, spec):
    counter, points = counted(spec)
    good = next(p for p in points if p.values == {"w": 2})
    # Counted as fine, but its training fails (as a point that runs out of memory would):
    # w = 0 makes the child stop with SK203 before it trains.
    bad = Point(99, {"w": 0}, params=1, macs=1)
    folder = tmp_path / "study"
    rows = S.train_points(folder, counter, [good, bad], k=2, sampler="grid", seed=0, epochs=1,
                          data=DATA, settings={"batch_size": 4}, workers=2)
    assert [(r["point"], r["state"]) for r in rows] == [(99, "failed"), (good.index, "complete")]
    failed, done = rows
    assert "error SK203" in failed["reason"] and "(exit status 2)" in failed["reason"]
    assert failed["error"] is None and failed["w"] == 0
    assert 0 <= done["error"] <= 100 and 0 <= done["best_error"] <= done["error"]
    assert done["time_s"] > 0 and done["macs"] == good.macs and done["params"] == good.params
    history = [json.loads(line) for line in
               (folder / done["run"] / "metrics.jsonl").read_text().splitlines()]
    top1 = [r["val_top1"] for r in history if r["event"] == "epoch"]
    assert done["error"] == pytest.approx(100 * (1 - top1[-1]))
    assert (folder / failed["run"] / T.ERRORS).read_text().count("error SK203") == 1

    assert S.read_trials(folder) == rows
    header = (folder / "trials.csv").read_text().splitlines()[0]
    assert header.split(",") == S.trial_columns(["w"]) == [
        "number", "point", "w", "state", "error", "best_error", "time_s", "reason", "run",
        "params", "macs", "activations", "peak_bytes"]


# -- the study ------------------------------------------------------------------------------------


def train(folder, spec, fake, **given):
    counter, points = counted(spec)
    options = dict(k=3, sampler="random", seed=0, epochs=1, data=DATA, program=fake)
    options.update(given)
    return S.train_points(folder, counter, points, **options)


def test_a_study_is_not_made_twice_and_resumes_only_with_its_own_settings(tmp_path, spec, fake):
    folder = tmp_path / "study"
    rows = train(folder, spec, fake, k=2)
    assert len(complete(rows)) == 2 and len(calls(tmp_path)) == 2
    with pytest.raises(SkdslError) as caught:
        train(folder, spec, fake, k=2)
    assert caught.value.code == "SK562" and "--resume" in caught.value.hint
    with pytest.raises(SkdslError) as caught:
        train(folder, spec, fake, k=2, epochs=3, resume=True)
    assert caught.value.code == "SK562" and "epochs" in caught.value.message
    # the same settings: nothing is left, nothing is trained again, nothing enqueued again
    assert train(folder, spec, fake, k=2, resume=True) == rows
    assert S.work(S.storage_url(folder), "explore", program=fake) == rows
    assert len(calls(tmp_path)) == 2
    with pytest.raises(SkdslError) as caught:
        S.work(S.storage_url(folder), "other", program=fake)
    assert caught.value.code == "SK562" and "holds no study 'other'" in caught.value.message


def test_bad_arguments_and_storages_are_said_before_anything_trains(tmp_path, spec, fake):
    counter, points = counted(spec)
    for given, code, words in (
            ({"sampler": "bayes"}, "SK566", "expected one of random, grid, sobol, tpe, nsga2"),
            ({"k": 0}, "SK566", "at least 1"), ({"workers": 0}, "SK566", "workers"),
            ({"settings": {"threads": 2}}, "SK510", "explore's own"),
            ({"storage": "study.db"}, "SK562", "neither a database URL nor a journal file"),
            ({"storage": "journal:"}, "SK562", "name the journal file")):
        with pytest.raises(SkdslError) as caught:
            S.train_points(tmp_path / "s", counter, points, **{"k": 2, "epochs": 1, **given})
        assert caught.value.code == code and words in caught.value.message
    with pytest.raises(SkdslError) as caught:
        S.work(S.storage_url(tmp_path / "s"), "nothing", program=fake)
    assert caught.value.code == "SK562" and "names no file" in caught.value.message
    assert calls(tmp_path) == [] and not (tmp_path / "s" / "study.db").exists()


def test_a_failing_child_is_a_failed_trial_with_its_reason_and_the_study_goes_on(
        tmp_path, spec, fake, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "8")
    rows = train(tmp_path / "study", spec, fake, k=4)  # w = 4, 8, 12, 16
    assert [r["state"] for r in rows].count("complete") == 3
    (failed,) = [r for r in rows if r["state"] == "failed"]
    assert failed["w"] == 8 and failed["reason"] == (
        "error SK610: the loss became nan at step 2 (epoch 1) (exit status 2)")
    assert sorted(r["w"] for r in complete(rows)) == [4, 12, 16]
    # the stand-in's top-1: 50% at epoch 1, then 100 - w %: final error w, best min(50, w)
    assert all(r["error"] == pytest.approx(r["w"]) and
               r["best_error"] == pytest.approx(min(50.0, r["w"])) for r in complete(rows))


def test_a_study_stopped_after_one_trial_resumes_to_the_uninterrupted_trials(tmp_path, spec,
                                                                            fake):
    expected = train(tmp_path / "straight", spec, fake, k=4, workers=2)
    assert len(complete(expected)) == 4
    folder = tmp_path / "stopped"
    first = train(folder, spec, fake, k=4, max_trials=1)
    assert [r["state"] for r in first] == ["complete", "waiting", "waiting", "waiting"]
    rows = train(folder, spec, fake, k=4, resume=True)
    assert [(r["point"], r["w"], r["state"]) for r in rows] == [
        (r["point"], r["w"], r["state"]) for r in expected]
    trained = [c["values"]["w"] for c in calls(tmp_path) if c["out"].startswith(str(folder))]
    assert sorted(trained) == sorted(str(r["w"]) for r in expected)  # each point once


WORKER = """\
import json, os, sys, time
from pathlib import Path
from skdsl.explore import study as S
from skdsl.explore.counting import Counter
go = Path(sys.argv[1])
(go.parent / f"ready-{os.getpid()}").touch()
while not go.exists():
    time.sleep(0.01)
if sys.argv[2] == "train":
    counter = Counter(sys.argv[4])
    points = [counter.count(v, i) for i, v in enumerate(counter.space.grid())]
    S.train_points(sys.argv[3], counter, points, k=int(sys.argv[5]), sampler="random", seed=0,
                   epochs=1, data="synthetic:train=8,val=8", program=sys.argv[6:],
                   progress=print)
else:
    S.work(sys.argv[3], "explore", program=sys.argv[4:], progress=print)
"""


def start(tmp_path, *argv: str, sleep: float) -> subprocess.Popen:
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    env = {**os.environ, "FAKE_SLEEP": str(sleep)}
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "go"), *argv],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def test_a_killed_study_resumes_to_the_uninterrupted_trials_retrying_the_dead_workers(
        tmp_path, spec, fake):
    # what an uninterrupted study trains (the test above shows it): the chosen points
    expected = S.choose_points(counted(spec)[1], 4)
    folder = tmp_path / "killed"
    worker = start(tmp_path, "train", str(folder), str(spec), "4", *fake, sleep=1.0)
    (tmp_path / "go").touch()
    try:
        # one trial done and the next one training: kill the worker and its child, as a
        # power cut or `kill -9` would
        assert wait_for(lambda: [r["state"] for r in S.read_trials(folder)][:2] == [
            "complete", "running"] and len([c for c in calls(tmp_path)
                                            if c["out"].startswith(str(folder))]) == 2)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        output = worker.communicate()[0]
    assert worker.returncode == -signal.SIGKILL, output
    rows = train(folder, spec, fake, k=4, resume=True)

    died = [r for r in rows if r["state"] == "failed"]
    assert [(r["number"], r["reason"]) for r in died] == [(1, "worker died")]
    done = complete(rows)
    assert sorted((r["point"], r["w"]) for r in done) == sorted(
        (p.index, p.values["w"]) for p in expected)
    assert len({r["point"] for r in done}) == len(done) == 4  # each point complete once
    assert died[0]["point"] in {r["point"] for r in done}  # the dead worker's point, retried
    trained = [c["values"]["w"] for c in calls(tmp_path) if c["out"].startswith(str(folder))]
    # trial 0 finished before the kill and is not trained again; trial 1's point twice
    assert sorted(trained) == sorted([str(r["w"]) for r in done] + [str(died[0]["w"])])
    assert len({r["run"] for r in rows}) == len(rows)


def test_two_worker_processes_on_one_sqlite_storage_never_train_a_trial_twice(
        tmp_path, spec, fake):
    counter, points = counted(spec)
    folder = tmp_path / "shared"
    S.prepare_study(folder, counter, points, k=8, sampler="random", seed=0, epochs=1,
                    data=DATA)
    url = S.storage_url(folder)
    workers = [start(tmp_path, "work", url, *fake, sleep=0.1) for _ in range(2)]
    assert wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == 2)
    (tmp_path / "go").touch()  # both at once: they race for every trial
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    made = calls(tmp_path)
    assert len(made) == 8 and len({c["out"] for c in made}) == 8
    assert sorted(int(c["values"]["w"]) for c in made) == list(range(2, 17, 2))
    assert len({c["parent"] for c in made}) == 2  # both workers trained
    rows = S.read_trials(folder)
    assert [r["state"] for r in rows] == ["complete"] * 8


CLAIMER = """\
import json, os, sys, time
from pathlib import Path
from skdsl.explore import study as S
optuna = S.require_optuna()
url, go = sys.argv[1], Path(sys.argv[2])
store = S.open_storage(url)
study = optuna.load_study(study_name="explore", storage=store)
context = S._Context(study, store, Path(sys.argv[3]), url, counter=None, budget=None, threads=1,
                     program=None, progress=None, max_trials=None, heartbeat=None, spec=None)
(go.parent / f"ready-{os.getpid()}").touch()
while not go.exists():
    time.sleep(0.001)
claimed = []
with S._quiet(optuna):
    while (claim := S._claim(context, study, "token")) is not None:
        claimed.append(claim.number)
        study.tell(claim.trial, 0.0)
print(json.dumps(claimed))
"""


# SLOW (~10 s on two busy cores): 40 claims, each a few writes to SQLite, fsynced.
def test_claims_from_two_processes_as_fast_as_they_go_never_take_a_trial_twice(tmp_path):
    # The claim alone, with no training between claims (the test above spaces them by a child
    # each): SQLite ignores SELECT ... FOR UPDATE, and without the claim lock two processes
    # pop the same waiting trial within forty claims.
    spec = tmp_path / "wide.sk"
    spec.write_text(SPEC.replace("0..16 step 2", "1..40"), encoding="utf-8")
    counter, points = counted(spec)
    folder = tmp_path / "claims"
    S.prepare_study(folder, counter, points, k=40, sampler="grid", seed=0, epochs=1)
    script = tmp_path / "claimer.py"
    script.write_text(CLAIMER, encoding="utf-8")
    claimers = [subprocess.Popen([sys.executable, str(script), S.storage_url(folder),
                                  str(tmp_path / "go"), str(folder)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    assert wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == 2)
    (tmp_path / "go").touch()
    results = [claimer.communicate(timeout=120) for claimer in claimers]
    assert [claimer.returncode for claimer in claimers] == [0, 0], results
    numbers = [json.loads(out) for out, _ in results]
    assert all(numbers), "both processes claimed"
    assert sorted(numbers[0] + numbers[1]) == list(range(40))


def test_an_adaptive_sampler_prunes_what_cannot_train_and_is_seeded(tmp_path, spec, fake):
    counter = Counter(spec)
    small = [p.values["w"] for p in counted(spec)[1] if p.status == "ok" and
             Budget("macs <= 14000").admits(p)]
    assert small == [2, 4, 6, 8]
    runs = []
    for name in ("a", "b"):
        rows = S.train_points(tmp_path / name, counter, k=2, sampler="tpe", seed=3, epochs=1,
                              data=DATA, budget=Budget("macs <= 14000"), program=fake)
        assert len(complete(rows)) == 2 and all(r["macs"] <= 14000 for r in complete(rows))
        pruned = [r for r in rows if r["state"] == "pruned"]
        assert all(r["reason"] == "over budget (macs <= 14000)" or
                   r["reason"].startswith("the same point as trial") or
                   r["reason"].startswith("rejected: SK203") for r in pruned)
        assert all(r["point"] is None for r in rows)
        runs.append([(r["w"], r["state"], r["reason"]) for r in rows])
    assert runs[0] == runs[1]  # the same seed draws the same points


def test_an_adaptive_study_stops_drawing_after_its_cap_of_draws_per_trial(tmp_path, spec, fake,
                                                                         monkeypatch):
    class Nothing:
        text = "nothing"

        def admits(self, point):
            return False

    assert S.DRAWS_PER_TRIAL == 50
    monkeypatch.setattr(S, "DRAWS_PER_TRIAL", 4)  # 50 × K draws, in a test's time
    said = []
    rows = S.train_points(tmp_path / "s", Counter(spec), k=2, sampler="nsga2", seed=0,
                          epochs=1, data=DATA, budget=Nothing(), program=fake,
                          progress=said.append)
    assert len(rows) == 8 and {r["state"] for r in rows} == {"pruned"}
    assert calls(tmp_path) == []
    assert any("stopped drawing after 8 draws: only 0 of 2 points" in line for line in said)

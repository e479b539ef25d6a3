"""The Optuna study that trains a chosen few points of a design space: `skdsl explore --train K`.

    train_points(folder, counter, points, *, k, sampler, ...) -> list[dict]   make or resume, train
    prepare_study(folder, counter, points, *, k, sampler, ...) -> optuna.Study   make or resume
    work(storage, study_name, ...) -> list[dict]     `explore --worker`: train what a study has left
    choose_points(points, k, budget=None) -> list[Point]      K points stratified over multiply-adds
    export_trials(study, folder) / read_trials(folder)        DIR/trials.jsonl and DIR/trials.csv
    load_settings(storage, study_name) -> dict                what a study records about itself
    require_optuna() -> the optuna module, or SK563

**Storage.** By default the study lives in the SQLite file DIR/study.db; `storage` takes any
Optuna storage URL (`postgresql://...`, `mysql://...`, `sqlite:///...`) or `journal:PATH`, a
journal file (`JournalStorage(JournalFileBackend(PATH))`, for file systems where SQLite's locks
do not hold). The study's user attributes record everything a worker needs: the spec's path and
hash, the space (names, domain texts, domains), the sampler and its seed, K, the budget's text,
the `--set` overrides and the training settings; `work(storage, name)` on another machine reads
them and needs nothing else (the spec must be at the same path there, or pass `spec`).

**Which points.** With a non-adaptive sampler (random, grid, sobol) the points were drawn and
counted already: K of those that built and fit the budget are chosen, stratified over
multiply-adds (`choose_points`), and enqueued once (a resumed study does not enqueue again).
With an adaptive sampler (tpe, nsga2) each worker asks the study for a point over the space's
distributions, counts it, and trains it only if it builds, fits the budget and was not trained
before: a point that does not is told PRUNED, its reason in its user attributes, and does not use
up one of the K (at most 50 × K draws, then the study stops drawing). TPE minimises the final
top-1 error (%); NSGA-II minimises (error, multiply-adds).

**Workers.** `workers` threads in this process each claim a trial, run one `skdsl train` child
at a time (trial.py) with cores // workers threads, and tell the study what became of it. A
claim is made under a lock: a thread lock, and for a SQLite file or journal file a file lock
beside it, since SQLite ignores SELECT ... FOR UPDATE and two processes could otherwise pop the
same waiting trial. A server database (PostgreSQL, MySQL) locks the row itself.

**Failures and resume.** A trial whose child fails is FAIL with its reason (the child's last
error line and exit status), and the study goes on. Each running trial records its host, the
worker's pid (and that process's start time, against pid reuse) and a token of its worker
thread; a claim first marks FAIL ("worker died") every running trial of this host whose worker
is gone, and enqueues its point again (at most MAX_RETRIES times a point). On an RDB storage,
workers also beat a heartbeat: a trial whose worker on another machine went silent for GRACE_S
seconds is failed and retried by Optuna's RetryHeartbeatStaleTrialCallback (a journal has no
heartbeat: there only a worker on the same host notices). Ctrl-C stops the children (they save
last.pt), fails their trials and enqueues their points again. Finished trials (COMPLETE, FAIL,
PRUNED) are never trained again. Without `resume`, a study already in the storage is SK562.

A trial's user attributes: `point` (its index in points.jsonl; absent for an adaptive draw),
`counts` (params, macs, activations, peak_bytes, latency_ms), `worker` (host, pid, pid_start,
token, started, run: the run folder relative to DIR), `outcome` (state, error, best_error,
time_s, exit_status, epochs) and `reason` (why it failed or was pruned).

After each trial, DIR/trials.jsonl and DIR/trials.csv are rewritten whole (one row per trial,
TRIAL_COLUMNS). Library code: errors are SkdslErrors, nothing is printed (progress lines go to
the `progress` callable), and torch is never imported here (only the children train).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import socket
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..base import files
from ..base.errors import SkdslError, did_you_mean
from ..core.space import Choice, Dimension, FloatRange, IntRange, Space
from . import trial as runs
from .points import OK, Point
from .sampling import ADAPTIVE, SAMPLERS, distributions, make_sampler, require_optuna

STUDY_NAME = "explore"
NON_ADAPTIVE = tuple(name for name in SAMPLERS if name not in ADAPTIVE)
DRAWS_PER_TRIAL = 50  # an adaptive study stops drawing after this many draws per trial asked
MAX_RETRIES = 3  # a point whose worker died is trained again at most this many times
HEARTBEAT_S, GRACE_S = 60, 300  # RDB storages: a trial silent for GRACE_S is failed, retried
STUDY_FILE, TRIALS_JSONL, TRIALS_CSV, TRIALS_FOLDER = ("study.db", "trials.jsonl", "trials.csv",
                                                       "trials")
# The columns of trials.jsonl / trials.csv, the space's parameter names between the two.
LEADING = ("number", "point")
TRAILING = ("state", "error", "best_error", "time_s", "reason", "run", "params", "macs",
            "activations", "peak_bytes")
# The study's user attributes that a resumed study must share with the command resuming it.
SAME_ON_RESUME = ("spec", "spec_sha256", "space", "sampler", "seed", "k", "budget", "overrides",
                  "input_shape", "training")
WORKER_DIED = "worker died"
NO_HEARTBEAT = "worker died (no heartbeat)"
_CODE_STUDY = "SK562"  # a study folder, storage or study that cannot be used as asked

_LIVE_WORKERS: set[str] = set()  # tokens of this process's worker threads while they run
_EXPORT_LOCK = threading.Lock()  # atomic writes name their temporary file by pid only
_CLAIM_LOCKS: dict[str, threading.Lock] = {}
_CLAIM_LOCKS_LOCK = threading.Lock()

Progress = Callable[[str], None]


# -- Optuna, storage, distributions ---------------------------------------------------------------


def storage_url(folder: str | Path, storage: str | None = None) -> str:
    """`storage` if given, else the SQLite file DIR/study.db as an RDB URL."""
    if storage:
        return str(storage)
    return "sqlite:///" + str((Path(folder) / STUDY_FILE).resolve())


def open_storage(url: str, *, heartbeat: tuple[int, int] | None = (HEARTBEAT_S, GRACE_S)):
    """The Optuna storage of `url`: `journal:PATH` a journal file, anything else an RDB URL
    (with a heartbeat of `heartbeat` = (interval, grace) seconds, None for none, and Optuna's
    RetryFailedTrialCallback for trials whose worker went silent). SK562 when it cannot be
    opened."""
    optuna = require_optuna()
    with _quiet(optuna):
        if url.startswith("journal:"):
            path = url[len("journal:"):]
            if not path:
                raise SkdslError("storage 'journal:': name the journal file, such as "
                                 "journal:study.log", code=_CODE_STUDY)
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                return JournalStorage(JournalFileBackend(path))
            except OSError as error:
                raise SkdslError(f"cannot open the journal '{path}': "
                                 f"{error.strerror or error}", code=_CODE_STUDY) from None
        if "://" not in url:
            raise SkdslError(f"storage '{url}' is neither a database URL nor a journal file",
                             code=_CODE_STUDY,
                             hint="such as sqlite:///study.db, postgresql://host/db or "
                                  "journal:study.log")
        kwargs: dict = {}
        if url.startswith("sqlite"):
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}  # workers take turns
        if heartbeat is not None:
            kwargs.update(heartbeat_interval=heartbeat[0], grace_period=heartbeat[1])
            callback = _retry_callback(optuna)
            import inspect

            parameters = inspect.signature(optuna.storages.RDBStorage).parameters
            kwargs["heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback"
                   in parameters else "failed_trial_callback"] = callback
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except Exception as error:  # noqa: BLE001 - SQLAlchemy's and the drivers' errors
            text = str(error).strip()
            first = text.splitlines()[0] if text else type(error).__name__
            raise SkdslError(f"cannot open the storage '{url}': {first}",
                             code=_CODE_STUDY) from None


def _retry_callback(optuna):
    """Optuna's callback that enqueues a failed trial's point again (at most MAX_RETRIES times):
    RetryHeartbeatStaleTrialCallback, called RetryFailedTrialCallback before Optuna 4.9."""
    storages = optuna.storages
    retry = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or \
        storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return retry(max_retry=MAX_RETRIES)


@contextlib.contextmanager
def _quiet(optuna):
    """Optuna's INFO lines ("Trial 3 finished ...") and experimental warnings kept quiet."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # ask-and-tell with a heartbeat is what this module does, beating it itself
            warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used")
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def space_record(space: Space) -> list[dict]:
    """The space as the study records it: per dimension its name, default, domain text and
    domain fields (enough to rebuild the distributions without the spec)."""
    record = []
    for dimension in space.dimensions:
        domain = dimension.domain
        entry = {"name": dimension.name, "default": dimension.default, "domain": domain.text()}
        if isinstance(domain, Choice):
            entry.update(kind="choice", values=list(domain.values))
        else:
            entry.update(kind="int" if isinstance(domain, IntRange) else "float", low=domain.low,
                         high=domain.high, step=domain.step, log=domain.log)
        record.append(entry)
    return record


def space_from_record(record: list[dict]) -> Space:
    """The dimensions of a recorded space (its constraints stay in the spec)."""
    dimensions = []
    for entry in record:
        if entry["kind"] == "choice":
            domain = Choice(tuple(entry["values"]))
        elif entry["kind"] == "int":
            domain = IntRange(entry["low"], entry["high"], entry["step"], entry["log"])
        else:
            domain = FloatRange(entry["low"], entry["high"], entry["step"], entry["log"])
        dimensions.append(Dimension(entry["name"], entry["default"], domain))
    return Space(tuple(dimensions))


# -- choosing the points --------------------------------------------------------------------------


def _admits(budget) -> Callable[[Point], bool] | None:
    if budget is None:
        return None
    return budget.admits if hasattr(budget, "admits") else budget


def choose_points(points: Iterable[Point], k: int, budget=None) -> list[Point]:
    """K of the points that built (status ok) and fit `budget` (an object with `admits(point)`
    or a callable; None: all), stratified over multiply-adds: sorted by multiply-adds (ties by
    index), cut into K strata of equal size, the middle point of each. All of them when there
    are K or fewer. Deterministic; returned cheapest first."""
    admits = _admits(budget)
    eligible = sorted((p for p in points if p.status == OK and p.macs is not None
                       and (admits is None or admits(p))), key=lambda p: (p.macs, p.index))
    n = len(eligible)
    if n <= k:
        return eligible
    return [eligible[(2 * i + 1) * n // (2 * k)] for i in range(k)]


# -- making or resuming a study -------------------------------------------------------------------


def _spec_of(counter, spec) -> Path:
    for candidate in (spec, getattr(counter, "path", None), getattr(counter, "spec_path", None)):
        if candidate is not None:
            return Path(candidate).resolve()
    raise SkdslError("the study needs the spec's path: pass spec=", code="SK566")


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(files.read_bytes(path, files.MAX_TEXT_BYTES)).hexdigest()
    except OSError:
        return None


def _budget_text(budget) -> str | None:
    if budget is None:
        return None
    return getattr(budget, "text", None) or str(budget)


def _check_k(k) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise SkdslError(f"the number of points to train is {k!r}: expected a whole number "
                           f"of at least 1", code="SK566")
    return k


def _check_sampler(sampler: str) -> str:
    if sampler not in SAMPLERS:
        raise SkdslError(f"sampler '{sampler}': expected one of {', '.join(SAMPLERS)}",
                           code="SK566", hint=did_you_mean(str(sampler), SAMPLERS))
    return sampler


def study_sampler(name: str, seed: int | None):
    """The sampler of a study that trains: TPE or NSGA-II, seeded; for the non-adaptive
    samplers, whose points are enqueued with every value fixed, a seeded RandomSampler that
    never draws."""
    return make_sampler(name if name in ADAPTIVE else "random", Space(), seed, for_counting=False)


def _directions(sampler: str) -> list[str]:
    return ["minimize", "minimize"] if sampler == "nsga2" else ["minimize"]


def prepare_study(folder: str | Path, counter, points: Sequence[Point] = (), *, k: int,
                  sampler: str = "random", seed: int | None = 0, epochs: int | None = None,
                  data: str | None = None, storage: str | None = None,
                  study_name: str = STUDY_NAME, resume: bool = False, budget=None,
                  settings: dict | None = None, spec: str | Path | None = None,
                  heartbeat: tuple[int, int] | None = (HEARTBEAT_S, GRACE_S),
                  progress: Progress | None = None):
    """Make the study in `storage` (default DIR/study.db), or load it with `resume`, record its
    settings and, for a non-adaptive sampler, enqueue the chosen points once. Returns the
    optuna.Study; trains nothing (`train_points` does both).

    counter: a skdsl.explore.counting.Counter (its `space`, its spec `path`, its `overrides`,
    `input_shape` and `allow_imports_outside`); points: the counted points (for the
    non-adaptive samplers); k: how many to train; settings: further `skdsl train` settings by
    their TrainConfig names (max_steps, batch_size, recipe, lr, ...).

    SK562 when the study exists and `resume` is not given, when a resumed study was made with
    other settings, or when the storage cannot be opened; SK566 for a bad k or sampler; SK510
    for a training setting `skdsl train` would refuse."""
    return _prepare(folder, counter, points, k=k, sampler=sampler, seed=seed, epochs=epochs,
                    data=data, storage=storage, study_name=study_name, resume=resume,
                    budget=budget, settings=settings, spec=spec, heartbeat=heartbeat,
                    progress=progress)[0]


def _prepare(folder, counter, points, *, k, sampler, seed, epochs, data, storage, study_name,
             resume, budget, settings, spec, heartbeat, progress):
    """prepare_study's work: the study, and the storage object it lives in."""
    optuna = require_optuna()
    k, sampler = _check_k(k), _check_sampler(sampler)
    folder = Path(folder).resolve()
    spec_path = _spec_of(counter, spec)
    space: Space = counter.space
    names = list(space.names)
    clash = sorted(set(names) & set(LEADING + TRAILING))
    if clash:
        raise SkdslError(f"the parameter '{clash[0]}' has the name of a column of "
                           f"{TRIALS_JSONL}: rename it to explore its space", code="SK566")
    training = {"epochs": epochs, "data": data, "seed": seed, **(settings or {})}
    if getattr(counter, "allow_imports_outside", False):
        training.setdefault("allow_imports_outside", True)
    training = runs.check_settings(training)
    shape = getattr(counter, "input_shape", None)
    record = {
        "spec": str(spec_path), "spec_sha256": _sha256(spec_path), "space": space_record(space),
        "sampler": sampler, "seed": seed, "k": k, "budget": _budget_text(budget),
        "overrides": dict(getattr(counter, "overrides", None) or {}),
        "input_shape": list(shape) if shape is not None else None, "training": training,
        "calibration": getattr(counter, "calibration_path", None),
        "folder": str(folder), "objectives": ["error", "macs"][:len(_directions(sampler))],
        "skdsl": _version(),
    }
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SkdslError(f"cannot make the study folder '{folder}': {error.strerror or error}",
                         code=_CODE_STUDY) from None
    url = storage_url(folder, storage)
    store = open_storage(url, heartbeat=heartbeat)
    with _quiet(optuna):
        existing = study_name in _study_names(optuna, store, url)
        if existing and not resume:
            raise SkdslError(f"{_where(url, folder)} already holds the study '{study_name}'",
                             code="SK562", hint="add --resume to go on with it, or choose "
                                                "another --out (or --study)")
        if existing:
            study = optuna.load_study(study_name=study_name, storage=store,
                                      sampler=study_sampler(sampler, seed))
            _check_same(study, record, url, folder)
        else:
            study = optuna.create_study(storage=store, study_name=study_name,
                                        directions=_directions(sampler),
                                        sampler=study_sampler(sampler, seed))
        attrs = study.user_attrs
        if "sampler" not in attrs:  # new, or made and killed before this was written
            for key, value in record.items():
                if key != "sampler":
                    study.set_user_attr(key, value)
            study.set_user_attr("sampler", sampler)  # last: the record is whole
        if sampler in NON_ADAPTIVE and not attrs.get("enqueued"):
            chosen = choose_points(points, k, budget)
            _enqueue(study, chosen)
            study.set_user_attr("enqueued", len(chosen))
            if progress:
                admits = _admits(budget)
                eligible = sum(1 for p in points if p.status == OK and p.macs is not None
                               and (admits is None or admits(p)))
                progress(f"study '{study_name}': training {len(chosen)} of the {eligible} "
                         f"points that build{' and fit the budget' if budget is not None else ''}"
                         f", stratified over multiply-adds")
    return study, store


def _version() -> str:
    from ..version import __version__

    return __version__


def _where(url: str, folder: Path) -> str:
    default = storage_url(folder)
    return f"'{folder}'" if url == default else f"the storage '{url}'"


def _study_names(optuna, store, url: str) -> list[str]:
    try:
        return optuna.get_all_study_names(storage=store)
    except Exception as error:  # noqa: BLE001 - the database's own errors
        raise SkdslError(f"cannot read the storage '{url}': {error}", code=_CODE_STUDY) from None


def _check_same(study, record: dict, url: str, folder: Path) -> None:
    """SK562 when a study made earlier differs from `record` in what a resume must keep."""
    attrs = study.user_attrs
    if "sampler" not in attrs:
        if study.get_trials(deepcopy=False):
            raise SkdslError(f"the study '{study.study_name}' in {_where(url, folder)} was not "
                             f"made by skdsl explore", code=_CODE_STUDY,
                             hint="choose another study name or storage")
        return  # made, then killed before its settings were written: they are written now
    changed = [key for key in SAME_ON_RESUME if attrs.get(key) != record[key]]
    if changed:
        said = ", ".join(f"{key} {_short(attrs.get(key))} (now {_short(record[key])})"
                         for key in changed[:3])
        raise SkdslError(f"the study '{study.study_name}' in {_where(url, folder)} was made "
                         f"with other settings: {said}", code=_CODE_STUDY,
                         hint="resume with the settings it was made with, or start a new study "
                              "in another --out")


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _enqueue(study, chosen: list[Point]) -> None:
    """Each chosen point once: a point some trial holds already (an enqueue killed half-way)
    is not enqueued again."""
    held = {t.user_attrs.get("point") for t in study.get_trials(deepcopy=False)}
    for point in chosen:
        if point.index not in held:
            study.enqueue_trial(dict(point.values),
                                user_attrs={"point": point.index, "counts": point.counts()})


def load_settings(storage: str, study_name: str = STUDY_NAME) -> dict:
    """What the study records about itself (its user attributes): spec, space, sampler, seed,
    k, budget, overrides, input_shape, training, folder, objectives. SK562 when there is no
    such study, or it was not made by skdsl explore."""
    optuna = require_optuna()
    path = _local_file(storage)
    if path is not None and not Path(path).is_file():  # opening it would make an empty one
        raise SkdslError(f"the storage '{storage}' names no file '{path}'", code=_CODE_STUDY,
                         hint="make the study with `skdsl explore SPEC --storage URL` first")
    store = open_storage(storage, heartbeat=None)
    with _quiet(optuna):
        if study_name not in _study_names(optuna, store, storage):
            raise SkdslError(f"the storage '{storage}' holds no study '{study_name}'",
                             code=_CODE_STUDY, hint="name it with --study; make it with "
                                                    "`skdsl explore SPEC --storage URL`")
        attrs = optuna.load_study(study_name=study_name, storage=store).user_attrs
    if "sampler" not in attrs or "training" not in attrs:
        raise SkdslError(f"the study '{study_name}' in '{storage}' was not made by skdsl "
                         f"explore", code=_CODE_STUDY)
    return dict(attrs)


# -- training -------------------------------------------------------------------------------------


def train_points(folder: str | Path, counter, points: Sequence[Point] = (), *, k: int,
                 sampler: str = "random", seed: int | None = 0, epochs: int | None = None,
                 data: str | None = None, workers: int = 1, storage: str | None = None,
                 study_name: str = STUDY_NAME, resume: bool = False, budget=None,
                 settings: dict | None = None, spec: str | Path | None = None,
                 program: Sequence[str] | None = None, progress: Progress | None = None,
                 max_trials: int | None = None,
                 heartbeat: tuple[int, int] | None = (HEARTBEAT_S, GRACE_S)) -> list[dict]:
    """Train K points of `counter`'s space and keep the results in an Optuna study; returns the
    rows of DIR/trials.jsonl (one per trial, TRIAL_COLUMNS).

    folder: the study folder (DIR/study.db, DIR/trials/NNNN, DIR/trials.jsonl, DIR/trials.csv);
    counter, points, k, sampler, seed, budget, settings: as `prepare_study` says; epochs, data:
    `skdsl train`'s --epochs and --data for every trial (seed is its --seed too, unless
    settings gives one); workers: trials trained at once in this process, each with
    cores // workers threads; storage: an Optuna storage URL or journal:PATH (default:
    DIR/study.db); resume: go on with the study in the storage (finished trials stay, trials
    of dead workers are retried); program: the command that trains (default: this Python's
    `-m skdsl train`); progress: called with a line per event; max_trials: train at most this
    many trials in this call, then return (the rest waits for a resume or a worker).

    Ctrl-C stops the children (they save last.pt), records their trials as failed, enqueues
    their points again for a resume, and is raised again as KeyboardInterrupt."""
    worker_threads(workers)  # a bad count is said before the study is made
    study, store = _prepare(folder, counter, points, k=k, sampler=sampler, seed=seed,
                            epochs=epochs, data=data, storage=storage, study_name=study_name,
                            resume=resume, budget=budget, settings=settings, spec=spec,
                            heartbeat=heartbeat, progress=progress)
    folder = Path(folder).resolve()
    return _train(study, store, folder, storage_url(folder, storage), counter=counter,
                  budget=budget, workers=workers, program=program, progress=progress,
                  max_trials=max_trials, heartbeat=heartbeat, seed_offset=0)


def work(storage: str, study_name: str = STUDY_NAME, *, folder: str | Path | None = None,
         workers: int = 1, counter=None, budget=None, spec: str | Path | None = None,
         program: Sequence[str] | None = None, progress: Progress | None = None,
         max_trials: int | None = None,
         heartbeat: tuple[int, int] | None = (HEARTBEAT_S, GRACE_S)) -> list[dict]:
    """`skdsl explore --worker --storage URL --study NAME`: join a study made by
    `train_points` (here or on another machine) and train trials until none is left.

    Everything comes from the study's user attributes; `folder` (default: the study's own)
    is where this worker's runs and its copy of trials.jsonl/trials.csv go, `spec` the spec's
    path on this machine when it differs. An adaptive study counts its draws with a Counter
    and its budget: made here from the recorded spec, space, overrides and budget text unless
    given. Returns the rows of trials.jsonl. SK562 when the storage, the study or the spec
    cannot be used (no such file or study, another spec text or space)."""
    optuna = require_optuna()
    worker_threads(workers)
    settings = load_settings(storage, study_name)
    folder = Path(folder if folder is not None else settings["folder"]).resolve()
    spec_path = Path(spec).resolve() if spec is not None else Path(settings["spec"])
    if not spec_path.is_file():
        raise SkdslError(f"the study's spec '{spec_path}' is not on this machine",
                         code=_CODE_STUDY, hint="pass its path here with --spec")
    if settings.get("spec_sha256") and _sha256(spec_path) != settings["spec_sha256"]:
        raise SkdslError(f"the spec '{spec_path}' is not the one the study '{study_name}' was "
                         f"made with (its text differs)", code=_CODE_STUDY)
    if settings["sampler"] in ADAPTIVE:
        if counter is None:
            from .counting import Counter

            recorded = space_from_record(settings["space"])
            shape = settings.get("input_shape")
            counter = Counter(spec_path, spaces={d.name: d.domain.text()
                                                 for d in recorded.dimensions},
                              overrides=settings.get("overrides") or None,
                              input_shape=tuple(shape) if shape else None,
                              allow_imports_outside=bool(settings["training"].get(
                                  "allow_imports_outside")),
                              calibration=settings.get("calibration"))
        if space_record(counter.space) != settings["space"]:
            raise SkdslError(f"the spec '{spec_path}' now ranges over another space than the "
                             f"study '{study_name}'", code=_CODE_STUDY)
        if settings.get("budget") is not None and budget is None:
            from .budget import Budget, measured_by

            budget = Budget(settings["budget"], counted=measured_by(counter))  # --where's text
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SkdslError(f"cannot make the folder '{folder}': {error.strerror or error}",
                         code=_CODE_STUDY) from None
    store = open_storage(storage, heartbeat=heartbeat)
    with _quiet(optuna):
        study = optuna.load_study(study_name=study_name, storage=store,
                                  sampler=study_sampler(settings["sampler"], settings["seed"]))
    offset = 1 + (os.getpid() * 7919) % 1_000_003  # other draws than the first process's
    return _train(study, store, folder, storage, counter=counter, budget=budget, workers=workers,
                  program=program, progress=progress, max_trials=max_trials,
                  heartbeat=heartbeat, seed_offset=offset, spec=spec_path)


def worker_threads(workers: int, cores: int | None = None) -> tuple[int, int]:
    """(workers, threads per trial) sharing this process's cores: never more threads in all
    than cores, so at most `cores` workers of one thread each."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise SkdslError(f"workers is {workers!r}: expected a whole number of at least 1",
                           code="SK566")
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    workers = min(workers, cores)
    return workers, max(1, cores // workers)


class _Context:
    """What the worker threads of one call share: the study's settings, the stop event, the
    claim lock, the count of trials claimed, the first error."""

    def __init__(self, study, store, folder: Path, url: str, *, counter, budget, threads: int,
                 program, progress, max_trials, heartbeat, spec: Path | None):
        optuna = require_optuna()
        self.optuna, self.study, self.folder, self.url = optuna, study, folder, url
        self.storage = store
        self.study_id = store.get_study_id_from_name(study.study_name)
        self.beats = bool(heartbeat) and hasattr(store, "record_heartbeat") and \
            store.get_heartbeat_interval() is not None
        self.attrs = study.user_attrs
        self.sampler = self.attrs["sampler"]
        self.adaptive = self.sampler in ADAPTIVE
        self.k = self.attrs["k"]
        self.space = space_from_record(self.attrs["space"])
        self.distributions = distributions(self.space)
        self.names = list(self.space.names)
        self.counter, self.admits = counter, _admits(budget)
        self.threads, self.program, self.progress = threads, program, progress
        self.max_trials, self.heartbeat = max_trials, heartbeat
        self.spec = str(spec) if spec is not None else self.attrs["spec"]
        self.training = dict(self.attrs["training"])
        self.overrides = dict(self.attrs.get("overrides") or {})
        self.stop = threading.Event()
        self.claimed = 0
        self.counting = threading.Lock()
        self.errors: list[BaseException] = []
        self.drawn_out = False
        self.host = socket.gethostname()
        self.retry = _retry_callback(optuna)

    def trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def say(self, line: str) -> None:
        if self.progress is not None:
            self.progress(line)

    def take_turn(self) -> bool:
        """Whether this call may claim one more trial (max_trials)."""
        with self.counting:
            if self.max_trials is not None and self.claimed >= self.max_trials:
                return False
            self.claimed += 1
            return True

    def give_back_turn(self) -> None:
        with self.counting:
            self.claimed -= 1


def _train(study, store, folder: Path, url: str, *, counter, budget, workers: int, program,
           progress, max_trials, heartbeat, seed_offset: int,
           spec: Path | None = None) -> list[dict]:
    """Run the worker threads until no trial is left to claim; export; the rows."""
    optuna = require_optuna()
    workers, threads = worker_threads(workers)
    with _quiet(optuna):
        context = _Context(study, store, folder, url, counter=counter, budget=budget,
                           threads=threads, program=program, progress=progress,
                           max_trials=max_trials, heartbeat=heartbeat, spec=spec)
        if context.adaptive and counter is None:
            raise SkdslError("an adaptive sampler counts every point it draws: pass the "
                               "Counter", code="SK566")
        seed = context.attrs.get("seed")
        studies = []
        for slot in range(workers):
            # Each thread its own Study (the same storage) and sampler: seeded apart, so that
            # two threads do not draw the same points.
            sampler_seed = None if seed is None else seed + seed_offset + slot
            studies.append(optuna.load_study(study_name=study.study_name,
                                             storage=store,
                                             sampler=study_sampler(context.sampler, sampler_seed)))
        context.say(f"study '{study.study_name}': {workers} worker{'s' if workers > 1 else ''} "
                    f"× {threads} thread{'s' if threads > 1 else ''}")
        pool = [threading.Thread(target=_worker, args=(context, studies[slot], slot),
                                 name=f"skdsl-explore-{slot}", daemon=True)
                for slot in range(workers)]
        for thread in pool:
            thread.start()
        try:
            while any(thread.is_alive() for thread in pool):
                for thread in pool:
                    thread.join(timeout=0.2)
        except KeyboardInterrupt:
            context.stop.set()
            for thread in pool:
                thread.join()
            export_trials(study, folder)
            raise
        rows = export_trials(study, folder)
    if context.errors:
        raise context.errors[0]
    return rows


def _worker(context: _Context, study, slot: int) -> None:
    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    _LIVE_WORKERS.add(token)
    try:
        while not context.stop.is_set():
            if not context.take_turn():
                return
            claim = _claim(context, study, token)
            if claim is None:
                context.give_back_turn()
                return
            _run(context, study, claim)
    except BaseException as error:  # noqa: BLE001 - handed to the main thread, raised there
        context.errors.append(error)
        context.stop.set()
    finally:
        _LIVE_WORKERS.discard(token)


# -- claiming a trial -----------------------------------------------------------------------------


@contextlib.contextmanager
def _claim_lock(url: str):
    """One claim at a time: among this process's threads, and among the processes sharing a
    SQLite file or journal file (a lock file beside it; SQLite ignores FOR UPDATE)."""
    with _CLAIM_LOCKS_LOCK:
        lock = _CLAIM_LOCKS.setdefault(url, threading.Lock())
    path = _local_file(url)
    if path is not None:
        path += ".claims"
    with lock:
        if path is None:
            yield
            return
        try:
            import fcntl
        except ImportError:  # Windows: the thread lock only
            yield
            return
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _local_file(url: str) -> str | None:
    """The file of a SQLite URL or journal, None for a server database (or SQLite in memory)."""
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return url[len("sqlite:///"):].partition("?")[0]  # no ?timeout=...
    if url.startswith("journal:"):
        return url[len("journal:"):] or None
    return None


class _Claim:
    def __init__(self, trial, values: dict, attrs: dict):
        self.trial, self.values, self.attrs = trial, values, attrs
        self.number = trial.number


def _claim(context: _Context, study, token: str) -> _Claim | None:
    """The next trial to train, marked with this worker; None when none is left."""
    optuna = context.optuna
    TrialState = optuna.trial.TrialState
    with _claim_lock(context.url):
        _recover(context, study)
        while True:
            # all trials only where a draw needs them (K, the cap, repeats): they are many
            trials = study.get_trials(deepcopy=False, states=None if context.adaptive
                                      else (TrialState.WAITING,))
            waiting = [t for t in trials if t.state == TrialState.WAITING]
            if not context.adaptive and not waiting:
                return None
            if context.adaptive and not waiting:
                if _slots_used(trials, TrialState) >= context.k:
                    return None
                drawn = sum(1 for t in trials if "failed_trial" not in t.system_attrs)
                if drawn >= DRAWS_PER_TRIAL * context.k:
                    if not context.drawn_out:
                        context.drawn_out = True
                        context.say(f"stopped drawing after {drawn} draws: only "
                                    f"{_slots_used(trials, TrialState)} of {context.k} points "
                                    f"built, fitted the budget and were new")
                    return None
            trial = study.ask(dict(context.distributions))
            values = {name: trial.params[name] for name in context.names}
            attrs = dict(trial.user_attrs)
            if not context.adaptive and "point" not in attrs:
                # Only a server database without our lock gets here: another worker took the
                # last waiting trial between our look and our ask.
                _prune(context, study, trial, "no point was left to train")
                return None
            if context.adaptive and not waiting:
                reason, attrs = _judge(context, trial, values, trials)
                if reason is not None:
                    _prune(context, study, trial, reason, attrs)
                    continue
            # Who trains it and where: one attribute (each is a write to the storage)
            mine = {"worker": {"host": context.host, "pid": os.getpid(),
                               "pid_start": _process_start(os.getpid()), "token": token,
                               "started": round(time.time(), 3),
                               "run": f"{TRIALS_FOLDER}/{trial.number:04d}"}}
            if attrs.get("reason") is not None:  # a retry: its failed trial's reason
                mine["reason"] = None
            for key, value in {**attrs, **mine}.items():
                if trial.user_attrs.get(key, object()) != value:
                    trial.set_user_attr(key, value)
            if context.beats:
                context.storage.record_heartbeat(context.trial_id(trial.number))
            return _Claim(trial, values, {**attrs, **mine})


def _slots_used(trials, TrialState) -> int:
    """The trials that take one of an adaptive study's K: trained, training or waiting, less
    those whose worker died (their retry takes their place)."""
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    return sum(1 for t in trials
               if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
               or (t.state == TrialState.FAIL and t.number not in retried))


def _judge(context: _Context, trial, values: dict, trials) -> tuple[str | None, dict]:
    """Why an adaptive draw is not trained (it does not build, breaks the budget, or repeats a
    point), or None; and its attributes (the counts)."""
    TrialState = context.optuna.trial.TrialState
    for other in trials:
        if other.number != trial.number and other.state != TrialState.PRUNED and \
                _values_of(other) == values:
            return f"the same point as trial {other.number}", {}
    point = context.counter.count(values, trial.number)
    attrs = {"counts": point.counts()}
    if point.status != OK:
        return f"{point.status}: {point.error} {point.message or ''}".strip(), attrs
    if context.admits is not None and not context.admits(point):
        budget = context.attrs.get("budget")
        return "over budget" + (f" ({budget})" if budget else ""), attrs
    return None, attrs


def _prune(context: _Context, study, trial, reason: str, attrs: dict | None = None) -> None:
    for key, value in {**(attrs or {}), "reason": reason}.items():
        trial.set_user_attr(key, value)
    study.tell(trial, state=context.optuna.trial.TrialState.PRUNED)
    context.say(f"trial {trial.number} ({_setting(trial.params)}): pruned: {reason}")


def _values_of(trial) -> dict:
    return dict(trial.params) or dict(trial.system_attrs.get("fixed_params", {}))


def _setting(values: dict) -> str:
    return " ".join(f"{name}={value}" for name, value in values.items())


def _recover(context: _Context, study) -> None:
    """Fail the running trials whose worker is gone, and enqueue their points again: those of
    this host whose worker process (or, in this process, worker thread) no longer runs, and on
    an RDB storage with a heartbeat those silent for the grace period (Optuna's own)."""
    optuna = context.optuna
    storage = context.storage
    if context.beats:
        optuna.storages.fail_stale_trials(study)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if not isinstance(worker, dict) or worker.get("host") != context.host or \
                not isinstance(worker.get("pid"), int):
            continue
        if _alive(worker["pid"], worker.get("pid_start"), worker.get("token")):
            continue
        trial_id = context.trial_id(trial.number)
        try:
            storage.set_trial_user_attr(trial_id, "reason", WORKER_DIED)
            if not storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker recovered it first
        context.retry(study, storage.get_trial(trial_id))
        context.say(f"trial {trial.number} ({_setting(trial.params)}) was left running by a "
                    f"worker that died (pid {worker['pid']}): its point is trained again")


def _alive(pid: int, started, token) -> bool:
    """Whether the worker that claimed a trial on this host still runs."""
    if pid == os.getpid():
        return token in _LIVE_WORKERS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except OSError:
        return True
    if started is not None and Path("/proc").is_dir():
        return _process_start(pid) == started  # None: a zombie; another time: a reused pid
    return True


def _process_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, /proc/PID/stat), None for a zombie
    or where there is no /proc: told apart from a later process given the same pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


# -- training a claimed trial ---------------------------------------------------------------------


def _run(context: _Context, study, claim: _Claim) -> None:
    optuna = context.optuna
    TrialState = optuna.trial.TrialState
    run = context.folder / claim.attrs["worker"]["run"]
    command = runs.train_command(context.spec, run, claim.values, context.training,
                                 context.threads, overrides=context.overrides,
                                 program=context.program)
    point = claim.attrs.get("point")
    about = (f"trial {claim.number} ({'point ' + str(point) + ', ' if point is not None else ''}"
             f"{_setting(claim.values)})")
    export_trials(study, context.folder)  # shows it running
    context.say(f"{about}: training in {run}")
    trial_id = context.trial_id(claim.number)
    beating = _Heartbeat(context.storage, trial_id, context.heartbeat[0] if context.beats
                         else None)
    with beating:
        outcome = runs.run_trial(command, run, context.threads, context.stop)
    try:
        claim.trial.set_user_attr("outcome", outcome.attrs())
        if outcome.reason is not None:
            claim.trial.set_user_attr("reason", outcome.reason)
        if outcome.state == runs.COMPLETE:
            values = [outcome.error]
            if context.sampler == "nsga2":
                values.append(float((claim.attrs.get("counts") or {}).get("macs") or 0))
            study.tell(claim.trial, values if len(values) > 1 else values[0])
            context.say(f"{about}: complete, top-1 error {outcome.error:.2f}% (best "
                        f"{outcome.best_error:.2f}%) in {outcome.time_s:.1f} s")
        else:
            study.tell(claim.trial, state=TrialState.FAIL)
            if outcome.state == runs.STOPPED:
                context.retry(study, context.storage.get_trial(trial_id))
                context.say(f"{about}: stopped; its point waits for --resume")
            else:
                context.say(f"{about}: failed: {outcome.reason}")
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as error:
        # Failed meanwhile by a worker that found its heartbeat silent (its retry is queued),
        # which Optuna says as either error; any other ValueError is a bug.
        if isinstance(error, ValueError) and \
                not context.storage.get_trial(trial_id).state.is_finished():
            raise
        context.say(f"{about}: finished after another worker had given it up")
    export_trials(study, context.folder)


class _Heartbeat:
    """Beats the trial's heartbeat every interval while it trains (RDB storages only)."""

    def __init__(self, storage, trial_id: int, interval: float | None):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.done = threading.Event()
        self.thread = None

    def __enter__(self):
        if self.interval:
            self.thread = threading.Thread(target=self._beat, daemon=True)
            self.thread.start()
        return self

    def _beat(self) -> None:
        while not self.done.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # noqa: BLE001 - a lost beat is retried at the next interval
                pass

    def __exit__(self, *exc) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join()


# -- the table of trials --------------------------------------------------------------------------

_STATE_NAMES = {"COMPLETE": "complete", "FAIL": "failed", "PRUNED": "pruned",
                "RUNNING": "running", "WAITING": "waiting"}


def trial_columns(names: Sequence[str]) -> list[str]:
    """The columns of trials.jsonl and trials.csv: number, point, the parameters, state, error,
    best_error, time_s, reason, run, params, macs, activations, peak_bytes."""
    return [*LEADING, *names, *TRAILING]


def trial_rows(study) -> list[dict]:
    """One row per trial of `study`, by number (trial_columns). `error` and `best_error` are
    the final and best top-1 errors in %, `run` the run folder relative to the study folder."""
    names = [entry["name"] for entry in study.user_attrs.get("space", [])]
    rows = []
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        attrs = trial.user_attrs
        counts, outcome = attrs.get("counts") or {}, attrs.get("outcome") or {}
        run = (attrs.get("worker") or {}).get("run")
        values = _values_of(trial)
        state = _STATE_NAMES.get(trial.state.name, trial.state.name.lower())
        reason = attrs.get("reason")
        if state == "failed" and reason is None:
            reason = NO_HEARTBEAT
        if state in ("waiting", "running"):
            # a retry carries the attributes of the trial it retries: not its own yet
            outcome, reason = {}, None
            run = run if state == "running" else None
        row = {"number": trial.number, "point": attrs.get("point"),
               **{name: values.get(name) for name in names},
               "state": state, "error": outcome.get("error"),
               "best_error": outcome.get("best_error"), "time_s": outcome.get("time_s"),
               "reason": reason, "run": run,
               **{name: counts.get(name) for name in ("params", "macs", "activations",
                                                      "peak_bytes")}}
        rows.append(row)
    return rows


def export_trials(study, folder: str | Path) -> list[dict]:
    """Rewrite DIR/trials.jsonl (one JSON row per line) and DIR/trials.csv (a header, then the
    same rows) from the study, each whole or not at all. Returns the rows."""
    folder = Path(folder)
    rows = trial_rows(study)
    names = [entry["name"] for entry in study.user_attrs.get("space", [])]
    columns = trial_columns(names)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with _EXPORT_LOCK:
        try:
            files.write_text(folder / TRIALS_JSONL, "".join(json.dumps(row) + "\n"
                                                            for row in rows))
            files.write_text(folder / TRIALS_CSV, text.getvalue())
        except OSError as error:
            raise SkdslError(f"cannot write the trials to '{folder}': {error}",
                             code="SK504") from None
    return rows


def read_trials(folder: str | Path) -> list[dict]:
    """The rows of DIR/trials.jsonl (none when there is no such file yet)."""
    path = Path(folder) / TRIALS_JSONL
    if not path.exists():
        return []
    text = files.read_text(path, files.MAX_TEXT_BYTES)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


__all__ = ["train_points", "prepare_study", "work", "choose_points", "export_trials",
           "read_trials", "trial_rows", "trial_columns", "load_settings", "require_optuna",
           "storage_url", "open_storage", "distributions", "space_record", "space_from_record",
           "study_sampler", "worker_threads", "STUDY_NAME", "SAMPLERS", "ADAPTIVE",
           "NON_ADAPTIVE", "MAX_RETRIES", "DRAWS_PER_TRIAL"]

"""Counting the points of a space (skdsl/explore/counting.py): the acceptance property of issue 22.

Every point a shared `Counter` counts (its expansion and lowering caches warm with the points
before it) has exactly the counts of the same point written out as a plain spec (`plain_text`)
and loaded fresh: parameters, multiply-adds, activations and the inference memory of
`estimate_memory`. A point that does not build is rejected with the code loading its plain spec
gives; one that breaks a `where` with SK243. The order points come in never changes a row.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, reject, settings, strategies as st

import skdsl
from skdsl.base.errors import SkdslError, SpecError
from skdsl.core.analysis import analyze
from skdsl.core.graph import SharedUnits, lower_table
from skdsl.core.resources import estimate_memory, inference_bytes
from skdsl.core.space import Choice, IntRange, Space
from skdsl.explore.counting import BROKEN_CONSTRAINT, Counter
from skdsl.explore.points import OK, REJECTED
from skdsl.lang.expand import ExpansionCache, expand
from skdsl.lang.space import plain_text
from skdsl.testing import specs

ROOT = Path(__file__).resolve().parents[2]
SKNET50_OPTIONS = ROOT / "examples" / "sknet50_options.sk"
SK_CIFAR = ROOT / "examples" / "spaces" / "sk_cifar.sk"

# A CIFAR-sized template: a stem whose width a float multiplier scales, SK units from std/ with
# M, G, r and a depth, a local block that chooses its layers by a formal, a block that reads
# in_channels (in `bridge`, reading nothing else: its input's width comes from w1), a `for` table
# of stages, and a word param (an activation). Each param:
# (its default, the values its domains are drawn from).
PARAMS = {
    "w1": (16, (8, 16, 24, 32)),
    "w2": (32, (16, 32, 48)),
    "G": (4, (1, 2, 3, 4, 8)),
    "M": (2, (1, 2, 3)),
    "r": (4, (2, 4, 8)),
    "d1": (1, (1, 2)),
    "d2": (1, (0, 1, 2)),      # 0 is no repeat count: SK203 while expanding
    "k": (1.0, (0.5, 0.75, 1.0)),
    "act": ("relu", ("relu", "relu6", "silu")),
}
WHERE = "G divides w1 or M == 1"

TEMPLATE = """\
use "std/resnext.sk"
{params}
{where}
block pair(c, g, nl=relu):
    conv 1x1, c, act nl
    if g > 1:
        conv 3x3, c, G=g
    else:
        dwconv 3x3

block grow(c):
    residual if in_channels == c:
        conv 3x3, c

network cifar:
    input 3x32x32
    classes 10
    stage stem: conv 3x3, make_divisible(w1 * k, 8), act act
    stage s1: sk_unit(w1, 2 * w1, M=M, G=G, r=r, L=8) x d1
    stage bridge: grow(32)
    stage s2:
        pair(w2, G, nl=act) x d2
        grow(w2)
    for name, c, n in (s3, w2, d1), (s4, 2 * w2, 1):
        stage name: sk_unit(c, 2 * c, stride=2, M=M, G=G, r=r, L=8) x n
    stage head:
        avgpool global
        fc classes
"""


def where_holds(values: dict) -> bool:
    """WHERE, in Python, with the defaults for what `values` leaves out."""
    get = lambda name: values.get(name, PARAMS[name][0])  # noqa: E731
    return get("w1") % get("G") == 0 or get("M") == 1


def template(domains: dict[str, str], where: bool) -> str:
    lines = [f"param {name} = {default}" + (f" in {domains[name]}" if name in domains else "")
             for name, (default, _) in PARAMS.items()]
    return TEMPLATE.format(params="\n".join(lines), where=f"where {WHERE}" if where else "")


FULL_TEMPLATE = template({name: "{" + ", ".join(map(str, values)) + "}"
                          for name, (_, values) in PARAMS.items()}, where=True)


def write(folder: Path, text: str) -> Path:
    path = folder / f"{hashlib.sha1(text.encode()).hexdigest()[:16]}.sk"
    if not path.exists():
        path.write_text(text)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("spaces")


# -- what a point should count --------------------------------------------------------------


def fresh(text: str, counter: Counter, values: dict, overrides=None, input_shape=None):
    """(params, macs, activations, peak bytes) of the point written out as a plain spec and
    loaded afresh, or the SpecError loading it raises."""
    plain = plain_text(text, counter.source, values)
    try:
        network = skdsl.parse(plain, "<plain>", overrides)
        analysis = skdsl.analyze(network, input_shape)
    except SpecError as error:
        return error
    total = analysis.total
    return (total.params, total.mult_adds, total.activations,
            estimate_memory(analysis.graph, 1, task="inference").total)


def assert_counted_exactly(counter: Counter, text: str, values: dict, index: int = 0,
                           broken=None, overrides=None, input_shape=None):
    """The point `values` of `counter`: counted as the plain spec is, or rejected with its code
    (`broken(values)`: whether it breaks a `where`, computed independently)."""
    point = counter.count(dict(values), index)
    assert point.index == index and point.values == values
    if broken is not None and broken(values):
        assert (point.status, point.error) == (REJECTED, BROKEN_CONSTRAINT), point
        assert "where" in point.message
        return point
    expected = fresh(text, counter, values, overrides, input_shape)
    if isinstance(expected, SpecError):
        assert (point.status, point.error) == (REJECTED, expected.code), (values, point,
                                                                          expected.message)
        assert point.params is None and point.macs is None
        return point
    assert point.status == OK, (values, point.error, point.message)
    assert (point.params, point.macs, point.activations, point.peak_bytes) == expected, values
    return point


def points_of(space: Space, min_size: int = 1, max_size: int = 10):
    """Lists of points of `space` (each dimension drawn from its domain)."""
    def axis(domain):
        if isinstance(domain, Choice):
            return st.sampled_from(domain.values)
        if isinstance(domain, IntRange) or domain.step is not None:
            return st.sampled_from(tuple(domain.finite()))
        return st.floats(domain.low, domain.high)

    point = st.fixed_dictionaries({d.name: axis(d.domain) for d in space.dimensions})
    return st.lists(point, min_size=min_size, max_size=max_size)


# -- random spaces of the template ----------------------------------------------------------


@st.composite
def template_spaces(draw) -> tuple[str, dict, bool]:
    """(spec text with domains, --space domains, whether it has the `where`). A domain written
    in the spec holds its default; one given as --space may leave it out."""
    domains, flags = {}, {}
    for name, (default, values) in PARAMS.items():
        how = draw(st.sampled_from(["none", "spec", "flag"]))
        if how == "none":
            continue
        inside = how == "spec"
        kind = draw(st.sampled_from(["choice", "range", "log"] if name != "act" else ["choice"]))
        if kind == "choice":
            chosen = draw(st.lists(st.sampled_from(values), min_size=1, unique=True))
            if inside and default not in chosen:
                chosen.append(default)
            text = "{" + ", ".join(map(str, chosen)) + "}"
        elif isinstance(default, float):
            low = draw(st.sampled_from([v for v in values if not inside or v <= default]))
            high = draw(st.sampled_from([v for v in values if v >= low
                                         and (not inside or v >= default)]))
            text = (("log " if kind == "log" else "") + f"{low}..{high}"
                    + (" step 0.25" if kind == "range" and draw(st.booleans()) else ""))
        else:
            candidates = [v for v in values if kind != "log" or v > 0]
            low = draw(st.sampled_from([v for v in candidates if not inside or v <= default]))
            high = draw(st.sampled_from([v for v in candidates if v >= low
                                         and (not inside or v >= default)]))
            step = 8 if name == "w1" and kind == "range" else 1
            text = ("log " if kind == "log" else "") + f"{low}..{high}" + (
                f" step {step}" if step != 1 else "")
        (domains if inside else flags)[name] = text
    where = draw(st.booleans())
    if not domains and not flags:
        flags["M"] = "{1, 3}"
    return template(domains, where), flags, where


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_points_of_random_spaces_count_as_their_plain_specs(folder, data):
    text, flags, where = data.draw(template_spaces(), label="space")
    try:
        counter = Counter(write(folder, text), flags)
    except SpecError as error:  # the --space domains left no point that meets the where
        assert error.code == "SK242" and where
        reject()
    assert set(counter.space.names) == {n for n in PARAMS if f"{n} = {PARAMS[n][0]} in " in text
                                        } | set(flags)
    points = data.draw(points_of(counter.space, max_size=12), label="points")
    broken = (lambda values: not where_holds(values)) if where else None
    for index, values in enumerate(points):
        assert_counted_exactly(counter, text, values, index, broken=broken)


@pytest.fixture(scope="module")
def full_counter(folder) -> Counter:
    """One Counter of the whole template space, shared by every example below: its caches see
    hundreds of points."""
    return Counter(write(folder, FULL_TEMPLATE))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_one_shared_counter_counts_every_point_exactly(full_counter, data):
    for values in data.draw(points_of(full_counter.space, max_size=6)):
        assert_counted_exactly(full_counter, FULL_TEMPLATE, values,
                               broken=lambda v: not where_holds(v))


@pytest.fixture(scope="module")
def sknet50() -> Counter:
    return Counter(SKNET50_OPTIONS, {"M": "1..3", "G": "{16, 24, 32, 64}", "r": "{8, 16, 32}",
                                     "L": "log 16..64"})


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_sknet50_options_with_space_flags(sknet50, data):
    text = SKNET50_OPTIONS.read_text()
    for values in data.draw(points_of(sknet50.space, max_size=3)):
        assert_counted_exactly(sknet50, text, values)


def test_sknet50_defaults_are_the_papers_counts(sknet50):
    point = sknet50.count({"M": 2, "G": 32, "r": 16, "L": 32})
    assert (point.params, point.macs) == (27479784, 4462710784)
    assert sknet50.count({"M": 2, "G": 24, "r": 16, "L": 32}).error == "SK301"  # 24 ∤ 128


@pytest.fixture(scope="module")
def sk_cifar() -> Counter:
    return Counter(SK_CIFAR)


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_sk_cifar_space(sk_cifar, data):
    text = SK_CIFAR.read_text()
    for values in data.draw(points_of(sk_cifar.space, max_size=4)):
        assert_counted_exactly(sk_cifar, text, values,
                               broken=lambda v: v["width"] % v["G"] != 0)


def test_overrides_and_input_shape_apply_to_every_point():
    counter = Counter(SKNET50_OPTIONS, {"M": "{1, 3}", "r": "{8, 32}"}, overrides={"G": 16},
                      input_shape=(3, 96, 128))
    text = SKNET50_OPTIONS.read_text()
    for values in ({"M": 1, "r": 8}, {"M": 3, "r": 32}, {"M": 1, "r": 32}):
        assert_counted_exactly(counter, text, values, overrides={"G": 16},
                               input_shape=(3, 96, 128))
    with pytest.raises(SkdslError) as caught:
        Counter(SKNET50_OPTIONS, {"M": "{1, 3}"}, overrides={"M": 2})
    assert caught.value.code == "SK560"


# -- rejected points ------------------------------------------------------------------------


def test_a_point_that_breaks_a_where_is_sk243(tmp_path):
    counter = Counter(write(tmp_path, FULL_TEMPLATE))
    point = counter.count({**{n: d for n, (d, _) in PARAMS.items()}, "G": 3, "w1": 16, "M": 2})
    assert (point.status, point.error) == (REJECTED, "SK243")
    assert WHERE in point.message
    assert point.counts() == {name: None for name in point.counts()}
    # M == 1 lets it through; G = 3 then fails to divide the 16 channels when lowered
    point = counter.count({**{n: d for n, (d, _) in PARAMS.items()}, "G": 3, "w1": 16, "M": 1})
    assert (point.status, point.error) == (REJECTED, "SK301")


def test_a_where_that_cannot_be_evaluated_rejects_the_point(tmp_path):
    text = FULL_TEMPLATE.replace(f"where {WHERE}", "where 8 // (d1 - 1) > 1 or d1 == 2") \
        .replace("param d1 = 1", "param d1 = 2")
    counter = Counter(write(tmp_path, text))
    values = {**{n: d for n, (d, _) in PARAMS.items()}, "d1": 1}
    point = counter.count(values)  # never raises
    assert point.status == REJECTED and point.error == "SK206"  # division by zero
    assert counter.count({**values, "d1": 2}).status == OK


def test_a_point_that_does_not_build_carries_the_code_loading_it_gives(tmp_path):
    counter = Counter(write(tmp_path, FULL_TEMPLATE))
    defaults = {n: d for n, (d, _) in PARAMS.items()}
    for change, code in (({"d2": 0}, "SK203"), ({"G": 3, "M": 1}, "SK301")):
        values = {**defaults, **change}
        expected = fresh(FULL_TEMPLATE, counter, values)
        assert isinstance(expected, SpecError) and expected.code == code
        assert counter.count(values).error == code


# -- the caches never change a row ----------------------------------------------------------


def uncached_row(counter: Counter, values: dict) -> dict:
    """A point's row computed with no cache at all: a plain expand, lower and walk."""
    if not where_holds(values):
        return {"status": REJECTED, "error": "SK243"}
    try:
        graph = lower_table(expand(counter.source, values), None)
    except SpecError as error:
        return {"status": REJECTED, "error": error.code}
    total = analyze(graph).total
    return {"status": OK, "error": None, "params": total.params, "macs": total.mult_adds,
            "activations": total.activations,
            "peak_bytes": estimate_memory(graph, 1, task="inference").total}


def row(point) -> dict:
    made = point.row()
    del made["index"]
    return made


def test_order_and_cache_sizes_never_change_a_row(folder):
    path = write(folder, FULL_TEMPLATE)
    rng = random.Random(22)
    domains = {d.name: d.domain.finite() for d in Counter(path).space.dimensions}
    pool = [{name: rng.choice(tuple(values)) for name, values in domains.items()}
            for _ in range(60)]
    sequence = [rng.choice(pool) for _ in range(200)]  # revisits: ~60 distinct points
    shared = Counter(path)
    in_order = [row(shared.count(values, i)) for i, values in enumerate(sequence)]
    assert {r["status"] for r in in_order} >= {OK, REJECTED}
    backwards = Counter(path)
    reversed_rows = [row(backwards.count(values, i)) for i, values in
                     reversed(list(enumerate(sequence)))][::-1]
    assert reversed_rows == in_order
    # caches so small that they are emptied again and again
    tiny = Counter(path)
    tiny._expanded, tiny._lowered = ExpansionCache(limit=2), SharedUnits(limit=2)
    order = list(range(len(sequence)))
    rng.shuffle(order)
    shuffled = {i: row(tiny.count(sequence[i], i)) for i in order}
    assert [shuffled[i] for i in range(len(sequence))] == in_order
    # the same counts as no cache at all (and the same point always gives the same row)
    for values, counted in zip(sequence, in_order):
        expected = uncached_row(shared, values)
        assert {key: counted[key] for key in expected} == expected, values
    by_values = {}
    for values, counted in zip(sequence, in_order):
        assert by_values.setdefault(repr(sorted(values.items())), counted) == counted


# Blocks reading their file's params directly (docs/language.md: "Inside the body, the names in
# scope are the formals and the parameters of the block's file"), not through arguments. Found
# while writing these tests: a stage made for M=1 was reused for M=2 (the stage was remembered
# by the params it read itself, not those its blocks read).
FILE_PARAM_BLOCKS = {
    "body": "block unit(c):\n    conv 3x3, c, G=M\n",
    "default": "block unit(c, g=M):\n    conv 3x3, c, G=g\n",
    "if": "block unit(c):\n    conv 3x3, c\n    if M > 1:\n        conv 3x3, c\n",
}


@pytest.mark.parametrize("kind", FILE_PARAM_BLOCKS)
def test_a_block_that_reads_its_files_params_is_counted_anew(kind, tmp_path):
    text = ("param M = 1 in {1, 2, 4}\nparam w = 16 in {16, 32}\n" + FILE_PARAM_BLOCKS[kind]
            + "network n:\n    input 16x16x16\n    classes 10\n    stage s: unit(w)\n"
              "    stage head:\n        avgpool global\n        fc classes\n")
    counter = Counter(write(tmp_path, text))
    for values in counter.space.grid():
        assert_counted_exactly(counter, text, values)


# A block that reads in_channels, called through a wrapper block: the wrapper's body depends on
# its input's width too, though the wrapper itself never reads it. Found while writing these
# tests: the wrapper's body was cached by its arguments and reused on inputs of other widths.
NESTED_IN_CHANNELS = {
    "twice in one network": """\
param W = 8 in {8, 16}
block inner(c):
    conv 1x1, in_channels + c
block outer(c):
    inner(c)
network tiny:
    input 3x16x16
    classes 10
    stage stem: conv 3x3, W
    stage s2: outer(8)
    stage s3:
        conv 1x1, 24
        outer(8)
    stage head:
        avgpool global
        fc classes
""",
    "std wrapper, stem width": """\
use "std/shufflenetv2.sk"
param W = 16 in {8, 16}
network tiny:
    input 3x16x16
    classes 10
    stage stem: conv 3x3, W
    stage s2: shuffle_sk_down(8, 8, M=1, r=4, L=4)
    stage head:
        avgpool global
        fc classes
""",
}


@pytest.mark.parametrize("kind", NESTED_IN_CHANNELS)
def test_a_wrapper_of_a_block_that_reads_in_channels_is_expanded_anew(kind, tmp_path):
    text = NESTED_IN_CHANNELS[kind]
    counter = Counter(write(tmp_path, text))
    for values in ({"W": 16}, {"W": 8}, {"W": 16}):
        assert_counted_exactly(counter, text, values)


# -- inference_bytes ------------------------------------------------------------------------


def test_inference_bytes_on_every_zoo_network():
    names = skdsl.list_models()
    assert len(names) > 20
    for name in names:
        graph = skdsl.analyze(skdsl.load(name)).graph
        expected = estimate_memory(graph, 1, task="inference").total
        assert inference_bytes(graph) == expected, name
        shared = SharedUnits()
        network = skdsl.load(name)
        for _ in range(2):  # lowered with shared units, cold and then warm
            assert inference_bytes(lower_table(network, None, shared=shared)) == expected, name


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(specs())
def test_inference_bytes_on_random_specs(text):
    graph = skdsl.analyze(skdsl.parse(text, "<random>")).graph
    assert inference_bytes(graph) == estimate_memory(graph, 1, task="inference").total


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=specs(), widths=st.lists(st.sampled_from([8, 12, 16, 24, 32]), min_size=1,
                                     max_size=4))
def test_a_counter_counts_random_specs_as_loading_them_does(folder, text, widths):
    """Any spec becomes a space with a dummy dimension (and its stem width W, where it has
    one, on the command line): its points count as the plain spec does."""
    newline = "\r\n" if "\r\n" in text else "\n"
    text = f"param zz_space = 1 in {{1, 2}}{newline}" + text
    flags = {"W": "{" + ", ".join(map(str, sorted(set(widths)))) + "}"} \
        if "param W = " in text else {}
    counter = Counter(write(folder, text), flags)
    points = [{"zz_space": 1}, {"zz_space": 2}] if not flags else [
        {"zz_space": 1 + i % 2, "W": w} for i, w in enumerate(widths)]
    for index, values in enumerate(points + points[::-1]):
        assert_counted_exactly(counter, text, values, index)


# -- no torch -------------------------------------------------------------------------------


def test_counting_a_space_imports_no_torch():
    code = (
        "import sys\n"
        "from skdsl.explore.counting import Counter\n"
        f"c = Counter({str(SKNET50_OPTIONS)!r}, {{'M': '{{1, 2, 3}}', 'G': '{{16, 32}}'}})\n"
        "rows = [c.count({'M': m, 'G': g}) for m in (1, 2, 3) for g in (16, 32)]\n"
        "assert all(p.status == 'ok' and p.peak_bytes for p in rows), rows\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not loaded, loaded\n"
        "print('counted', len(rows))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "counted 6"


def test_a_calibration_gives_every_point_its_predicted_latency(tmp_path):
    """With --calibration each point's latency_ms is the latency model's prediction of its
    plain spec, and a budget may read it; without one a budget on latency is refused."""
    from skdsl.core import latency as T
    from skdsl.explore.budget import Budget, measured_by

    path = tmp_path / "cal.json"
    T.Calibration(T.Device("cpu", "test", 1, 1, "fp32", "0"), {}, 1e10, 1e10, 2e-6, 1e-5, 1.1,
                  1e10).save(path)
    space = ROOT / "examples" / "spaces" / "sknet50_space.sk"
    counter = Counter(space, calibration=path)
    point = counter.count({"M": 3, "G": 16, "r": 8, "L": 16, "d2": 2, "d3": 3, "d4": 4, "d5": 2})
    plain = skdsl.load(space, overrides=point.values)
    assert point.latency_ms == T.predict(plain, T.load_calibration(path)).milliseconds > 0
    assert Budget("latency <= 1e9ms", counted=measured_by(counter)).admits(point)
    with pytest.raises(SpecError) as refused:
        Budget("latency <= 20ms", counted=measured_by(Counter(space)))
    assert refused.value.code == "SK561" and "--calibration" in refused.value.hint

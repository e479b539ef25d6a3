"""skdsl/commands/: the commands, the `build --json` contract, exit statuses, no tracebacks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import skdsl
import skdsl.core.analysis
import skdsl.lang.loading
from skdsl.commands import arguments, main
from skdsl.base.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]
SKNET50 = str(ROOT / "specs" / "sknet50.sk")

GOLDEN = {
    "sknet50": (27479784, 4462710784),
    "resnext50_32x4d": (25028904, 4230479872),
    "senet50": (27559896, 4232994816),
}

# A small spec with a parameter, for --set (and quick runs).
PARAM_SPEC = """\
param M = 2
param width = 32
use "std/resnext.sk"

network small:
    input 3x32x32
    classes 10
    stage stem: conv 3x3, 32
    stage body: sk_unit(width, 2 * width, M=M) x2
    stage head:
        avgpool global
        fc classes
"""


def run(capsys, *argv):
    """main(argv) -> (status, stdout, stderr)."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def build_json(capsys, *argv) -> dict:
    status, out, err = run(capsys, "build", *argv, "--json")
    assert status == 0, err
    return json.loads(out)


@pytest.fixture
def param_spec(tmp_path):
    # `use "std/..."` resolves against the package, so a spec in a tmp folder can use it
    path = tmp_path / "small.sk"
    path.write_text(PARAM_SPEC)
    return str(path)


# -- build --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_build_json_golden_counts(capsys, name):
    result = build_json(capsys, str(ROOT / "specs" / f"{name}.sk"))
    assert (result["params"], result["macs"]) == GOLDEN[name]
    assert result["flops"] == 2 * result["macs"]
    assert result["network"] == name


def test_build_json_contract(capsys):
    result = build_json(capsys, SKNET50)
    assert list(result) == ["network", "input", "output", "params", "macs", "flops", "activations",
                            "count", "stages", "paper"]
    assert result["count"] == ["conv", "fc"]
    assert result["input"] == [3, 224, 224] and result["output"] == [1000]
    assert result["activations"] == 17176904
    assert [s["name"] for s in result["stages"]] == ["conv1", "conv2", "conv3", "conv4", "conv5",
                                                      "head"]
    conv1 = result["stages"][0]
    assert conv1 == {"name": "conv1", "output": [64, 112, 112], "params": 9536,
                     "macs": 118013952, "activations": 802816, "receptive_field": [7, 7]}
    assert result["stages"][-1]["receptive_field"] is None
    assert sum(s["params"] for s in result["stages"]) == result["params"]
    assert sum(s["macs"] for s in result["stages"]) == result["macs"]
    assert result["paper"] == {"params_millions": 27.5, "gflops": 4.47, "source": "Table 1"}


def test_every_json_field_is_documented(capsys):
    docs = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    result = build_json(capsys, SKNET50)
    fields = [*result, *(f"stages[].{key}" for key in result["stages"][0]),
              *(f"paper.{key}" for key in result["paper"])]
    for field in fields:
        assert f"| `{field}` |" in docs, field


def test_build_json_paper_is_null_without_figures(capsys):
    assert build_json(capsys, str(ROOT / "specs" / "sknet26.sk"))["paper"] is None


def test_input_changes_the_multiply_adds_not_the_parameters(capsys):
    default = build_json(capsys, SKNET50)
    larger = build_json(capsys, SKNET50, "--input", "3x320x320")
    assert larger["input"] == [3, 320, 320]
    assert larger["params"] == default["params"]
    assert larger["macs"] == skdsl.analyze(skdsl.load(SKNET50), (3, 320, 320)).mult_adds
    assert larger["macs"] > 2 * default["macs"]


def test_build_summary(capsys):
    status, out, err = run(capsys, "build", SKNET50)
    assert status == 0 and err == ""
    assert out == ("sknet50: 27,479,784 params (27.5M), 4,462,710,784 multiply-adds "
                   "(4.46 GFLOPs), 3×224×224 → 1000\n")


def test_build_report(capsys):
    status, out, _ = run(capsys, "build", SKNET50, "--report")
    assert status == 0
    for expected in ("SK[M=2, G=32, r=16], 128", "× 3", "× 4", "× 6", "112×112",
                     "#P 27.5M (27,479,784), GFLOPs 4.46 (4,462,710,784 multiply-adds)",
                     "paper: 27.5M, 4.47 GFLOPs (Table 1)",
                     "ours − paper: -0.02M (-0.07%), -0.01 GFLOPs (-0.16%)"):
        assert expected in out, expected
    assert "conv3.block1.sk.branch1" not in out  # that is --layers


def test_build_report_and_layers(capsys):
    status, out, _ = run(capsys, "build", SKNET50, "--report", "--layers")
    assert status == 0
    assert "SK[M=2, G=32, r=16], 128" in out
    assert "conv3.block1.sk.branch1" in out and "14,450,688" in out


def test_set_overrides_params(capsys, param_spec):
    result = build_json(capsys, param_spec, "--set", "M=3", "--set", "width=64")
    expected = skdsl.analyze(skdsl.load(param_spec, overrides={"M": 3, "width": 64}))
    assert (result["params"], result["macs"]) == (expected.params, expected.mult_adds)
    assert result["params"] != build_json(capsys, param_spec)["params"]


@pytest.mark.parametrize("items, expected", [
    (["M=3"], {"M": 3}),
    (["M=-3", "r=0.5", "act=silu"], {"M": -3, "r": 0.5, "act": "silu"}),
    (["x=1e3", "y=1_000", "z=inf"], {"x": 1000.0, "y": "1_000", "z": "inf"}),
    ([" M = 3 "], {"M": 3}),
])
def test_parse_overrides(items, expected):
    assert arguments.parse_overrides(items) == expected
    assert [type(v) for v in arguments.parse_overrides(items).values()] == [
        type(v) for v in expected.values()]


@pytest.mark.parametrize("text, shape", [
    ("3x320x320", (3, 320, 320)), ("1×28×28", (1, 28, 28)), (" 3X64X48 ", (3, 64, 48))])
def test_parse_input_shape(text, shape):
    assert arguments.parse_input_shape(text) == shape


# -- check, spec --------------------------------------------------------------------------------


def test_check(capsys):
    status, out, err = run(capsys, "check", SKNET50)
    assert (status, err) == (0, "")
    assert out == "ok: sknet50 — 27,479,784 params, 4,462,710,784 multiply-adds\n"


def test_spec_json_round_trip(capsys, tmp_path):
    status, out, _ = run(capsys, "spec", SKNET50, "--json")
    assert status == 0
    dumped = json.loads(out)
    assert dumped == skdsl.load(SKNET50).model_dump(mode="json")
    path = tmp_path / "sknet50.json"
    path.write_text(out)
    result = build_json(capsys, str(path))
    assert (result["params"], result["macs"]) == GOLDEN["sknet50"]
    assert result["paper"]["params_millions"] == 27.5
    status, out, _ = run(capsys, "check", str(path))
    assert (status, out) == (0, "ok: sknet50 — 27,479,784 params, 4,462,710,784 multiply-adds\n")
    # and the JSON spec prints back unchanged
    assert run(capsys, "spec", str(path))[1] == path.read_text()


def test_spec_schema(capsys):
    status, out, _ = run(capsys, "spec", "--schema")
    assert status == 0
    schema = json.loads(out)
    assert schema["title"] == "Network"
    assert "SelectiveKernel" in schema["$defs"]


# -- graph --------------------------------------------------------------------------------------


def test_graph_dot(capsys):
    status, out, _ = run(capsys, "graph", SKNET50)
    assert status == 0
    assert out.startswith('digraph "sknet50" {')
    assert '"conv3.block1.sk.branch1.conv" [label="conv3.block1.sk.branch1.conv\\n' \
           'conv2d 3×3/2 G32\\n256×28×28"];' in out
    assert 'subgraph "cluster_conv4"' in out


def test_graph_mermaid_at_block_depth(capsys):
    status, out, err = run(capsys, "graph", SKNET50, "--format", "mermaid", "--depth", "2")
    assert (status, err) == (0, "")
    assert out.startswith("flowchart TD\n")
    assert 'n_conv4_block6["conv4.block6<br/>sk_unit<br/>1024×14×14"]' in out
    assert "n_conv4_block6 --> n_conv5_block1" in out


def test_graph_output_file(capsys, tmp_path):
    target = tmp_path / "net.dot"
    status, out, _ = run(capsys, "graph", SKNET50, "--depth", "1", "-o", str(target))
    assert (status, out) == (0, "")
    text = target.read_text(encoding="utf-8")
    assert '"conv3" [label="conv3\\n' in text and '"conv3" -> "conv4";' in text


def test_mermaid_warns_about_its_edge_limit(capsys):
    status, _, err = run(capsys, "graph", str(ROOT / "specs" / "sknet101.sk"), "--format",
                         "mermaid")
    assert status == 0
    assert err.startswith("warning: ") and "--depth 2" in err


def test_version(capsys):
    status, out, _ = run(capsys, "--version")
    assert (status, out) == (0, f"skdsl {skdsl.__version__}\n")


def test_help_has_examples(capsys):
    status, out, _ = run(capsys, "--help")
    assert status == 0
    assert "examples:" in out and "skdsl build specs/sknet50.sk --report" in out


# -- errors -------------------------------------------------------------------------------------


def assert_user_error(status, out, err, *fragments):
    assert status == 2, err
    assert out == ""
    assert "Traceback" not in err and "internal error" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_syntax_error_is_located(capsys, tmp_path):
    path = tmp_path / "bad.sk"
    path.write_text("network x:\n    input 3x32x32\n    stage a: conv 3x3, 8,, stride 2\n")
    status, out, err = run(capsys, "build", str(path), "--report")
    assert_user_error(status, out, err)
    assert err == (
        f"{path}:3:26: error SK101: unexpected ','\n"
        "  |\n"
        "3 |     stage a: conv 3x3, 8,, stride 2\n"
        "  |                          ^\n"
        "  = expected: '(', a size such as 3x3, a number, an integer, a name, a number such as "
        "27.5M or a quoted path such as \"std/resnext.sk\"\n")


@pytest.mark.parametrize("make, argv, fragments", [
    (None, ["build", "{tmp}/missing.sk"], ["error SK110", "missing.sk"]),
    (None, ["build", "{tmp}"], ["error SK111", "is a directory"]),
    ("binary", ["build", "{tmp}/bin.sk"], ["bin.sk:1:1: error SK112", "binary"]),
    ("latin1", ["check", "{tmp}/latin.sk"], ["latin.sk:1:6: error SK112", "UTF-8"]),
    (None, ["build", SKNET50, "--input", "3x320"], ["error SK501", "'3x320'", "3x224x224"]),
    (None, ["build", SKNET50, "--input", "0x320x320"], ["error SK501", "at least 1"]),
    (None, ["build", SKNET50, "--input", "3x1x1x1"], ["error SK501"]),
    (None, ["build", SKNET50, "--set", "M"], ["error SK502", "NAME=VALUE"]),
    (None, ["build", SKNET50, "--set", "=3"], ["error SK502"]),
    (None, ["build", SKNET50, "--set", "M="], ["error SK502"]),
    ("param", ["build", "{tmp}/small.sk", "--set", "M=1", "--set", "M=2"], ["error SK502",
                                                                            "twice"]),
    (None, ["build", SKNET50, "--set", "M=3"], ["error SK210", "no parameter 'M'"]),
    ("param", ["build", "{tmp}/small.sk", "--set", "M=three"], ["small.sk:1:1: error SK210"]),
    ("param", ["build", "{tmp}/small.sk", "--set", "widht=3"], ["error SK210", "'width'"]),
    (None, ["build", SKNET50, "--json", "--report"], ["error SK505"]),
    (None, ["spec"], ["error SK505", "--schema"]),
    (None, ["spec", SKNET50, "--schema"], ["error SK505"]),
    (None, ["graph", SKNET50, "--depth", "0"], ["error SK505"]),
    (None, ["graph", SKNET50, "-o", "{tmp}"], ["error SK504", "cannot write"]),
    (None, ["build", "{tmp}/nope.json"], ["error SK110"]),
])
def test_user_errors_exit_2_without_traceback(capsys, tmp_path, make, argv, fragments):
    if make == "binary":
        (tmp_path / "bin.sk").write_bytes(b"network x:\x00\x01\x02")
    elif make == "latin1":
        (tmp_path / "latin.sk").write_bytes("# caf\xe9\n".encode("latin-1"))
    elif make == "param":
        (tmp_path / "small.sk").write_text(PARAM_SPEC)
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    assert_user_error(*run(capsys, *argv), *fragments)


@pytest.mark.parametrize("argv", [
    [], ["frobnicate"], ["build"], ["build", SKNET50, "--bogus"],
    ["graph", SKNET50, "--format", "png"], ["graph", SKNET50, "--depth", "two"],
])
def test_usage_errors_exit_2(capsys, argv):
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == ""
    assert err.startswith("usage: skdsl") and "Traceback" not in err


def write_json_spec(tmp_path, edit) -> str:
    data = skdsl.load(SKNET50).model_dump(mode="json")
    edit(data)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data, indent=2))
    return str(path)


def test_json_spec_errors_give_the_json_path(capsys, tmp_path):
    def zero_groups(data):
        data["stages"][2]["body"][0]["body"][0]["body"][1]["branches"][1]["groups"] = 0

    path = write_json_spec(tmp_path, zero_groups)
    status, out, err = run(capsys, "build", path, "--json")
    assert_user_error(status, out, err)
    first = err.splitlines()[0]
    assert first.startswith(f"{path}:") and ": error SK401: invalid spec: " in first
    assert "stages[2].body[0].body[0].body[1].branches[1].groups: Input should be greater than " \
           "or equal to 1" in first
    line, column = map(int, first[len(path) + 1:].split(":")[:2])
    assert Path(path).read_text().splitlines()[line - 1][column - 1:].startswith("0")


def test_json_spec_missing_and_unknown_fields(capsys, tmp_path):
    def edit(data):
        del data["stages"][0]["body"][0]["kernel"]
        data["stages"][1]["body"][0]["colour"] = "red"

    status, out, err = run(capsys, "check", write_json_spec(tmp_path, edit))
    assert_user_error(status, out, err, "stages[0].body[0].kernel: Field required",
                      "also: stages[1].body[0].colour: Extra inputs are not permitted")


def test_json_spec_of_an_unknown_layer(capsys, tmp_path):
    def edit(data):
        data["stages"][0]["body"][0]["kind"] = "convolution"

    status, out, err = run(capsys, "build", write_json_spec(tmp_path, edit))
    assert_user_error(status, out, err, "error SK401", "stages[0].body[0]:", "'convolution'")


@pytest.mark.parametrize("text, fragment", [
    ('{"name": "x",\n  "input": [3, 2\n', "edited.json:3:1: error SK401: not valid JSON"),
    ("[1, 2]", "edited.json:1:1: error SK401: invalid spec: (the whole spec): Input should be"),
    ("[" * 100000, "error SK401"),
    ("", "edited.json:1:1: error SK401: not valid JSON"),
])
def test_broken_json_files(capsys, tmp_path, text, fragment):
    path = tmp_path / "edited.json"
    path.write_text(text)
    status, out, err = run(capsys, "build", str(path))
    assert_user_error(status, out, err, fragment)
    assert len(err) < 2000  # no excerpt of a 100,000-character line


def test_set_cannot_change_a_json_spec(capsys, tmp_path):
    path = write_json_spec(tmp_path, lambda data: None)
    assert_user_error(*run(capsys, "build", path, "--set", "M=3"), "error SK503")


def test_internal_errors_exit_70_in_one_line(capsys, monkeypatch):
    def broken(spec, input_shape=None, count=()):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(skdsl.core.analysis, "analyze", broken)  # what the commands call
    monkeypatch.delenv("SKDSL_DEBUG", raising=False)
    status, out, err = run(capsys, "build", SKNET50)
    assert status == 70 and out == ""
    assert err.startswith("internal error: ZeroDivisionError: division by zero\n")
    assert "please report" in err and "Traceback" not in err


def test_skdsl_errors_never_count_as_internal(capsys, monkeypatch):
    def located(spec, input_shape=None, count=()):
        raise SpecError("no such thing", code="SK299")

    monkeypatch.setattr(skdsl.core.analysis, "analyze", located)
    status, out, err = run(capsys, "check", SKNET50)
    assert (status, out, err) == (2, "", "error SK299: no such thing\n")


def test_interrupt_exits_130_quietly(capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(skdsl.lang.loading, "load", interrupted)
    assert run(capsys, "build", SKNET50) == (130, "", "")


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet="0123456789x×X -+.e", max_size=14))
def test_any_input_flag_is_a_result_or_a_user_error(text):
    try:
        shape = arguments.parse_input_shape(text)
    except skdsl.CliError as error:
        assert error.code == "SK501"
    else:
        assert len(shape) == 3 and min(shape) >= 1


@settings(max_examples=60, deadline=None)
@given(items=st.lists(st.text(max_size=8), max_size=3))
def test_any_set_flag_is_a_result_or_a_user_error(items):
    try:
        overrides = arguments.parse_overrides(items)
    except skdsl.CliError as error:
        assert error.code == "SK502"
    else:
        assert all(isinstance(v, (int, float, str)) for v in overrides.values())


# -- as a program -------------------------------------------------------------------------------


def python_m_skdsl(*argv, **env):
    return subprocess.run([sys.executable, "-m", "skdsl", *argv], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONIOENCODING": "utf-8", **env})


def test_python_m_skdsl_report():
    done = python_m_skdsl("build", "specs/sknet50.sk", "--report")
    assert done.returncode == 0, done.stderr
    assert "SK[M=2, G=32, r=16], 128" in done.stdout and "× 3" in done.stdout
    assert "paper: 27.5M, 4.47 GFLOPs (Table 1)" in done.stdout


def test_python_m_skdsl_error():
    done = python_m_skdsl("check", "specs/sknet5.sk")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error SK110: no such file: 'specs/sknet5.sk'")
    assert "Traceback" not in done.stderr


def _python_ok(code: str) -> None:
    """`code` in a fresh interpreter (so sys.modules shows only what it imported) exits 0."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_commands_do_not_import_torch():
    code = (
        "import sys, io, contextlib\n"
        "from skdsl.commands import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['build', 'specs/sknet50.sk', '--report']) == 0\n"
        "    assert main(['build', 'specs/sknet50.sk', '--json', '--input', '3x64x64']) == 0\n"
        "    assert main(['check', 'specs/sknet50.sk']) == 0\n"
        "    assert main(['spec', 'specs/sknet50.sk', '--json']) == 0\n"
        "    assert main(['graph', 'specs/sknet50.sk', '--format', 'mermaid']) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    _python_ok(code)


def test_check_loads_neither_rich_nor_a_command_it_does_not_run():
    """Building the parser reads each command's defaults, not its machinery: `check` must not
    pay for rich, the tables' pydantic models or the trainer."""
    code = ("import sys, io, contextlib\nfrom skdsl.commands import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert main(['check', 'specs/sknet50.sk']) == 0\n"
            "loaded = [m for m in ('rich', 'skdsl.report.tables.manifest', 'skdsl.report.tables.results', "
            "'skdsl.train.runner') if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    _python_ok(code)


def test_count_adds_op_classes(capsys):
    plain = build_json(capsys, SKNET50)
    assert main(["build", str(SKNET50), "--json", "--count", "bn,add"]) == 0
    counted = json.loads(capsys.readouterr().out)
    assert counted["count"] == ["conv", "fc", "bn", "add"]
    assert counted["macs"] > plain["macs"] and counted["params"] == plain["params"]
    assert main(["build", str(SKNET50), "--count", "bnn"]) == 2
    assert "did you mean 'bn'?" in capsys.readouterr().err


# -- output that cannot be written ----------------------------------------------------------------


@pytest.mark.parametrize("argv", [["check", "specs/sknet50.sk"],
                                  ["build", "specs/sknet50.sk", "--report"],
                                  ["graph", "specs/sknet26.sk"]])
@pytest.mark.parametrize("redirect", ["closed", "full"])
def test_an_unwritable_stdout_is_a_located_error_not_a_bug(argv, redirect):
    stdout = subprocess.DEVNULL
    if redirect == "full":
        if not os.path.exists("/dev/full"):
            pytest.skip("no /dev/full here")
        stdout = open("/dev/full", "w")
    code = "import sys, skdsl.commands; sys.exit(skdsl.commands.main(sys.argv[1:]))"
    # close_fds and a closed fd 1: Python starts with sys.stdout None, as under `>&-`
    prefix = "import os; os.close(1); " if redirect == "closed" else ""
    result = subprocess.run([sys.executable, "-c", prefix + code, *argv], cwd=ROOT,
                            stdout=stdout, stderr=subprocess.PIPE, text=True)
    assert result.returncode == 2, result.stderr
    reason = "standard output is closed" if redirect == "closed" else "No space left on device"
    assert result.stderr == f"error SK507: cannot write the output: {reason}\n"


def test_a_closed_stderr_keeps_the_exit_status(tmp_path):
    code = ("import sys, skdsl.commands; sys.stderr = None; "
            "sys.exit(skdsl.commands.main(sys.argv[1:]))")
    for argv, status in ((["check", "no_such.sk"], 2), (["check", "specs/sknet26.sk"], 0)):
        result = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT,
                                capture_output=True, text=True)
        assert result.returncode == status and result.stderr == ""
        assert result.stdout == ("" if status else result.stdout)
        assert "error" not in result.stdout  # never sent to stdout instead


def test_both_streams_closed_still_says_it_through_the_status(tmp_path):
    spec = ROOT / "specs" / "sknet26.sk"
    subprocess.run(f"exec >&- 2>&-; '{sys.executable}' -m skdsl check '{spec}'; echo $? > status",
                   shell=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (tmp_path / "status").read_text().strip() == "2"  # stdout was None: SK507


def test_build_shows_the_paper_only_for_the_spec_as_written(capsys):
    options = str(ROOT / "examples" / "sknet50_options.sk")
    assert build_json(capsys, options, "--set", "M=2")["paper"]["params_millions"] == 27.5
    assert build_json(capsys, options, "--set", "M=3")["paper"] is None
    status, out, _ = run(capsys, "build", options, "--set", "M=3", "--report")
    assert status == 0 and "paper:" not in out and "ours − paper" not in out and "#P 29.2M" in out


# -- loading below the command line, and the flags it is given ------------------------------------


def test_imports_outside_the_specs_folder_need_the_flag(capsys, tmp_path):
    (tmp_path / "shared.sk").write_text("block stem_conv(c):\n    conv 3x3, c\n")
    (tmp_path / "nets").mkdir()
    spec = tmp_path / "nets" / "net.sk"
    spec.write_text(PARAM_SPEC.replace('use "std/resnext.sk"',
                                       'use "std/resnext.sk"\nuse "../shared.sk"'))
    status, _, err = run(capsys, "check", str(spec))
    assert status == 2 and "error SK117" in err and "--allow-imports-outside" in err
    for command in (["check"], ["build", "--json"], ["spec"], ["graph"], ["compare"]):
        status, _, err = run(capsys, command[0], str(spec), *command[1:],
                             "--allow-imports-outside")
        assert status == 0, err
    assert skdsl.load(spec, allow_imports_outside=True).name == "small"


def test_setting_errors_name_the_setting_in_python_and_the_flag_on_the_command_line(
        capsys, tmp_path):
    from skdsl.base.errors import SettingError

    path = tmp_path / "small.json"
    path.write_text(skdsl.parse(PARAM_SPEC).model_dump_json())
    assert skdsl.load(path).name == "small"  # skdsl.load reads JSON specs too
    with pytest.raises(SettingError) as raised:
        skdsl.load(path, {"M": 3})
    assert str(raised.value).startswith("overrides cannot change")
    assert raised.value.settings == ("overrides",) and raised.value.code == "SK503"
    assert raised.value.render().endswith("hint: use overrides with the .sk spec it came from")
    with pytest.raises(SettingError, match="^num_classes cannot change"):
        skdsl.load(path, num_classes=5)
    status, _, err = run(capsys, "build", str(path), "--set", "M=3")
    assert status == 2 and err.startswith("error SK503: --set cannot change")
    assert "use --set with the .sk spec" in err


# Modules outside skdsl/commands/ that import argparse or the command line: the entry points
# alone. A new module below the commands must take neither.
ENTRY_POINTS = {
    "__main__.py",           # python -m skdsl
    "train/__main__.py",     # python -m skdsl.train (torchrun)
}


def test_nothing_below_the_commands_imports_argparse_or_the_command_line():
    import re

    pattern = re.compile(r"^\s*(import argparse|from \.+commands\b|import skdsl\.commands|"
                         r"from skdsl\.commands\b|from (\.+|skdsl) import .*\bcommands\b)", re.M)
    package = ROOT / "skdsl"
    offenders = sorted(
        str(path.relative_to(package)) for path in package.rglob("*.py")
        if "commands" not in path.relative_to(package).parts[:1]
        and str(path.relative_to(package)) not in ENTRY_POINTS
        and pattern.search(path.read_text(encoding="utf-8")))
    assert offenders == []


def test_the_library_imports_without_the_command_line():
    code = ("import sys, skdsl, skdsl.report.compare, skdsl.nn.export, skdsl.nn.weights, skdsl.nn.doctor, "
            "skdsl.report.tables, skdsl.lang.loading, skdsl.train.specs, skdsl.fuzz.spec, skdsl.testing\n"
            "skdsl.load('specs/sknet_tiny.sk')\n"
            "assert not any(name == 'argparse' or name.startswith('skdsl.commands')"
            " for name in sys.modules), sorted(sys.modules)")
    _python_ok(code)


def _imports_at_import_time(path: Path, module: str, modules: set[str]) -> set[str]:
    """The skdsl modules `module` (at `path`) imports at its top level (not inside functions)."""
    import ast

    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        for statement in node.body if isinstance(node, ast.Try) else [node]:
            if isinstance(statement, ast.Import):
                found |= {alias.name for alias in statement.names}
            elif isinstance(statement, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - statement.level + 1]
                target = (".".join(base + [statement.module or ""]).strip(".")
                          if statement.level else statement.module)
                found |= {f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules
                          else target for alias in statement.names}
    return {name for name in found if name in modules}


def test_no_import_circle_among_the_modules_of_skdsl():
    import networkx as nx

    paths = {".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
             for path in (ROOT / "skdsl").rglob("*.py")}
    graph = nx.DiGraph()
    for module, path in paths.items():
        graph.add_edges_from((module, imported)
                             for imported in _imports_at_import_time(path, module, set(paths)))
    assert graph.number_of_edges() > 100  # the imports were read
    assert list(nx.simple_cycles(graph)) == []



# -- warnings (SK7xx) and --strict ------------------------------------------------------------------

WARNED_SPEC = """\
network net:
    input 16x8x8
    classes 10
    stage s:
        y = conv 1x1, 16
        split 2 -> a, b
        concat a, b
    stage head:
        gap
        fc classes
"""


def test_warnings_go_to_stderr_and_the_command_goes_on(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("net.sk").write_text(WARNED_SPEC)
    status, out, err = run(capsys, "check", "net.sk")
    assert (status, out) == (0, "ok: net — 458 params, 16,544 multiply-adds\n")
    assert err.startswith("net.sk:6:9: warning SK701: this split cuts 'y'") and "error" not in err
    status, out, err = run(capsys, "build", "net.sk", "--json")
    assert status == 0 and json.loads(out)["params"] == 458 and "warning SK701" in err


@pytest.mark.parametrize("argv", [["check", "--strict", "net.sk"],
                                  ["spec", "net.sk", "--json", "--strict"],
                                  ["compare", "net.sk", "--strict", "--format", "csv"],
                                  ["graph", "net.sk", "--strict"]])
def test_strict_makes_warnings_errors_before_the_command_runs(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("net.sk").write_text(WARNED_SPEC)
    status, out, err = run(capsys, *argv)
    assert (status, out) == (2, "")
    assert err.startswith("net.sk:6:9: error SK701: this split cuts 'y'")
    assert "  = a warning, made an error by --strict\n" in err and "warning SK701" not in err


@pytest.mark.parametrize("mistake, error", [("concat a, b &", "net.sk:7:21: error SK102"),
                                            ("concat a, c", "net.sk:7:19: error SK306")])
def test_a_spec_with_an_error_shows_the_error_alone(mistake, error, tmp_path, capsys,
                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("net.sk").write_text(WARNED_SPEC.replace("concat a, b", mistake))
    status, _, err = run(capsys, "check", "--strict", "net.sk")
    assert status == 2 and err.startswith(error) and "SK701" not in err

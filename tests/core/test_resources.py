"""skdsl/core/resources.py: memory figures from the graph alone, and the guards that refuse a network
or a training step before anything is allocated."""

from __future__ import annotations

import json
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

import skdsl
from skdsl.core import resources as R
from skdsl import testing as T
from skdsl.commands import main
from skdsl.core.graph import lower_table

ROOT = Path(__file__).resolve().parents[2]
GiB = 1 << 30


def _spec(header: str, body: str, head: str = "        gap\n        fc classes\n") -> str:
    return f"network absurd:\n{header}    stage s: {body}\n    stage head:\n{head}"


SMALL_INPUT = "    input 3x32x32\n    classes 10\n"
# Valid specs no machine can hold; `skdsl check` accepts them, the guards must not.
ABSURD = {
    "wide conv": _spec(SMALL_INPUT, "conv 3x3, 2147483647"),
    "huge kernel": _spec(SMALL_INPUT, "conv 99999x99999, 16"),
    "classes": _spec("    input 3x32x32\n    classes 1000000000\n", "conv 3x3, 16"),
    # An fc on the flattened map: the input's size becomes parameters.
    "input": _spec("    input 3x100000x100000\n    classes 10\n", "conv 3x3, 16, stride 2",
                   head="        fc classes\n"),
}
LARGEST_LAYER = {"wide conv": "s.conv", "huge kernel": "s.conv", "classes": "head.fc",
                 "input": "head.fc"}
HUGE_INPUT = _spec("    input 3x100000x100000\n    classes 10\n", "conv 3x3, 16")  # with gap

SMALL = """\
network small:
    input 3x16x16
    classes 10
    stage stem: conv 3x3, 16
    stage body:
        SK[M=2, G=4, r=4, L=8], 16
        SE[r=4]
        branch a: conv 1x1, 16
        branch b from input shares a
        add a, b
    stage head:
        gap
        fc classes
"""


@pytest.fixture(scope="module")
def small():
    return skdsl.parse(SMALL, file="small.sk")


# -- sizes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, size", [
    ("8GiB", 8 * GiB), ("8G", 8 * GiB), ("8g", 8 * GiB), ("8GB", 8 * 10**9),
    ("512MiB", 512 << 20), ("1.5 TiB", 3 << 39), ("1000000", 10**6), ("1k", 1024),
    ("2KB", 2000), (" 64 mib ", 64 << 20),
])
def test_sizes_are_read_with_their_units(text, size):
    assert R.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GiB", "8XB", "-1G", "0", "0.4B", "1e9", "8 GiB s",
                                  "9" * 100])
def test_what_is_not_a_size_is_an_error(text):
    with pytest.raises(R.ResourceError) as caught:
        R.parse_size(text)
    assert caught.value.code == "SK622" and caught.value.hint
    assert caught.value.render().startswith("error SK622: ")


@pytest.mark.parametrize("size, text", [(900, "900 B"), (1536, "1.5 KiB"), (8 * GiB, "8.0 GiB"),
                                        (3 << 39, "1.5 TiB")])
def test_sizes_are_shown_in_binary_units(size, text):
    assert R.format_size(size) == text


# -- how much there is ------------------------------------------------------------------------------


def test_available_memory_is_at_most_what_the_kernel_says():
    available = R.available_memory()
    assert isinstance(available, int) and available > 0
    meminfo = R._meminfo_available(Path("/proc/meminfo"))
    if meminfo is not None:  # Linux; the figure moves a little between two reads
        assert available <= meminfo + 256 * (1 << 20)


def test_meminfo_is_read_in_kilobytes(tmp_path):
    (tmp_path / "meminfo").write_text("MemTotal:  2048 kB\nMemAvailable:   1024 kB\n")
    assert R._meminfo_available(tmp_path / "meminfo") == 1024 * 1024
    assert R._meminfo_available(tmp_path / "missing") is None


def _cgroup(folder: Path, limit: str, usage: int, stat: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "memory.max").write_text(limit + "\n")
    (folder / "memory.current").write_text(f"{usage}\n")
    (folder / "memory.stat").write_text(stat)


def test_cgroup_v2_room_is_the_tightest_limit_less_usage_but_not_page_cache(tmp_path):
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("memory\n")
    _cgroup(root / "jobs", str(4 * GiB), GiB)  # a parent: 3 GiB of room
    _cgroup(root / "jobs" / "me", str(2 * GiB), GiB, f"anon 1\ninactive_file {GiB // 2}\n")
    (tmp_path / "membership").write_text("0::/jobs/me\n")
    assert R._cgroup_headroom(tmp_path / "membership", root) == 2 * GiB - GiB // 2
    (root / "jobs" / "me" / "memory.max").write_text("max\n")
    assert R._cgroup_headroom(tmp_path / "membership", root) == 3 * GiB


def test_cgroup_v1_without_a_limit_bounds_nothing(tmp_path):
    root = tmp_path / "cgroup"
    folder = root / "memory"
    folder.mkdir(parents=True)
    (folder / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (folder / "memory.usage_in_bytes").write_text("1000\n")
    (tmp_path / "membership").write_text("4:memory:/host/path/not/mounted\n1:cpu:/\n")
    assert R._cgroup_headroom(tmp_path / "membership", root) is None
    (folder / "memory.limit_in_bytes").write_text(f"{GiB}\n")
    (folder / "memory.stat").write_text("total_inactive_file 24\n")
    assert R._cgroup_headroom(tmp_path / "membership", root) == GiB - 976
    assert R._cgroup_headroom(tmp_path / "no-such-file", root) is None


# -- compile ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ABSURD)
def test_absurd_networks_are_refused_naming_their_largest_layer(name):
    network = skdsl.parse(ABSURD[name])
    with pytest.raises(R.ResourceError) as caught:
        R.guard_compile(network, budget=GiB)
    error = caught.value
    assert error.code == "SK620"
    assert f"its largest layer, {LARGEST_LAYER[name]}, needs" in error.message
    assert "the budget is 1.0 GiB" in error.message and error.hint


def test_absurd_networks_are_refused_by_default_without_torch_or_a_large_allocation():
    """The default budget is the memory available; in a process that may not map 2 GiB, the
    guard still answers (it allocates nothing that grows with the network) and never imports
    torch."""
    code = f"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({2 * GiB}, {2 * GiB}))
import skdsl
from skdsl.core import resources as R
codes = []
for text in json.loads(sys.argv[1]):
    try:
        R.guard_compile(skdsl.parse(text))
        codes.append(None)
    except R.ResourceError as error:
        codes.append(error.code)
print(json.dumps([codes, R.available_memory() <= {2 * GiB}, "torch" in sys.modules]))
"""
    result = subprocess.run([sys.executable, "-c", code, json.dumps(list(ABSURD.values()))],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    codes, bounded, torch_imported = json.loads(result.stdout)
    assert codes == ["SK620"] * len(ABSURD)
    assert bounded and not torch_imported


def test_parameter_bytes_are_the_compiled_modules_state(small):
    """Parameters and buffers, 4 bytes per float and 8 per BN counter, as torch stores them;
    a shared branch's weights count once."""
    needed, layers = R.parameter_bytes(small)
    model = skdsl.compile(small)
    state = {id(t): t for t in [*model.parameters(), *model.buffers()]}.values()
    assert needed == sum(t.numel() * t.element_size() for t in state)
    assert needed == R.guard_compile(small)  # fits the memory available
    assert sum(layers.values()) == needed and "body.b" not in layers


def test_huge_input_compiles_small_but_cannot_train():
    """Behind a global pool the input's size costs no parameters: compiling allocates little.
    One image of 3×100000×100000 floats is 112 GiB, so training cannot fit."""
    network = skdsl.parse(HUGE_INPUT)
    assert R.guard_compile(network, budget=GiB) < 10_000
    with pytest.raises(R.ResourceError) as caught:
        R.guard_training(network, 1, budget=64 * GiB)
    assert caught.value.code == "SK621" and "not even one image fits" in caught.value.message


# -- training ---------------------------------------------------------------------------------------


def test_training_estimate_by_hand():
    network = skdsl.parse("network n:\n    input 3x8x8\n    stage s: conv 3x3, 4\n")
    params = 4 * 3 * 9 + 2 * 4  # conv weights, BN's γ and β
    fp32 = R.estimate_training_bytes(network, 2)
    assert (fp32.parameters, fp32.gradients, fp32.optimizer) == (4 * params,) * 3
    assert fp32.buffers == 2 * 4 * 4 + 8 and fp32.weight_copies == 0
    # the input (192 floats) and conv, BN and ReLU outputs (256 elements each), per image
    assert fp32.per_image == 4 * 192 + 4 * 3 * 256 and fp32.activations == 2 * fp32.per_image
    assert fp32.largest_layer == "s.conv"
    bf16 = R.estimate_training_bytes(network, 2, "bf16")
    assert bf16.per_image == 4 * 192 + 2 * 3 * 256 and bf16.weight_copies == 2 * params
    assert fp32.lines()[-1].split() == ["total", *R.format_size(fp32.total).split()]


@pytest.mark.parametrize("precision", R.PRECISION_BYTES)
def test_training_estimate_grows_with_the_batch(small, precision):
    totals = [R.estimate_training_bytes(small, batch, precision).total for batch in (1, 2, 3, 64)]
    assert totals == sorted(set(totals))


def test_the_largest_batch_that_fits_fits_and_one_more_does_not(small):
    budget = R.estimate_training_bytes(small, 100).total - 1
    with pytest.raises(R.ResourceError) as caught:
        R.guard_training(small, 100, budget=budget)
    error = caught.value
    fits = R.estimate_training_bytes(small, 1).largest_batch(budget)
    assert fits == 99
    assert error.code == "SK621" and f"a batch of {fits} fits" in error.message
    assert f"at most {fits}" in error.hint and "by activations is stem.conv" in error.message
    assert R.guard_training(small, fits, budget=budget).total <= budget
    with pytest.raises(R.ResourceError):
        R.guard_training(small, fits + 1, budget=budget)


def test_when_not_one_image_fits_the_error_says_so(small):
    with pytest.raises(R.ResourceError) as caught:
        R.guard_training(small, 8, "bf16", budget=1000)
    assert "not even one image fits" in caught.value.message
    assert "or in bf16" not in (caught.value.hint or "")


def test_estimates_read_any_form_of_the_graph(small):
    table = lower_table(small)
    for graph in (small, table, table.to_networkx()):
        assert R.estimate_training_bytes(graph, 4, "fp16") == R.estimate_training_bytes(small, 4,
                                                                                          "fp16")
        assert R.parameter_bytes(graph) == R.parameter_bytes(small)


def test_bad_precision_or_batch_is_a_value_error(small):
    with pytest.raises(ValueError, match="unknown precision"):
        R.estimate_training_bytes(small, 1, "fp8")
    with pytest.raises(ValueError, match="at least one image"):
        R.estimate_training_bytes(small, 0)


# -- check and build --report stay quick on them --------------------------------------------------


@pytest.mark.parametrize("name", [*ABSURD, "huge input"])
def test_check_and_build_report_of_absurd_specs_finish(name, tmp_path, capsys):
    path = tmp_path / "absurd.sk"
    path.write_text(ABSURD.get(name, HUGE_INPUT))
    with T.time_limit(20):  # a hang detector, not a timing
        assert main(["check", str(path)]) == 0
        assert main(["build", str(path), "--report"]) == 0
    assert "params" in capsys.readouterr().out


def test_the_figures_in_docs_analysis_md_are_computed():
    page = (ROOT / "docs" / "analysis.md").read_text(encoding="utf-8")
    section = page.split("## Memory estimates and guards", 1)[1]
    network = skdsl.load(ROOT / "specs" / "sknet50.sk")
    assert f"`guard_compile` needs {R.guard_compile(network):,} bytes" in section
    breakdown = "\n".join(R.estimate_training_bytes(network, 256, "bf16").lines())
    assert f"```text\n{breakdown}\n```" in section


def test_the_sk620_message_in_docs_errors_md_is_the_real_one():
    """docs/errors.md shows SK620 for the "wide conv" spec above at a 1 GiB budget."""
    page = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    with pytest.raises(R.ResourceError) as caught:
        R.guard_compile(skdsl.parse(ABSURD["wide conv"]), budget=GiB)
    assert f"```text\n{caught.value.render()}\n```" in page


# -- inference: export, eval and inspect ------------------------------------------------------------


def test_inference_estimate_by_hand():
    """No gradients or optimizer state; each output lives until its last reader, and a running
    node holds a temporary of its output's size: at BN, the conv's output, BN's and BN's
    temporary are alive (the input was freed after the conv)."""
    network = skdsl.parse("network n:\n    input 3x8x8\n    stage s: conv 3x3, 4\n")
    estimate = R.estimate_memory(network, 2, task="inference")
    params = 4 * 3 * 9 + 2 * 4
    assert (estimate.parameters, estimate.gradients, estimate.optimizer) == (4 * params, 0, 0)
    assert estimate.per_image == 3 * 4 * 256 and estimate.activations == 2 * estimate.per_image
    assert estimate.largest_layer == "s.conv" and estimate.task == "inference"
    # in bf16 the peak is at the conv: the fp32 input, its output and the temporary
    bf16 = R.estimate_memory(network, 2, "bf16", task="inference")
    assert bf16.per_image == 4 * 192 + 2 * 2 * 256


@pytest.mark.parametrize("name", ["sknet50", "sknet_tiny"])
def test_inference_needs_far_less_than_training(name):
    network = skdsl.load(ROOT / "specs" / f"{name}.sk")
    inference = R.estimate_memory(network, 8, task="inference")
    training = R.estimate_training_bytes(network, 8)
    assert training.fixed - inference.fixed == 2 * inference.parameters  # gradients, momentum
    assert 0 < inference.per_image * 4 < training.per_image


def test_an_inference_guard_names_the_batch_that_fits_in_its_callers_settings(small):
    budget = R.estimate_memory(small, 50, task="inference").total - 1
    with pytest.raises(R.ResourceError) as caught:
        R.guard_memory(small, 50, budget=budget, task="inference", doing="evaluating")
    error = caught.value
    assert error.code == "SK621" and error.message.startswith("evaluating small at batch 50")
    assert "a batch of 49 fits" in error.message and "activations peak in" in error.message
    assert error.render(lambda name: f"--{name}").endswith(
        "hint: use a --batch_size of at most 49, or --precision bf16; a larger --memory_budget "
        "runs it anyway")
    with pytest.raises(R.ResourceError) as caught:
        R.guard_memory(small, 50, budget=budget, task="inference", batch_setting="batch",
                       precision_setting=False)
    assert caught.value.hint.startswith("use a batch of at most 49;")
    assert R.guard_memory(small, 49, budget=budget, task="inference").total <= budget


def test_when_the_fewest_images_a_task_runs_do_not_fit_the_input_is_named():
    network = skdsl.parse(HUGE_INPUT)
    with pytest.raises(R.ResourceError) as caught:
        R.guard_memory(network, 3, budget=64 * GiB, task="inference", least=3,
                       batch_setting="batch", input_setting=True)
    error = caught.value
    assert "not even 3 images fit: 3 images need" in error.message
    assert error.hint.startswith("use a smaller input_shape, or make s.conv")
    with pytest.raises(R.ResourceError) as caught:
        R.guard_memory(network, 1, budget=1000, task="inference")
    assert "not even one image fits: the weights alone need" in caught.value.message


def test_the_default_budget_is_shared_by_this_machines_processes(small, monkeypatch):
    before = R.available_memory()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    room, said = R._budget(None, "cpu")
    after = R.available_memory()
    # other processes free and take memory meanwhile: a quarter of what was there then
    low, high = min(before, after), max(before, after)
    assert low // 8 < room <= high // 4 + (1 << 20)
    assert "for each of this machine's 4 processes" in said


def test_a_gpus_budget_is_its_free_memory(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2 * GiB, 80 * GiB))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert R._budget(None, torch.device("cuda", 0)) == (2 * GiB, "2.0 GiB is free on cuda:0")
    assert R._budget(GiB, torch.device("cuda", 0)) == (GiB, "the budget is 1.0 GiB")


def test_a_memory_budget_flag_takes_a_size_or_says_it_is_none():
    assert R.parse_budget(None) is None and R.parse_budget("1.5GiB") == 3 << 29
    with pytest.raises(R.ResourceError) as caught:
        R.parse_budget("10XB")
    assert caught.value.code == "SK622"
    assert caught.value.render(lambda name: "--memory-budget").startswith(
        "error SK622: --memory-budget '10XB' is not a memory size")


# What torch's CPU allocator raises (c10/core/impl/alloc_cpu.cpp), as `skdsl export` met it.
CPU_OUT_OF_MEMORY = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                     "allocate memory: you tried to allocate 9600000000 bytes. Error code 12 "
                     "(Cannot allocate memory)")


def test_allocation_failures_are_told_from_other_errors():
    import torch

    assert R.is_out_of_memory(RuntimeError(CPU_OUT_OF_MEMORY))
    assert R.is_out_of_memory(MemoryError())
    assert R.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not R.is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not R.is_out_of_memory(ValueError("DefaultCPUAllocator: can't allocate memory"))


def test_an_allocation_failure_becomes_sk611_and_other_errors_pass():
    class Activations:
        pass

    held = []

    def forward():
        activations = Activations()  # what the failed work holds
        held.append(weakref.ref(activations))
        raise RuntimeError(CPU_OUT_OF_MEMORY)

    with pytest.raises(R.ResourceError) as caught:
        with R.out_of_memory_is_an_error("exporting n", "{batch_size}"):
            forward()
    error = caught.value
    assert error.code == "SK611" and error.hint.startswith("use a smaller batch_size, or free")
    assert error.message == "out of memory while exporting n: an allocation of 8.9 GiB failed"
    assert held[0]() is None  # freed, though the error still names its cause
    with pytest.raises(R.ResourceError, match="while x: MemoryError"):
        with R.out_of_memory_is_an_error("x", "{batch_size}"):
            raise MemoryError
    with pytest.raises(KeyError):
        with R.out_of_memory_is_an_error("x", "{batch_size}"):
            raise KeyError("not memory")
    with R.out_of_memory_is_an_error("x", "{batch_size}"):
        pass

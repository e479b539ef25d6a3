"""benchmarks/run.py --quick runs every section's code on tiny networks, so it cannot rot.

No timing is asserted here (the machine is shared and timings are noise at this size); what is
checked is that each section runs, finds what it must find (equal parameters and outputs, FLOP
counts that agree, no graph breaks) and that RESULTS.md is written with every section.
"""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import gpu, reference, run, suite  # noqa: E402


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    output = tmp_path_factory.mktemp("bench") / "RESULTS.md"
    settings = suite.Settings.quick_settings()
    threads = torch.get_num_threads()
    try:
        # every section but i, whose calibration and timings take longer than all the rest:
        # its arithmetic is tested below, and `run.py --quick --only i` runs it on tiny inputs
        sections = run.run(settings, list("abcdefgh"))  # sets torch's thread count
    finally:
        torch.set_num_threads(threads)
    output.write_text(run.markdown(sections, settings, "python benchmarks/run.py --quick"))
    return {section.key: section for section in sections}, output.read_text()


def test_every_section_is_written(quick_results):
    sections, text = quick_results
    assert list(sections) == list("abcdefgh")
    for key in "abcdefh":
        assert f"## {key}. " in text and sections[key].ratios, key
    assert "No GPU was available" in text or torch.cuda.is_available()
    assert "torch " + torch.__version__ in text


def test_analysis_agrees_with_flop_counter(quick_results):
    data = quick_results[0]["a"].data
    assert data["agree"] and data["variants"] == 4
    assert data["from_spec"] > 0 and data["peer"] > 0


def test_explore_counts_agree_with_a_fresh_analysis(quick_results):
    data = quick_results[0]["h"].data
    assert data["agree"] and data["points"] == 30 and data["per_point"] > 0


def test_reference_matches_the_compiled_network(quick_results):
    data = quick_results[0]["c"].data
    compiled, ref = data["params"]
    assert compiled == ref
    assert data["max_abs_error"] < 1e-5


def test_torch_compile_finds_no_graph_breaks(quick_results):
    explained = quick_results[0]["f"].data["explain"]
    assert all(breaks == 0 for _, breaks, _ in explained.values())


def test_memory_and_selection_sections_measure_something(quick_results):
    sections = quick_results[0]
    assert all(value > 0 for value in sections["e"].data["contiguous"].values())
    assert sections["d"].data["polyphase"]["rows"]


def test_gpu_section_logic_runs_on_a_cpu():
    settings = suite.Settings.quick_settings()
    section = gpu.gpu_section(settings, device="cpu", compile=False)
    assert len(section.rows) == 2 and section.ratios
    assert all(float(row[2].replace(",", "")) > 0 for row in section.rows)


def test_reference_sknet50_has_the_papers_parameter_count():
    model = reference.sknet50()
    assert sum(p.numel() for p in model.parameters()) == 27_479_784


def test_reference_weights_map_onto_a_compiled_network_one_to_one():
    compiled = suite.build_compiled(suite.Network("tiny", text=suite.TINY_SKNET))
    model = reference.SKNet(**suite.TINY_REFERENCE)
    names = {reference.compiled_name(name) for name in model.state_dict()} - {None}
    logits = {name for name in compiled.state_dict() if name.endswith("logits.weight")}
    assert names | logits == set(compiled.state_dict())
    reference.load_compiled_weights(model, compiled.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), compiled.eval()(x))


def test_main_writes_results_and_merges_later_sections(tmp_path):
    # c, not b: any section shows the merge, and b's 13 fresh interpreters run in quick_results
    output = tmp_path / "RESULTS.md"
    threads = torch.get_num_threads()
    try:
        assert run.main(["--quick", "--only", "c", "--output", str(output)]) == 0
        assert run.main(["--quick", "--only", "g", "--output", str(output)]) == 0
    finally:
        torch.set_num_threads(threads)
    text = output.read_text()
    assert "## c. Compiled tiny_sknet vs the plain-PyTorch reference" in text
    assert "## g. GPU" in text
    assert output.with_suffix(".json").is_file()


def test_quick_runs_never_overwrite_the_tracked_results(tmp_path, monkeypatch):
    tracked = {path: path.read_bytes() for path in (run.FULL_OUTPUT,
                                                    run.FULL_OUTPUT.with_suffix(".json"))}
    quick = tmp_path / "quick" / "RESULTS.md"
    monkeypatch.setattr(run, "QUICK_OUTPUT", quick)
    threads = torch.get_num_threads()
    try:
        assert run.main(["--quick", "--only", "g"]) == 0
        with pytest.raises(SystemExit) as refused:  # asked for by name, still refused
            run.main(["--quick", "--only", "g", "--output", str(run.FULL_OUTPUT)])
    finally:
        torch.set_num_threads(threads)
    assert refused.value.code == 2
    assert "## g. GPU" in quick.read_text() and quick.with_suffix(".json").is_file()
    assert {path: path.read_bytes() for path in tracked} == tracked


def test_the_latency_section_summarises_by_family_and_ranks():
    from benchmarks import latency_accuracy as L

    rows = [{"network": f"n{i}", "family": "SKNet-50 variants" if i < 4 else "ResNeSt",
             "predicted_ms": p, "measured_ms": m, "error": p / m - 1}
            for i, (p, m) in enumerate([(10, 10), (21, 20), (33, 30), (30, 40), (9, 10)])]
    table, headline = L.summary(rows)
    assert [line[0] for line in table] == ["ResNeSt", "SKNet-50 variants", "all"]
    assert table[-1][1:3] == ["5", "3 (60%)"] and headline["zoo"] == (1, 1)
    assert headline["variants"] == (2, 4) and headline["spearman"] == pytest.approx(0.8)
    assert L.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9486832980505138)

"""The op conformance suite: every layer keyword's `example` (ops.Keyword), in a small network
around it, parses, lowers, analyses, compiles to exactly the analysed counts, is written in
Table 1, traces with torch.fx and states its feature maps as they come out. The tests run over
the registry, so an op added later is checked without an edit here."""

import functools
import re

import pytest
import torch

import skdsl
from skdsl import ops
from skdsl.core.graph import lower_table
from skdsl.report.network import item_lines
from skdsl.testing import assert_compiles_exactly

pytestmark = pytest.mark.usefixtures("one_thread")

INPUT = (3, 16, 16)  # the stem keeps 16×16 and gives 16 channels: the map Keyword.example reads

# `split` is a statement (`split 2 -> a, b`), not a keyword, so no Keyword's example reaches
# the only op with several outputs; ShuffleNetV2's unit swaps its halves with it.
STATEMENT_EXAMPLES = {"split": "split 2 -> left, right\nconcat right, left"}

EXAMPLES = {**{word: keyword.example for word, keyword in ops.KEYWORDS.items()},
            **STATEMENT_EXAMPLES}


def network_text(word: str, head: tuple[str, ...]) -> str:
    lines = [f"network probe_{word}:", f"    input {'x'.join(map(str, INPUT))}", "    classes 10",
             "    stage stem: conv 3x3, 16", "    stage probe:"]
    lines += [f"        {line}" for line in EXAMPLES[word].split("\n")]
    if head:
        lines += ["    stage head:", *(f"        {line}" for line in head)]
    return "\n".join(lines) + "\n"


@functools.cache
def probe(word: str):
    """The network around `word`'s example, with the head its output needs: GAP then fc after
    a feature map, the fc alone after a vector (an fc example)."""
    headless = lower_table(skdsl.parse(network_text(word, ())))
    name, port = headless.output
    is_map = len(headless.nodes[name].out_shapes[port]) == 3
    return skdsl.parse(network_text(word, ("gap", "fc classes") if is_map else ("fc classes",)))


def probe_stage(spec):
    return next(stage for stage in spec.stages if stage.name == "probe")


def images(batch: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch, *INPUT)


def compiled(word: str, **options):
    torch.manual_seed(0)
    return skdsl.compile(probe(word), **options).eval()


def leading_words(example: str) -> set[str]:
    """The first word of each line, past a label (`u = add k3, k5`) or a branch head."""
    words = set()
    for line in example.split("\n"):
        statement = re.sub(r"^(\w+\s*=\s*|branch \w+( from \w+)?:\s*)", "", line.strip())
        words |= set(re.findall(r"^[A-Za-z]+", statement))
    return {word.lower() for word in words}


by_keyword = pytest.mark.parametrize("word", list(EXAMPLES))


@pytest.mark.parametrize("word", list(ops.KEYWORDS))
def test_every_keyword_has_an_example_that_uses_it(word):
    example = ops.KEYWORDS[word].example
    assert example, f"ops.KEYWORDS['{word}'] has no example"
    assert word in leading_words(example), f"the example of '{word}' never writes it: {example!r}"


@by_keyword
def test_the_example_parses_and_expands(word):
    spec = skdsl.parse(network_text(word, ()))  # probe() lowers it to choose the head
    assert [stage.name for stage in spec.stages] == ["stem", "probe"]
    assert probe_stage(spec).body, f"'{word}' expanded to nothing"


@by_keyword
def test_the_example_lowers_and_analyses(word):
    spec = probe(word)
    graph = skdsl.lower(spec)
    assert any(name.startswith("probe.") for name in graph.nodes), "no node of the probe stage"
    analysis = skdsl.analyze(spec)
    assert analysis.output == (10,)
    assert analysis.params > 0 and analysis.mult_adds > 0


@by_keyword
def test_the_example_compiles_to_exactly_its_counts(word):
    # parameters == sum of numel, FlopCounterMode / 2 == multiply-adds, leaves == nodes
    report = assert_compiles_exactly(probe(word))
    analysis = skdsl.analyze(probe(word))
    assert (report.params, report.mult_adds) == (analysis.params, analysis.mult_adds)


@by_keyword
def test_the_example_is_written_in_table_1(word):
    for item in probe_stage(probe(word)).body:
        lines = item_lines(item)
        assert lines and all(line.strip() for line in lines), (item.kind, lines)


@by_keyword
def test_the_example_traces_with_fx(word):
    model, x = compiled(word), images()
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("word", EXAMPLES)
def test_feature_info_states_the_maps_that_come_out(word):
    info = compiled(word).feature_info
    with torch.no_grad():
        maps = compiled(word, features_only=True)(images())
    assert len(maps) == len(info)
    height = INPUT[1]
    for entry, found in zip(info, maps):
        assert found.shape[1] == entry["num_chs"], entry
        map_height = found.shape[2]
        if map_height > height:  # finer than the input: no whole stride, so the registry says 1
            assert entry["reduction"] == 1, entry
        else:
            assert height % map_height == 0, f"a {map_height}-pixel map of {height} pixels"
            assert entry["reduction"] == height // map_height, (entry, tuple(found.shape))


def test_the_examples_reach_every_graph_op():
    reached = {node.op for word in EXAMPLES for node in lower_table(probe(word)).nodes.values()}
    assert reached == set(ops.OPS), f"no example reaches {sorted(set(ops.OPS) - reached)}"

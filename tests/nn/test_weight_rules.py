"""skdsl/nn/weight_rules.py and weight_rule_files.py: rules that run both ways, split rules, and
families described in TOML rule files (docs/weights.md, "Rule files").

The split rule is tested with a synthetic family, docs/weights.md's worked example `splitnet`
(a ResNeSt-like SplitAttn layout of `mylib`, onto specs/sknet_tiny.sk): its state dicts are made
here from the compiled spec's, with torch.cat, independently of the code under test.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import skdsl
from skdsl.commands import main
from skdsl.nn import weights
from skdsl.nn.weight_rules import FAMILIES, WORDS, Family, Rule, Split, WeightsError

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "weights.md"
TINY = str(ROOT / "specs" / "sknet_tiny.sk")
TENSOR = WORDS["tensor"]


def docs_rule_file() -> str:
    """The worked example's rule file, as docs/weights.md shows it."""
    page = DOCS.read_text(encoding="utf-8")
    return next(block for block in re.findall(r"```toml\n(.*?)```", page, re.S)
                if 'name = "splitnet"' in block)


@pytest.fixture
def rule_file(tmp_path) -> Path:
    path = tmp_path / "splitnet.toml"
    path.write_text(docs_rule_file(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    """sknet_tiny's state dict, random: every float tensor distinct; the BNs of one unit's
    branches count the same batches (as in training), the others differ."""
    state = skdsl.compile(skdsl.load(TINY)).state_dict()
    generator = torch.Generator().manual_seed(0)
    for key, tensor in state.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(len(key.split(".sk.branch")[0]) * 7 + 1)
        else:
            state[key] = torch.randn(tensor.shape, generator=generator)
    return state


def splitnet_state(tiny: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights under mylib's names: each unit's branch convs and BNs concatenated."""
    source = {"stem.conv.weight": tiny["conv1.conv.conv.weight"]}
    source.update({f"stem.bn.{p}": tiny[f"conv1.conv.bn.{p}"] for p in TENSOR})
    units = sorted({re.match(r"conv(\d)\.block(\d)\.", key).groups() for key in tiny
                    if ".block" in key})
    for stage, block in units:
        unit, layer = f"conv{stage}.block{block}.", f"layer{int(stage) - 1}.{int(block) - 1}."
        source[layer + "conv1.weight"] = tiny[unit + "conv1.conv.weight"]
        source[layer + "conv2.conv.weight"] = torch.cat(
            [tiny[unit + f"sk.branch{m}.conv.weight"] for m in (1, 2)])
        for p in TENSOR:
            source[layer + f"bn1.{p}"] = tiny[unit + f"conv1.bn.{p}"]
            branches = [tiny[unit + f"sk.branch{m}.bn.{p}"] for m in (1, 2)]
            source[layer + f"conv2.bn0.{p}"] = branches[0] if p == "num_batches_tracked" \
                else torch.cat(branches)
            source[layer + f"conv2.bn1.{p}"] = tiny[unit + f"sk.reduce.bn.{p}"]
            source[layer + f"bn3.{p}"] = tiny[unit + f"conv2.bn.{p}"]
        for name, skdsl_name in (("fc1", "reduce.conv"), ("fc2", "logits")):
            source.update({layer + f"conv2.{name}.{p}": tiny[unit + f"sk.{skdsl_name}.{p}"]
                           for p in ("weight", "bias") if unit + f"sk.{skdsl_name}.{p}" in tiny})
        source[layer + "conv3.weight"] = tiny[unit + "conv2.conv.weight"]
        if unit + "shortcut.conv.weight" in tiny:
            source[layer + "downsample.0.weight"] = tiny[unit + "shortcut.conv.weight"]
            source.update({layer + f"downsample.1.{p}": tiny[unit + f"shortcut.bn.{p}"]
                           for p in TENSOR})
    source.update({f"fc.{p}": tiny[f"head.fc.{p}"] for p in ("weight", "bias")})
    return source


def run(capsys, *argv):
    status = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _same(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for key, tensor in expected.items():
        assert got[key].dtype == tensor.dtype and torch.equal(got[key], tensor), key


# -- rules --------------------------------------------------------------------------------------


def test_a_rule_runs_backwards():
    rule = Rule("layer{s}.{b}.conv{i:conv_index}.{p:tensor}", "conv{s+1}.block{b+1}.c{i}.{p}")
    assert rule.unapply("conv5.block11.c3.running_mean") == ("layer4.10.conv3.running_mean", None)
    assert rule.unapply("conv0.block1.c3.weight") is None      # stage 0 would be layer-1
    assert rule.unapply("conv5.block11.c4.weight") is None     # 4 is no conv_index
    assert rule.unapply("conv05.block1.c3.weight") is None     # not as the rule writes numbers


def test_a_split_rule_names_its_chunks_from_the_spec():
    rule = Rule("layer{s}.{b}.conv2.conv.weight",
                "conv{s+1}.block{b+1}.sk.branch{m+1}.conv.weight", Split("m"))
    values = rule.match("layer1.0.conv2.conv.weight")
    present = {f"conv2.block1.sk.branch{m}.conv.weight" for m in (1, 2, 3)}
    assert rule.chunks(values, present) == tuple(sorted(present))
    assert rule.span(values, 3) == "conv2.block1.sk.branch{1..3}.conv.weight"
    assert rule.apply("layer1.0.conv2.conv.weight") == "conv2.block1.sk.branch1.conv.weight"
    assert rule.unapply("conv2.block1.sk.branch3.conv.weight") == ("layer1.0.conv2.conv.weight", 2)


@pytest.mark.parametrize("source, target, split, words", [
    ("a{x}.{x}", "b{x}", None, "appears twice"),
    ("a{x:nope}", "b{x}", None, "no word list 'nope'"),
    ("a{x}.{y}", "b{x}", None, "leaves out the field 'y'"),
    ("a{p:tensor}", "b{p+1}", None, "'p' is a word, not a number"),
    ("a{1}", "b", None, "a brace that opens no field"),
    ("a{x}", "b{x}.{m}", Split("x"), "must be a name of the target's alone"),
    ("a{x}", "b{x}", Split("m"), "leaves out the field 'm'"),
    ("a{x}", "b{x}.{m}", Split("m", axis=-1), "is not a dimension"),
])
def test_a_rule_that_cannot_work_says_why(source, target, split, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        Rule(source, target, split)


# -- rule files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES["timm"], ids=lambda family: family.name)
def test_every_built_in_family_is_a_rule_file(family, tmp_path):
    path = tmp_path / f"{family.name}.toml"
    path.write_text(weights.dump_rules(family), encoding="utf-8")
    assert weights.load_rules(path) == family


def test_the_worked_example_is_the_python_table_written_in_toml(rule_file):
    conv_tensor = (("conv_tensor", ("weight", "bias")),)
    unit = "conv{s+1}.block{b+1}."
    python = Family(
        "splitnet", "SplitNet", "sk_unit", (
            Rule("stem.conv.weight", "conv1.conv.conv.weight"),
            Rule("stem.bn.{p:tensor}", "conv1.conv.bn.{p}"),
            Rule("layer{s}.{b}.conv1.weight", unit + "conv1.conv.weight"),
            Rule("layer{s}.{b}.bn1.{p:tensor}", unit + "conv1.bn.{p}"),
            Rule("layer{s}.{b}.conv2.conv.weight", unit + "sk.branch{m+1}.conv.weight",
                 Split("m", axis=0)),
            Rule("layer{s}.{b}.conv2.bn0.{p:tensor}", unit + "sk.branch{m+1}.bn.{p}",
                 Split("m", axis=0)),
            Rule("layer{s}.{b}.conv2.fc1.{p:conv_tensor}", unit + "sk.reduce.conv.{p}",
                 words=conv_tensor),
            Rule("layer{s}.{b}.conv2.bn1.{p:tensor}", unit + "sk.reduce.bn.{p}"),
            Rule("layer{s}.{b}.conv2.fc2.{p:conv_tensor}", unit + "sk.logits.{p}",
                 words=conv_tensor),
            Rule("layer{s}.{b}.conv3.weight", unit + "conv2.conv.weight"),
            Rule("layer{s}.{b}.bn3.{p:tensor}", unit + "conv2.bn.{p}"),
            Rule("layer{s}.{b}.downsample.0.weight", unit + "shortcut.conv.weight"),
            Rule("layer{s}.{b}.downsample.1.{p:tensor}", unit + "shortcut.bn.{p}"),
            Rule("fc.{p:conv_tensor}", "head.fc.{p}", words=conv_tensor),
        ), (r"\.block\d+\.sk\.branch\d+\.conv\.weight$",), ("splitnet_tiny",),
        library="std/resnext.sk", origin="mylib")
    assert weights.load_rules(rule_file) == python


def test_extends_puts_the_file_s_rules_before_the_family_s(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text('[family]\nname = "deep"\ntitle = "Deep"\nmodels = ["deep50"]\n'
                    'block = "sk_bottleneck"\nmarkers = [\'sk\']\nextends = "skresnet"\n\n'
                    '[[rule]]\nfrom = "stem.{i}.weight"\nto = "conv1.conv{i}.conv.weight"\n')
    family = weights.load_rules(path)
    base = next(family for family in FAMILIES["timm"] if family.name == "skresnet")
    assert family.rules == (Rule("stem.{i}.weight", "conv1.conv{i}.conv.weight"), *base.rules)


GOOD_FAMILY = ('[family]\nname = "x"\ntitle = "X"\nmodels = ["x1"]\nblock = "sk_unit"\n'
               "markers = ['sk']\n")
GOOD_RULE = '\n[[rule]]\nfrom = "a.{i}"\nto = "b.{i}"\n'


@pytest.mark.parametrize("text, words", [
    ("[family\n", "not valid TOML: "),
    ('title = "X"\n', "the file: 'title' is not a key of it (there are family, words, rule)"),
    (GOOD_RULE, "[family]: expected a table [family] with the family's name"),
    (GOOD_FAMILY.replace('models = ["x1"]', "models = 3") + GOOD_RULE,
     "[family] models: expected a non-empty list of non-empty strings, not 3"),
    (GOOD_FAMILY.replace('title = "X"\n', "") + GOOD_RULE,
     "[family] title: expected a value: the family's title"),
    (GOOD_FAMILY + 'modles = ["y"]\n' + GOOD_RULE,
     "[family]: 'modles' is not a key of it (there are name, title, models,"),
    (GOOD_FAMILY.replace("['sk']", "['sk(']") + GOOD_RULE,
     "[family] markers: expected regular expressions; item 1 is not one"),
    (GOOD_FAMILY + 'extends = "nope"\n' + GOOD_RULE,
     "[family] extends: expected the name of a registered timm family (resnext, seresnext,"),
    (GOOD_FAMILY, "[[rule]]: expected at least one [[rule]] table"),
    (GOOD_FAMILY + GOOD_RULE + '\n[[rule]]\nfrom = "c.{i}.{j}"\nto = "d.{i}"\n',
     "[[rule]] 2 (line 12): rule 'c.{i}.{j}': its target 'd.{i}' leaves out the field 'j'"),
    (GOOD_FAMILY + GOOD_RULE + '\n[[rule]]\nfrom = "c.{i}"\n',
     "[[rule]] 2 (line 12) to: expected a key pattern (a non-empty string)"),
    (GOOD_FAMILY + '\n[[rule]]\nfrom = 5\nto = "b"\n',
     "[[rule]] 1 (line 8) from: expected a key pattern (a non-empty string), not 5"),
    (GOOD_FAMILY + GOOD_RULE + '\n[[rule]]\nfrom = "c.{i}"\nto = "d.{m}"\nsplit = 0\n',
     "[[rule]] 2 (line 12) split: expected a table { field = NAME, axis = N }, not 0"),
    (GOOD_FAMILY + GOOD_RULE + '\n[[rule]]\nfrom = "c.{i}"\nto = "d.{i}.{m}"\n'
                               'split = { field = "m", axis = "x" }\n',
     "[[rule]] 2 (line 12): rule 'c.{i}': the split's axis 'x' is not a dimension"),
    (GOOD_FAMILY + '\n[words]\ntensor = ["w"]\n' + GOOD_RULE,
     "[words] tensor: expected a name of your own"),
    (GOOD_FAMILY + '\n[words]\nmine = []\n' + GOOD_RULE,
     "[words] mine: expected a non-empty list of non-empty strings, not []"),
])
def test_a_mistake_in_a_rule_file_names_the_file_the_key_and_what_was_expected(text, words,
                                                                               tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(WeightsError) as raised:
        weights.load_rules(path)
    assert raised.value.code == "SK528"
    assert f"'{path}'" in raised.value.message and words in raised.value.message
    assert raised.value.hint == "see the rule file format in docs/weights.md"


def test_a_missing_rule_file_is_refused_before_the_spec_is_compiled(capsys, tmp_path):
    status, _, err = run(capsys, "weights", "convert", "--from", "timm", "--rules",
                         tmp_path / "no.toml", TINY, tmp_path / "in.pth", tmp_path / "out.pt")
    assert status == 2 and f"error SK528: no rule file '{tmp_path / 'no.toml'}'" in err


def test_register_family_puts_it_first_and_refuses_a_second_of_its_name(rule_file,
                                                                        monkeypatch):
    monkeypatch.setitem(FAMILIES, "mylib", ())
    family = weights.load_rules(rule_file)
    assert weights.register_family(family) is family
    weights.register_family(family)  # the same family again: nothing
    assert FAMILIES["mylib"] == (family,)
    with pytest.raises(WeightsError, match="named 'splitnet' is registered already") as raised:
        weights.register_family(Family("splitnet", "Other", "b", (), ("x",), ("y",),
                                       origin="mylib"))
    assert raised.value.code == "SK528"


def test_parsing_and_rule_files_import_no_torch(rule_file):
    code = ("import sys\nfrom skdsl.commands.program import build_parser\n"
            f"build_parser().parse_args(['weights', 'export', '--to', 'mylib', '--rules', "
            f"{str(rule_file)!r}, 'a.sk', 'in', 'out'])\n"
            "from skdsl.nn.weights import load_rules, dump_rules, FAMILIES\n"
            f"dump_rules(load_rules({str(rule_file)!r}))\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


# -- a split family, through Python and through the command line --------------------------------


def test_a_split_rule_cuts_one_tensor_into_the_branches_and_export_joins_them(rule_file,
                                                                            tiny_state):
    family = weights.load_rules(rule_file)
    source = splitnet_state(tiny_state)
    converted = weights.convert_state_dict(source, tiny_state, "mylib", families=[family])
    _same(converted, tiny_state)
    conv = source["layer2.1.conv2.conv.weight"]
    assert torch.equal(converted["conv3.block2.sk.branch2.conv.weight"], conv[conv.shape[0] // 2:])
    for m in (1, 2):  # a scalar is copied to each branch
        assert converted[f"conv2.block1.sk.branch{m}.bn.num_batches_tracked"] == \
            source["layer1.0.conv2.bn0.num_batches_tracked"]
    used, back = weights.export_state_dict(converted, tiny_state, "mylib", families=[family])
    assert used == family
    _same(back, source)


def test_a_split_of_another_size_is_named_with_the_shape_all_chunks_need(rule_file,
                                                                        tiny_state):
    source = splitnet_state(tiny_state)
    conv = source["layer1.0.conv2.conv.weight"]
    source["layer1.0.conv2.conv.weight"] = torch.cat([conv, conv[:32]])  # three branches' rows
    with pytest.raises(WeightsError) as raised:
        weights.convert_state_dict(source, tiny_state, "mylib", "spec 'sknet_tiny'",
                                   families=[weights.load_rules(rule_file)])
    assert raised.value.code == "SK525"
    assert ("layer1.0.conv2.conv.weight (96×4×3×3) -> conv2.block1.sk.branch{1..2}.conv.weight "
            "(64×4×3×3)") in raised.value.message


def test_export_names_the_chunks_of_a_split_that_are_missing(rule_file, tiny_state):
    family = weights.load_rules(rule_file)
    state = {key: value for key, value in tiny_state.items()
             if not key.startswith("conv3.block2.sk.branch1.")}
    result = weights.export_plan(state, family)
    assert result.gaps["layer2.1.conv2.conv.weight"] == ["conv3.block2.sk.branch1.conv.weight"]
    with pytest.raises(WeightsError, match="chunks of a split missing") as raised:
        weights.export_state_dict(state, None, "mylib", [family])
    assert raised.value.code == "SK524"


def test_the_worked_example_runs_as_the_docs_show(rule_file, tiny_state, capsys, tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.torch import load_file, save_file

    source = splitnet_state(tiny_state)
    save_file({key: value.contiguous() for key, value in source.items()},
              tmp_path / "splitnet_tiny.safetensors")
    status, out, err = run(capsys, "weights", "convert", "--from", "mylib", "--rules", rule_file,
                           TINY, tmp_path / "splitnet_tiny.safetensors", tmp_path / "tiny.pt")
    assert status == 0, err
    page = DOCS.read_text(encoding="utf-8")
    shown = re.search(r"ok: mylib (\S+) \(SplitNet\) -> sknet_tiny: (\d+) tensors, ([\d,]+) "
                      r"parameters", page)
    assert out.startswith(f"ok: mylib {shown[1]} (SplitNet) -> sknet_tiny: {shown[2]} tensors, "
                          f"{shown[3]} parameters, written to ")
    _same(torch.load(tmp_path / "tiny.pt", weights_only=True), tiny_state)
    status, out, err = run(capsys, "weights", "export", "--to", "mylib", "--rules", rule_file,
                           TINY, tmp_path / "tiny.pt", tmp_path / "back.safetensors")
    assert status == 0, err
    assert re.search(r"ok: sknet_tiny -> mylib (\S+) \(SplitNet\): (\d+) tensors", out)[0] in page
    _same(load_file(tmp_path / "back.safetensors"), source)


def test_without_its_rule_file_a_split_family_is_recognised_as_far_as_it_goes(tiny_state,
                                                                            capsys, tmp_path):
    """No family explains these weights: what was recognised and what was not are both named,
    and no model name is made up for them."""
    source = tmp_path / "in.pth"
    torch.save(splitnet_state(tiny_state), source)
    status, _, err = run(capsys, "weights", "convert", "--from", "timm", TINY, source,
                         tmp_path / "out.pt")
    assert status == 2 and "error SK524: timm weights of no family skdsl knows do not fit spec " \
                           "'sknet_tiny' key for key" in err
    # ResNeSt-D's rules go furthest: splitnet keeps a split attention as timm's ResNeSt does
    assert re.search(r"recognised: \d+ of their 151 keys, by ResNeSt-D's rules", err)
    assert "layer*.*.downsample.*.{weight,bias,running_mean,running_var,num_batches_tracked}" \
        in err and "such as layer1.0.downsample.0.weight" in err and "stem.conv.weight" in err
    assert "describe theirs in a rule file, given with --rules" in err
    assert not re.search(r"\bresnext\d", err) and "Traceback" not in err  # no made-up name

"""Fine-tuning: `skdsl train --init FILE [--classes N]` from a checkpoint, converted weights or a
state dict; the head re-initialised and named; `skdsl eval` of converted weights."""

import pytest
import torch

import skdsl
from skdsl import commands
from skdsl.base.errors import CheckpointError, SettingError
from skdsl.train import TrainConfig, distributed, runner, train
from skdsl.train import checkpoint as C

from helpers import TINY_SPEC, trained_run

DATA = "synthetic:train=16,val=8"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny 3-class run: its spec and its best.pt."""
    spec, run = trained_run(TINY_SPEC, tmp_path_factory.mktemp("finetune"), "tiny.sk", data=DATA,
                            epochs=1, batch_size=8, seed=2)
    return spec, run / "best.pt"


def prepared(config: TrainConfig):
    """The run `config` starts, prepared (weights loaded) but not trained."""
    with distributed.process_group("cpu") as context, runner.StopSignals() as stop:
        run = runner.prepare(config, context, stop)
        run.lock.release()
        return run


def test_init_with_other_classes_reinitialises_the_head_and_says_so(trained, tmp_path, capsys):
    spec, best = trained
    run = prepared(TrainConfig(str(spec), out=str(tmp_path / "ft"), init=str(best), classes=5,
                               data="synthetic:train=16,val=8", batch_size=8))
    printed = capsys.readouterr().out
    assert ("init: loaded 6 of 8 tensors from" in printed and "left out, freshly initialised: "
            "head.fc.weight (3×4 in the file, 5×4 here), head.fc.bias (3 in the file, 5 here)"
            in printed)
    source = C.load(best)["model"]
    own = run.raw_model.state_dict()
    assert own["head.fc.weight"].shape == (5, 4)
    for key in own:
        if not key.startswith("head."):
            assert torch.equal(own[key], source[key]), key


@pytest.mark.parametrize("wrap", ["bare", "module.", "state_dict"])
def test_init_takes_converted_weights_and_wrapped_state_dicts(trained, tmp_path, capsys, wrap):
    spec, best = trained
    state = C.load(best)["model"]
    if wrap == "module.":
        state = {f"module.{key}": value for key, value in state.items()}
    elif wrap == "state_dict":
        state = {"state_dict": state, "epoch": 3}
    torch.save(state, tmp_path / "weights.pt")
    run = prepared(TrainConfig(str(spec), out=str(tmp_path / "ft"), init=str(tmp_path /
                               "weights.pt"), data=DATA, batch_size=8))
    assert "loaded 8 of 8 tensors" in capsys.readouterr().out
    assert torch.equal(run.raw_model.state_dict()["body.conv.conv.weight"],
                       C.load(best)["model"]["body.conv.conv.weight"])


def test_init_refuses_weights_of_another_body(trained, tmp_path):
    spec, best = trained
    other = tmp_path / "other.sk"
    other.write_text(TINY_SPEC.replace("conv 3x3, 4", "conv 3x3, 6"))
    with pytest.raises(CheckpointError, match="other shapes for body.conv.conv.weight") as error:
        prepared(TrainConfig(str(other), out=str(tmp_path / "ft"), init=str(best), data=DATA,
                             batch_size=8))
    assert error.value.code == "SK532" and "head.fc" not in error.value.message
    assert not (tmp_path / "ft").exists()  # the refused run left no folder


def test_init_and_resume_do_not_go_together(trained, tmp_path):
    spec, best = trained
    with pytest.raises(SettingError, match="init starts a new run"):
        train(TrainConfig(str(spec), out=str(best.parent), init=str(best), resume=True))


def test_a_fine_tuned_run_resumes_and_evaluates_with_its_class_count(trained, tmp_path, capsys):
    spec, best = trained
    out = tmp_path / "ft"
    assert commands.main(["train", str(spec), "--init", str(best), "--classes", "5", "--data", DATA,
                     "--batch-size", "8", "--epochs", "1", "--out", str(out)]) == 0
    assert commands.main(["train", str(spec), "--out", str(out), "--resume", "--epochs", "2"]) == 0
    assert commands.main(["eval", str(spec), "--checkpoint", str(out / "last.pt")]) == 0
    assert "(epoch 2, step 4)" in capsys.readouterr().out


def test_eval_takes_converted_weights(trained, tmp_path, capsys):
    spec, best = trained
    torch.save(C.load(best)["model"], tmp_path / "converted.pt")
    assert commands.main(["eval", str(spec), "--checkpoint", str(tmp_path / "converted.pt"),
                     "--data", DATA, "--json"]) == 0
    import json

    results = json.loads(capsys.readouterr().out)
    assert results["epoch"] is None and results["images"] == 8


def test_classes_reaches_the_spec(trained):
    from skdsl.train.specs import load_spec

    spec, _ = trained
    assert tuple(skdsl.analyze(load_spec(str(spec), None, 7)).output) == (7,)

"""skdsl/commands/train.py: the train and eval flags, each checked with a clear message."""

import subprocess
import sys

import pytest

from skdsl.base.errors import CliError
from skdsl.commands import train as commands
from skdsl.core.settings import TrainConfig

from helpers import parse_train_or_eval as parse


def train_config(*flags):
    return commands.train_config(parse("train", "specs/sknet_tiny.sk", "--out", "runs/x", *flags))


def test_flags_become_a_typed_config():
    config = train_config("--data", "synthetic:train=64", "--epochs", "3", "--batch-size", "32",
                          "--lr", "0.05", "--recipe", "paper-light", "--precision", "bf16",
                          "--channels-last", "--workers", "2", "--seed", "7", "--max-steps",
                          "9", "--schedule", "cosine", "--warmup-epochs", "0.5", "--set", "M=3",
                          "--sync-bn", "--label-smoothing", "0", "--weight-decay", "0")
    assert config == TrainConfig(
        spec="specs/sknet_tiny.sk", out="runs/x", data="synthetic:train=64", overrides={"M": 3},
        recipe="paper-light", epochs=3, batch_size=32, lr=0.05, weight_decay=0.0,
        label_smoothing=0.0, schedule="cosine", warmup_epochs=0.5, precision="bf16",
        channels_last=True, compile=None, sync_bn=True, workers=2, seed=7, max_steps=9)


def test_allow_imports_outside_reaches_both_configs():
    assert train_config().allow_imports_outside is False
    assert train_config("--allow-imports-outside").allow_imports_outside is True
    evaluated = commands.eval_config(parse("eval", "specs/sknet_tiny.sk", "--checkpoint", "x.pt",
                                           "--allow-imports-outside"))
    assert evaluated.allow_imports_outside is True


def test_left_out_flags_stay_unset_for_the_recipe_or_the_resumed_run():
    config = train_config()
    assert config.epochs is None and config.recipe is None and config.channels_last is None
    assert config.resume is False and config.overrides is None


@pytest.mark.parametrize("flags, message", [
    (("--epochs", "0"), "--epochs 0: must be at least 1"),
    (("--epochs", "two"), "--epochs 'two': expected a whole number"),
    (("--batch-size", "1"), "--batch-size 1: must be at least 2 (BatchNorm needs 2 images"),
    (("--lr", "0"), "--lr 0: must be a finite number > 0"),
    (("--lr", "nan"), "--lr nan: must be a finite number > 0"),
    (("--lr", "fast"), "--lr 'fast': expected a number such as 0.1"),
    (("--label-smoothing", "1"), "--label-smoothing 1: must be a finite number >= 0 and < 1"),
    (("--weight-decay=-1e-4",), "--weight-decay -1e-4: must be a finite number >= 0"),
    (("--warmup-epochs", "-1"), "--warmup-epochs -1: must be a finite number >= 0"),
    (("--workers", "-1"), "--workers -1: must be at least 0"),
    (("--seed", "-3"), "--seed -3: must be at least 0"),
    (("--max-steps", "0"), "--max-steps 0: must be at least 1"),
    (("--log-every", "0"), "--log-every 0: must be at least 1"),
    (("--recipe", "papr"), "--recipe 'papr': expected one of paper, paper-light, cifar"),
    (("--precision", "fp8"), "--precision 'fp8': expected one of fp32, bf16, fp16"),
    (("--schedule", "linear"), "--schedule 'linear': expected one of step, cosine"),
    (("--device", "gpu"), "--device 'gpu': expected one of auto, cpu, cuda"),
    (("--data", "imagenet:/data"), "--data 'imagenet:/data': unknown source 'imagenet'"),
    (("--set", "M"), "--set 'M': expected NAME=VALUE"),
])
def test_bad_flag_values_are_clear_errors(flags, message):
    with pytest.raises(CliError) as error:
        train_config(*flags)
    assert error.value.message.startswith(message)
    assert error.value.code.startswith("SK5") and error.value.exit_status == 2


def test_choice_errors_suggest_the_near_miss():
    with pytest.raises(CliError) as error:
        train_config("--recipe", "papr")
    assert error.value.hint == "did you mean 'paper'?"


def test_out_and_checkpoint_are_required():
    with pytest.raises(CliError, match="--out DIR is required"):
        commands.train_config(parse("train", "specs/sknet_tiny.sk"))
    with pytest.raises(CliError, match="--checkpoint FILE is required"):
        commands.eval_config(parse("eval", "specs/sknet_tiny.sk"))


def test_eval_config_defaults():
    config = commands.eval_config(parse("eval", "specs/sknet_tiny.sk", "--checkpoint", "x.pt"))
    assert (config.batch_size, config.precision, config.device, config.data) == \
        (256, "fp32", "auto", None)


def test_main_prints_errors_without_a_traceback(capsys, tmp_path):
    from skdsl.commands.program import main, training_parser  # python -m skdsl.train's

    status = main(["train", "specs/sknet_tiny.sk", "--out", str(tmp_path), "--epochs", "-2"],
                  training_parser)
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error SK510: --epochs -2: must be at least 1")
    assert "Traceback" not in err


def test_registering_the_commands_imports_no_torch():
    code = ("import sys, argparse; from skdsl.commands.train import register; "
            "p = argparse.ArgumentParser(); register(p.add_subparsers()); "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_memory_budget_takes_a_size_and_refuses_a_typo():
    assert train_config("--memory-budget", "1.5GiB").memory_budget == 3 << 29
    with pytest.raises(CliError, match="SK510|memory size") as error:
        train_config("--memory-budget", "10XB")
    assert error.value.code == "SK510" and "--memory-budget" in error.value.message


def test_a_run_over_the_memory_budget_is_refused_before_it_starts(tmp_path, capsys):
    from skdsl.commands import main

    out = tmp_path / "run"
    status = main(["train", "specs/sknet_tiny.sk", "--data", "synthetic:train=64,val=32",
                   "--epochs", "1", "--out", str(out), "--memory-budget", "10MiB"])
    message = capsys.readouterr().err
    assert status == 2 and "SK621" in message and "batch 128" in message
    fits = int(message.split("a batch of ")[1].split()[0])
    assert 2 <= fits < 128
    assert not (out / "last.pt").exists()

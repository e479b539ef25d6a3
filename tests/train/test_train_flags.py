"""The train and eval flags of the recipe knobs, --config and --resume auto
(skdsl/commands/train.py): each reaches its TrainConfig field, or is refused with SK510/SK650."""

import pytest

from skdsl.commands import train as commands
from skdsl.base.errors import CliError, SkdslError

from helpers import parse_train_or_eval as parse


def train_config(*flags):
    return commands.train_config(parse("train", "specs/sknet_tiny.sk", *flags))


def test_the_knobs_reach_the_config():
    config = train_config("--out", "runs/x", "--threads", "3", "--opt", "adamw", "--ema", "0.999",
                          "--clip-grad", "1.5", "--accum-steps", "4", "--mixup", "0.2",
                          "--cutmix", "1", "--augment", "randaugment", "--crop-scale", "0.25-1",
                          "--warmup-steps", "100", "--resume", "auto")
    assert (config.threads, config.opt, config.ema, config.clip_grad, config.accum_steps) == \
        (3, "adamw", 0.999, 1.5, 4)
    assert (config.mixup, config.cutmix, config.augment, config.crop_scale) == \
        (0.2, 1.0, "randaugment", (0.25, 1.0))
    assert (config.warmup_steps, config.resume) == (100, "auto")
    assert train_config("--out", "x", "--resume").resume is True
    assert train_config("--out", "x").resume is False
    evaluated = commands.eval_config(parse("eval", "specs/sknet_tiny.sk", "--checkpoint", "x.pt",
                                           "--ema"))
    assert evaluated.ema is True


@pytest.mark.parametrize("flags, message", [
    (("--ema", "1"), "--ema 1: must be a finite number > 0 and < 1"),
    (("--crop-scale", "0.5-0.2"), "--crop-scale '0.5-0.2': expected LO-HI"),
    (("--accum-steps", "0"), "--accum-steps 0: must be at least 1"),
    (("--opt", "adam"), "--opt 'adam': expected one of sgd, adamw"),
    (("--resume", "yes"), "--resume 'yes': expected no value, or 'auto'"),
])
def test_bad_knob_values_are_refused(flags, message):
    with pytest.raises(CliError) as error:
        train_config("--out", "x", *flags)
    assert error.value.code == "SK510" and error.value.message.startswith(message)


def test_a_config_file_can_name_out_and_is_checked_before_anything(tmp_path):
    settings = tmp_path / "run.toml"
    settings.write_text('out = "runs/from-file"\nepochs = 2\n')
    config = train_config("--config", str(settings))
    assert (config.out, config.config_file, config.epochs) == ("runs/from-file", str(settings),
                                                               None)  # the run merges the rest
    settings.write_text("epochs = 'two'\n")
    with pytest.raises(SkdslError) as error:
        train_config("--out", "x", "--config", str(settings))
    assert error.value.code == "SK650" and "line 1: epochs = 'two'" in error.value.message

"""Training numbers torch holds in float32 are refused beyond its range, at the command line and
in a --config file (a fuzz case: --weight-decay 1e300 ended as an internal error in the step)."""

import pytest

from skdsl import commands
from skdsl.core.settings import LARGEST_NUMBER
from skdsl.train.config_file import ConfigFileError, check_settings


@pytest.mark.parametrize("flag", ["--weight-decay", "--lr", "--clip-grad", "--mixup"])
def test_a_number_beyond_float32_is_sk510(flag, tmp_path, capsys):
    status = commands.main(["train", "specs/sknet_tiny.sk", "--out", str(tmp_path / "run"),
                            flag, "1e300"])
    err = capsys.readouterr().err
    assert status == 2 and "error SK510" in err and "3.4e+38" in err
    assert not (tmp_path / "run").exists()


def test_the_largest_number_is_float32s():
    import torch

    assert LARGEST_NUMBER <= torch.finfo(torch.float32).max


def test_a_config_number_beyond_float32_is_refused():
    with pytest.raises(ConfigFileError):
        check_settings({"weight_decay": 1e300}, "skdsl.train()")
    assert check_settings({"weight_decay": 1e30}, "skdsl.train()")["weight_decay"] == 1e30

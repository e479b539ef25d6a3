"""torchrun's environment: read once, every value checked (SK515), never a crash further on."""

import pytest

from skdsl import commands
from skdsl.base.launch import Launch, LaunchError, launch


def test_a_process_started_by_hand_is_one_process_of_rank_0():
    assert launch({}) == Launch(1, 0, 0, 1)
    assert launch({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1",
                   "LOCAL_WORLD_SIZE": "2"}) == Launch(4, 3, 1, 2)


@pytest.mark.parametrize("environ, says", [
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE='0' is not a whole number from 1"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK='2' is not a whole number from 0 to 1"),
    ({"RANK": "-1"}, "RANK='-1'"),
    ({"LOCAL_WORLD_SIZE": "2", "LOCAL_RANK": "2"}, "LOCAL_RANK='2'"),
    ({"WORLD_SIZE": "9" * 5000}, "WORLD_SIZE='9999999999999999999…'"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two'"),
])
def test_a_value_no_launcher_sets_is_sk515(environ, says):
    with pytest.raises(LaunchError, match=says) as caught:
        launch(environ)
    assert caught.value.code == "SK515"


def test_the_command_line_reports_it_before_any_work(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "0")
    assert commands.main(["train", "sknet_tiny", "--data", "synthetic",
                          "--out", str(tmp_path / "run")]) == 2
    assert "error SK515: the environment variable WORLD_SIZE='0'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()

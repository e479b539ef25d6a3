"""skdsl.train(...) (skdsl/train/api.py), --config files (config_file.py), --resume auto, the
threads (threads.py), the banner and what a run logs (metrics.csv, epoch throughput)."""

import csv
import json
import os

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import skdsl
import skdsl.train.runner as runner
from skdsl.base.errors import SettingError
from skdsl.commands import main
from skdsl.commands.arguments import flag
from skdsl.base.launch import LaunchError
from skdsl.train import TrainConfig, train
from skdsl.train import threads as T
from skdsl.train.api import APIError
from skdsl.train.config_file import ConfigFileError, read_config_file
from skdsl.train.metrics import read_metrics

from helpers import write_spec

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SPEC = """\
network plain:
    input 3x16x16
    classes 4

    stage conv1: conv 3x3, 8, stride 2
    stage conv2: conv 3x3, 16, stride 2
    stage head:
        avgpool global
        fc classes
"""
DATA = "synthetic:train=64,val=32"


@pytest.fixture
def spec(tmp_path):
    return str(write_spec(SPEC, tmp_path, "plain.sk"))


# -- threads ------------------------------------------------------------------------------------


def test_default_threads_share_the_affinity_between_local_processes(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert T.default_threads({}) == 8
    assert T.default_threads({"LOCAL_WORLD_SIZE": "2"}) == 4
    assert T.default_threads({"LOCAL_WORLD_SIZE": "3"}) == 2
    assert T.default_threads({"LOCAL_WORLD_SIZE": "16"}) == 1  # never 0
    with pytest.raises(LaunchError, match="LOCAL_WORLD_SIZE='junk' is not a whole number"):
        T.default_threads({"LOCAL_WORLD_SIZE": "junk"})


def test_more_threads_than_cores_are_refused_before_torch_starts_them(monkeypatch, spec, tmp_path):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(2)), raising=False)
    assert T.checked_threads(None, {}) == 2 and T.checked_threads(2) == 2
    with pytest.raises(SettingError, match="threads 4,096 is more than the 2 cores") as error:
        T.checked_threads(4096)
    assert error.value.code == "SK510" and "at most 2" in error.value.hint
    out = tmp_path / "run"  # the command-line fuzzer's case: exit 70 in OpenMP's allocator
    assert main(["train", spec, "--data", "synthetic:train=16,val=8", "--batch-size", "4",
                 "--out", str(out), "--threads", "4096", "--max-steps", "1"]) == 2
    assert not (out / "last.pt").exists()


def test_a_run_uses_its_threads_says_so_and_gives_them_back(spec, tmp_path, capsys):
    torch.set_num_threads(2)  # the run sets its own, and puts this back
    seen = []
    original = runner.train_epoch

    def spy(run, epoch):
        seen.append(torch.get_num_threads())
        return original(run, epoch)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "train_epoch", spy)
        train(TrainConfig(spec, out=str(tmp_path / "run"), data=DATA, batch_size=16, epochs=1,
                          threads=1))
    assert seen == [1] and torch.get_num_threads() == 2
    torch.set_num_threads(1)
    output = capsys.readouterr().out
    assert "done: 1 epoch, 4 steps;" in output
    first = output.splitlines()[:4]
    assert first[0] == "device cpu, 1 thread(s), fp32, contiguous memory, no compile"
    assert first[1].startswith("network plain: ") and "multiply-adds per image at 3×16×16" in first[1]
    params = sum(p.numel() for p in skdsl.compile(skdsl.load(spec)).parameters())
    assert f"{params:,} parameters" in first[1]
    assert first[2].startswith("recipe cifar: sgd lr 0.0125, weight decay 0.0005")
    assert first[3] == ("data synthetic: 64 train / 32 val images, 4 classes; global batch 16, "
                        "4 steps an epoch, 1 epoch")


# -- --resume auto, the resume line, the logs -----------------------------------------------------


def test_resume_auto_starts_then_resumes_and_the_logs_follow(spec, tmp_path, capsys):
    out = tmp_path / "run"
    settings = dict(spec=spec, out=str(out), data=DATA, batch_size=16, resume="auto", seed=3)
    first = train(TrainConfig(**settings, max_steps=2, epochs=2))
    assert first.status == "max-steps"
    assert "resuming" not in capsys.readouterr().out
    second = train(TrainConfig(**settings, epochs=2))
    output = capsys.readouterr().out
    assert "resuming at epoch 1, step 2 (batch 2 of the epoch)" in output
    assert "done: 2 epochs, 8 steps" in output
    assert second.epochs_done == 2
    with open(out / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    for record in second.history:
        assert record["images_per_s"] > 0 and 0 <= record["data_wait"] <= 1
        assert record["peak_memory_mib"] > 0 and record["lr"] == pytest.approx(0.0125)
        assert float(rows[record["epoch"] - 1]["val_top1"]) == pytest.approx(record["val_top1"])
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["event"] == "step"]
    assert steps == list(range(1, 9))


@pytest.mark.skipif(not __import__("importlib").util.find_spec("tensorboard"),
                    reason="the tensorboard extra is not installed")
def test_tensorboard_event_files_when_the_extra_is_installed(spec, tmp_path):
    train(TrainConfig(spec, out=str(tmp_path / "run"), data=DATA, batch_size=16, epochs=1))
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


# -- --config files ---------------------------------------------------------------------------------


def test_a_config_file_sets_what_flags_leave_out_and_the_run_records_it(spec, tmp_path):
    settings = tmp_path / "run.toml"
    settings.write_text(f'data = "{DATA}"\nbatch-size = 16\nepochs = 3\nopt = "adamw"\n'
                        f'crop_scale = [0.3, 0.9]\n')
    result = train(TrainConfig(spec, out=str(tmp_path / "run"), config_file=str(settings),
                               epochs=1))  # the flag wins over the file's 3
    assert result.epochs_done == 1
    resolved = json.loads((tmp_path / "run" / "resolved.json").read_text())
    assert resolved["config"]["batch_size"] == 16 and resolved["config"]["epochs"] == 1
    assert resolved["recipe"]["optimizer"] == "adamw" and resolved["recipe"]["lr"] == 1e-3 * 16 / 256
    assert resolved["recipe"]["crop_scale"] == [0.3, 0.9]


@pytest.mark.parametrize("text, message", [
    ("epochs = 0\n",
     "config_file 'FILE', line 1: epochs = 0: input should be greater than or equal to 1"),
    ("bach-size = 16\n", "config_file 'FILE', line 1: unknown setting 'bach_size'"),
    ("ema = 1.5\n", "config_file 'FILE', line 1: ema = 1.5: input should be less than 1"),
    ("epochs = \n", "config_file 'FILE' is not valid TOML: "),
])
def test_a_bad_config_file_is_refused_before_anything_starts(tmp_path, text, message):
    path = tmp_path / "run.toml"
    path.write_text(text)
    with pytest.raises(ConfigFileError) as error:
        read_config_file(path)
    assert error.value.code == "SK650"
    assert error.value.message.startswith(message.replace("FILE", str(path)))
    # The command line names the setting by its flag.
    assert error.value.render(flag).startswith(
        "error SK650: " + message.replace("config_file", "--config").replace("FILE", str(path)))
    assert not (tmp_path / "out").exists()


# -- skdsl.train(...) ------------------------------------------------------------------------------


def shapes(count, seed):
    """Images whose class is which channel is bright: learnable in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 3
    images = 0.1 * torch.randn(count, 3, 16, 16, generator=generator)
    images[torch.arange(count), labels] += 1.0
    return TensorDataset(images, labels)


def test_skdsl_train_takes_a_compiled_module_and_datasets_and_trains_it_in_place(tmp_path):
    model = skdsl.compile(skdsl.parse(SPEC.replace("classes 4", "classes 3")))
    before = model.state_dict()["head.fc.weight"].clone()
    result = skdsl.train(model, train_data=shapes(96, 0), val_data=shapes(48, 1),
                         out=str(tmp_path / "run"), epochs=2, batch_size=16, lr=0.1, threads=1)
    assert result.status == "finished" and result.last_val["top1"] > 0.9  # chance: 1/3
    assert not torch.equal(before, model.state_dict()["head.fc.weight"])


def test_skdsl_train_takes_dataloaders_and_a_spec_with_a_source(spec, tmp_path):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 3))
    loader = DataLoader(shapes(64, 0), batch_size=8, shuffle=False)
    result = skdsl.train(model, train_data=loader, val_data=DataLoader(shapes(24, 1), batch_size=8),
                         out=str(tmp_path / "loader"), epochs=1, threads=1)
    assert result.step == 8  # the loader's batches, one step each
    from_spec = skdsl.train(spec, out=str(tmp_path / "spec"), data=DATA, epochs=1,
                            batch_size=16, threads=1)
    assert from_spec.step == 4


@pytest.mark.parametrize("call, error_type, code, message", [
    (lambda out: skdsl.train(SPEC_PATH, epochs=1), APIError, "SK652", "needs out=DIR"),
    (lambda out: skdsl.train(3, out=out), APIError, "SK652", "not int"),
    (lambda out: skdsl.train(SPEC_PATH, train_data=shapes(4, 0), out=out), APIError, "SK652",
     "val_data is missing"),
    (lambda out: skdsl.train(SPEC_PATH, train_data=[1], val_data=[2], out=out), APIError,
     "SK652", "train_data is a list"),
    (lambda out: skdsl.train(SPEC_PATH, out=out, epoch=3), ConfigFileError, "SK650",
     "unknown setting 'epoch'"),
    (lambda out: skdsl.train(torch.nn.Linear(2, 2), out=out, data=DATA, threads=1), APIError,
     "SK652", "a Linear module is no skdsl network: data sources need"),
])
def test_skdsl_train_refuses_what_it_cannot_use(tmp_path, call, error_type, code, message):
    with pytest.raises(error_type) as error:
        call(str(tmp_path / "out"))
    assert error.value.code == code and message in error.value.message


SPEC_PATH = "specs/sknet_tiny.sk"

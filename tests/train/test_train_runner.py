"""skdsl/train/runner.py: learning, exact resume, signals, NaN and OOM, eval, what is written."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import skdsl.train.runner as runner
from skdsl import commands
from skdsl import testing as T
from skdsl.commands.arguments import flag
from skdsl.base.errors import CheckpointError, SettingError
from skdsl.train import TrainConfig, train
from skdsl.train import checkpoint as C
from skdsl.train.display import Display, Progress
from skdsl.train.lock import RunLock
from skdsl.train.metrics import read_metrics

from helpers import write_spec

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

ROOT = Path(__file__).resolve().parents[2]

# Two SK units on 16×16 images, with dropout so that resuming must restore the random state too.
TEST_SPEC = """\
use "std/resnext.sk"

network test_sk:
    input 3x16x16
    classes 4

    stage conv1: conv 3x3, 16
    stage conv2: sk_unit(16, 32, stride=2, G=4, r=2, L=8)
    stage conv3: sk_unit(32, 64, stride=2, G=8, r=4, L=8)
    stage head:
        avgpool global
        dropout 0.1
        fc classes
"""


@pytest.fixture
def spec(tmp_path):
    return str(write_spec(TEST_SPEC, tmp_path, "test_sk.sk"))


def config(spec, out, **changes):
    # threads=1: a run sets its own thread count (one_thread alone would not hold for it).
    settings = dict(spec=spec, out=str(out), data="synthetic:train=96,val=32", batch_size=16,
                    epochs=2, seed=1, threads=1)
    return TrainConfig(**{**settings, **changes})


def weights(path):
    return torch.load(path, weights_only=True)


def assert_same_state(a, b):
    for key in ("model",):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), name
    momentum_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    momentum_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(momentum_a, momentum_b))
    assert (a["step"], a["epoch"]) == (b["step"], b["epoch"])


# -- learning -------------------------------------------------------------------------------------


def test_a_tiny_sk_network_learns_synthetic_shapes_well_above_chance(spec, tmp_path):
    result = train(config(spec, tmp_path / "run", data="synthetic:train=1536,val=256", epochs=3,
                          batch_size=32, lr=0.2, schedule="cosine", warmup_epochs=0.2))
    assert result.status == "finished" and result.epochs_done == 3
    assert result.last_val["top1"] > 0.5  # chance is 0.25 with 4 classes (seed 1 gives 0.68)
    assert result.best_top1 >= result.last_val["top1"]


# -- exact resume ---------------------------------------------------------------------------------


def test_two_epochs_straight_equal_one_plus_one_resumed_bit_for_bit(spec, tmp_path):
    train(config(spec, tmp_path / "straight"))
    first = train(config(spec, tmp_path / "resumed", epochs=1))
    assert first.epochs_done == 1
    second = train(config(spec, tmp_path / "resumed", epochs=2, resume=True))
    assert second.epochs_done == 2
    assert_same_state(weights(tmp_path / "straight" / "last.pt"),
                      weights(tmp_path / "resumed" / "last.pt"))
    clocks = ("seconds", "images_per_s", "data_wait", "peak_memory_mib")  # this machine's pace
    assert second.history == [{**r, **{key: s[key] for key in clocks}}
                              for r, s in zip(train_history(tmp_path / "straight"), second.history)]
    # metrics.jsonl holds each step once, across the resume.
    steps = [r["step"] for r in read_metrics(tmp_path / "resumed" / "metrics.jsonl")
             if r["event"] == "step"]
    assert steps == list(range(1, 13))


def train_history(out):
    return C.load(Path(out) / "last.pt")["history"]


def test_resuming_in_the_middle_of_an_epoch_is_exact_too(spec, tmp_path, capsys):
    train(config(spec, tmp_path / "straight"))
    stopped = runner.train(config(spec, tmp_path / "resumed", max_steps=4), spelled=flag)
    assert stopped.status == "max-steps" and stopped.exit_status == 0
    assert "continue with --resume and a larger --max-steps" in capsys.readouterr().out
    saved = C.load(tmp_path / "resumed" / "last.pt")
    assert (saved["epoch"], saved["batch_in_epoch"], saved["step"]) == (0, 4, 4)
    train(config(spec, tmp_path / "resumed", resume=True))  # flags left out: the run's own
    assert_same_state(weights(tmp_path / "straight" / "last.pt"),
                      weights(tmp_path / "resumed" / "last.pt"))


def test_resume_refuses_what_would_not_continue_the_run(spec, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(CheckpointError, match="^resume: no checkpoint '.*last.pt'") as error:
        train(config(spec, out, resume=True))
    assert error.value.code == "SK601" and error.value.settings == ("resume",)
    train(config(spec, out, epochs=1))
    with pytest.raises(SettingError, match="already holds a run") as error:
        train(config(spec, out, epochs=1))
    assert error.value.code == "SK514"
    with pytest.raises(CheckpointError, match="^resume continues a run exactly, but seed and "
                                              "batch_size differ from the run") as error:
        train(config(spec, out, resume=True, batch_size=32, seed=2))
    assert error.value.code == "SK606" and "--" not in error.value.render()
    assert "but --seed and --batch-size differ" in error.value.render(flag)


def test_a_bad_checkpoint_stops_resume_and_is_left_untouched(spec, tmp_path):
    out = tmp_path / "run"
    train(config(spec, out, epochs=1))
    last = out / "last.pt"
    other_spec = Path(spec).with_name("other.sk")
    other_spec.write_text(TEST_SPEC.replace("conv 3x3, 16", "conv 3x3, 12"))
    before = last.read_bytes()
    with pytest.raises(CheckpointError, match="holds weights of spec 'test_sk'") as error:
        train(config(str(other_spec), out, resume=True))
    assert error.value.code == "SK604" and last.read_bytes() == before
    last.write_bytes(before[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as error:
        train(config(spec, out, resume=True))
    assert error.value.code == "SK602" and last.read_bytes() == before[:1000]


# -- signals --------------------------------------------------------------------------------------


def test_sigterm_mid_epoch_saves_last_pt_and_resume_finishes_the_same_run(spec, tmp_path):
    out = tmp_path / "run"
    data = "synthetic:train=480,val=32"
    command = [sys.executable, "-m", "skdsl.train", "train", spec, "--out", str(out), "--data",
               data, "--batch-size", "8", "--epochs", "2", "--seed", "1", "--threads", "1"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=environment, cwd=ROOT)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and sum(1 for _ in metrics.open()) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stdout and "--resume" in stdout
    assert "Traceback" not in stderr
    saved = C.load(out / "last.pt")
    assert saved["epoch"] == 0 and 0 < saved["batch_in_epoch"] < 60  # in the middle of epoch 1

    result = train(config(spec, out, data=data, batch_size=8, resume=True))
    assert result.status == "finished" and result.epochs_done == 2
    train(config(spec, tmp_path / "straight", data=data, batch_size=8))
    assert_same_state(weights(tmp_path / "straight" / "last.pt"), weights(out / "last.pt"))


def test_stop_signals_are_deferred_to_a_step_boundary():
    # The handler before is restored: Python's own, or SIG_IGN where the suite was started in
    # the background by a shell without job control (as `nohup bash .ci/run &` does).
    before = signal.getsignal(signal.SIGINT)
    with runner.StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):  # the second Ctrl-C does not wait
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


# -- trouble --------------------------------------------------------------------------------------


def test_a_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(spec, tmp_path,
                                                                             monkeypatch):
    calls = {"count": 0}
    real_loss = runner.make_loss

    def poisoned(recipe):
        loss = real_loss(recipe)

        def forward(logits, labels):
            calls["count"] += 1
            value = loss(logits, labels)
            return value * float("nan") if calls["count"] == 8 else value
        return forward

    monkeypatch.setattr(runner, "make_loss", poisoned)
    out = tmp_path / "run"
    with pytest.raises(runner.TrainingError) as error:
        train(config(spec, out, epochs=3))  # 6 steps per epoch: step 8 is in epoch 2
    assert error.value.code == "SK610"
    assert "the loss became nan at step 8 (epoch 2)" in error.value.message
    assert "keeps the state after epoch 1" in error.value.message
    saved = C.load(out / "last.pt")
    assert (saved["epoch"], saved["step"]) == (1, 6)


def test_out_of_memory_suggests_a_batch_size_that_fits(spec, tmp_path, monkeypatch):
    real_compile = runner.skdsl_compile

    def small_memory(spec_):
        model = real_compile(spec_)

        def refuse_large_batches(module, inputs):
            if len(inputs[0]) > 4:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        model.register_forward_pre_hook(refuse_large_batches)
        return model

    monkeypatch.setattr(runner, "skdsl_compile", small_memory)
    with pytest.raises(runner.TrainingError) as error:
        train(config(spec, tmp_path / "run", batch_size=32))
    assert error.value.code == "SK611"
    assert "out of memory on cpu at batch_size 32" in error.value.message
    assert error.value.hint.startswith("try batch_size 4;")
    assert error.value.settings == ("batch_size", "precision", "channels_last")


# What torch's CPU allocator raises when an allocation fails (c10/core/impl/alloc_cpu.cpp).
CPU_OUT_OF_MEMORY = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                     "allocate memory: you tried to allocate 9600000000 bytes. Error code 12 "
                     "(Cannot allocate memory)")


def failing_forward(monkeypatch, fails):
    """Compiled models whose forward raises the CPU allocator's error when fails(module,
    images) says so."""
    real_compile = runner.skdsl_compile

    def compile_failing(spec_):
        model = real_compile(spec_)

        def check(module, inputs):
            if fails(module, inputs[0]):
                raise RuntimeError(CPU_OUT_OF_MEMORY)
        model.register_forward_pre_hook(check)
        return model

    monkeypatch.setattr(runner, "skdsl_compile", compile_failing)


def test_cpu_out_of_memory_mid_run_is_sk611_and_keeps_last_pt(spec, tmp_path, capsys,
                                                             monkeypatch):
    """Training step 8 (epoch 2 of 6 steps each) runs out of CPU memory after epoch 1's last.pt:
    a clean SK611 naming a batch that fits, last.pt as it was, and --resume goes on from it."""
    out = tmp_path / "run"
    steps, saved = [], []

    def fails(module, images):
        if not module.training:
            return False
        steps.append(len(images))
        if len(steps) == 7:  # epoch 2's first step: last.pt holds epoch 1
            saved.append((out / "last.pt").read_bytes())
        return len(steps) >= 8 and len(images) > 4

    failing_forward(monkeypatch, fails)
    status = commands.main(["train", spec, "--out", str(out), "--data", "synthetic:train=96,val=32",
                            "--batch-size", "16", "--epochs", "2", "--seed", "1",
                            "--threads", "1"])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert err.startswith(f"error SK611: out of memory on cpu at --batch-size 16 (16 images per "
                          f"process): training stopped; {out / 'last.pt'} keeps the state after "
                          f"epoch 1")
    assert "hint: try --batch-size 4;" in err  # 8 images failed too, 4 fit
    assert (out / "last.pt").read_bytes() == saved[0]
    kept = C.load(out / "last.pt")
    assert (kept["epoch"], kept["step"]) == (1, 6)
    monkeypatch.undo()
    result = train(config(spec, out, resume=True))
    assert result.status == "finished" and C.load(out / "last.pt")["step"] == 12


def test_eval_out_of_memory_is_sk611_naming_a_batch_that_fits(spec, tmp_path, capsys,
                                                             monkeypatch):
    out = tmp_path / "run"
    train(config(spec, out, epochs=1))
    failing_forward(monkeypatch, lambda module, images: len(images) > 4)
    status = commands.main(["eval", spec, "--checkpoint", str(out / "last.pt"), "--batch-size",
                            "16"])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert err.startswith("error SK611: out of memory on cpu while evaluating at --batch-size 16 "
                          "(16 images per process)\n  = hint: try --batch-size 4;")


def test_eval_refuses_a_batch_or_input_that_cannot_fit_before_it_starts(spec, tmp_path, capsys):
    out = tmp_path / "run"
    train(config(spec, out, epochs=1))
    argv = ["eval", spec, "--checkpoint", str(out / "last.pt")]
    with T.time_limit(30):  # drawing ten million images, one by one, would take hours
        status = commands.main([*argv, "--data", "synthetic:val=10000000", "--batch-size",
                                "16777216"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith(
        "error SK621: evaluating test_sk at batch 10000000 in fp32 needs about")
    assert "hint: use a --batch-size of at most" in err
    assert commands.main([*argv, "--memory-budget", "64KiB"]) == 2
    err = capsys.readouterr().err
    assert "evaluating test_sk at batch 32" in err and "but the budget is 64.0 KiB" in err
    # Weights alone fit a larger input behind the global pool; one image of it needs 120 GB.
    huge = Path(spec).with_name("huge.sk")
    huge.write_text(TEST_SPEC.replace("input 3x16x16", "input 3x100000x100000"))
    torch.save(weights(out / "last.pt")["model"], tmp_path / "weights.pt")
    assert commands.main(["eval", str(huge), "--checkpoint", str(tmp_path / "weights.pt")]) == 2
    err = capsys.readouterr().err
    assert "not even one image fits: one image needs" in err and "Traceback" not in err


def test_resume_of_a_folder_in_use_is_sk608_even_before_its_first_checkpoint(spec, tmp_path):
    """Another run holds --out (the lock, held here in-process as a second process would) and
    has not written last.pt yet: the folder is in use (SK608), not without a checkpoint."""
    out = tmp_path / "run"
    with RunLock(out):
        with pytest.raises(SettingError) as error:
            train(config(spec, out, resume=True))
        assert error.value.code == "SK608"
        assert "is in use by another run (pid" in error.value.message
        with pytest.raises(SettingError) as error:
            train(config(spec, out, resume="auto"))
        assert error.value.code == "SK608"
    with pytest.raises(CheckpointError) as error:  # free again: now there is no checkpoint
        train(config(spec, out, resume=True))
    assert error.value.code == "SK601" and not out.exists()


def test_fp16_needs_a_gpu_and_batches_need_two_images_per_process(spec, tmp_path):
    with pytest.raises(SettingError, match="fp16 needs a CUDA GPU"):
        train(config(spec, tmp_path / "a", precision="fp16", device="cpu"))
    with pytest.raises(SettingError, match="fewer than one batch"):
        train(config(spec, tmp_path / "b", data="synthetic:train=8,val=8"))


def test_a_source_with_other_classes_than_the_network(spec, tmp_path):
    pytest.importorskip("numpy")
    from test_train_data import write_cifar

    write_cifar(tmp_path / "cifar")
    with pytest.raises(SettingError, match="CIFAR images are 32×32"):
        train(config(spec, tmp_path / "run", data=f"cifar10:{tmp_path / 'cifar'}"))


# -- speed paths on a CPU -------------------------------------------------------------------------


def test_bf16_autocast_and_channels_last_train(spec, tmp_path, capsys):
    result = train(config(spec, tmp_path / "run", precision="bf16", channels_last=True,
                          max_steps=2))
    assert result.status == "max-steps"
    # From Python the closing line names the settings as TrainConfig spells them.
    assert "continue with resume and a larger max_steps" in capsys.readouterr().out
    losses = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")]
    assert len(losses) == 2 and all(0 < loss < 10 for loss in losses)


def test_compiled_sk_networks_have_no_graph_breaks(spec):
    """What --compile relies on: dynamo captures a whole SK network as one graph."""
    import skdsl

    model = skdsl.compile(skdsl.load(spec)).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph: breaks raise
    images = torch.randn(2, 3, 16, 16)
    assert torch.allclose(compiled(images), model(images), atol=1e-5)
    torch._dynamo.reset()


# -- what is written and shown --------------------------------------------------------------------


def test_files_metrics_and_eval(spec, tmp_path, capsys):
    out = tmp_path / "run"
    result = train(config(spec, out))
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [".lock", "best.pt", "last.pt", "metrics.csv",
                                                     "metrics.jsonl", "resolved.json"]
    records = read_metrics(out / "metrics.jsonl")
    steps = [r for r in records if r["event"] == "step"]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert len(steps) == 12 and len(epochs) == 2
    assert set(steps[0]) == {"event", "epoch", "step", "loss", "top1", "lr", "images_per_s"}
    assert epochs[-1]["val_top1"] == result.last_val["top1"]
    # Not a terminal: plain lines and the summary table, no progress bar redraws.
    assert "epoch 2/2  train loss" in printed and "training summary" in printed
    assert "\r" not in printed and "\x1b[" not in printed

    status = commands.main(["eval", spec, "--checkpoint", str(out / "last.pt"), "--json"])
    evaluated = json.loads(capsys.readouterr().out)
    assert status == 0 and evaluated["images"] == 32
    assert evaluated["top1"] == pytest.approx(result.last_val["top1"])
    assert evaluated["data"] == "synthetic:train=96,val=32"  # the checkpoint's own source
    commands.main(["eval", spec, "--checkpoint", str(out / "best.pt")])
    line = capsys.readouterr().out
    assert "validation, 32 images: top-1" in line and "top-5" in line


def test_eval_refuses_a_checkpoint_of_another_spec(spec, tmp_path, capsys):
    train(config(spec, tmp_path / "run", epochs=1))
    other = Path(spec).with_name("other.sk")
    other.write_text(TEST_SPEC.replace("classes 4", "classes 5"))
    status = commands.main(["eval", str(other), "--checkpoint", str(tmp_path / "run" / "last.pt")])
    assert status == 2 and "error SK604" in capsys.readouterr().err


def test_plot_needs_matplotlib_and_says_so_before_training(spec, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(SettingError, match="plot needs matplotlib") as error:
        train(config(spec, tmp_path / "run", plot=True))
    assert "skdsl[plot]" in error.value.hint and not (tmp_path / "run").exists()


def test_plot_writes_curves(spec, tmp_path):
    pytest.importorskip("matplotlib")
    train(config(spec, tmp_path / "run", epochs=1, plot=True))
    assert (tmp_path / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_a_terminal_gets_a_progress_bar():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    display = Display(stream=stream)
    display.start(1, 2, batches=10, done=0)
    display.update(Progress(1, 2, 5, 10, 32, loss=1.5, top1=0.5, images_per_s=100.0, lr=0.1))
    display.finish(1, 2, {"train_loss": 1.5, "train_top1": 0.5, "val_loss": 1.4, "val_top1": 0.6,
                          "val_top5": 1.0, "seconds": 3.0})
    text = stream.getvalue()
    assert "epoch 1/2" in text and "loss 1.5000" in text and "100 img/s" in text
    assert "val loss 1.4000" in text

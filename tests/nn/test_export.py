"""skdsl export: artifacts that load back and match eager; checkpoints of every kind; errors."""

import argparse
import os
from pathlib import Path

import pytest
import torch

from skdsl import commands as cli
from skdsl.nn import compiler, export

ROOT = Path(__file__).resolve().parents[2]
SPEC = str(ROOT / "examples" / "tiny_sk.sk")


def main(argv: list[str], capsys) -> tuple[int, str, str]:
    """`skdsl export ...` as the CLI runs it: exit status, stdout, stderr."""
    status = cli.main(["export", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def tiny_model(seed: int = 3):
    import skdsl

    torch.manual_seed(seed)
    model = compiler.compile(skdsl.load(SPEC))
    model.train()
    with torch.no_grad():  # BN statistics that are not the identity
        model(torch.randn(8, 3, 32, 32) * 2 + 0.5)
    return model.eval()


@pytest.mark.parametrize("fmt, suffix", [("torchscript", "ts"), ("exported", "pt2")])
@pytest.mark.parametrize("fuse", [False, True])
def test_export_writes_an_artifact_that_matches_eager(fmt, suffix, fuse, tmp_path, capsys):
    output = tmp_path / f"tiny.{suffix}"
    argv = [SPEC, "--random-init", "--format", fmt, "--output", str(output)]
    status, out, err = main(argv + (["--fuse-bn"] if fuse else []), capsys)
    assert status == 0, err
    assert output.is_file() and "max abs error" in out
    assert ("BN folded" in out) == fuse
    assert ("deprecates TorchScript" in out) == (fmt == "torchscript")
    assert "Traceback" not in err and "Warning" not in err


# What `skdsl train` writes besides the weights (a checkpoint without them is refused).
RUN_FIELDS = {"optimizer": {"state": {}, "param_groups": []}, "epoch": 1, "batch_in_epoch": 0,
              "step": 10, "best_top1": 0.5, "history": [], "epoch_totals": {},
              "config": {"seed": 0}}


@pytest.mark.parametrize("kind", ["skdsl", "model_key", "state_dict", "ddp"])
def test_export_loads_every_kind_of_checkpoint(kind, tmp_path, capsys):
    import skdsl
    from skdsl.train import checkpoint

    model = tiny_model()
    state = model.state_dict()
    path = tmp_path / "weights.pt"
    if kind == "skdsl":
        _, sha = checkpoint.spec_fingerprint(skdsl.load(SPEC))
        checkpoint.save({"spec_sha256": sha, "spec_name": "tiny_sk", "model": state,
                         **RUN_FIELDS}, path)
    elif kind == "model_key":
        torch.save({"model": state, "epoch": 3}, path)
    elif kind == "ddp":
        torch.save({f"module.{key}": value for key, value in state.items()}, path)
    else:
        torch.save(state, path)
    output = tmp_path / "tiny.pt2"  # --format exported, the default
    status, out, err = main([SPEC, "--checkpoint", str(path), "--fuse-bn", "--output",
                             str(output)], capsys)
    assert status == 0, err
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.export.load(str(output)).module()(x), model(x),
                                   rtol=1e-4, atol=1e-5)


def test_export_result_reports_the_error(tmp_path):
    import skdsl

    result = export.export(skdsl.load(SPEC), tmp_path / "tiny.pt2", "exported", fuse=True)
    assert result.folded == result.batch_norms > 0
    assert result.max_abs_error <= export.TOLERANCE * max(result.max_abs_output, 1.0)
    assert torch.export.load(str(tmp_path / "tiny.pt2")).module()(
        torch.randn(1, 3, 32, 32)).shape == (1, 10)


def _error(argv, capsys) -> str:
    status, _, err = main(argv, capsys)
    assert status == 2 and "Traceback" not in err
    return err


def test_weights_are_required_unless_random_init_is_asked_for(tmp_path, capsys):
    output = str(tmp_path / "x.ts")
    assert "error SK530" in _error([SPEC, "--output", output], capsys)
    assert "error SK530" in _error([SPEC, "--random-init", "--checkpoint", "x.pt", "--output",
                                    output], capsys)


def test_missing_and_unreadable_checkpoints(tmp_path, capsys):
    """Unreadable files are reported by the training runner's reader (SK602 corrupt, SK603 a
    pickle of objects); a missing file or one without weights is SK531."""
    output = str(tmp_path / "x.ts")
    assert "error SK531: no checkpoint" in _error(
        [SPEC, "--checkpoint", str(tmp_path / "none.pt"), "--output", output], capsys)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip file at all")
    assert "error SK602" in _error([SPEC, "--checkpoint", str(garbage), "--output", output],
                                   capsys)
    objects = tmp_path / "objects.pt"
    torch.save({"model": tiny_model().state_dict(), "recipe": argparse.Namespace(lr=0.1)},
               objects)
    assert "error SK603" in _error([SPEC, "--checkpoint", str(objects), "--output", output],
                                   capsys)
    empty = tmp_path / "empty.pt"
    torch.save({"epoch": 3}, empty)
    assert "error SK531" in _error(
        [SPEC, "--checkpoint", str(empty), "--output", output], capsys) and "not a state dict"


def test_weights_of_another_network_are_sk532(tmp_path, capsys):
    path = tmp_path / "other.pt"
    torch.save(tiny_model().state_dict(), path)
    err = _error([SPEC, "--set", "G=4", "--checkpoint", str(path), "--output",
                  str(tmp_path / "x.ts")], capsys)
    assert "error SK532" in err and "other shapes for" in err


def test_an_skdsl_checkpoint_of_another_spec_is_refused(tmp_path, capsys):
    from skdsl.train import checkpoint

    path = tmp_path / "last.pt"
    checkpoint.save({"spec_sha256": "0" * 64, "spec_name": "other",
                     "model": tiny_model().state_dict(), **RUN_FIELDS}, path)
    assert "error SK604" in _error([SPEC, "--checkpoint", str(path), "--output",
                                    str(tmp_path / "x.ts")], capsys)


@pytest.mark.skipif(__import__("importlib").util.find_spec("onnxscript") is not None,
                    reason="onnx and onnxscript are installed here")
def test_onnx_without_its_packages_says_what_to_install(tmp_path, capsys):
    err = _error([SPEC, "--random-init", "--format", "onnx", "--output",
                  str(tmp_path / "x.onnx")], capsys)
    assert "error SK533" in err and "pip install onnx onnxscript" in err


def test_an_output_directory_is_sk535(tmp_path, capsys):
    assert "error SK535" in _error([SPEC, "--random-init", "--output", str(tmp_path)], capsys)


# -- memory ---------------------------------------------------------------------------------------

# What torch's CPU allocator raises when an allocation fails (c10/core/impl/alloc_cpu.cpp).
CPU_OUT_OF_MEMORY = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                     "allocate memory: you tried to allocate 9600000000 bytes. Error code 12 "
                     "(Cannot allocate memory)")


@pytest.mark.parametrize("flags, said", [
    (["--input", "3x100000x100000"], "not even 3 images fit: 3 images need"),  # 120 GB an image
    (["--batch", "1000000000"], "checking the export of tiny_sk at batch 1000000000 in fp32"),
])
def test_a_batch_or_input_that_cannot_fit_is_refused_before_anything_is_written(
        flags, said, tmp_path, capsys):
    err = _error([SPEC, "--random-init", "--format", "torchscript", "--output",
                  str(tmp_path / "x.ts"), *flags], capsys)
    assert err.startswith("error SK621: checking the export of tiny_sk") and said in err
    assert "a larger --memory-budget runs it anyway" in err
    assert list(tmp_path.iterdir()) == []


def test_the_memory_budget_is_a_flag_and_a_larger_one_lets_the_export_run(tmp_path, capsys):
    output = tmp_path / "x.ts"
    argv = [SPEC, "--random-init", "--format", "torchscript", "--output", str(output)]
    err = _error([*argv, "--memory-budget", "1MiB"], capsys)
    assert "error SK621" in err and "but the budget is 1.0 MiB" in err and not output.exists()
    assert _error([*argv, "--memory-budget", "1 parsec"], capsys).startswith(
        "error SK622: --memory-budget '1 parsec' is not a memory size")
    status, out, err = main([*argv, "--memory-budget", "1GiB"], capsys)
    assert status == 0 and output.is_file(), err


def test_an_allocation_that_fails_while_exporting_is_sk611_and_writes_nothing(
        tmp_path, capsys, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError(CPU_OUT_OF_MEMORY)

    monkeypatch.setattr(torch.jit, "trace", out_of_memory)
    err = _error([SPEC, "--random-init", "--format", "torchscript", "--output",
                  str(tmp_path / "x.ts")], capsys)
    assert err.startswith("error SK611: out of memory while exporting tiny_sk; no artifact was "
                          "written: an allocation of 8.9 GiB failed")
    assert "hint: use a smaller --batch or --input" in err
    assert list(tmp_path.iterdir()) == []


def test_an_allocation_that_fails_while_checking_says_the_artifact_is_unchecked(
        tmp_path, capsys, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(export, "_run_back", out_of_memory)
    output = tmp_path / "x.ts"
    err = _error([SPEC, "--random-init", "--format", "torchscript", "--output", str(output)],
                 capsys)
    assert err.startswith(f"error SK611: out of memory while checking the exported tiny_sk; "
                          f"'{output}' was written but not checked")


def test_an_output_that_is_stdout_or_too_long_or_not_utf8_is_handled(tmp_path, capsys,
                                                                    monkeypatch):
    """Found by the command-line fuzzer: '-' made a file named '-', a 4,200-character path was
    an OSError (exit 70), and torch's loaders refused a name that is not UTF-8 (exit 70)."""
    from skdsl import commands

    monkeypatch.chdir(tmp_path)
    export = ["export", "sknet_tiny", "--random-init", "--format", "torchscript", "-o"]
    assert commands.main(export + ["-"]) == 2
    assert "error SK535: --output -: an export is a file" in capsys.readouterr().err
    assert commands.main(export + ["d/" * 2100 + "x.ts"]) == 2
    assert "the path is too long for this system" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    odd = os.fsdecode(b"x\xff.ts")
    assert commands.main(export + [odd]) == 0
    assert os.path.isfile(odd)

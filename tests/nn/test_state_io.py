"""skdsl/nn/state_io.py: the whole payload under the checksum, every field checked, hostile and broken
files refused by every reader, temporary files cleared, output paths checked first, the run lock."""

import os
import pickle
import random
import zipfile
from pathlib import Path

import pytest
import torch

import skdsl
from skdsl import commands
from skdsl.nn import state_io
from skdsl.base.errors import CheckpointError, SettingError, SkdslError
from skdsl.train import EvalConfig, TrainConfig, evaluate, train
from skdsl.train import checkpoint as C
from skdsl.train.lock import RunLock

from helpers import TINY_SPEC, checkpoint_payload, write_spec


@pytest.fixture
def spec(tmp_path):
    return str(write_spec(TINY_SPEC, tmp_path, "tiny.sk"))


def same(a, b) -> bool:
    """Deep equality of two payloads, tensors compared bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return (isinstance(b, dict) and list(a) == list(b)
                and all(same(a[key], b[key]) for key in a))
    if isinstance(a, (list, tuple)):
        return (type(a) is type(b) and len(a) == len(b)
                and all(same(x, y) for x, y in zip(a, b)))
    return type(a) is type(b) and (a == b or a != a and b != b)


# -- the whole payload under the checksum --------------------------------------------------------


def test_a_flipped_plain_value_fails_the_checksum(tmp_path):
    """A changed optimizer param group with its tensors untouched: format 1's tensor-only
    checksum let it through and the run resumed on another trajectory."""
    sealed = state_io.seal(checkpoint_payload())
    tensors_only = state_io.tensor_digest(sealed)
    sealed["optimizer"]["param_groups"][0]["lr"] = 0.2
    assert state_io.tensor_digest(sealed) == tensors_only
    torch.save(sealed, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="corrupt: it fails its checksum") as error:
        C.load(tmp_path / "last.pt")
    assert error.value.code == "SK602"


def _plain_byte_ranges(path: Path) -> list[range]:
    """The byte ranges of a torch.save zip that hold no tensor data: headers, the pickle of the
    plain values, the central directory."""
    size = path.stat().st_size
    tensor_data = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if "/data/" in info.filename:
                with open(path, "rb") as file:
                    file.seek(info.header_offset + 26)
                    name_length, extra_length = (int.from_bytes(file.read(2), "little")
                                                 for _ in range(2))
                start = info.header_offset + 30 + name_length + extra_length
                tensor_data.append(range(start, start + info.compress_size))
    tensor_data.sort(key=lambda r: r.start)
    plain, position = [], 0
    for block in tensor_data:
        plain.append(range(position, block.start))
        position = block.stop
    plain.append(range(position, size))
    return [block for block in plain if len(block)]


def test_every_one_bit_flip_outside_the_tensors_is_refused_or_changes_nothing(tmp_path):
    C.save(checkpoint_payload(), tmp_path / "last.pt")
    original = C.load(tmp_path / "last.pt")
    data = (tmp_path / "last.pt").read_bytes()
    positions = [p for block in _plain_byte_ranges(tmp_path / "last.pt") for p in block]
    with zipfile.ZipFile(tmp_path / "last.pt") as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    start = data.find(pickled)
    assert start > 0
    chosen = random.Random(0)
    # Half in the pickle of the plain values, half anywhere else outside the tensors.
    trials = ([chosen.randrange(start, start + len(pickled)) for _ in range(120)]
              + chosen.sample(positions, 120))
    refused = 0
    for trial, position in enumerate(trials):
        flipped = bytearray(data)
        flipped[position] ^= 1 << chosen.randrange(8)
        path = tmp_path / f"flip{trial}.pt"
        path.write_bytes(bytes(flipped))
        try:
            loaded = C.load(path)
        except CheckpointError:
            refused += 1
        else:  # a flip in bytes torch ignores (zip CRCs, padding): the same payload
            assert same(loaded, original), f"byte {position}: a changed payload was accepted"
        path.unlink()
    assert refused >= 120  # every flip in the pickle changes something


# -- every field checked --------------------------------------------------------------------------


def _without(key):
    return lambda p: p.pop(key)


def _setting(name, value):
    return lambda p: p["config"].__setitem__(name, value)


def _field(key, value):
    return lambda p: p.__setitem__(key, value)


CRAFTED = {
    "no history": (_without("history"), "it lacks history"),
    "no config": (_without("config"), "it lacks config"),
    "seed as text": (_setting("seed", "7"), "config setting seed is '7', not a whole number"),
    "seed too large": (_setting("seed", 2**70), "config setting seed is 1180591620717411303424"),
    "workers": (_setting("workers", 10**6), "setting workers is 1000000, not a whole number "
                                            "from 0 to 64"),
    "epoch -5": (_field("epoch", -5), "its epoch is -5, not a whole number >= 0"),
    "step 'x'": (_field("step", "x"), "its step is 'x', not a whole number >= 0"),
    "epoch True": (_field("epoch", True), "its epoch is True"),
    "history of numbers": (_field("history", [1, 2]), "its history holds 1 at 0"),
    "history record": (lambda p: p["history"][0].pop("val_top1"), "record 0 has val_top1 None"),
    "param groups": (lambda p: p["optimizer"].__setitem__("param_groups", "x"),
                     "its optimizer is not an optimizer state"),
    "model": (_field("model", {"a": 1}), "its model is not a state dict of tensors"),
    "best epoch 0": (_field("best_epoch", 0), "its best_epoch is 0"),
    "rng": (_field("rng", "x"), "its rng is not a list of random generator states"),
    "spec hash": (_field("spec_sha256", "zz"), "its spec_sha256 is 'zz', not a sha256"),
    "totals": (_field("epoch_totals", {"loss": "x"}), "its epoch_totals holds 'loss': 'x'"),
    "format version": (_field("format_version", "2"), "its format_version is '2'"),
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_a_crafted_field_is_a_clear_error(name, tmp_path):
    """Fields of the wrong type or range, with a checksum recomputed to match (anyone can)."""
    change, message = CRAFTED[name]
    crafted = state_io.seal(checkpoint_payload())
    change(crafted)
    crafted["checksum"] = state_io.digest(crafted)
    torch.save(crafted, tmp_path / "last.pt")
    with pytest.raises(CheckpointError) as error:
        C.load(tmp_path / "last.pt")
    assert error.value.code == "SK602" and message in error.value.message, error.value.message


def test_crafted_fields_end_a_resume_and_an_eval_with_a_clear_error(spec, tmp_path, capsys):
    crafted = state_io.seal(checkpoint_payload())
    crafted["config"]["seed"] = "7"
    crafted["checksum"] = state_io.digest(crafted)
    (tmp_path / "run").mkdir()
    torch.save(crafted, tmp_path / "run" / "last.pt")
    for command in (["train", spec, "--out", str(tmp_path / "run"), "--resume"],
                    ["eval", spec, "--checkpoint", str(tmp_path / "run" / "last.pt")]):
        assert commands.main(command) == 2
        err = capsys.readouterr().err
        assert "error SK602" in err and "setting seed is '7'" in err and "Traceback" not in err


# -- hostile, truncated, empty, flipped and foreign files, through every reader -------------------


class Marker:
    """Unpickling this creates a file: the proof that a reader ran code from a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _readers(spec, tmp_path):
    """Each way skdsl reads a weights file, as a function of the file's path."""
    def resume(path):
        out = tmp_path / f"resume{len(list(tmp_path.iterdir()))}"
        out.mkdir()
        if Path(path).is_fifo():
            os.mkfifo(out / "last.pt")
        else:
            (out / "last.pt").write_bytes(Path(path).read_bytes())
        return commands.main(["train", spec, "--out", str(out), "--resume"])

    def fresh_out():
        return str(tmp_path / f"run{len(list(tmp_path.iterdir()))}")

    return {
        "eval": lambda path: commands.main(["eval", spec, "--checkpoint", str(path)]),
        "train --resume": resume,
        "train --init": lambda path: commands.main(["train", spec, "--out", fresh_out(), "--init",
                                               str(path), "--data", "synthetic:train=8,val=4"]),
        "export": lambda path: commands.main(["export", spec, "--checkpoint", str(path), "--output",
                                         str(tmp_path / "model.pt2")]),
        "weights convert": lambda path: commands.main(["weights", "convert", "--from", "timm", spec,
                                                  str(path), str(tmp_path / "converted.pt")]),
        "skdsl.train.evaluate": lambda path: evaluate(EvalConfig(spec, checkpoint=str(path))),
        "skdsl.train.train --init": lambda path: train(TrainConfig(
            spec, out=fresh_out(), init=str(path), data="synthetic:train=8,val=4")),
        "checkpoint.load": lambda path: C.load(path),
        "weights.read_state_dict": lambda path: skdsl.nn.weights.read_state_dict(path),
    }


def _outcome(read, path, capsys) -> str:
    """The error code a reader ends with (from its exit or its exception)."""
    try:
        status = read(path)
    except SkdslError as error:
        return error.code
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err, err
    return err.split("error ")[1].split(":")[0]


def test_hostile_pickles_are_refused_by_every_reader_and_never_run(spec, tmp_path, capsys):
    import skdsl.nn.weights  # noqa: F401 - for the reader above

    marker = tmp_path / "marker"
    files = tmp_path / "files"
    files.mkdir()
    torch.save({"model": {"w": torch.zeros(1)}, "x": Marker(marker)}, files / "zip.pt")
    (files / "raw.pt").write_bytes(pickle.dumps({"model": Marker(marker)}, protocol=2))
    (files / "raw4.pt").write_bytes(pickle.dumps([Marker(marker)], protocol=4))
    torch.save(torch.nn.Linear(2, 2), files / "module.pt")  # a whole pickled module
    refused = 0
    for name, read in _readers(spec, tmp_path).items():
        for hostile in sorted(files.iterdir()):
            code = _outcome(read, hostile, capsys)
            assert code in ("SK603", "SK521"), (name, hostile.name, code)
            refused += 1
    assert not marker.exists()
    assert refused == 9 * 4


def test_broken_files_are_clear_errors_for_every_reader(spec, tmp_path, capsys):
    files = tmp_path / "files"
    files.mkdir()
    C.save(checkpoint_payload(), files / "good.pt")
    data = (files / "good.pt").read_bytes()
    (files / "truncated.pt").write_bytes(data[: len(data) // 2])
    (files / "empty.pt").write_bytes(b"")
    weight = checkpoint_payload()["model"]["body.conv.conv.weight"].numpy().tobytes()
    flipped = bytearray(data)
    flipped[data.find(weight[:16]) + 3] ^= 0x10
    (files / "flipped.pt").write_bytes(bytes(flipped))
    os.mkfifo(files / "fifo.pt")  # a reader that opened it would wait forever
    for name, read in _readers(spec, tmp_path).items():
        for broken in sorted(files.iterdir()):
            if broken.name == "good.pt":
                continue
            code = _outcome(read, broken, capsys)
            if name == "train --resume" and broken.name == "fifo.pt":  # a run folder's last.pt
                assert code == "SK514", code  # the file policy refuses the folder up front
                continue
            assert code in ("SK601", "SK602", "SK520", "SK521", "SK531"), (name, broken.name)


def test_a_file_of_another_spec_is_a_clear_error(spec, tmp_path, capsys):
    other = tmp_path / "other.sk"
    other.write_text(TINY_SPEC.replace("conv 3x3, 4", "conv 3x3, 6"))
    C.save(checkpoint_payload(), tmp_path / "last.pt")
    assert commands.main(["eval", str(other), "--checkpoint", str(tmp_path / "last.pt")]) == 2
    assert "error SK604" in capsys.readouterr().err
    torch.save(checkpoint_payload()["model"], tmp_path / "bare.pt")
    assert commands.main(["eval", str(other), "--checkpoint", str(tmp_path / "bare.pt")]) == 2
    err = capsys.readouterr().err
    assert "error SK532" in err and "other shapes for body.conv.conv.weight" in err


# -- prefixes --------------------------------------------------------------------------------------


def test_wrapper_prefixes_come_off_in_one_place():
    state = {"body.w": torch.zeros(1), "head.fc.weight": torch.zeros(1)}
    for prefix in ("module.", "_orig_mod.", "model.", "module._orig_mod."):
        wrapped = {prefix + key: value for key, value in state.items()}
        assert list(state_io.strip_wrappers(wrapped)) == list(state)
    # A key of the target itself is never cut, even when every key starts like a wrapper.
    own = {"model.w": torch.zeros(1)}
    assert list(state_io.strip_wrappers(dict(own), expected=own)) == ["model.w"]
    assert state_io.state_dict_in({"state_dict": {"module.a": torch.ones(1)}}, "f",
                                  state_io.WEIGHTS).keys() == {"a"}


# -- temporary files, output paths, the lock -------------------------------------------------------


def test_stale_temporary_files_are_removed_and_live_ones_kept(tmp_path):
    dead = tmp_path / ".last.pt.999999999.tmp"  # no process has that pid
    mine = tmp_path / f".last.pt.{os.getpid()}.tmp"
    parent = tmp_path / f".best.pt.{os.getppid()}.tmp"  # a live process
    other = tmp_path / "notes.tmp"
    for path in (dead, mine, parent, other):
        path.write_text("x")
    assert state_io.remove_stale_temporaries(tmp_path) == [dead]
    assert state_io.remove_stale_temporaries(tmp_path, all_but_mine=True) == [parent]
    assert mine.exists() and other.exists()


def test_a_run_lock_refuses_a_second_holder_naming_the_first(tmp_path):
    with RunLock(tmp_path / "run") as lock:
        with pytest.raises(SettingError, match=f"in use by another run \\(pid {os.getpid()} on "):
            RunLock(tmp_path / "run").acquire()
        lock.release()
        RunLock(tmp_path / "run").acquire().release()  # released: free again
    assert not (tmp_path / "run").exists()  # it made the folder, and nothing else used it
    (tmp_path / "run").mkdir()
    stale = tmp_path / "run" / ".last.pt.1.tmp"  # pid 1 lives, but the lock says no one writes
    stale.write_text("x")
    RunLock(tmp_path / "run").acquire().release()
    assert not stale.exists() and (tmp_path / "run").exists()  # cleared by the next holder


def test_outputs_are_checked_before_the_work(spec, tmp_path, capsys):
    # The input does not even exist: the output is refused first.
    assert commands.main(["weights", "convert", "--from", "timm", spec, str(tmp_path / "none.pth"),
                     str(tmp_path / "nodir" / "m.pt")]) == 2
    assert "error SK526: cannot write" in capsys.readouterr().err
    assert commands.main(["export", spec, "--random-init", "-o", str(tmp_path / "nodir" / "m.pt")]) == 2
    assert "error SK535: cannot write" in capsys.readouterr().err
    assert not (tmp_path / "nodir").exists()


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux's read-only /sys")
def test_a_read_only_folder_is_refused_before_the_work(spec, capsys):
    assert commands.main(["export", spec, "--random-init", "-o", "/sys/kernel/m.pt"]) == 2
    err = capsys.readouterr().err
    assert "error SK535: cannot write '/sys/kernel/m.pt'" in err and "Traceback" not in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_a_folder_without_write_permission_is_refused(spec, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert commands.main(["weights", "convert", "--from", "timm", spec, spec,
                     str(locked / "m.pt")]) == 2
    assert "error SK526" in capsys.readouterr().err


# -- bounded settings ------------------------------------------------------------------------------


@pytest.mark.parametrize("flags, message", [
    (["--workers", "10000"], "error SK510: --workers 10000: must be at most 64"),
    (["--seed", str(2**70)], "error SK510: --seed 1180591620717411303424: must be at most "
                                 "9,223,372,036,854,775,807"),
    (["--seed", "-1"], "error SK510: --seed -1: must be at least 0"),
    (["--data", "synthetic:train=1000000000000"], "error SK511"),
    (["--classes", "0"], "error SK510: --classes 0: must be at least 1"),
])
def test_absurd_settings_are_bounded(spec, tmp_path, capsys, flags, message):
    assert commands.main(["train", spec, "--out", str(tmp_path / "run"), *flags]) == 2
    assert message in capsys.readouterr().err


def test_the_python_api_is_bounded_too(spec, tmp_path):
    with pytest.raises(SettingError, match="setting seed is 1180591620717411303424, not a whole") as e:
        train(TrainConfig(spec, out=str(tmp_path / "run"), seed=2**70))
    assert e.value.code == "SK510"
    RunLock(tmp_path / "run").acquire().release()  # the failed run let go of its folder

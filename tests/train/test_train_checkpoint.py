"""skdsl/train/checkpoint.py: atomic writes, weights-only reads, and every way a file can be bad."""

import os
import pickle
import random

import pytest
import torch

import skdsl
from skdsl.nn import state_io
from skdsl.base.errors import CheckpointError
from skdsl.train import checkpoint as C

from helpers import TINY_SPEC, checkpoint_payload


def test_a_checkpoint_round_trips_through_weights_only_loading(tmp_path):
    written = checkpoint_payload()
    C.save(written, tmp_path / "last.pt")
    loaded = C.load(tmp_path / "last.pt", written["spec_sha256"])
    assert loaded["format"] == C.FORMAT and loaded["skdsl_version"] == skdsl.__version__
    for key, tensor in written["model"].items():
        assert torch.equal(loaded["model"][key], tensor)
    assert loaded["history"] == written["history"] and loaded["step"] == 4
    # The file is readable by plain torch too, without skdsl's code.
    assert "model" in torch.load(tmp_path / "last.pt", weights_only=True)


def test_save_leaves_no_temporary_files_and_replaces_atomically(tmp_path, monkeypatch):
    C.save(checkpoint_payload(), tmp_path / "last.pt")
    before = (tmp_path / "last.pt").read_bytes()

    def fail_midway(obj, file):
        file.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", fail_midway)
    with pytest.raises(CheckpointError, match="cannot write checkpoint .*No space left") as error:
        C.save(checkpoint_payload(), tmp_path / "last.pt")
    assert error.value.code == "SK607"
    assert (tmp_path / "last.pt").read_bytes() == before  # the old checkpoint is intact
    assert os.listdir(tmp_path) == ["last.pt"]


def test_missing(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint") as error:
        C.load(tmp_path / "nothing.pt")
    assert error.value.code == "SK601"


def test_truncated(tmp_path):
    C.save(checkpoint_payload(), tmp_path / "last.pt")
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    for name in ("cut.pt", "empty.pt", "text.pt"):
        with pytest.raises(CheckpointError, match="truncated or corrupt") as error:
            C.load(tmp_path / name)
        assert error.value.code == "SK602" and name in error.value.message


def test_corrupt_weights_fail_the_checksum(tmp_path):
    written = checkpoint_payload()
    C.save(written, tmp_path / "last.pt")
    data = bytearray((tmp_path / "last.pt").read_bytes())
    # Flip a bit inside the stored weights: torch's zip reader would not notice.
    weight = written["model"]["body.conv.conv.weight"].numpy().tobytes()
    offset = bytes(data).find(weight[:64])
    assert offset > 0
    data[offset + 10] ^= 0x40
    (tmp_path / "flipped.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt: it fails its checksum") as error:
        C.load(tmp_path / "flipped.pt")
    assert error.value.code == "SK602"


class Foreign:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_foreign_pickles_are_refused_without_running_them(tmp_path, capsys):
    with open(tmp_path / "evil.pt", "wb") as file:
        pickle.dump({"model": Foreign()}, file)
    torch.save({"model": Foreign()}, tmp_path / "evil_zip.pt")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    for name in ("evil.pt", "evil_zip.pt", "module.pt"):
        with pytest.raises(CheckpointError, match="holds Python objects besides tensors .*"
                                                  "never unpickles") as error:
            C.load(tmp_path / name)
        assert error.value.code == "SK603"
    assert "never run" not in capsys.readouterr().out


def test_a_bare_state_dict_is_not_a_checkpoint(tmp_path):
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="not an skdsl checkpoint") as error:
        C.load(tmp_path / "weights.pt")
    assert error.value.code == "SK603" and "state_dict" in error.value.hint


def test_a_checkpoint_of_another_spec(tmp_path):
    C.save(checkpoint_payload(), tmp_path / "last.pt")
    other = skdsl.parse(TINY_SPEC.replace("conv 3x3, 4", "conv 3x3, 8"))
    _, other_sha = C.spec_fingerprint(other)
    with pytest.raises(CheckpointError, match="holds weights of spec 'tiny'") as error:
        C.load(tmp_path / "last.pt", other_sha)
    assert error.value.code == "SK604"


def test_the_spec_hash_ignores_layout_and_comments():
    _, plain = C.spec_fingerprint(skdsl.parse(TINY_SPEC))
    relaid = "# a comment\n" + TINY_SPEC.replace("    stage body", "    stage  body")
    _, commented = C.spec_fingerprint(skdsl.parse(relaid))
    assert plain == commented


def test_a_newer_format_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(state_io, "FORMAT_VERSION", 99)
    C.save(checkpoint_payload(), tmp_path / "last.pt")
    monkeypatch.setattr(state_io, "FORMAT_VERSION", 2)
    with pytest.raises(CheckpointError, match="newer") as error:
        C.load(tmp_path / "last.pt")
    assert error.value.code == "SK605"


def test_rng_states_round_trip():
    state = C.rng_state()
    expected = (torch.rand(3), random.random())
    torch.rand(5), random.random()
    C.set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def test_rng_states_survive_a_checkpoint(tmp_path):
    numpy = pytest.importorskip("numpy")
    written = checkpoint_payload()
    C.save(written, tmp_path / "last.pt")
    expected = numpy.random.rand()
    numpy.random.rand()
    C.set_rng_state(C.load(tmp_path / "last.pt")["rng"][0])
    assert numpy.random.rand() == expected


# -- the state of the recipe knobs: EMA weights, accumulation ------------------------------------


@pytest.mark.parametrize("change, reason", [
    (lambda p: (p["config"].update(ema=0.99), p.update(ema=None)),
     "its config has ema 0.99 but it holds no ema weights"),
    (lambda p: p.update(ema={"x": torch.zeros(1)}), "its ema weights are not of its model's tensors"),
    (lambda p: p.update(ema=[1, 2]), "its ema is not a state dict of tensors"),
    (lambda p: (p["config"].update(accum_steps=4), p.update(batch_in_epoch=6)),
     "its batch_in_epoch 6 is not a whole number of steps of accum_steps 4"),
])
def test_ema_weights_and_accumulation_counters_are_checked_against_the_config(tmp_path, change,
                                                                                reason):
    written = checkpoint_payload()
    written["ema"] = {key: value.clone() for key, value in written["model"].items()}
    written["config"].update(ema=0.9, accum_steps=2)
    C.save(written, tmp_path / "good.pt")
    assert C.load(tmp_path / "good.pt")["ema"].keys() == written["model"].keys()
    change(written)
    C.save(written, tmp_path / "bad.pt")  # sealed: the digest is right, a field is not
    with pytest.raises(CheckpointError) as error:
        C.load(tmp_path / "bad.pt")
    assert error.value.code == "SK602" and reason in error.value.message

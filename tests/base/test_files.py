"""The file policy: only regular files are read (capped) or replaced (atomically); a device, FIFO,
socket or directory is refused without blocking and left exactly as it was.

Device nodes are made in the test's own folder (never /dev's), where this user may make them."""

import os
import socket
import stat
from pathlib import Path

import pytest

from skdsl.base import files

ROOT = Path(__file__).resolve().parents[2]


def special_files(folder):
    """name -> path of a FIFO, a character device like /dev/null (where mknod is allowed), a
    socket, a directory, and a link to the FIFO, all inside `folder`."""
    made = {"fifo": folder / "fifo", "directory": folder / "directory",
            "socket": folder / "socket", "link to fifo": folder / "link"}
    os.mkfifo(made["fifo"])
    made["directory"].mkdir()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(made["socket"]))
    listener.close()
    os.symlink(made["fifo"], made["link to fifo"])
    try:
        os.mknod(folder / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        made["character device"] = folder / "null"
    except (PermissionError, OSError):
        pass  # not root, or a filesystem without device nodes: the others still stand
    return made


def identity(path):
    info = os.lstat(path)
    return (stat.S_IFMT(info.st_mode), info.st_ino, info.st_mtime_ns, info.st_size)


@pytest.fixture
def specials(tmp_path):
    return special_files(tmp_path)


def test_only_regular_files_are_read_and_nothing_blocks(specials):
    for name, path in specials.items():
        with pytest.raises(files.FileProblem) as refused:
            files.read_bytes(path, 1000)
        assert refused.value.kind in ("special", "directory"), name
        with pytest.raises(files.FileProblem):
            files.check_readable(path, 1000)


def test_a_refused_special_file_names_what_it_is(specials):
    with pytest.raises(files.FileProblem) as refused:
        files.read_text(specials["fifo"], 1000)
    assert refused.value.what == "a pipe (FIFO)"
    assert "pipe (FIFO), not a regular file" in str(refused.value)


def test_reads_are_capped_and_say_the_cap(tmp_path):
    path = tmp_path / "big.toml"
    path.write_bytes(b"x" * 101)
    assert files.read_bytes(path, 101) == b"x" * 101
    with pytest.raises(files.FileProblem) as refused:
        files.read_bytes(path, 100)
    assert refused.value.kind == "too_large" and refused.value.size == 101
    assert "101 bytes, more than the 100" in str(refused.value)
    with pytest.raises(files.FileProblem, match="no such file"):
        files.read_bytes(tmp_path / "missing", 100)


def test_text_that_is_not_utf8_is_refused_with_its_offset(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"name = 'caf\xe9'")
    with pytest.raises(files.FileProblem, match="byte 0xe9 at offset 11"):
        files.read_text(path, 100)


def test_toml_with_an_unreadably_long_integer_is_invalid_not_a_crash(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("epochs = " + "9" * 5000)
    with pytest.raises(files.FileProblem, match="more than 4,300 digits") as refused:
        files.read_toml(path)
    assert refused.value.kind == "invalid"
    path.write_text("epochs = 4\n")
    assert files.read_toml(path) == ({"epochs": 4}, "epochs = 4\n")


def test_writers_refuse_every_special_file_and_leave_it_as_it_was(specials):
    before = {name: identity(path) for name, path in specials.items()}
    for name, path in specials.items():
        with pytest.raises(files.FileProblem):
            files.write_text(path, "replaced")
        with pytest.raises(files.FileProblem):
            files.check_writable(path)
    assert {name: identity(path) for name, path in specials.items()} == before
    folder = next(iter(specials.values())).parent
    assert not list(folder.glob(".*.tmp")), "a temporary file was left behind"


def test_a_write_replaces_a_regular_file_whole_and_keeps_a_link_to_it(tmp_path):
    target = tmp_path / "graph.dot"
    target.write_text("old")
    link = tmp_path / "link.dot"
    os.symlink(target, link)
    files.write_text(link, "new")
    assert os.path.islink(link) and target.read_text() == "new"
    files.write_text(tmp_path / "fresh.dot", "made")
    assert (tmp_path / "fresh.dot").read_text() == "made"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.dot", "graph.dot", "link.dot"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]


def test_a_fifo_put_in_place_during_a_write_is_not_replaced(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(files.FileProblem):
        with files.atomic_path(target) as temporary:
            temporary.write_text("new")
            os.mkfifo(target)  # another process took the name meanwhile
    assert stat.S_ISFIFO(os.lstat(target).st_mode)


def test_a_missing_folder_is_said_as_such(tmp_path):
    with pytest.raises(files.FileProblem, match="its folder .* does not exist"):
        files.check_output(tmp_path / "missing" / "x.dot")


def test_output_folders_are_folders_whose_named_files_are_regular(specials, tmp_path):
    assert files.check_output_folder(tmp_path / "new") == tmp_path / "new"
    assert not (tmp_path / "new").exists()
    with pytest.raises(files.FileProblem, match="not a folder"):
        files.check_output_folder(specials["fifo"])
    (tmp_path / "plain").write_text("x")
    with pytest.raises(files.FileProblem, match="a regular file, not a folder"):
        files.check_output_folder(tmp_path / "plain")
    with pytest.raises(files.FileProblem, match="'fifo' in it: it is a pipe"):
        files.check_output_folder(tmp_path, ("plain", "fifo"))


# -- every command that writes follows the policy ----------------------------------------------

TINY = "specs/sknet_tiny.sk"
WRITERS = {
    "graph": lambda out: ["graph", TINY, "-o", out],
    "tables": lambda out: ["tables", "-o", out],
    "export": lambda out: ["export", TINY, "--random-init", "--format", "torchscript", "-o", out],
    "weights": lambda out: ["weights", "convert", "--from", "timm", TINY, "missing.pth", out],
}


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_no_command_replaces_a_special_file(command, specials, capsys, monkeypatch):
    from skdsl import commands

    monkeypatch.chdir(ROOT)
    before = {name: identity(path) for name, path in specials.items()}
    for name, path in specials.items():
        assert commands.main(WRITERS[command](str(path))) == 2, name
        err = capsys.readouterr().err
        assert "error SK5" in err and "Traceback" not in err, (name, err)
    assert {name: identity(path) for name, path in specials.items()} == before
    folder = next(iter(specials.values())).parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in specials.values())


@pytest.mark.parametrize("name", ["metrics.csv", "last.pt", "resolved.json"])
def test_a_run_folder_holding_a_special_file_is_refused_before_the_run(name, tmp_path, capsys,
                                                                       monkeypatch):
    from skdsl import commands

    monkeypatch.chdir(ROOT)
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / name)
    before = identity(run / name)
    assert commands.main(["train", TINY, "--data", "synthetic", "--epochs", "1",
                          "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"error SK514: --out '{run}' cannot hold a run: '{name}' in it: it is a pipe" in err
    assert identity(run / name) == before and [p.name for p in run.iterdir()] == [name]


def test_an_out_folder_that_is_a_special_file_is_refused(specials, capsys, monkeypatch):
    from skdsl import commands

    monkeypatch.chdir(ROOT)
    before = {name: identity(path) for name, path in specials.items()}
    for name, path in specials.items():
        if name == "directory":
            continue
        assert commands.main(["train", TINY, "--out", str(path)]) == 2, name
        assert "error SK514" in capsys.readouterr().err
    assert {name: identity(path) for name, path in specials.items()} == before


def test_inspect_refuses_a_special_results_file_before_its_forward_passes(tmp_path, capsys,
                                                                          monkeypatch):
    import torch

    import skdsl
    from skdsl import commands
    from skdsl.inspect import attention

    monkeypatch.chdir(ROOT)
    weights = tmp_path / "tiny.pth"
    torch.save(skdsl.compile(skdsl.load(TINY)).state_dict(), weights)
    out = tmp_path / "attention"
    out.mkdir()
    os.mkfifo(out / "attention.json")
    before = identity(out / "attention.json")
    monkeypatch.setattr(attention, "inspect_attention", lambda request: pytest.fail("it ran"))
    assert commands.main(["inspect", "attention", TINY, "--checkpoint", str(weights),
                          "--out", str(out)]) == 2
    assert "error SK645: cannot write the results to" in capsys.readouterr().err
    assert identity(out / "attention.json") == before

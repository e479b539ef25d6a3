"""Files skdsl reads and writes: one policy for every command, reader and writer.

Reading (`read_bytes`, `read_text`, `check_readable`): only a regular file is read, and at most
`limit` bytes of it. The file is opened without blocking and checked on its open descriptor, so a
FIFO (whose reader waits for a writer), a device (/dev/zero never ends) or a socket is refused
without hanging, and a file swapped for one between a check and the open is refused too.

Writing (`check_output`, `atomic_path`, `write_bytes`, `write_text`, `check_output_folder`): only a
regular file is ever replaced. A path naming a device, FIFO, socket or directory - directly or
through a symbolic link - is refused before any work, and checked again just before the rename.
A link to a regular file is followed: its target is replaced and the link kept. The new bytes go
to a temporary file beside the target (created exclusively, never through a link), are fsynced,
and renamed over it, so the target always holds a whole file, old or new.

Every refusal is a `FileProblem`: the reason in words and a `kind`, so that each reader puts it in
its own error and code (a spec's SK11x, a checkpoint's SK60x, a settings file's SK650). This module
imports neither torch nor rich.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from pathlib import Path
from typing import Iterator

# Test hook: seconds to wait inside every write, after the bytes and before the rename, so a
# test can kill a process in the middle of one (tests/train/test_train_kills.py).
WRITE_DELAY_VARIABLE = "SKDSL_TEST_WRITE_DELAY"

# What skdsl reads at most, by kind of file (the caps are said in every refusal).
MAX_SETTINGS_BYTES = 1_000_000       # a TOML settings file or manifest: a few hundred lines
MAX_TEXT_BYTES = 64_000_000          # a generated page, a metrics log
MAX_DATA_FILE_BYTES = 1_000_000_000  # a CIFAR batch (31 MB)
MAX_IMAGE_BYTES = 256_000_000        # one image of an image folder
MAX_CHECKPOINT_BYTES = 64 * 2**30    # a checkpoint or weights file: 64 GiB


class FileProblem(OSError):
    """Why a file cannot be read or written, in words a reader puts in its own error (an
    OSError, so that a writer's `except OSError` reports it as it reports a full disk).

    kind: missing, directory, not_a_folder, special (a device, FIFO or socket), too_large,
    name_too_long, invalid (not in the format expected) or unreadable (not UTF-8, or any other
    OSError: permissions, I/O)."""

    def __init__(self, kind: str, reason: str, what: str = "", size: int = 0):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.what = what  # of kind special: 'a pipe (FIFO)', 'a character device'...
        self.size = size  # of kind too_large: the bytes found

    def __str__(self) -> str:
        return self.reason


def kind_of(mode: int) -> str:
    """What a file of this st_mode is, in words: 'a pipe (FIFO)', 'a character device'..."""
    kinds = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
             (stat.S_ISFIFO, "a pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISLNK, "a symbolic link"))
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


def _problem(error: OSError) -> FileProblem:
    if error.errno == errno.ENOENT:
        return FileProblem("missing", "no such file")
    if error.errno == errno.ENAMETOOLONG:
        return FileProblem("name_too_long", "the path is too long for this system")
    if error.errno == errno.EISDIR:
        return FileProblem("directory", "it is a directory")
    return FileProblem("unreadable", error.strerror or str(error))


def _refuse_mode(mode: int, wanted: str = "a regular file") -> None:
    if stat.S_ISDIR(mode):
        raise FileProblem("directory", f"it is a directory, not {wanted}")
    if not stat.S_ISREG(mode):
        raise FileProblem("special", f"it is {kind_of(mode)}, not {wanted}; skdsl reads and "
                                     f"writes no devices, pipes or sockets", what=kind_of(mode))


def _refuse_special(path: str | Path) -> None:
    """FileProblem when `path` is a device, FIFO, socket or directory; else nothing."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    _refuse_mode(mode)


def too_large(size: int, limit: int) -> FileProblem:
    return FileProblem("too_large", f"it is {size:,} bytes, more than the {limit:,} skdsl "
                                    f"reads from such a file", size=size)


# -- reading ---------------------------------------------------------------------------------------


def check_readable(path: str | Path, limit: int) -> os.stat_result:
    """The stat of `path` if it is a regular file of at most `limit` bytes (links followed),
    else a FileProblem. Calls only stat: nothing is opened."""
    try:
        info = os.stat(path)
    except OSError as error:
        raise _problem(error) from None
    _refuse_mode(info.st_mode)
    if info.st_size > limit:
        raise too_large(info.st_size, limit)
    return info


def read_bytes(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them, or a FileProblem."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                             | getattr(os, "O_NOCTTY", 0))
    except OSError as error:
        _refuse_special(path)  # a socket cannot be opened (ENXIO): say what it is instead
        raise _problem(error) from None
    try:
        info = os.fstat(descriptor)
        _refuse_mode(info.st_mode)
        if info.st_size > limit:
            raise too_large(info.st_size, limit)
        chunks, size = _read_up_to(descriptor, limit + 1)
    finally:
        os.close(descriptor)
    if size > limit:
        raise too_large(size, limit)
    return b"".join(chunks)


def _read_up_to(descriptor: int, most: int) -> tuple[list[bytes], int]:
    """The chunks of at most `most` bytes read from `descriptor`, and their size: a file that
    grows while it is read is cut at `most`."""
    chunks, size = [], 0
    while size < most:
        try:
            chunk = os.read(descriptor, min(most - size, 1 << 24))
        except OSError as error:
            raise _problem(error) from None
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return chunks, size


def read_text(path: str | Path, limit: int) -> str:
    """The UTF-8 text of the regular file `path` (a BOM dropped), at most `limit` bytes, or a
    FileProblem (kind 'unreadable' for bytes that are not UTF-8)."""
    data = read_bytes(path, limit)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise FileProblem("unreadable", f"it is not UTF-8 text (byte 0x{data[error.start]:02x} "
                                        f"at offset {error.start:,})") from None


def read_toml(path: str | Path, limit: int = MAX_SETTINGS_BYTES) -> tuple[dict, str]:
    """The values of the TOML file `path` and its text, or a FileProblem (kind 'invalid', its
    reason 'not valid TOML: ...', for a text that is not TOML)."""
    import tomllib

    text = read_text(path, limit)
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as error:
        raise FileProblem("invalid", f"not valid TOML: {error}") from None
    except ValueError:  # Python reads no integer literal of over 4,300 digits
        raise FileProblem("invalid", "not valid TOML here: it holds a whole number of more "
                                     "than 4,300 digits") from None


# -- writing ---------------------------------------------------------------------------------------


def check_output(path: str | Path) -> Path:
    """The file a write to `path` replaces (`path`, or the target of the links it is), after
    checking that it is a regular file or nothing yet, in a folder that exists; else a
    FileProblem. Nothing is created."""
    target = Path(os.path.realpath(path))
    try:
        info = os.stat(target)
    except FileNotFoundError:
        info = None
    except OSError as error:
        raise _problem(error) from None
    if info is not None:
        _refuse_mode(info.st_mode)
    if not os.path.isdir(target.parent):  # os.path's: False, never OSError (a name too long)
        raise FileProblem("missing", f"its folder '{Path(path).parent}' does not exist")
    return target


def check_writable(path: str | Path) -> None:
    """`check_output`, then a probe with a real temporary file beside the target: permissions,
    read-only mounts and root all decide. Raises FileProblem."""
    target = check_output(path)
    probe = temporary_name(target)
    try:
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    except OSError as error:
        raise _problem(error) from None
    os.close(descriptor)
    probe.unlink(missing_ok=True)


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A new temporary file beside the file `path` names, to write; once the block ends it is
    fsynced and renamed over that file, and the rename fsynced. The target always holds a whole
    file, old or new; on an error the temporary file is removed (a killed process leaves it:
    `remove_stale_temporaries` clears it at the next start). Raises FileProblem for a target
    that is no regular file, OSError for a failed write."""
    target = check_output(path)
    temporary = temporary_name(target)
    try:
        # Created here, exclusively and not through a link, so the caller's open() writes a
        # file of ours even if something else took the name.
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666))
        yield temporary
        _fsync_file(temporary)  # the bytes are on disk before the name points at them
        _test_delay()
        check_output(target)  # a device or FIFO put there meanwhile is not replaced either
        os.replace(temporary, target)
        _fsync_directory(target.parent)  # and the rename itself survives a power cut
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    """`data` to `path` atomically (atomic_path). Raises FileProblem or OSError."""
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        file.write(data)


def write_text(path: str | Path, text: str) -> None:
    """`text` as UTF-8 to `path` atomically (atomic_path). Raises FileProblem or OSError."""
    write_bytes(path, text.encode("utf-8"))


def check_output_folder(path: str | Path, names=()) -> Path:
    """A folder to write `names` into: `path` if it is a directory (links followed) or nothing
    yet, and each of `names` in it a regular file or nothing yet; else a FileProblem. Nothing is
    created."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return Path(path)
    except OSError as error:
        raise _problem(error) from None
    if not stat.S_ISDIR(info.st_mode):
        raise FileProblem("not_a_folder", f"it is {kind_of(info.st_mode)}, not a folder")
    for name in names:
        try:
            check_output(Path(path) / name)
        except FileProblem as problem:
            raise FileProblem(problem.kind, f"'{name}' in it: {problem.reason}") from None
    return Path(path)


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory(directory: Path) -> None:
    if os.name == "posix":  # Windows cannot open a directory; its rename is durable enough
        _fsync_file(directory)


def _test_delay() -> None:
    with contextlib.suppress(ValueError):  # a test hook: a value that is no number is none
        time.sleep(max(0.0, min(float(os.environ.get(WRITE_DELAY_VARIABLE) or 0), 3600.0)))

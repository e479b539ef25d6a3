"""One run per --out at a time: an exclusive lock on the run folder.

`fcntl.flock` on `--out/.lock`: the kernel releases it when the holding process ends, however it
ends (SIGKILL included), so a dead run never holds its folder. The file keeps the holder's pid
and host, which the refusal names. Under torchrun rank 0 alone takes it (it alone writes).
Where flock does not exist (Windows) runs are not locked.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from ..base.errors import declare_settings
from ..base.errors import SettingError
from ..nn import state_io

declare_settings("out")

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

LOCK_NAME = ".lock"


class RunLock:
    """The lock on a run folder, held from `acquire` to `release` (or the process's end)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._descriptor: int | None = None
        self._created = False  # this lock made the folder: a run that fails leaves none

    def acquire(self) -> "RunLock":
        """Take the folder (created if need be) or refuse naming the holder (SK608); then clear
        the temporary files that killed writes left there."""
        try:
            self._created = not self.folder.exists()
            self.folder.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise SettingError(f"cannot write to {{out}} '{self.folder}': "
                               f"{error.strerror or error}", code="SK514") from None
        if fcntl is not None:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(descriptor, 200).decode(errors="replace").strip() or "unknown"
                os.close(descriptor)
                raise SettingError(f"{{out}} '{self.folder}' is in use by another run ({holder})",
                                   code="SK608",
                                   hint="wait for it to end (or stop it: it saves last.pt), or "
                                        "choose another {out}") from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._descriptor = descriptor
        state_io.remove_stale_temporaries(self.folder, all_but_mine=True)
        return self

    def release(self) -> None:
        """Let go; a folder this lock created and nothing else used goes too."""
        if self._descriptor is None:
            return
        lock_file = self.folder / LOCK_NAME
        if self._created and [p.name for p in self.folder.iterdir()] == [LOCK_NAME]:
            lock_file.unlink(missing_ok=True)  # still held: no one else can be using it
            self.folder.rmdir()
        os.close(self._descriptor)  # closing the last descriptor drops the flock
        self._descriptor = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ["RunLock", "LOCK_NAME"]

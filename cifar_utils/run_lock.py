"""An exclusive lock on a run folder, so that two training processes never write into the same one.

The lock is ``<run>/.lock``, held with ``flock`` for as long as the training call runs. The kernel drops
the lock when its process ends in any way (even SIGKILL or a power cut), so a lock file left behind by a
dead process is stale: the next run notices that nobody holds it and takes it over. The file records the
holder's process id, host, start time and command, for the message a second process prints.
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from .errors import OutputExistsError, WriteError

LOCK_NAME = ".lock"
HOLDER_WAIT_SECONDS = 2.0  # how long a refused process waits for the holder to write who it is


class RunLock:
    """``with RunLock(folder):`` holds ``folder``'s lock (creating the folder); another holder raises
    :class:`OutputExistsError` naming it, and a folder that cannot be written raises :class:`WriteError`."""

    def __init__(self, folder: Path, log: Callable[[str], None] = print):
        self.path, self.log, self._fd = Path(folder) / LOCK_NAME, log, None

    def __enter__(self) -> "RunLock":
        import fcntl  # POSIX (Linux, macOS, Colab)

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            while self._fd is None:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _holder(fd)
                    os.close(fd)
                    raise OutputExistsError(
                        f"{self.path.parent} is in use by another training process ({holder or 'unknown'}); "
                        "wait for it to finish, or choose another --out (out_dir=...)") from None
                if _same_file(fd, self.path):
                    self._fd = fd
                else:  # the holder removed the file between our open and our lock: lock the new one
                    os.close(fd)
            stale = _read(self._fd)
            if stale:
                self.log(f"note: {self.path} was left by a process that is no longer running ({stale}); taking it over")
            os.ftruncate(self._fd, 0)
            # Writing, not only creating, finds a full disk or a read-only folder before any data is loaded.
            os.pwrite(self._fd, _describe_self().encode(errors="backslashreplace"), 0)
        except OSError as err:
            self.__exit__()
            raise WriteError(self.path.parent, f"{err.strerror or err}; choose another --out if it is not a folder "
                             "you can write to") from None
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                # Before closing, so a waiting process locks a fresh file; only our own file, as the folder may
                # have been removed and another process may hold a new lock at this path.
                if _same_file(fd, self.path):
                    self.path.unlink(missing_ok=True)
            except OSError:
                pass  # a read-only folder keeps the file; the lock itself ends with the close
            finally:
                os.close(fd)


def _read(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode(errors="replace").strip()


def _holder(fd: int) -> str:
    """The holder's description. It writes it just after taking the lock, so a process refused in between
    reads an empty file: wait a moment for the description rather than name nobody."""
    deadline = time.monotonic() + HOLDER_WAIT_SECONDS
    while not (holder := _read(fd)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return holder


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _describe_self() -> str:
    started = datetime.datetime.now().isoformat(timespec="seconds")
    return f"pid {os.getpid()} on {socket.gethostname()}, started {started}: {' '.join(sys.argv)}"

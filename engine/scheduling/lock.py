"""The scheduler lock: exactly one process per database runs jobs and the dispatcher.

On SQLite it is an flock on a file beside the database, which the kernel releases when
the holder dies, kill -9 included, so another process can take over.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["SchedulerLock"]


class SchedulerLock:
    def __init__(self, path: Path | None) -> None:
        # No file (an in-memory database): this process is alone by construction.
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None or self.path is None

    def try_acquire(self) -> bool:
        if self.held:
            return True
        assert self.path is not None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

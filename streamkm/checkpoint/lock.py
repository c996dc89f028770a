"""One writer per checkpoint directory: an exclusive flock, released by the kernel on death."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

__all__ = ["DirectoryLock", "LOCK_NAME"]

LOCK_NAME = ".worker.lock"


class DirectoryLock:
    """Exclusive, non-blocking lock on ``directory/.worker.lock`` holding the owner's pid.

    ``acquire()`` raises RuntimeError naming the holder's pid if another process has it;
    ``release()`` is idempotent.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / LOCK_NAME
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock (no-op if this object holds it)."""
        if self._fh is not None:
            return
        fh = open(self.path, "a+")  # noqa: SIM115 - kept open: closing it drops the flock
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise RuntimeError(
                f"checkpoint directory {self.path.parent} is in use by another worker "
                f"(pid {holder}); each worker needs its own checkpoint.dir"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases the flock)."""
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()

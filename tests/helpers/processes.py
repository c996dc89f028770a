"""`python -m streamkm run --config FILE` as a child process in its own process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["WorkerProcess", "term_all"]


class WorkerProcess:
    """One worker process; its output goes to *log*; ``fault`` sets ``STREAMKM_FAULT``.

    Killed by process group (never by name) on :meth:`kill` and on leaving a ``with`` block.
    """

    def __init__(self, config: Path, log: Path, fault: str | None = None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}
        if fault:
            env["STREAMKM_FAULT"] = fault
        self.log = log
        self._fh = open(log, "ab")
        self._log_start = self._fh.tell()  # the log is appended to across restarts
        self.proc = subprocess.Popen([sys.executable, "-m", "streamkm", "run", "--config", str(config)],
                                     stdout=self._fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_started(self, timeout: float = 60.0) -> None:
        """Until this process printed its first ``streamkm:`` line (its signal handlers are in
        place then): a SIGTERM during interpreter start-up kills it with -15, by design."""
        import time

        deadline = time.monotonic() + timeout
        while b"streamkm: " not in self.log.read_bytes()[self._log_start:]:
            if not self.alive() or time.monotonic() > deadline:
                raise AssertionError(f"worker did not start (exit {self.proc.poll()}); log:\n{self.tail()}")
            time.sleep(0.1)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"worker did not exit within {timeout}s; log:\n{self.tail()}") from None

    def tail(self) -> str:
        return self.log.read_bytes()[-4000:].decode("utf-8", "replace")

    def term(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait for the exit code (then make sure the group is gone)."""
        self.send_term()
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def send_term(self) -> None:
        """SIGTERM its process group, if it still runs; does not wait."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._fh.close()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def term_all(processes: list[WorkerProcess], timeout: float = 60.0) -> list[int]:
    """SIGTERM every process at once, then wait for each one's exit code (each within *timeout*).

    At once, not one after the other: in a consumer group every member that leaves makes the
    others rebalance, so a member told to stop only after the previous one exited first sits
    through that rebalance (seconds each, and nothing the test checks).
    """
    for p in processes:
        p.send_term()
    return [p.term(timeout) for p in processes]

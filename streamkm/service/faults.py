"""Fault injection for the kill/restart tests: SIGKILL this process at a named point."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

__all__ = ["FAULT_POINTS", "FaultHook", "fault_hook_from_env"]

#: Worker-level fault points (the CheckpointStore adds its own).
FAULT_POINTS = ("after_update", "after_checkpoint", "after_commit")

FaultHook = Callable[[str], None]


def fault_hook_from_env(spec: str | None) -> FaultHook | None:
    """``STREAMKM_FAULT="point[:n]"``: SIGKILL this process the n-th time *point* is hit."""
    if not spec:
        return None
    point, _, n = spec.partition(":")
    remaining = [int(n) if n else 1]

    def hook(p: str) -> None:
        if p == point:
            remaining[0] -= 1
            if remaining[0] <= 0:
                os.kill(os.getpid(), signal.SIGKILL)

    return hook

"""Starting and stopping aiokafka clients: bounded start-up, quiet best-effort close."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["start_client", "stop_quietly", "really_cancelled"]

log = logging.getLogger("streamkm.kafka")


def really_cancelled() -> bool:
    """True if the current task itself is being cancelled (not a stray CancelledError)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def start_client(client: Any, timeout: float) -> None:
    """``await client.start()`` within *timeout* seconds; stop it again if that fails."""
    try:
        await asyncio.wait_for(client.start(), timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            await client.stop()
        raise


@contextlib.asynccontextmanager
async def _quietly(what: str) -> AsyncIterator[None]:
    try:
        yield
    except asyncio.CancelledError:
        if really_cancelled():
            raise
        log.debug("%s: ignored internal cancellation", what)
    except Exception as exc:
        log.debug("%s failed: %s: %s", what, type(exc).__name__, exc)


async def stop_quietly(client: Any, what: str, timeout: float = 5.0) -> None:
    """Best-effort ``client.stop()``: errors are ignored. aiokafka's stop() can raise a
    CancelledError of its own internal tasks when the broker is gone; only a
    cancellation of *this* task propagates."""
    async with _quietly(what):
        await asyncio.wait_for(client.stop(), timeout)

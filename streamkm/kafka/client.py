"""Starting and stopping aiokafka clients: bounded start-up, quiet best-effort close."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

__all__ = ["getmany_unless", "start_client", "stop_quietly", "really_cancelled", "unless_stopped"]

log = logging.getLogger("streamkm.kafka")

T = TypeVar("T")


def really_cancelled() -> bool:
    """True if the current task itself is being cancelled (not a stray CancelledError)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def start_client(client: Any, timeout: float) -> None:
    """``await client.start()`` within *timeout* seconds; stop it again if that fails."""
    try:
        await asyncio.wait_for(client.start(), timeout)
    except BaseException:
        await stop_quietly(client, "stop after a failed start")
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
    """Best-effort ``client.stop()`` within *timeout* seconds: errors are ignored. aiokafka's
    stop() can raise a CancelledError of its own internal tasks when the broker is gone; only a
    cancellation of *this* task propagates.

    The bound is hard: a consumer's stop() waits for its group coordination, which can sit in
    a JoinGroup request the broker holds until the rebalance ends (or the request times out),
    and a cancelled stop() can keep waiting for it. After *timeout* it is left to finish in the
    background (cancelled, its outcome ignored) rather than waited for.
    """
    async with _quietly(what):
        task = asyncio.ensure_future(client.stop())
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            task.cancel()
            task.add_done_callback(_ignore_outcome)
            raise
        if not done:
            task.cancel()
            task.add_done_callback(_ignore_outcome)
            log.info("%s: not done after %.0fs; left to finish in the background", what, timeout)
            return
        task.result()


def _ignore_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" warning


async def unless_stopped(aw: Awaitable[T], stop: asyncio.Event, *, grace: float = 5.0) -> tuple[bool, T | None]:
    """Await *aw*, abandoning it once *stop* is set: ``(True, result)``, or ``(False, None)``
    when stopped first (it is then cancelled and given *grace* seconds to unwind, after which it
    is left to finish in the background, its outcome ignored).

    For calls that can wait on the group for as long as a rebalance lasts (a consumer's start
    joins the group; ``getmany`` waits for the next assignment): a shutdown must not.
    """
    task = asyncio.ensure_future(aw)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_ignore_outcome)
        raise
    finally:
        stopper.cancel()
    if task.done():
        return True, task.result()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=grace)
    task.add_done_callback(_ignore_outcome)
    if not done:
        log.info("abandoned call still unwinding after %.0fs; left to finish in the background", grace)
    return False, None


async def getmany_unless(consumer: Any, stop: asyncio.Event, **kwargs: Any) -> dict[Any, list[Any]] | None:
    """``consumer.getmany(**kwargs)``, abandoned once *stop* is set (None then).

    aiokafka's ``getmany`` waits without a timeout while a rebalance is in progress (its
    fetcher waits for the next assignment), which can last until every member has rejoined;
    a shutdown must not wait for that. Abandoning the call loses nothing: records are handed
    out synchronously, so a cancelled call has handed out none (positions unchanged).
    """
    if stop.is_set():
        return None
    ok, got = await unless_stopped(consumer.getmany(**kwargs), stop)
    return got if ok else None

"""Bounded client calls: a stop request abandons a fetch or a start that a rebalance holds."""

from __future__ import annotations

import asyncio
import time

import pytest

from streamkm.kafka.client import getmany_unless, stop_quietly, unless_stopped


class _Held:
    """A consumer whose getmany / stop wait like aiokafka's while a rebalance is in progress,
    and which keeps waiting for a while when cancelled (as its coordination task does)."""

    def __init__(self, stop_unwind: float = 0.0) -> None:
        self.calls = 0
        self.cancelled = 0
        self.stop_unwind = stop_unwind

    async def getmany(self, **kwargs):
        self.calls += 1
        try:
            await asyncio.Event().wait()  # the next assignment never comes
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def stop(self):
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(self.stop_unwind)  # a cancelled stop keeps waiting for its request
            raise


def test_a_held_getmany_is_abandoned_when_the_stop_is_requested():
    async def main():
        consumer, stop = _Held(), asyncio.Event()
        asyncio.get_running_loop().call_later(0.2, stop.set)
        t0 = time.monotonic()
        got = await getmany_unless(consumer, stop, timeout_ms=100)
        return got, time.monotonic() - t0, consumer

    got, elapsed, consumer = asyncio.run(main())
    assert got is None and elapsed < 2.0
    assert consumer.calls == 1 and consumer.cancelled == 1


def test_getmany_unless_returns_the_batch_and_does_not_fetch_once_stopped():
    class Ready:
        calls = 0

        async def getmany(self, **kwargs):
            self.calls += 1
            return {"tp": [1, 2]}

    async def main():
        c, stop = Ready(), asyncio.Event()
        first = await getmany_unless(c, stop, timeout_ms=10)
        stop.set()
        second = await getmany_unless(c, stop, timeout_ms=10)
        return first, second, c.calls

    assert asyncio.run(main()) == ({"tp": [1, 2]}, None, 1)


def test_unless_stopped_passes_errors_through():
    async def boom():
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        asyncio.run(unless_stopped(boom(), asyncio.Event()))


def test_stop_quietly_is_a_hard_bound_even_when_cancellation_is_slow():
    """asyncio.wait_for would wait for the cancelled stop() to unwind (here 30 s)."""
    async def main():
        t0 = time.monotonic()
        await stop_quietly(_Held(stop_unwind=30.0), "held consumer", timeout=0.3)
        return time.monotonic() - t0

    assert asyncio.run(main()) < 2.0


def test_a_cancelled_caller_cancels_the_abandoned_call():
    async def main():
        consumer, stop = _Held(), asyncio.Event()
        task = asyncio.ensure_future(getmany_unless(consumer, stop, timeout_ms=100))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        return consumer

    assert asyncio.run(main()).cancelled == 1

"""Checkpoint then commit: a failing checkpoint disk is retried with backoff, logged once, and blocks readiness."""

import asyncio
import logging

import pytest
from aiokafka import TopicPartition

from streamkm.ops.metrics import Metrics
from streamkm.service.durability import Durability


class FlakyStore:
    """A CheckpointStore stand-in whose save fails while ``failing`` is set."""

    def __init__(self):
        self.failing = False
        self.saved = 0

    def save(self, state):
        if self.failing:
            raise OSError(28, "No space left on device")
        self.saved += 1
        from types import SimpleNamespace

        return SimpleNamespace(sequence=self.saved, size_bytes=10)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def failures(m):
    return m.registry.get_sample_value("streamkm_checkpoint_failures_total")


def test_failing_checkpoints_back_off_log_once_and_recover_once(caplog):
    store, m, clock = FlakyStore(), Metrics(), Clock()
    d = Durability(store, m, commit_timeout=1.0, backoff_initial=0.5, backoff_max=4.0, clock=clock)
    state = {"offsets": {}}
    assert not d.blocked and not d.in_backoff()
    store.failing = True
    with caplog.at_level(logging.DEBUG, logger="streamkm.worker"):
        attempts = 0
        waits = []
        for _ in range(6):
            assert asyncio.run(d.checkpoint(state, "interval")) is None
            attempts += 1
            assert d.blocked and d.in_backoff()
            start = clock.t
            while d.in_backoff():
                clock.t += 0.25
            waits.append(clock.t - start)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "No space left on device" in errors[0].getMessage()
        assert not errors[0].exc_info  # a disk error explains itself: no traceback
        assert failures(m) == attempts == d.n_failed_attempts
        assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]  # exponential, capped
        store.failing = False
        info = asyncio.run(d.checkpoint(state, "interval"))
        assert info is not None and not d.blocked and not d.in_backoff()
        recovered = [r for r in caplog.records if "recovered" in r.getMessage()]
        assert len(recovered) == 1 and "6 failed attempt(s)" in recovered[0].getMessage()
    # the next failure starts again from the initial backoff and is logged again
    store.failing = True
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="streamkm.worker"):
        asyncio.run(d.checkpoint(state, "interval"))
    assert len(caplog.records) == 1
    start = clock.t
    while d.in_backoff():
        clock.t += 0.25
    assert clock.t - start == 0.5


def test_an_unexpected_error_keeps_its_traceback(caplog):
    class Broken(FlakyStore):
        def save(self, state):
            raise TypeError("bug")

    d = Durability(Broken(), Metrics(), commit_timeout=1.0)
    with caplog.at_level(logging.ERROR, logger="streamkm.worker"):
        asyncio.run(d.checkpoint({"offsets": {}}, "interval"))
    assert caplog.records[0].exc_info


class Consumer:
    def __init__(self, fail):
        self.fail = fail

    async def commit(self, offsets):
        if self.fail:
            raise RuntimeError("coordinator gone")


@pytest.mark.parametrize("known", [True, False])
def test_failed_commits_block_until_one_succeeds(known):
    m = Metrics()
    d = Durability(FlakyStore(), m, commit_timeout=1.0)
    offs = {TopicPartition("t", 0): 5}
    ok = asyncio.run(d.commit(Consumer(fail=True), offs, "interval", coordinator_known=lambda: known))
    assert not ok and d.blocked
    assert m.registry.get_sample_value("streamkm_commit_failures_total") == 1
    assert asyncio.run(d.commit(Consumer(fail=False), offs, "interval", coordinator_known=lambda: True))
    assert not d.blocked

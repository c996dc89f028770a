"""Rebalances never resume a partition below what the worker's model reflects (issue 9, part 2).

Unit level, with a stand-in consumer (committed offsets and seeks only): the broker-facing
paths are covered end to end in test_e2e.py and test_checkpoint_fallback.py.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from streamkm.config import load_settings
from streamkm.service.worker import Worker

T = "in"
P0, P1, P2 = (TopicPartition(T, p) for p in range(3))


class Consumer:
    """committed() from a dict, seek() recorded."""

    def __init__(self, committed: dict[TopicPartition, int | None]):
        self._committed = committed
        self.seeks: dict[TopicPartition, int] = {}

    async def committed(self, tp):
        return self._committed.get(tp)

    def seek(self, tp, offset):
        self.seeks[tp] = offset

    async def beginning_offsets(self, tps):
        return {tp: 0 for tp in tps}


def _worker(tmp_path) -> Worker:
    s = load_settings(env={"STREAMKM_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9", "STREAMKM_GROUP__ENABLED": "false",
                           "STREAMKM_KAFKA__VECTORS_TOPIC": T,
                           "STREAMKM_CHECKPOINT__DIR": str(tmp_path / "ckpt"), "STREAMKM_DLQ__TOPIC": "",
                           "STREAMKM_METRICS__ENABLED": "false"})
    return Worker(s)


def test_restored_offsets_of_partitions_missing_from_the_first_assignment_are_kept(tmp_path):
    """Before: a worker restored {0: 100, 1: 200, 2: 300}, was first assigned only partition 0 and
    forgot the rest; given them later with nothing committed, it re-read 0..299 into a model
    that already held them."""
    w = _worker(tmp_path)
    w.book.restore({f"{T}:0": 100, f"{T}:1": 200, f"{T}:2": 300}, [T])

    async def go():
        c = Consumer({})
        await w._on_assigned({P0}, c)
        assert c.seeks == {P0: 100}
        c = Consumer({P0: 150})  # partition 0 progressed meanwhile
        await w._on_assigned({P0, P1, P2}, c)
        return c.seeks

    assert asyncio.run(go()) == {P0: 150, P1: 200, P2: 300}


@pytest.mark.faults
def test_a_failed_revoke_rolls_the_model_back_to_the_last_durable_checkpoint(tmp_path):
    """Before (1): the revoke's checkpoint failed (disk trouble), the offsets were forgotten anyway,
    and the partition came back at an older committed offset: counted twice in one model.
    Before (2): the offsets were kept but so were the records, and a partition that moved to
    another member was re-read there from the commit: counted in two models (the soak found
    18,200 of 600,000). Now the model and the offsets go back to the last durable checkpoint."""
    import collections
    import copy

    import numpy as np

    from streamkm.codec import encode_json

    w = _worker(tmp_path)
    w.book.restore({f"{T}:0": 100, f"{T}:1": 200}, [T])
    w._durable = copy.deepcopy(w.state_dict())  # as restored from checkpoint at start
    pipe = w.pipelines["vectors"]
    pipe.init_metrics(w.metrics)
    seen_before = (int(pipe.model.n_seen_), pipe.n_pending)

    async def failing_checkpoint(state, reason):
        return None  # not durable

    w.durability.checkpoint = failing_checkpoint  # type: ignore[method-assign]
    Rec = collections.namedtuple("Rec", "topic partition offset key value headers timestamp")
    rng = np.random.default_rng(0)

    async def go():
        await w._on_assigned({P0, P1}, Consumer({}))
        recs = [Rec(T, 1, 200 + i, None, encode_json(rng.normal(size=4)), (), 0) for i in range(60)]
        pipe.process(recs)  # absorbed up to 259, never checkpointed
        w.book.next[P1] = 260
        w.durability.dirty = True
        assert (int(pipe.model.n_seen_), pipe.n_pending) != seen_before
        w._consumer = Consumer({})  # connected
        await w._on_revoked({P0, P1})
        c = Consumer({P1: 200})  # the last commit
        await w._on_assigned({P0, P1}, c)
        return c.seeks

    seeks = asyncio.run(go())
    assert (int(pipe.model.n_seen_), pipe.n_pending) == seen_before, "the model holds none of 200..259"
    assert seeks == {P0: 100, P1: 200}, "they are re-read, once"
    assert w.metrics.model_rollbacks._value.get() == 1


def test_another_members_progress_is_still_skipped(tmp_path):
    """Without a fallback, a committed offset beyond the worker's own is another member's work."""
    w = _worker(tmp_path)
    w.book.restore({f"{T}:0": 100}, [T])
    c = Consumer({P0: 400})
    asyncio.run(w._on_assigned({P0}, c))
    assert c.seeks == {P0: 400}


class FailingStart(Consumer):
    async def beginning_offsets(self, tps):
        raise TimeoutError("ListOffsets timed out")


def test_a_pending_reread_survives_a_restart_before_the_partition_is_assigned(tmp_path):
    """A worker that fell back and stopped before its partitions were assigned (broker down,
    SIGTERM) checkpoints the pending re-read; the next start honours it."""
    w = _worker(tmp_path)
    w.book.restore({f"{T}:0": 100}, [T])
    w._reread = {"offsets": {f"{T}:0": 100}, "from_start": True}
    state = w.state_dict()
    assert state["reread_pending"] == {"offsets": {f"{T}:0": 100}, "from_start": True}

    again = _worker(tmp_path / "again")
    again._load_state(state)
    c = Consumer({P0: 150, P1: 40})  # commits made after the lost checkpoint
    asyncio.run(again._on_assigned({P0, P1}, c))
    assert c.seeks == {P0: 100, P1: 0}, "own offset for 0; log start for 1 (the model has nothing of it)"
    assert again._reread is None and "reread_pending" not in again.state_dict()
    c = Consumer({P0: 150})
    asyncio.run(again._on_assigned({P0}, c))
    assert c.seeks == {P0: 150}, "re-read once only"


def test_a_failed_log_start_lookup_does_not_abort_the_assignment(tmp_path):
    w = _worker(tmp_path)
    w._reread = {"offsets": {}, "from_start": True}
    c = FailingStart({P0: 70})
    asyncio.run(w._on_assigned({P0, P1}, c))
    assert w.book.assigned == {P0, P1}, "the assignment completes"
    assert c.seeks == {P0: 70}, "the normal rule where the log start is unknown (P1: the reset policy)"
    assert w._reread is None


class Retained(Consumer):
    """The log of partition 1 starts at 500: retention deleted offsets 0..499."""

    def __init__(self, committed, starts):
        super().__init__(committed)
        self.starts = starts
        self.paused: set[TopicPartition] = set()

    async def beginning_offsets(self, tps):
        return {tp: self.starts.get(tp, 0) for tp in tps}

    def pause(self, *tps):
        self.paused.update(tps)


def test_a_partition_whose_records_were_deleted_stops_the_worker_by_default(tmp_path):
    """Before: the seek below the log start was reset by aiokafka to a new position, silently."""
    from streamkm.service.offsets import OffsetsLostError

    w = _worker(tmp_path)
    w.book.restore({f"{T}:0": 100, f"{T}:1": 200}, [T])
    c = Retained({}, {P1: 500})
    asyncio.run(w._on_assigned({P0, P1}, c))
    assert c.seeks == {P0: 100} and c.paused == {P1}
    err = w._offsets_lost
    assert isinstance(err, OffsetsLostError) and err.lost == {P1: (200, 500)}
    assert "in:1 needs offset 200 but the log starts at 500 (300 records deleted)" in str(err)
    assert "kafka.on_offsets_lost" in str(err)
    assert w.book.next[P1] == 200, "the model's offset is kept (a restart with longer retention is exact)"

    async def loop():
        w._consumer = c
        await w._consume_loop()



    with pytest.raises(OffsetsLostError):
        asyncio.run(loop())


def test_on_offsets_lost_skip_resumes_at_the_log_start_and_counts_them(tmp_path):
    s = load_settings(env={"STREAMKM_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9", "STREAMKM_GROUP__ENABLED": "false",
                           "STREAMKM_KAFKA__VECTORS_TOPIC": T,
                           "STREAMKM_CHECKPOINT__DIR": str(tmp_path / "ckpt"), "STREAMKM_DLQ__TOPIC": "",
                           "STREAMKM_METRICS__ENABLED": "false", "STREAMKM_KAFKA__ON_OFFSETS_LOST": "skip"})
    w = Worker(s)
    w.book.restore({f"{T}:0": 100, f"{T}:1": 200}, [T])
    c = Retained({P1: 250}, {P1: 500})
    asyncio.run(w._on_assigned({P0, P1}, c))
    assert c.seeks == {P0: 100, P1: 500} and not c.paused and w._offsets_lost is None
    assert w.metrics.records_lost._value.get() == 250  # from the commit at 250 (max of own and committed)

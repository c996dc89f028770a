"""The group worker in-process on the real broker: poison on its topics, and settings that do not fit the model."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from streamkm.codec import encode_json
from streamkm.config import load_settings
from streamkm.group.wire import encode
from streamkm.kafka.embedded import create_topics
from streamkm.service.group import GroupConfigError, GroupWorker
from tests.helpers.e2e import produce, unique_name

pytestmark = pytest.mark.broker

N = 1_200


def _settings(broker: str, topic: str, group: str, **extra: str | None):
    env = {"STREAMKM_KAFKA__BOOTSTRAP_SERVERS": broker, "STREAMKM_KAFKA__VECTORS_TOPIC": topic,
           "STREAMKM_KAFKA__GROUP_ID": group, "STREAMKM_KAFKA__SESSION_TIMEOUT_MS": "3000",
           "STREAMKM_KAFKA__HEARTBEAT_INTERVAL_MS": "300", "STREAMKM_KAFKA__FETCH_TIMEOUT_MS": "100",
           "STREAMKM_GROUP__ENABLED": "true", "STREAMKM_GROUP__CHUNK_ROWS": "100", "STREAMKM_INPUT__DIMENSION": "3",
           "STREAMKM_MODEL__N_CLUSTERS": "3", "STREAMKM_MODEL__DYING_THRESHOLD": "0",
           "STREAMKM_DRIFT__ENABLED": "false",
           "STREAMKM_DLQ__TOPIC": "", "STREAMKM_METRICS__ENABLED": "false", **extra}
    return load_settings(env={k: v for k, v in env.items() if v is not None})


async def _run_until(worker: GroupWorker, n: int, timeout: float = 60.0) -> None:
    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            v = worker.version
            if v is not None and v.n_seen >= n:
                return
            if task.done():
                task.result()
            await asyncio.sleep(0.1)
        raise AssertionError(f"model at {worker.version and worker.version.n_seen} of {n} points")
    finally:
        await worker.stop()
        await asyncio.gather(task, return_exceptions=True)


def _records(seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, 3)) + rng.integers(3, size=(N, 1)) * 30
    return [(None, encode_json(x)) for x in X]


def test_poison_on_the_model_and_stats_topics_is_counted_and_skipped(broker, make_topic):
    topic, group = make_topic("in", 2), unique_name("g")
    # The last round waits for the partition whose records ran out first: an idle declaration
    # (30 s by default) ends it, and what the test checks does not depend on when.
    s = _settings(broker, topic, group, STREAMKM_GROUP__IDLE_PARTITION_SECONDS="2")
    asyncio.run(create_topics(broker, {s.group_stats_topic: 1, s.group_model_topic: 1}))
    garbage = [b"not a message", encode("model_version", {"pipeline": "vectors", "version": "x"}),
               encode("model_version", {"pipeline": "vectors", "summary": {"n_reseeds": "x"}}), b"SKMG\x01junk"]
    asyncio.run(produce(broker, s.group_model_topic, [(b"vectors", g) for g in garbage]
                        + [(b"vectors#snapshot", b"not a snapshot")]))
    asyncio.run(produce(broker, s.group_stats_topic, [(b"vectors", g) for g in garbage], partition=0))
    asyncio.run(produce(broker, topic, _records()))
    worker = GroupWorker(s)
    asyncio.run(_run_until(worker, N))
    v = worker.version
    assert v is not None and v.n_seen == N and float(v.weights.sum()) == N
    assert v.counters["invalid"] == len(garbage)  # the stats-topic garbage, counted and skipped
    assert worker.follower.n_invalid >= 3  # the model-topic garbage (the bad snapshot is never needed)


def test_a_model_made_with_other_settings_is_refused(broker, make_topic):
    topic, group = make_topic("in", 1), unique_name("g")
    asyncio.run(produce(broker, topic, _records(1)))
    asyncio.run(_run_until(GroupWorker(_settings(broker, topic, group)), N))
    other = GroupWorker(_settings(broker, topic, group, STREAMKM_MODEL__N_CLUSTERS="5"))

    async def run_other() -> None:
        await asyncio.wait_for(other.run(), 60)

    with pytest.raises(GroupConfigError, match="other model settings"):
        asyncio.run(run_other())


def test_group_mode_needs_a_fixed_dimension(broker):
    """With brokers of one's own: 'run' refuses it (run_problems), and so does a GroupWorker."""
    s = _settings(broker, "t", "g", STREAMKM_INPUT__DIMENSION=None)
    assert [k for k, _ in s.run_problems()] == ["input.dimension"]
    assert "required when group.enabled" in s.run_problems()[0][1]
    with pytest.raises(ValueError, match="input.dimension: required on the group model"):
        GroupWorker(s)


def test_a_member_started_before_its_broker_retries_until_it_answers(tmp_path, caplog):
    """A pod may start before the broker: the member retries with backoff, saying why, and once
    the broker answers it folds every record and exports its lag (0, caught up) by consumer group."""
    import logging

    from streamkm.kafka.embedded import EmbeddedBroker, free_port

    port = free_port()
    address = f"127.0.0.1:{port}"
    group = unique_name("g")
    s = _settings(address, "late-in", group, STREAMKM_WORKER__RETRY_BACKOFF_INITIAL_SECONDS="0.2",
                  STREAMKM_WORKER__RETRY_BACKOFF_MAX_SECONDS="0.5")

    async def scenario() -> GroupWorker:
        worker = GroupWorker(s, bootstrap_servers=address)
        task = asyncio.create_task(worker.run())
        try:
            deadline = time.monotonic() + 30
            while worker.metrics.registry.get_sample_value("streamkm_broker_errors_total") in (None, 0.0, 1.0):
                assert not task.done() and time.monotonic() < deadline, "no retry before the broker came up"
                await asyncio.sleep(0.1)
            async with EmbeddedBroker(port=port, startup_timeout=30.0) as broker:
                await create_topics(broker.bootstrap_servers, {"late-in": 2})
                recs = _records(1)
                await produce(broker.bootstrap_servers, "late-in", recs[::2], partition=0)
                await produce(broker.bootstrap_servers, "late-in", recs[1::2], partition=1)
                deadline = time.monotonic() + 60
                while worker.version is None or worker.version.n_seen < N:
                    if task.done():
                        task.result()
                    assert time.monotonic() < deadline, f"model at {worker.version and worker.version.n_seen}"
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.3)  # one more fetch reports the lag of the caught-up partitions
                for p in (0, 1):
                    lag = worker.metrics.registry.get_sample_value(
                        "streamkm_consumer_lag_records", {"consumergroup": group, "topic": "late-in",
                                                          "partition": str(p)})
                    assert lag == 0.0, (p, lag)
                await worker.stop()
                await asyncio.wait_for(task, 30)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        return worker

    with caplog.at_level(logging.WARNING, logger="streamkm"):
        worker = asyncio.run(scenario())
    assert worker.version is not None and worker.version.n_seen == N
    retries = [r for r in caplog.records if "broker unreachable or failing" in r.getMessage()]
    assert len(retries) >= 2 and "retrying in" in retries[0].getMessage()


def test_rounds_pause_only_the_partitions_that_used_their_budget():
    """A partition far ahead waits for its round; the one the round waits for is never held up."""
    from aiokafka import TopicPartition

    from streamkm.config import load_settings
    from streamkm.service.group import GroupWorker, _InFlight

    s = load_settings(env={"STREAMKM_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9", "STREAMKM_GROUP__ENABLED": "true",
                           "STREAMKM_INPUT__DIMENSION": "2"})
    w = GroupWorker(s)

    class Consumer:
        def __init__(self):
            self.paused: set = set()

        def pause(self, tp):
            self.paused.add(tp)

        def resume(self, tp):
            self.paused.discard(tp)

    w._consumer = Consumer()
    p0, p1 = TopicPartition("in", 0), TopicPartition("in", 1)
    w._assigned = {p0, p1}
    w._pos = {p0: 0, p1: 0}
    w._in_flight = [_InFlight(i, p0, 10 * (i + 1)) for i in range(3)]
    assert w._throttle(3) is False and w._consumer.paused == {p0}
    w._in_flight += [_InFlight(10 + i, p1, 10 * (i + 1)) for i in range(3)]
    assert w._throttle(3) is True and w._consumer.paused == {p0, p1}
    w._in_flight = w._in_flight[3:]  # p0's chunks were folded
    assert w._throttle(3) is False and w._consumer.paused == {p1}


def _member_at(offset: int, log_start: int, **env: str):
    """A GroupWorker syncing partition in:0, which the model resumes at *offset*, on a broker whose
    log of it starts at *log_start* (stand-ins for the consumer and the follower)."""
    import dataclasses

    from aiokafka import TopicPartition

    from streamkm.service.group import new_group_model

    s = load_settings(env={"STREAMKM_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9", "STREAMKM_GROUP__ENABLED": "true",
                           "STREAMKM_INPUT__DIMENSION": "2", "STREAMKM_KAFKA__VECTORS_TOPIC": "in",
                           "STREAMKM_METRICS__ENABLED": "false", **env})
    w = GroupWorker(s)
    tp = TopicPartition("in", 0)

    class Consumer:
        def __init__(self):
            self.seeks: dict = {}

        async def beginning_offsets(self, tps):
            return {t: log_start for t in tps}

        def seek(self, t, off):
            self.seeks[t] = off

        def resume(self, t):
            pass

    class Follower:
        caught_up = asyncio.Event()
        resumes: dict = {}

    v = new_group_model(s, "vectors").version()
    Follower.latest = {"vectors": dataclasses.replace(v, offsets={"in:0": offset}, queued={"in:0": offset})}
    Follower.caught_up.set()
    w.follower = Follower()  # type: ignore[assignment]
    w._consumer = Consumer()
    w._assigned = {tp}
    w._syncing = {tp: (None, time.monotonic() + 30)}
    sent: list = []

    async def send(lane, res):
        sent.append(res)

    w._send = send  # type: ignore[method-assign]
    return w, tp, sent


def test_rounds_release_the_budget_of_folded_chunks_behind_another_partitions_queue():
    """Rounds: p0 is far ahead (its chunk at stats offset 2 waits for a round), p1's two chunks
    were folded. The model's stats_offset stops before p0's queued chunk; p1's chunks must still
    leave p1's budget, or p1 stays paused, no round can complete, and the group stalls until the
    idle rule fires (found in bench_group with group.max_in_flight = 8)."""
    import dataclasses

    from aiokafka import TopicPartition

    from streamkm.service.group import _InFlight, new_group_model

    s = load_settings(env={"STREAMKM_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9", "STREAMKM_GROUP__ENABLED": "true",
                           "STREAMKM_INPUT__DIMENSION": "2", "STREAMKM_KAFKA__VECTORS_TOPIC": "in",
                           "STREAMKM_METRICS__ENABLED": "false", "STREAMKM_GROUP__ORDERING": "rounds"})
    w = GroupWorker(s)
    asyncio.run(w.start())  # the metrics
    p0, p1 = TopicPartition("in", 0), TopicPartition("in", 1)

    class Consumer:
        paused: set = set()

        def pause(self, tp):
            self.paused.add(tp)

        def resume(self, tp):
            self.paused.discard(tp)

    w._consumer = Consumer()
    w._assigned = {p0, p1}
    w._pos = {p0: 30, p1: 20}
    # stats log: p0 [0,10) @0, [10,20) @1, [20,30) @2; p1 [0,10) @3, [10,20) @4
    w._in_flight = [_InFlight(0, p0, 10), _InFlight(1, p0, 20), _InFlight(2, p0, 30),
                    _InFlight(3, p1, 10), _InFlight(4, p1, 20)]
    assert w._throttle(2) is True and w._consumer.paused == {p0, p1}
    v = new_group_model(s, "vectors").version()
    # two rounds folded (p0@0 + p1@3, p0@1 + p1@4); p0@2 waits: stats_offset is 1, read_to 4
    v = dataclasses.replace(v, version=2, stats_offset=1, read_to=4, waiting=[2],
                            offsets={"in:0": 20, "in:1": 20}, queued={"in:0": 30, "in:1": 20})

    class Follower:
        latest = {"vectors": v}

    w.follower = Follower()  # type: ignore[assignment]
    w._apply_version()
    assert [(f.tp.partition, f.stats_offset) for f in w._in_flight] == [(0, 2)]
    assert w._throttle(2) is False and w._consumer.paused == set(), "p1's budget is free again"


def test_a_partition_whose_records_were_deleted_stops_the_group_member():
    from streamkm.service.offsets import OffsetsLostError

    w, tp, sent = _member_at(200, 500)
    with pytest.raises(OffsetsLostError, match=r"in:0 needs offset 200 but the log starts at 500 \(300 records"):
        asyncio.run(w._sync())
    assert tp not in w._pos and not sent, "nothing read, nothing sent"


def test_on_offsets_lost_skip_moves_the_group_models_offset_with_an_empty_chunk():
    w, tp, sent = _member_at(200, 500, STREAMKM_KAFKA__ON_OFFSETS_LOST="skip")
    asyncio.run(w._sync())
    assert w._consumer.seeks == {tp: 500} and w._pos[tp] == 500
    (res,) = sent
    (st,) = res.stats
    assert (st.first_offset, st.end_offset, st.rows.shape[0], st.n_records) == (200, 500, 0, 300)
    assert w.metrics.records_lost._value.get() == 300
    w2, tp2, sent2 = _member_at(600, 500)  # nothing deleted that the model needs
    asyncio.run(w2._sync())
    assert w2._consumer.seeks == {tp2: 600} and not sent2


def test_stats_are_pipelined_acknowledged_in_order_and_resent_from_the_first_failure():
    """Statistics are queued without waiting (the loop goes on fetching), count against the
    budget before their acknowledgement, enter the in-flight list only once acknowledged, in send
    order; a failed send is resent with everything sent after it, in order; a partition realigned
    meanwhile does not count its old chunks in flight."""
    from aiokafka import TopicPartition
    from aiokafka.errors import KafkaTimeoutError

    from streamkm.config import load_settings
    from streamkm.group import ChunkStats
    from streamkm.pipeline import BatchResult
    from streamkm.service.group import GroupWorker

    s = load_settings(env={"STREAMKM_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9", "STREAMKM_GROUP__ENABLED": "true",
                           "STREAMKM_INPUT__DIMENSION": "2", "STREAMKM_DLQ__TOPIC": ""})
    w = GroupWorker(s)
    lane = w.lanes["vectors"]
    e = np.empty(0, dtype=np.int64)

    def chunk(partition: int, first: int) -> ChunkStats:
        return ChunkStats("vectors", lane.topic, partition, first, first + 10, 0, 10, e, e, np.empty((0, 2)),
                          np.empty(0), np.empty((0, 2), np.float32), np.ones((10, 2), np.float32))

    class Md:
        def __init__(self, offset):
            self.offset = offset

    class Producer:
        """Futures resolved by the test; the log gets what was acknowledged, in that order."""

        def __init__(self):
            self.log: list[bytes] = []
            self.pending: list[tuple[asyncio.Future, bytes]] = []
            self.fail_next = 0

        async def send(self, topic, value, key=None, partition=None):
            fut = asyncio.get_running_loop().create_future()
            self.pending.append((fut, value))
            return fut

        def ack(self, n: int, *, fail: int | None = None) -> None:
            for i in range(n):
                fut, value = self.pending.pop(0)
                if i == fail:
                    fut.set_exception(KafkaTimeoutError())
                else:
                    self.log.append(value)
                    fut.set_result(Md(len(self.log) - 1))

        async def send_and_wait(self, topic, value, key=None, partition=None):
            self.log.append(value)
            return Md(len(self.log) - 1)

    async def main():
        await w.start()  # the metrics
        p = w.stats_producer = Producer()
        p0, p1 = TopicPartition(lane.topic, 0), TopicPartition(lane.topic, 1)
        w._assigned = {p0, p1}
        first = BatchResult(stats=[chunk(0, 0), chunk(0, 10), chunk(1, 0)])
        await w._send(lane, first)  # returns at once: nothing acknowledged yet
        assert len(p.pending) == 3 and w._in_flight == [] and w.n_sent == 0
        w._pos = {p0: 20, p1: 10}
        assert w._throttle(2) is False and p0 in w._throttled  # unacknowledged ones use the budget
        second = BatchResult(stats=[chunk(0, 20), chunk(1, 10)])
        await w._send(lane, second)
        p.ack(2)
        await w._ack_stats(wait=False)  # the first batch is not all acknowledged: nothing counted yet
        assert w._in_flight == []
        p.ack(3, fail=0)  # chunk(1, 0) fails; the second batch's two land after it
        w._epoch[p0] = 1  # p0 realigned meanwhile: its chunks no longer count in flight
        await w._ack_stats()
        assert not w._unacked and w.n_sent == 5
        # The log: what landed, then the failed one and everything after it resent in order.
        order = [(m.partition, m.first_offset) for m in map(ChunkStats.from_bytes, p.log)]
        assert order == [(0, 0), (0, 10), (0, 20), (1, 10), (1, 0), (0, 20), (1, 10)]
        assert [(f.tp.partition, f.stats_offset, f.end) for f in w._in_flight] == [(1, 4, 10), (1, 6, 20)]

    w._consumer = type("C", (), {"pause": lambda self, tp: None, "resume": lambda self, tp: None})()
    asyncio.run(main())


def test_a_prefetched_batch_drops_partitions_seeked_since_the_fetch_started():
    """The consume loop fetches the next batch while one is processed; a partition realigned,
    revoked or restarted meanwhile (its epoch moved) may hold records from before the seek: they
    are dropped and the partition is read again from where the member now resumes it."""
    from aiokafka import TopicPartition

    s = load_settings(env={"STREAMKM_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9", "STREAMKM_GROUP__ENABLED": "true",
                           "STREAMKM_INPUT__DIMENSION": "2", "STREAMKM_KAFKA__VECTORS_TOPIC": "in",
                           "STREAMKM_INPUT__FORMAT": "binary", "STREAMKM_METRICS__ENABLED": "false",
                           "STREAMKM_DLQ__TOPIC": ""})
    w = GroupWorker(s)
    asyncio.run(w.start())
    p0, p1 = TopicPartition("in", 0), TopicPartition("in", 1)

    class Consumer:
        seeks: dict = {}

        def seek(self, tp, off):
            self.seeks[tp] = off

    class Rec:
        def __init__(self, offset):
            self.offset, self.value, self.key, self.timestamp, self.headers = \
                offset, np.ones(2, "<f4").tobytes(), None, 0, ()
            self.topic, self.partition = "in", 0

    sent: list = []

    async def send(lane, res):
        sent.append(res)

    w._send = send  # type: ignore[method-assign]
    w._consumer = Consumer()
    w._assigned = {p0, p1}
    w._pos = {p0: 40, p1: 7}
    epochs = dict(w._epoch)
    w._epoch[p0] = w._epoch.get(p0, 0) + 1  # realigned to 40 while the fetch ran
    asyncio.run(w._process({p0: [Rec(100), Rec(101)], p1: [Rec(7), Rec(8)]}, epochs))
    assert w._consumer.seeks == {p0: 40} and w._pos[p0] == 40, "p0 read again from 40"
    assert w._pos[p1] == 9, "p1 is processed as fetched"


def test_a_model_ahead_of_the_acknowledgements_is_no_reason_to_realign():
    """A remote reducer may read a chunk from the log before this member has its acknowledgement:
    a version at the end of a chunk sent and not yet acknowledged is consistent (before: the
    member realigned, re-read the partition and delivered its outputs twice; found in review);
    a version at no end this member sent still realigns."""
    import dataclasses

    from aiokafka import TopicPartition

    from streamkm.service.group import _InFlight, _Unacked, new_group_model

    s = load_settings(env={"STREAMKM_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9", "STREAMKM_GROUP__ENABLED": "true",
                           "STREAMKM_INPUT__DIMENSION": "2", "STREAMKM_KAFKA__VECTORS_TOPIC": "in",
                           "STREAMKM_METRICS__ENABLED": "false", "STREAMKM_GROUP__ORDERING": "arrival"})

    class Consumer:
        seeks: dict = {}

        def seek(self, tp, off):
            self.seeks[tp] = off

        def pause(self, tp):
            pass

        def resume(self, tp):
            pass

    def member_at(model_next: int) -> GroupWorker:
        w = GroupWorker(s)
        asyncio.run(w.start())
        tp = TopicPartition("in", 0)
        w._consumer = Consumer()
        w._assigned, w._pos = {tp}, {tp: 30}
        lane = w.lanes["vectors"]
        lane.chunker.reset("in", 0, 30)
        w._in_flight = [_InFlight(0, tp, 10)]  # [0, 10) acknowledged at stats offset 0
        e = np.empty(0, dtype=np.int64)
        from streamkm.group import ChunkStats

        chunks = [ChunkStats("vectors", "in", 0, a, a + 10, 0, 10, e, e, np.empty((0, 2)), np.empty(0),
                             np.empty((0, 2), np.float32), np.ones((10, 2), np.float32)) for a in (10, 20)]
        w._unacked = [_Unacked(lane, chunks, [b"", b""], [], [0, 0])]  # [10, 20), [20, 30) on their way
        v = new_group_model(s, "vectors").version()
        v = dataclasses.replace(v, version=3, stats_offset=1, offsets={"in:0": model_next})

        class Follower:
            latest = {"vectors": v}

        w.follower = Follower()  # type: ignore[assignment]
        w._apply_version()
        return w

    assert member_at(20).n_realigned == 0, "the reducer folded [10, 20) before its acknowledgement came"
    assert member_at(30).n_realigned == 0
    w = member_at(15)
    assert w.n_realigned == 1 and w._consumer.seeks[next(iter(w._assigned))] == 15, "no chunk ends at 15"


def test_a_group_worker_without_input_dimension_is_refused():
    """Settings let the embedded demo through without a width ('streamkm run' fills it in); a
    GroupWorker built from such settings directly refuses to start rather than guess."""
    s = load_settings(env={"STREAMKM_GROUP__ENABLED": "true", "STREAMKM_METRICS__ENABLED": "false"})
    assert s.input.dimension is None
    with pytest.raises(ValueError, match="input.dimension: required on the group model"):
        GroupWorker(s, bootstrap_servers="127.0.0.1:9")

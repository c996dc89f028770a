"""Shared parts of the group-model end-to-end tests: member processes, a stream, the model topic."""

from __future__ import annotations

import asyncio

import numpy as np
from aiokafka import AIOKafkaProducer

from streamkm.codec import encode_json
from streamkm.group import ModelVersion, WireError
from streamkm.group.messages import KIND_VERSION
from streamkm.group.wire import decode
from tests.helpers.e2e import consume_all
from tests.helpers.processes import WorkerProcess

__all__ = ["K", "D", "Member", "make_stream", "trickle", "latest_version", "offline_fold", "wait_for_model",
           "wait_for_stats_end"]

K, D = 4, 4


#: A member of the group: one worker process.
Member = WorkerProcess


def make_stream(n_valid: int, n_bad: int, seed: int = 0):
    """JSON vectors of K far-apart blobs with *n_bad* malformed records mixed in; (records, key -> label)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(K, D)) * 40.0  # far apart: a stale version assigns like the newest
    labels = rng.integers(K, size=n_valid)
    X = (centers[labels] + rng.normal(size=(n_valid, D))).astype(np.float32)
    records = [(f"v{i}".encode(), encode_json(x)) for i, x in enumerate(X)]
    for j in range(n_bad):
        records.insert(int(rng.integers(len(records))), (f"bad{j}".encode(), b"{not json"))
    return records, {f"v{i}".encode(): int(lab) for i, lab in enumerate(labels)}


async def trickle(bootstrap: str, topic: str, records, seconds: float, *, slices: int = 40,
                  partitions: int | None = None) -> None:
    """Send *records* ((key, value) pairs) in *slices* over about *seconds*; with *partitions*,
    record i goes to partition i mod partitions (otherwise the key decides)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        step = -(-len(records) // slices)
        for i in range(0, len(records), step):
            futs = [await producer.send(topic, value=v, key=k,
                                        partition=None if partitions is None else (i + j) % partitions)
                    for j, (k, v) in enumerate(records[i:i + step])]
            await asyncio.gather(*futs)
            await asyncio.sleep(seconds / slices)
    finally:
        await producer.stop()


async def latest_version(bootstrap: str, topic: str) -> ModelVersion | None:
    latest = None
    for rec in await consume_all(bootstrap, topic, timeout=30):
        got = decode(rec.value)
        if isinstance(got, WireError) or got[0] != KIND_VERSION:
            continue
        v = ModelVersion.from_bytes(rec.value)
        assert not isinstance(v, WireError), v
        if latest is None or v.version > latest.version or (
                v.version == latest.version and v.stats_offset > latest.stats_offset):
            latest = v
    return latest


async def offline_fold(bootstrap: str, settings, model_factory, *, partitions: list[str] | None = None,
                       stats_partition: int = 0):
    """Fold the stats topic's *stats_partition* into ``model_factory()``; returns (model, accepted
    messages). In stats-log order (arrival ordering), or, with *partitions* (the source partition
    keys every round waits for), in rounds as a reducer does, idle markers included."""
    from streamkm.group import ChunkStats
    from streamkm.group.rounds import RoundFold

    g = model_factory()
    accepted = []
    recs = [r for r in await consume_all(bootstrap, settings.group_stats_topic, timeout=30)
            if r.partition == stats_partition]
    if partitions is not None:
        rf = RoundFold(g)
        rf.expect(partitions)
        for rec in recs:
            accepted += [o.msg for o in rf.offer_bytes(rec.value, rec.offset) if o.status == "accepted"]
        assert rf.queued == 0, f"{rf.queued} chunks still queued after the whole log: the live model folded them"
        return g, accepted
    for rec in recs:
        msg = ChunkStats.from_bytes(rec.value)
        assert not isinstance(msg, WireError), msg
        if g.fold(msg, rec.offset).status == "accepted":
            accepted.append(msg)
    return g, accepted


def wait_for_model(bootstrap: str, topic: str, n_points: int, timeout: float = 120.0):
    """Poll the model topic until a version has folded *n_points* points (or *timeout*); the newest version."""
    import time

    deadline = time.monotonic() + timeout
    v = None
    while time.monotonic() < deadline:
        v = asyncio.run(latest_version(bootstrap, topic))
        if v is not None and v.n_seen >= n_points:
            break
        time.sleep(0.5)
    return v


def wait_for_stats_end(bootstrap: str, settings, timeout: float = 60.0, *, stats_partition: int = 0) -> ModelVersion:
    """Wait for a version that has read the stats log (*stats_partition*) to its end as it is now
    (late or re-produced copies included: they are folded or dropped before it), and return it;
    fails after *timeout*."""
    import time

    stats_end = max(r.offset for r in asyncio.run(consume_all(bootstrap, settings.group_stats_topic, timeout=30))
                    if r.partition == stats_partition)
    deadline = time.monotonic() + timeout
    while (v := asyncio.run(latest_version(bootstrap, settings.group_model_topic))) is None \
            or v.stats_offset < stats_end:
        assert time.monotonic() < deadline, f"model at stats offset {v and v.stats_offset} of {stats_end}"
        time.sleep(0.5)
    return v

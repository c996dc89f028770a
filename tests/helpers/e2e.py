"""Plain helpers for the real-broker tests (imported by conftest and tests).

Everything is bounded in time: a broker that misbehaves makes a test fail
with a message, never hang.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

__all__ = [
    "unique_name",
    "produce",
    "consume_all",
    "committed_offsets",
    "end_offsets",
    "to_toml",
    "worker_config",
    "load_config",
    "wait_until",
]


def offline(X, kw, batch_rows):
    """Reference model: ``StreamingKMeans`` fed the worker's documented chunk
    schedule (first chunk max(batch_rows, init threshold) rows, then batch_rows,
    then the remainder)."""
    from streamkm.cluster import StreamingKMeans

    ref = StreamingKMeans(**kw)
    i = 0
    while i < len(X):
        n = batch_rows if ref.is_initialized_ else max(batch_rows, ref.init_threshold)
        ref.partial_fit(X[i:i + n])
        i += n
    return ref


def unique_name(prefix: str = "t") -> str:
    """A topic/group name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None] | tuple[bytes | None, bytes | None, Sequence]],
    *,
    partition: int | None = None,
    timeout: float = 30.0,
    **producer_kwargs,
) -> list:
    """Produce ``(key, value[, headers])`` records in order; return their metadata.

    With ``partition`` given every record goes there (keeps the order exact
    for single-partition determinism checks). ``producer_kwargs`` go to
    ``AIOKafkaProducer`` (e.g. ``max_request_size`` for large records).
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                **producer_kwargs)
    await asyncio.wait_for(producer.start(), timeout)
    try:
        futures = []
        for rec in records:
            key, value = rec[0], rec[1]
            headers = list(rec[2]) if len(rec) > 2 else None
            futures.append(
                await producer.send(topic, value=value, key=key, headers=headers, partition=partition)
            )
        return list(await asyncio.wait_for(asyncio.gather(*futures), timeout))
    finally:
        await producer.stop()


async def consume_all(
    bootstrap: str,
    topic: str,
    *,
    expected: int | None = None,
    timeout: float = 30.0,
    idle: float = 1.0,
) -> list:
    """Read *topic* from the beginning without a group.

    Stops when ``expected`` records arrived (then waits ``idle`` more seconds
    to catch extras), or, without ``expected``, once every partition reached
    its high watermark.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
        group_id=None,
    )
    await asyncio.wait_for(consumer.start(), timeout)
    try:
        partitions = await _partitions(consumer, topic, timeout)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list = []
        deadline = time.monotonic() + timeout
        quiet_until = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                out.extend(recs)
            if expected is None:
                hws = {tp: consumer.highwater(tp) for tp in tps}
                positions = {tp: await consumer.position(tp) for tp in tps}
                if all(hws[tp] is not None and positions[tp] >= hws[tp] for tp in tps):
                    break
            elif len(out) >= expected:
                if quiet_until is None:
                    quiet_until = time.monotonic() + idle
                elif time.monotonic() >= quiet_until:
                    break
        return out
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return sorted(parts)
        await consumer._client.force_metadata_update()  # noqa: SLF001 (aiokafka has no public form)
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic!r} has no partitions after {timeout}s")
        await asyncio.sleep(0.1)


async def committed_offsets(bootstrap: str, group: str, topic: str, *, timeout: float = 15.0) -> dict[int, int | None]:
    """Committed offset per partition of *topic* for consumer *group*."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await asyncio.wait_for(consumer.start(), timeout)
    try:
        parts = await _partitions(consumer, topic, timeout)
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in parts}
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topic: str, *, timeout: float = 15.0) -> dict[int, int]:
    """High watermark per partition of *topic*, from fetch responses.

    Not ``consumer.end_offsets()``: Tansu 0.6 answers ListOffsets(latest)
    with the last *batch's* base offset + 1, which is wrong for batches of
    more than one record; the high watermark in fetch responses is right.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=1024)
    await asyncio.wait_for(consumer.start(), timeout)
    try:
        parts = await _partitions(consumer, topic, timeout)
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while any(consumer.highwater(tp) is None for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no high watermark for {topic!r} after {timeout}s")
            await consumer.getmany(timeout_ms=100, max_records=1)
        return {tp.partition: consumer.highwater(tp) for tp in tps}
    finally:
        await consumer.stop()


# ----------------------------------------------------------------- worker config
def to_toml(d: dict, prefix: str = "") -> str:
    """Minimal TOML writer for nested dicts of str/int/float/bool (test configs)."""
    import json as _json

    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return _json.dumps(str(v))

    lines, tables = [], []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif v is not None:
            lines.append(f"{k} = {val(v)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in tables:
        name = f"{prefix}.{k}" if prefix else k
        out += f"\n[{name}]\n" + to_toml(v, name)
    return out


def worker_config(bootstrap: str, ckpt_dir, *, group: str, vectors_topic: str | None = None,
                  events_topic: str | None = None, dlq: str | None = None, output: str | None = None,
                  n_clusters: int = 3, max_records: int = 64, **sections) -> dict:
    """A nested config dict for a fast test worker (short group timeouts, small batches)."""
    cfg = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group, "client_id": group,
                  "max_records": max_records, "fetch_timeout_ms": 100,
                  "session_timeout_ms": 3000, "heartbeat_interval_ms": 300,
                  "request_timeout_ms": 10000,
                  "vectors_topic": vectors_topic or "", "events_topic": events_topic or ""},
        "input": {"vectors_enabled": vectors_topic is not None, "format": "auto"},
        "model": {"n_clusters": n_clusters, "seed": 0},
        "checkpoint": {"dir": str(ckpt_dir), "interval_seconds": 30.0, "interval_records": 500, "keep": 3},
        "dlq": {"topic": dlq or ""},
        "output": {"topic": output or ""},
        "drift": {"enabled": True},
        "worker": {"shutdown_deadline_seconds": 20.0, "retry_backoff_initial_seconds": 0.2,
                   "retry_backoff_max_seconds": 1.0, "log_level": "INFO"},
        "metrics": {"enabled": False},
        # The per-worker model (checkpoints); group tests set cfg["group"] = {"enabled": True, ...}.
        "group": {"enabled": False},
    }
    for name, extra in sections.items():
        cfg.setdefault(name, {}).update(extra)
    return cfg


def load_config(cfg: dict, path):
    """Write *cfg* as TOML to *path* and load it (environment ignored)."""
    from streamkm.config import load_settings

    path.write_text(to_toml(cfg))
    return load_settings(path, env={})


async def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll a sync or async predicate until true; fail with *what* after *timeout* s."""
    deadline = time.monotonic() + timeout
    while True:
        res = predicate()
        if asyncio.iscoroutine(res):
            res = await res
        if res:
            return res
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)

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
]


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
) -> list:
    """Produce ``(key, value[, headers])`` records in order; return their metadata.

    With ``partition`` given every record goes there (keeps the order exact
    for single-partition determinism checks).
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
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
    its end offset.
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
        ends = await consumer.end_offsets(tps)
        out: list = []
        deadline = time.monotonic() + timeout
        quiet_until = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                out.extend(recs)
            if expected is None:
                positions = {tp: await consumer.position(tp) for tp in tps}
                if all(positions[tp] >= ends[tp] for tp in tps):
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
    """High watermark per partition of *topic*."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await asyncio.wait_for(consumer.start(), timeout)
    try:
        parts = await _partitions(consumer, topic, timeout)
        tps = [TopicPartition(topic, p) for p in parts]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()

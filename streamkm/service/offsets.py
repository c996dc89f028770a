"""The offsets book: for each partition, the next offset the model state reflects.

Commits only ever follow a durable checkpoint, and a partition resumes at
``max(own checkpoint offset, committed offset)`` (see docs/architecture.md,
"Where a partition resumes"). This module owns that rule and the checkpoint's
``"topic:partition"`` offset encoding.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import TopicPartition

from streamkm.ops.metrics import Metrics

__all__ = ["OffsetBook", "OffsetsLostError", "format_offsets", "log_starts", "parse_offsets", "within_log"]

log = logging.getLogger("streamkm.offsets")


class OffsetsLostError(RuntimeError):
    """The broker no longer holds offsets the model needs (retention): ``run`` exits 4."""

    def __init__(self, lost: Mapping[TopicPartition, tuple[int, int]]):
        self.lost = dict(lost)
        parts = ", ".join(f"{tp.topic}:{tp.partition} needs offset {need} but the log starts at {start} "
                          f"({start - need:,} records deleted)" for tp, (need, start) in sorted(
                              self.lost.items(), key=lambda kv: (kv[0].topic, kv[0].partition)))
        super().__init__(f"the broker no longer holds records the model has not seen: {parts}; keep the input "
                         "topic's retention longer than the time a partition can go unread, or set "
                         "kafka.on_offsets_lost = \"skip\" to resume at the log start without them")


async def log_starts(consumer: Any, tps: Iterable[TopicPartition], *, timeout: float = 10.0
                     ) -> dict[TopicPartition, int]:
    """The first offset the broker still holds for each of *tps* (one request); empty if it
    cannot be asked (never hold a rebalance or a partition's start up on it: the fetch's reset
    policy is the fallback)."""
    wanted = sorted(set(tps), key=_order)
    if not wanted:
        return {}
    try:
        got = await asyncio.wait_for(consumer.beginning_offsets(wanted), timeout)
        return {tp: int(off) for tp, off in got.items()}
    except Exception as exc:
        log.warning("log starts unavailable (%s: %s); not checked this time", type(exc).__name__, exc)
        return {}


def within_log(tp: TopicPartition, needed: int, log_start: int | None, *, policy: str, metrics: Metrics
               ) -> int | None:
    """Where *tp* resumes when the model needs offset *needed* and the log starts at *log_start*.

    *needed* if the log still holds it (or its start is unknown). Otherwise retention deleted
    records the model never saw, and ``kafka.on_offsets_lost`` (*policy*) decides: ``"fail"``
    returns None (the caller stops with :class:`OffsetsLostError`, exit 4), ``"skip"`` returns
    the log start, the lost records counted in ``streamkm_records_lost_total``. Logged either way.
    """
    if log_start is None or needed >= log_start:
        return needed
    extra = {"event": "offsets_lost", "offset": needed, "log_start": log_start}
    if policy == "fail":
        log.error("%s:%d needs offset %d, the log starts at %d: %d records were deleted before the model saw them; "
                  "stopping (kafka.on_offsets_lost = fail)", tp.topic, tp.partition, needed, log_start,
                  log_start - needed, extra=extra)
        return None
    metrics.records_lost.inc(log_start - needed)
    log.error("%s:%d needs offset %d, the log starts at %d: %d records were deleted before the model saw them; "
              "resuming at the log start without them (kafka.on_offsets_lost = skip)", tp.topic, tp.partition,
              needed, log_start, log_start - needed, extra=extra)
    return log_start


def _order(tp: TopicPartition) -> tuple[str, int]:
    return (tp.topic, tp.partition)


def format_offsets(offsets: Mapping[Any, int]) -> dict[str, int]:
    """``{TopicPartition: offset}`` -> ``{"topic:partition": offset}`` (checkpoint form)."""
    return {f"{tp.topic}:{tp.partition}": int(off) for tp, off in sorted(offsets.items(), key=lambda kv: _order(kv[0]))}


def parse_offsets(d: Mapping[str, int]) -> dict[TopicPartition, int]:
    """Inverse of :func:`format_offsets`."""
    out = {}
    for key, off in d.items():
        topic, _, part = str(key).rpartition(":")
        if not topic or not part.isdigit():
            raise ValueError(f"bad offset key {key!r} (expected 'topic:partition')")
        out[TopicPartition(topic, int(part))] = int(off)
    return out


class OffsetBook:
    """Next offset to process per partition, and the partitions currently assigned.

    Attributes
    ----------
    next : dict of TopicPartition to int
        For each partition whose records are reflected in the model: the next offset.
    assigned : set of TopicPartition
    """

    def __init__(self) -> None:
        self.next: dict[TopicPartition, int] = {}
        self.assigned: set[TopicPartition] = set()

    def restore(self, formatted: Mapping[str, int], topics: Iterable[str]) -> None:
        """Load the offsets of a checkpoint, keeping only *topics*."""
        keep = set(topics)
        self.next = {tp: off for tp, off in parse_offsets(formatted).items() if tp.topic in keep}

    def formatted(self) -> dict[str, int]:
        """The checkpoint form of :attr:`next`."""
        return format_offsets(self.next)

    def committable(self) -> dict[TopicPartition, int]:
        """Offsets of the assigned partitions (what a commit after a checkpoint sends)."""
        return {tp: off for tp, off in self.next.items() if tp in self.assigned}

    def resume_target(self, tp: TopicPartition, committed: int | None) -> int | None:
        """Where *tp* resumes on assignment: max(own offset, committed), None if neither exists."""
        cands = [x for x in (self.next.get(tp), committed) if x is not None]
        return max(cands) if cands else None

    def absorbable(self, tp: TopicPartition, records: list[Any], *, stale: bool) -> list[Any] | None:
        """The records of one fetched partition batch that may be absorbed now.

        Never twice: records below the partition's next offset are dropped. Never a gap:
        a batch fetched before a rebalance (*stale*) that starts after the next offset
        returns None (the caller seeks back to :attr:`next`).
        """
        expected = self.next.get(tp)
        if expected is not None and records and records[0].offset < expected:
            records = [r for r in records if r.offset >= expected]  # already absorbed
        if stale and expected is not None and records and records[0].offset > expected:
            return None
        return records

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop the offsets of *partitions* (revoked, or not in a new assignment)."""
        for tp in partitions:
            self.next.pop(tp, None)

    async def caught_up(self, consumer: Any) -> bool:
        """True if every assigned partition's next offset (or position) reached its high watermark."""
        if consumer is None or not self.assigned:
            return False
        for tp in self.assigned:
            hw = consumer.highwater(tp)
            if hw is None:
                return False
            off = self.next.get(tp)
            if off is None:
                try:
                    pos = await consumer.position(tp)
                except Exception:  # unassigned meanwhile (rebalance)
                    return False
                if pos < hw:
                    return False
            elif off < hw:
                return False
        return True

    def report_lag(self, consumer: Any, metrics: Metrics) -> None:
        """Set the consumer-lag gauge of every assigned partition (high watermark - next offset)."""
        if consumer is None:
            return
        for tp in list(self.assigned):
            hw = consumer.highwater(tp)
            off = self.next.get(tp)
            if hw is not None and off is not None:
                metrics.set_lag(tp.topic, tp.partition, hw - off)

"""Send record streams to Kafka, and dump a topic into a recording.

:func:`produce` sends any iterable of :class:`~streamkm.loadgen.recording.Record`
to a topic with an aiokafka producer, at a given rate or as fast as the broker
accepts; :func:`record` reads a topic back into a ``.skmrec`` file that
:func:`~streamkm.loadgen.recording.file_records` replays byte for byte, so a
recorded stream goes through exactly the same pipeline again. Both can show a
tqdm progress bar on stderr (:func:`progress_bar`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from streamkm.kafka.client import start_client
from streamkm.loadgen.recording import Record, RecordingWriter
from streamkm.loadgen.sources import _check_positive

__all__ = ["ProduceStats", "produce", "record", "progress_bar", "RecordsBar"]


# ---------------------------------------------------------------------------
# progress bar
# ---------------------------------------------------------------------------
_BAR_FORMAT = ("[{bar:30}] {percentage:5.1f}% {n}/{total} {unit}  {records_per_s:,.0f} {unit}/s  "
               "{mb_per_s:.1f} MB/s  {elapsed_s:.1f}s")
_UNBOUNDED_FORMAT = "{n} {unit}  {records_per_s:,.0f} {unit}/s  {mb_per_s:.1f} MB/s  {elapsed_s:.1f}s"


class RecordsBar(tqdm):  # type: ignore[type-arg]
    """A tqdm bar that also counts bytes, for the average records/s and MB/s (see :func:`progress_bar`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.nbytes = 0
        super().__init__(*args, **kwargs)

    def update(self, n: float | None = 1, nbytes: int = 0) -> bool | None:
        self.nbytes += nbytes
        return super().update(n)

    @property
    def format_dict(self) -> MutableMapping[str, Any]:
        d = super().format_dict
        elapsed = max(float(d.get("elapsed") or 0.0), 1e-9)
        d["records_per_s"] = (d.get("n") or 0) / elapsed
        d["mb_per_s"] = getattr(self, "nbytes", 0) / elapsed / 1e6
        return d


def progress_bar(total: int | None = None, *, enabled: bool | None = None, file: IO[str] | None = None,
                 mininterval: float = 0.2, unit: str = "records") -> RecordsBar:
    """A one-line tqdm progress bar of records sent (or read), their rate and throughput.

    Parameters
    ----------
    total : int, optional
        Expected number of records; None shows counts and rates only.
    enabled : bool, optional
        True: always shown; False: nothing is written; None: shown only when
        ``file`` is a terminal.
    file : text stream, optional
        Where the bar goes (default ``sys.stderr``).
    mininterval : float
        Minimum seconds between redraws.

    Returns
    -------
    RecordsBar
        ``update(n, nbytes)`` counts ``n`` records of ``nbytes`` bytes;
        ``close()`` draws the final line and a newline.
    """
    return RecordsBar(total=total, file=file, mininterval=mininterval, unit=unit, ascii=".#",
                       bar_format=_BAR_FORMAT if total else _UNBOUNDED_FORMAT,
                       disable=None if enabled is None else not enabled, dynamic_ncols=False)


# ---------------------------------------------------------------------------
# producing
# ---------------------------------------------------------------------------
@dataclass
class ProduceStats:
    """What :func:`produce` sent."""

    records: int = 0
    bytes: int = 0
    seconds: float = 0.0
    partitions: dict[int, int] = field(default_factory=dict)

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def _client_kwargs(bootstrap_servers: str | Sequence[str] | None,
                   client_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    kw = dict(client_kwargs or {})
    if bootstrap_servers is not None:
        kw["bootstrap_servers"] = bootstrap_servers
    if not kw.get("bootstrap_servers"):
        raise ValueError("no bootstrap servers given (bootstrap_servers or "
                         "client_kwargs['bootstrap_servers'])")
    return kw


class _Partitioner:
    """Kafka's default murmur2 key partitioning (cached per key); keyless
    chunks rotate over partitions so batches stay large."""

    def __init__(self, partitions: Iterable[int]) -> None:
        from aiokafka.partitioner import murmur2

        self._murmur2 = murmur2
        self.partitions = sorted(partitions)
        self._cache: dict[bytes, int] = {}
        self._rr = 0

    def next_keyless(self) -> int:
        p = self.partitions[self._rr % len(self.partitions)]
        self._rr += 1
        return p

    def __call__(self, key: bytes) -> int:
        p = self._cache.get(key)
        if p is None:
            p = self.partitions[(self._murmur2(key) & 0x7FFFFFFF) % len(self.partitions)]
            if len(self._cache) < 1_000_000:
                self._cache[key] = p
        return p


async def produce(
    records: Iterable[Record],
    *,
    topic: str,
    bootstrap_servers: str | Sequence[str] | None = None,
    client_kwargs: dict[str, Any] | None = None,
    count: int | None = None,
    rate: float | None = None,
    partition: int | None = None,
    progress: bool | RecordsBar | None = None,
    max_batch_size: int = 1 << 20,
    linger_ms: int = 5,
    acks: int | str = 1,
    chunk_records: int = 2048,
    stop_event: asyncio.Event | None = None,
) -> ProduceStats:
    """Send ``records`` to ``topic``; return what was sent.

    Parameters
    ----------
    records : iterable of Record
        The source (consumed lazily).
    topic : str
        Destination topic (must exist or be auto-created by the broker).
    bootstrap_servers, client_kwargs
        Connection: ``client_kwargs`` is passed to ``AIOKafkaProducer`` (e.g.
        ``settings.kafka.client_kwargs()`` with SSL/SASL); ``bootstrap_servers``
        overrides its ``bootstrap_servers``.
    count : int, optional
        Stop after this many records (default: when the source ends).
    rate : float, optional
        Target records per second; None sends as fast as the broker accepts.
    partition : int, optional
        Send everything to this partition (keeps a total order). Otherwise
        keyed records use Kafka's murmur2 partitioner and keyless chunks rotate
        over the partitions.
    progress : bool or RecordsBar, optional
        Progress bar on stderr (None: only when stderr is a terminal), or a
        bar made by :func:`progress_bar`; it is closed at the end.
    stop_event : asyncio.Event, optional
        Set it to stop early (e.g. on SIGINT); everything handed to the
        producer so far is still flushed.

    Notes
    -----
    Records are appended into producer batches (``create_batch`` /
    ``send_batch``), at most one unsent batch per partition is queued (aiokafka
    waits for it to drain), and the acknowledgements are awaited before
    returning, so memory stays bounded and a returned count means delivered.
    """
    from aiokafka import AIOKafkaProducer

    if rate is not None and not rate > 0:
        raise ValueError(f"rate must be > 0 records/s or None, got {rate!r}")
    _check_positive("count", count, allow_none=True)
    _check_positive("chunk_records", chunk_records)
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"topic must be a non-empty string, got {topic!r}")
    kwargs = _client_kwargs(bootstrap_servers, client_kwargs)
    kwargs.setdefault("max_batch_size", max_batch_size)
    kwargs.setdefault("max_request_size", max(max_batch_size, 1 << 20))
    kwargs.setdefault("linger_ms", linger_ms)
    kwargs.setdefault("acks", acks)

    if rate is not None:
        chunk_records = max(1, min(chunk_records, int(rate * 0.05)))
    stats = ProduceStats()
    it = iter(records)
    if count is not None:
        it = islice(it, count)
    producer = AIOKafkaProducer(**kwargs)
    await start_client(producer, kwargs.get("request_timeout_ms", 40_000) / 1000 + 5)
    bar = progress if isinstance(progress, RecordsBar) else progress_bar(count, enabled=progress)
    pending: list[asyncio.Future[Any]] = []
    t0 = time.monotonic()
    try:
        parts = await producer.partitions_for(topic)
        if not parts:
            raise ValueError(f"topic {topic!r} has no partitions (does it exist?)")
        if partition is not None and partition not in parts:
            raise ValueError(f"partition {partition} not in topic {topic!r} partitions {sorted(parts)}")
        partitioner = _Partitioner(parts)
        while stop_event is None or not stop_event.is_set():
            chunk = list(islice(it, chunk_records))
            if not chunk:
                break
            if rate is not None:
                ahead = t0 + stats.records / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            groups: dict[int, list[Record]] = {}
            if partition is not None:
                groups[partition] = chunk
            else:
                keyless = None
                for rec in chunk:
                    if rec.key is None:
                        if keyless is None:
                            keyless = partitioner.next_keyless()
                        p = keyless
                    else:
                        p = partitioner(rec.key)
                    groups.setdefault(p, []).append(rec)
            nbytes = 0
            for p, recs in groups.items():
                nbytes += await _send_partition(producer, topic, p, recs, pending, max_batch_size)
                stats.partitions[p] = stats.partitions.get(p, 0) + len(recs)
            stats.records += len(chunk)
            stats.bytes += nbytes
            # surface delivery errors early and keep the list short
            if len(pending) > 64:
                for f in pending:
                    if f.done():
                        f.result()
                pending = [f for f in pending if not f.done()]
            bar.update(len(chunk), nbytes)
        if pending:
            await asyncio.gather(*pending)
    finally:
        stats.seconds = time.monotonic() - t0
        bar.close()
        await producer.stop()
    return stats


async def _send_partition(producer: Any, topic: str, partition: int, recs: list[Record],
                          pending: list[asyncio.Future[Any]], max_batch_size: int) -> int:
    nbytes = 0
    batch = producer.create_batch()
    for rec in recs:
        headers = list(rec.headers)
        meta = batch.append(timestamp=rec.timestamp_ms, key=rec.key, value=rec.value,
                            headers=headers)
        if meta is None:
            if batch.record_count() == 0:
                raise ValueError(f"record of {len(rec.value or b'')} bytes does not fit a "
                                 f"batch of max_batch_size={max_batch_size} bytes")
            pending.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            meta = batch.append(timestamp=rec.timestamp_ms, key=rec.key, value=rec.value,
                                headers=headers)
            if meta is None:
                raise ValueError(f"record of {len(rec.value or b'')} bytes does not fit a "
                                 f"batch of max_batch_size={max_batch_size} bytes")
        nbytes += len(rec.value or b"") + len(rec.key or b"")
    if batch.record_count():
        pending.append(await producer.send_batch(batch, topic, partition=partition))
    return nbytes


# ---------------------------------------------------------------------------
# recording
# ---------------------------------------------------------------------------
async def record(
    *,
    topic: str,
    out: str | Path,
    bootstrap_servers: str | Sequence[str] | None = None,
    client_kwargs: dict[str, Any] | None = None,
    count: int | None = None,
    timeout_s: float = 30.0,
    progress: bool | None = None,
    start_offset: int | None = None,
    end_offset: int | None = None,
    start_time_ms: int | None = None,
    end_time_ms: int | None = None,
) -> int:
    """Dump ``topic`` (from the beginning up to its end offsets at start) into a
    ``.skmrec`` file (version 2: with each record's partition and offset); return
    the number of records written.

    Reads without a consumer group (no offsets are committed). Partitions are
    written one after another in ascending order, each in offset order, so a
    replay of a single-partition topic is the identical stream. ``count`` stops
    early; ``timeout_s`` bounds the whole dump. ``progress``: a progress bar
    on stderr (None: only when stderr is a terminal). ``start_offset`` /
    ``end_offset`` (the same for every partition, end exclusive) or
    ``start_time_ms`` / ``end_time_ms`` (record timestamps, epoch ms, resolved
    per partition by the broker's offsets-for-times lookup) narrow the range.
    """
    for name, v in (("start_offset", start_offset), ("end_offset", end_offset),
                    ("start_time_ms", start_time_ms), ("end_time_ms", end_time_ms)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    if (start_offset is not None or end_offset is not None) and (start_time_ms is not None
                                                                 or end_time_ms is not None):
        raise ValueError("give offsets or timestamps, not both")
    from aiokafka import AIOKafkaConsumer, TopicPartition

    kwargs = _client_kwargs(bootstrap_servers, client_kwargs)
    _check_positive("count", count, allow_none=True)
    consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", **kwargs)
    await start_client(consumer, kwargs.get("request_timeout_ms", 40_000) / 1000 + 5)
    bar = progress_bar(count, enabled=progress)
    written = 0
    try:
        parts = consumer.partitions_for_topic(topic)
        for _ in range(20):  # metadata of a new topic may lag a little
            if parts:
                break
            await consumer._client.force_metadata_update()  # aiokafka has no public form
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                await asyncio.sleep(0.1)
        if not parts:
            raise ValueError(f"topic {topic!r} not found")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        # The end of each partition is the high watermark of the first fetch
        # response (ListOffsets alone is not trusted: Tansu 0.6 answers the
        # last batch's base offset + 1 there).
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        first = dict(starts)
        if start_offset is not None:
            first = {tp: max(starts[tp], start_offset) for tp in tps}
        elif start_time_ms is not None:
            found = await consumer.offsets_for_times({tp: start_time_ms for tp in tps})
            first = {tp: (ends[tp] if found.get(tp) is None else found[tp].offset) for tp in tps}
        limit: dict[Any, int | None] = {tp: None for tp in tps}
        if end_offset is not None:
            limit = {tp: end_offset for tp in tps}
        elif end_time_ms is not None:
            found = await consumer.offsets_for_times({tp: end_time_ms for tp in tps})
            limit = {tp: (None if found.get(tp) is None else found[tp].offset) for tp in tps}
        for tp in tps:
            consumer.seek(tp, first[tp])
        deadline = time.monotonic() + timeout_s
        with RecordingWriter(out, positions=True) as writer:
            for tp in tps:
                target: int | None = None
                while count is None or written < count:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"recording {topic!r} did not finish within {timeout_s}s")
                    batch = await consumer.getmany(tp, timeout_ms=int(min(left, 0.5) * 1000))
                    high = consumer.highwater(tp)
                    if target is None and high is not None:
                        target = max(high, ends[tp])
                        lim = limit[tp]
                        target = target if lim is None else min(target, lim)
                    if target is not None and target <= first[tp]:
                        break
                    for msg in batch.get(tp, []):
                        if (target is not None and msg.offset >= target) or \
                                (count is not None and written >= count):
                            break
                        writer.write(Record(msg.key, msg.value, msg.timestamp,
                                            tuple((h[0], h[1]) for h in (msg.headers or ()))),
                                     partition=msg.partition, offset=msg.offset)
                        written += 1
                        bar.update(1, len(msg.value or b""))
                    if target is not None and await consumer.position(tp) >= target:
                        break
    finally:
        bar.close()
        await consumer.stop()
    return written

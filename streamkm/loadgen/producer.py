"""Load generation, recording and replay of Kafka record streams.

Data flow: a *source* yields :class:`Record` tuples (key, value, timestamp,
headers) lazily and in bounded memory; :func:`produce` sends them to a topic
with an aiokafka producer, at a given rate or as fast as the broker accepts,
showing a progress bar on stderr. :func:`record` does the reverse and dumps a
topic into a recording file, which :func:`file_records` replays byte for byte —
so a recorded stream goes through exactly the same decode → window → embed →
cluster pipeline again.

Sources
-------
- :func:`blob_records`: synthetic drifting Gaussian clusters
  (:func:`streamkm.loadgen.synthetic.drifting_blobs`), encoded as JSON or binary,
  ``rows_per_record`` vectors per record; unbounded when ``count`` is None.
- :func:`event_records`: per-key event streams from behaviour processes
  (:func:`streamkm.loadgen.synthetic.behaviour_events`), keyed by entity, JSON events
  ``{"key", "ts", "x"}`` for the sequence pipeline.
- :func:`vector_records`: any array ``X`` of shape (n, d).
- :func:`file_records`: a recorded file — ``.npz`` with ``X`` (and optionally
  ``keys`` + ``ts`` for events), JSON lines (one record value per line, sent
  verbatim), or a ``.skmrec`` record dump written by :func:`record`.

Recording format (``.skmrec``)
------------------------------
All integers little-endian. A file header ``b"SKMREC"`` + ``uint16`` version
(1), then per record::

    int64  timestamp_ms   (-1: none)
    int32  key_length     (-1: null key)
    int32  value_length   (-1: null value)
    uint16 header_count
    key bytes, value bytes
    header_count x (uint16 name_length, name utf-8, int32 value_length, value)

Records are stored in the order they were read (per partition in offset order,
partitions in ascending order), so a replay into a single-partition topic
reproduces one partition's stream exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import sys
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

__all__ = [
    "Record",
    "ProduceStats",
    "Progress",
    "RecordingWriter",
    "read_recording",
    "vector_records",
    "blob_records",
    "event_records",
    "file_records",
    "produce",
    "record",
    "RECORDING_MAGIC",
    "RECORDING_VERSION",
]

RECORDING_MAGIC = b"SKMREC"
RECORDING_VERSION = 1
_FILE_HEADER = struct.Struct("<6sH")
_REC_HEADER = struct.Struct("<qiiH")
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")


class Record(NamedTuple):
    """One Kafka record to send (or as read back from a recording)."""

    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


# ---------------------------------------------------------------------------
# recording format
# ---------------------------------------------------------------------------
class RecordingWriter:
    """Write :class:`Record` objects to a ``.skmrec`` file (see module docs).

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "demo.skmrec")
    >>> with RecordingWriter(path) as w:
    ...     w.write(Record(b"k", b"v", 1000, (("h", b"x"),)))
    ...     w.write(Record(None, b"w"))
    >>> list(read_recording(path))
    [Record(key=b'k', value=b'v', timestamp_ms=1000, headers=(('h', b'x'),)), Record(key=None, value=b'w', timestamp_ms=None, headers=())]
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh: BinaryIO | None = open(self.path, "wb")
        self._fh.write(_FILE_HEADER.pack(RECORDING_MAGIC, RECORDING_VERSION))
        self.count = 0

    def write(self, rec: Record) -> None:
        if self._fh is None:
            raise ValueError(f"recording {self.path} is closed")
        key, value, ts, headers = rec
        for name, v in (("key", key), ("value", value)):
            if v is not None and not isinstance(v, (bytes, bytearray, memoryview)):
                raise TypeError(f"record {name} must be bytes or None, got {type(v).__name__}")
        if len(headers) > 0xFFFF:
            raise ValueError(f"at most 65535 headers per record, got {len(headers)}")
        parts = [_REC_HEADER.pack(-1 if ts is None else int(ts),
                                  -1 if key is None else len(key),
                                  -1 if value is None else len(value),
                                  len(headers))]
        if key is not None:
            parts.append(bytes(key))
        if value is not None:
            parts.append(bytes(value))
        for name, hv in headers:
            nb = name.encode("utf-8")
            parts += [_U16.pack(len(nb)), nb]
            parts += [_I32.pack(-1), b""] if hv is None else [_I32.pack(len(hv)), bytes(hv)]
        self._fh.write(b"".join(parts))
        self.count += 1

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.flush()
            fh.close()

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_exact(fh: BinaryIO, n: int, path: Path, what: str) -> bytes:
    b = fh.read(n)
    if len(b) != n:
        raise ValueError(f"{path}: truncated recording while reading {what} "
                         f"(expected {n} bytes, got {len(b)})")
    return b


def read_recording(path: str | Path) -> Iterator[Record]:
    """Yield the records of a ``.skmrec`` file in order.

    Raises ValueError naming the file on a bad magic, an unsupported version or
    a truncated record.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(_FILE_HEADER.size)
        if len(head) != _FILE_HEADER.size or head[:6] != RECORDING_MAGIC:
            raise ValueError(f"{path}: not a streamkm recording (bad magic {head[:6]!r}, "
                             f"expected {RECORDING_MAGIC!r})")
        _, version = _FILE_HEADER.unpack(head)
        if version != RECORDING_VERSION:
            raise ValueError(f"{path}: unsupported recording version {version}, "
                             f"expected {RECORDING_VERSION}")
        while True:
            rh = fh.read(_REC_HEADER.size)
            if not rh:
                return
            if len(rh) != _REC_HEADER.size:
                raise ValueError(f"{path}: truncated record header")
            ts, klen, vlen, nh = _REC_HEADER.unpack(rh)
            key = None if klen < 0 else _read_exact(fh, klen, path, "key")
            value = None if vlen < 0 else _read_exact(fh, vlen, path, "value")
            headers = []
            for _ in range(nh):
                (nlen,) = _U16.unpack(_read_exact(fh, 2, path, "header name length"))
                name = _read_exact(fh, nlen, path, "header name").decode("utf-8")
                (hlen,) = _I32.unpack(_read_exact(fh, 4, path, "header value length"))
                hv = None if hlen < 0 else _read_exact(fh, hlen, path, "header value")
                headers.append((name, hv))
            yield Record(key, value, None if ts < 0 else ts, tuple(headers))


# ---------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------
def _check_fmt(fmt: str) -> None:
    if fmt not in ("json", "binary"):
        raise ValueError(f"fmt must be 'json' or 'binary', got {fmt!r}")


def _check_positive(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def vector_records(
    X: np.ndarray,
    *,
    fmt: str = "binary",
    rows_per_record: int = 1,
    keys: Sequence[str] | None = None,
) -> Iterator[Record]:
    """Encode the rows of ``X`` (n, d) into records of ``rows_per_record`` rows.

    JSON uses ``{"x": [...]}`` for one row and ``{"X": [[...], ...]}`` for
    several; binary uses the versioned float32 frame of
    :func:`streamkm.codec.encode_binary`. ``keys`` (one per record) become the
    record keys.
    """
    from streamkm import codec as formats

    _check_fmt(fmt)
    _check_positive("rows_per_record", rows_per_record)
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n, d), got shape {X.shape}")
    n = X.shape[0]
    n_records = -(-n // rows_per_record)
    if keys is not None and len(keys) != n_records:
        raise ValueError(f"expected {n_records} keys (one per record), got {len(keys)}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if fmt == "binary":
        values = formats.encode_binary_records(X, rows_per_record) if n else []
    elif rows_per_record == 1:
        values = (formats.encode_json(row) for row in X)
    else:
        values = (formats.encode_json_batch(X[i:i + rows_per_record])
                  for i in range(0, n, rows_per_record))
    for i, value in enumerate(values):
        key = None if keys is None else str(keys[i]).encode("utf-8")
        yield Record(key, value)


def blob_records(
    count: int | None,
    *,
    fmt: str = "binary",
    rows_per_record: int = 1,
    n_clusters: int = 5,
    n_features: int = 8,
    drift_every: int | None = 20_000,
    seed: int | None = 0,
    chunk_records: int = 1024,
) -> Iterator[Record]:
    """Synthetic drifting Gaussian clusters, ``count`` records (None: unbounded).

    Vectors come from :func:`streamkm.loadgen.synthetic.drifting_blobs` in chunks, so
    memory stays bounded for an unbounded stream.
    """
    from streamkm.loadgen import synthetic

    _check_fmt(fmt)
    _check_positive("count", count, allow_none=True)
    _check_positive("rows_per_record", rows_per_record)
    _check_positive("chunk_records", chunk_records)
    batch_points = chunk_records * rows_per_record
    n_batches = None if count is None else -(-count // chunk_records)
    points = synthetic.iter_drifting_blobs(
        batch_points, n_batches=n_batches, n_clusters=n_clusters, n_features=n_features,
        drift_every=drift_every, seed=seed,
    )
    left = count
    for X, _labels in points:
        if left is not None:
            X = X[: left * rows_per_record]
            left -= -(-len(X) // rows_per_record)
        yield from vector_records(X, fmt=fmt, rows_per_record=rows_per_record)


def event_records(
    count: int | None,
    *,
    n_keys: int = 64,
    n_features: int = 4,
    n_processes: int = 4,
    seed: int | None = 0,
    chunk_events: int = 4096,
) -> Iterator[Record]:
    """Per-key behaviour event streams as JSON events ``{"key", "ts", "x"}``.

    ``count`` events in total (None: unbounded, generated in chunks that
    continue each key's timeline). The record key is the entity key, so one
    entity's events stay in one partition, in order.
    """
    from streamkm import codec as formats
    from streamkm.loadgen import synthetic

    _check_positive("count", count, allow_none=True)
    _check_positive("n_keys", n_keys)
    _check_positive("chunk_events", chunk_events)
    sent = 0
    start_ts = 0.0
    chunk_seeds = np.random.default_rng(seed)
    while count is None or sent < count:
        n = chunk_events if count is None else min(chunk_events, count - sent)
        per_key = -(-n // n_keys)
        keys, ts, X, _proc = synthetic.behaviour_events(
            n_keys, per_key, n_features=n_features, n_processes=n_processes,
            start_ts=start_ts, seed=int(chunk_seeds.integers(2**31)),
        )
        keys, ts, X = keys[:n], np.asarray(ts[:n], dtype=np.float64), np.asarray(X[:n])
        for i in range(len(keys)):
            key = str(keys[i])
            yield Record(key.encode("utf-8"), formats.encode_event_json(key, float(ts[i]), X[i]))
        sent += len(keys)
        # the next chunk continues every key's timeline after this one
        start_ts = float(ts.max()) + 1.0


def file_records(
    path: str | Path,
    *,
    fmt: str = "binary",
    rows_per_record: int = 1,
) -> Iterator[Record]:
    """Replay a recorded file (``.npz``, ``.jsonl``/``.json``, ``.skmrec``).

    - ``.npz`` (loaded with ``allow_pickle=False``): ``X`` (n, d) vectors encoded
      with ``fmt``/``rows_per_record``; if it also holds ``keys`` (n,) and
      ``ts`` (n,), rows are sent as JSON events keyed by ``keys`` instead.
    - JSON lines: each non-empty line is sent verbatim as a record value; the
      record key is the line's ``"key"`` field when it is a JSON object that
      has one.
    - ``.skmrec``: records (key, value, timestamp, headers) exactly as
      recorded by :func:`record`.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"replay file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".skmrec":
        yield from read_recording(path)
    elif suffix == ".npz":
        from streamkm import codec as formats

        with np.load(path, allow_pickle=False) as data:
            if "X" not in data.files:
                raise ValueError(f"{path}: .npz replay files need an 'X' array, found {data.files}")
            X = np.asarray(data["X"])
            keys = data["keys"] if "keys" in data.files else None
            ts = data["ts"] if "ts" in data.files else None
        if (keys is None) != (ts is None):
            raise ValueError(f"{path}: event replay needs both 'keys' and 'ts', found only one")
        if keys is None:
            yield from vector_records(X, fmt=fmt, rows_per_record=rows_per_record)
            return
        if not (len(keys) == len(ts) == len(X)):
            raise ValueError(f"{path}: keys, ts and X lengths differ: "
                             f"{len(keys)}, {len(ts)}, {len(X)}")
        X = np.asarray(X, dtype=np.float32)
        for i in range(len(X)):
            k = str(keys[i])
            yield Record(k.encode("utf-8"), formats.encode_event_json(k, float(ts[i]), X[i]))
    elif suffix in (".jsonl", ".json", ".ndjson"):
        with open(path, "rb") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                key = None
                try:
                    obj = json.loads(line)
                except ValueError:
                    obj = None  # bad lines are replayed verbatim: the DLQ path is part of replay
                if isinstance(obj, dict) and "key" in obj and obj["key"] is not None:
                    key = str(obj["key"]).encode("utf-8")
                yield Record(key, line)
    else:
        raise ValueError(f"unsupported replay file type {suffix!r} for {path}; "
                         "expected .npz, .jsonl/.json/.ndjson or .skmrec")


# ---------------------------------------------------------------------------
# progress bar
# ---------------------------------------------------------------------------
class Progress:
    """A one-line progress bar (records, rate, throughput) on a text stream.

    Redraws at most every ``interval`` seconds; ``total=None`` shows counts and
    rates only. ``close()`` prints the final line and a newline.
    """

    def __init__(self, total: int | None = None, *, stream: Any = None,
                 interval: float = 0.2, width: int = 30, label: str = "records") -> None:
        self.total = total
        self.stream = sys.stderr if stream is None else stream
        self.interval = interval
        self.width = width
        self.label = label
        self.n = 0
        self.nbytes = 0
        self.t0 = time.monotonic()
        self._last = 0.0
        self._closed = False

    def update(self, n: int, nbytes: int = 0) -> None:
        self.n += n
        self.nbytes += nbytes
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        dt = max(now - self.t0, 1e-9)
        rate = self.n / dt
        mbps = self.nbytes / dt / 1e6
        if self.total:
            frac = min(self.n / self.total, 1.0)
            filled = int(round(frac * self.width))
            bar = "#" * filled + "." * (self.width - filled)
            head = f"[{bar}] {frac * 100:5.1f}% {self.n}/{self.total} {self.label}"
        else:
            head = f"{self.n} {self.label}"
        return f"{head}  {rate:,.0f} {self.label}/s  {mbps:.1f} MB/s  {dt:.1f}s"

    def _draw(self, now: float) -> None:
        with contextlib.suppress(Exception):
            self.stream.write("\r" + self.line(now))
            self.stream.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self.stream.write("\r" + self.line() + "\n")
            self.stream.flush()


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
                   client_kwargs: dict | None) -> dict:
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

    def __init__(self, partitions: Sequence[int]) -> None:
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
    client_kwargs: dict | None = None,
    count: int | None = None,
    rate: float | None = None,
    partition: int | None = None,
    progress: bool | Progress | None = None,
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
    progress : bool or Progress, optional
        Progress bar on stderr (None: only when stderr is a terminal).
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

    if progress is None:
        progress = sys.stderr.isatty()
    bar: Progress | None
    if isinstance(progress, Progress):
        bar = progress
    else:
        bar = Progress(count) if progress else None

    if rate is not None:
        chunk_records = max(1, min(chunk_records, int(rate * 0.05)))
    stats = ProduceStats()
    it = iter(records)
    if count is not None:
        it = islice(it, count)
    producer = AIOKafkaProducer(**kwargs)
    await producer.start()
    pending: list[asyncio.Future] = []
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
                done = [f for f in pending if f.done()]
                for f in done:
                    f.result()
                pending = [f for f in pending if not f.done()]
            if bar is not None:
                bar.update(len(chunk), nbytes)
        if pending:
            await asyncio.gather(*pending)
    finally:
        stats.seconds = time.monotonic() - t0
        if bar is not None:
            bar.close()
        await producer.stop()
    return stats


async def _send_partition(producer: Any, topic: str, partition: int, recs: list[Record],
                          pending: list, max_batch_size: int) -> int:
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
    client_kwargs: dict | None = None,
    count: int | None = None,
    timeout_s: float = 30.0,
    progress: bool | None = None,
) -> int:
    """Dump ``topic`` (from the beginning up to its end offsets at start) into a
    ``.skmrec`` file; return the number of records written.

    Reads without a consumer group (no offsets are committed). Partitions are
    written one after another in ascending order, each in offset order, so a
    replay of a single-partition topic is the identical stream. ``count`` stops
    early; ``timeout_s`` bounds the whole dump.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    kwargs = _client_kwargs(bootstrap_servers, client_kwargs)
    _check_positive("count", count, allow_none=True)
    consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", **kwargs)
    await consumer.start()
    bar = Progress(count) if (sys.stderr.isatty() if progress is None else progress) else None
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
        deadline = time.monotonic() + timeout_s
        with RecordingWriter(out) as writer:
            for tp in tps:
                target: int | None = None
                while count is None or written < count:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"recording {topic!r} did not finish within {timeout_s}s")
                    batch = await consumer.getmany(tp, timeout_ms=int(min(left, 0.5) * 1000))
                    if target is None and consumer.highwater(tp) is not None:
                        target = max(consumer.highwater(tp), ends[tp])
                    for msg in batch.get(tp, []):
                        if (target is not None and msg.offset >= target) or \
                                (count is not None and written >= count):
                            break
                        writer.write(Record(msg.key, msg.value, msg.timestamp,
                                            tuple((h[0], h[1]) for h in (msg.headers or ()))))
                        written += 1
                        if bar is not None:
                            bar.update(1, len(msg.value or b""))
                    if target is not None and await consumer.position(tp) >= target:
                        break
    finally:
        if bar is not None:
            bar.close()
        await consumer.stop()
    return written

"""The asyncio Kafka worker: consume, cluster, dead-letter, checkpoint, commit.

:class:`Worker` runs one aiokafka consumer in a consumer group (auto-commit
off) over the enabled pipelines' input topics, routes each fetched
micro-batch by topic to :mod:`streamkm.pipeline` (run in a thread, awaited in
order, so the event loop keeps heart-beating), writes bad records to the
dead-letter topic and assignments to the optional output topic, and makes the
model's state durable before committing offsets:

1. update the model (pipeline),
2. await the acknowledgements of the batch's dead-letter (and output) writes,
3. checkpoint model state + next offset of every assigned partition
   (:class:`streamkm.checkpoint.CheckpointStore`, atomic),
4. commit exactly those offsets to Kafka.

Checkpoints are taken every ``checkpoint.interval_seconds`` or
``checkpoint.interval_records`` records, when the worker is caught up and
flushes a partial model batch, on partition revocation (the rebalance listener
waits for the in-flight batch) and on shutdown (aiokafka does not call the
revoke callback on ``stop()``, so :meth:`Worker.shutdown` does it).

Where each partition resumes (on assignment)
--------------------------------------------
The worker keeps ``offsets``: for each partition whose records are reflected
in its model, the next offset to process (restored from the newest valid
checkpoint at start). On assignment each partition is sought to
``max(offsets[tp], committed(tp))``, falling back to ``auto_offset_reset``
when neither exists. Commits only ever follow a durable checkpoint, so:

* single worker, after a crash: the checkpoint offset is >= the committed
  one, the model resumes exactly where its state ends (a crash between
  checkpoint and commit re-reads nothing twice);
* a partition moving between workers: the revoking worker checkpoints and
  commits first; the new owner (whose checkpoint may not contain the
  partition, or contains an older offset from when it last owned it) starts
  at the committed offset, so every record is absorbed by exactly one
  worker's model. Model state is per worker (per checkpoint directory); the
  group as a whole sees each record once, each model sees the records of
  the partitions it held.

Known limits: a worker killed between its checkpoint and its commit whose
partitions move to another member before it restarts has those records
(checkpointed, not committed) re-read by the new owner; Tansu drops commit
metadata, so this cannot be detected from the commit. If the newest
checkpoint is corrupted and an older one is used while Kafka holds a newer
commit, the records in between are not replayed into this model.

Model updates use fixed-size chunks (see :mod:`streamkm.pipeline`), so a
restarted worker replays exactly the updates the lost process would have made.

Checkpoint state layout (``CheckpointStore`` puts arrays in the .npz and the
rest in the JSON manifest)::

    {"format": "streamkm.worker", "version": 1, "group_id": str,
     "offsets": {"<topic>:<partition>": next_offset, ...},   # assigned partitions
     "model_version": int,                                   # sum of n_batches_
     "pipelines": {
       "vectors":  {"kind", "version", "dim", "topic",
                    "model": StreamingKMeans.state_dict(),
                    "drift": DriftMonitor.state_dict() | None,
                    "n_drift", "n_drift_reseeds", "n_clustered",
                    "pending_X": (q, d) float32,      # rows queued for the next chunk
                    "pending_meta": (q, 3) float64,   # partition, offset, row in record
                    "pending_keys": [hex | None]},    # their input keys (for the output)
       "sequence": {same, plus "lstm_hash", "n_events",
                    "windows": EventWindower.state_dict();
                    pending_meta = (window length, window end ts, 0)}}}

The model and its queued rows and open windows are per worker. When a
partition moves away, rows already queued from it and its keys' open windows
stay with the revoking worker's state (they were consumed before the commit)
and are absorbed by that worker's model when it continues.

Dead-letter records keep the original key, value and headers, and add
provenance headers of both common conventions (all string values UTF-8
unless noted):

=====================================  ============================================
``__connect.errors.topic``             source topic
``__connect.errors.partition``         source partition (decimal string)
``__connect.errors.offset``            source offset (decimal string)
``__connect.errors.connector.name``    consumer group id
``__connect.errors.task.id``           client id
``__connect.errors.stage``             ``VALUE_CONVERTER``
``__connect.errors.class.name``        ``streamkm.pipeline.<Pipeline>``
``__connect.errors.exception.class.name``  exception class (e.g. ``JSONDecodeError``)
``__connect.errors.exception.message`` message naming the bad values
``__connect.errors.reason``            bounded reason (``not_json``, ``dimension``, ...)
``kafka_dlt-original-topic``           source topic
``kafka_dlt-original-partition``       int32 big-endian (Spring encoding)
``kafka_dlt-original-offset``          int64 big-endian
``kafka_dlt-original-timestamp``       int64 big-endian (ms)
``kafka_dlt-original-timestamp-type``  ``CreateTime`` / ``LogAppendTime``
``kafka_dlt-original-consumer-group``  consumer group id
``kafka_dlt-exception-fqcn``           exception class
``kafka_dlt-exception-message``        message
``streamkm.pipeline``                  ``vectors`` / ``sequence``
``streamkm.dlq.value-dropped-bytes``   only when the value was too large to send
                                       (``MessageSizeTooLargeError``): its size; the
                                       record is then dead-lettered without value
=====================================  ============================================
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import struct
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from streamkm.pipeline import BatchResult, build_pipelines

__all__ = ["Worker", "dlq_headers", "parse_offsets", "format_offsets", "main"]

log = logging.getLogger("streamkm.worker")

#: Worker-level fault points (the CheckpointStore adds its own).
FAULT_POINTS = ("after_update", "after_checkpoint", "after_commit")

_STATE_FORMAT = "streamkm.worker"
_STATE_VERSION = 1

#: Smallest row assumed when sizing a batch by its bytes for ``worker.offload_min_rows``
#: (16 float32 = 64 bytes): one binary record can hold many rows.
_MIN_ROW_FLOATS = 16


def format_offsets(offsets: Mapping[Any, int]) -> dict[str, int]:
    """``{TopicPartition: offset}`` -> ``{"topic:partition": offset}`` (checkpoint form)."""
    return {f"{tp.topic}:{tp.partition}": int(off) for tp, off in
            sorted(offsets.items(), key=lambda kv: (kv[0].topic, kv[0].partition))}


def parse_offsets(d: Mapping[str, int]):
    """Inverse of :func:`format_offsets`."""
    from aiokafka import TopicPartition

    out = {}
    for key, off in d.items():
        topic, _, part = str(key).rpartition(":")
        if not topic or not part.isdigit():
            raise ValueError(f"bad offset key {key!r} (expected 'topic:partition')")
        out[TopicPartition(topic, int(part))] = int(off)
    return out


def _s(v: Any) -> bytes:
    return str(v).encode("utf-8", "replace")


def dlq_headers(record, error, *, pipeline: str, group_id: str, client_id: str) -> list[tuple[str, bytes]]:
    """Original headers + Kafka Connect and Spring provenance headers (see module doc)."""
    ts_type = "LogAppendTime" if getattr(record, "timestamp_type", 0) == 1 else "CreateTime"
    ts = int(record.timestamp if record.timestamp is not None else -1)
    message = error.message[:2000]
    return [
        *list(record.headers or ()),
        ("__connect.errors.topic", _s(record.topic)),
        ("__connect.errors.partition", _s(record.partition)),
        ("__connect.errors.offset", _s(record.offset)),
        ("__connect.errors.connector.name", _s(group_id)),
        ("__connect.errors.task.id", _s(client_id)),
        ("__connect.errors.stage", b"VALUE_CONVERTER"),
        ("__connect.errors.class.name",
         _s(f"streamkm.pipeline.{'VectorPipeline' if pipeline == 'vectors' else 'SequencePipeline'}")),
        ("__connect.errors.exception.class.name", _s(error.exc_type)),
        ("__connect.errors.exception.message", _s(message)),
        ("__connect.errors.reason", _s(error.reason)),
        ("kafka_dlt-original-topic", _s(record.topic)),
        ("kafka_dlt-original-partition", struct.pack(">i", int(record.partition))),
        ("kafka_dlt-original-offset", struct.pack(">q", int(record.offset))),
        ("kafka_dlt-original-timestamp", struct.pack(">q", ts)),
        ("kafka_dlt-original-timestamp-type", _s(ts_type)),
        ("kafka_dlt-original-consumer-group", _s(group_id)),
        ("kafka_dlt-exception-fqcn", _s(error.exc_type)),
        ("kafka_dlt-exception-message", _s(message)),
        ("streamkm.pipeline", _s(pipeline)),
    ]


def _listener(worker: "Worker", consumer):
    from aiokafka import ConsumerRebalanceListener

    class _Listener(ConsumerRebalanceListener):
        """Delegates aiokafka's rebalance callbacks to the worker."""

        async def on_partitions_revoked(self, revoked):
            try:
                await worker._on_revoked(revoked)
            except Exception:  # aiokafka would swallow it; make it visible
                log.exception("partition revocation handling failed")

        async def on_partitions_assigned(self, assigned):
            try:
                await worker._on_assigned(assigned, consumer)
            except Exception:
                log.exception("partition assignment handling failed")

    return _Listener()


class _Fatal(Exception):
    """Raised inside the loop to stop without a final checkpoint (unsafe state)."""


class Worker:
    """Consume the input topics and keep the pipelines' models current.

    Parameters
    ----------
    settings : streamkm.config.Settings
    metrics : streamkm.ops.metrics.Metrics, optional
        Metrics to update (default: a private registry).
    fault_hook : callable, optional
        ``fault_hook(point: str)`` called at :data:`FAULT_POINTS` and passed
        to the CheckpointStore (tests kill the process there).
    bootstrap_servers : str, optional
        Overrides ``settings.kafka.bootstrap_servers`` (the embedded broker).
    pipelines : dict, optional
        ``{name: (topic, pipeline)}``; default :func:`streamkm.pipeline.build_pipelines`.
    flush_linger_seconds : float
        When caught up, a partial model batch older than this is absorbed
        (then a checkpoint is written at once).
    idle_checkpoint_seconds : float
        When caught up with un-checkpointed progress, checkpoint and commit
        once this long has passed since the last checkpoint.

    Examples
    --------
    >>> async def serve(settings):  # doctest: +SKIP
    ...     async with Worker(settings) as worker:
    ...         await worker.run()
    """

    def __init__(self, settings, *, metrics=None, fault_hook: Callable[[str], None] | None = None,
                 bootstrap_servers: str | None = None, pipelines: dict | None = None,
                 flush_linger_seconds: float = 0.5, idle_checkpoint_seconds: float = 1.0):
        from streamkm.checkpoint import CheckpointStore
        from streamkm.ops.metrics import Metrics

        if flush_linger_seconds < 0:
            raise ValueError(f"flush_linger_seconds must be >= 0, got {flush_linger_seconds}")
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        self.fault_hook = fault_hook
        self.bootstrap_servers = bootstrap_servers or settings.kafka.bootstrap_servers
        if self.bootstrap_servers is None:
            raise ValueError("no bootstrap servers: set kafka.bootstrap_servers or pass bootstrap_servers "
                             "(e.g. an EmbeddedBroker's address)")
        self.pipelines = pipelines if pipelines is not None else build_pipelines(settings)
        if not self.pipelines:
            raise ValueError("no pipeline enabled")
        self._by_topic = {topic: (name, p) for name, (topic, p) in self.pipelines.items()}
        if len(self._by_topic) != len(self.pipelines):
            raise ValueError("each pipeline needs its own input topic")
        self.flush_linger_seconds = float(flush_linger_seconds)
        self.idle_checkpoint_seconds = float(idle_checkpoint_seconds)
        self.store = CheckpointStore(settings.checkpoint.dir, keep=settings.checkpoint.keep,
                                     fault_hook=fault_hook)
        self.group_id = settings.kafka.group_id
        self.client_id = settings.kafka.client_id
        self.offsets: dict = {}  # TopicPartition -> next offset reflected in the models
        self._assigned: set = set()
        self._generation = 0  # bumped by every revoke/assign
        self._lock = asyncio.Lock()
        self._consumer = None
        self._producer = None
        self._restored = False
        self._started = False
        self._stopping = asyncio.Event()
        self._stopped = False
        self._unsafe = False  # model advanced past offsets whose side effects failed
        self._connected = False
        self._last_fetch = 0.0
        self._last_ckpt_time = time.monotonic()
        self._records_since_ckpt = 0
        self._dirty = False
        self._pending_since: float | None = None
        self._run_task: asyncio.Task | None = None
        self._prefetch: asyncio.Future | None = None  # next getmany while a batch is processed
        self.last_checkpoint = None
        self.n_checkpoints = 0
        self.n_batches = 0

    # ------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> "Worker":
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    async def start(self) -> None:
        """Restore the newest valid checkpoint and prepare metrics (no network)."""
        if self._started:
            return
        self._lock_directory()
        self._started = True
        try:
            for name, (topic, p) in self.pipelines.items():
                self.metrics.init_pipeline(name, topic)
            loaded = await asyncio.to_thread(self.store.load_latest)
        except BaseException:
            self._started = False
            self._unlock_directory()
            raise
        if loaded is not None:
            state, info = loaded
            try:
                self._load_state(state)
            except (ValueError, TypeError, KeyError) as exc:
                self._started = False  # a refused start leaves the directory free
                self._unlock_directory()
                raise ValueError(
                    f"checkpoint {info.sequence} in {self.settings.checkpoint.dir} does not match the "
                    f"configuration ({exc}); point checkpoint.dir elsewhere or restore the old settings"
                ) from exc
            log.info("restored checkpoint %d (offsets %s)", info.sequence, format_offsets(self.offsets),
                     extra={"event": "restore", "sequence": info.sequence})
            self.last_checkpoint = info
        if any(p.n_pending for _, p in self.pipelines.values()):
            self._pending_since = time.monotonic()
        for name, (topic, p) in self.pipelines.items():
            self.metrics.observe_model(name, p.model, baseline=True)
            if hasattr(p, "windower"):
                self.metrics.observe_windower(name, p.windower, baseline=True)
        self._restored = True

    def _lock_directory(self) -> None:
        """One worker per checkpoint directory (an flock, released by the kernel on death)."""
        import fcntl

        path = self.store.directory / ".worker.lock"
        fh = open(path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise RuntimeError(
                f"checkpoint directory {self.store.directory} is in use by another worker "
                f"(pid {holder}); each worker needs its own checkpoint.dir"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._dir_lock = fh

    def _unlock_directory(self) -> None:
        fh, self._dir_lock = getattr(self, "_dir_lock", None), None
        if fh is not None:
            fh.close()  # closing the descriptor drops the flock

    def _load_state(self, state: dict) -> None:
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"checkpoint is not a worker state (format {state.get('format')!r})")
        if int(state.get("version", -1)) != _STATE_VERSION:
            raise ValueError(f"unsupported worker state version {state.get('version')!r}")
        saved = state.get("pipelines", {})
        for name, (topic, p) in self.pipelines.items():
            if name in saved:
                p.load_state_dict(saved[name])
            else:
                log.warning("checkpoint has no %r pipeline state: starting it fresh", name)
        topics = set(self._by_topic)
        self.offsets = {tp: off for tp, off in parse_offsets(state.get("offsets", {})).items()
                        if tp.topic in topics}

    def state_dict(self) -> dict:
        """Worker state = pipelines' state + next offsets (the checkpoint layout)."""
        versions = [int(p.model.n_batches_) for _, p in self.pipelines.values()]
        return {
            "format": _STATE_FORMAT,
            "version": _STATE_VERSION,
            "group_id": self.group_id,
            "offsets": format_offsets(self.offsets),
            "model_version": sum(versions),
            "pipelines": {name: p.state_dict() for name, (_, p) in self.pipelines.items()},
        }

    async def run(self) -> None:
        """Consume until :meth:`shutdown`; reconnect with backoff when the broker is unreachable."""
        await self.start()
        self._run_task = asyncio.current_task()
        backoff = self.settings.worker.retry_backoff_initial_seconds
        try:
            while not self._stopping.is_set():
                try:
                    await self._connect()
                    backoff = self.settings.worker.retry_backoff_initial_seconds
                    await self._consume_loop()
                except _Fatal:
                    raise
                except (OSError, asyncio.TimeoutError, _kafka_errors()) as exc:
                    if self._stopping.is_set():
                        break
                    self.metrics.broker_errors.inc()
                    log.warning("broker unreachable or failing (%s: %s); retrying in %.1fs",
                                type(exc).__name__, exc, backoff, extra={"event": "broker_error"})
                    await self._disconnect(final=False)
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), backoff)
                    backoff = min(backoff * 2, self.settings.worker.retry_backoff_max_seconds)
        finally:
            await self._finish()

    async def shutdown(self, deadline: float | None = None) -> bool:
        """Finish the in-flight batch, checkpoint, commit, leave the group.

        Returns True if everything completed within *deadline* seconds
        (default ``worker.shutdown_deadline_seconds``).
        """
        deadline = self.settings.worker.shutdown_deadline_seconds if deadline is None else deadline
        self._stopping.set()
        task = self._run_task
        if task is None or task is asyncio.current_task():
            await asyncio.wait_for(self._finish(), deadline)
            return True
        try:
            await asyncio.wait_for(asyncio.shield(task), deadline)
            return True
        except _Fatal as exc:
            log.error("worker stopped without a final checkpoint: %s", exc)
            return False
        except asyncio.TimeoutError:
            log.error("shutdown deadline of %.1fs exceeded; cancelling", deadline)
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            return False

    async def stop(self) -> None:
        """Same as :meth:`shutdown` with the configured deadline; safe to call twice."""
        if self._stopped:
            return
        await self.shutdown()

    # -------------------------------------------------------------- health
    def is_live(self) -> bool:
        """True while the worker's loop is running (independent of the broker)."""
        return not self._stopped

    def is_ready(self) -> bool:
        """Partitions assigned, model restored and fetching recently."""
        window = max(5.0, 3 * self.settings.kafka.fetch_timeout_ms / 1000)
        return bool(self._restored and self._connected and self._assigned
                    and not self._stopping.is_set() and self._coordinator_known()
                    and time.monotonic() - self._last_fetch < window)

    def _coordinator_known(self) -> bool:
        # aiokafka marks the group coordinator dead when the broker stops answering
        # (heartbeats/commits fail); there is no public accessor for it.
        coordinator = getattr(self._consumer, "_coordinator", None)
        return coordinator is None or getattr(coordinator, "coordinator_id", 0) is not None

    @property
    def assignment(self) -> set:
        return set(self._assigned)

    # ------------------------------------------------------------ internals
    def _fault(self, point: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(point)

    async def _connect(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        if self._consumer is not None:
            return
        kafka = self.settings.kafka
        need_producer = self.settings.dlq.topic is not None or self.settings.output.topic is not None
        timeout = kafka.request_timeout_ms / 1000 + 5
        if need_producer:
            producer = AIOKafkaProducer(**kafka.client_kwargs(self.bootstrap_servers), acks="all",
                                        linger_ms=5)
            try:
                await asyncio.wait_for(producer.start(), timeout)
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self._producer = producer
        consumer = AIOKafkaConsumer(**kafka.consumer_kwargs(self.bootstrap_servers))
        consumer.subscribe(sorted(self._by_topic), listener=_listener(self, consumer))
        try:
            await asyncio.wait_for(consumer.start(), timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
        self._consumer = consumer
        self._connected = True
        log.info("connected to %s as group %s", self.bootstrap_servers, self.group_id,
                 extra={"event": "connected"})

    async def _disconnect(self, *, final: bool) -> None:
        self._connected = False
        self.metrics.set_ready(False)
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        if consumer is not None:
            async with _quietly("consumer stop"):
                await asyncio.wait_for(consumer.stop(), 5)
        if producer is not None:
            async with _quietly("producer stop"):
                await asyncio.wait_for(producer.stop(), 5)
        if not final:
            self._assigned = set()

    async def _fetch(self) -> tuple[int, dict]:
        """One ``getmany``, with the rebalance generation it started in."""
        kafka = self.settings.kafka
        generation = self._generation
        batch = await self._consumer.getmany(timeout_ms=kafka.fetch_timeout_ms,
                                             max_records=kafka.max_records)
        self._last_fetch = time.monotonic()
        return generation, batch

    async def _consume_loop(self) -> None:
        # While a large batch is processed in a thread, the next getmany() runs on the
        # event loop (aiokafka unpacks records in Python there), so fetching and
        # processing overlap. Batches are still processed one at a time, in fetch
        # order: the prefetched one is awaited only after the previous one finished.
        # A prefetched batch is never processed after a stop request, and one fetched
        # across a rebalance is handled like any stale batch (see _process).
        self._prefetch = None
        try:
            while not self._stopping.is_set():
                fetch, self._prefetch = self._prefetch, None
                generation, batch = await (fetch if fetch is not None else self._fetch())
                async with self._lock:
                    if self._stopping.is_set() and not batch:
                        break
                    try:
                        if batch:
                            await self._process(batch, stale=generation != self._generation)
                        await self._maybe_flush_and_checkpoint()
                    except BaseException:
                        # A model update may be half applied (or still running in its
                        # thread after a cancellation): its state no longer matches the
                        # offsets, so it must never be checkpointed. A restart replays
                        # from the last checkpoint.
                        self._unsafe = True
                        raise
                await self._update_lag()
                self.metrics.set_ready(self.is_ready())
        finally:
            fetch, self._prefetch = self._prefetch, None
            if fetch is not None:
                fetch.cancel()
                with contextlib.suppress(BaseException):
                    await fetch

    def _start_prefetch(self) -> None:
        if self._prefetch is None and not self._stopping.is_set():
            self._prefetch = asyncio.ensure_future(self._fetch())

    def _offload(self, recs: list, name: str = "vectors") -> bool:
        """Whether a batch is large enough for a worker thread (``worker.offload_min_rows``
        rows; a binary record may hold many rows, so its size counts too). Sequence
        batches always are: a few events can close many windows at once (a watermark
        jump closes every open session), and LSTM embedding must not stall heartbeats."""
        if name == "sequence":
            return True
        limit = self.settings.worker.offload_min_rows
        if len(recs) >= limit:
            return True
        n_bytes = sum(len(r.value) for r in recs if r.value is not None)
        return n_bytes >= limit * 4 * _MIN_ROW_FLOATS

    async def _process(self, batch: dict, *, stale: bool = False) -> None:
        """Absorb one fetched batch. Invariant: per partition, a record is absorbed only
        if its offset is >= ``offsets[tp]`` (never twice), and a batch fetched before a
        rebalance (*stale*) that does not start at ``offsets[tp]`` is dropped and the
        partition sought back (never a gap)."""
        by_pipe: dict[str, list] = {}
        last: dict = {}
        for tp in sorted(batch, key=lambda t: (t.topic, t.partition)):
            recs = batch[tp]
            if not recs or tp not in self._assigned:
                continue  # revoked meanwhile: the new owner re-reads them from the commit
            expected = self.offsets.get(tp)
            if expected is not None and recs[0].offset < expected:
                recs = [r for r in recs if r.offset >= expected]  # already absorbed
                if not recs:
                    continue
            if stale and expected is not None and recs[0].offset > expected:
                log.debug("%s:%d: batch from before a rebalance starts at %d, expected %d; "
                          "seeking back", tp.topic, tp.partition, recs[0].offset, expected)
                self._consumer.seek(tp, expected)
                continue
            name = self._by_topic[tp.topic][0]
            by_pipe.setdefault(name, []).extend(recs)
            last[tp] = recs[-1].offset + 1
        if not by_pipe:
            return
        self.n_batches += 1
        sends = []
        for name in ("vectors", "sequence"):
            recs = by_pipe.get(name)
            if not recs:
                continue
            topic, pipeline = self.pipelines[name]
            t0 = time.perf_counter()
            if self._offload(recs, name):
                if not stale:
                    self._start_prefetch()
                res = await asyncio.to_thread(pipeline.process, recs)
            else:
                res = pipeline.process(recs)
            self.metrics.batch_processing.labels(pipeline=name).observe(time.perf_counter() - t0)
            self._account(name, topic, pipeline, res)
            sends.extend(self._side_effects(name, res))
        self._fault("after_update")
        await self._deliver(sends)
        for tp, off in last.items():
            self.offsets[tp] = off
        n = sum(len(v) for v in by_pipe.values())
        self._records_since_ckpt += n
        self._dirty = True
        if self._pending_since is None and any(p.n_pending for _, p in self.pipelines.values()):
            self._pending_since = time.monotonic()

    def _account(self, name: str, topic: str, pipeline, res: BatchResult) -> None:
        m = self.metrics
        if res.n_records:
            m.records_consumed.labels(pipeline=name, topic=topic).inc(res.n_records)
        if res.n_valid_records:
            m.records_clustered.labels(pipeline=name).inc(res.n_valid_records)
        if res.n_clustered:
            m.vectors_clustered.labels(pipeline=name).inc(res.n_clustered)
        for dl in res.dead_letters:
            m.records_dead_lettered.labels(pipeline=name, reason=dl.error.reason).inc()
        if res.n_windows:
            m.lstm_embed.observe(res.embed_seconds)
        for ev in res.events:
            kind = ev.get("event")
            if kind == "drift":
                m.drift_detections.labels(pipeline=name).inc()
                log.info("drift detected in %s (objective %.6g, batch %d)%s", name, ev["objective"],
                         ev["n_batches"],
                         "" if "reseed_accepted" not in ev else
                         f"; reseed {'accepted' if ev['reseed_accepted'] else 'rejected'}",
                         extra={"pipeline": name, **ev})
            elif kind == "reseed":
                log.info("reseed in %s (interval), total reseeds %d", name, ev["n_reseeds"],
                         extra={"pipeline": name, **ev})
            elif kind == "initialized":
                log.info("%s model initialized after %d points", name, ev["n_seen"],
                         extra={"pipeline": name, **ev})
        m.observe_model(name, pipeline.model)
        if hasattr(pipeline, "windower"):
            m.observe_windower(name, pipeline.windower)

    def _side_effects(self, name: str, res: BatchResult) -> list[tuple[str, str, bytes | None, bytes, list]]:
        out = []
        dlq = self.settings.dlq.topic
        if res.dead_letters:
            reasons: dict[str, int] = {}
            for dl in res.dead_letters:
                reasons[dl.error.reason] = reasons.get(dl.error.reason, 0) + 1
            log.info("%d bad record(s) in %s -> %s: %s", len(res.dead_letters), name,
                     dlq or "dropped (no dlq.topic)", reasons,
                     extra={"event": "dead_letter", "pipeline": name, "reasons": reasons})
        for dl in res.dead_letters:
            r = dl.record
            log.debug("dead-letter %s:%d@%d reason=%s", r.topic, r.partition, r.offset, dl.error.reason)
            if dlq is not None:
                out.append(("dlq", name, r.key, r.value,
                            dlq_headers(r, dl.error, pipeline=name, group_id=self.group_id,
                                        client_id=self.client_id)))
        topic = self.settings.output.topic
        if topic is not None:
            out.extend(("output", name, o.key, o.value, []) for o in res.outputs)
        return out

    async def _deliver(self, sends: list) -> None:
        """Send DLQ/output records and wait for every acknowledgement (retrying failures)."""
        if not sends:
            return
        backoff = self.settings.worker.retry_backoff_initial_seconds
        todo = sends
        while todo:
            futures = []
            for kind, name, key, value, headers in todo:
                topic = self.settings.dlq.topic if kind == "dlq" else self.settings.output.topic
                try:
                    fut = await self._producer.send(topic, value=value, key=key, headers=headers or None)
                except Exception as exc:  # buffer full / producer closed
                    fut = asyncio.get_running_loop().create_future()
                    fut.set_exception(exc)
                futures.append(fut)
            results = await asyncio.gather(*futures, return_exceptions=True)
            failed = []
            shrunk = 0
            for item, r in zip(todo, results):
                if not isinstance(r, BaseException):
                    if item[0] == "output":
                        self.metrics.output_records.labels(pipeline=item[1]).inc()
                    continue
                if item[0] == "dlq":
                    self.metrics.dlq_failures.labels(pipeline=item[1]).inc()
                    smaller = _without_value_if_too_large(item, r)
                    if smaller is not item:
                        shrunk += 1
                        item = smaller
                failed.append(item)
            if not failed:
                return
            if shrunk == len(failed):  # retrying verbatim could never succeed; resend at once
                todo = failed
                continue
            log.warning("%d dead-letter/output writes failed (%s); retrying in %.1fs", len(failed),
                        next(r for r in results if isinstance(r, BaseException)), backoff)
            if self._stopping.is_set():
                # The model already absorbed this batch but its side effects are not
                # durable: never checkpoint this state; a restart replays the batch.
                self._unsafe = True
                raise _Fatal("dead-letter writes failing during shutdown")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.worker.retry_backoff_max_seconds)
            todo = failed

    async def _caught_up(self) -> bool:
        consumer = self._consumer
        if consumer is None or not self._assigned:
            return False
        for tp in self._assigned:
            hw = consumer.highwater(tp)
            if hw is None:
                return False
            if self.offsets.get(tp, None) is None:
                try:
                    pos = await consumer.position(tp)
                except Exception:  # unassigned meanwhile (rebalance)
                    return False
                if pos < hw:
                    return False
            elif self.offsets[tp] < hw:
                return False
        return True

    async def _maybe_flush_and_checkpoint(self) -> None:
        now = time.monotonic()
        pending = any(p.n_pending for _, p in self.pipelines.values())
        if pending and self._pending_since is not None \
                and now - self._pending_since >= self.flush_linger_seconds and await self._caught_up():
            await self._flush_pipelines()
            await self._checkpoint_and_commit("flush")
            return
        ck = self.settings.checkpoint
        due_records = ck.interval_records and self._records_since_ckpt >= ck.interval_records
        due_time = ck.interval_seconds and now - self._last_ckpt_time >= ck.interval_seconds
        if (self._dirty and due_records) or (due_time and (self._dirty or self._assigned)):
            # also when idle: keeps streamkm_last_checkpoint_age_seconds a liveness signal
            await self._checkpoint_and_commit("interval")
        elif self._dirty and now - self._last_ckpt_time >= self.idle_checkpoint_seconds \
                and await self._caught_up():
            # idle: the cheapest moment to make progress durable and commit it
            await self._checkpoint_and_commit("idle")

    async def _flush_pipelines(self) -> None:
        sends = []
        for name, (topic, p) in self.pipelines.items():
            if not p.n_pending:
                continue
            res = await asyncio.to_thread(p.flush)
            self._account(name, topic, p, res)
            sends.extend(self._side_effects(name, res))
        self._fault("after_update")
        await self._deliver(sends)
        self._pending_since = None
        self._dirty = True

    async def _checkpoint_and_commit(self, reason: str) -> bool:
        """Durably save state + offsets, then commit the offsets of assigned partitions."""
        if self._unsafe:
            log.error("not checkpointing: dead-letter writes for absorbed records failed")
            return False
        state = self.state_dict()
        t0 = time.perf_counter()
        try:
            info = await asyncio.to_thread(self.store.save, state)
        except Exception:
            self.metrics.checkpoint_failures.inc()
            log.exception("checkpoint failed (%s)", reason)
            return False
        dt = time.perf_counter() - t0
        self.metrics.checkpoint_written(dt, info.size_bytes)
        self.last_checkpoint = info
        self.n_checkpoints += 1
        self._last_ckpt_time = time.monotonic()
        self._records_since_ckpt = 0
        self._dirty = False
        log.info("checkpoint %d written (%s) in %.3fs, %d bytes, offsets %s", info.sequence, reason, dt,
                 info.size_bytes, state["offsets"],
                 extra={"event": "checkpoint", "reason": reason, "sequence": info.sequence,
                        "seconds": dt, "bytes": info.size_bytes})
        self._fault("after_checkpoint")
        await self._commit(reason)
        self._fault("after_commit")
        return True

    async def _commit(self, reason: str) -> bool:
        consumer = self._consumer
        to_commit = {tp: off for tp, off in self.offsets.items() if tp in self._assigned}
        if consumer is None or not to_commit:
            return False
        if not self._coordinator_known():  # broker gone: don't block; the checkpoint has them
            self.metrics.commit_failures.inc()
            log.warning("offset commit skipped (%s): group coordinator unavailable", reason,
                        extra={"event": "commit_failed"})
            return False
        try:
            await asyncio.wait_for(consumer.commit(to_commit),
                                   min(self.settings.kafka.request_timeout_ms / 1000 + 5, 10.0))
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and _really_cancelled():
                raise
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed (%s): %s: %s", reason, type(exc).__name__, exc,
                        extra={"event": "commit_failed"})
            return False
        self.metrics.commits.inc()
        return True

    async def _update_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        for tp in list(self._assigned):
            hw = consumer.highwater(tp)
            off = self.offsets.get(tp)
            if hw is not None and off is not None:
                self.metrics.set_lag(tp.topic, tp.partition, hw - off)

    async def _on_revoked(self, revoked) -> None:
        revoked = set(revoked)
        async with self._lock:  # waits for the in-flight batch
            self._generation += 1
            if revoked and self._assigned and not self._unsafe:
                if self._dirty or any(tp in self.offsets for tp in revoked):
                    await self._checkpoint_and_commit("revoke")
            for tp in revoked:
                self.offsets.pop(tp, None)
                self.metrics.remove_partition(tp.topic, tp.partition)
            self._assigned -= revoked
            self.metrics.assigned_partitions.set(len(self._assigned))
            self.metrics.set_ready(False)
        if revoked:
            log.info("partitions revoked: %s", sorted(f"{tp.topic}:{tp.partition}" for tp in revoked),
                     extra={"event": "rebalance", "phase": "revoked", "n_partitions": len(revoked)})

    async def _on_assigned(self, assigned, consumer) -> None:
        assigned = set(assigned)
        async with self._lock:
            self._generation += 1
            self.metrics.rebalances.inc()
            positions = {}
            for tp in sorted(assigned, key=lambda t: (t.topic, t.partition)):
                mine = self.offsets.get(tp)
                try:
                    committed = await asyncio.wait_for(consumer.committed(tp), 10)
                except Exception as exc:  # keep going: our own offset (or the reset policy)
                    log.warning("committed offset of %s:%d unavailable (%s: %s)", tp.topic,
                                tp.partition, type(exc).__name__, exc)
                    committed = None
                cands = [x for x in (mine, committed) if x is not None]
                if cands:
                    target = max(cands)
                    consumer.seek(tp, target)
                    self.offsets[tp] = target
                    positions[f"{tp.topic}:{tp.partition}"] = target
                    if mine is not None and committed is not None and committed > mine:
                        log.info("%s:%d resumes at committed offset %d (another member processed "
                                 "%d..%d)", tp.topic, tp.partition, committed, mine, committed - 1)
                else:
                    positions[f"{tp.topic}:{tp.partition}"] = f"reset:{self.settings.kafka.auto_offset_reset}"
            for tp in list(self.offsets):
                if tp not in assigned:
                    del self.offsets[tp]
            self._assigned = assigned
            self.metrics.assigned_partitions.set(len(assigned))
        log.info("partitions assigned: %s", positions,
                 extra={"event": "rebalance", "phase": "assigned", "n_partitions": len(assigned)})

    async def _finish(self) -> None:
        if self._stopped:
            return
        self._stopping.set()
        try:
            async with self._lock:
                # Always a fresh checkpoint (its offsets are then committed); without a
                # broker it is only written, and the restart seeks to it.
                if self._restored and not self._unsafe:
                    await self._checkpoint_and_commit("shutdown")
        finally:
            await self._disconnect(final=True)
            self._unlock_directory()
            self._stopped = True
            log.info("worker stopped", extra={"event": "stopped"})


def _without_value_if_too_large(item: tuple, exc: BaseException) -> tuple:
    """A dead-letter send rejected as too large (by the producer's ``max_request_size`` or
    the broker) can never succeed verbatim: resend it without the value (key, original
    headers and provenance kept, plus ``streamkm.dlq.value-dropped-bytes``). Else *item*."""
    from aiokafka.errors import MessageSizeTooLargeError

    kind, name, key, value, headers = item
    if not isinstance(exc, MessageSizeTooLargeError) or value is None:
        return item
    r_topic = dict(headers).get("__connect.errors.topic", b"?").decode("utf-8", "replace")
    r_off = dict(headers).get("__connect.errors.offset", b"?").decode("utf-8", "replace")
    log.warning("dead-letter record for %s@%s is too large to send (%d bytes): sending it "
                "without its value", r_topic, r_off, len(value), extra={"event": "dead_letter"})
    return (kind, name, key, None, [*headers, ("streamkm.dlq.value-dropped-bytes", _s(len(value)))])


def _really_cancelled() -> bool:
    """True if the current task itself is being cancelled (not a stray CancelledError)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@contextlib.asynccontextmanager
async def _quietly(what: str):
    """Ignore errors of a best-effort close. aiokafka's stop() can raise a CancelledError
    of its own internal tasks when the broker is gone; only a cancellation of *this*
    task propagates."""
    try:
        yield
    except asyncio.CancelledError:
        if _really_cancelled():
            raise
        log.debug("%s: ignored internal cancellation", what)
    except Exception as exc:
        log.debug("%s failed: %s: %s", what, type(exc).__name__, exc)


def _kafka_errors():
    from aiokafka.errors import KafkaError

    return KafkaError


# ----------------------------------------------------------------------- entry
def _fault_hook_from_env(spec: str | None) -> Callable[[str], None] | None:
    """``STREAMKM_FAULT="point[:n]"``: SIGKILL this process the n-th time *point* is hit."""
    if not spec:
        return None
    point, _, n = spec.partition(":")
    remaining = [int(n) if n else 1]

    def hook(p: str) -> None:
        if p == point:
            remaining[0] -= 1
            if remaining[0] <= 0:
                os.kill(os.getpid(), signal.SIGKILL)

    return hook


async def _amain(settings, *, fault_hook=None) -> int:
    worker = Worker(settings, fault_hook=fault_hook)
    loop = asyncio.get_running_loop()
    stop_task: list[asyncio.Task] = []

    def _on_signal(signame: str) -> None:
        log.info("received %s: shutting down", signame, extra={"event": "signal"})
        if not stop_task:
            stop_task.append(loop.create_task(worker.shutdown()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, sig.name)
    run_task = asyncio.create_task(worker.run())
    await asyncio.wait({run_task})
    if stop_task:
        return 0 if await stop_task[0] else 1
    if run_task.exception() is not None:
        log.error("worker failed", exc_info=run_task.exception())
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m streamkm.service.worker [--config FILE]``: run one worker (no HTTP server)."""
    from streamkm.config import load_settings

    parser = argparse.ArgumentParser(prog="python -m streamkm.service.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="TOML config file (default: STREAMKM_CONFIG)")
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    logging.basicConfig(level=getattr(logging, settings.worker.log_level),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    hook = _fault_hook_from_env(os.environ.get("STREAMKM_FAULT"))
    return asyncio.run(_amain(settings, fault_hook=hook))


if __name__ == "__main__":
    sys.exit(main())

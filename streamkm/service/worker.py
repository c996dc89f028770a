"""The worker: one consumer-group member that keeps the pipelines' models current.

Lifecycle (start, run with reconnect/backoff, shutdown) and the consume loop. The order
of durability per batch is: update the model, await the dead-letter/output acks,
checkpoint state + next offsets atomically, commit exactly those offsets. The design
(where partitions resume, what a rebalance does, known limits) is in
docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from streamkm.checkpoint import CheckpointInfo, CheckpointStore
from streamkm.checkpoint.lock import DirectoryLock
from streamkm.kafka.client import getmany_unless, start_client, stop_quietly, unless_stopped
from streamkm.kafka.tls import explain_connection_error
from streamkm.ops.metrics import Metrics
from streamkm.pipeline import BatchResult, Pipeline, build_pipelines
from streamkm.service.accounting import account
from streamkm.service.delivery import DeliveryAborted, OutboundRecord, deliver, outbound_records
from streamkm.service.durability import Durability
from streamkm.service.faults import FaultHook
from streamkm.service.offsets import OffsetBook, OffsetsLostError, log_starts, within_log
from streamkm.service.policy import ASK_CAUGHT_UP, CheckpointPolicy, Progress, due
from streamkm.service.rebalance import RebalanceListener

if TYPE_CHECKING:
    from streamkm.config import Settings

__all__ = ["Worker", "STATE_FORMAT", "STATE_VERSION"]

log = logging.getLogger("streamkm.worker")

#: ``format`` / ``version`` of the worker state in a checkpoint (docs/architecture.md).
STATE_FORMAT = "streamkm.worker"
STATE_VERSION = 1

#: Smallest row assumed when sizing a batch by its bytes for ``worker.offload_min_rows``
#: (16 float32 = 64 bytes): one binary record can hold many rows.
_MIN_ROW_FLOATS = 16


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
        ``fault_hook(point: str)`` called at :data:`streamkm.service.faults.FAULT_POINTS`
        and passed to the CheckpointStore (tests kill the process there).
    bootstrap_servers : str, optional
        Overrides ``settings.kafka.bootstrap_servers`` (the embedded broker).
    pipelines : dict of str to Pipeline, optional
        Default :func:`streamkm.pipeline.build_pipelines`.
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

    def __init__(self, settings: Settings, *, metrics: Metrics | None = None, fault_hook: FaultHook | None = None,
                 bootstrap_servers: str | None = None, pipelines: Mapping[str, Pipeline] | None = None,
                 flush_linger_seconds: float = 0.5, idle_checkpoint_seconds: float = 1.0):
        if flush_linger_seconds < 0:
            raise ValueError(f"flush_linger_seconds must be >= 0, got {flush_linger_seconds}")
        if settings.group.enabled:
            raise ValueError("Worker runs the per-worker model, but group.enabled is true (the default): use "
                             "streamkm.service.group.GroupWorker, or set group.enabled = false")
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        self.fault_hook = fault_hook
        bootstrap = bootstrap_servers or settings.kafka.bootstrap_servers
        if bootstrap is None:
            raise ValueError("no bootstrap servers: set kafka.bootstrap_servers or pass bootstrap_servers "
                             "(e.g. an EmbeddedBroker's address)")
        self.bootstrap_servers: str = bootstrap
        self.pipelines: dict[str, Pipeline] = dict(pipelines if pipelines is not None else build_pipelines(settings))
        if not self.pipelines:
            raise ValueError("no pipeline enabled")
        for name, p in self.pipelines.items():
            if name != p.name or not p.topic:
                raise ValueError(f"pipeline {name!r}: must be keyed by its name ({p.name!r}) and have an input "
                                 f"topic (got {p.topic!r})")
        self._by_topic = {p.topic: p for p in self.pipelines.values()}
        if len(self._by_topic) != len(self.pipelines):
            raise ValueError("each pipeline needs its own input topic")
        ck = settings.checkpoint
        self.policy = CheckpointPolicy(interval_seconds=ck.interval_seconds, interval_records=ck.interval_records,
                                       flush_linger_seconds=float(flush_linger_seconds),
                                       idle_seconds=float(idle_checkpoint_seconds))
        self.store = CheckpointStore(ck.dir, keep=ck.keep, fault_hook=fault_hook,
                                     max_file_bytes=ck.max_file_bytes)
        self.durability = Durability(self.store, self.metrics,
                                     commit_timeout=min(settings.kafka.request_timeout_ms / 1000 + 5, 10.0),
                                     backoff_initial=settings.worker.retry_backoff_initial_seconds,
                                     backoff_max=settings.worker.retry_backoff_max_seconds)
        #: False if the final checkpoint at shutdown could not be written (the CLI exits 3).
        self.final_checkpoint_ok = True
        self._dir_lock = DirectoryLock(self.store.directory)
        self.group_id = settings.kafka.group_id
        self.client_id = settings.kafka.client_id
        self.metrics.set_consumer_group(self.group_id)
        self.book = OffsetBook()
        #: Offsets partitions were sought to on assignment, with where they came from, until
        #: the first high watermark of each is seen (:meth:`_check_log_ends`).
        self._resumed: dict[TopicPartition, tuple[int, str]] = {}
        #: After a checkpoint fallback (``checkpoint.on_fallback = "reread"``), what is still to
        #: be re-read: ``{"offsets": {partition key: the model's own offset}, "from_start":
        #: bool}`` (from_start: the first assignment re-reads partitions the model has no
        #: offset for from the log start). Checkpointed, so a restart before the re-read keeps
        #: it; None when nothing is pending.
        self._reread: dict[str, Any] | None = None
        self._generation = 0  # bumped by every revoke/assign
        self._lock = asyncio.Lock()
        self._consumer: Any = None
        self._producer: Any = None
        self._restored = False
        #: The state of the last durable checkpoint (or the one restored at start): a failed
        #: revoke rolls back to it.
        self._durable: dict[str, Any] | None = None
        #: kafka.on_offsets_lost = fail: partitions whose needed records retention deleted.
        self._offsets_lost: OffsetsLostError | None = None
        self._started = False
        self._stopping = asyncio.Event()
        self._stopped = False
        self._unsafe = False  # model advanced past offsets whose side effects failed
        self._connected = False
        self._last_fetch = 0.0
        self._pending_since: float | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._prefetch: asyncio.Future[tuple[int, dict[Any, list[Any]]]] | None = None
        self.n_batches = 0

    @property
    def offsets(self) -> dict[TopicPartition, int]:
        """Next offset per partition reflected in the models (the offsets book)."""
        return self.book.next

    @property
    def last_checkpoint(self) -> CheckpointInfo | None:
        """The last checkpoint written (or restored) by this worker."""
        return self.durability.last_checkpoint

    @property
    def n_checkpoints(self) -> int:
        """Checkpoints written by this process."""
        return self.durability.n_checkpoints

    @property
    def assignment(self) -> set[TopicPartition]:
        """Partitions currently assigned to this worker."""
        return set(self.book.assigned)

    # ------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Restore the newest valid checkpoint and prepare metrics (no network)."""
        if self._started:
            return
        self._dir_lock.acquire()
        self._started = True
        try:
            for p in self.pipelines.values():
                p.init_metrics(self.metrics)
            loaded = await asyncio.to_thread(self.store.load_latest)
        except BaseException:
            self._started = False
            self._dir_lock.release()
            raise
        if loaded is not None:
            state, info = loaded
            try:
                self._load_state(state)
            except (ValueError, TypeError, KeyError) as exc:
                self._started = False  # a refused start leaves the directory free
                self._dir_lock.release()
                raise ValueError(
                    f"checkpoint {info.sequence} in {self.settings.checkpoint.dir} does not match the "
                    f"configuration ({exc}); point checkpoint.dir elsewhere or restore the old settings"
                ) from exc
            log.info("restored checkpoint %d (offsets %s)", info.sequence, self.book.formatted(),
                     extra={"event": "restore", "sequence": info.sequence})
            self.durability.last_checkpoint = info
        if self.store.skipped and self.settings.checkpoint.on_fallback == "reread":
            # Offsets committed after the restored checkpoint (or any, if none was readable)
            # lie beyond what the model reflects: the next assignment of each partition
            # re-reads from the model's own offset instead.
            pending = self._reread or {"offsets": {}, "from_start": False}
            self._reread = {"offsets": {**self.book.formatted(), **pending["offsets"]},
                            "from_start": bool(pending["from_start"] or loaded is None)}
            log.warning("the newest checkpoint(s) %s are unreadable; restored %s: each partition is re-read from "
                        "the restored offsets, or from the log start where it has none (checkpoint.on_fallback)",
                        self.store.skipped, f"checkpoint {loaded[1].sequence}" if loaded is not None else "nothing",
                        extra={"event": "checkpoint_fallback"})
        if any(p.n_pending for p in self.pipelines.values()):
            self._pending_since = time.monotonic()
        for p in self.pipelines.values():
            p.observe(self.metrics, baseline=True)
        self._durable = copy.deepcopy(self.state_dict())
        self._restored = True

    def _load_state(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"checkpoint is not a worker state (format {state.get('format')!r})")
        if int(state.get("version", -1)) != STATE_VERSION:
            raise ValueError(f"unsupported worker state version {state.get('version')!r}")
        saved = state.get("pipelines", {})
        for name, p in self.pipelines.items():
            if name in saved:
                p.load_state_dict(saved[name])
            else:
                log.warning("checkpoint has no %r pipeline state: starting it fresh", name)
        self.book.restore(state.get("offsets", {}), self._by_topic)
        pending = state.get("reread_pending")
        if isinstance(pending, dict):  # a fallback whose re-read had not happened yet
            self._reread = {"offsets": {str(k): int(v) for k, v in dict(pending.get("offsets", {})).items()},
                            "from_start": bool(pending.get("from_start", False))}

    def state_dict(self) -> dict[str, Any]:
        """Worker state = pipelines' state + next offsets (the checkpoint layout)."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "group_id": self.group_id,
            "offsets": self.book.formatted(),
            "model_version": sum(int(p.model.n_batches_) for p in self.pipelines.values()),
            "pipelines": {name: p.state_dict() for name, p in self.pipelines.items()},
            **({"reread_pending": {"offsets": dict(self._reread["offsets"]),
                                   "from_start": bool(self._reread["from_start"])}}
               if self._reread is not None else {}),
        }

    async def run(self) -> None:
        """Consume until :meth:`shutdown`; reconnect with backoff when the broker is unreachable."""
        await self.start()
        self._run_task = asyncio.current_task()
        w = self.settings.worker
        backoff = w.retry_backoff_initial_seconds
        try:
            while not self._stopping.is_set():
                try:
                    # A consumer's start joins the group, which a rebalance can hold: not a shutdown.
                    connected, _ = await unless_stopped(self._connect(), self._stopping)
                    if not connected:
                        break
                    backoff = w.retry_backoff_initial_seconds
                    await self._consume_loop()
                except _Fatal:
                    raise
                except (TimeoutError, OSError, KafkaError) as exc:
                    if self._stopping.is_set():
                        break
                    self.metrics.broker_errors.inc()
                    why = await explain_connection_error(exc, self.settings.kafka.client_kwargs(self.bootstrap_servers))
                    log.warning("broker unreachable or failing (%s); retrying in %.1fs", why, backoff,
                                extra={"event": "broker_error"})
                    await self._disconnect(final=False)
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), backoff)
                    backoff = min(backoff * 2, w.retry_backoff_max_seconds)
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
        except TimeoutError:
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
        """Partitions assigned, model restored, fetching recently, and checkpoints and commits succeeding."""
        window = max(5.0, 3 * self.settings.kafka.fetch_timeout_ms / 1000)
        return bool(self._restored and self._connected and self.book.assigned
                    and not self._stopping.is_set() and self._coordinator_known()
                    and not self.durability.blocked  # progress is not being made durable
                    and time.monotonic() - self._last_fetch < window)

    def _coordinator_known(self) -> bool:
        # aiokafka marks the group coordinator dead when the broker stops answering
        # (heartbeats/commits fail); there is no public accessor for it.
        coordinator = getattr(self._consumer, "_coordinator", None)
        return coordinator is None or getattr(coordinator, "coordinator_id", 0) is not None

    # ------------------------------------------------------------ connection
    def _fault(self, point: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(point)

    async def _connect(self) -> None:
        if self._consumer is not None:
            return
        kafka = self.settings.kafka
        timeout = kafka.request_timeout_ms / 1000 + 5
        if self.settings.dlq.topic is not None or self.settings.output.topic is not None:
            producer = AIOKafkaProducer(**kafka.client_kwargs(self.bootstrap_servers), acks="all", linger_ms=5)
            await start_client(producer, timeout)
            self._producer = producer
        consumer = AIOKafkaConsumer(**kafka.consumer_kwargs(self.bootstrap_servers))
        consumer.subscribe(sorted(self._by_topic), listener=RebalanceListener(
            self._on_revoked, lambda assigned: self._on_assigned(assigned, consumer)))
        await start_client(consumer, timeout)
        self._consumer = consumer
        self._connected = True
        log.info("connected to %s as group %s", self.bootstrap_servers, self.group_id, extra={"event": "connected"})

    async def _disconnect(self, *, final: bool) -> None:
        self._connected = False
        self.metrics.set_ready(False)
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        if consumer is not None:
            await stop_quietly(consumer, "consumer stop")
        if producer is not None:
            await stop_quietly(producer, "producer stop")
        if not final:
            self.book.assigned = set()

    # ------------------------------------------------------------ consume loop
    async def _fetch(self) -> tuple[int, dict[Any, list[Any]]]:
        """One ``getmany``, with the rebalance generation it started in."""
        kafka = self.settings.kafka
        generation = self._generation
        # Abandoned on a stop request: a rebalance can hold getmany until every member rejoined.
        batch = await getmany_unless(self._consumer, self._stopping, timeout_ms=kafka.fetch_timeout_ms,
                                     max_records=kafka.max_records)
        self._last_fetch = time.monotonic()
        return generation, {} if batch is None else batch

    async def _consume_loop(self) -> None:
        # While a large batch is processed in a thread, the next getmany() runs on the
        # event loop (aiokafka unpacks records in Python there), so fetching and
        # processing overlap. Batches are still processed one at a time, in fetch order;
        # a prefetched batch is never processed after a stop request, and one fetched
        # across a rebalance is handled like any stale batch (see _process).
        self._prefetch = None
        try:
            while not self._stopping.is_set():
                if self._offsets_lost is not None:
                    raise self._offsets_lost
                fetch, self._prefetch = self._prefetch, None
                generation, batch = await (fetch if fetch is not None else self._fetch())
                async with self._lock:
                    if self._stopping.is_set() and not batch:
                        break
                    try:
                        if batch:
                            await self._process(batch, stale=generation != self._generation)
                        await self._maybe_checkpoint()
                    except BaseException:
                        # A model update may be half applied (or still running in its
                        # thread after a cancellation): its state no longer matches the
                        # offsets, so it must never be checkpointed. A restart replays
                        # from the last checkpoint.
                        self._unsafe = True
                        raise
                self.book.report_lag(self._consumer, self.metrics)
                self._check_log_ends()
                self.metrics.set_ready(self.is_ready())
        finally:
            fetch, self._prefetch = self._prefetch, None
            if fetch is not None:
                fetch.cancel()
                with contextlib.suppress(BaseException):
                    await fetch

    def _check_log_ends(self) -> None:
        """Warn once per assignment about a partition that resumed beyond its log end.

        The log end is the high watermark of the first fetch response after the seek (not
        ListOffsets, which Tansu answers wrongly after multi-record batches). Records below
        the resume offset are never absorbed again, so such a partition consumes nothing
        until its log reaches that offset; the metrics show it as
        ``streamkm_checkpoint_offset_beyond_end_records`` (set with the lag).
        """
        if not self._resumed or self._consumer is None:
            return
        for tp, (offset, source) in sorted(self._resumed.items(), key=lambda kv: (kv[0].topic, kv[0].partition)):
            end = self._consumer.highwater(tp)
            if end is None:
                continue
            del self._resumed[tp]
            if offset > end:
                log.warning("%s:%d: %s offset %d lies beyond the log end %d (%d records ahead): records below %d "
                            "are skipped, so nothing is consumed until the log reaches it. Was the checkpoint "
                            "made against another broker or an earlier incarnation of the topic?",
                            tp.topic, tp.partition, source, offset, end, offset - end, offset,
                            extra={"event": "offset_beyond_end", "topic": tp.topic, "partition": tp.partition,
                                   "offset": offset, "log_end": end, "source": source})

    def _start_prefetch(self) -> None:
        if self._prefetch is None and not self._stopping.is_set():
            self._prefetch = asyncio.ensure_future(self._fetch())

    def _offload(self, recs: list[Any], pipeline: Pipeline) -> bool:
        """Whether a batch runs in a worker thread: always for some pipelines, else from
        ``worker.offload_min_rows`` rows (a binary record may hold many rows, so its size counts)."""
        if pipeline.always_offload:
            return True
        limit = self.settings.worker.offload_min_rows
        if len(recs) >= limit:
            return True
        n_bytes = sum(len(r.value) for r in recs if r.value is not None)
        return n_bytes >= limit * 4 * _MIN_ROW_FLOATS

    async def _process(self, batch: dict[Any, list[Any]], *, stale: bool = False) -> None:
        """Absorb one fetched batch: each record at most once, never leaving a gap
        (:meth:`OffsetBook.absorbable`)."""
        by_pipe: dict[str, list[Any]] = {}
        last: dict[TopicPartition, int] = {}
        for tp in sorted(batch, key=lambda t: (t.topic, t.partition)):
            if not batch[tp] or tp not in self.book.assigned:
                continue  # revoked meanwhile: the new owner re-reads them from the commit
            recs = self.book.absorbable(tp, batch[tp], stale=stale)
            if recs is None:
                expected = self.book.next[tp]
                log.debug("%s:%d: batch from before a rebalance starts at %d, expected %d; seeking back",
                          tp.topic, tp.partition, batch[tp][0].offset, expected)
                self._consumer.seek(tp, expected)
                continue
            if not recs:
                continue
            by_pipe.setdefault(self._by_topic[tp.topic].name, []).extend(recs)
            last[tp] = recs[-1].offset + 1
        if not by_pipe:
            return
        self.n_batches += 1
        sends: list[OutboundRecord] = []
        for name, pipeline in self.pipelines.items():
            recs = by_pipe.get(name)
            if not recs:
                continue
            t0 = time.perf_counter()
            if self._offload(recs, pipeline):
                if not stale:
                    self._start_prefetch()
                res = await asyncio.to_thread(pipeline.process, recs)
            else:
                res = pipeline.process(recs)
            self.metrics.batch_processing.labels(pipeline=name).observe(time.perf_counter() - t0)
            sends.extend(self._account(pipeline, res))
        self._fault("after_update")
        await self._deliver(sends)
        self.book.next.update(last)
        self.durability.absorbed(sum(len(v) for v in by_pipe.values()))
        if self._pending_since is None and any(p.n_pending for p in self.pipelines.values()):
            self._pending_since = time.monotonic()

    def _account(self, pipeline: Pipeline, res: BatchResult) -> list[OutboundRecord]:
        account(self.metrics, pipeline, res)
        return outbound_records(res, pipeline=pipeline.name, pipeline_class=type(pipeline).__name__,
                                dlq_topic=self.settings.dlq.topic, output_topic=self.settings.output.topic,
                                group_id=self.group_id, client_id=self.client_id)

    async def _deliver(self, sends: list[OutboundRecord]) -> None:
        if not sends:
            return
        w = self.settings.worker
        try:
            await deliver(self._producer, sends, metrics=self.metrics, backoff_initial=w.retry_backoff_initial_seconds,
                          backoff_max=w.retry_backoff_max_seconds, stopping=self._stopping.is_set)
        except DeliveryAborted as exc:
            # The model already absorbed this batch but its side effects are not
            # durable: never checkpoint this state; a restart replays the batch.
            self._unsafe = True
            raise _Fatal(str(exc)) from None

    async def _maybe_checkpoint(self) -> None:
        d = self.durability
        progress = Progress(now=time.monotonic(), last_checkpoint_at=d.last_at,
                            records_since_checkpoint=d.records_since, dirty=d.dirty,
                            pending=any(p.n_pending for p in self.pipelines.values()),
                            pending_since=self._pending_since, has_assignment=bool(self.book.assigned))
        if self.durability.in_backoff():
            return  # a failed checkpoint is retried only when its backoff expires
        reason = due(progress, self.policy)
        if reason == ASK_CAUGHT_UP:
            reason = due(progress, self.policy, caught_up=await self.book.caught_up(self._consumer))
        if reason == "flush":
            await self._flush_pipelines()
        if reason is not None:
            await self._checkpoint_and_commit(reason)

    async def _flush_pipelines(self) -> None:
        sends: list[OutboundRecord] = []
        for p in self.pipelines.values():
            if p.n_pending:
                res = await asyncio.to_thread(p.flush)
                sends.extend(self._account(p, res))
        self._fault("after_update")
        await self._deliver(sends)
        self._pending_since = None
        self.durability.dirty = True

    # ------------------------------------------------------------ durability
    async def _checkpoint_and_commit(self, reason: str) -> bool:
        """Durably save state + offsets, then commit the offsets of assigned partitions."""
        if self._unsafe:
            log.error("not checkpointing: dead-letter writes for absorbed records failed")
            return False
        state = self.state_dict()
        if await self.durability.checkpoint(state, reason) is None:
            return False
        self._durable = await asyncio.to_thread(copy.deepcopy, state)  # what a failed revoke rolls back to
        self._fault("after_checkpoint")
        await self.durability.commit(self._consumer, self.book.committable(), reason,
                                     coordinator_known=self._coordinator_known)
        self._fault("after_commit")
        return True

    # ------------------------------------------------------------ rebalances
    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:  # waits for the in-flight batch
            self._generation += 1
            if revoked and self.book.assigned and not self._unsafe:
                if self.durability.dirty or any(tp in self.book.next for tp in revoked):
                    if not await self._checkpoint_and_commit("revoke") and self.durability.dirty \
                            and not self._unsafe:
                        self._roll_back(revoked)
            # The offsets stay in the book: forgetting them would resume a partition that comes
            # back below what the model holds.
            for tp in revoked:
                self.metrics.remove_partition(tp.topic, tp.partition)
                self._resumed.pop(tp, None)
            self.book.assigned -= revoked
            self.metrics.assigned_partitions.set(len(self.book.assigned))
            self.metrics.set_ready(False)
        if revoked:
            log.info("partitions revoked: %s", sorted(f"{tp.topic}:{tp.partition}" for tp in revoked),
                     extra={"event": "rebalance", "phase": "revoked", "n_partitions": len(revoked)})

    def _roll_back(self, revoked: set[TopicPartition]) -> None:
        """The revoke's checkpoint failed: the model holds records of partitions leaving it that
        no checkpoint or commit covers, and their next owner re-reads them from the last commit.
        Roll the model and the offsets back to the last durable checkpoint, so no record stays in
        two models; partitions kept re-read from there (as after a crash)."""
        assert self._durable is not None
        before = self.book.formatted()
        self._load_state(copy.deepcopy(self._durable))
        self.durability.dirty = False
        self.durability.records_since = 0
        for tp in self.book.assigned - revoked:
            off = self.book.next.get(tp)
            if off is not None and self._consumer is not None:
                self._consumer.seek(tp, off)
        for p in self.pipelines.values():
            p.observe(self.metrics, baseline=True)
        self.metrics.model_rollbacks.inc()
        log.warning("the revoke's checkpoint failed: rolled the model back to the last durable checkpoint "
                    "(offsets %s, were %s); the records after it are re-read by whoever owns their "
                    "partitions", self.book.formatted(), before, extra={"event": "model_rollback"})

    async def _on_assigned(self, assigned: set[TopicPartition], consumer: Any) -> None:
        async with self._lock:
            self._generation += 1
            self.metrics.rebalances.inc()
            positions: dict[str, int | str] = {}
            self._resumed = {}
            starts = await log_starts(consumer, assigned)
            for tp in sorted(assigned, key=lambda t: (t.topic, t.partition)):
                mine = self.book.next.get(tp)
                try:
                    committed = await asyncio.wait_for(consumer.committed(tp), 10)
                except Exception as exc:  # keep going: our own offset (or the reset policy)
                    log.warning("committed offset of %s:%d unavailable (%s: %s)", tp.topic, tp.partition,
                                type(exc).__name__, exc)
                    committed = None
                target = self.book.resume_target(tp, committed)
                source = "checkpoint" if target == mine else "committed"
                reread = await self._reread_target(consumer, tp, mine, committed)
                if reread is not None:
                    target, source = reread
                if target is None:
                    positions[f"{tp.topic}:{tp.partition}"] = f"reset:{self.settings.kafka.auto_offset_reset}"
                    continue
                target = self._within_log(tp, target, starts)
                if target is None:  # retention deleted what the model needs: the loop stops
                    consumer.pause(tp)
                    positions[f"{tp.topic}:{tp.partition}"] = "lost"
                    continue
                consumer.seek(tp, target)
                self.book.next[tp] = target
                self._resumed[tp] = (target, source)
                positions[f"{tp.topic}:{tp.partition}"] = target
                if mine is not None and committed is not None and committed > mine and target == committed:
                    log.info("%s:%d resumes at committed offset %d (another member processed %d..%d)",
                             tp.topic, tp.partition, committed, mine, committed - 1)
            # Offsets of partitions not assigned now are kept: one that comes back resumes at
            # max(own, committed), never below what the model already reflects.
            self.book.assigned = assigned
            # A fetch started while this callback awaited the broker (log starts, committed
            # offsets) may hold records from before the seeks above: it is stale too.
            self._generation += 1
            if self._reread is not None:
                self._reread["from_start"] = False  # only the first assignment after the fallback
                if not self._reread["offsets"]:
                    self._reread = None
            self.metrics.assigned_partitions.set(len(assigned))
        log.info("partitions assigned: %s", positions,
                 extra={"event": "rebalance", "phase": "assigned", "n_partitions": len(assigned)})

    def _within_log(self, tp: TopicPartition, target: int, starts: Mapping[TopicPartition, int]) -> int | None:
        """*target*, or what ``kafka.on_offsets_lost`` makes of it when the log starts after it
        (:func:`~streamkm.service.offsets.within_log`); on "fail", the error the loop raises
        (exit 4) collects the partition."""
        got = within_log(tp, target, starts.get(tp), policy=self.settings.kafka.on_offsets_lost, metrics=self.metrics)
        if got is None:
            lost = dict(self._offsets_lost.lost) if self._offsets_lost is not None else {}
            lost[tp] = (target, starts[tp])
            self._offsets_lost = OffsetsLostError(lost)
        return got

    async def _reread_target(self, consumer: Any, tp: TopicPartition, mine: int | None,
                             committed: int | None) -> tuple[int, str] | None:
        """After a checkpoint fallback, where *tp* re-reads from: the model's own offset, else (first
        assignment) the log start; None if nothing is pending for it. Done once per partition:
        the pending entry is dropped here, and the caller seeks at once."""
        if self._reread is None:
            return None
        key = f"{tp.topic}:{tp.partition}"
        offsets = self._reread["offsets"]
        if key in offsets:
            target, source = int(offsets[key]), "checkpoint"
        elif self._reread["from_start"] and mine is None:
            try:
                target = int((await asyncio.wait_for(consumer.beginning_offsets([tp]), 10))[tp])
            except Exception as exc:  # never abort the assignment: the reset policy decides
                log.error("%s:%d: log start unavailable (%s: %s); the re-read after the checkpoint fallback "
                          "falls back to kafka.auto_offset_reset", tp.topic, tp.partition, type(exc).__name__, exc)
                return None
            source = "log start"
        else:
            return None
        offsets.pop(key, None)
        if committed is not None and committed > target:
            log.warning("%s:%d: re-reading %d..%d, committed after the checkpoint the model was restored from",
                        tp.topic, tp.partition, target, committed - 1,
                        extra={"event": "checkpoint_fallback_reread", "topic": tp.topic, "partition": tp.partition,
                               "offset": target, "committed": committed})
        return target, source

    async def _finish(self) -> None:
        if self._stopped:
            return
        self._stopping.set()
        try:
            async with self._lock:
                # Always a fresh checkpoint (its offsets are then committed); without a
                # broker it is only written, and the restart seeks to it.
                if self._restored and not self._unsafe:
                    self.final_checkpoint_ok = await self._checkpoint_and_commit("shutdown")
        finally:
            await self._disconnect(final=True)
            self._dir_lock.release()
            self._stopped = True
            log.info("worker stopped", extra={"event": "stopped"})


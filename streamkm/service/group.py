"""The group-model worker: one model per consumer group, kept on Kafka (``group.enabled``).

Three cooperating parts per member, all on one event loop:

- the **consume loop** decodes input records, cuts each partition's records into
  chunks (:class:`~streamkm.group.chunker.GroupChunker`), assigns them against the
  newest model version, delivers the output and dead-letter records, then produces
  the chunk statistics to the stats topic (their own producer, ``acks=all``, in send
  order) and goes on fetching while the broker acknowledges them: a chunk counts as sent
  only once acknowledged, and against ``group.max_in_flight`` from the moment it is sent;
- the **follower** reads the model topic and hands every newer version to the
  chunkers; a worker whose statistics were not folded (a re-read, a race with a
  partition's previous owner) realigns the partition to the model's offset;
- the **reducer** runs only on the member the group assigned the pipeline's stats
  partition (group membership is the lease). It restores the newest snapshot from
  the model topic, folds the stats log from there (:class:`~streamkm.group.GroupModel`)
  and publishes versions and, now and then, snapshots.

No local checkpoint: the group's progress is the model's per-partition offsets.
Kafka commits follow the model, for tooling only. Design and guarantees:
docs/operations.md ("The group model").
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from streamkm.cluster import TRANSITIONS
from streamkm.group import OUTCOMES, ChunkStats, GroupModel, ModelVersion, WireError, partition_key
from streamkm.group.chunker import GroupChunker
from streamkm.group.messages import (
    KIND_SNAPSHOT,
    KIND_VERSION,
    IdleMarker,
    read_stats_log,
    resume_message,
    resume_state,
    snapshot_state,
)
from streamkm.group.rounds import RoundFold
from streamkm.group.wire import decode, encode
from streamkm.kafka.client import getmany_unless, start_client, stop_quietly, unless_stopped
from streamkm.kafka.embedded import create_topics
from streamkm.kafka.tls import explain_connection_error
from streamkm.ops.metrics import Metrics
from streamkm.pipeline import BatchResult, Pipeline
from streamkm.pipeline.sequence import SequencePipeline
from streamkm.pipeline.vectors import VectorPipeline
from streamkm.service.accounting import account
from streamkm.service.delivery import DeliveryAborted, OutboundRecord, deliver, outbound_records
from streamkm.service.faults import FaultHook
from streamkm.service.offsets import OffsetsLostError, log_starts, within_log
from streamkm.service.rebalance import RebalanceListener

if TYPE_CHECKING:
    from streamkm.config import Settings

__all__ = ["GROUP_PIPELINES", "GroupConfigError", "GroupWorker", "ModelFollower", "config_hash",
           "enabled_pipelines", "group_sequence_pipeline", "group_topics", "group_vector_pipeline", "input_topic",
           "load_snapshot", "new_group_model", "resume_key", "snapshot_key"]

log = logging.getLogger("streamkm.group")

_POLL_MS = 200

#: Largest batch of statistics messages the stats producer sends in one request.
_STATS_BATCH_BYTES = 8 * 2**20


#: The pipelines that run on the group model, one stats partition each: partition i holds
#: pipeline GROUP_PIPELINES[i] (fixed, so enabling one never moves another's log).
GROUP_PIPELINES = ("vectors", "sequence")

#: The settings section of each pipeline's input topic.
_INPUT = {"vectors": "vectors_topic", "sequence": "events_topic"}


def enabled_pipelines(settings: Settings) -> list[str]:
    """The group pipelines these settings run, in :data:`GROUP_PIPELINES` order."""
    out = []
    if settings.input.vectors_enabled and settings.kafka.vectors_topic is not None:
        out.append("vectors")
    if settings.sequence.enabled and settings.kafka.events_topic is not None:
        out.append("sequence")
    return out


def input_topic(settings: Settings, pipeline: str) -> str | None:
    """The input topic of *pipeline* (None if unset)."""
    return getattr(settings.kafka, _INPUT[pipeline])


def _lstm_hash(settings: Settings) -> str | None:
    from streamkm.sequence import LSTMEncoder

    path = settings.sequence.lstm_path
    return None if path is None else LSTMEncoder.load(path).content_hash


def config_hash(settings: Settings, pipeline: str = "vectors") -> str:
    """Short SHA-256 of the settings that determine *pipeline*'s fold (model, drift, group
    identity; for the sequence pipeline also the windows and the LSTM weights)."""
    g = settings.group
    model = settings.model if pipeline == "vectors" else settings.sequence.model
    doc: dict[str, Any] = {"model": model.model_dump(mode="json"),
                           "drift": settings.drift.model_dump(mode="json"),
                           "identity_threshold": g.identity_threshold,
                           "chunk_rows": g.chunk_rows}
    if g.ordering != "arrival":  # unchanged hashes for configurations made before the option
        doc["ordering"] = g.ordering
    if pipeline == "sequence":
        seq = settings.sequence
        doc["sequence"] = {"windows": seq.windower_kwargs(), "pooling": seq.pooling, "normalize": seq.normalize,
                           "lstm": _lstm_hash(settings)}
    elif pipeline != "vectors":
        raise ValueError(f"no group pipeline {pipeline!r} (expected one of {GROUP_PIPELINES})")
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def group_topics(settings: Settings) -> list[tuple[str, int, dict[str, str]]]:
    """``(topic, partitions, topic configs)`` of the topics the group model needs: the stats
    topic (one partition per pipeline of :data:`GROUP_PIPELINES`), the compacted model topic,
    and the events topic if set. Both may carry messages up to ``group.max_message_bytes``."""
    size = {"max.message.bytes": str(settings.group.max_message_bytes)}
    out = [(settings.group_stats_topic, len(GROUP_PIPELINES), size),
           (settings.group_model_topic, 1, {**size, "cleanup.policy": "compact"})]
    if settings.group.events_topic:
        out.append((settings.group.events_topic, 1, {}))
    return out


def new_group_model(settings: Settings, pipeline: str) -> GroupModel:
    """A fresh fold of *pipeline* as the reducer builds it from *settings*."""
    s = settings
    model = s.model if pipeline == "vectors" else s.sequence.model
    return GroupModel(pipeline=pipeline, model_kwargs=model.estimator_kwargs(),
                      drift_kwargs=s.drift.monitor_kwargs() if s.drift.enabled else None,
                      reseed_on_drift=s.drift.reseed_on_drift, identity_threshold=s.group.identity_threshold,
                      config_hash=config_hash(s, pipeline))


def group_vector_pipeline(settings: Settings, *, member: str, topic: str | None = None,
                          emit_outputs: bool | None = None) -> tuple[GroupChunker, VectorPipeline]:
    """The vectors pipeline on the group model: a :class:`VectorPipeline` whose core is a
    :class:`GroupChunker`, as a member runs it (and ``streamkm replay``). With ``group.ordering =
    "rounds"`` the chunker sends rows (:mod:`streamkm.group.rounds`)."""
    g, m = settings.group, settings.model
    topic = topic if topic is not None else settings.kafka.vectors_topic
    assert topic is not None
    chunker = GroupChunker(pipeline="vectors", batch_rows=g.chunk_rows, sample_rows=g.sample_rows,
                           seed=0 if m.seed is None else int(m.seed), member=member,
                           raw=g.ordering == "rounds")
    chunker.set_topic(topic)
    pipe = VectorPipeline(model_kwargs=m.estimator_kwargs(), topic=topic, fmt=settings.input.format,
                          dim=settings.input.dimension, max_record_bytes=settings.input.max_record_bytes,
                          batch_rows=g.chunk_rows,
                          emit_outputs=settings.output.topic is not None if emit_outputs is None else emit_outputs,
                          output_format=settings.output.format, core=chunker)
    return chunker, pipe


def group_sequence_pipeline(settings: Settings, *, member: str, topic: str | None = None,
                            emit_outputs: bool | None = None) -> tuple[GroupChunker, SequencePipeline]:
    """The sequence pipeline on the group model: each source partition has its own windows, and
    every chunk of window embeddings says where they stand (:attr:`ChunkStats.resume`), so they
    move with the partition (docs/operations.md, "The sequence pipeline on the group model")."""
    from streamkm.sequence import LSTMEncoder

    g, seq = settings.group, settings.sequence
    topic = topic if topic is not None else settings.kafka.events_topic
    assert topic is not None and seq.lstm_path is not None
    m = seq.model
    chunker = GroupChunker(pipeline="sequence", batch_rows=g.chunk_rows, sample_rows=g.sample_rows,
                           seed=0 if m.seed is None else int(m.seed), member=member,
                           raw=g.ordering == "rounds")
    chunker.set_topic(topic)
    pipe = SequencePipeline(
        encoder=LSTMEncoder.load(seq.lstm_path), topic=topic, windower_kwargs=seq.windower_kwargs(),
        model_kwargs=m.estimator_kwargs(), n_features=seq.n_features, pooling=seq.pooling,
        normalize=seq.normalize, max_record_bytes=settings.input.max_record_bytes, batch_rows=g.chunk_rows,
        emit_outputs=settings.output.topic is not None if emit_outputs is None else emit_outputs,
        output_format=settings.output.format, core=chunker)
    return chunker, pipe


def snapshot_key(pipeline: str) -> bytes:
    """Model-topic key of a pipeline's reducer snapshots (versions are keyed by the pipeline)."""
    return f"{pipeline}#snapshot".encode()


def resume_key(pipeline: str, key: str) -> bytes:
    """Model-topic key of where a source partition's per-partition state (the sequence
    pipeline's open windows) stands after its last accepted chunk."""
    return f"{pipeline}#resume#{key}".encode()


@dataclass(slots=True)
class _Lane:
    """One pipeline a member runs on the group model: its input topic, chunker and stats partition."""

    name: str
    topic: str
    chunker: GroupChunker
    pipe: VectorPipeline | SequencePipeline
    stats_tp: TopicPartition

    @property
    def windows(self) -> SequencePipeline | None:
        """The pipeline if its partitions carry state (open windows) that moves with them."""
        return self.pipe if isinstance(self.pipe, SequencePipeline) else None


@dataclass(frozen=True, slots=True)
class _LocalRecord:
    """A stats-log message this member wrote, as acknowledged (its offset from the broker):
    what the reducer would fetch back at that offset, byte for byte."""

    offset: int
    value: bytes


@dataclass(slots=True)
class _InFlight:
    stats_offset: int
    tp: TopicPartition
    end: int


@dataclass(slots=True)
class _Unacked:
    """Statistics of one :meth:`GroupWorker._send` handed to the producer, not yet acknowledged.

    ``futures`` may be shorter than ``stats`` (the producer refused to queue the rest: they are
    resent in order). ``epochs``: each chunk's partition epoch when it was sent; a partition
    realigned or revoked since then does not count the chunk in flight once it is acknowledged.
    """

    lane: _Lane
    stats: list[ChunkStats]
    values: list[bytes]
    futures: list[Any]
    epochs: list[int]


class _Stop(Exception):
    """Raised inside the loop to stop (delivery aborted while stopping)."""


class GroupConfigError(ValueError):
    """The group's topics do not fit this member's settings (a user error: exit 2)."""


def _fatal_send_error(exc: KafkaError) -> None:
    """Errors a retry cannot fix end the member with a message naming the setting."""
    from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

    if isinstance(exc, MessageSizeTooLargeError | RecordListTooLargeError):
        raise GroupConfigError(f"a statistics message is larger than the producer or topic allows ({exc}); raise "
                               "group.max_message_bytes and the topic's max.message.bytes, or lower "
                               "model.n_clusters x dimension") from None


class ModelFollower:
    """Reads the model topic from its start and keeps the newest version (and snapshot) per pipeline.

    Tansu does not compact; the follower keeps the last value per key itself, as a
    reader of a compacted topic would.
    """

    def __init__(self, consumer: Any, topic: str):
        self.consumer = consumer
        self.topic = topic
        self.latest: dict[str, ModelVersion] = {}
        self.snapshots: dict[str, dict[str, Any]] = {}
        #: (pipeline, "topic:partition") -> (its end offset, the furthest partition resume as bytes,
        #: decoded on use).
        self.resumes: dict[tuple[str, str], tuple[int | None, bytes]] = {}
        self.caught_up = asyncio.Event()
        self.changed = asyncio.Event()
        self.n_invalid = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        tps = [TopicPartition(self.topic, p) for p in sorted(await self._partitions())]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        self._tps = tps
        self._task = asyncio.create_task(self._run(), name="streamkm-model-follower")

    async def _partitions(self) -> set[int]:
        for _ in range(50):
            parts = self.consumer.partitions_for_topic(self.topic)
            if parts:
                return set(parts)
            await self.consumer._client.force_metadata_update()  # topic just created
            await asyncio.sleep(0.1)
        raise RuntimeError(f"model topic {self.topic!r} has no partitions")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                batch = await self.consumer.getmany(timeout_ms=_POLL_MS)
            except KafkaError as exc:  # keep following: the workers depend on it
                log.warning("model topic %s: fetch failed (%s); retrying in %.1fs", self.topic, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, 5.0)
                continue
            backoff = 0.2
            for recs in batch.values():
                for rec in recs:
                    try:
                        self._apply(rec)
                    except Exception as exc:  # a poison message must not stop the follower
                        self.n_invalid += 1
                        log.error("model topic %s@%d: unusable message (%s: %s)", rec.topic, rec.offset,
                                  type(exc).__name__, exc, extra={"event": "model_message_invalid"})
            if not self.caught_up.is_set() and await self._at_end():
                self.caught_up.set()
                self.changed.set()

    async def read_to_end(self, stop: asyncio.Event, timeout: float) -> bool:
        """Wait until every model-topic message written before this call has been applied
        (a reducer started by a rebalance must see its predecessor's handover: the last version
        and snapshot). False if *stop* is set first, *timeout* passes, or the end is unknown."""
        try:
            ends = await asyncio.wait_for(self.consumer.end_offsets(self._tps), 10)
        except Exception as exc:
            log.warning("model topic %s: end offsets unavailable (%s: %s)", self.topic, type(exc).__name__, exc)
            return False
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            # position() moves when getmany() hands records out, and _run applies them before it
            # next yields, so a position at the end means those messages are applied.
            behind = False
            for tp in self._tps:
                if await self.consumer.position(tp) < ends[tp]:
                    behind = True
            if not behind:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return False

    def raise_if_failed(self) -> None:
        """The follower stopped on an unexpected error: the member must not go on without it."""
        task = self._task
        if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
            raise RuntimeError(f"the model follower failed: {task.exception()}")

    async def _at_end(self) -> bool:
        for tp in self._tps:
            hw = self.consumer.highwater(tp)
            if hw is None or await self.consumer.position(tp) < hw:
                return False
        return True

    def _apply(self, rec: Any) -> None:
        key = rec.key or b""
        if b"#resume#" in key:  # bytes too: only a member assigned the partition decodes one
            pipeline, _, part = key.decode("utf-8", "replace").partition("#resume#")
            end = _header_int(rec.headers, "end_offset")
            held = self.resumes.get((pipeline, part))
            # The furthest one: a zombie reducer's or a refold's late copy of an older one is kept out.
            if held is None or end is None or held[0] is None or end >= held[0]:
                self.resumes[(pipeline, part)] = (end, rec.value)
                self.changed.set()
            return
        if key.endswith(b"#snapshot"):
            # Kept as bytes: only a new reducer decodes one (off the event loop), and only the newest.
            self.snapshots[key[:-len(b"#snapshot")].decode("utf-8", "replace")] = {
                "offset": rec.offset, "value": rec.value}
            return
        got = decode(rec.value)
        if isinstance(got, WireError) or got[0] != KIND_VERSION:
            self.n_invalid += 1
            log.warning("model topic %s:%d@%d: not a model version (%s)", rec.topic, rec.partition, rec.offset,
                        got if isinstance(got, WireError) else got[0])
            return
        try:
            v = ModelVersion.from_state(got[1])
        except (ValueError, TypeError) as exc:
            self.n_invalid += 1
            log.warning("model topic %s@%d: invalid model version (%s)", rec.topic, rec.offset, exc)
            return
        old = self.latest.get(v.pipeline)
        # read_to last: in rounds mode a version can differ from the previous one only in how far
        # the reducer has read (what a newly assigned member waits for).
        if old is None or (v.stats_offset, v.version, v.read_to) > (old.stats_offset, old.version, old.read_to):
            self.latest[v.pipeline] = v
            self.changed.set()


def _header_int(headers: Any, name: str) -> int | None:
    for k, v in headers or ():
        if k == name:
            try:
                return int(bytes(v).decode("ascii"))
            except (ValueError, UnicodeDecodeError):
                return None
    return None


def load_snapshot(raw: dict[str, Any] | None, pipeline: str) -> dict[str, Any] | None:
    """The state of a snapshot kept by the follower (None if there is none); ValueError if unusable."""
    if raw is None:
        return None
    got = snapshot_state(raw["value"], pipeline)
    if isinstance(got, WireError):
        raise ValueError(f"snapshot at model-topic offset {raw['offset']}: {got}")
    return got


class _Reducer:
    """Folds one pipeline's stats partition while this member holds it."""

    def __init__(self, worker: GroupWorker, pipeline: str, tp: TopicPartition):
        self.w = worker
        self.pipeline = pipeline
        self.tp = tp
        self.model: GroupModel | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._consumer: Any = None
        self._published = 0
        self._last_publish = 0.0
        #: Stats offsets up to here were folded and published by an earlier reducer: refolding them
        #: rebuilds the model, but their counts, logs and transition events were already given.
        self._replayed_to = -1
        #: Rounds: offsets up to _replayed_to that were still waiting when it was published.
        self._replayed_waiting: set[int] = set()
        self._n_replayed = 0
        #: group.ordering = "rounds": the queue of stats waiting for their round.
        self.rounds: RoundFold | None = None
        #: Accepted chunks that say where their partition's state stands (the sequence
        #: pipeline's windows), newest per partition, published before the next version.
        self._resumes: dict[str, ChunkStats] = {}
        #: Rounds: the stats-log offset of the idle marker written and not yet read back.
        self._marker_at: int | None = None
        #: Stats messages this member wrote, by offset, not yet folded: folded from here instead
        #: of fetched back (a member that is its own reducer never reads its statistics twice).
        self._local: dict[int, bytes] = {}
        self._local_added = asyncio.Event()
        self._reading_log = True
        self.n_local = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"streamkm-reducer-{self.pipeline}")

    async def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            except Exception as exc:  # already logged by _run
                log.debug("reducer task ended with %r", exc)

    def raise_if_failed(self) -> None:
        """A reducer that stopped on an error stops the member: holding the stats partition
        without folding would stall the whole group (a restart re-elects a reducer)."""
        task = self._task
        if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
            raise RuntimeError(f"the reducer of {self.pipeline} failed: {task.exception()}")

    def _restored_model(self, raw: dict[str, Any] | None) -> tuple[GroupModel, bool, dict[str, Any] | None]:
        """The fold from the newest snapshot (and, rounds ordering, its queue's metadata)."""
        model = self.w.new_group_model(self.pipeline)
        if raw is None:
            return model, False, None
        try:
            snap = load_snapshot(raw, self.pipeline)
            assert snap is not None
            made_with = snap.get("config_hash") or ""
            if made_with and made_with != model.config_hash:
                raise ValueError(f"made with other model settings (config hash {made_with})")
            model.load_state_dict(snap["state"])
            rounds = snap.get("rounds")
            if rounds is not None and not isinstance(rounds, dict):
                raise ValueError("its rounds state is not a mapping")
        except ValueError as exc:  # replay the whole log instead (it must reach back to offset 0)
            log.error("reducer of %s: the newest snapshot is unusable (%s); folding the stats log from its start",
                      self.pipeline, exc, extra={"event": "snapshot_unusable", "pipeline": self.pipeline})
            return self.w.new_group_model(self.pipeline), False, None
        return model, True, rounds

    async def _run(self) -> None:
        w = self.w
        metrics = w.metrics
        metrics.group_reducer.labels(pipeline=self.pipeline).set(1)
        try:
            # The newest snapshot is only known once the model topic has been read to its end.
            waiter = asyncio.ensure_future(w.follower.caught_up.wait())
            stopper = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if self._stop.is_set():
                return
            # Started by a rebalance, the previous reducer's handover (its last version and
            # snapshot) was written just before: read it, so what it folded is not counted again.
            if not await w.follower.read_to_end(self._stop, w.settings.group.sync_timeout_seconds) \
                    and not self._stop.is_set():
                log.warning("reducer of %s: the model topic could not be read to its end; starting from what "
                            "the follower has (a refold may count some statistics again)", self.pipeline)
            if self._stop.is_set():
                return
            # Building the fold imports river's detectors, and a snapshot holds the reservoir:
            # neither may stall the event loop (heartbeats, the consume loop).
            model, from_snapshot, rounds_state = await asyncio.to_thread(
                self._restored_model, w.follower.snapshots.get(self.pipeline))
            self.model = model
            if w.settings.group.ordering == "rounds":
                self.rounds = RoundFold(model, idle_seconds=w.settings.group.idle_partition_seconds)
                if rounds_state is not None:
                    try:
                        self.rounds.load_state_dict(rounds_state)
                    except ValueError as exc:  # an older snapshot: re-offer everything after its offset
                        log.warning("reducer of %s: the snapshot's queue state is unusable (%s); re-reading "
                                    "its queue from the log (some outcomes may be counted again)", self.pipeline,
                                    exc)
            self._replayed_from(w.follower.latest.get(self.pipeline))
            kw = w.plain_consumer_kwargs()
            kw["auto_offset_reset"] = "none"  # a stats log cut by retention is an error, never a jump
            consumer = AIOKafkaConsumer(**kw)
            await start_client(consumer, w.timeout)
            self._consumer = consumer
            consumer.assign([self.tp])
            start = model.stats_offset_ + 1
            consumer.seek(self.tp, start)
            log.info("reducer of %s: folding %s:%d from offset %d (version %d%s)", self.pipeline, self.tp.topic,
                     self.tp.partition, start, model.version_, ", from a snapshot" if from_snapshot else "",
                     extra={"event": "reducer_start", "pipeline": self.pipeline, "version": model.version_})
            dirty = False
            while not self._stop.is_set():
                if self.rounds is not None:
                    self._expect_partitions()
                recs = await self._next_records(consumer, self._read_wait(dirty))
                if recs:
                    outcomes = await asyncio.to_thread(self._fold, model, recs)
                    dirty = True
                    self._account(model, outcomes)
                if self.rounds is not None:
                    await self._mark_idle()
                    metrics.group_round_queue.labels(pipeline=self.pipeline).set(self.rounds.queued)
                now = time.monotonic()
                if dirty and now - self._last_publish >= w.settings.group.publish_interval_seconds:
                    await self._publish(model)
                    dirty = False
            # A handover publishes the last version and a snapshot, so the next reducer
            # replays only what comes after it.
            await self._publish(model)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("reducer of %s stopped: %s: %s", self.pipeline, type(exc).__name__, exc,
                      extra={"event": "reducer_error", "pipeline": self.pipeline})
            raise
        finally:
            metrics.group_reducer.labels(pipeline=self.pipeline).set(0)
            if self._consumer is not None:
                await stop_quietly(self._consumer, "reducer consumer stop")

    def offer_local(self, offset: int, value: bytes) -> None:
        """This member's stats message landed at *offset* of the stats partition."""
        self._local[int(offset)] = value
        self._local_added.set()

    def _next_offset(self) -> int:
        """The next stats offset to read (rounds: after a restore, the oldest to re-queue)."""
        assert self.model is not None
        return self.model.stats_offset_ + 1 if self.rounds is None else self.rounds.next_offset

    def _read_wait(self, dirty: bool) -> float:
        """Seconds the next read may wait: a poll; with a folded model not published yet, only
        until its publish is due. The members' in-flight budgets wait for that version, so a read
        with nothing new to fold must not hold it back a whole poll (it did: with S chunks in flight
        and nothing more sent, each such version came up to a poll late; docs/benchmarks.md,
        "before and after the reducer's publish wait")."""
        wait = _POLL_MS / 1000
        if dirty:
            due = self._last_publish + self.w.settings.group.publish_interval_seconds
            wait = max(0.0, min(wait, due - time.monotonic()))
        return wait

    def _take_local(self, nxt: int) -> list[_LocalRecord]:
        """The run of local messages from offset *nxt* on, without gaps (older ones dropped)."""
        for off in [o for o in self._local if o < nxt]:
            del self._local[off]
        run: list[_LocalRecord] = []
        while nxt in self._local:
            run.append(_LocalRecord(nxt, self._local.pop(nxt)))
            nxt += 1
        return run

    async def _next_records(self, consumer: Any, timeout: float) -> list[Any]:
        """The next stats messages to fold, from this member's own (no fetch) while they follow
        on, else from the log: when another writer's message comes first (a gap before the
        oldest local one), or when nothing of this member's is on its way. Waits at most
        *timeout* seconds for them."""
        nxt = self._next_offset()
        run = self._take_local(nxt)
        if run:
            if self._reading_log:  # the fetcher would only bring these back
                consumer.pause(self.tp)
                self._reading_log = False
            self.n_local += len(run)
            return run
        deadline = time.monotonic() + timeout
        if not self._local and self.w.stats_outstanding(self.pipeline):
            # this member's next messages are on their way: wait for their acknowledgement
            self._local_added.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._local_added.wait(), timeout)
            if self._local:
                return []  # taken at the next turn
            if timeout < _POLL_MS / 1000:
                return []  # cut short for a publish that is due: no detour through the log for it
        if not self._reading_log:
            consumer.seek(self.tp, nxt)
            consumer.resume(self.tp)
            self._reading_log = True
        try:
            # ceil: a wait under 0.5 ms must not become 0 (getmany(0) returns without yielding)
            batch = await consumer.getmany(timeout_ms=math.ceil(max(0.0, deadline - time.monotonic()) * 1000))
        except OffsetOutOfRangeError:
            raise RuntimeError(
                f"the stats log {self.tp.topic}:{self.tp.partition} no longer holds offset "
                f"{nxt} (retention shorter than the time since the last snapshot); "
                "the group model cannot be rebuilt exactly") from None
        recs = [r for rs in batch.values() for r in rs if r.offset >= nxt]
        if recs and recs[0].offset > nxt:
            raise RuntimeError(
                f"the stats log {self.tp.topic}:{self.tp.partition} jumps from offset "
                f"{nxt} to {recs[0].offset} (records deleted); refusing to fold past it")
        return recs

    def _expect_partitions(self) -> None:
        """Rounds wait for every partition of the input topic: the member's group consumer is
        subscribed to it, so its metadata (kept fresh by aiokafka) knows them all, also the
        ones no member has been assigned yet or nobody writes to."""
        assert self.rounds is not None
        topic = input_topic(self.w.settings, self.pipeline)
        assert topic is not None  # GroupWorker runs only the pipelines whose topic is set
        group_consumer = self.w._consumer
        parts = None if group_consumer is None else group_consumer.partitions_for_topic(topic)
        if parts:
            self.rounds.expect(partition_key(topic, p) for p in parts)

    async def _mark_idle(self) -> None:
        """Rounds: partitions a queued chunk has waited for too long are declared idle by a
        marker written to the stats log; they are idle from where it is read back (log order,
        so a successor and any offline fold of the log make the same rounds). One marker at a
        time: the next once this one is read."""
        assert self.rounds is not None
        if self._marker_at is not None and self._marker_at > self.rounds.read_to:
            return
        due = self.rounds.due_idle(time.monotonic())
        if not due:
            return
        marker = IdleMarker(self.pipeline, tuple(due), tuple(due.values()), self.w.client_id)
        try:
            value = marker.to_bytes()
            md = await self.w.producer.send_and_wait(self.tp.topic, value, key=self.pipeline.encode(),
                                                     partition=self.tp.partition)
        except KafkaError as exc:  # decided again at the next turn
            log.warning("reducer of %s: idle marker not written (%s)", self.pipeline, exc)
            return
        self._marker_at = int(md.offset)
        self.offer_local(self._marker_at, value)

    def _declared_idle(self, offset: int, idle: list[str]) -> None:
        """An idle marker read back declared *idle* (counted and logged once, not on a refold)."""
        if not idle or self._was_published(offset):
            return
        assert self.rounds is not None
        self.w.metrics.group_idle_partitions.labels(pipeline=self.pipeline).inc(len(idle))
        log.warning("reducer of %s: %s sent no chunk for %.0fs while others waited; rounds go on without "
                    "%s until %s again (from here a replay of the records may differ, unless the stream ended)",
                    self.pipeline, ", ".join(idle), self.rounds.idle_seconds, "them" if len(idle) > 1 else "it",
                    "they send" if len(idle) > 1 else "it sends",
                    extra={"event": "partitions_idle", "pipeline": self.pipeline, "partitions": idle})

    @staticmethod
    def _outcomes(offered: list[Any]) -> list[tuple[int, Any, Any]]:
        """RoundFold results as (offset, outcome, info) for :meth:`_account` (queued ones wait)."""
        out: list[tuple[int, Any, Any]] = []
        for o in offered:
            if o.status == "queued":
                continue
            if o.msg is None:
                out.append((o.offset, None, o.outcome.reason))
            else:  # rows are assigned by the fold itself, against the version they go into: staleness 0
                out.append((o.offset, o.outcome, (o.msg, 0)))
        return out

    def _fold(self, model: GroupModel, recs: list[Any]) -> list[tuple[int, Any, Any]]:
        if self.rounds is not None:
            rounds = self.rounds
            offered: list[Any] = []
            for rec in recs:
                if not rounds.wants(rec.offset):
                    continue  # re-fetched after a seek, or counted before the snapshot
                msg = read_stats_log(rec.value)
                if isinstance(msg, IdleMarker):
                    folded, idle = rounds.mark_idle(dict(zip(msg.keys, msg.tails, strict=True)), rec.offset)
                    self._declared_idle(rec.offset, idle)
                    offered += folded
                elif isinstance(msg, WireError):
                    offered += rounds.offer(None, rec.offset, now=time.monotonic(), reason=str(msg))
                else:
                    # The queue keeps the chunk without its window state (only the newest per
                    # partition is published; queued states would hold the reducer's memory).
                    queued = msg if msg.resume is None else dataclasses.replace(msg, resume=None)
                    got = rounds.offer(queued, rec.offset, now=time.monotonic())
                    if got and got[0].status == "queued":
                        self._note_resume(msg, rec.offset)
                    offered += got
            return self._outcomes(offered)
        out: list[tuple[int, Any, Any]] = []
        for rec in recs:
            if rec.offset <= model.stats_offset_:
                continue  # re-fetched after a seek
            msg = ChunkStats.from_bytes(rec.value)
            if isinstance(msg, WireError):
                model.skip(rec.offset, str(msg))
                out.append((rec.offset, None, str(msg)))
                continue
            staleness = model.version_ - msg.base_version
            outcome = model.fold(msg, rec.offset)
            if outcome.status == "accepted":
                self._note_resume(msg, rec.offset)
            out.append((rec.offset, outcome, (msg, staleness)))
        return out

    def _replayed_from(self, published: ModelVersion | None) -> None:
        """What the newest published version already counted and announced: in arrival order,
        everything up to its stats offset; in rounds, everything read up to its ``read_to``
        except what was still waiting for its round (``waiting``)."""
        if published is None:
            self._replayed_to, self._replayed_waiting = -1, set()
        elif self.rounds is not None:
            self._replayed_to, self._replayed_waiting = published.read_to, set(published.waiting)
        else:
            self._replayed_to, self._replayed_waiting = published.stats_offset, set()

    def _was_published(self, offset: int) -> bool:
        """Whether the message at *offset* was folded (or refused) and published by an earlier reducer."""
        return offset <= self._replayed_to and offset not in self._replayed_waiting

    def _note_resume(self, msg: ChunkStats, offset: int) -> None:
        """An accepted chunk carrying its partition's state: published with the next version
        (an earlier reducer published those of the chunks it had folded and published)."""
        if msg.resume is not None and offset > self._replayed_to:
            self._resumes[msg.key] = msg

    def _account(self, model: GroupModel, outcomes: list[tuple[int, Any, Any]]) -> None:
        m = self.w.metrics
        name = self.pipeline
        for offset, outcome, info in outcomes:
            if self._was_published(offset):
                self._n_replayed += 1
                if offset == self._replayed_to:
                    log.info("reducer of %s: refolded %d stats message(s) an earlier reducer had published "
                             "(to offset %d, version %d); not counted or announced again", name,
                             self._n_replayed, offset, model.version_, extra={"event": "reducer_replayed"})
                continue
            if outcome is None:
                m.group_stats_messages.labels(pipeline=name, reason="invalid").inc()
                log.error("stats message refused: %s", info, extra={"event": "stats_invalid", "pipeline": name})
                continue
            msg, staleness = info
            m.group_stats_messages.labels(pipeline=name, reason=outcome.status).inc()
            if outcome.status == "accepted":
                if msg.base_version and staleness is not None:
                    m.group_staleness_versions.labels(pipeline=name).observe(staleness)
            elif outcome.status in ("gap", "invalid"):
                log.error("stats %s from %s for %s [%d, %d): expected offset %s%s", outcome.status, msg.member or "?",
                          msg.key, msg.first_offset, msg.end_offset, outcome.expected,
                          f" ({outcome.reason})" if outcome.reason else "",
                          extra={"event": f"stats_{outcome.status}", "pipeline": name})
            else:
                log.debug("stats %s for %s [%d, %d), expected %s", outcome.status, msg.key, msg.first_offset,
                          msg.end_offset, outcome.expected)
            for ev in outcome.events:
                if ev["event"] == "initialized":
                    log.info("%s group model initialized after %d points", name, ev["n_seen"],
                             extra={"pipeline": name, **ev})
                elif ev["event"] == "drift":
                    m.drift_detections.labels(pipeline=name).inc()
                    log.info("drift detected in the %s group model (objective %.6g)", name, ev["objective"],
                             extra={"pipeline": name, **ev})
            for tr in outcome.transitions:
                m.cluster_transitions.labels(pipeline=name, reason=tr.kind).inc()
                log.info("cluster %d %s%s (distance %.4g) at version %d", tr.cluster_id, tr.kind,
                         "" if tr.other_id is None else f" ({'from' if tr.kind == 'split' else 'into'} {tr.other_id})",
                         tr.distance, outcome.version,
                         extra={"event": "cluster_transition", "pipeline": name, "kind": tr.kind,
                                "cluster_id": tr.cluster_id, "other_id": tr.other_id})
                self.w.queue_transition(name, tr, outcome.version)

    async def _send_model(self, value: bytes, key: bytes, what: str,
                          headers: list[tuple[str, bytes]] | None = None) -> bool:
        """Write one model-topic message, retrying with backoff; False if stopped before it landed
        (a handover: the next reducer refolds and publishes the same)."""
        w = self.w
        backoff = w.settings.worker.retry_backoff_initial_seconds
        while True:
            try:
                await w.producer.send_and_wait(w.model_topic, value, key=key, headers=headers)
                return True
            except KafkaError as exc:
                if self._stop.is_set():
                    log.warning("reducer of %s: %s not published (%s)", self.pipeline, what, exc)
                    return False
                log.warning("reducer of %s: publishing %s failed (%s); retrying in %.1fs", self.pipeline,
                            what, exc, backoff, extra={"event": "publish_retry"})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), backoff)
                backoff = min(2 * backoff, w.settings.worker.retry_backoff_max_seconds)

    async def _publish(self, model: GroupModel) -> None:
        w = self.w
        v = model.version(published_at=time.time())
        if self.rounds is not None:  # where a newly assigned member resumes: after what was sent
            v = dataclasses.replace(v, queued=self.rounds.tails(), read_to=self.rounds.read_to,
                                    waiting=self.rounds.waiting())
        # Partition resumes first: a member that sees the version finds the state it names.
        if self._resumes:
            pending = list(self._resumes.values())
            values = await asyncio.to_thread(lambda: [resume_message(m) for m in pending])
            # Pipelined: all queued to the producer, then acknowledged; whatever failed is sent
            # again one by one with retries (a copy landing twice is harmless: the follower keeps
            # the furthest resume of each partition, by its end_offset header).
            futures: list[Any] = []
            try:
                for msg, value in zip(pending, values, strict=True):
                    futures.append(await w.producer.send(
                        w.model_topic, value, key=resume_key(self.pipeline, msg.key),
                        headers=[("end_offset", str(msg.end_offset).encode())]))
            except KafkaError as exc:
                log.warning("reducer of %s: queueing partition resumes failed (%s); sending them one by one",
                            self.pipeline, exc)
            for i, (msg, value) in enumerate(zip(pending, values, strict=True)):
                landed = False
                if i < len(futures):
                    try:
                        await futures[i]
                        landed = True
                    except KafkaError:
                        pass
                if not landed and not await self._send_model(value, resume_key(self.pipeline, msg.key),
                                                              f"the resume of {msg.key}",
                                                              headers=[("end_offset", str(msg.end_offset).encode())]):
                    for later in futures[i + 1:]:  # stopping: their outcome no longer matters
                        later.add_done_callback(lambda f: f.cancelled() or f.exception())
                    return
                if self._resumes.get(msg.key) is msg:
                    del self._resumes[msg.key]
        # Events first: a reducer that dies before its version lands has its successor refold and
        # announce them again (at least once); after the version lands, its successor skips them.
        if not await w.flush_transitions(self._stop):
            log.warning("reducer of %s: version %d not published: its cluster events could not be written; "
                        "the next reducer refolds and announces them", self.pipeline, v.version)
            return
        if not await self._send_model(v.to_bytes(), self.pipeline.encode(), f"version {v.version}"):
            return
        self._published += 1
        self._last_publish = time.monotonic()
        w.metrics.group_versions_published.labels(pipeline=self.pipeline).inc()
        if self._published % w.settings.group.snapshot_every == 0 or self._stop.is_set():
            state = {"pipeline": self.pipeline, "stats_offset": model.stats_offset_, "state": model.state_dict(),
                     "config_hash": model.config_hash}
            if self.rounds is not None:  # the queue's metadata: a successor re-queues exactly it
                state["rounds"] = self.rounds.state_dict()
            try:
                await w.producer.send_and_wait(w.model_topic, encode(KIND_SNAPSHOT, state),
                                               key=snapshot_key(self.pipeline))
            except KafkaError as exc:  # a snapshot only shortens recovery: keep folding
                w.metrics.group_snapshot_failures.labels(pipeline=self.pipeline).inc()
                log.error("reducer of %s: snapshot not published (%s); a failover replays the stats log from "
                          "the previous one", self.pipeline, exc, extra={"event": "snapshot_failed"})


class GroupWorker:
    """A consumer-group member of the group model (see the module docstring).

    Parameters
    ----------
    settings : streamkm.config.Settings
        ``group.enabled`` settings (the vectors and/or sequence pipeline on the group model).
    metrics : Metrics, optional
    bootstrap_servers : str, optional
        Overrides ``kafka.bootstrap_servers``.
    fault_hook : callable, optional
        ``fault_hook(point)`` at ``after_outputs`` (outputs delivered, stats not yet
        sent) and ``after_stats`` (stats acknowledged); tests kill the process there.
    flush_linger_seconds : float
        When caught up, a partial chunk older than this is sent.
    """

    def __init__(self, settings: Settings, *, metrics: Metrics | None = None, bootstrap_servers: str | None = None,
                 fault_hook: FaultHook | None = None, flush_linger_seconds: float = 0.5):
        if not settings.group.enabled:
            raise ValueError("GroupWorker needs group.enabled = true")
        names = enabled_pipelines(settings)
        if not names:
            raise ValueError("group.enabled: no pipeline to run; enable input.vectors_enabled (with "
                             "kafka.vectors_topic) or sequence.enabled (with kafka.events_topic)")
        if "vectors" in names and settings.input.dimension is None:
            # Settings let the embedded demo through; 'streamkm run' fills it in there.
            raise ValueError("input.dimension: required on the group model (every member must agree on it "
                             "before the first record)")
        bootstrap = bootstrap_servers or settings.kafka.bootstrap_servers
        if bootstrap is None:
            raise ValueError("no bootstrap servers: set kafka.bootstrap_servers or pass bootstrap_servers")
        self.settings = settings
        self.bootstrap_servers: str = bootstrap
        self.metrics = metrics if metrics is not None else Metrics()
        self.metrics.set_consumer_group(settings.kafka.group_id)
        self.fault_hook = fault_hook
        self.flush_linger = float(flush_linger_seconds)
        #: group.ordering = "rounds": chunks carry rows, partial chunks wait for idleness.
        self._rounds = settings.group.ordering == "rounds"
        self.stats_topic = settings.group_stats_topic
        self.model_topic = settings.group_model_topic
        self.group_id = settings.kafka.group_id
        self.client_id = settings.kafka.client_id
        self.timeout = settings.kafka.request_timeout_ms / 1000 + 5
        #: pipeline -> partition of the stats topic (fixed: GROUP_PIPELINES order).
        self.stats_partition = {name: GROUP_PIPELINES.index(name) for name in names}
        self.lanes: dict[str, _Lane] = {}
        for name in names:
            build = group_vector_pipeline if name == "vectors" else group_sequence_pipeline
            chunker, pipe = build(settings, member=self.client_id)
            self.lanes[name] = _Lane(name, pipe.topic, chunker, pipe,
                                     TopicPartition(self.stats_topic, self.stats_partition[name]))
        if len({lane.topic for lane in self.lanes.values()}) != len(self.lanes):
            raise ValueError("kafka.vectors_topic and kafka.events_topic must differ on the group model")
        #: The first pipeline's chunker (``version``; most members run one pipeline).
        self.chunker = next(iter(self.lanes.values())).chunker
        self.pipelines: dict[str, Pipeline] = {name: lane.pipe for name, lane in self.lanes.items()}
        self._lane_of = {lane.topic: lane for lane in self.lanes.values()}
        self.producer: Any = None
        self.stats_producer: Any = None
        self.follower: ModelFollower = None  # type: ignore[assignment]  # set by _connect
        self._consumer: Any = None
        self._follower_consumer: Any = None
        self._reducers: dict[str, _Reducer] = {}
        self._assigned: set[TopicPartition] = set()
        self._syncing: dict[TopicPartition, tuple[int | None, float]] = {}
        self._pos: dict[TopicPartition, int] = {}
        self._in_flight: list[_InFlight] = []
        #: Statistics sent and not yet acknowledged, in send order (the consume loop goes on
        #: meanwhile; a chunk counts as sent, and enters _in_flight, only once acknowledged).
        self._unacked: list[_Unacked] = []
        #: Statistics being resent after a failed send (out of _unacked meanwhile).
        self._resending: list[_Unacked] = []
        #: Per partition, bumped when it is realigned or revoked (see _Unacked.epochs).
        self._epoch: dict[TopicPartition, int] = {}
        #: Rounds: partitions paused because their budget of unfolded chunks is used up.
        self._throttled: set[TopicPartition] = set()
        #: Rounds: when each partition last brought records (partial chunks wait for idleness).
        self._records_at: dict[TopicPartition, float] = {}
        self._transitions: list[tuple[str, Any, int]] = []
        self._version_seen: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._run_task: asyncio.Task[Any] | None = None
        self._finished = asyncio.Event()
        #: No local checkpoints on the group model (its progress lives in the model topic).
        self.final_checkpoint_ok = True
        self.last_checkpoint = None
        self._stopping = asyncio.Event()
        self._stopped = False
        self._started = False
        self._pending_since: float | None = None
        self._last_commit = 0.0
        self._last_fetch = 0.0
        self.n_sent = 0
        self.n_realigned = 0
        #: Decoded partition resumes, by the message bytes they came from (a wait decodes once).
        self._resume_cache: dict[tuple[str, str], tuple[bytes, Any]] = {}

    # ------------------------------------------------------------------ building blocks
    def new_group_model(self, pipeline: str) -> GroupModel:
        """The reducer's fold for *pipeline*, from the settings."""
        return new_group_model(self.settings, pipeline)

    def plain_consumer_kwargs(self) -> dict[str, Any]:
        """A consumer outside the group (the follower, the reducer's stats reader)."""
        k = self.settings.kafka
        kw = k.client_kwargs(self.bootstrap_servers)
        big = self.settings.group.max_message_bytes
        # Latency-bound readers of small topics: a short fetch wait keeps the version round trip
        # (statistics -> reducer -> version -> workers) short; brokers may hold a fetch its full wait.
        kw.update(group_id=None, enable_auto_commit=False, fetch_max_wait_ms=20,
                  max_partition_fetch_bytes=max(k.max_partition_fetch_bytes, big),
                  fetch_max_bytes=max(k.fetch_max_bytes, big))
        return kw

    @property
    def version(self) -> ModelVersion | None:
        """The newest model version this worker holds (vectors pipeline)."""
        return self.chunker.version

    @property
    def is_reducer(self) -> bool:
        return bool(self._reducers)

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def _fault(self, point: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(point)

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> GroupWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Prepare the metrics (no network; :meth:`run` connects)."""
        if self._started:
            return
        self._started = True
        for name in self.lanes:  # validates the settings, imports river
            await asyncio.to_thread(self.new_group_model, name)
        for p in self.pipelines.values():
            p.init_metrics(self.metrics)
            self.metrics.init_group(p.name, outcomes=OUTCOMES, transitions=TRANSITIONS)

    def is_live(self) -> bool:
        return not self._stopped

    def is_ready(self) -> bool:
        return bool(self._consumer is not None and self._assigned and not self._stopping.is_set()
                    and self.follower is not None and self.follower.caught_up.is_set()
                    and self.follower._task is not None and not self.follower._task.done()
                    and time.monotonic() - self._last_fetch < max(5.0, 3 * self.settings.kafka.fetch_timeout_ms / 1000))

    async def run(self) -> None:
        """Consume until :meth:`shutdown`; until the broker answers, retry connecting with backoff."""
        await self.start()
        self._run_task = asyncio.current_task()
        try:
            if await self._connect_with_retry():
                await self._loop()
        finally:
            await self._finish()

    async def shutdown(self, deadline: float | None = None) -> bool:
        """Stop after the in-flight batch (its statistics are sent first); the reducer publishes
        its last version and a snapshot. True if that completed within *deadline* seconds."""
        deadline = self.settings.worker.shutdown_deadline_seconds if deadline is None else deadline
        self._stopping.set()
        if self._run_task is None or self._run_task is asyncio.current_task():
            await asyncio.wait_for(self._finish(), deadline)
            return True
        try:
            await asyncio.wait_for(self._finished.wait(), deadline)
            return True
        except TimeoutError:
            log.error("shutdown deadline of %.1fs exceeded", deadline)
            return False

    async def stop(self) -> None:
        """Same as :meth:`shutdown` with the configured deadline; safe to call twice."""
        if not self._stopped:
            await self.shutdown()

    # ------------------------------------------------------------------ connection
    async def _connect_with_retry(self) -> bool:
        """Connect; a broker that is down or refuses the handshake is retried (it may come up,
        a certificate may be rotated), and logged with its cause. False if stopped first."""
        w = self.settings.worker
        backoff = w.retry_backoff_initial_seconds
        while not self._stopping.is_set():
            try:
                # A consumer's start joins the group, which a rebalance can hold: not a shutdown.
                connected, _ = await unless_stopped(self._connect(), self._stopping)
                if not connected:
                    await self._disconnect()
                    return False
                return True
            except (TimeoutError, OSError, KafkaError) as exc:
                await self._disconnect()
                if self._stopping.is_set():
                    break
                self.metrics.broker_errors.inc()
                why = await explain_connection_error(exc, self.settings.kafka.client_kwargs(self.bootstrap_servers))
                log.warning("broker unreachable or failing (%s); retrying in %.1fs", why, backoff,
                            extra={"event": "broker_error"})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(2 * backoff, w.retry_backoff_max_seconds)
        return False

    async def _disconnect(self) -> None:
        """Stop the clients a failed :meth:`_connect` started (before any partition was assigned)."""
        if self.follower is not None:
            await self.follower.stop()
            self.follower = None  # type: ignore[assignment]
        for attr, what in (("_consumer", "consumer"), ("_follower_consumer", "follower"), ("producer", "producer"),
                           ("stats_producer", "stats producer")):
            client = getattr(self, attr)
            if client is not None:
                setattr(self, attr, None)
                await stop_quietly(client, f"{what} stop")

    async def _connect(self) -> None:
        kafka = self.settings.kafka
        if self.settings.group.create_topics:
            conn = {k: v for k, v in kafka.client_kwargs(self.bootstrap_servers).items() if k != "bootstrap_servers"}
            for topic, partitions, configs in group_topics(self.settings):
                await create_topics(self.bootstrap_servers, {topic: partitions}, configs=configs, **conn)
        producer = AIOKafkaProducer(**kafka.client_kwargs(self.bootstrap_servers), acks="all", linger_ms=0,
                                    max_request_size=self.settings.group.max_message_bytes)
        await start_client(producer, self.timeout)
        self.producer = producer
        # The chunk statistics have their own producer, whose batches hold many of them: aiokafka
        # keeps one request per partition in flight and a message larger than a batch is a batch
        # of its own, so with the default 16 KiB batches every statistics message (a chunk's rows,
        # 256 KiB at 1024 x 64) waited for the previous one's acknowledgement. The stats topic
        # takes messages (and so batches) up to group.max_message_bytes; the shared producer keeps
        # small batches for the output and dead-letter topics, whose limits are the broker's.
        stats_producer = AIOKafkaProducer(**kafka.client_kwargs(self.bootstrap_servers), acks="all", linger_ms=0,
                                          max_request_size=self.settings.group.max_message_bytes,
                                          max_batch_size=min(self.settings.group.max_message_bytes,
                                                             _STATS_BATCH_BYTES))
        await start_client(stats_producer, self.timeout)
        self.stats_producer = stats_producer
        fc = AIOKafkaConsumer(**self.plain_consumer_kwargs())
        await start_client(fc, self.timeout)
        self._follower_consumer = fc
        self.follower = ModelFollower(fc, self.model_topic)
        await self.follower.start()
        await self._check_stats_partitions(fc)
        with contextlib.suppress(TimeoutError):  # the newest version must fit these settings
            await asyncio.wait_for(self.follower.caught_up.wait(), self.settings.group.sync_timeout_seconds)
        for name, v in self.follower.latest.items():
            if name not in self.lanes:
                continue
            mine = await asyncio.to_thread(config_hash, self.settings, name)
            if v.config_hash and v.config_hash != mine:
                raise GroupConfigError(
                    f"{self.model_topic!r} holds a {name} model made with other model settings (config hash "
                    f"{v.config_hash}, these settings {mine}); restore them, or start a new model with another "
                    "kafka.group_id or group.model_topic and group.stats_topic")
        consumer = AIOKafkaConsumer(**kafka.consumer_kwargs(self.bootstrap_servers))
        consumer.subscribe(sorted([*self._lane_of, self.stats_topic]), listener=RebalanceListener(
            self._on_revoked, lambda assigned: self._on_assigned(assigned, consumer)))
        await start_client(consumer, self.timeout)
        self._consumer = consumer
        log.info("connected to %s as group %s (group model: stats %s, model %s)", self.bootstrap_servers,
                 self.group_id, self.stats_topic, self.model_topic, extra={"event": "connected"})

    async def _check_stats_partitions(self, consumer: Any) -> None:
        """A stats topic made before the sequence pipeline ran on the group model has one
        partition: a user error naming the fix, not a reducer that never starts."""
        need = max(self.stats_partition.values()) + 1
        if need <= 1:
            return
        parts: set[int] = set()
        for _ in range(50):
            parts = set(consumer.partitions_for_topic(self.stats_topic) or ())
            if parts:
                break
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        if parts and len(parts) < need:
            names = [n for n, i in self.stats_partition.items() if i >= len(parts)]
            raise GroupConfigError(
                f"the stats topic {self.stats_topic!r} has {len(parts)} partition(s); the {', '.join(names)} "
                f"pipeline needs partition {need - 1} (one per pipeline, in the order {', '.join(GROUP_PIPELINES)}): "
                f"add partitions (kafka-topics --alter --partitions {len(GROUP_PIPELINES)}) or use a new "
                "group.stats_topic")

    async def _finish(self) -> None:
        if self._stopped:
            return
        self._stopping.set()
        deadline = self.settings.worker.shutdown_deadline_seconds
        locked = False
        try:
            # A rebalance callback holds the lock while it commits or hands a reducer over; a
            # shutdown waits for it only so long, then stops the clients under it.
            try:
                locked = bool(await asyncio.wait_for(self._lock.acquire(), 0.25 * deadline))
            except TimeoutError:
                log.warning("shutdown: a rebalance still holds the worker after %.0fs; stopping without "
                            "the handover (the next reducer refolds from the previous snapshot)", 0.25 * deadline)
            if locked:
                # The handover (last version and snapshot) gets part of the shutdown deadline; if it
                # cannot finish, the next reducer refolds from the previous snapshot instead.
                handover = min(15.0, 0.4 * deadline)
                for r in list(self._reducers.values()):
                    await r.stop(timeout=handover)
                self._reducers.clear()
                await self._commit(force=True, timeout=3.0)  # lag tooling only: never hold up a shutdown
        finally:
            if locked:
                self._lock.release()
            if self._consumer is not None:  # no rebalance callback may start a reducer after this
                await stop_quietly(self._consumer, "consumer stop")
                self._consumer = None
            for r in list(self._reducers.values()):
                await r.stop()
            self._reducers.clear()
            if self.follower is not None:
                await self.follower.stop()
            for client, what in ((self._consumer, "consumer"), (self._follower_consumer, "follower"),
                                 (self.producer, "producer"), (self.stats_producer, "stats producer")):
                if client is not None:
                    await stop_quietly(client, f"{what} stop")
            self._consumer = None
            self._stopped = True
            self._finished.set()
            log.info("worker stopped", extra={"event": "stopped"})

    # ------------------------------------------------------------------ rebalances
    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:  # the in-flight batch's statistics are sent first
            await self._ack_stats()
            for tp in revoked:
                self._epoch[tp] = self._epoch.get(tp, 0) + 1
            for tp in revoked:
                if tp.topic == self.stats_topic:
                    name = self._pipeline_of_stats(tp.partition)
                    r = self._reducers.pop(name, None) if name is not None else None
                    if r is not None:
                        await r.stop()
                    continue
                lane = self._lane_of.get(tp.topic)
                if lane is not None:
                    lane.chunker.forget(tp.topic, tp.partition)
                    if lane.windows is not None:
                        lane.windows.forget_partition(tp.partition)
                self._syncing.pop(tp, None)
                self._pos.pop(tp, None)
                self.metrics.remove_partition(tp.topic, tp.partition)
            self._in_flight = [f for f in self._in_flight if f.tp not in revoked]
            self._throttled -= revoked
            for tp in revoked:
                self._records_at.pop(tp, None)
            # The model's offsets of the revoked partitions, for lag tooling (never hold a rebalance up).
            await self._commit(force=True, timeout=3.0)
            self._assigned -= revoked
        if revoked:
            log.info("partitions revoked: %s", sorted(f"{tp.topic}:{tp.partition}" for tp in revoked),
                     extra={"event": "rebalance", "phase": "revoked", "n_partitions": len(revoked)})

    def _pipeline_of_stats(self, partition: int) -> str | None:
        return next((n for n, p in self.stats_partition.items() if p == partition), None)

    async def _on_assigned(self, assigned: set[TopicPartition], consumer: Any) -> None:
        async with self._lock:
            self.metrics.rebalances.inc()
            inputs = {tp for tp in assigned if tp.topic != self.stats_topic}
            for tp in assigned - inputs:
                consumer.pause(tp)  # read by the reducer's own consumer, never here
                name = self._pipeline_of_stats(tp.partition)
                if name is not None and name not in self._reducers and not self._stopping.is_set():
                    r = _Reducer(self, name, tp)
                    self._reducers[name] = r
                    r.start()
            new = inputs - self._assigned
            targets: dict[str, int] = {}
            stats_tps = sorted({lane.stats_tp for tp in new if (lane := self._lane_of.get(tp.topic)) is not None},
                               key=lambda t: t.partition)
            if stats_tps:
                try:
                    ends = await asyncio.wait_for(consumer.end_offsets(stats_tps), 10)
                    targets = {lane.name: int(ends[lane.stats_tp]) for lane in self.lanes.values()
                               if lane.stats_tp in ends}
                except Exception as exc:  # wait for the follower only
                    log.warning("end of the stats topic unavailable (%s: %s)", type(exc).__name__, exc)
            deadline = time.monotonic() + self.settings.group.sync_timeout_seconds
            for tp in new:
                consumer.pause(tp)
                lane = self._lane_of.get(tp.topic)
                self._syncing[tp] = (None if lane is None else targets.get(lane.name), deadline)
            self._assigned = inputs
            self.metrics.assigned_partitions.set(len(inputs))
        log.info("partitions assigned: %s%s", sorted(f"{tp.topic}:{tp.partition}" for tp in inputs),
                 "; reducer of " + ", ".join(sorted(self._reducers)) if self._reducers else "",
                 extra={"event": "rebalance", "phase": "assigned", "n_partitions": len(inputs)})

    async def _sync(self) -> None:
        """Start newly assigned partitions once the model has folded what their previous owner sent."""
        if not self._syncing:
            return
        now = time.monotonic()
        for tp, (target, deadline) in list(self._syncing.items()):
            lane = self._lane_of.get(tp.topic)
            if lane is None:
                continue
            v = self.follower.latest.get(lane.name)
            # Rounds: chunks the previous owner sent may wait in the reducer's queue for other
            # partitions (this one among them): resume after them once the reducer has read them.
            done = None if v is None else (v.read_to if self._rounds else v.stats_offset)
            caught = self.follower.caught_up.is_set() and (
                target is None or target == 0 or (done is not None and done >= target - 1))
            if not caught and now < deadline:
                continue
            if not caught:
                log.warning("%s:%d: the model did not fold the stats topic up to %s within %.0fs; starting from "
                            "version %s", tp.topic, tp.partition, target, self.settings.group.sync_timeout_seconds,
                            None if v is None else v.version)
            key = partition_key(tp.topic, tp.partition)
            off = None if v is None else (v.queued.get(key, v.offsets.get(key)) if self._rounds
                                          else v.offsets.get(key))
            start = off
            if lane.windows is not None and off is not None:
                restored = await self._restore_windows(lane, tp, off, last_chance=now >= deadline)
                if restored is None:
                    continue  # the partition's resume is not there yet: wait for it
                start = restored
            if off is None:
                off = start = await self._initial_offset(tp)
                if lane.windows is not None:
                    lane.windows.restore_partition(tp.partition, None, read_to=off)
                lane.chunker.reset(tp.topic, tp.partition, off)
            elif lane.windows is None:
                lane.chunker.reset(tp.topic, tp.partition, off)
            assert start is not None
            log_start = (await log_starts(self._consumer, [tp])).get(tp)
            resume_at = within_log(tp, start, log_start, policy=self.settings.kafka.on_offsets_lost,
                                   metrics=self.metrics)
            if resume_at is None:
                assert log_start is not None
                raise OffsetsLostError({tp: (start, log_start)})
            skipped = None
            if resume_at != start:
                # skip: a chunk of no rows covers the deleted offsets, so the model's offsets move
                # past them by the acceptance rule (and the stats log records the jump)
                lane.chunker.advance(tp.topic, tp.partition, resume_at)
                skipped = lane.pipe.flush_partition(tp.topic, tp.partition)
                start = resume_at
            self._consumer.seek(tp, start)
            self._pos[tp] = start
            self._epoch[tp] = self._epoch.get(tp, 0) + 1  # a fetch started before this seek is stale
            del self._syncing[tp]
            self._consumer.resume(tp)
            log.info("%s:%d starts at offset %d (model version %s)", tp.topic, tp.partition, start,
                     None if v is None else v.version, extra={"event": "partition_start", "offset": start})
            if skipped is not None:
                await self._send(lane, skipped)

    async def _restore_windows(self, lane: _Lane, tp: TopicPartition, off: int, *, last_chance: bool) -> int | None:
        """Restore the open windows *tp* had after its chunk ending at *off* (the reducer
        published them before the version naming *off*) and queue the rows that chunk carried;
        returns the offset to read from. None while that state is not there yet; at the
        deadline, or if it is unusable, the partition starts at *off* with no open window
        (logged and counted: those windows' events are lost to the model)."""
        assert lane.windows is not None
        key = partition_key(tp.topic, tp.partition)
        held = self.follower.resumes.get((lane.name, key))
        why, wait = "no state was published for it", True
        if held is not None and held[0] is not None and held[0] != off:
            held_end = held[0]
            why = f"the newest state published is for offset {held_end}"
        elif held is not None:
            raw = held[1]
            cached = self._resume_cache.get((lane.name, key))
            if cached is not None and cached[0] is raw:
                got = cached[1]
            else:  # decoded off the event loop, once per message
                got = await asyncio.to_thread(resume_state, raw, lane.name)
                self._resume_cache[(lane.name, key)] = (raw, got)
            if isinstance(got, WireError):
                why, wait = str(got), False
            elif got["end_offset"] != off or got["key"] != key:
                why = f"the newest state published is for offset {got['end_offset']}"
            else:
                resume = got["resume"]
                try:  # loading thousands of open windows would stall heartbeats: in a thread
                    await asyncio.to_thread(lane.windows.restore_partition, tp.partition, resume["windows"],
                                            read_to=resume["offset"])
                except ValueError as exc:
                    why, wait = f"unusable ({exc})", False
                else:
                    lane.chunker.restore(tp.topic, tp.partition, off, resume)
                    self._resume_cache.pop((lane.name, key), None)
                    self.metrics.group_window_restores.labels(pipeline=lane.name, outcome="restored").inc()
                    return int(resume["offset"])
        if wait and not last_chance:
            return None
        self.metrics.group_window_restores.labels(pipeline=lane.name, outcome="lost").inc()
        log.error("%s:%d: the open windows at offset %d cannot be restored (%s); starting with none (their "
                  "events are not in the model)", tp.topic, tp.partition, off, why,
                  extra={"event": "windows_lost", "pipeline": lane.name})
        lane.windows.restore_partition(tp.partition, None, read_to=off)
        lane.chunker.reset(tp.topic, tp.partition, off)
        return off

    async def _initial_offset(self, tp: TopicPartition) -> int:
        """A partition the model has never seen: its committed offset, else the reset policy.

        The offset chosen by the policy is committed at once, so a partition that moves
        before its first chunk is folded resumes there and not at a newer "latest".
        """
        c = self._consumer
        with contextlib.suppress(Exception):
            committed = await asyncio.wait_for(c.committed(tp), 10)
            if committed is not None:
                return int(committed)
        policy = self.settings.kafka.auto_offset_reset
        if policy == "none":
            raise GroupConfigError(f"{tp.topic}:{tp.partition} has no offset in the model and no committed offset, "
                                   "and kafka.auto_offset_reset is 'none'")
        ask = c.end_offsets if policy == "latest" else c.beginning_offsets
        off = int((await asyncio.wait_for(ask([tp]), 10))[tp])
        with contextlib.suppress(Exception):
            await asyncio.wait_for(c.commit({tp: off}), 10)
        return off

    # ------------------------------------------------------------------ versions
    def _apply_version(self) -> None:
        """Use the newest version of each pipeline; realign partitions whose statistics the model did not fold."""
        for lane in self.lanes.values():
            self._apply_lane_version(lane)

    def _apply_lane_version(self, lane: _Lane) -> None:
        name, chunker = lane.name, lane.chunker
        v = self.follower.latest.get(name)
        if v is None or (chunker.version is not None and chunker.version.version >= v.version
                         and chunker.version.stats_offset >= v.stats_offset):
            return
        chunker.version = v
        self.metrics.group_version_delay.labels(pipeline=name).observe(max(0.0, time.time() - v.published_at))
        published = v.published_at
        self.metrics.group_version_age.labels(pipeline=name).set_function(
            lambda: max(0.0, time.time() - published))
        if name == "vectors" and v.is_initialized and self.settings.input.dimension is not None \
                and v.centers.shape[1] != self.settings.input.dimension:
            raise GroupConfigError(f"the model on {self.model_topic!r} has dimension {v.centers.shape[1]}, "
                                   f"input.dimension is {self.settings.input.dimension}")
        # Rounds: a chunk is decided once the reducer has read it (accepted into its queue, or
        # refused) and the queue's tail says where the partition goes on; it stays in flight
        # (and counts against the partition's budget) until it is folded.
        decided = v.read_to if self._rounds else v.stats_offset
        newest_done: dict[TopicPartition, _InFlight] = {}
        mine = [f for f in self._in_flight if f.tp.topic == lane.topic]
        for f in mine:
            if f.stats_offset <= decided:
                newest_done[f.tp] = f
        if self._rounds:
            # Folded: read and no longer waiting. (stats_offset stops before the oldest queued chunk
            # of any partition, so by it alone a partition whose chunks were all folded kept them in
            # flight behind another partition's queue, used up its budget, and stalled every round.)
            waiting = set(v.waiting)
            self._in_flight = [f for f in self._in_flight if f.tp.topic != lane.topic
                               or f.stats_offset > v.read_to or f.stats_offset in waiting]
        else:
            self._in_flight = [f for f in self._in_flight
                               if f.tp.topic != lane.topic or f.stats_offset > v.stats_offset]
        for tp, f in newest_done.items():
            if tp not in self._assigned or tp in self._syncing:
                continue
            key = partition_key(tp.topic, tp.partition)
            model_next = v.queued.get(key, v.offsets.get(key)) if self._rounds else v.offsets.get(key)
            sent_to = chunker.start_of(tp.topic, tp.partition)
            # Folded as sent, the model ends where this worker's newest folded chunk ends. If not,
            # that chunk (and so every later one) was dropped: realign now, not after the window drains.
            if model_next is not None and model_next != f.end and model_next not in self._sent_ends(tp):
                self._in_flight = [g for g in self._in_flight if g.tp != tp]
                self._epoch[tp] = self._epoch.get(tp, 0) + 1  # and those still unacknowledged
                self.n_realigned += 1
                self.metrics.group_realignments.labels(pipeline=name).inc()
                log.info("%s:%d: the model is at offset %d, this worker sent up to %s; realigning", tp.topic,
                         tp.partition, model_next, sent_to, extra={"event": "realign"})
                if lane.windows is not None:
                    # The windows must be those after the model's chunk: restored as on an assignment.
                    self._consumer.pause(tp)
                    self._throttled.discard(tp)
                    self._syncing[tp] = (None, time.monotonic() + self.settings.group.sync_timeout_seconds)
                    continue
                self._consumer.seek(tp, model_next)
                chunker.reset(tp.topic, tp.partition, model_next)
                self._pos[tp] = model_next
        self.metrics.group_in_flight.labels(pipeline=name).set(
            sum(1 for f in self._in_flight if f.tp.topic == lane.topic))
        lane.pipe.observe(self.metrics)

    async def _commit(self, *, force: bool = False, timeout: float = 10.0) -> None:
        """Commit the model's offsets of the assigned partitions (for lag tooling; not the source of truth)."""
        if self._consumer is None or (not force and time.monotonic() - self._last_commit < 1.0):
            return
        offsets = {}
        for tp in self._assigned:
            lane = self._lane_of.get(tp.topic)
            v = None if lane is None else lane.chunker.version
            if v is not None and (k := partition_key(tp.topic, tp.partition)) in v.offsets:
                offsets[tp] = v.offsets[k]
        if not offsets:
            return
        self._last_commit = time.monotonic()
        try:
            await asyncio.wait_for(self._consumer.commit(offsets), timeout)
            self.metrics.commits.inc()
        except Exception as exc:
            self.metrics.commit_failures.inc()
            log.debug("commit failed (%s: %s)", type(exc).__name__, exc)

    def queue_transition(self, pipeline: str, transition: Any, version: int) -> None:
        if self.settings.group.events_topic is not None:
            self._transitions.append((pipeline, transition, version))

    async def flush_transitions(self, stop: asyncio.Event) -> bool:
        """Write the queued transition events, retrying with backoff; False only if *stop* was set
        before all were written (the unwritten ones stay queued, and the caller must not publish
        the version after them: a successor then announces them again instead of never)."""
        topic = self.settings.group.events_topic
        if topic is None:
            self._transitions.clear()
            return True
        w = self.settings.worker
        backoff = w.retry_backoff_initial_seconds
        failing = False
        while self._transitions:
            pipeline, tr, version = self._transitions[0]
            value = json.dumps({"pipeline": pipeline, "version": version, "kind": tr.kind,
                                "cluster_id": tr.cluster_id, "other_id": tr.other_id,
                                "distance": tr.distance}).encode()
            try:
                await self.producer.send_and_wait(topic, value, key=pipeline.encode())
            except KafkaError as exc:
                if not failing:  # once per outage, not per retry
                    log.error("cluster events not written to %s (%s); retrying", topic, exc,
                              extra={"event": "events_failed"})
                failing = True
                if stop.is_set():
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(2 * backoff, w.retry_backoff_max_seconds)
                continue
            self._transitions.pop(0)
        if failing:
            log.info("cluster events written to %s again", topic, extra={"event": "events_recovered"})
        return True

    # ------------------------------------------------------------------ the loop
    async def _fetch(self) -> tuple[dict[Any, list[Any]] | None, dict[TopicPartition, int]]:
        """One ``getmany`` (None when stopping), with the partition epochs it started under."""
        kafka = self.settings.kafka
        epochs = dict(self._epoch)
        got = await getmany_unless(self._consumer, self._stopping, timeout_ms=kafka.fetch_timeout_ms,
                                   max_records=kafka.max_records)
        return got, epochs

    async def _loop(self) -> None:
        S = self.settings.group.max_in_flight
        prefetch: asyncio.Future[Any] | None = None
        try:
            while not self._stopping.is_set():
                for r in self._reducers.values():
                    r.raise_if_failed()
                self.follower.raise_if_failed()
                async with self._lock:
                    await self._ack_stats(wait=False)
                self._apply_version()
                async with self._lock:  # rebalance callbacks change what is syncing
                    await self._sync()
                # Rounds: each partition has its own budget of S unfolded chunks, so a partition far
                # ahead waits for the round while the one the round waits for goes on.
                if self._rounds:
                    blocked = self._throttle(S)
                else:
                    blocked = len(self._in_flight) + sum(1 for _ in self._unacked_stats()) >= S
                if blocked:
                    if self._unacked:  # the budget counts them: wait for their acknowledgements first
                        async with self._lock:
                            await self._ack_stats()
                        continue
                    self.follower.changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.follower.changed.wait(), 0.5)
                    continue
                fetch, prefetch = (prefetch if prefetch is not None else self._fetch()), None
                got, epochs = await fetch
                if got is None:  # stopping (a rebalance may hold a fetch until every member rejoined)
                    break
                batch = got
                self._last_fetch = time.monotonic()
                self._report_lag()
                async with self._lock:
                    if batch:
                        # The next fetch runs while this batch is processed: aiokafka unpacks records
                        # on the event loop, and _process waits on threads and the producer meanwhile.
                        if not self._stopping.is_set():
                            prefetch = asyncio.ensure_future(self._fetch())
                        await self._process(batch, epochs)
                    if self._has_unsent():
                        if self._pending_since is None:
                            self._pending_since = time.monotonic()
                        if self._rounds:
                            await self._cut_idle_partials()
                        # A partial chunk waits for more records only while its partitions have more.
                        elif time.monotonic() - self._pending_since >= self.flush_linger and (
                                not batch or self._caught_up()):
                            await self._flush()
                    await self._commit()
                self.metrics.set_ready(self.is_ready())
            async with self._lock:  # stopping: the statistics sent are acknowledged first
                await self._ack_stats()
        finally:
            if prefetch is not None:  # records it handed out are read again by whoever resumes here
                prefetch.cancel()
                prefetch.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _has_unsent(self) -> bool:
        """Rows queued or records read that no chunk holds yet, in any pipeline."""
        for tp in self._assigned:
            lane = self._lane_of.get(tp.topic)
            if lane is not None and lane.chunker.unsent(tp.topic, tp.partition):
                return True
        return any(lane.chunker.n_pending for lane in self.lanes.values())

    def _throttle(self, budget: int) -> bool:
        """Pause the partitions with *budget* unfolded chunks in flight, resume the others; True
        if every started partition is paused (then the loop waits for a version)."""
        per: dict[TopicPartition, int] = {}
        for f in self._in_flight:
            per[f.tp] = per.get(f.tp, 0) + 1
        for _, st in self._unacked_stats():
            tp = TopicPartition(st.topic, st.partition)
            per[tp] = per.get(tp, 0) + 1
        started = [tp for tp in self._assigned if tp in self._pos and tp not in self._syncing]
        for tp in started:
            if per.get(tp, 0) >= budget:
                if tp not in self._throttled:
                    self._consumer.pause(tp)
                    self._throttled.add(tp)
            elif tp in self._throttled:
                self._consumer.resume(tp)
                self._throttled.discard(tp)
        return bool(started) and all(tp in self._throttled for tp in started)

    async def _process(self, batch: Mapping[Any, list[Any]], epochs: Mapping[TopicPartition, int] | None = None
                       ) -> None:
        """Cut a fetched batch into chunks and send them; *epochs*: the partition epochs the
        fetch started under (a partition realigned, revoked or restarted since is dropped from
        the batch and read again from where this member now resumes it)."""
        recs_all: list[Any] = []
        for tp in sorted(batch, key=lambda t: (t.topic, t.partition)):
            recs = batch[tp]
            if not recs or tp not in self._assigned or tp in self._syncing:
                continue
            pos = self._pos.get(tp)
            if pos is None:
                continue
            if epochs is not None and epochs.get(tp, 0) != self._epoch.get(tp, 0):
                # Fetched across a seek: these records may come from before it (handed out
                # before the seek, while an earlier batch was processed) or after; either way
                # the consumer's position is no longer known, so read again from pos.
                self._consumer.seek(tp, pos)
                continue
            if recs[0].offset < pos:
                recs = [r for r in recs if r.offset >= pos]
            if not recs:
                continue
            # aiokafka drops data fetched before a seek, so a batch starting after pos is a real gap
            # in the offsets (a transaction marker, compaction, retention): the chunk's range spans it.
            self._pos[tp] = recs[-1].offset + 1
            recs_all.append((tp, recs))
        if not recs_all:
            return
        now = time.monotonic()
        for tp, _ in recs_all:
            self._records_at[tp] = now
        for lane in self.lanes.values():
            mine = [(tp, recs) for tp, recs in recs_all if tp.topic == lane.topic]
            if not mine:
                continue
            pipe = lane.pipe
            res = BatchResult()
            for tp, recs in mine:
                offload = pipe.always_offload or len(recs) >= self.settings.worker.offload_min_rows
                r = await asyncio.to_thread(pipe.process, recs) if offload else pipe.process(recs)
                lane.chunker.advance(tp.topic, tp.partition, recs[-1].offset + 1)
                res.merge(r)
            if lane.chunker.n_pending and self._pending_since is None:
                self._pending_since = time.monotonic()
            await self._send(lane, res)

    def _report_lag(self) -> None:
        """``streamkm_consumer_lag_records``: high watermark minus the next offset this member reads."""
        for tp, pos in self._pos.items():
            hw = self._consumer.highwater(tp)
            if hw is not None:
                self.metrics.set_lag(tp.topic, tp.partition, hw - pos)

    def _caught_up(self) -> bool:
        """Every started partition has been read up to its high watermark."""
        for tp, pos in self._pos.items():
            hw = self._consumer.highwater(tp)
            if hw is None or pos < hw:
                return False
        return True

    async def _cut_idle_partials(self) -> None:
        """Rounds: each partial chunk is a boundary that depends on timing, so a partition's is cut
        only when it has brought no record for half of group.idle_partition_seconds and is read to
        its high watermark: it then reaches the reducer before the reducer gives up on the
        partition (docs/replay.md). Counted: mid-stream, a replay cuts there only if it ends there."""
        now = time.monotonic()
        wait = self.settings.group.idle_partition_seconds / 2
        for lane in self.lanes.values():
            res = BatchResult()
            for tp in sorted(self._assigned, key=lambda t: (t.topic, t.partition)):
                if tp.topic != lane.topic:
                    continue
                pos = self._pos.get(tp)
                if pos is None or tp in self._syncing or not lane.chunker.unsent(tp.topic, tp.partition):
                    continue
                hw = self._consumer.highwater(tp)
                if hw is None or pos < hw or now - self._records_at.get(tp, 0.0) < wait:
                    continue
                cut = lane.pipe.flush_partition(tp.topic, tp.partition)
                if cut.stats:
                    self.metrics.group_partial_chunks.labels(pipeline=lane.name).inc(len(cut.stats))
                    log.debug("%s:%d: partial chunk cut after %.0fs without records", tp.topic, tp.partition,
                              wait)
                res.merge(cut)
            if res.stats:
                await self._send(lane, res)

    async def _flush(self) -> None:
        self._pending_since = None
        for lane in self.lanes.values():
            await self._send(lane, lane.pipe.flush())

    async def _send(self, lane: _Lane, res: BatchResult) -> None:
        pipe = lane.pipe
        account(self.metrics, pipe, res)
        sends: list[OutboundRecord] = outbound_records(
            res, pipeline=pipe.name, pipeline_class=type(pipe).__name__, dlq_topic=self.settings.dlq.topic,
            output_topic=self.settings.output.topic, group_id=self.group_id, client_id=self.client_id)
        if sends:
            w = self.settings.worker
            try:
                await deliver(self.producer, sends, metrics=self.metrics,
                              backoff_initial=w.retry_backoff_initial_seconds,
                              backoff_max=w.retry_backoff_max_seconds, stopping=self._stopping.is_set)
            except DeliveryAborted as exc:
                raise _Stop(str(exc)) from None
        self._fault("after_outputs")
        stats = res.stats
        # Window states and chunks of rows: encoded off the event loop (the next fetch goes on there).
        if stats and (lane.windows is not None
                      or sum(st.rows.shape[0] for st in stats) >= self.settings.worker.offload_min_rows):
            values = await asyncio.to_thread(lambda: [st.to_bytes() for st in stats])
        else:
            values = [st.to_bytes() for st in stats]
        if not stats:
            return
        # Pipelined: queued to the producer (which keeps the stats partition's log in send order)
        # and acknowledged later, by _ack_stats, while the loop fetches and cuts the next chunks.
        tp = lane.stats_tp
        u = _Unacked(lane, list(stats), values, [],
                     [self._epoch.get(TopicPartition(st.topic, st.partition), 0) for st in stats])
        self._unacked.append(u)
        try:
            for st, value in zip(stats, values, strict=True):
                u.futures.append(await self.stats_producer.send(tp.topic, value, key=st.pipeline.encode(),
                                                                partition=tp.partition))
        except KafkaError as exc:
            _fatal_send_error(exc)
            log.warning("stats send failed (%s); sending the rest one by one", exc)
            await self._ack_stats()

    async def _ack_stats(self, *, wait: bool = True) -> None:
        """Count the acknowledged statistics as sent (in flight until folded), in send order.

        With *wait* false, only those already acknowledged (a prefix of the send order). If a
        send failed, it and every one sent after it are resent one by one, in order; a copy
        that landed after all is dropped by the reducer as a duplicate.
        """
        while self._unacked:
            u = self._unacked[0]
            if not wait and (len(u.futures) < len(u.stats) or not all(f.done() for f in u.futures)):
                return
            mds: list[Any] = []
            for fut in u.futures:
                try:
                    mds.append(await fut)
                except KafkaError as exc:
                    _fatal_send_error(exc)
                    log.warning("stats send failed (%s); resending %d message(s) in order", exc,
                                len(u.stats) - len(mds))
                    break
            if len(mds) == len(u.stats):
                self._unacked.pop(0)
                self._sent(u, mds)
                continue
            # Resend from the first one not acknowledged, in order, and everything queued after it.
            rest, self._unacked = self._unacked, []
            self._resending = rest
            try:
                for later in rest:
                    for fut in (later.futures[len(mds) + 1:] if later is u else later.futures):
                        with contextlib.suppress(Exception):
                            await fut
                for later in rest:
                    done = mds if later is u else []
                    tp = later.lane.stats_tp
                    for st, value in zip(later.stats[len(done):], later.values[len(done):], strict=True):
                        done.append(await self._send_stats(tp, st, value))
                    self._sent(later, done)
            finally:
                self._resending = []

    def _sent_ends(self, tp: TopicPartition) -> set[int]:
        """The end offsets of *tp*'s chunks this member sent since its last realignment and has not
        seen folded, acknowledged or not: a model at one of them folded this member's chunks up
        to there (the reducer may read a chunk from the log before its acknowledgement arrives
        here), so it is no reason to realign."""
        epoch = self._epoch.get(tp, 0)
        ends = {f.end for f in self._in_flight if f.tp == tp}
        for u in (*self._unacked, *self._resending):
            for st, e in zip(u.stats, u.epochs, strict=True):
                if e == epoch and st.partition == tp.partition and st.topic == tp.topic:
                    ends.add(int(st.end_offset))
        return ends

    def _unacked_stats(self) -> Iterator[tuple[_Unacked, ChunkStats]]:
        """The statistics this member sent and has not seen acknowledged (queued to the producer,
        or being resent after a failed send), in send order: what the in-flight budgets and the
        local reducer count as on their way. (Resends happen inside ``_ack_stats``, under the
        lock, so only the reducer's task can see ``_resending`` non-empty; the loop's budget
        checks run after the lock is released.)"""
        for u in (*self._unacked, *self._resending):
            for st in u.stats:
                yield u, st

    def stats_outstanding(self, pipeline: str) -> int:
        """Statistics of *pipeline* this member sent and has not seen acknowledged yet."""
        return sum(1 for u, _ in self._unacked_stats() if u.lane.name == pipeline)

    def _sent(self, u: _Unacked, mds: list[Any]) -> None:
        """*u*'s statistics are acknowledged at the stats offsets of *mds*."""
        name = u.lane.pipe.name
        reducer = self._reducers.get(name)
        for st, md, epoch, value in zip(u.stats, mds, u.epochs, u.values, strict=True):
            if reducer is not None:  # its own reducer folds them without fetching them back
                reducer.offer_local(int(md.offset), value)
            tp = TopicPartition(st.topic, st.partition)
            if self._epoch.get(tp, 0) == epoch:
                self._in_flight.append(_InFlight(int(md.offset), tp, st.end_offset))
            self.n_sent += 1
            self.metrics.group_stats_sent.labels(pipeline=name).inc()
        self._fault("after_stats")
        self.metrics.group_in_flight.labels(pipeline=name).set(
            sum(1 for f in self._in_flight if f.tp.topic == u.lane.topic))

    async def _send_stats(self, tp: TopicPartition, st: ChunkStats, value: bytes) -> Any:
        backoff = self.settings.worker.retry_backoff_initial_seconds
        while True:
            try:
                return await self.stats_producer.send_and_wait(tp.topic, value, key=st.pipeline.encode(),
                                                               partition=tp.partition)
            except KafkaError as exc:
                _fatal_send_error(exc)
                if self._stopping.is_set():  # not sent: whoever owns the partition next re-reads it
                    raise _Stop(f"statistics not sent while stopping ({exc})") from None
                log.warning("stats send failed (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, self.settings.worker.retry_backoff_max_seconds)

"""Offline replay: the group model's pipeline and fold, without a broker.

The model is a deterministic function of the records, taken per partition in offset
order, and of the settings. Fetch timing plays no part:

- chunk boundaries come from the data (``group.chunk_rows`` valid rows per partition,
  ending on a record boundary; :class:`streamkm.group.GroupChunker`), and a chunk carries
  its rows (``group.ordering = "rounds"``);
- the reducer's :class:`streamkm.group.rounds.RoundFold` folds round after round: the next
  chunk of every partition, in partition order; a partition that ends (here: the end of the
  source) leaves the rounds after its last, partial, chunk;
- decay counts chunks or points (``model.time_unit``), never wall-clock time.

The decode, validation, dead-letter, chunking and folding code is the daemon's own
(:func:`streamkm.service.group.group_vector_pipeline`, :func:`~streamkm.service.group.new_group_model`,
:class:`~streamkm.group.rounds.RoundFold`); a live group with ``group.ordering = "rounds"``
builds the same model (docs/replay.md says when it cannot).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

import numpy as np

from streamkm.group.messages import partition_key
from streamkm.group.rounds import RoundFold
from streamkm.pipeline.base import BatchResult
from streamkm.replay.sources import FileSource, ReplayRecord

if TYPE_CHECKING:
    from streamkm.config import Settings
    from streamkm.group import GroupModel
    from streamkm.pipeline.sequence import SequencePipeline
    from streamkm.pipeline.vectors import VectorPipeline

__all__ = ["RoundReplay", "ReplaySummary"]

#: Records decoded per pipeline call at most while filling a partition's next chunk, by default.
#: Vectors: rows do not depend on how records are grouped into calls, so large blocks (they cost
#: least; a paced replay asks for small ones). Sequence: windows are embedded per call and BLAS
#: rounds a batch by its shape, so one block size whatever the caller (and the same model, bit
#: for bit, paced or not).
_BLOCK_RECORDS = {"vectors": 4096, "sequence": 1024}


@dataclass(slots=True)
class ReplaySummary:
    """What a replay did."""

    records: int = 0
    valid_rows: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    rounds: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    record_time_ms: list[int] | None = None
    seconds: float = 0.0
    stopped: bool = False  # stop() was called: the source was not read to its end


class _Feed:
    """One partition's records, its record times by offset, and whether it is exhausted."""

    def __init__(self, it: Iterator[ReplayRecord]):
        self.it = it
        self.done = False
        self.offsets: list[int] = []
        self.times: list[int] = []


class RoundReplay:
    """Replay a source through the group pipeline and fold, in rounds.

    Parameters
    ----------
    settings : Settings
        The configuration the daemon runs with (model, input, group sections).
    pipeline : {"vectors", "sequence"}
        Which pipeline's records the source holds (vectors, or events for the sequence
        pipeline: per-partition windows, LSTM embeddings as rows).
    on_chunk : callable, optional
        ``on_chunk(line)`` with the per-chunk log line (a dict, see :meth:`chunk_line`) after
        every fold.
    on_records : callable, optional
        ``on_records(n)`` after every *n* records decoded (progress bars).
    before_block : callable, optional
        ``before_block(records)`` before each block is decoded (pacing by record time).
    after_block : callable, optional
        ``after_block(result)`` with each block's :class:`BatchResult` (metrics).
    block_records : int, optional
        Records decoded per pipeline call at most. Default: vectors 4096, sequence 1024 (a
        sequence replay's embeddings, to float32 rounding, depend on the blocks: a caller that
        must reproduce another run keeps the default).
    """

    def __init__(self, settings: Settings, *, pipeline: str = "vectors",
                 on_chunk: Callable[[dict[str, Any]], None] | None = None,
                 on_records: Callable[[int], None] | None = None,
                 before_block: Callable[[list[ReplayRecord]], None] | None = None,
                 after_block: Callable[[BatchResult], None] | None = None, block_records: int | None = None):
        if pipeline not in ("vectors", "sequence"):
            raise ValueError(f"pipeline must be 'vectors' or 'sequence', got {pipeline!r}")
        if block_records is None:
            block_records = _BLOCK_RECORDS[pipeline]
        if block_records < 1:
            raise ValueError(f"block_records must be >= 1, got {block_records}")
        from streamkm.service.group import group_sequence_pipeline, group_vector_pipeline, new_group_model

        if pipeline == "sequence" and settings.sequence.lstm_path is None:
            raise ValueError("replaying the sequence pipeline needs sequence.lstm_path")
        topic = (settings.kafka.vectors_topic or "streamkm.vectors") if pipeline == "vectors" \
            else (settings.kafka.events_topic or "streamkm.events")
        if settings.group.ordering != "rounds":  # replay computes what a group folding in rounds computes
            settings = settings.model_copy(update={"group": settings.group.model_copy(update={"ordering": "rounds"})})
        self.settings = settings
        self.topic = topic
        self.pipeline_name = pipeline
        self.pipeline: VectorPipeline | SequencePipeline
        if pipeline == "vectors":
            self.chunker, self.pipeline = group_vector_pipeline(settings, member="replay", topic=topic,
                                                                emit_outputs=False)
        else:
            self.chunker, self.pipeline = group_sequence_pipeline(settings, member="replay", topic=topic,
                                                                  emit_outputs=False)
        self.model: GroupModel = new_group_model(settings, pipeline)
        self.rounds = RoundFold(self.model, on_fold=self._on_fold)
        self._log_offset = 0
        self._feeds: dict[int, _Feed] = {}
        self.on_chunk = on_chunk
        self.on_records = on_records
        self.before_block = before_block
        self.after_block = after_block
        self.block_records = int(block_records)
        self.summary = ReplaySummary()
        self._stop = threading.Event()

    def stop(self) -> None:
        """Stop after the current block (from another thread too): :meth:`run` returns what it folded."""
        self._stop.set()

    def run(self, source: FileSource) -> ReplaySummary:
        """Replay every record of *source*; returns the summary (the model is :attr:`model`)."""
        t0 = time.perf_counter()
        feeds = self._feeds
        for p in source.partitions():
            feeds[p] = _Feed(source.records(p))
            self.chunker.reset(self.topic, p, 0)
        self.rounds.expect(partition_key(self.topic, p) for p in feeds)
        first = set(feeds)
        # Lockstep: one chunk of every partition at a time keeps the round queue short (the
        # order of offers does not change the model: RoundFold orders them).
        while any(not f.done for f in feeds.values()) and not self._stop.is_set():
            for p, feed in feeds.items():
                if feed.done:
                    continue
                res = self._fill(p, feed, p in first)
                first.discard(p)
                if feed.done:  # its last rows: a partial chunk, then it leaves the rounds
                    self.chunker.cut_partial(self.topic, p, res)
                for st in res.stats:
                    self._offer(st, feeds)
                if feed.done:
                    self._done(self.rounds.end(partition_key(self.topic, p)), feeds)
        if self._stop.is_set():
            self.summary.stopped = True
        else:
            self._done(self.rounds.drain(), feeds)
        self.summary.rounds = self.rounds.n_rounds
        self.summary.seconds = time.perf_counter() - t0
        return self.summary

    # ------------------------------------------------------------------ steps
    def _fill(self, p: int, feed: _Feed, first: bool) -> BatchResult:
        """Decode records of partition *p* until it has cut a chunk or ended; returns the results."""
        need = self.chunker.batch_rows
        out = BatchResult()
        while not feed.done and not out.stats and not self._stop.is_set():
            want = max(1, min(self.block_records, need - self.chunker.pending_rows(self.topic, p)))
            block = list(islice(feed.it, want))
            if not block:
                feed.done = True
                break
            if self.before_block is not None:
                self.before_block(block)
            if first and block[0].offset != self.chunker.start_of(self.topic, p):
                # The source starts mid-partition (a topic range): chunks start where it starts.
                self.chunker.reset(self.topic, p, block[0].offset)
            first = False
            res = self.pipeline.process(block)
            self.chunker.advance(self.topic, p, block[-1].offset + 1)
            if self.after_block is not None:
                self.after_block(res)
            s = self.summary
            s.records += len(block)
            s.valid_rows += res.n_rows
            for dl in res.dead_letters:
                reason = dl.error.reason
                s.dead_letters[reason] = s.dead_letters.get(reason, 0) + 1
            feed.offsets.extend(r.offset for r in block)
            feed.times.extend(r.timestamp for r in block)
            if self.on_records is not None:
                self.on_records(len(block))
            out.stats.extend(res.stats)
        return out

    def _offer(self, st: Any, feeds: dict[int, _Feed]) -> None:
        self._done(self.rounds.offer(st, self._log_offset), feeds)
        self._log_offset += 1

    def _done(self, offered: list[Any], feeds: dict[int, _Feed]) -> None:
        for o in offered:
            if o.status != "queued":
                self.summary.outcomes[o.status] = self.summary.outcomes.get(o.status, 0) + 1

    def _on_fold(self, o: Any) -> None:
        # The version the pipeline reports (the model gauges of a paced replay) follows the fold.
        self.chunker.version = self.model.version()
        if o.status == "accepted":
            self._fold(o.msg, o.outcome, self._feeds[o.msg.partition])

    def _fold(self, st: Any, outcome: Any, feed: _Feed) -> None:
        s = self.summary
        s.chunks += 1
        n = int(np.searchsorted(np.asarray(feed.offsets, dtype=np.int64), st.end_offset, side="left"))
        times = [t for t in feed.times[:n] if t >= 0]
        del feed.offsets[:n], feed.times[:n]
        t_max = max(times) if times else None
        if t_max is not None:
            t_min = min(times)
            span = s.record_time_ms
            s.record_time_ms = [t_min, t_max] if span is None else [min(span[0], t_min), max(span[1], t_max)]
        if self.on_chunk is not None:
            self.on_chunk(self.chunk_line(st, outcome, t_max))

    def chunk_line(self, st: Any, outcome: Any, record_time_ms: int | None) -> dict[str, Any]:
        """The per-chunk log line (docs/replay.md, "chunks.jsonl")."""
        v = self.model.version()
        summ = v.summary
        rows = int(st.n_points)
        events: list[dict[str, Any]] = [dict(e) for e in outcome.events]
        events += [{"event": "identity", "kind": t.kind, "cluster_id": int(t.cluster_id),
                    "other_id": None if t.other_id is None else int(t.other_id)}
                   for t in outcome.transitions if t.kind not in ("survived", "moved")]
        return {
            "version": int(v.version), "status": outcome.status, "partition": int(st.partition),
            "first_offset": int(st.first_offset), "end_offset": int(st.end_offset), "rows": rows,
            "record_time_ms": record_time_ms,
            "objective": _finite(summ.get("last_batch_objective")), "ewma": _finite(summ.get("ewm_objective")),
            "center_shift": _finite(summ.get("last_center_shift")),
            "weights": {str(int(i)): float(w) for i, w in zip(v.ids, v.weights, strict=True)},
            "events": [_jsonable(e) for e in events],
        }


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _jsonable(obj: Any) -> Any:
    """Events as JSON values (NumPy scalars to Python, non-finite floats to null)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer, bool)):
        return obj if isinstance(obj, bool) else int(obj)
    if isinstance(obj, (float, np.floating)):
        return _finite(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj

"""The worker's side of the group model: per-partition chunks, summarised against a version.

A chunk is a contiguous run of offsets of one partition ``[first, end)`` holding at
least ``batch_rows`` valid rows (whole records; fewer only on a flush). The first
chunk after an assignment starts where the model says the partition resumes, and
each next one where the previous ended, so the chunks tile the partition and the
reducer's acceptance rule can tell a re-read from new data.

:class:`GroupChunker` has the ``enqueue`` / ``absorb`` / ``n_pending`` interface of
:class:`streamkm.pipeline.chunking.ChunkedModel`, so a pipeline decodes and queues
exactly as it does for a local model; instead of updating a model, ``absorb``
assigns each chunk against the current :class:`ModelVersion`, builds the output
records (with stable cluster ids and the version) and appends a :class:`ChunkStats`
to ``result.stats``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streamkm.cluster import summarize
from streamkm.group.messages import ChunkStats, ModelVersion
from streamkm.pipeline.base import BatchResult
from streamkm.pipeline.chunking import MakeOutputs

__all__ = ["GroupChunker", "VersionView"]

_EMPTY_I = np.empty(0, dtype=np.int64)


class VersionView:
    """A :class:`ModelVersion` seen through the attributes the metrics read from a model.

    ``n_batches_`` is the version number (chunks folded), so ``streamkm_model_version``
    is the group model's version.
    """

    def __init__(self, version: ModelVersion | None):
        v = version
        summ = {} if v is None else v.summary
        self.is_initialized_ = v is not None and v.is_initialized
        self.n_seen_ = 0 if v is None else v.n_seen
        self.n_batches_ = 0 if v is None else v.version
        self.last_batch_objective_ = summ.get("last_batch_objective")
        self.ewm_objective_ = summ.get("ewm_objective")
        self.last_center_shift_ = summ.get("last_center_shift")
        self.counts_ = None if v is None else v.weights
        self.n_reseeds_ = int(summ.get("n_reseeds") or 0)
        self.n_reseeds_rejected_ = int(summ.get("n_reseeds_rejected") or 0)
        self.n_dying_replaced_ = int(summ.get("n_dying_replaced") or 0)


@dataclass(slots=True)
class _Queue:
    start: int  # first offset of the next chunk
    consumed: int  # next offset after the last record seen (valid or not)
    X: list[NDArray[np.float32]] = field(default_factory=list)
    meta: list[dict[str, NDArray[Any]]] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    n: int = 0


class GroupChunker:
    """Per-partition row queues cut into chunks and summarised for the reducer.

    Parameters
    ----------
    pipeline : str
    batch_rows : int
        Valid rows per chunk (a chunk ends at the first record boundary at or past it).
    sample_rows : int
        Rows of each chunk sent for the reducer's reservoir (all rows if fewer).
    seed : int
        Seeds the per-chunk sample (with the partition and first offset), so a
        re-read chunk sends the same sample.
    member : str
        Written into the messages (diagnostics).
    raw : bool
        Send each chunk's rows instead of its summary against the version held
        (``group.ordering = "rounds"``: the reducer folds rows in rounds, so the model does not
        depend on which version a member held; :mod:`streamkm.group.rounds`). Outputs are still
        assigned against the version held.
    """

    def __init__(self, *, pipeline: str, batch_rows: int, sample_rows: int = 64, seed: int = 0, member: str = "",
                 raw: bool = False):
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        if sample_rows < 0:
            raise ValueError(f"sample_rows must be >= 0, got {sample_rows}")
        self.pipeline = pipeline
        self.batch_rows = int(batch_rows)
        self.sample_rows = int(sample_rows)
        self.seed = int(seed)
        self.member = member
        self.raw = bool(raw)
        self.version: ModelVersion | None = None
        #: ``resume(topic, partition) -> {"offset", "windows"}``: set by a pipeline whose rows
        #: come from per-partition state (the sequence pipeline's windows); every chunk then
        #: says where that state stands (:attr:`ChunkStats.resume`).
        self.resume: Callable[[str, int], dict[str, Any]] | None = None
        self._queues: dict[tuple[str, int], _Queue] = {}
        self._topic = ""
        self._d: int | None = None

    # ------------------------------------------------------------ partitions
    def reset(self, topic: str, partition: int, offset: int) -> None:
        """Start *partition* afresh at *offset* (assignment, or realignment to the model)."""
        self._queues[(topic, partition)] = _Queue(start=int(offset), consumed=int(offset))

    def restore(self, topic: str, partition: int, start: int, resume: Mapping[str, Any]) -> None:
        """Start *partition* where a chunk ending at *start* left it: the rows it carried
        (:attr:`ChunkStats.resume`) are queued, and records are read from ``resume["offset"]``."""
        carry = resume["carry"]
        X = np.asarray(carry["X"], dtype=np.float32)
        q = _Queue(start=int(start), consumed=int(resume["offset"]))
        if X.shape[0]:
            q.X = [X]
            q.meta = [{name: np.asarray(col) for name, col in carry["meta"].items()}]
            q.keys = [None if k is None else str(k).encode("utf-8", "surrogateescape") for k in carry["keys"]]
            q.n = int(X.shape[0])
            self._d = int(X.shape[1])
        self._queues[(topic, partition)] = q

    def forget(self, topic: str, partition: int) -> None:
        """Drop a revoked partition's queue."""
        self._queues.pop((topic, partition), None)

    def advance(self, topic: str, partition: int, next_offset: int) -> None:
        """Records up to *next_offset* were consumed (invalid ones included)."""
        q = self._queues.get((topic, partition))
        if q is not None and next_offset > q.consumed:
            q.consumed = int(next_offset)

    def start_of(self, topic: str, partition: int) -> int | None:
        """First offset of the partition's next chunk (None if not tracked)."""
        q = self._queues.get((topic, partition))
        return None if q is None else q.start

    def unsent(self, topic: str, partition: int) -> bool:
        """Whether the partition has consumed records not yet in a chunk."""
        q = self._queues.get((topic, partition))
        return q is not None and q.consumed > q.start

    @property
    def model(self) -> VersionView:
        """The version in use, with a model's attributes (for the metrics)."""
        return VersionView(self.version)

    @property
    def n_pending(self) -> int:
        """Rows queued over all partitions."""
        return sum(q.n for q in self._queues.values())

    def pending_rows(self, topic: str, partition: int) -> int:
        """Rows queued for one partition (0 if not tracked)."""
        q = self._queues.get((topic, partition))
        return 0 if q is None else q.n

    def cut_partial(self, topic: str, partition: int, result: BatchResult,
                    make_outputs: MakeOutputs | None = None) -> None:
        """Cut one partition's remaining rows (full chunks first, then the partial one) into
        ``result.stats`` (the end of a replayed partition)."""
        q = self._queues.get((topic, partition))
        while q is not None and (q.n >= self.batch_rows or q.consumed > q.start):
            self._cut(topic, partition, q, result, make_outputs)

    # ------------------------------------------------------------ the ChunkedModel interface
    def enqueue(self, X: NDArray[Any], meta: Mapping[str, NDArray[Any]], keys: list[bytes | None]) -> None:
        """Queue rows *X* (n, d) with their ``partition``/``offset``/``row`` columns and keys."""
        if X.shape[0] == 0:
            return
        self._d = int(X.shape[1])
        part = np.asarray(meta["partition"], dtype=np.int64)
        cuts = np.flatnonzero(np.r_[True, part[1:] != part[:-1], True])
        for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
            tp = (self._topic, int(part[a]))
            q = self._queues.get(tp)
            if q is None:  # not assigned (revoked meanwhile): the new owner re-reads it
                continue
            q.X.append(np.ascontiguousarray(X[a:b], dtype=np.float32))
            q.meta.append({name: np.asarray(col[a:b]) for name, col in meta.items()})
            q.keys.extend(keys[a:b])
            q.n += b - a
            q.consumed = max(q.consumed, int(np.asarray(meta["offset"])[b - 1]) + 1)

    def set_topic(self, topic: str) -> None:
        """The input topic the queued rows come from (the pipeline has one)."""
        self._topic = topic

    def absorb(self, result: BatchResult, make_outputs: MakeOutputs | None, *, flush: bool = False) -> None:
        """Cut every full chunk (and, if *flush*, every partial one) into ``result.stats``."""
        for (topic, partition), q in sorted(self._queues.items()):
            while q.n >= self.batch_rows or (flush and q.consumed > q.start):
                self._cut(topic, partition, q, result, make_outputs)

    # ------------------------------------------------------------ chunks
    def _cut(self, topic: str, partition: int, q: _Queue, result: BatchResult,
             make_outputs: MakeOutputs | None) -> None:
        if not q.X:
            d = self._d if self._d is not None else (0 if self.version is None else self.version.centers.shape[1])
            X = np.empty((0, d), dtype=np.float32)
        else:
            X = np.concatenate(q.X) if len(q.X) != 1 else q.X[0]
        meta = {name: np.concatenate([m[name] for m in q.meta]) for name in q.meta[0]} if q.meta else {}
        if q.n >= self.batch_rows:
            offs = meta["offset"]
            cut_at = int(offs[self.batch_rows - 1]) + 1  # finish the record holding the last row
            n = int(np.searchsorted(offs, cut_at, side="left"))
            # The end is the last record's offset + 1 whatever was fetched after it, so the
            # boundaries depend on the data only; invalid records after it open the next chunk.
            end = cut_at
        else:  # a flush: everything consumed so far
            n, end = q.n, q.consumed
        Xc = X[:n]
        keys = q.keys[:n]
        mc = {name: col[:n] for name, col in meta.items()}
        stats, labels, sq = self._summarise(topic, partition, q.start, end, Xc,
                                            assign=make_outputs is not None and n > 0)
        if self.resume is not None:
            r = self.resume(topic, partition)
            carry = {"X": np.ascontiguousarray(X[n:]), "meta": {name: col[n:] for name, col in meta.items()},
                     "keys": [None if k is None else k.decode("utf-8", "surrogateescape") for k in q.keys[n:]]}
            stats = dataclasses.replace(stats, resume={"offset": max(int(r["offset"]), end),
                                                       "windows": r["windows"], "carry": carry})
        result.stats.append(stats)
        if make_outputs is not None and n:
            v = self.version
            version = 0 if v is None else v.version
            result.outputs.extend(make_outputs(mc, keys, labels, sq, version))
        result.n_clustered += n
        q.start = end
        q.consumed = max(q.consumed, end)
        rest = X[n:]
        q.X = [rest] if rest.shape[0] else []
        q.meta = [{name: col[n:] for name, col in meta.items()}] if rest.shape[0] else []
        q.keys = q.keys[n:]
        q.n -= n

    def _summarise(self, topic: str, partition: int, first: int, end: int, Xc: NDArray[np.float32], *,
                   assign: bool = True) -> tuple[ChunkStats, NDArray[np.int64], NDArray[np.float64]]:
        """The chunk's message, and each row's cluster id and squared distance against the version
        held (for the outputs; with *assign* false in raw mode, where nothing else needs them,
        placeholders: the message holds the rows, not their assignment)."""
        v = self.version
        m, d = Xc.shape
        e_f = np.empty(0, dtype=np.float64)
        if self.raw:
            stats = ChunkStats(self.pipeline, topic, partition, first, end, 0 if v is None else v.version,
                               end - first, _EMPTY_I, _EMPTY_I, np.empty((0, d)), e_f, np.empty((0, d), np.float32),
                               Xc.copy(), self.member)
            if v is None or not v.is_initialized or m == 0 or not assign:
                return stats, np.full(m, -1, dtype=np.int64), np.full(m, np.nan, dtype=np.float64)
            s = summarize(Xc, v.centers, dtype=np.dtype(v.dtype))
            return stats, v.ids[s.labels], np.asarray(s.sq_dist, dtype=np.float64)
        if v is None or not v.is_initialized or m == 0:
            labels = np.full(m, -1, dtype=np.int64)
            sq = np.full(m, np.nan, dtype=np.float64)
            stats = ChunkStats(self.pipeline, topic, partition, first, end, 0 if v is None else v.version,
                               end - first, _EMPTY_I, _EMPTY_I, np.empty((0, d)), e_f, np.empty((0, d), np.float32),
                               Xc.copy(), self.member)
            return stats, labels, sq
        s = summarize(Xc, v.centers, dtype=np.dtype(v.dtype))
        if self.sample_rows >= m:
            sample = Xc.copy()
        else:
            rng = np.random.default_rng([self.seed, partition, first])
            sample = Xc[np.sort(rng.choice(m, size=self.sample_rows, replace=False))]
        stats = ChunkStats(self.pipeline, topic, partition, first, end, v.version, end - first, v.ids.copy(), s.counts,
                           s.sums, s.sq_dist_sums, sample.astype(np.float32), np.empty((0, d), np.float32),
                           self.member)
        return stats, v.ids[s.labels], np.asarray(s.sq_dist, dtype=np.float64)

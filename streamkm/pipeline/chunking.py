"""Fixed-size chunking: queued rows reach ``partial_fit`` in chunks of ``batch_rows``, in order.

Exactly-once effect needs model updates that do not depend on how Kafka split the
stream into fetches (a restart resumes mid-stream, so fetch boundaries differ between
runs). Valid rows are therefore queued, and the model is updated with fixed-size
chunks; a partial chunk is absorbed only by an explicit flush. The queue is part of
the state, so a checkpoint cut between two chunks loses nothing. See
docs/architecture.md ("Exactly-once effect").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streamkm.cluster import StreamingKMeans
from streamkm.drift import DriftMonitor
from streamkm.pipeline.base import BatchResult, OutputRecord, finite_or_none

__all__ = ["ChunkedModel", "ChunkedPipeline", "RowMeta", "MakeOutputs", "LEGACY_META_WIDTH"]

#: Named per-row metadata columns (what a row's output record needs), all of one length.
RowMeta = dict[str, NDArray[Any]]
#: ``make_outputs(meta, keys, labels, sq_dist, model_version) -> outputs`` for one chunk.
MakeOutputs = Callable[[Mapping[str, NDArray[Any]], Sequence[bytes | None], NDArray[np.int64],
                        NDArray[np.float64], int], list[OutputRecord]]

#: Checkpoints store the metadata columns as one ``(q, 3)`` float64 array
#: (``pending_meta``, state version 1; exact for integers below 2**53), padded with zeros.
LEGACY_META_WIDTH = 3


class ChunkedModel:
    """StreamingKMeans + drift monitor fed with fixed-size chunks of queued rows.

    Parameters
    ----------
    model_kwargs : dict
        ``StreamingKMeans`` keyword arguments.
    batch_rows : int
        Rows per ``partial_fit`` (independent of fetches).
    drift_kwargs : dict or None
        ``DriftMonitor`` arguments; None disables drift detection.
    reseed_on_drift : bool
        Try a reservoir reseed when drift is detected.
    meta_columns : dict of str to dtype
        The named metadata columns queued with each row, in checkpoint order.
    """

    def __init__(self, *, model_kwargs: dict[str, Any], batch_rows: int, drift_kwargs: dict[str, Any] | None,
                 reseed_on_drift: bool, meta_columns: Mapping[str, type[np.generic]]):
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        if not 0 < len(meta_columns) <= LEGACY_META_WIDTH:
            raise ValueError(f"1 to {LEGACY_META_WIDTH} metadata columns, got {len(meta_columns)}")
        self.model_kwargs = dict(model_kwargs)
        self.batch_rows = int(batch_rows)
        self.drift_kwargs = None if drift_kwargs is None else dict(drift_kwargs)
        self.reseed_on_drift = bool(reseed_on_drift)
        self.meta_columns = {name: np.dtype(dt) for name, dt in meta_columns.items()}
        self.model = StreamingKMeans(**self.model_kwargs)
        self.drift = None if self.drift_kwargs is None else DriftMonitor(**self.drift_kwargs)
        self.n_drift_ = 0
        self.n_drift_reseeds_ = 0
        self.n_clustered_ = 0
        # The queue: segments (rows (m, d) float32, metadata columns (m,), keys), oldest first.
        # Whole segments are handed to the model as views; only a chunk that spans two
        # segments is copied, so each queued row is copied at most once.
        self._segs: deque[tuple[NDArray[np.float32], RowMeta, list[bytes | None]]] = deque()
        self._n_pending = 0
        self._d: int | None = None

    def _empty_meta(self) -> RowMeta:
        return {name: np.empty(0, dtype=dt) for name, dt in self.meta_columns.items()}

    # ---------------------------------------------------------------- queue
    @property
    def n_pending(self) -> int:
        """Rows queued for the next update."""
        return self._n_pending

    def enqueue(self, X: NDArray[Any], meta: Mapping[str, NDArray[Any]], keys: list[bytes | None]) -> None:
        """Queue rows *X* (n, d) with their metadata columns (each (n,)) and keys (n)."""
        if X.shape[0] == 0:
            return
        if self._n_pending and X.shape[1] != self._d:
            raise ValueError(f"expected {self._d} features, got {X.shape[1]}")
        cols = {name: np.asarray(meta[name], dtype=dt) for name, dt in self.meta_columns.items()}
        self._segs.append((np.ascontiguousarray(X, dtype=np.float32), cols, list(keys)))
        self._n_pending += int(X.shape[0])
        self._d = int(X.shape[1])

    def _take(self, n: int) -> tuple[NDArray[np.float32], RowMeta, list[bytes | None]]:
        """Remove the first *n* queued rows (n <= n_pending) and return them."""
        parts = []
        need = n
        while need:
            X, meta, keys = self._segs[0]
            m = X.shape[0]
            if m <= need:
                parts.append(self._segs.popleft())
                need -= m
            else:
                parts.append((X[:need], {k: c[:need] for k, c in meta.items()}, keys[:need]))
                self._segs[0] = (X[need:], {k: c[need:] for k, c in meta.items()}, keys[need:])
                need = 0
        self._n_pending -= n
        if len(parts) == 1:
            return parts[0]
        return (np.concatenate([p[0] for p in parts]),
                {k: np.concatenate([p[1][k] for p in parts]) for k in self.meta_columns},
                [k for p in parts for k in p[2]])

    def _queued(self) -> tuple[NDArray[np.float32], RowMeta, list[bytes | None]]:
        """The whole queue as one (rows, metadata, keys) copy (checkpoint form)."""
        if not self._segs:
            return (np.empty((0, self._d or 0), np.float32), self._empty_meta(), [])
        return (np.concatenate([s[0] for s in self._segs]),
                {k: np.concatenate([s[1][k] for s in self._segs]) for k in self.meta_columns},
                [k for s in self._segs for k in s[2]])

    def _threshold(self) -> int:
        # Until the model is initialized, feed at least init_threshold rows at once so
        # that the first update initializes it (and every row gets a cluster).
        if not self.model.is_initialized_:
            return max(self.batch_rows, self.model.init_threshold)
        return self.batch_rows

    def absorb(self, result: BatchResult, make_outputs: MakeOutputs | None, *, flush: bool = False) -> None:
        """Run ``partial_fit`` on every full chunk (and the remainder if *flush*)."""
        while self._n_pending:
            thr = self._threshold()
            if self._n_pending < thr and not flush:
                return
            n = min(thr, self._n_pending)
            Xc, meta, keys = self._take(n)
            self._update(Xc, result)
            if make_outputs is not None:
                result.outputs.extend(self._outputs(Xc, meta, keys, make_outputs))
            result.n_clustered += n
            self.n_clustered_ += n

    def _update(self, Xc: NDArray[np.float32], result: BatchResult) -> None:
        m = self.model
        was_init = bool(m.is_initialized_)
        reseeds_before = int(m.n_reseeds_)
        m.partial_fit(Xc)
        result.n_updates += 1
        if not was_init and m.is_initialized_:
            result.events.append({"event": "initialized", "n_seen": int(m.n_seen_)})
        obj = finite_or_none(m.last_batch_objective_)
        result.objectives.append(float("nan") if obj is None else obj)
        n_reseeds = int(m.n_reseeds_)
        if n_reseeds > reseeds_before:
            result.events.append({"event": "reseed", "trigger": "interval", "accepted": True,
                                  "n_reseeds": n_reseeds})
        if self.drift is not None and obj is not None and m.is_initialized_:
            if self.drift.update(obj):
                self.n_drift_ += 1
                ev: dict[str, Any] = {"event": "drift", "objective": obj, "n_batches": int(m.n_batches_),
                                      "n_drift": self.n_drift_}
                if self.reseed_on_drift:
                    accepted = bool(m.reseed())
                    self.n_drift_reseeds_ += int(accepted)
                    ev["reseed_accepted"] = accepted
                result.events.append(ev)

    def _outputs(self, Xc: NDArray[np.float32], meta: RowMeta, keys: list[bytes | None],
                 make_outputs: MakeOutputs) -> list[OutputRecord]:
        m = self.model
        if m.is_initialized_:
            labels, min_sq = m.assign(Xc)
        else:  # only possible on a flush before init_threshold rows were ever seen
            labels = np.full(Xc.shape[0], -1, dtype=np.int64)
            min_sq = np.full(Xc.shape[0], np.nan, dtype=np.float64)
        return make_outputs(meta, keys, labels, min_sq, int(m.n_batches_))

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Model, drift monitor, counters and the queue (rows, metadata, keys)."""
        X, cols, keys = self._queued()
        meta = np.zeros((X.shape[0], LEGACY_META_WIDTH), dtype=np.float64)
        for j, col in enumerate(cols.values()):
            meta[:, j] = col
        return {
            "model": self.model.state_dict(),
            "drift": None if self.drift is None else self.drift.state_dict(),
            "n_drift": self.n_drift_,
            "n_drift_reseeds": self.n_drift_reseeds_,
            "n_clustered": self.n_clustered_,
            "pending_X": X,
            "pending_meta": meta,
            "pending_keys": [None if k is None else k.hex() for k in keys],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; rejects inconsistent queues before changing anything."""
        X = np.asarray(state["pending_X"], dtype=np.float32)
        meta = np.asarray(state["pending_meta"], dtype=np.float64).reshape(-1, LEGACY_META_WIDTH)
        keys = [None if k is None else bytes.fromhex(k) for k in state["pending_keys"]]
        if not (X.shape[0] == meta.shape[0] == len(keys)):
            raise ValueError(
                f"pending queue lengths disagree: X {X.shape[0]}, meta {meta.shape[0]}, keys {len(keys)}"
            )
        self.model.load_state_dict(state["model"])
        if self.drift is not None and state.get("drift") is not None:
            self.drift.load_state_dict(state["drift"])
        self.n_drift_ = int(state["n_drift"])
        self.n_drift_reseeds_ = int(state["n_drift_reseeds"])
        self.n_clustered_ = int(state["n_clustered"])
        self._segs = deque()
        self._n_pending = 0
        self._d = None
        if X.shape[0]:
            self._segs.append((np.ascontiguousarray(X), {name: meta[:, j].astype(dt) for j, (name, dt)
                                                          in enumerate(self.meta_columns.items())}, keys))
            self._n_pending = int(X.shape[0])
            self._d = int(X.shape[1])


class ChunkedPipeline:
    """What both pipelines share: a :class:`ChunkedModel` (``self.core``) fed in fixed-size
    chunks, and output records built by the subclass's ``_make_outputs``."""

    core: ChunkedModel
    emit_outputs: bool

    @property
    def model(self) -> StreamingKMeans:
        """The pipeline's streaming k-means."""
        return self.core.model

    @property
    def n_pending(self) -> int:
        """Rows queued for the next update."""
        return self.core.n_pending

    def flush(self) -> BatchResult:
        """Absorb the queued partial chunk (call when caught up, then checkpoint).

        Open event windows of the sequence pipeline stay open: they close on event time.
        """
        res = BatchResult()
        self._absorb(res, flush=True)
        return res

    def flush_partition(self, topic: str, partition: int) -> BatchResult:
        """Cut one partition's remaining rows, with their outputs (a core with per-partition
        queues, :class:`streamkm.group.GroupChunker`; TypeError for a local model)."""
        cut = getattr(self.core, "cut_partial", None)
        if cut is None:
            raise TypeError(f"{type(self.core).__name__} has one queue for all partitions")
        res = BatchResult()
        cut(topic, partition, res, self._make_outputs if self.emit_outputs else None)
        return res

    def _absorb(self, res: BatchResult, *, flush: bool = False) -> None:
        self.core.absorb(res, self._make_outputs if self.emit_outputs else None, flush=flush)

    def _make_outputs(self, meta: Mapping[str, NDArray[Any]], keys: Sequence[bytes | None],
                      labels: NDArray[np.int64], min_sq: NDArray[np.float64], version: int) -> list[OutputRecord]:
        raise NotImplementedError

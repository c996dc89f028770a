"""The synchronous, deterministic core of the daemon: records in, model updates out.

The worker (:mod:`streamkm.service.worker`) owns Kafka and asyncio; this module owns
everything between a list of consumed records and the model: decoding
(:mod:`streamkm.codec`), the sequence windows and LSTM embedding
(:mod:`streamkm.sequence`), :class:`~streamkm.cluster.StreamingKMeans`, drift
detection (:mod:`streamkm.pipeline.drift`), and building the dead-letter and output
records. Nothing here does I/O, so it is unit-testable and its results depend
only on the records fed to it, in order.

Exactly-once effect needs model updates that do not depend on how Kafka
happened to split the stream into fetches (a restart resumes mid-stream, so
fetch boundaries differ between runs). Therefore valid rows (vectors or window
embeddings) are queued and the model is updated with **fixed-size chunks of
``batch_rows`` rows, in offset order**; a partial chunk is absorbed only by an
explicit :meth:`flush` (the worker flushes when it is caught up and then
checkpoints at once, so such a boundary is always recorded). Queued rows are
part of :meth:`state_dict`, so a checkpoint cut between two chunks loses
nothing.

Both pipelines return a :class:`BatchResult` per call: dead letters (record +
:class:`~streamkm.codec.DecodeError`), output records for the assignments
topic (one per input record, or one per window, once its rows were
absorbed) and counters/events for metrics and logs.
"""

from __future__ import annotations

import json
import math
import operator
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from streamkm.codec import DecodeError, decode_events, decode_vectors

__all__ = [
    "RecordLike",
    "DeadLetter",
    "OutputRecord",
    "BatchResult",
    "VectorPipeline",
    "SequencePipeline",
    "build_pipelines",
    "STATE_VERSION",
]

#: Version of the pipeline state layout inside a checkpoint.
STATE_VERSION = 1

#: Default cap on window embeddings per model update (windows arrive slower than vectors).
SEQUENCE_BATCH_ROWS = 256

_PARTITION = operator.attrgetter("partition")
_OFFSET = operator.attrgetter("offset")
_KEY = operator.attrgetter("key")


class RecordLike(Protocol):
    """What the pipelines read from a consumed record (aiokafka ``ConsumerRecord``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    timestamp: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that failed decoding/validation, with the reason."""

    record: Any
    error: DecodeError


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """One record for the assignments topic (key = input key, value = JSON)."""

    key: bytes | None
    value: bytes


@dataclass(slots=True)
class BatchResult:
    """What one :meth:`process` / :meth:`flush` call did.

    Attributes
    ----------
    n_records : int
        Records given to the call.
    n_valid_records : int
        Records that decoded into at least one row/event.
    n_rows : int
        Valid rows (vectors or events) queued by the call.
    n_clustered : int
        Rows (vectors or window embeddings) absorbed by ``partial_fit``.
    n_windows : int
        Windows emitted by the windower (sequence pipeline).
    n_updates : int
        ``partial_fit`` calls made.
    dead_letters : list of DeadLetter
    outputs : list of OutputRecord
    events : list of dict
        Structured facts for INFO logs: ``{"event": "drift" | "reseed" |
        "initialized", ...}``.
    objectives : list of float
        ``last_batch_objective_`` after each update (NaN when not available).
    embed_seconds : float
        Time spent in ``LSTMEncoder.embed``.
    """

    n_records: int = 0
    n_valid_records: int = 0
    n_rows: int = 0
    n_clustered: int = 0
    n_windows: int = 0
    n_updates: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    outputs: list[OutputRecord] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    objectives: list[float] = field(default_factory=list)
    embed_seconds: float = 0.0

    def merge(self, other: "BatchResult") -> "BatchResult":
        for name in ("n_records", "n_valid_records", "n_rows", "n_clustered", "n_windows",
                     "n_updates", "embed_seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.dead_letters.extend(other.dead_letters)
        self.outputs.extend(other.outputs)
        self.events.extend(other.events)
        self.objectives.extend(other.objectives)
        return self


def _key_to_json(key: bytes | None) -> str | None:
    return None if key is None else key.hex()


def _key_from_json(s: str | None) -> bytes | None:
    return None if s is None else bytes.fromhex(s)


def _finite_or_none(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


class _ChunkedModel:
    """StreamingKMeans + drift monitor fed with fixed-size chunks of queued rows.

    Queue entries carry, per row, what its output record needs: three float64
    columns (exact below 2**53) -- partition, offset, row within the record
    for vectors; window length, window end timestamp, 0 for sequences -- and
    the key (bytes or None).
    """

    def __init__(self, *, model_kwargs: dict, batch_rows: int, drift_kwargs: dict | None,
                 reseed_on_drift: bool, model_factory=None):
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        if model_factory is None:
            from streamkm.cluster.streaming_kmeans import StreamingKMeans as model_factory
        self.model_kwargs = dict(model_kwargs)
        self.batch_rows = int(batch_rows)
        self.drift_kwargs = None if drift_kwargs is None else dict(drift_kwargs)
        self.reseed_on_drift = bool(reseed_on_drift)
        self.model = model_factory(**self.model_kwargs)
        if self.drift_kwargs is not None:
            from streamkm.pipeline.drift import DriftMonitor

            self.drift = DriftMonitor(**self.drift_kwargs)
        else:
            self.drift = None
        self.n_drift_ = 0
        self.n_drift_reseeds_ = 0
        self.n_clustered_ = 0
        self._X: np.ndarray | None = None  # (q, d) float32 queue
        self._meta = np.empty((0, 3), dtype=np.float64)  # part, offset, aux (exact for < 2**53)
        self._keys: list[bytes | None] = []

    # ---------------------------------------------------------------- queue
    @property
    def n_pending(self) -> int:
        return 0 if self._X is None else int(self._X.shape[0])

    def enqueue(self, X: np.ndarray, meta: np.ndarray, keys: list[bytes | None]) -> None:
        if X.shape[0] == 0:
            return
        if self._X is None or self._X.shape[0] == 0:
            self._X = np.ascontiguousarray(X, dtype=np.float32)
        else:
            if X.shape[1] != self._X.shape[1]:
                raise ValueError(f"expected {self._X.shape[1]} features, got {X.shape[1]}")
            self._X = np.concatenate([self._X, X.astype(np.float32, copy=False)])
        self._meta = np.concatenate([self._meta, meta])
        self._keys.extend(keys)

    def _threshold(self) -> int:
        # Until the model is initialized, feed at least init_size rows at once so
        # that the first update initializes it (and every row gets a cluster).
        if not getattr(self.model, "is_initialized_", True):
            init = getattr(self.model, "_init_threshold", None)
            if init is None:
                init = 3 * int(self.model_kwargs.get("n_clusters", 8))
            return max(self.batch_rows, int(init))
        return self.batch_rows

    def absorb(self, result: BatchResult, make_output, *, flush: bool = False) -> None:
        """Run ``partial_fit`` on every full chunk (and the remainder if *flush*)."""
        while self.n_pending:
            thr = self._threshold()
            if self.n_pending < thr and not flush:
                return
            n = min(thr, self.n_pending)
            Xc = self._X[:n]
            meta, keys = self._meta[:n], self._keys[:n]
            self._update(Xc, result)
            if make_output is not None:
                result.outputs.extend(self._outputs(Xc, meta, keys, make_output))
            result.n_clustered += n
            self.n_clustered_ += n
            self._X = self._X[n:]
            self._meta = self._meta[n:]
            self._keys = self._keys[n:]

    def _update(self, Xc: np.ndarray, result: BatchResult) -> None:
        m = self.model
        was_init = bool(getattr(m, "is_initialized_", True))
        reseeds_before = int(getattr(m, "n_reseeds_", 0))
        m.partial_fit(Xc)
        result.n_updates += 1
        if not was_init and getattr(m, "is_initialized_", True):
            result.events.append({"event": "initialized", "n_seen": int(m.n_seen_)})
        obj = _finite_or_none(getattr(m, "last_batch_objective_", None))
        result.objectives.append(float("nan") if obj is None else obj)
        n_reseeds = int(getattr(m, "n_reseeds_", 0))
        if n_reseeds > reseeds_before:
            result.events.append({"event": "reseed", "trigger": "interval", "accepted": True,
                                  "n_reseeds": n_reseeds})
        if self.drift is not None and obj is not None and getattr(m, "is_initialized_", True):
            if self.drift.update(obj):
                self.n_drift_ += 1
                ev = {"event": "drift", "objective": obj, "n_batches": int(m.n_batches_),
                      "n_drift": self.n_drift_}
                if self.reseed_on_drift:
                    accepted = bool(m.reseed())
                    self.n_drift_reseeds_ += int(accepted)
                    ev["reseed_accepted"] = accepted
                result.events.append(ev)

    def _outputs(self, Xc, meta, keys, make_output) -> list[OutputRecord]:
        m = self.model
        if getattr(m, "is_initialized_", True):
            from streamkm.cluster._distance import _assign

            labels, min_sq = _assign(Xc, m.cluster_centers_)
        else:  # only possible on a flush before init_size rows were ever seen
            labels = np.full(Xc.shape[0], -1, dtype=np.int64)
            min_sq = np.full(Xc.shape[0], np.nan, dtype=np.float64)
        version = int(m.n_batches_)
        return make_output(meta, keys, labels, min_sq, version)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        d = 0 if self._X is None else self._X.shape[1]
        return {
            "model": self.model.state_dict(),
            "drift": None if self.drift is None else self.drift.state_dict(),
            "n_drift": self.n_drift_,
            "n_drift_reseeds": self.n_drift_reseeds_,
            "n_clustered": self.n_clustered_,
            "pending_X": (self._X if self._X is not None else np.empty((0, d), np.float32)).copy(),
            "pending_meta": self._meta.copy(),
            "pending_keys": [_key_to_json(k) for k in self._keys],
        }

    def load_state_dict(self, state: dict) -> None:
        X = np.asarray(state["pending_X"], dtype=np.float32)
        meta = np.asarray(state["pending_meta"], dtype=np.float64).reshape(-1, 3)
        keys = [_key_from_json(k) for k in state["pending_keys"]]
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
        self._X = np.ascontiguousarray(X) if X.shape[0] else None
        self._meta = meta
        self._keys = keys


def _drop_overflowing(batch) -> None:
    """Move records with a value above the model's limit into ``batch.errors``.

    Works on a ``VectorBatch`` and on an ``EventBatch`` (whose keys and timestamps are
    filtered alongside); modifies *batch* in place.

    Such values are finite (they pass decoding) but their squared distances overflow
    float32: ``StreamingKMeans`` rejects them (``MAX_ABS_VALUE``), which would make the
    record a poison pill for the consume loop. A record is rejected whole, like a
    decode error.
    """
    from streamkm.cluster._validation import MAX_ABS_VALUE

    X = batch.X
    if max(-float(X.min()), float(X.max())) <= MAX_ABS_VALUE:
        return
    absmax = np.abs(X).max(axis=1)
    ri = batch.record_index
    new: dict[int, DecodeError] = {}
    for row in np.flatnonzero(absmax > MAX_ABS_VALUE).tolist():  # bad rows only
        rec = int(ri[row])
        if rec not in new:
            in_rec = row - int(np.searchsorted(ri, rec))
            new[rec] = DecodeError(
                reason="non_finite", exc_type="ValueError",
                message=f"row {in_rec} has a value of magnitude {float(absmax[row]):.3g} > "
                        f"{MAX_ABS_VALUE:.0e} (too large for float32 distances)")
    keep = ~np.isin(ri, np.fromiter(new, dtype=np.int64, count=len(new)))
    batch.X = X[keep]
    batch.record_index = ri[keep]
    if hasattr(batch, "keys"):  # EventBatch: its per-row keys and timestamps go too
        batch.keys = [k for k, ok in zip(batch.keys, keep.tolist()) if ok]
        batch.ts = batch.ts[keep]
    batch.errors = sorted([*batch.errors, *new.items()], key=lambda t: t[0])


def _json_bytes(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


class _Pipeline:
    """What both pipelines share: a :class:`_ChunkedModel` (``self.core``) fed in
    fixed-size chunks, and outputs built by the subclass's ``_make_outputs``."""

    core: _ChunkedModel
    emit_outputs: bool

    @property
    def model(self):
        return self.core.model

    @property
    def n_pending(self) -> int:
        return self.core.n_pending

    def _absorb(self, res: BatchResult, *, flush: bool = False) -> None:
        self.core.absorb(res, self._make_outputs if self.emit_outputs else None, flush=flush)

    def flush(self) -> BatchResult:
        """Absorb the queued partial chunk (call when caught up, then checkpoint).

        Open event windows of the sequence pipeline stay open: they close on event time.
        """
        res = BatchResult()
        self._absorb(res, flush=True)
        return res

    def _make_outputs(self, meta, keys, labels, min_sq, version) -> list[OutputRecord]:
        raise NotImplementedError


class VectorPipeline(_Pipeline):
    """Vectors topic: decode -> validate -> queue -> ``StreamingKMeans.partial_fit``.

    Parameters
    ----------
    model_kwargs : dict
        ``StreamingKMeans`` keyword arguments (``ModelSettings.estimator_kwargs()``).
    fmt : {"json", "binary", "auto"}
    dim : int or None
        Expected dimension; None: fixed by the first valid record ever seen
        (then kept in the state).
    max_record_bytes : int
    batch_rows : int
        Rows per ``partial_fit`` (model mini-batch; independent of fetches).
    drift_kwargs : dict or None
        ``DriftMonitor`` arguments; None disables drift detection.
    reseed_on_drift : bool
    emit_outputs : bool
        Build assignment output records.
    model_factory : callable, optional
        Estimator class (default ``StreamingKMeans``), for tests.

    Notes
    -----
    Output value (JSON) for a single-row record: ``{"cluster", "sq_distance",
    "model_version", "topic", "partition", "offset"}``; for a record with
    several rows, one output per record *segment* absorbed together, with
    ``"row"`` (first row index), ``"clusters"`` and ``"sq_distances"`` lists.
    ``cluster`` is -1 (``sq_distance`` null) only if a flush happened before
    the model had enough rows to initialize.

    A record with a value above ``streamkm.cluster._validation.MAX_ABS_VALUE``
    (finite, but its squared distances overflow float32; the model rejects it)
    is dead-lettered as ``non_finite``, like a decode error.

    Examples
    --------
    >>> import collections, numpy as np
    >>> from streamkm.codec import encode_json
    >>> Rec = collections.namedtuple("Rec", "topic partition offset key value headers timestamp")
    >>> X = np.random.default_rng(0).normal(size=(40, 2))
    >>> recs = [Rec("t", 0, i, None, encode_json(x), (), 0) for i, x in enumerate(X)]
    >>> recs.append(Rec("t", 0, 40, None, b"oops", (), 0))
    >>> p = VectorPipeline(model_kwargs={"n_clusters": 2, "seed": 0}, batch_rows=16)
    >>> r = p.process(recs)
    >>> r.n_valid_records, r.n_clustered, p.n_pending, [d.error.reason for d in r.dead_letters]
    (40, 32, 8, ['not_json'])
    >>> p.flush().n_clustered, float(p.model.counts_.sum())
    (8, 40.0)
    """

    name = "vectors"

    def __init__(self, *, model_kwargs: dict, fmt: str = "auto", dim: int | None = None,
                 max_record_bytes: int = 8 * 2**20, batch_rows: int = 1024,
                 drift_kwargs: dict | None = None, reseed_on_drift: bool = True,
                 emit_outputs: bool = True, model_factory=None):
        if fmt not in ("json", "binary", "auto"):
            raise ValueError(f"fmt must be 'json', 'binary' or 'auto', got {fmt!r}")
        if dim is not None and dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.fmt = fmt
        self.dim = dim
        self.max_record_bytes = int(max_record_bytes)
        self.emit_outputs = bool(emit_outputs)
        self.core = _ChunkedModel(model_kwargs=model_kwargs, batch_rows=batch_rows,
                                  drift_kwargs=drift_kwargs, reseed_on_drift=reseed_on_drift,
                                  model_factory=model_factory)
        self.dim_: int | None = dim

    def process(self, records: Sequence[RecordLike]) -> BatchResult:
        """Decode *records* (one topic-partition order), queue valid rows, absorb full chunks."""
        res = BatchResult(n_records=len(records))
        if not records:
            return res
        self._topic = records[0].topic
        batch = decode_vectors([r.value for r in records], fmt=self.fmt, dim=self.dim_,
                               max_record_bytes=self.max_record_bytes)
        if batch.X.shape[0]:
            _drop_overflowing(batch)
        res.dead_letters = [DeadLetter(records[i], err) for i, err in batch.errors]
        if batch.X.shape[0]:
            if self.dim_ is None:
                self.dim_ = int(batch.X.shape[1])
            ri = batch.record_index
            starts = np.r_[True, ri[1:] != ri[:-1]]
            first = np.flatnonzero(starts)
            counts = np.diff(np.r_[first, ri.size])
            # the records that produced rows (all of them, usually: no per-record indexing)
            valid = records if first.size == len(records) else [records[i] for i in ri[first].tolist()]
            meta = np.empty((ri.size, 3), dtype=np.float64)
            if first.size == ri.size:  # one row per record
                meta[:, 0] = np.fromiter(map(_PARTITION, valid), dtype=np.int64, count=ri.size)
                meta[:, 1] = np.fromiter(map(_OFFSET, valid), dtype=np.int64, count=ri.size)
                meta[:, 2] = 0.0
            else:
                part = np.fromiter(map(_PARTITION, valid), dtype=np.int64, count=first.size)
                offs = np.fromiter(map(_OFFSET, valid), dtype=np.int64, count=first.size)
                meta[:, 0] = np.repeat(part, counts)
                meta[:, 1] = np.repeat(offs, counts)
                meta[:, 2] = np.arange(ri.size) - np.repeat(first, counts)
            if self.emit_outputs:
                keys = list(map(_KEY, valid))
                if first.size != ri.size:
                    keys = [k for k, c in zip(keys, counts.tolist()) for _ in range(c)]
            else:
                keys = [None] * ri.size
            self.core.enqueue(batch.X, meta, keys)
            res.n_valid_records = int(first.size)
            res.n_rows = int(ri.size)
        self._absorb(res)
        return res

    def _make_outputs(self, meta, keys, labels, min_sq, version) -> list[OutputRecord]:
        topic = getattr(self, "_topic", None)
        out: list[OutputRecord] = []
        n = meta.shape[0]
        # segments = consecutive rows of the same (partition, offset)
        po = meta[:, :2]
        starts = np.flatnonzero(np.r_[True, np.any(po[1:] != po[:-1], axis=1)])
        ends = np.r_[starts[1:], n]
        lab = labels.tolist()
        dist = [(_finite_or_none(v)) for v in np.asarray(min_sq, dtype=np.float64).tolist()]
        for s, e in zip(starts.tolist(), ends.tolist()):
            base = {"model_version": version, "topic": topic, "partition": int(meta[s, 0]),
                    "offset": int(meta[s, 1])}
            if e - s == 1 and meta[s, 2] == 0:
                base.update(cluster=int(lab[s]), sq_distance=dist[s])
            else:
                base.update(row=int(meta[s, 2]), clusters=[int(v) for v in lab[s:e]],
                            sq_distances=dist[s:e])
            out.append(OutputRecord(keys[s], _json_bytes(base)))
        return out

    def state_dict(self) -> dict:
        return {"kind": self.name, "version": STATE_VERSION, "dim": self.dim_,
                "topic": getattr(self, "_topic", None), **self.core.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != self.name:
            raise ValueError(f"expected a {self.name!r} pipeline state, got {state.get('kind')!r}")
        if int(state.get("version", -1)) != STATE_VERSION:
            raise ValueError(f"unsupported pipeline state version {state.get('version')!r}")
        dim = state.get("dim")
        if self.dim is not None and dim is not None and int(dim) != self.dim:
            raise ValueError(f"checkpoint has dimension {dim}, config says {self.dim}")
        self.core.load_state_dict(state)
        self.dim_ = None if dim is None else int(dim)
        if state.get("topic") is not None:
            self._topic = state["topic"]


class SequencePipeline(_Pipeline):
    """Events topic: decode -> per-key windows -> ``LSTMEncoder.embed`` -> its own k-means.

    Parameters
    ----------
    encoder : LSTMEncoder
        Frozen encoder; its ``content_hash`` is stored in the state and must
        match on restore.
    windower_kwargs : dict
        ``EventWindower`` arguments (``SequenceSettings.windower_kwargs()``).
    model_kwargs, batch_rows, drift_kwargs, reseed_on_drift, emit_outputs, model_factory
        As for :class:`VectorPipeline` (rows are window embeddings).
    n_features : int or None
        Event dimension; default ``encoder.input_size``.
    pooling : {"last", "mean"}
    normalize : bool
    max_record_bytes : int

    Notes
    -----
    Output: one record per window once its embedding was clustered, keyed by
    the window's key: ``{"cluster", "sq_distance", "model_version",
    "window_end_ts", "length"}``.
    """

    name = "sequence"

    def __init__(self, *, encoder, windower_kwargs: dict, model_kwargs: dict,
                 n_features: int | None = None, pooling: str = "last", normalize: bool = True,
                 max_record_bytes: int = 8 * 2**20, batch_rows: int = 256,
                 drift_kwargs: dict | None = None, reseed_on_drift: bool = True,
                 emit_outputs: bool = True, model_factory=None):
        from streamkm.sequence.windows import EventWindower

        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be 'last' or 'mean', got {pooling!r}")
        n_features = encoder.input_size if n_features is None else int(n_features)
        if n_features != encoder.input_size:
            raise ValueError(
                f"events have {n_features} features but the LSTM expects {encoder.input_size}"
            )
        self.encoder = encoder
        self.n_features = n_features
        self.pooling = pooling
        self.normalize = bool(normalize)
        self.max_record_bytes = int(max_record_bytes)
        self.emit_outputs = bool(emit_outputs)
        self.windower_kwargs = dict(windower_kwargs)
        self.windower = EventWindower(n_features, **self.windower_kwargs)
        self.core = _ChunkedModel(model_kwargs=model_kwargs, batch_rows=batch_rows,
                                  drift_kwargs=drift_kwargs, reseed_on_drift=reseed_on_drift,
                                  model_factory=model_factory)
        self.n_events_ = 0

    def process(self, records: Sequence[RecordLike]) -> BatchResult:
        """Decode events, window them, embed ready windows, absorb full chunks."""
        res = BatchResult(n_records=len(records))
        if not records:
            return res
        batch = decode_events([r.value for r in records], fmt="json", dim=self.n_features,
                              max_record_bytes=self.max_record_bytes)
        if len(batch.keys):
            _drop_overflowing(batch)
        res.dead_letters = [DeadLetter(records[i], err) for i, err in batch.errors]
        n = len(batch.keys)
        if n:
            ri = batch.record_index
            res.n_valid_records = int(1 + np.count_nonzero(ri[1:] != ri[:-1]))
            res.n_rows = n
            self.n_events_ += n
            wb = self.windower.add(batch.keys, batch.ts, batch.X)
            if wb is not None and len(wb.keys):
                self._enqueue_windows(wb, res)
        self._absorb(res)
        return res

    def _enqueue_windows(self, wb, res: BatchResult) -> None:
        t0 = time.perf_counter()
        E = self.encoder.embed(wb.X, wb.lengths, pooling=self.pooling, normalize=self.normalize)
        res.embed_seconds += time.perf_counter() - t0
        res.n_windows += len(wb.keys)
        meta = np.stack([np.asarray(wb.lengths, dtype=np.float64),
                         np.asarray(wb.end_ts, dtype=np.float64),
                         np.zeros(len(wb.keys))], axis=1)
        keys = [str(k).encode() for k in wb.keys]
        self.core.enqueue(np.asarray(E, dtype=np.float32), meta, keys)

    def _make_outputs(self, meta, keys, labels, min_sq, version) -> list[OutputRecord]:
        lab = labels.tolist()
        dist = np.asarray(min_sq, dtype=np.float64).tolist()
        return [
            OutputRecord(keys[i], _json_bytes({
                "cluster": int(lab[i]), "sq_distance": _finite_or_none(dist[i]),
                "model_version": version, "window_end_ts": float(meta[i, 1]),
                "length": int(meta[i, 0]),
            }))
            for i in range(meta.shape[0])
        ]

    def state_dict(self) -> dict:
        return {"kind": self.name, "version": STATE_VERSION,
                "lstm_hash": self.encoder.content_hash, "n_events": self.n_events_,
                "windows": self.windower.state_dict(), **self.core.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != self.name:
            raise ValueError(f"expected a {self.name!r} pipeline state, got {state.get('kind')!r}")
        if int(state.get("version", -1)) != STATE_VERSION:
            raise ValueError(f"unsupported pipeline state version {state.get('version')!r}")
        if state["lstm_hash"] != self.encoder.content_hash:
            raise ValueError(
                f"checkpoint was made with LSTM weights {state['lstm_hash'][:12]}..., "
                f"the configured weights are {self.encoder.content_hash[:12]}..."
            )
        self.windower.load_state_dict(state["windows"])
        self.core.load_state_dict(state)
        self.n_events_ = int(state["n_events"])


def build_pipelines(settings, *, batch_rows: int | None = None) -> dict[str, tuple[str, Any]]:
    """``{name: (topic, pipeline)}`` for the pipelines enabled in *settings*.

    ``batch_rows`` (rows per model update) defaults to ``settings.kafka.max_records``.
    """
    rows = int(batch_rows if batch_rows is not None else settings.kafka.max_records)
    drift = settings.drift.monitor_kwargs() if settings.drift.enabled else None
    emit = settings.output.topic is not None
    out: dict[str, tuple[str, Any]] = {}
    topics = settings.pipelines
    if "vectors" in topics:
        out["vectors"] = (topics["vectors"], VectorPipeline(
            model_kwargs=settings.model.estimator_kwargs(), fmt=settings.input.format,
            dim=settings.input.dimension, max_record_bytes=settings.input.max_record_bytes,
            batch_rows=rows, drift_kwargs=drift, reseed_on_drift=settings.drift.reseed_on_drift,
            emit_outputs=emit))
    if "sequence" in topics:
        from streamkm.sequence.lstm import LSTMEncoder

        seq = settings.sequence
        encoder = LSTMEncoder.load(seq.lstm_path)
        out["sequence"] = (topics["sequence"], SequencePipeline(
            encoder=encoder, windower_kwargs=seq.windower_kwargs(),
            model_kwargs=seq.model.estimator_kwargs(), n_features=seq.n_features,
            pooling=seq.pooling, normalize=seq.normalize,
            max_record_bytes=settings.input.max_record_bytes,
            batch_rows=min(rows, SEQUENCE_BATCH_ROWS) if batch_rows is None else rows,
            drift_kwargs=drift, reseed_on_drift=settings.drift.reseed_on_drift,
            emit_outputs=emit))
    return out

"""The vectors pipeline: decode feature vectors, queue them, update the model in fixed chunks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from streamkm.codec import decode_vectors
from streamkm.pipeline.base import (
    STATE_VERSION,
    BatchResult,
    DeadLetter,
    OutputRecord,
    RecordLike,
    model_stats,
)
from streamkm.pipeline.chunking import ChunkedModel, ChunkedPipeline
from streamkm.pipeline.guards import drop_overflowing
from streamkm.pipeline.output import check_output_format, vector_outputs

if TYPE_CHECKING:
    from streamkm.ops.metrics import Metrics

__all__ = ["VectorPipeline"]

#: Per queued row: source partition, source offset, row index within the record.
_META = {"partition": np.int64, "offset": np.int64, "row": np.int64}


class VectorPipeline(ChunkedPipeline):
    """Vectors topic: decode -> validate -> queue -> ``StreamingKMeans.partial_fit``.

    Parameters
    ----------
    model_kwargs : dict
        ``StreamingKMeans`` keyword arguments (``ModelSettings.estimator_kwargs()``).
    topic : str
        Input topic (for the service's routing; outputs name the records' own topic).
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
    output_format : {"json", "binary"}
        Their format (``output.format``; :mod:`streamkm.pipeline.output`).
    core : streamkm.group.chunker.GroupChunker, optional
        Queue rows into this instead of a local :class:`ChunkedModel` (the group
        model: chunks become statistics for the reducer).

    Notes
    -----
    Output value (JSON) for a single-row record: ``{"cluster", "sq_distance",
    "model_version", "topic", "partition", "offset"}``; for a record with
    several rows, one output per record *segment* absorbed together, with
    ``"row"`` (first row index), ``"clusters"`` and ``"sq_distances"`` lists.
    ``cluster`` is -1 (``sq_distance`` null) only if a flush happened before
    the model had enough rows to initialize (on the group model: before the
    first version). With ``output_format="binary"`` the same fields travel as
    float64 rows (:func:`streamkm.pipeline.output.vector_outputs`). Schema:
    ``streamkm/schemas/output.schema.json``; docs/formats.md, "Output records".

    A record with a value above :data:`streamkm.cluster.MAX_ABS_VALUE` (finite, but
    its squared distances overflow float32; the model rejects it) is dead-lettered
    as ``non_finite``, like a decode error.

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
    always_offload: ClassVar[bool] = False

    def __init__(self, *, model_kwargs: dict[str, Any], topic: str = "", fmt: str = "auto",
                 dim: int | None = None, max_record_bytes: int = 8 * 2**20, batch_rows: int = 1024,
                 drift_kwargs: dict[str, Any] | None = None, reseed_on_drift: bool = True,
                 emit_outputs: bool = True, output_format: str = "json", core: Any = None):
        if fmt not in ("json", "binary", "auto"):
            raise ValueError(f"fmt must be 'json', 'binary' or 'auto', got {fmt!r}")
        if dim is not None and dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.topic = topic
        self.fmt = fmt
        self.dim = dim
        self.max_record_bytes = int(max_record_bytes)
        self.emit_outputs = bool(emit_outputs)
        self.output_format = check_output_format(output_format)
        # A replacement core (the group model's chunker) queues and cuts the same rows but
        # summarises chunks for the reducer instead of updating a local model.
        self.core = core if core is not None else ChunkedModel(
            model_kwargs=model_kwargs, batch_rows=batch_rows, drift_kwargs=drift_kwargs,
            reseed_on_drift=reseed_on_drift, meta_columns=_META)
        self.dim_: int | None = dim
        self._topic: str | None = None  # topic of the records seen (named in the outputs)

    def process(self, records: Sequence[RecordLike]) -> BatchResult:
        """Decode *records* (one topic-partition order), queue valid rows, absorb full chunks."""
        res = BatchResult(n_records=len(records))
        if not records:
            return res
        self._topic = records[0].topic
        # list comprehensions, not map(attrgetter): CPython specializes their attribute loads
        batch = decode_vectors([r.value for r in records], fmt=self.fmt, dim=self.dim_,
                               max_record_bytes=self.max_record_bytes)
        if batch.X.shape[0]:
            drop_overflowing(batch)
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
            parts = {r.partition for r in valid}
            if len(parts) == 1:  # one partition (the worker's batches): no per-record array
                part = np.full(first.size, parts.pop(), dtype=np.int64)
            else:
                part = np.fromiter((r.partition for r in valid), dtype=np.int64, count=first.size)
            offs = np.fromiter((r.offset for r in valid), dtype=np.int64, count=first.size)
            if first.size == ri.size:  # one row per record
                meta = {"partition": part, "offset": offs, "row": np.zeros(ri.size, dtype=np.int64)}
            else:
                meta = {"partition": np.repeat(part, counts), "offset": np.repeat(offs, counts),
                        "row": np.arange(ri.size) - np.repeat(first, counts)}
            if self.emit_outputs:
                keys = [r.key for r in valid]
                if first.size != ri.size:
                    keys = [k for k, c in zip(keys, counts.tolist(), strict=True) for _ in range(c)]
            else:
                keys = [None] * ri.size
            self.core.enqueue(batch.X, meta, keys)
            res.n_valid_records = int(first.size)
            res.n_rows = int(ri.size)
        self._absorb(res)
        return res

    def _make_outputs(self, meta: Mapping[str, NDArray[Any]], keys: Sequence[bytes | None],
                      labels: NDArray[np.int64], min_sq: NDArray[np.float64], version: int) -> list[OutputRecord]:
        return vector_outputs(self.output_format, self._topic, meta, keys, labels, min_sq, version)

    # ---------------------------------------------------------------- metrics
    def init_metrics(self, metrics: Metrics) -> None:
        """Create this pipeline's labelled series."""
        metrics.init_pipeline(self.name, self.topic)

    def observe(self, metrics: Metrics, *, baseline: bool = False) -> None:
        """Publish the model's statistics."""
        metrics.observe_model(self.name, model_stats(self.model), baseline=baseline)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Pipeline state for the checkpoint (model, drift, queue, dimension, topic)."""
        return {"kind": self.name, "version": STATE_VERSION, "dim": self.dim_,
                "topic": self._topic, **self.core.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; rejects another pipeline's state or another dimension."""
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

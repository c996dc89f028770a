"""The sequence pipeline: events per key -> windows -> LSTM embeddings -> their own k-means."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from streamkm.codec import decode_events
from streamkm.ops.stats import WindowStats
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
from streamkm.pipeline.output import check_output_format, window_outputs
from streamkm.sequence import EventWindower, LSTMEncoder, WindowBatch

if TYPE_CHECKING:
    from streamkm.ops.metrics import Metrics

__all__ = ["SequencePipeline", "SEQUENCE_BATCH_ROWS"]

#: Default cap on window embeddings per model update (windows arrive slower than vectors).
SEQUENCE_BATCH_ROWS = 256

#: Per queued window embedding: the window's length (events) and end timestamp.
_META = {"length": np.int64, "window_end_ts": np.float64}


class SequencePipeline(ChunkedPipeline):
    """Events topic: decode -> per-key windows -> ``LSTMEncoder.embed`` -> its own k-means.

    Parameters
    ----------
    encoder : LSTMEncoder
        Frozen encoder; its ``content_hash`` is stored in the state and must
        match on restore.
    windower_kwargs : dict
        ``EventWindower`` arguments (``SequenceSettings.windower_kwargs()``).
    model_kwargs, topic, batch_rows, drift_kwargs, reseed_on_drift, emit_outputs, output_format
        As for :class:`~streamkm.pipeline.vectors.VectorPipeline` (rows are window
        embeddings).
    n_features : int or None
        Event dimension; default ``encoder.input_size``.
    pooling : {"last", "mean"}, default="last"
        As ``LSTMEncoder.embed``; the daemon passes ``sequence.pooling`` (default "mean").
    normalize : bool
    max_record_bytes : int

    Notes
    -----
    Output: one record per window once its embedding was clustered, keyed by
    the window's key: ``{"cluster", "sq_distance", "model_version",
    "window_end_ts", "length"}`` (binary: one float64 row,
    :func:`streamkm.pipeline.output.window_outputs`).
    """

    name = "sequence"
    # A few events can close many windows at once (a watermark jump closes every open
    # session), and LSTM embedding must not stall the event loop's heartbeats.
    always_offload: ClassVar[bool] = True

    def __init__(self, *, encoder: LSTMEncoder, windower_kwargs: dict[str, Any], model_kwargs: dict[str, Any],
                 topic: str = "", n_features: int | None = None, pooling: str = "last", normalize: bool = True,
                 max_record_bytes: int = 8 * 2**20, batch_rows: int = SEQUENCE_BATCH_ROWS,
                 drift_kwargs: dict[str, Any] | None = None, reseed_on_drift: bool = True,
                 emit_outputs: bool = True, output_format: str = "json"):
        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be 'last' or 'mean', got {pooling!r}")
        n_features = encoder.input_size if n_features is None else int(n_features)
        if n_features != encoder.input_size:
            raise ValueError(
                f"events have {n_features} features but the LSTM expects {encoder.input_size}"
            )
        self.topic = topic
        self.encoder = encoder
        self.n_features = n_features
        self.pooling = pooling
        self.normalize = bool(normalize)
        self.max_record_bytes = int(max_record_bytes)
        self.emit_outputs = bool(emit_outputs)
        self.output_format = check_output_format(output_format)
        self.windower_kwargs = dict(windower_kwargs)
        self.windower = EventWindower(n_features, **self.windower_kwargs)
        self.core = ChunkedModel(model_kwargs=model_kwargs, batch_rows=batch_rows, drift_kwargs=drift_kwargs,
                                 reseed_on_drift=reseed_on_drift, meta_columns=_META)
        self.n_events_ = 0

    def process(self, records: Sequence[RecordLike]) -> BatchResult:
        """Decode events, window them, embed ready windows, absorb full chunks."""
        res = BatchResult(n_records=len(records))
        if not records:
            return res
        batch = decode_events([r.value for r in records], fmt="json", dim=self.n_features,
                              max_record_bytes=self.max_record_bytes)
        if len(batch.keys):
            drop_overflowing(batch)
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

    def _enqueue_windows(self, wb: WindowBatch, res: BatchResult) -> None:
        t0 = time.perf_counter()
        E = self.encoder.embed(wb.X, wb.lengths, pooling=self.pooling, normalize=self.normalize)
        res.embed_seconds += time.perf_counter() - t0
        res.n_windows += len(wb.keys)
        meta = {"length": np.asarray(wb.lengths, dtype=np.int64),
                "window_end_ts": np.asarray(wb.end_ts, dtype=np.float64)}
        keys: list[bytes | None] = [str(k).encode() for k in wb.keys]
        self.core.enqueue(np.asarray(E, dtype=np.float32), meta, keys)

    def _make_outputs(self, meta: Mapping[str, NDArray[Any]], keys: Sequence[bytes | None],
                      labels: NDArray[np.int64], min_sq: NDArray[np.float64], version: int) -> list[OutputRecord]:
        return window_outputs(self.output_format, meta, keys, labels, min_sq, version)

    # ---------------------------------------------------------------- metrics
    def init_metrics(self, metrics: Metrics) -> None:
        """Create this pipeline's labelled series, window series included."""
        metrics.init_pipeline(self.name, self.topic, windows=True)

    def observe(self, metrics: Metrics, *, baseline: bool = False) -> None:
        """Publish the model's and the windows' statistics."""
        metrics.observe_model(self.name, model_stats(self.model), baseline=baseline)
        w = self.windower
        metrics.observe_windows(self.name, WindowStats(
            n_open_keys=int(w.n_open_keys), n_open_events=int(w.n_open_events), n_emitted=int(w.n_emitted_),
            n_late_dropped=int(w.n_late_dropped_), n_evicted=dict(w.n_evicted_)), baseline=baseline)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Pipeline state: model, drift, queue, open windows and the LSTM's content hash."""
        return {"kind": self.name, "version": STATE_VERSION,
                "lstm_hash": self.encoder.content_hash, "n_events": self.n_events_,
                "windows": self.windower.state_dict(), **self.core.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; rejects a state made with other LSTM weights."""
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

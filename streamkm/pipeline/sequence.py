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
    core : streamkm.group.chunker.GroupChunker, optional
        The group model's chunker instead of a local model. Each source partition then
        has its own windows (they move with the partition: :meth:`resume_state`,
        :meth:`restore_partition`), and every window embedding carries the partition and
        the offset of the record that made it ready, so a chunk ends at a record boundary.

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
                 emit_outputs: bool = True, output_format: str = "json", core: Any = None):
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
        #: Group model: the windows of each source partition, and the next offset each has read.
        self.per_partition = core is not None
        self.windowers: dict[int, EventWindower] = {}
        self._read_to: dict[int, int] = {}
        self._counts = {"n_emitted": 0, "n_late_dropped": 0}
        self._evicted: dict[str, int] = {}
        if core is not None:
            self.core = core
            core.resume = self.resume_state
        else:
            self.core = ChunkedModel(model_kwargs=model_kwargs, batch_rows=batch_rows, drift_kwargs=drift_kwargs,
                                     reseed_on_drift=reseed_on_drift, meta_columns=_META)
        self.n_events_ = 0

    def process(self, records: Sequence[RecordLike]) -> BatchResult:
        """Decode events, window them, embed ready windows, absorb full chunks."""
        if self.per_partition:
            return self._process_partitions(records)
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

    def _enqueue_windows(self, wb: WindowBatch, res: BatchResult,
                         extra: Mapping[str, NDArray[Any]] | None = None) -> None:
        t0 = time.perf_counter()
        E = self.encoder.embed(wb.X, wb.lengths, pooling=self.pooling, normalize=self.normalize)
        res.embed_seconds += time.perf_counter() - t0
        res.n_windows += len(wb.keys)
        meta = {"length": np.asarray(wb.lengths, dtype=np.int64),
                "window_end_ts": np.asarray(wb.end_ts, dtype=np.float64), **(extra or {})}
        keys: list[bytes | None] = [str(k).encode() for k in wb.keys]
        self.core.enqueue(np.asarray(E, dtype=np.float32), meta, keys)

    # ---------------------------------------------------------------- group model: windows per partition
    def _process_partitions(self, records: Sequence[RecordLike]) -> BatchResult:
        """Each run of one partition's records goes through that partition's windows; every
        window is queued with the partition and the offset of the record that made it ready."""
        res = BatchResult(n_records=len(records))
        if not records:
            return res
        parts = np.fromiter((r.partition for r in records), dtype=np.int64, count=len(records))
        cuts = np.flatnonzero(np.r_[True, parts[1:] != parts[:-1], True]).tolist()
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            self._process_partition(int(parts[a]), records[a:b], res)
        self._absorb(res)
        return res

    def _process_partition(self, partition: int, records: Sequence[RecordLike], res: BatchResult) -> None:
        batch = decode_events([r.value for r in records], fmt="json", dim=self.n_features,
                              max_record_bytes=self.max_record_bytes)
        if len(batch.keys):
            drop_overflowing(batch)
        res.dead_letters.extend(DeadLetter(records[i], err) for i, err in batch.errors)
        n = len(batch.keys)
        if n:
            ri = batch.record_index
            res.n_valid_records += int(1 + np.count_nonzero(ri[1:] != ri[:-1]))
            res.n_rows += n
            self.n_events_ += n
            w = self._windower(partition)
            before = (w.n_emitted_, w.n_late_dropped_, dict(w.n_evicted_))
            wb = w.add(batch.keys, batch.ts, batch.X)
            # Counters of this member (monotonic: a windower moves away with its partition).
            self._counts["n_emitted"] += w.n_emitted_ - before[0]
            self._counts["n_late_dropped"] += w.n_late_dropped_ - before[1]
            for k, c in w.n_evicted_.items():
                self._evicted[k] = self._evicted.get(k, 0) + int(c) - int(before[2].get(k, 0))
            if wb is not None and len(wb.keys):
                assert wb.trigger is not None
                offs = np.fromiter((r.offset for r in records), dtype=np.int64, count=len(records))
                # An eviction at the batch's end is triggered by "event n": its last record.
                rec = ri[np.minimum(wb.trigger, n - 1)]
                self._enqueue_windows(wb, res, {"partition": np.full(len(wb.keys), partition, dtype=np.int64),
                                                "offset": offs[rec]})
        self._read_to[partition] = int(records[-1].offset) + 1

    def _windower(self, partition: int) -> EventWindower:
        w = self.windowers.get(partition)
        if w is None:
            w = self.windowers[partition] = EventWindower(self.n_features, **self.windower_kwargs)
        return w

    def resume_state(self, topic: str, partition: int) -> dict[str, Any]:
        """Where *partition*'s windows are: ``{"offset": next offset read, "windows": state}``
        (the chunker attaches it to every chunk it cuts, with the rows queued after the cut)."""
        w = self._windower(partition)
        return {"offset": self._read_to.get(partition, -1), "windows": w.state_dict()}

    def restore_partition(self, partition: int, windows: Mapping[str, Any] | None, *, read_to: int) -> None:
        """Start *partition* at offset *read_to* with the open windows of :meth:`resume_state`
        (None: none open). ValueError if the state is from other window settings (nothing
        changes then)."""
        w = EventWindower(self.n_features, **self.windower_kwargs)
        if windows is not None:
            w.load_state_dict(windows)
        self.windowers[partition] = w
        self._read_to[partition] = int(read_to)

    def forget_partition(self, partition: int) -> None:
        """Drop a revoked partition's windows (its next owner restores them from the model)."""
        self.windowers.pop(partition, None)
        self._read_to.pop(partition, None)

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
        if self.per_partition:  # gauges: the windows held now; counters: this member's
            ws = list(self.windowers.values())
            metrics.observe_windows(self.name, WindowStats(
                n_open_keys=sum(int(w.n_open_keys) for w in ws),
                n_open_events=sum(int(w.n_open_events) for w in ws), n_emitted=self._counts["n_emitted"],
                n_late_dropped=self._counts["n_late_dropped"], n_evicted=dict(self._evicted)), baseline=baseline)
            return
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

"""What every pipeline is and returns: the :class:`Pipeline` protocol and its result types.

The service (:mod:`streamkm.service`) only ever talks to this protocol; it never names a
concrete pipeline. A pipeline turns a list of consumed records of its input topic into
model updates, dead letters and output records, deterministically and without I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from streamkm.codec import DecodeError
from streamkm.ops.stats import ModelStats

if TYPE_CHECKING:
    from streamkm.cluster import StreamingKMeans
    from streamkm.ops.metrics import Metrics

__all__ = [
    "RecordLike",
    "DeadLetter",
    "OutputRecord",
    "BatchResult",
    "Pipeline",
    "STATE_VERSION",
    "model_stats",
    "json_bytes",
    "finite_or_none",
]

#: Version of the pipeline state layout inside a checkpoint.
STATE_VERSION = 1


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
    """What one :meth:`Pipeline.process` / :meth:`Pipeline.flush` call did.

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
        Time spent embedding windows (sequence pipeline).
    stats : list of streamkm.group.ChunkStats
        Chunk statistics for the group model's reducer (only with a group chunker
        as the pipeline's core; then nothing was absorbed locally).
    """

    n_records: int = 0
    n_valid_records: int = 0
    n_rows: int = 0
    n_clustered: int = 0
    n_windows: int = 0
    n_updates: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    outputs: list[OutputRecord] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    objectives: list[float] = field(default_factory=list)
    stats: list[Any] = field(default_factory=list)
    embed_seconds: float = 0.0

    def merge(self, other: BatchResult) -> BatchResult:
        """Add *other*'s counts and lists to this result (returns self)."""
        self.n_records += other.n_records
        self.n_valid_records += other.n_valid_records
        self.n_rows += other.n_rows
        self.n_clustered += other.n_clustered
        self.n_windows += other.n_windows
        self.n_updates += other.n_updates
        self.embed_seconds += other.embed_seconds
        self.dead_letters.extend(other.dead_letters)
        self.outputs.extend(other.outputs)
        self.events.extend(other.events)
        self.objectives.extend(other.objectives)
        self.stats.extend(other.stats)
        return self


class Pipeline(Protocol):
    """One input topic, decoded and clustered by its own model.

    Implementations: :class:`streamkm.pipeline.vectors.VectorPipeline`,
    :class:`streamkm.pipeline.sequence.SequencePipeline`; they are built from the
    settings by :func:`streamkm.pipeline.build_pipelines`.

    Attributes
    ----------
    name : str
        Registry name, also the ``pipeline`` metric label and the key of its state
        in the checkpoint.
    topic : str
        Input topic.
    always_offload : bool
        True if :meth:`process` must always run in a worker thread, however small
        the batch (a few events can close many windows at once).
    """

    name: str
    topic: str
    always_offload: ClassVar[bool]

    @property
    def model(self) -> StreamingKMeans: ...

    @property
    def n_pending(self) -> int:
        """Rows queued for the next fixed-size model update."""
        ...

    def process(self, records: Sequence[RecordLike]) -> BatchResult:
        """Decode *records* (fetch order), queue valid rows, absorb every full chunk."""
        ...

    def flush(self) -> BatchResult:
        """Absorb the queued partial chunk (the caller checkpoints right after)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def init_metrics(self, metrics: Metrics) -> None:
        """Create this pipeline's labelled series (before the first event)."""
        ...

    def observe(self, metrics: Metrics, *, baseline: bool = False) -> None:
        """Publish the model's (and windows') current statistics to *metrics*."""
        ...


def model_stats(model: StreamingKMeans) -> ModelStats:
    """A :class:`~streamkm.ops.metrics.ModelStats` snapshot of *model* (weights copied)."""
    init = bool(model.is_initialized_)
    return ModelStats(
        n_seen=int(model.n_seen_),
        n_batches=int(model.n_batches_),
        last_batch_objective=_float_or_none(model.last_batch_objective_),
        ewm_objective=_float_or_none(model.ewm_objective_),
        last_center_shift=_float_or_none(model.last_center_shift_),
        weights=np.array(model.counts_, dtype=np.float64) if init else None,
        n_reseeds=int(model.n_reseeds_),
        n_reseeds_rejected=int(model.n_reseeds_rejected_),
        n_dying_replaced=int(model.n_dying_replaced_),
    )


def _float_or_none(v: float | None) -> float | None:
    return None if v is None else float(v)


def json_bytes(obj: dict[str, Any]) -> bytes:
    """Compact JSON (no NaN) for output records."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def finite_or_none(v: Any) -> float | None:
    """``float(v)`` if finite, else None (JSON null)."""
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None

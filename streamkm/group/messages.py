"""The group model's two messages: a chunk's statistics and a model version.

``ChunkStats`` (stats topic, key = pipeline) is what a worker learned from one
contiguous run of offsets of one partition; ``ModelVersion`` (model topic, key =
pipeline) is what the reducer publishes after folding statistics. Both travel in the
:mod:`streamkm.group.wire` format; ``from_bytes`` returns a :class:`WireError` value
for anything malformed. The layouts are in docs/operations.md ("The group model").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from streamkm.group.wire import WireError, decode, encode

__all__ = ["ChunkStats", "ModelVersion", "KIND_STATS", "KIND_VERSION", "KIND_SNAPSHOT", "KIND_RESUME", "KIND_IDLE",
           "snapshot_state", "IdleMarker", "read_stats_log",
           "resume_message", "resume_state",
           "partition_key", "parse_partition_key"]

T = TypeVar("T")

KIND_STATS = "chunk_stats"
KIND_VERSION = "model_version"
KIND_SNAPSHOT = "reducer_snapshot"
KIND_RESUME = "partition_resume"
KIND_IDLE = "idle_partitions"


def partition_key(topic: str, partition: int) -> str:
    """``"topic:partition"``: how offsets are keyed in versions and snapshots."""
    return f"{topic}:{partition}"


def parse_partition_key(key: str) -> tuple[str, int]:
    """Inverse of :func:`partition_key` (topic names may not contain ':')."""
    topic, _, part = key.rpartition(":")
    return topic, int(part)


def _from_bytes(data: bytes | None, kind: str, what: str, build: Callable[[dict[str, Any]], T]) -> T | WireError:
    """Decode, check the kind, validate with *build*; every failure a :class:`WireError`."""
    got = decode(data)
    if isinstance(got, WireError):
        return got
    got_kind, state = got
    if got_kind != kind:
        return WireError(f"expected a {kind!r} message, got {got_kind!r}")
    try:
        return build(state)
    except (ValueError, TypeError) as exc:
        return WireError(f"invalid {what}: {exc}")


def snapshot_state(data: bytes | None, pipeline: str) -> dict[str, Any] | WireError:
    """The reducer snapshot of *pipeline* in *data*: ``{"pipeline", "stats_offset", "state"}``
    and ``config_hash`` (the settings it was folded under; absent in older snapshots), ``state``
    as :meth:`GroupModel.state_dict` wrote it; every failure a :class:`WireError`."""

    def build(s: dict[str, Any]) -> dict[str, Any]:
        if s.get("pipeline") != pipeline or not isinstance(s.get("state"), dict):
            raise ValueError(f"not a {pipeline!r} reducer snapshot (pipeline {s.get('pipeline')!r})")
        if not isinstance(s.get("config_hash", ""), str):
            raise ValueError("config_hash must be a string")
        return s

    return _from_bytes(data, KIND_SNAPSHOT, "reducer snapshot", build)


@dataclass(frozen=True, slots=True)
class IdleMarker:
    """A reducer's decision, written to the stats log, that rounds go on without *keys*.

    The decision depends on time; writing it to the log and acting on it only when it is
    read back in log order makes it part of the input, so a reducer taking over (and any
    offline fold of the log) makes exactly the same rounds.
    """

    pipeline: str
    keys: tuple[str, ...]
    #: Per key, where the partition's next chunk had to start when the decision was made (-1:
    #: none seen): a partition that sent a chunk since then stays active.
    tails: tuple[int, ...] = ()
    member: str = ""

    def to_bytes(self) -> bytes:
        return encode(KIND_IDLE, {"pipeline": self.pipeline, "keys": list(self.keys), "tails": list(self.tails),
                                  "member": self.member})


def read_stats_log(data: bytes | None) -> ChunkStats | IdleMarker | WireError:
    """One stats-log message: chunk statistics or an idle marker; every failure a :class:`WireError`."""
    got = decode(data)
    if isinstance(got, WireError):
        return got
    kind, state = got
    if kind == KIND_IDLE:
        keys, tails = state.get("keys"), state.get("tails")
        if not isinstance(state.get("pipeline"), str) or not isinstance(keys, list) \
                or not all(isinstance(k, str) for k in keys) or not isinstance(tails, list) \
                or len(tails) != len(keys) or not all(type(t) is int for t in tails):
            return WireError("invalid idle marker: needs a pipeline, partition keys and one tail per key")
        try:
            for k in keys:
                parse_partition_key(k)
        except ValueError as exc:
            return WireError(f"invalid idle marker: {exc}")
        return IdleMarker(state["pipeline"], tuple(keys), tuple(tails), str(state.get("member", "")))
    if kind != KIND_STATS:
        return WireError(f"expected a {KIND_STATS!r} message, got {kind!r}")
    try:
        return ChunkStats.from_state(state)
    except (ValueError, TypeError) as exc:
        return WireError(f"invalid chunk statistics: {exc}")


def resume_message(msg: ChunkStats) -> bytes:
    """The model-topic message saying where *msg*'s partition stands after it (its ``resume``)."""
    assert msg.resume is not None
    return encode(KIND_RESUME, {"pipeline": msg.pipeline, "key": msg.key, "end_offset": msg.end_offset,
                                "resume": msg.resume})


def resume_state(data: bytes | None, pipeline: str) -> dict[str, Any] | WireError:
    """``{"pipeline", "key", "end_offset", "resume"}`` of :func:`resume_message` bytes (validated
    as :attr:`ChunkStats.resume`); every failure a :class:`WireError`."""

    def build(s: dict[str, Any]) -> dict[str, Any]:
        if s.get("pipeline") != pipeline or not isinstance(s.get("key"), str):
            raise ValueError(f"not a {pipeline!r} partition resume (pipeline {s.get('pipeline')!r})")
        end = _int(s, "end_offset", minimum=0)
        s["resume"] = _resume(s.get("resume"), end)
        if s["resume"] is None:
            raise ValueError("no resume")
        return s

    return _from_bytes(data, KIND_RESUME, "partition resume", build)


def _int(state: dict[str, Any], name: str, *, minimum: int | None = None) -> int:
    v = state.get(name)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{name} must be an integer, got {type(v).__name__}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _str(state: dict[str, Any], name: str) -> str:
    v = state.get(name)
    if not isinstance(v, str):
        raise ValueError(f"{name} must be a string, got {type(v).__name__}")
    return v


def _arr(state: dict[str, Any], name: str, ndim: int, kind: str) -> NDArray[Any]:
    v = state.get(name)
    if not isinstance(v, np.ndarray) or v.ndim != ndim or v.dtype.kind not in kind:
        raise ValueError(f"{name} must be a {ndim}-D array of kind {kind!r}")
    if v.dtype.kind == "f" and not np.isfinite(v).all():
        raise ValueError(f"{name} holds non-finite values")
    return v


def _resume(r: Any, end: int) -> dict[str, Any] | None:
    """Validate a chunk's ``resume`` tree (the windower state itself is checked on restore)."""
    if r is None:
        return None
    if not isinstance(r, dict) or type(r.get("offset")) is not int or not isinstance(r.get("windows"), dict) \
            or not isinstance(r.get("carry"), dict):
        raise ValueError("resume must hold an integer offset, windows and carry")
    if r["offset"] < end:
        raise ValueError(f"resume offset {r['offset']} is before the chunk's end {end}")
    carry = r["carry"]
    X, keys, meta = carry.get("X"), carry.get("keys"), carry.get("meta")
    if not isinstance(X, np.ndarray) or X.ndim != 2 or X.dtype.kind != "f" or not isinstance(keys, list) \
            or not isinstance(meta, dict) or len(keys) != X.shape[0] \
            or any(not isinstance(c, np.ndarray) or c.shape[:1] != X.shape[:1] for c in meta.values()):
        raise ValueError("resume carry must hold rows X (m, d), m keys and meta columns of m values")
    return r


@dataclass(frozen=True, slots=True)
class ChunkStats:
    """Sufficient statistics of one chunk: offsets ``[first_offset, end_offset)`` of one partition.

    Either *summarised* against model version ``base_version >= 1`` (``ids``,
    ``counts``, ``sums``, ``sq_dist_sums`` per cluster of that version, plus a
    reservoir ``sample``), or *raw* (``rows``) when the worker had no model yet
    (``base_version == 0``). A chunk whose records were all invalid has no rows
    at all; it still advances the partition's offset.

    Attributes
    ----------
    ids : ndarray of shape (k,), int64
    counts : ndarray of shape (k,), int64
    sums : ndarray of shape (k, d), float64
    sq_dist_sums : ndarray of shape (k,), float64
    sample : ndarray of shape (s, d), float32
    rows : ndarray of shape (m, d), float32
    """

    pipeline: str
    topic: str
    partition: int
    first_offset: int
    end_offset: int
    base_version: int
    n_records: int
    ids: NDArray[np.int64]
    counts: NDArray[np.int64]
    sums: NDArray[np.float64]
    sq_dist_sums: NDArray[np.float64]
    sample: NDArray[np.float32]
    rows: NDArray[np.float32]
    member: str = ""
    #: Sequence pipeline: where the partition's open windows stand after this chunk
    #: (``offset``: next record to read, ``windows``: the windower state, ``carry``: window rows
    #: of records in ``[end_offset, offset)``, which open the next chunk); None otherwise.
    resume: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        """``"topic:partition"`` of the source partition."""
        return partition_key(self.topic, self.partition)

    @property
    def n_points(self) -> int:
        """Points the chunk contributes (rows or summed counts)."""
        return int(self.rows.shape[0]) if self.rows.shape[0] else int(self.counts.sum())

    def to_state(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def to_bytes(self) -> bytes:
        return encode(KIND_STATS, self.to_state())

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> ChunkStats:
        """Validate a decoded tree (ValueError naming the field)."""
        ids = _arr(s, "ids", 1, "iu").astype(np.int64)
        counts = _arr(s, "counts", 1, "iu").astype(np.int64)
        sums = _arr(s, "sums", 2, "f").astype(np.float64)
        ssd = _arr(s, "sq_dist_sums", 1, "f").astype(np.float64)
        sample = _arr(s, "sample", 2, "f").astype(np.float32)
        rows = _arr(s, "rows", 2, "f").astype(np.float32)
        k = ids.shape[0]
        if counts.shape != (k,) or ssd.shape != (k,) or sums.shape[0] != k:
            raise ValueError(f"ids, counts, sums and sq_dist_sums disagree on k ({k}, {counts.shape}, "
                             f"{sums.shape}, {ssd.shape})")
        if k and (counts.min() < 0 or ssd.min() < 0):
            raise ValueError("counts and sq_dist_sums must be >= 0")
        if k and rows.shape[0]:
            raise ValueError("a chunk is either summarised or raw, not both")
        widths = {a.shape[1] for a in (sums, sample, rows) if a.shape[0]}
        if len(widths) > 1:
            raise ValueError(f"sums, sample and rows disagree on the dimension: {sorted(widths)}")
        first, end = _int(s, "first_offset", minimum=0), _int(s, "end_offset", minimum=0)
        if end <= first:
            raise ValueError(f"empty offset range [{first}, {end})")
        base = _int(s, "base_version", minimum=0)
        if k and base < 1:
            raise ValueError("summarised statistics need a base_version >= 1")
        return cls(pipeline=_str(s, "pipeline"), topic=_str(s, "topic"),
                   partition=_int(s, "partition", minimum=0), first_offset=first, end_offset=end,
                   base_version=base, n_records=_int(s, "n_records", minimum=0), ids=ids, counts=counts,
                   sums=sums, sq_dist_sums=ssd, sample=sample, rows=rows, member=str(s.get("member", "")),
                   resume=_resume(s.get("resume"), end))

    @classmethod
    def from_bytes(cls, data: bytes | None) -> ChunkStats | WireError:
        return _from_bytes(data, KIND_STATS, "chunk statistics", cls.from_state)


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One published version of a pipeline's group model.

    Attributes
    ----------
    version : int
        Accepted statistics messages folded so far (0: none).
    stats_offset : int
        Offset of the last stats message folded (accepted or dropped), -1 before any.
    offsets : dict of str to int
        Next offset per source partition (``"topic:partition"``) the model reflects:
        where a worker assigned that partition resumes.
    centers : ndarray of shape (k, d), float64
        Empty (k = 0) until the model is initialized.
    weights : ndarray of shape (k,), float64
    ids : ndarray of shape (k,), int64
        Stable cluster id of each center (positions are not stable).
    next_id : int
        The next fresh cluster id (ids are never reused).
    n_seen : int
        Points folded into the model.
    dtype : str
        The model's data dtype (the workers assign in it).
    config_hash : str
        Hash of the model settings that produced it.
    counters : dict of str to int
        Stats messages by fold outcome so far (``accepted``, ``duplicate``, ...).
    summary : dict
        The model's scalar statistics for the metrics (``last_batch_objective``,
        ``ewm_objective``, ``last_center_shift``, ``n_reseeds``, ...).
    published_at : float
        Unix time of publication (informational; not part of the fold).
    queued : dict of str to int
        ``group.ordering = "rounds"``: per source partition, the end of the last chunk the
        reducer has accepted, folded or waiting for its round (where a newly assigned worker
        resumes); empty otherwise. Timing, not the fold: not compared by :meth:`same_model`.
    read_to : int
        The last stats-log offset the reducer had read (-1: not published).
    waiting : list of int
        ``group.ordering = "rounds"``: the stats-log offsets of the chunks still waiting for
        their round when it was published. Every other message up to ``read_to`` has been
        folded or refused, counted and announced: a successor refolding them does neither again.
    """

    pipeline: str
    version: int
    stats_offset: int
    offsets: dict[str, int]
    centers: NDArray[np.float64]
    weights: NDArray[np.float64]
    ids: NDArray[np.int64]
    next_id: int
    n_seen: int
    dtype: str = "float32"
    config_hash: str = ""
    counters: dict[str, int] = field(default_factory=dict)
    summary: dict[str, float | int | None] = field(default_factory=dict)
    published_at: float = 0.0
    queued: dict[str, int] = field(default_factory=dict)
    read_to: int = -1
    waiting: list[int] = field(default_factory=list)

    @property
    def is_initialized(self) -> bool:
        return bool(self.centers.shape[0])

    def to_state(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def to_bytes(self) -> bytes:
        return encode(KIND_VERSION, self.to_state())

    def same_model(self, other: ModelVersion) -> bool:
        """Equal in everything the fold determines (not ``published_at``), bit for bit."""
        return (self.pipeline == other.pipeline and self.version == other.version
                and self.stats_offset == other.stats_offset and self.offsets == other.offsets
                and np.array_equal(self.centers, other.centers) and np.array_equal(self.weights, other.weights)
                and np.array_equal(self.ids, other.ids) and self.next_id == other.next_id
                and self.n_seen == other.n_seen and self.counters == other.counters
                and self.summary == other.summary)

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> ModelVersion:
        centers = _arr(s, "centers", 2, "f").astype(np.float64)
        weights = _arr(s, "weights", 1, "f").astype(np.float64)
        ids = _arr(s, "ids", 1, "iu").astype(np.int64)
        k = centers.shape[0]
        if weights.shape != (k,) or ids.shape != (k,):
            raise ValueError(f"centers ({k}), weights {weights.shape} and ids {ids.shape} disagree")
        if np.unique(ids).size != k:
            raise ValueError("cluster ids are not distinct")
        next_id = _int(s, "next_id", minimum=0)
        if k and int(ids.max()) >= next_id:
            raise ValueError(f"cluster id {int(ids.max())} >= next_id {next_id}")
        offsets = s.get("offsets")
        if not isinstance(offsets, dict) or not all(
                isinstance(key, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for key, v in offsets.items()):
            raise ValueError("offsets must map 'topic:partition' to offsets >= 0")
        counters = s.get("counters", {})
        if not isinstance(counters, dict):
            raise ValueError("counters must be a dict")
        dtype = _str(s, "dtype")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
        if not all(isinstance(b, int) and not isinstance(b, bool) for b in counters.values()):
            raise ValueError("counters must be integers")
        summary = s.get("summary", {})
        if not isinstance(summary, dict) or not all(
                v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v))
                for v in summary.values()):
            raise ValueError("summary must map names to finite numbers or null")
        published = s.get("published_at", 0.0)
        queued = s.get("queued", {})
        if not isinstance(queued, dict) or not all(
                isinstance(key, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for key, v in queued.items()):
            raise ValueError("queued must map 'topic:partition' to offsets >= 0")
        read_to = s.get("read_to", -1)
        if not isinstance(read_to, int) or isinstance(read_to, bool) or read_to < -1:
            raise ValueError(f"read_to must be an integer >= -1, got {read_to!r}")
        waiting = s.get("waiting", [])
        if not isinstance(waiting, list) or not all(
                isinstance(o, int) and not isinstance(o, bool) and 0 <= o <= read_to for o in waiting):
            raise ValueError("waiting must list stats offsets in [0, read_to]")
        return cls(pipeline=_str(s, "pipeline"), version=_int(s, "version", minimum=0),
                   stats_offset=_int(s, "stats_offset", minimum=-1), offsets=dict(offsets), centers=centers,
                   weights=weights, ids=ids, next_id=next_id, n_seen=_int(s, "n_seen", minimum=0),
                   dtype=dtype, config_hash=str(s.get("config_hash", "")),
                   counters={str(a): int(b) for a, b in counters.items()}, summary=dict(summary),
                   published_at=float(published) if isinstance(published, (int, float)) else 0.0,
                   queued=dict(queued), read_to=read_to, waiting=list(waiting))

    @classmethod
    def from_bytes(cls, data: bytes | None) -> ModelVersion | WireError:
        return _from_bytes(data, KIND_VERSION, "model version", cls.from_state)

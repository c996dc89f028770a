"""Builders shared by the group-model tests: records, chunk statistics, logs and folds."""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from streamkm.cluster import summarize
from streamkm.codec import encode_binary, encode_json
from streamkm.group import ChunkStats, GroupModel, ModelVersion, WireError
from streamkm.group.chunker import GroupChunker
from streamkm.pipeline.vectors import VectorPipeline

Rec = collections.namedtuple("Rec", "topic partition offset key value headers timestamp")

PIPE = "vectors"
TOPIC = "t"
BAD = b"bad"

_E_I = np.empty(0, dtype=np.int64)
_E_F = np.empty(0, dtype=np.float64)


def raw_stats(first: int, rows: Any, *, part: int = 0, end: int | None = None, d: int | None = None,
              pipeline: str = PIPE, topic: str = TOPIC, member: str = "") -> ChunkStats:
    """A raw chunk (``base_version == 0``) of *rows* at ``[first, end)`` (end: first + len(rows))."""
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim != 2:
        rows = rows.reshape(0, d if d is not None else 2)
    d = rows.shape[1]
    end = first + max(rows.shape[0], 1) if end is None else end
    return ChunkStats(pipeline, topic, part, first, end, 0, rows.shape[0], _E_I, _E_I, np.empty((0, d)), _E_F,
                      np.empty((0, d), np.float32), rows.copy(), member)


def summarised_stats(version: ModelVersion, first: int, X: Any, *, part: int = 0, end: int | None = None,
                     sample: Any = None, pipeline: str = PIPE, topic: str = TOPIC) -> ChunkStats:
    """The chunk *X* summarised against *version* (what a worker holding it sends)."""
    X = np.asarray(X, dtype=np.float32)
    d = X.shape[1]
    s = summarize(X, version.centers, dtype=np.dtype(version.dtype))
    smp = X.copy() if sample is None else np.asarray(sample, dtype=np.float32)
    end = first + X.shape[0] if end is None else end
    return ChunkStats(pipeline, topic, part, first, end, version.version, X.shape[0], version.ids.copy(), s.counts,
                      s.sums, s.sq_dist_sums, smp, np.empty((0, d), np.float32))


def blobs(rng: np.random.Generator, centers: np.ndarray, n: int, scale: float = 1.0) -> np.ndarray:
    """*n* float32 points around randomly chosen *centers*."""
    lab = rng.integers(centers.shape[0], size=n)
    return (centers[lab] + rng.normal(scale=scale, size=(n, centers.shape[1]))).astype(np.float32)


def fold_log(log: list[bytes], *, model_kwargs: dict[str, Any], g: GroupModel | None = None, start: int = 0,
             versions: list[ModelVersion] | None = None, **kw: Any) -> GroupModel:
    """Fold encoded stats messages (log offset = index) like the reducer: undecodable ones are skipped."""
    if g is None:
        g = GroupModel(pipeline=PIPE, model_kwargs=model_kwargs, **kw)
    for i in range(start, len(log)):
        msg = ChunkStats.from_bytes(log[i])
        if isinstance(msg, WireError):
            g.skip(i, str(msg))
        else:
            g.fold(msg, i)
        if versions is not None:
            versions.append(g.version())
    return g


def make_records(rng: np.random.Generator, part: int, start: int, n: int, centers: np.ndarray, *,
                 bad_frac: float = 0.0, rows_per_record: tuple[int, int] = (1, 1), fmt: str = "json"
                 ) -> tuple[list[Rec], dict[int, np.ndarray]]:
    """*n* records of *part* from offset *start*; returns them and the rows of each valid record by offset."""
    recs: list[Rec] = []
    rows: dict[int, np.ndarray] = {}
    for off in range(start, start + n):
        if rng.random() < bad_frac:
            recs.append(Rec(TOPIC, part, off, None, BAD, (), 0))
            continue
        r = int(rng.integers(rows_per_record[0], rows_per_record[1] + 1))
        X = blobs(rng, centers, r)
        if fmt == "json" and r == 1:
            value = encode_json(X[0])
        else:
            value = encode_binary(X)
        rows[off] = X
        recs.append(Rec(TOPIC, part, off, f"k{off}".encode(), value, (), 0))
    return recs, rows


def equal_trees(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where two state trees differ (arrays bit for bit, with dtype and shape)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) or a.dtype != b.dtype \
                or a.shape != b.shape or a.tobytes() != b.tobytes():
            return [path]
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path} keys {sorted(set(a) ^ set(b))}"]
        return [p for k in a for p in equal_trees(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path} len"]
        return [p for i, (x, y) in enumerate(zip(a, b, strict=True)) for p in equal_trees(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return []
    return [] if (type(a) is type(b) and a == b) else [path]


class Group:
    """Workers (one pipeline + chunker over all partitions) and a reducer, wired offline.

    After every ``step`` the statistics are encoded, appended to the log and folded,
    and the worker picks up the new version (through its bytes), as in the service.
    """

    def __init__(self, *, model_kwargs: dict[str, Any], batch_rows: int, n_parts: int = 3, sample_rows: int = 64,
                 fmt: str = "auto", **group_kw: Any):
        self.ch = GroupChunker(pipeline=PIPE, batch_rows=batch_rows, sample_rows=sample_rows, member="w")
        self.ch.set_topic(TOPIC)
        self.p = VectorPipeline(model_kwargs=model_kwargs, batch_rows=batch_rows, core=self.ch, fmt=fmt)
        self.g = GroupModel(pipeline=PIPE, model_kwargs=model_kwargs, **group_kw)
        self.log: list[bytes] = []
        self.stats: list[ChunkStats] = []
        self.outcomes: list[str] = []
        #: the reducer's version after every message
        self.versions: list[ModelVersion] = []
        self.next_offset = dict.fromkeys(range(n_parts), 0)
        for part in range(n_parts):
            self.ch.reset(TOPIC, part, 0)

    def _fold(self, res: Any) -> None:
        for s in res.stats:
            b = s.to_bytes()
            msg = ChunkStats.from_bytes(b)
            assert isinstance(msg, ChunkStats), msg
            self.outcomes.append(self.g.fold(msg, len(self.log)).status)
            self.log.append(b)
            self.stats.append(s)
            self.versions.append(self.g.version())
        v = ModelVersion.from_bytes(self.g.version().to_bytes())
        assert isinstance(v, ModelVersion), v
        self.ch.version = v

    def step(self, recs: list[Rec]) -> Any:
        res = self.p.process(recs)
        if recs:
            part = recs[0].partition
            self.next_offset[part] = recs[-1].offset + 1
            self.ch.advance(TOPIC, part, recs[-1].offset + 1)
        self._fold(res)
        return res

    def flush(self) -> Any:
        res = self.p.flush()
        self._fold(res)
        return res

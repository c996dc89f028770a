"""Synthetic record sources for the load generator.

Each source yields :class:`~streamkm.loadgen.recording.Record` tuples lazily
and in bounded memory: :func:`vector_records` encodes any array, and
:func:`blob_records` / :func:`event_records` encode the synthetic streams of
:mod:`streamkm.loadgen.synthetic` (drifting Gaussian clusters, behaviour
event streams) for the vector and sequence pipelines.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streamkm.loadgen.recording import Record

__all__ = ["vector_records", "blob_records", "event_records"]


def _check_fmt(fmt: str) -> None:
    if fmt not in ("json", "binary"):
        raise ValueError(f"fmt must be 'json' or 'binary', got {fmt!r}")


def _check_positive(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def vector_records(
    X: NDArray[Any],
    *,
    fmt: str = "binary",
    rows_per_record: int = 1,
    keys: Sequence[str] | None = None,
) -> Iterator[Record]:
    """Encode the rows of ``X`` into records of ``rows_per_record`` rows.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        The vectors (sent as float32).
    fmt : {"binary", "json"}
        JSON uses ``{"x": [...]}`` for one row and ``{"X": [[...], ...]}`` for
        several; binary uses the versioned float32 frame of
        :func:`streamkm.codec.encode_binary`.
    rows_per_record : int
        Vectors per record; the last record may hold fewer.
    keys : sequence of str, optional
        One per record; they become the record keys.
    """
    from streamkm import codec

    _check_fmt(fmt)
    _check_positive("rows_per_record", rows_per_record)
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n, d), got shape {X.shape}")
    n = X.shape[0]
    n_records = -(-n // rows_per_record)
    if keys is not None and len(keys) != n_records:
        raise ValueError(f"expected {n_records} keys (one per record), got {len(keys)}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    values: Iterable[bytes]
    if fmt == "binary":
        values = codec.encode_binary_records(X, rows_per_record) if n else []
    elif rows_per_record == 1:
        values = (codec.encode_json(row) for row in X)
    else:
        values = (codec.encode_json_batch(X[i:i + rows_per_record])
                  for i in range(0, n, rows_per_record))
    for i, value in enumerate(values):
        key = None if keys is None else str(keys[i]).encode("utf-8")
        yield Record(key, value)


def blob_records(
    count: int | None,
    *,
    fmt: str = "binary",
    rows_per_record: int = 1,
    n_clusters: int = 5,
    n_features: int = 8,
    drift_every: int | None = 20_000,
    seed: int | None = 0,
    chunk_records: int = 1024,
) -> Iterator[Record]:
    """Synthetic drifting Gaussian clusters, ``count`` records (None: unbounded).

    Vectors come from :func:`streamkm.loadgen.synthetic.iter_drifting_blobs` in
    chunks of ``chunk_records`` records, so memory stays bounded for an
    unbounded stream; they are encoded as by :func:`vector_records`.
    """
    from streamkm.loadgen import synthetic

    _check_fmt(fmt)
    _check_positive("count", count, allow_none=True)
    _check_positive("rows_per_record", rows_per_record)
    _check_positive("chunk_records", chunk_records)
    batch_points = chunk_records * rows_per_record
    n_batches = None if count is None else -(-count // chunk_records)
    points = synthetic.iter_drifting_blobs(
        batch_points, n_batches=n_batches, n_clusters=n_clusters, n_features=n_features,
        drift_every=drift_every, seed=seed,
    )
    left = count
    for X, _labels in points:
        if left is not None:
            X = X[: left * rows_per_record]
            left -= -(-len(X) // rows_per_record)
        yield from vector_records(X, fmt=fmt, rows_per_record=rows_per_record)


def event_records(
    count: int | None,
    *,
    n_keys: int = 64,
    n_features: int = 4,
    n_processes: int = 4,
    seed: int | None = 0,
    chunk_events: int = 4096,
) -> Iterator[Record]:
    """Per-key behaviour event streams as JSON events ``{"key", "ts", "x"}``.

    ``count`` events in total (None: unbounded, generated in chunks that
    continue each key's timeline). The record key is the entity key, so one
    entity's events stay in one partition, in order.
    """
    from streamkm import codec
    from streamkm.loadgen import synthetic

    _check_positive("count", count, allow_none=True)
    _check_positive("n_keys", n_keys)
    _check_positive("chunk_events", chunk_events)
    sent = 0
    start_ts = 0.0
    chunk_seeds = np.random.default_rng(seed)
    while count is None or sent < count:
        n = chunk_events if count is None else min(chunk_events, count - sent)
        per_key = -(-n // n_keys)
        keys, ts, X, _proc = synthetic.behaviour_events(
            n_keys, per_key, n_features=n_features, n_processes=n_processes,
            start_ts=start_ts, seed=int(chunk_seeds.integers(2**31)),
        )
        keys, ts, X = keys[:n], np.asarray(ts[:n], dtype=np.float64), np.asarray(X[:n])
        for i in range(len(keys)):
            key = str(keys[i])
            yield Record(key.encode("utf-8"), codec.encode_event_json(key, float(ts[i]), X[i]))
        sent += len(keys)
        # the next chunk continues every key's timeline after this one
        start_ts = float(ts.max()) + 1.0

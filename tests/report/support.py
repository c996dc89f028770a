"""A RUN_DIR written by the spec (docs/report.md) from a real StreamingKMeans run on synthetic blobs.

The per-chunk fields are recorded the way the group fold reports them: objective, EWMA and
centre shift from the model after each ``partial_fit``; weights by stable id, carried across
reseeds with ``match_clusters``; ``initialized``, ``reseed``, ``identity`` and ``drift`` events.
The final model is written with ``streamkm.group.export.export_version``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from streamkm.cluster import StreamingKMeans, match_clusters
from streamkm.drift import DriftMonitor
from streamkm.group.export import export_version
from streamkm.group.messages import ModelVersion

T0_MS = 1_764_590_000_000
DEAD_LETTERS = {"not_finite": 7, "wrong_dimension": 3}


def make_run_dir(path: Path, *, k: int = 3, d: int = 4, n_chunks: int = 40, chunk_rows: int = 150,
                 seed: int = 0, first_rows: int | None = None, null_time_at: int | None = None,
                 relocate_at: int | None = 20, reservoir_size: int = 600) -> Path:
    """Write RUN_DIR *path*: ``n_chunks`` chunks of ``chunk_rows`` rows from *k* blobs in *d* dims.

    ``first_rows`` (< 3k) makes the first chunk too small to initialize the model (its objective,
    EWMA and shift are null). ``null_time_at``: that chunk has no record time. ``relocate_at``: from
    that chunk on one blob jumps far away (the objective rises, drift and reseeds follow).
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=12.0, size=(k, d))
    km = StreamingKMeans(k, half_life=8.0, reservoir="time_biased", reservoir_size=reservoir_size,
                         reseed_interval=4 * chunk_rows, seed=seed)
    drift = DriftMonitor("page_hinkley")
    ids = np.empty(0, dtype=np.int64)
    next_id = 0
    chunks: list[dict[str, Any]] = []
    offset = 0
    for i in range(n_chunks):
        if relocate_at is not None and i == relocate_at:
            centers = centers.copy()
            centers[0] += 60.0
        m = first_rows if (i == 0 and first_rows is not None) else chunk_rows
        X = (centers[rng.integers(k, size=m)] + rng.normal(size=(m, d))).astype(np.float32)
        was_init = km.is_initialized_
        before = None if not was_init else np.array(km.cluster_centers_, dtype=np.float64)
        changes = (km.n_reseeds_, km.n_dying_replaced_)
        km.partial_fit(X)
        events: list[dict[str, Any]] = []
        if km.is_initialized_ and not was_init:
            ids, next_id = np.arange(k, dtype=np.int64), k
            events.append({"event": "initialized", "n_seen": int(km.n_seen_)})
        elif was_init and (km.n_reseeds_, km.n_dying_replaced_) != changes:
            if km.n_reseeds_ != changes[0]:
                events.append({"event": "reseed", "trigger": "interval", "accepted": True,
                               "n_reseeds": int(km.n_reseeds_)})
            match = match_clusters(before, ids, km.cluster_centers_, next_id=next_id)
            ids, next_id = np.asarray(match.ids, dtype=np.int64), int(match.next_id)
            events += [{"event": "identity", "kind": t.kind, "cluster_id": t.cluster_id, "other_id": t.other_id}
                       for t in match.transitions if t.kind not in ("survived", "moved")]
        obj = km.last_batch_objective_
        if km.is_initialized_ and was_init and obj is not None and drift.update(float(obj)):
            events.append({"event": "drift", "objective": float(obj), "n_batches": int(km.n_batches_)})
        weights = {} if not km.is_initialized_ else {
            str(c): float(w) for c, w in zip(ids.tolist(), km.counts_.tolist(), strict=True)}
        t = None if i == null_time_at else T0_MS + 1000 * i + int(rng.integers(0, 500))
        chunks.append({"version": i + 1, "partition": i % 2, "first_offset": offset, "end_offset": offset + m,
                       "rows": m, "record_time_ms": t, "objective": obj, "ewma": km.ewm_objective_,
                       "center_shift": km.last_center_shift_ if km.is_initialized_ else None,
                       "weights": weights, "events": events})
        offset += m
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "chunks.jsonl", "w", encoding="utf-8") as f:
        for c in chunks:
            f.write(json.dumps(c) + "\n")
    v = ModelVersion(pipeline="vectors", version=n_chunks, stats_offset=n_chunks - 1, offsets={"t:0": offset},
                     centers=np.array(km.cluster_centers_, dtype=np.float64),
                     weights=np.array(km.counts_, dtype=np.float64), ids=ids.copy(), next_id=next_id,
                     n_seen=int(km.n_seen_), config_hash="cafe0123")
    export_version(v, path / "model")
    np.save(path / "reservoir.npy", np.asarray(km.reservoir_sample, dtype=np.float32), allow_pickle=False)
    valid = sum(c["rows"] for c in chunks)
    times = [c["record_time_ms"] for c in chunks if c["record_time_ms"] is not None]
    run = {"format": "streamkm.run", "version": 1, "pipeline": "vectors", "source": "blobs.skmrec",
           "config_hash": "cafe0123", "n_clusters": k, "n_features": d,
           "records": valid + sum(DEAD_LETTERS.values()), "valid_rows": valid, "dead_letters": dict(DEAD_LETTERS),
           "chunks": n_chunks, "final_version": n_chunks, "record_time_ms": [min(times), max(times)],
           "files": {"model": "model", "snapshot": "model.snapshot", "chunks": "chunks.jsonl",
                     "reservoir": "reservoir.npy"}}
    (path / "run.json").write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    return path


def read_chunks(path: Path) -> list[dict[str, Any]]:
    """The lines of ``path / chunks.jsonl``, parsed independently of the report's reader."""
    return [json.loads(line) for line in (path / "chunks.jsonl").read_text(encoding="utf-8").splitlines() if line]

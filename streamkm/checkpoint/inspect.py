"""``streamkm checkpoint inspect``: a human-readable summary of a checkpoint directory."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamkm.checkpoint.store import DEFAULT_MAX_FILE_BYTES, CheckpointStore

__all__ = ["inspect_summary"]


def _fmt_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}min"
    return f"{seconds / 3600:.1f}h"


def _first(d: dict, *names: str) -> Any:
    for n in names:
        if n in d and d[n] is not None:
            return d[n]
    return None


def inspect_summary(directory: str | os.PathLike, *, now: float | None = None,
                    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> str:
    """Human-readable summary of the newest valid checkpoint in ``directory``.

    Shows sequence, age, size, model version, offsets, and per pipeline k,
    dimension, cluster weights, points seen and drift detections (read from the
    keys of the worker's checkpoint layout, docs/architecture.md), plus skipped
    invalid checkpoints.

    Parameters
    ----------
    directory : str or Path
    now : float, optional
        Current Unix time (for the age); default ``time.time()``.
    max_file_bytes : int, optional
        Size limit of each checkpoint file (``checkpoint.max_file_bytes``): larger
        files are reported as invalid, unread.

    Returns
    -------
    str
    """
    directory = Path(directory)
    store = CheckpointStore(directory, create=False, max_file_bytes=max_file_bytes)
    now = time.time() if now is None else now
    lines = [f"checkpoint directory: {directory}"]
    infos = store.list()
    lines.append(f"checkpoints: {len(infos)} " + (f"(sequences {', '.join(str(i.sequence) for i in infos)})"
                                                  if infos else ""))
    loaded = store.load_latest()
    reasons = [f"  sequence {seq}: {store.skip_reasons[seq]}" for seq in store.skipped if seq in store.skip_reasons]
    if loaded is None:
        lines.append("no valid checkpoint")
        if reasons:
            lines += ["invalid checkpoint(s):", *reasons]
        return "\n".join(lines)
    state, info = loaded
    skipped = [i.sequence for i in infos if i.sequence > info.sequence]
    if skipped:
        lines.append(f"WARNING: newer invalid checkpoint(s) skipped: {skipped}")
        lines += reasons
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.created_at))
    lines.append(f"latest valid: sequence {info.sequence}, written {created} "
                 f"(age {_fmt_age(now - info.created_at)}), {info.size_bytes} bytes, sha256 {info.sha256[:16]}")
    if "model_version" in state:
        lines.append(f"model version: {state['model_version']}")
    offsets = state.get("offsets")
    if isinstance(offsets, dict):
        lines.append(f"offsets ({len(offsets)} partitions):")
        for tp in sorted(offsets):
            lines.append(f"  {tp}: next offset {offsets[tp]}")
    pipes = state.get("pipelines")
    if isinstance(pipes, dict):
        for name in sorted(pipes):
            p: dict[str, Any] = pipes[name] if isinstance(pipes[name], dict) else {}
            model: dict[str, Any] = p["model"] if isinstance(p.get("model"), dict) else {}
            centers = _first(model, "centers", "cluster_centers_")
            counts = _first(model, "counts", "counts_")
            head = f"pipeline {name}:"
            if isinstance(centers, np.ndarray) and centers.ndim == 2:
                head += f" k={centers.shape[0]}, dim={centers.shape[1]}"
            else:
                params: dict[str, Any] = model["params"] if isinstance(model.get("params"), dict) else {}
                k = _first(params, "n_clusters") or _first(model, "n_clusters")
                head += f" k={k}, not initialized" if k is not None else " no model"
            for keys, label in ((("n_seen", "n_seen_"), "points seen"), (("n_batches", "n_batches_"), "batches")):
                v = _first(model, *keys)
                if v is not None:
                    head += f", {label}={v}"
            lines.append(head)
            if isinstance(counts, np.ndarray) and counts.size:
                w = np.asarray(counts, dtype=np.float64).ravel()
                shown = ", ".join(f"{x:.4g}" for x in w[:16]) + (" ..." if w.size > 16 else "")
                lines.append(f"  weights (sum {w.sum():.6g}): [{shown}]")
            for key, label in (("ewm_objective", "EWMA objective"), ("last_batch_objective", "last objective")):
                v = _first(model, key, key + "_")
                if isinstance(v, (int, float)):
                    lines.append(f"  {label}: {v:.6g}")
            if p.get("lstm_hash"):
                lines.append(f"  lstm hash: {str(p['lstm_hash'])[:16]}")
            win = p.get("windows")
            if isinstance(win, dict):
                lengths = win.get("lengths")
                if isinstance(win.get("keys"), list) and isinstance(lengths, np.ndarray):
                    lines.append(f"  open windows: {len(win['keys'])} keys, {int(lengths.sum())} buffered events")
            drift = p.get("drift")
            if isinstance(drift, dict):
                line = f"  drift: {drift.get('method', '?')}, {drift.get('n_detections', 0)} detections"
                if p.get("n_drift_reseeds") is not None:
                    line += f", {p['n_drift_reseeds']} reseeds accepted after drift"
                lines.append(line)
    if info.metadata:
        lines.append(f"metadata: {json.dumps(info.metadata, sort_keys=True)}")
    return "\n".join(lines)

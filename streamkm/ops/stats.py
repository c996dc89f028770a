"""Snapshots of a model's and an event windower's statistics, handed from a pipeline to the metrics.

Plain data (NumPy + standard library), so the I/O-free pipeline core can build them
without importing prometheus-client; :class:`streamkm.ops.metrics.Metrics` publishes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["ModelStats", "WindowStats"]


@dataclass(frozen=True, slots=True)
class ModelStats:
    """One snapshot of a StreamingKMeans, built by the pipeline after each batch.

    Attributes
    ----------
    n_seen : int
        Points seen over the model's life.
    n_batches : int
        Mini-batch updates applied (the model version).
    last_batch_objective, ewm_objective, last_center_shift : float or None
        None until the model has one (the gauge is then left unset).
    weights : ndarray of shape (k,) float64 or None
        A *copy* of ``counts_``; None until the model is initialized. Kept by
        reference and read at scrape time, possibly from another thread, so
        the caller must not modify it afterwards.
    n_reseeds, n_reseeds_rejected, n_dying_replaced : int
        Cumulative counts (differenced into counters).
    """

    n_seen: int
    n_batches: int
    last_batch_objective: float | None
    ewm_objective: float | None
    last_center_shift: float | None
    weights: np.ndarray | None
    n_reseeds: int
    n_reseeds_rejected: int
    n_dying_replaced: int


@dataclass(frozen=True, slots=True)
class WindowStats:
    """One snapshot of an EventWindower.

    Attributes
    ----------
    n_open_keys, n_open_events : int
        Current open windows and the events buffered in them.
    n_emitted, n_late_dropped : int
        Cumulative counts.
    n_evicted : mapping of str to int
        Eviction reason -> cumulative count.
    """

    n_open_keys: int
    n_open_events: int
    n_emitted: int
    n_late_dropped: int
    n_evicted: Mapping[str, int]

"""Sufficient statistics of a batch against fixed centers: the map step of a distributed update.

Spark's ``StreamingKMeans`` sums (count, vector sum) per closest center on every
partition and reduces the sums on the driver; Flink ML's ``OnlineKMeans`` does
the same per subtask. :func:`summarize` is that map step: what a worker computes
for a chunk of points against the model version it holds.
:meth:`StreamingKMeans.partial_fit_stats` is the matching reduce step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._distance import _assign, _row_norms_sq
from ._streaming import _cluster_sums
from ._validation import check_array

__all__ = ["ChunkSummary", "summarize"]


@dataclass(frozen=True, slots=True)
class ChunkSummary:
    """A batch assigned to fixed centers, and its per-cluster sufficient statistics.

    Attributes
    ----------
    labels : ndarray of shape (n_samples,), int64
        Position of the nearest center (lowest on ties).
    sq_dist : ndarray of shape (n_samples,)
        Squared distance to it, in the dtype of the centers used.
    counts : ndarray of shape (n_clusters,), int64
    sums : ndarray of shape (n_clusters, n_features), float64
        Sum of the points assigned to each center.
    sq_dist_sums : ndarray of shape (n_clusters,), float64
        Sum of their squared distances.
    """

    labels: NDArray[np.int64]
    sq_dist: NDArray[Any]
    counts: NDArray[np.int64]
    sums: NDArray[np.float64]
    sq_dist_sums: NDArray[np.float64]


def summarize(X: Any, centers: Any, *, dtype: Any = np.float32) -> ChunkSummary:
    """Assign *X* to *centers* and sum the points per center.

    The assignment is the one :class:`~streamkm.cluster.StreamingKMeans` makes
    in ``partial_fit`` and ``assign`` (centers cast to the data dtype, same GEMM
    kernel and row blocks), so statistics summarised here and folded with
    ``partial_fit_stats`` give the same model as ``partial_fit`` on the points.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Finite values, ``n_samples >= 1``.
    centers : array-like of shape (n_clusters, n_features)
        The model's centers (float64 master copy, or already in *dtype*).
    dtype : {np.float32, np.float64}
        The model's data dtype; *X* and the centers are cast to it.

    Returns
    -------
    ChunkSummary

    Examples
    --------
    >>> import numpy as np
    >>> s = summarize([[0.0, 0.0], [0.0, 2.0], [10.0, 10.0]], [[0.0, 1.0], [10.0, 10.0]])
    >>> s.labels.tolist(), s.counts.tolist(), s.sums.tolist(), s.sq_dist_sums.tolist()
    ([0, 0, 1], [2, 1], [[0.0, 2.0], [10.0, 10.0]], [2.0, 0.0])
    """
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    C = check_array(centers, name="centers")
    Xa = check_array(X, name="X", n_features=C.shape[1])
    Xa = np.ascontiguousarray(Xa, dtype=dt)
    Cd = np.ascontiguousarray(C, dtype=dt)
    labels, sq = _assign(Xa, Cd, c_sq=_row_norms_sq(Cd))
    k = Cd.shape[0]
    counts, sums = _cluster_sums(Xa, labels, k)
    ssd = np.bincount(labels, weights=sq, minlength=k).astype(np.float64)
    return ChunkSummary(labels=labels, sq_dist=sq, counts=counts.astype(np.int64), sums=sums, sq_dist_sums=ssd)

"""The streaming k-means update kernel: one decayed mini-batch step.

Private, pure kernels of :class:`~streamkm.cluster.StreamingKMeans` (shared by
``partial_fit`` and ``fit``) and of :func:`~streamkm.cluster.summarize`. They
assume validated input and modify none of their arguments (only the scratch
arrays of a :class:`~._distance._Workspace` passed to them). The rule and its
derivation are in ``docs/kmeans.md`` (section 5).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._distance import _Workspace

__all__ = ["_apply_sums", "_cluster_sums", "_minibatch_step"]

#: ``k · (d + 16)`` up to which :func:`_cluster_sums` uses a dense one-hot GEMM: its
#: cost grows with k·d per point, the sparse product's is about 20 ns + d multiply-adds.
_DENSE_ONE_HOT_MAX = 1024


def _one_hot(m: int, k: int, dtype: Any) -> Any:
    """A (k, m) sparse CSC matrix with one stored 1 per column (row index set by the caller)."""
    from scipy.sparse import csc_array  # first use only: keeps ``import streamkm`` light

    return csc_array(
        (np.ones(m, dtype=dtype), np.zeros(m, dtype=np.int32), np.arange(m + 1, dtype=np.int32)),
        shape=(k, m),
    )


def _cluster_sums(
    X: np.ndarray, labels: np.ndarray, k: int, *, work: _Workspace | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster point counts (k,) int64 and sums (k, d) float64.

    The sums are the product of the (k, m) one-hot matrix of the labels with
    ``X``: for many or wide clusters a sparse CSC matrix (one stored 1 per
    point; SciPy adds every row of ``X`` into the row of its cluster, O(m d)),
    for few narrow ones (``k · (d + 16) <= 1024``) a dense one-hot GEMM. No
    sort, no loop over points in Python. Sums are accumulated in ``X``'s dtype
    (the bits depend only on ``X``, ``labels`` and ``k``), then widened to
    float64.

    ``work`` keeps the one-hot matrix between calls (overwritten); without it
    a new one is built (about 20 µs more for the sparse one). When
    :func:`~._distance._assign` computed ``labels`` with the same workspace in
    one transposed block, it left their one-hot matrix there (its equality
    mask, ties cleared); the dense path then uses it instead of building its
    own (identical values, so identical sums).
    """
    counts = np.bincount(labels, minlength=k)
    m = X.shape[0]
    if k * (X.shape[1] + 16) <= _DENSE_ONE_HOT_MAX:
        # Few, narrow clusters: a dense one-hot GEMM costs less than SciPy's per-point loop.
        fused = None if work is None else work.take("assign_onehot", labels)
        if fused is not None and fused.shape == (k, m) and fused.dtype == X.dtype:
            # The (k, m) one-hot matrix _assign left for these labels: the same matrix as
            # below, so the same product.
            return counts, np.asarray(fused @ X, dtype=np.float64)
        if work is None:
            dense = np.zeros((k, m), dtype=X.dtype)
        else:
            dense = work.get("onehot_dense", (m, k, X.dtype), lambda: np.zeros((k, m), dtype=X.dtype))
            dense.fill(0)
        dense[labels, np.arange(m)] = 1
        return counts, np.asarray(dense @ X, dtype=np.float64)
    if work is None:
        onehot = _one_hot(m, k, X.dtype)
    else:
        onehot = work.get("onehot", (m, k, X.dtype), lambda: _one_hot(m, k, X.dtype))
    onehot.indices[:] = labels
    sums = np.asarray(onehot @ X, dtype=np.float64)
    return counts, sums


def _minibatch_step(
    X: np.ndarray,
    labels: np.ndarray,
    centers: np.ndarray,
    weights: np.ndarray,
    gamma: float,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Decay every weight by ``gamma``, then move each center toward its batch mean.

    For every cluster ``j`` with ``m_j > 0`` points of the batch (sum ``S_j``):
    ``w_j ← gamma · w_j + m_j`` and ``μ_j ← μ_j + (S_j − m_j μ_j) / w_j``, which
    is ``μ_j + (m_j / w_j)(x̄_j − μ_j)`` without a division by ``m_j``.

    Parameters
    ----------
    X : ndarray of shape (m, n_features)
        The batch.
    labels : ndarray of shape (m,), int64
        Nearest current center of every row of ``X``.
    centers : ndarray of shape (n_clusters, n_features), float64
    weights : ndarray of shape (n_clusters,), float64
        Decayed point counts ``w``.
    gamma : float in (0, 1]
        Decay of this step (``γ`` per batch, or ``γ^m`` per point).

    Returns
    -------
    centers : ndarray of shape (n_clusters, n_features), float64
        New array; the input is not modified.
    weights : ndarray of shape (n_clusters,), float64
        New array.
    shift : float
        ``max_j ‖Δμ_j‖`` over the clusters that received points (0 if none).
    """
    counts, sums = _cluster_sums(X, labels, centers.shape[0])
    return _apply_sums(counts, sums, centers, weights, gamma)


def _apply_sums(
    counts: np.ndarray,
    sums: np.ndarray,
    centers: np.ndarray,
    weights: np.ndarray,
    gamma: float,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The decayed update from a batch's sufficient statistics (the reduce step).

    What Spark's driver and Flink's model reducer apply to the per-cluster
    (count, vector sum) of a batch; :func:`_minibatch_step` is this after
    :func:`_cluster_sums`, so a batch folded from its statistics and a batch
    fitted from its points give the same model.

    Parameters
    ----------
    counts : ndarray of shape (n_clusters,)
        Points per cluster ``m_j`` (int64 or float64, >= 0).
    sums : ndarray of shape (n_clusters, n_features), float64
        Vector sums ``S_j``.
    centers, weights, gamma
        As for :func:`_minibatch_step`.

    Returns
    -------
    centers, weights, shift
        As for :func:`_minibatch_step`.
    """
    # Counts in float64 first (exact): NumPy's mixed int64 × float64 loop over the (k, d)
    # block casts every element and costs several times the product itself.
    cf = np.asarray(counts, dtype=np.float64)
    w = weights * gamma if gamma != 1.0 else weights.copy()
    w += cf
    # Every row at once, no gathers: a cluster without points has a zero sum and count,
    # so its delta is exactly +0 and its center and weight stay as they are. Its weight
    # may be 0 (never 0 for a cluster with points): divide those rows by 1 instead.
    den = w if np.minimum.reduce(w) > 0 else np.where(w > 0, w, 1.0)
    delta = cf[:, None] * centers
    np.subtract(sums, delta, out=delta)
    delta /= den[:, None]
    new = centers + delta
    shift = float(np.sqrt(np.maximum.reduce(np.einsum("ij,ij->i", delta, delta))))
    return new, w, shift

"""The streaming k-means update kernel: one decayed mini-batch step.

Private, pure kernels of :class:`~streamkm.cluster.StreamingKMeans` (shared by
``partial_fit`` and ``fit``). They assume validated input and modify none of
their arguments. The rule and its derivation are in ``docs/kmeans.md``
(section 5).
"""

from __future__ import annotations

import numpy as np

__all__ = ["_apply_sums", "_cluster_sums", "_minibatch_step"]


def _cluster_sums(X: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster point counts (k,) int64 and sums (k, d) float64.

    Sort-by-label + ``np.add.reduceat``: O(m log m + m d), no loop over points.
    """
    counts = np.bincount(labels, minlength=k)
    # Small unsigned keys let the stable sort use radix sort; take() is the
    # fastest row gather.
    keys = labels.astype(np.uint16) if k <= 2**16 else labels
    order = np.argsort(keys, kind="stable")
    nz = np.flatnonzero(counts)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))[nz]
    sums = np.zeros((k, X.shape[1]), dtype=np.float64)
    sums[nz] = np.add.reduceat(X.take(order, axis=0), starts, axis=0)
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
    w = weights * gamma if gamma != 1.0 else weights.copy()
    w += counts
    nz = np.flatnonzero(counts)
    new = centers.copy()
    delta = (sums[nz] - counts[nz, None] * new[nz]) / w[nz, None]
    new[nz] += delta
    shift = float(np.sqrt(np.einsum("ij,ij->i", delta, delta).max())) if nz.size else 0.0
    return new, w, shift

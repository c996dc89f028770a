"""Greedy k-means++ seeding (D² sampling with local trials).

The first center is drawn uniformly (or proportionally to the sample weights).
Every further center is drawn with probability proportional to
``w_i · D(x_i)²``, the weighted squared distance of a point to its nearest
center chosen so far. The *greedy* variant draws ``n_local_trials``
candidates per step (``2 + ⌊ln k⌋`` by default) and keeps the one that lowers
the potential ``φ = Σ w_i D(x_i)²`` the most.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._distance import _row_norms_sq
from ._validation import (
    check_array,
    check_n_clusters,
    check_positive_int,
    check_random_state,
)

__all__ = ["kmeans_plusplus"]


def _kmeans_plusplus(
    X: np.ndarray,
    n_clusters: int,
    rng: np.random.Generator,
    n_local_trials: int | None = None,
    x_sq: np.ndarray | None = None,
    sample_weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-means++ kernel; assumes valid input (see :func:`kmeans_plusplus`).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float32 or float64
    n_clusters : int, ``1 <= n_clusters <= n_samples``
    rng : numpy.random.Generator
        Advanced by this call; nothing else is modified.
    n_local_trials : int or None
        Candidates per step; ``None`` means ``2 + ⌊ln n_clusters⌋``.
    x_sq : ndarray of shape (n_samples,), optional
        Precomputed squared row norms of ``X``.
    sample_weight : ndarray of shape (n_samples,), optional
        Non-negative weights (not all zero).

    Returns
    -------
    centers : ndarray of shape (n_clusters, n_features), dtype of ``X``
        Copies of the chosen rows.
    indices : ndarray of shape (n_clusters,), int64
        Row index of each center in ``X``.

    Notes
    -----
    Cost: ``O(n · k · n_local_trials · d)`` (one small GEMM per step) and
    ``O(n · n_local_trials)`` extra memory. If every point already coincides
    with a chosen center (fewer distinct points than ``n_clusters``), the
    remaining centers are drawn by weight alone and may repeat points.
    """
    n, d = X.shape
    dtype = X.dtype
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(n_clusters))
    if x_sq is None:
        x_sq = _row_norms_sq(X)
    x_sq = np.asarray(x_sq, dtype=dtype)
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)

    centers = np.empty((n_clusters, d), dtype=dtype)
    indices = np.empty(n_clusters, dtype=np.int64)

    def sq_dist_to(idx: np.ndarray) -> np.ndarray:
        """(len(idx), n) squared distances from rows ``idx`` to every point."""
        cand = X[idx]
        D: np.ndarray = np.matmul(cand, X.T)  # (t, n)
        D *= -2
        D += x_sq
        D += x_sq[idx][:, None]
        np.maximum(D, 0, out=D)
        return D

    def potentials(D: np.ndarray) -> np.ndarray:
        if w is None:
            pot: np.ndarray = D.sum(axis=1, dtype=np.float64)
            return pot
        return np.array([np.dot(row.astype(np.float64), w) for row in D])

    def draw(closest: np.ndarray, size: int) -> np.ndarray:
        mass = closest.astype(np.float64) if w is None else closest * w
        cum = np.cumsum(mass)
        total = cum[-1]
        if not total > 0:  # all points sit on chosen centers
            cum = np.cumsum(np.ones(n) if w is None else w)
            total = cum[-1]
        r = rng.random(size) * total
        picks: np.ndarray = np.minimum(np.searchsorted(cum, r, side="right"), n - 1)
        return picks

    if w is None:
        first = int(rng.integers(n))
    else:
        first = int(draw(np.ones(n, dtype=dtype), 1)[0])
    indices[0] = first
    centers[0] = X[first]
    closest = sq_dist_to(np.array([first]))[0]
    for c in range(1, n_clusters):
        cand = draw(closest, n_local_trials)
        D = sq_dist_to(cand)
        np.minimum(D, closest, out=D)
        best = int(np.argmin(potentials(D)))
        closest = D[best]
        indices[c] = cand[best]
        centers[c] = X[cand[best]]
    return centers, indices


def kmeans_plusplus(
    X: Any,
    n_clusters: int,
    *,
    seed: Any = None,
    n_local_trials: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose initial k-means centers by greedy k-means++.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Finite numeric data (float64 kept, everything else float32).
    n_clusters : int
        Number of centers, ``1 <= n_clusters <= n_samples``.
    seed : None, int, SeedSequence or numpy.random.Generator, default=None
        Seed for ``np.random.default_rng``.
    n_local_trials : int or None, default=None
        Candidates drawn per step; the one that lowers the potential most is
        kept. ``None`` means ``2 + ⌊ln n_clusters⌋``; ``1`` is plain k-means++.

    Returns
    -------
    centers : ndarray of shape (n_clusters, n_features)
    indices : ndarray of shape (n_clusters,), int64
        ``centers == X[indices]``.

    Raises
    ------
    ValueError, TypeError
        On invalid ``X``, ``n_clusters > n_samples`` or bad hyperparameters.

    References
    ----------
    D. Arthur and S. Vassilvitskii, "k-means++: The Advantages of Careful
    Seeding", SODA 2007 (plain k-means++ is O(log k)-competitive in
    expectation; the greedy local trials are discussed in their Section 6).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0, 0], [0, 1], [10, 10], [10, 11]], dtype=np.float32)
    >>> centers, idx = kmeans_plusplus(X, 2, seed=0)
    >>> sorted(int(i) // 2 for i in idx)   # one center in each pair
    [0, 1]
    """
    X = check_array(X)
    k = check_n_clusters(n_clusters, X.shape[0])
    if n_local_trials is not None:
        n_local_trials = check_positive_int("n_local_trials", n_local_trials)
    rng = check_random_state(seed)
    return _kmeans_plusplus(X, k, rng, n_local_trials=n_local_trials)

"""Choosing the number of clusters: silhouette, elbow (knee) and BIC.

Every candidate ``k`` is fitted with :class:`~streamkm.cluster.KMeans`
(greedy k-means++ seeding, ``n_init`` runs), then scored:

``"silhouette"``
    Mean silhouette ``s_i = (b_i − a_i) / max(a_i, b_i)`` of a uniform sample
    of at most ``sample_size`` points (labels from the model fitted on all of
    ``X``), where ``a_i`` is the mean distance to the other sampled points of
    its cluster and ``b_i`` the smallest mean distance to another cluster.
    Computed in row chunks as ``(rows, s)`` distance blocks times a one-hot
    ``(s, k)`` matrix, so memory is bounded by ``memory_budget_bytes``.
    Highest wins.
``"elbow"``
    ``log J(k)`` (relative improvement) is normalised to the unit square and
    the knee is the ``k`` farthest below the chord from the first to the last
    point (the Kneedle difference curve). On the linear scale the chord is
    dominated by the huge drop from ``k = 1`` and picks too small a ``k``
    when the true clusters differ in separation. Scores are ``J(k)``.
``"bic"``
    Bayesian information criterion of a hard-assignment mixture of identical
    spherical Gaussians (X-means, Pelleg & Moore 2000), with the per-dimension
    pooled variance ``σ² = J / (d (n − k))``::

        log L = Σ_j n_j log(n_j / n) − (n d / 2) log(2π σ²) − d (n − k) / 2
        BIC   = log L − (p / 2) log n,      p = (k − 1) + k d + 1

    Highest wins.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._distance import DEFAULT_MEMORY_BUDGET, _chunk_rows, _row_norms_sq, _sq_distances
from ._validation import (
    check_array,
    check_in,
    check_positive_int,
    check_random_state,
)
from .kmeans import KMeans

__all__ = ["select_k", "SelectKResult"]

METHODS = ("silhouette", "elbow", "bic")


@dataclass(frozen=True)
class SelectKResult:
    """Outcome of :func:`select_k`.

    Attributes
    ----------
    k : int
        The chosen number of clusters.
    scores : dict of int to float
        Score of every candidate: mean silhouette, ``J(k)`` (elbow) or BIC.
    method : str
        ``"silhouette"``, ``"elbow"`` or ``"bic"``.
    inertias : dict of int to float
        ``J(k)`` of the fitted model for every candidate.
    """

    k: int
    scores: dict[int, float]
    method: str
    inertias: dict[int, float] = field(default_factory=dict)


def _silhouette(
    X: np.ndarray, labels: np.ndarray, n_clusters: int, memory_budget_bytes: int
) -> float:
    """Mean silhouette of the rows of ``X`` (the sample) with ``labels``."""
    s = X.shape[0]
    counts = np.bincount(labels, minlength=n_clusters).astype(np.float64)
    if np.count_nonzero(counts) < 2:
        return -1.0  # undefined for one cluster: never preferred
    onehot = np.zeros((s, n_clusters), dtype=np.float64)
    onehot[np.arange(s), labels] = 1.0
    x_sq = _row_norms_sq(X)
    rows = _chunk_rows(s, s, 8, memory_budget_bytes)
    sil = np.empty(s, dtype=np.float64)
    for start in range(0, s, rows):
        stop = min(start + rows, s)
        D = _sq_distances(X[start:stop], X, x_sq=x_sq[start:stop], c_sq=x_sq)
        D = np.sqrt(D, out=D).astype(np.float64)
        D[np.arange(stop - start), np.arange(start, stop)] = 0.0  # self-distance
        sums = D @ onehot  # (rows, k) total distance to every cluster
        own = labels[start:stop]
        r = np.arange(stop - start)
        own_n = counts[own] - 1.0
        a = np.divide(sums[r, own], own_n, out=np.zeros(stop - start), where=own_n > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_other = sums / counts
        mean_other[:, counts == 0] = np.inf
        mean_other[r, own] = np.inf
        b = mean_other.min(axis=1)
        denom = np.maximum(a, b)
        val = np.divide(b - a, denom, out=np.zeros(stop - start), where=denom > 0)
        val[own_n == 0] = 0.0  # singleton clusters score 0 (Rousseeuw's convention)
        sil[start:stop] = val
    return float(sil.mean())


def _knee(ks: np.ndarray, J: np.ndarray) -> int:
    """Index of the knee of a decreasing curve: farthest below the chord.

    Works on ``log J`` (relative improvement), normalised to the unit square.
    """
    floor = max(float(np.max(J)) * 1e-12, np.finfo(np.float64).tiny)
    L = np.log(np.maximum(np.asarray(J, dtype=np.float64), floor))
    x = (ks - ks[0]) / (ks[-1] - ks[0])
    span = L[0] - L[-1]
    if not span > 0:
        return 0  # flat curve: no gain from more clusters
    y = (L - L[-1]) / span  # 1 at the first k, 0 at the last
    chord = 1.0 - x
    return int(np.argmax(chord - y))


def _bic(J: float, labels_counts: np.ndarray, n: int, d: int, k: int) -> float:
    """BIC of identical spherical Gaussians with hard assignments."""
    sigma2 = J / (d * (n - k))
    sigma2 = max(sigma2, np.finfo(np.float64).tiny)
    nj = labels_counts[labels_counts > 0].astype(np.float64)
    loglik = float(
        np.sum(nj * np.log(nj / n))
        - 0.5 * n * d * math.log(2.0 * math.pi * sigma2)
        - 0.5 * d * (n - k)
    )
    p = (k - 1) + k * d + 1
    return loglik - 0.5 * p * math.log(n)


def select_k(
    X: Any,
    k_values: Iterable[int],
    *,
    method: str = "silhouette",
    seed: Any = None,
    sample_size: int = 2000,
    n_init: int = 3,
    max_iter: int = 300,
    tol: float = 1e-4,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
) -> SelectKResult:
    """Pick the number of clusters among ``k_values``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    k_values : iterable of int
        Distinct candidates, each in ``[1, n_samples − 1]`` (``>= 2`` for
        silhouette); at least three for ``"elbow"``.
    method : {"silhouette", "elbow", "bic"}, default="silhouette"
    seed : None, int or numpy.random.Generator, default=None
        Seeds the k-means runs and the silhouette sample.
    sample_size : int, default=2000
        Points used for the silhouette (``O(sample_size²)`` distances).
    n_init, max_iter, tol, memory_budget_bytes
        Passed to :class:`KMeans` for every candidate.

    Returns
    -------
    SelectKResult
        ``k`` (ties go to the smallest), ``scores`` per candidate, ``method``
        and ``inertias``.

    Notes
    -----
    All three assume roughly spherical, similarly sized clusters (the k-means
    model). Silhouette and BIC can compare any set of ``k``; the elbow is
    relative to the range searched. See ``docs/kmeans.md``.

    References
    ----------
    P. J. Rousseeuw, "Silhouettes: a graphical aid to the interpretation and
    validation of cluster analysis", J. Comput. Appl. Math. 20, 1987.
    V. Satopää, J. Albrecht, D. Irwin and B. Raghavan, "Finding a 'Kneedle'
    in a Haystack", ICDCS Workshops 2011.
    D. Pelleg and A. Moore, "X-means: Extending K-means with Efficient
    Estimation of the Number of Clusters", ICML 2000.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> centers = np.array([[0, 0], [10, 0], [0, 10]])
    >>> X = np.concatenate([c + rng.normal(size=(100, 2)) for c in centers])
    >>> select_k(X, range(1, 7), method="bic", seed=0).k
    3
    >>> select_k(X, range(2, 7), method="silhouette", seed=0).k
    3
    """
    X = check_array(X)
    n, d = X.shape
    method = check_in("method", method, METHODS)
    sample_size = check_positive_int("sample_size", sample_size, minimum=2)
    if isinstance(k_values, (str, bytes)) or not hasattr(k_values, "__iter__"):
        raise TypeError(f"k_values must be an iterable of ints; got {k_values!r}")
    ks = [check_positive_int("k_values element", k) for k in k_values]
    if not ks:
        raise ValueError("k_values is empty")
    if len(set(ks)) != len(ks):
        raise ValueError(f"k_values has duplicates: {ks}")
    ks = sorted(ks)
    if ks[-1] > n - 1:
        raise ValueError(
            f"every k must be <= n_samples - 1 = {n - 1}; got k={ks[-1]}"
        )
    if method == "silhouette" and ks[0] < 2:
        raise ValueError(f"silhouette needs k >= 2; got k={ks[0]}")
    if method == "elbow" and len(ks) < 3:
        raise ValueError(f"elbow needs at least 3 values of k; got {ks}")
    # KMeans validates n_init / max_iter / tol / memory_budget_bytes; check
    # them now so nothing runs on a doomed call.
    KMeans(
        1, n_init=n_init, max_iter=max_iter, tol=tol,
        memory_budget_bytes=memory_budget_bytes,
    )._check_params()
    rng = check_random_state(seed)

    sample = None
    if method == "silhouette":
        sample = np.sort(rng.choice(n, size=min(sample_size, n), replace=False))
    scores: dict[int, float] = {}
    inertias: dict[int, float] = {}
    for k in ks:
        km = KMeans(
            k, n_init=n_init, max_iter=max_iter, tol=tol, seed=rng,
            memory_budget_bytes=memory_budget_bytes,
        ).fit(X)
        inertias[k] = km.inertia_
        if method == "silhouette":
            scores[k] = _silhouette(X[sample], km.labels_[sample], k, memory_budget_bytes)
        elif method == "bic":
            scores[k] = _bic(km.inertia_, np.bincount(km.labels_, minlength=k), n, d, k)
        else:
            scores[k] = km.inertia_
    if method == "elbow":
        J = np.array([scores[k] for k in ks])
        best = ks[_knee(np.array(ks, dtype=np.float64), J)]
    else:
        vals = np.array([scores[k] for k in ks])
        best = ks[int(np.argmax(vals))]
    return SelectKResult(k=int(best), scores=scores, method=method, inertias=inertias)

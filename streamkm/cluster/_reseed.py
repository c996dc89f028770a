"""Reseeding for streaming k-means: D² re-placement and reservoir reclustering.

:func:`compute_reseed` (public, validated) and its kernel propose new centers
by greedy k-means++ + Lloyd on a reservoir sample; :func:`_d2_sample` picks
replacement points for dying clusters by D² sampling (k-means++ continued).
Everything here is pure: it reads its arguments and modifies none of them, so
:class:`~streamkm.cluster.StreamingKMeans` may run it in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._distance import _assign, _min_sq_dist, _row_norms_sq
from ._lloyd import _lloyd
from ._validation import check_array, check_float, check_positive_int, check_random_state
from .kmeans_plusplus import _kmeans_plusplus

__all__ = ["ReseedResult", "compute_reseed", "_compute_reseed", "_d2_sample", "_seed_and_refine"]

#: Relative-decrease tolerance of the Lloyd runs at initialization and reseeding.
_LLOYD_TOL = 1e-4


def _d2_sample(
    S: np.ndarray, centers: np.ndarray, n: int, rng: np.random.Generator, memory_budget_bytes: int
) -> np.ndarray:
    """Draw ``n`` rows of ``S`` by D² sampling relative to ``centers`` and to
    the rows already drawn (k-means++ continued). Returns row indices (n,).

    A loop over the ``n`` draws (not over points); each draw after the first
    is O(len(S) · d), in row blocks that stay in cache (the distances to the
    last draw are not needed and not computed).
    """
    if centers.shape[0]:
        d2 = _min_sq_dist(S, centers, memory_budget_bytes=memory_budget_bytes).astype(np.float64)
    else:
        d2 = np.ones(S.shape[0])
    picks = np.empty(n, dtype=np.int64)
    block = min(S.shape[0], 2048)
    diff = np.empty((block, S.shape[1]), dtype=S.dtype)
    for t in range(n):
        cum = np.cumsum(d2)
        total = cum[-1]
        if total > 0:
            i = int(np.searchsorted(cum, rng.random() * total, side="right"))
            i = min(i, S.shape[0] - 1)
        else:  # every point coincides with a center
            i = int(rng.integers(S.shape[0]))
        picks[t] = i
        if t + 1 == n:
            break
        for a in range(0, S.shape[0], block):
            b = min(a + block, S.shape[0])
            D = diff[: b - a]
            np.subtract(S[a:b], S[i], out=D)
            np.minimum(d2[a:b], np.einsum("ij,ij->i", D, D), out=d2[a:b])
    return picks


def _seed_and_refine(
    X: np.ndarray, k: int, rng: np.random.Generator, n_init: int, max_iter: int,
    memory_budget_bytes: int, x_sq: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Best (lowest J) of ``n_init`` runs of greedy k-means++ + Lloyd on ``X``.

    Returns (centers (k, d) dtype of X, labels (n,) int64, inertia J).
    """
    if x_sq is None:
        x_sq = _row_norms_sq(X)
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for _ in range(n_init):
        seeds, _ = _kmeans_plusplus(X, k, rng, x_sq=x_sq)
        centers, labels, inertia, _, _ = _lloyd(
            X, seeds, max_iter=max_iter, tol=_LLOYD_TOL,
            memory_budget_bytes=memory_budget_bytes, rng=rng, x_sq=x_sq,
        )
        if best is None or inertia < best[2]:
            best = (centers, labels, float(inertia))
    assert best is not None  # n_init >= 1
    return best


@dataclass(frozen=True, eq=False)
class ReseedResult:
    """Outcome of :func:`compute_reseed`, applied by :meth:`StreamingKMeans.apply_reseed`.

    Attributes
    ----------
    accepted : bool
        Whether the candidate lowers the reservoir objective by at least
        ``min_gain`` (relative).
    centers : ndarray of shape (n_clusters, n_features), float64
        Candidate centers (k-means++ + Lloyd on the reservoir).
    counts : ndarray of shape (n_clusters,), float64
        Reservoir points per candidate center, scaled to ``total_weight``.
    objective_before, objective_after : float
        Mean squared distance of the reservoir to the current / candidate centers.
    n_samples : int
        Number of reservoir points used.
    """

    accepted: bool
    centers: np.ndarray
    counts: np.ndarray
    objective_before: float
    objective_after: float
    n_samples: int


def compute_reseed(
    reservoir_sample: Any,
    centers: Any,
    *,
    n_clusters: int | None = None,
    rng: Any = None,
    min_gain: float = 0.01,
    total_weight: float = 1.0,
    n_init: int = 3,
    max_iter: int = 20,
    memory_budget_bytes: int = 64 * 2**20,
) -> ReseedResult:
    """Propose new centers from a reservoir sample (the heavy, pure part of a reseed).

    Runs greedy k-means++ and Lloyd on the sample and compares the sample's
    mean squared distance to the candidate with that to the current centers.
    Reads its arguments only, so it can run in a worker thread while the model
    keeps streaming; :meth:`StreamingKMeans.apply_reseed` then installs the
    result atomically. Deterministic given ``rng`` and the inputs.

    Parameters
    ----------
    reservoir_sample : array-like of shape (n_samples, n_features)
        Points to recluster; ``n_samples >= n_clusters``.
    centers : array-like of shape (n_clusters, n_features)
        Current centers.
    n_clusters : int, optional
        Must equal ``len(centers)`` when given.
    rng : None, int or numpy.random.Generator
        Randomness for k-means++ and Lloyd's empty-cluster handling.
    min_gain : float in [0, 1), default=0.01
        Accept only if ``objective_after <= (1 − min_gain) · objective_before``.
    total_weight : float >= 0, default=1.0
        The candidate's ``counts`` (reservoir assignment counts) are scaled to
        sum to this, so the model keeps its total weight.
    n_init : int, default=3
        Independent k-means++ + Lloyd runs; the lowest objective is the candidate.
    max_iter : int, default=20
        Lloyd iterations per run.
    memory_budget_bytes : int
        Bound on one distance block.

    Returns
    -------
    ReseedResult

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> S = np.concatenate([rng.normal(c, 0.1, size=(50, 2)) for c in (0, 5, 10)])
    >>> bad = np.array([[0.0, 0.0], [0.1, 0.1], [7.5, 7.5]])
    >>> r = compute_reseed(S, bad, rng=0, total_weight=300.0)
    >>> r.accepted, bool(r.objective_after < 0.05 < r.objective_before)
    (True, True)
    >>> sorted(np.round(r.counts).astype(int).tolist())
    [100, 100, 100]
    """
    S = check_array(reservoir_sample, name="reservoir_sample")
    C = check_array(centers, name="centers", n_features=S.shape[1])
    k = C.shape[0]
    if n_clusters is not None and check_positive_int("n_clusters", n_clusters) != k:
        raise ValueError(f"n_clusters={n_clusters} does not match centers of shape {C.shape}")
    if S.shape[0] < k:
        raise ValueError(
            f"reservoir_sample has {S.shape[0]} points; need at least n_clusters={k} to reseed"
        )
    min_gain = check_float("min_gain", min_gain, low=0.0, high=1.0, high_inclusive=False)
    total_weight = check_float("total_weight", total_weight, low=0.0)
    n_init = check_positive_int("n_init", n_init)
    max_iter = check_positive_int("max_iter", max_iter)
    memory_budget_bytes = check_positive_int("memory_budget_bytes", memory_budget_bytes)
    gen = check_random_state(rng)
    return _compute_reseed(S, C.astype(np.float64), gen, min_gain, total_weight, n_init,
                           max_iter, memory_budget_bytes)


def _compute_reseed(
    S: np.ndarray,
    centers64: np.ndarray,
    rng: np.random.Generator,
    min_gain: float,
    total_weight: float,
    n_init: int,
    max_iter: int,
    memory_budget_bytes: int,
) -> ReseedResult:
    """Kernel of :func:`compute_reseed`; assumes valid input, modifies nothing."""
    n, k = S.shape[0], centers64.shape[0]
    x_sq = _row_norms_sq(S)
    _, d_before = _assign(S, centers64.astype(S.dtype), x_sq=x_sq,
                          memory_budget_bytes=memory_budget_bytes)
    before = float(d_before.mean(dtype=np.float64))
    cand, labels, inertia = _seed_and_refine(S, k, rng, n_init, max_iter, memory_budget_bytes,
                                             x_sq=x_sq)
    after = inertia / n
    counts = np.bincount(labels, minlength=k).astype(np.float64) * (total_weight / n)
    accepted = bool(before > 0 and after <= (1.0 - min_gain) * before)
    return ReseedResult(accepted, np.asarray(cand, dtype=np.float64), counts, before, after, n)

"""Reseeding for streaming k-means: D² re-placement and reservoir reclustering.

:func:`compute_reseed` (public, validated) and its kernel propose new centers
by greedy k-means++ + Lloyd on a reservoir sample; :func:`_d2_sample` picks
replacement points for dying clusters by D² sampling (k-means++ continued).
Everything here is pure: it reads its arguments and modifies none of them, so
:class:`~streamkm.cluster.StreamingKMeans` may run it in a worker thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._distance import _assign, _min_sq_dist, _neg2_t, _row_norms_sq
from ._lloyd import _lloyd
from ._validation import check_array, check_float, check_positive_int, check_random_state
from .kmeans_plusplus import _kmeans_plusplus

__all__ = ["ReseedResult", "compute_reseed", "_compute_reseed", "_d2_sample", "_seed_and_refine"]

#: Relative-decrease tolerance of the Lloyd runs at initialization and reseeding.
_LLOYD_TOL = 1e-4

#: Below this many multiply-adds (reservoir rows × centers × features) :func:`_d2_sample`
#: computes every D² weight (one GEMM); above it, it draws by rejection (see there).
_D2_EXACT_MAX_WORK = 2**22
#: Proposals per rejection round of :func:`_d2_sample` (at least; more for many draws).
_D2_ROUND = 64


def _d2_sample(
    S: np.ndarray, centers: np.ndarray, n: int, rng: np.random.Generator, memory_budget_bytes: int,
    *, s_sq: np.ndarray | None = None, neg2_ct: np.ndarray | None = None,
    c_sq: np.ndarray | None = None,
) -> np.ndarray:
    """Draw ``n`` rows of ``S`` by D² sampling relative to ``centers`` and to
    the rows already drawn (k-means++ continued). Returns row indices (n,).

    Row ``i`` is drawn with probability ``D²(i) / Σ D²``, ``D²(i)`` its squared
    distance to the nearest of ``centers`` and of the rows drawn before.
    Computing every ``D²(i)`` is one GEMM of ``len(S) · k · d`` multiply-adds,
    several times a mini-batch update's when the reservoir is large; above
    :data:`_D2_EXACT_MAX_WORK` the draws are made by rejection instead, which
    gives the same distribution and touches ``S`` once, in O(len(S) · d):
    with ``c`` the center nearest to the centers' mean, ``U(i) = ‖s_i − c‖²``
    (one GEMV, by the expansion ``‖s‖² − 2 s·c + ‖c‖²``) bounds ``D²(i)``
    (``c`` is one of the centers; a cheaper, looser bound from the norms
    alone is tried first, see :func:`_d2_rejection`); a proposal ``i ∝ U(i)``
    is accepted with probability ``D²(i) / U(i)``, and only the proposals need their ``D²``
    (O(k · d) each, in rounds of :data:`_D2_ROUND`), so accepted rows are
    distributed exactly ∝ ``D²``. ``D²`` of a proposal is capped at its ``U``
    (the distance to ``c`` computed in another order, so it can differ in the
    last bits). When the acceptance rate is too low (``len(S) / 4`` proposals
    spent, e.g. every point near a center but a few far outliers), the
    remaining draws fall back to the full computation, also exact, so the
    mixture is. Either way the picks are a function of the arguments and of
    ``rng`` alone (nothing is cached between calls), so a model restored from
    its state draws the same rows.

    A loop over the ``n`` draws (not over points); each draw of the full
    computation after the first is O(len(S) · d), in row blocks that stay in
    cache (the distances to the last draw are not needed and not computed).

    ``s_sq``, ``neg2_ct`` and ``c_sq`` are optional precomputed
    :func:`~._distance._row_norms_sq` of ``S``, :func:`~._distance._neg2_t` and
    :func:`~._distance._row_norms_sq` of ``centers`` (same values as computed
    here). ``neg2_ct`` and ``c_sq`` may also describe a superset of ``centers``
    whose extra entries have ``c_sq = +inf`` (they never are the nearest);
    :class:`~.streaming_kmeans.StreamingKMeans` passes its operand for all k
    centers that way, the dying ones masked.
    """
    N, d = S.shape
    k = centers.shape[0]
    picks = np.empty(n, dtype=np.int64)
    done = 0
    if k and N * k * d > _D2_EXACT_MAX_WORK:
        done = _d2_rejection(S, centers, n, rng, picks, s_sq, neg2_ct, c_sq)
        if done == n:
            return picks
    if k:
        d2 = _min_sq_dist(S, centers, memory_budget_bytes=memory_budget_bytes).astype(np.float64)
    else:
        d2 = np.ones(N)
    block = min(N, 2048)
    diff = np.empty((block, d), dtype=S.dtype)

    def lower(i: int) -> None:  # d2 ← min(d2, ‖s − S[i]‖²)
        for a in range(0, N, block):
            b = min(a + block, N)
            D = diff[: b - a]
            np.subtract(S[a:b], S[i], out=D)
            np.minimum(d2[a:b], np.einsum("ij,ij->i", D, D), out=d2[a:b])

    for i in picks[:done]:  # drawn by rejection before the fallback
        lower(int(i))
    for t in range(done, n):
        cum = np.cumsum(d2)
        total = cum[-1]
        if total > 0:
            i = int(np.searchsorted(cum, rng.random() * total, side="right"))
            i = min(i, N - 1)
        else:  # every point coincides with a center
            i = int(rng.integers(N))
        picks[t] = i
        if t + 1 == n:
            break
        lower(i)
    return picks


def _d2_rejection(S: np.ndarray, centers: np.ndarray, n: int, rng: np.random.Generator,
                  picks: np.ndarray, s_sq: np.ndarray | None, neg2_ct: np.ndarray | None,
                  c_sq: np.ndarray | None) -> int:
    """Draws of :func:`_d2_sample` by rejection into ``picks``; returns how many were made.

    Two bounds ``U ≥ D²``, each tried until its budget of proposals is spent:
    first ``(‖s‖ + ‖c₀‖)²`` with ``c₀`` the center of least norm (from the
    norms alone, no pass over ``S``; tight when the data are centred, one round
    of proposals), then ``‖s − c‖²`` (one GEMV, see :func:`_d2_sample`) until
    ``len(S) / 4`` proposals. Returns early when both are spent, or when a
    bound is 0 everywhere.
    """
    N = S.shape[0]
    if s_sq is None:
        s_sq = _row_norms_sq(S)
    if neg2_ct is None:
        neg2_ct = _neg2_t(centers, S.dtype)
    if c_sq is None:
        c_sq = _row_norms_sq(centers)
    round_size = max(_D2_ROUND, 16 * n)
    # (‖s‖ + ‖c₀‖)² ≥ ‖s − c₀‖² (triangle inequality), with a margin for rounding.
    U = np.sqrt(s_sq, dtype=np.float64)
    U += math.sqrt(max(float(c_sq.min()), 0.0))
    np.square(U, out=U)
    U *= 1.0 + 1e-6
    t = _d2_rounds(S, U, n, rng, picks, 0, round_size, round_size, s_sq, neg2_ct, c_sq)
    if t == n:
        return t
    # ‖s − c‖² with c the center nearest to the centers' mean.
    mean = centers.mean(axis=0)
    j = int(np.argmin(c_sq + neg2_ct.T @ mean))
    U = (S @ np.ascontiguousarray(neg2_ct[:, j])).astype(np.float64)
    U += s_sq
    U += float(c_sq[j])
    np.maximum(U, 0.0, out=U)
    return _d2_rounds(S, U, n, rng, picks, t, round_size, N // 4, s_sq, neg2_ct, c_sq)


def _d2_rounds(S: np.ndarray, U: np.ndarray, n: int, rng: np.random.Generator, picks: np.ndarray,
               t: int, round_size: int, budget: int, s_sq: np.ndarray, neg2_ct: np.ndarray,
               c_sq: np.ndarray) -> int:
    """Rejection rounds of :func:`_d2_rejection` with proposals ``∝ U``: fills ``picks[t:]``
    until ``n`` are drawn or ``budget`` proposals are spent; returns the new ``t``."""
    N = S.shape[0]
    cum = np.cumsum(U)
    total = float(cum[-1])
    if not total > 0:
        return t
    spent = 0
    while t < n and spent < budget:
        m = min(round_size, budget - spent)
        idx = np.minimum(np.searchsorted(cum, rng.random(m) * total, side="right"), N - 1)
        u = rng.random(m)
        spent += m
        P = S[idx]
        # D² of the proposals: nearest center (GEMM expansion), capped at U, then the rows
        # drawn so far (difference vectors).
        D = P @ neg2_ct
        D += c_sq
        d2 = np.minimum.reduce(D, axis=1).astype(np.float64)
        d2 += s_sq[idx]
        bound = U[idx]
        np.clip(d2, 0.0, bound, out=d2)
        for p in picks[:t]:
            diffp = P - S[p]
            np.minimum(d2, np.einsum("ij,ij->i", diffp, diffp), out=d2)
        pos = 0
        while t < n:
            hit = np.flatnonzero(u[pos:] * bound[pos:] < d2[pos:])
            if hit.size == 0:
                break
            a = pos + int(hit[0])
            picks[t] = idx[a]
            t += 1
            pos = a + 1
            if t < n and pos < m:
                diffp = P[pos:] - P[a]
                np.minimum(d2[pos:], np.einsum("ij,ij->i", diffp, diffp), out=d2[pos:])
    return t


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

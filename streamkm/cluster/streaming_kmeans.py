"""Streaming mini-batch k-means with decay, dying-cluster replacement and
reservoir reseeding.

Update rule
-----------
:class:`StreamingKMeans` uses the Spark/Flink form of Sculley's (2010)
mini-batch rule. For a batch of ``m`` points, with assignments to the current
centers ``μ`` and weights ``w`` (decayed point counts):

1. **decay** every cluster: ``w_j ← γ_eff · w_j`` with ``γ_eff = γ`` per batch
   (``time_unit="batches"``) or ``γ_eff = γ^m`` (``time_unit="points"``);
2. for every cluster with ``m_j > 0`` assigned points of batch mean ``x̄_j``:
   ``w_j ← w_j + m_j`` and ``μ_j ← μ_j + (m_j / w_j) (x̄_j − μ_j)``.

With ``γ = 1`` this is exactly the running mean of all points ever assigned to
the cluster (learning rate ``η = 1 / count`` per point, Sculley's rule); with
``γ < 1`` it is an exponentially weighted mean in which a point's weight halves
every ``half_life`` batches (or points). ``half_life = h`` sets
``γ = 0.5^(1/h)``; ``decay`` sets ``γ`` directly; they are mutually exclusive.

Choosing the half-life: the centers average roughly the last ``h / ln 2``
batches (``h / ln 2`` points), so the steady-state noise of a center shrinks
like ``1/sqrt(effective count)`` while its lag after an abrupt change decays
like ``2^(−t/h)``: after ``3h`` the old regime still holds 1/8 of the weight.
Pick ``h`` a few times shorter than the time scale of the drift you want to
follow and long enough that ``h / ln 2 · m / k`` points per cluster give a
stable mean. ``γ = 1`` never forgets.

Everything is vectorized: assignment is one chunked GEMM (``_assign``), the
per-cluster sums are a sort + ``np.add.reduceat`` (no Python loop over points).
Centers and weights are kept in float64 (``k × d`` is tiny); assignment runs in
the data dtype (float32 by default).

References
----------
.. [1] D. Sculley, "Web-scale k-means clustering", Proc. WWW 2010, 1177-1178.
.. [2] D. Arthur and S. Vassilvitskii, "k-means++: the advantages of careful
   seeding", Proc. SODA 2007, 1027-1035.
.. [3] K.-H. Li, "Reservoir-sampling algorithms of time complexity
   O(n(1 + log(N/n)))", ACM TOMS 20(4), 481-493, 1994.
.. [4] C. C. Aggarwal, "On biased reservoir sampling in the presence of stream
   evolution", Proc. VLDB 2006.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._distance import _assign, _row_norms_sq, _sq_distances
from ._validation import (
    check_array,
    check_float,
    check_in,
    check_positive_int,
    check_random_state,
)
from .kmeans import _lloyd
from .kmeans_plusplus import _kmeans_plusplus
from .reservoir import TimeBiasedReservoir, UniformReservoir, reservoir_from_state

__all__ = ["StreamingKMeans", "ReseedResult", "compute_reseed"]

_STATE_FORMAT = "streamkm.StreamingKMeans"
_STATE_VERSION = 1
_LLOYD_TOL = 1e-4

#: Hyperparameters, in constructor order (also the ``params`` of a state_dict).
_PARAMS = (
    "n_clusters", "decay", "half_life", "time_unit", "reservoir_size", "reservoir",
    "reseed_interval", "reseed_min_gain", "dying_threshold", "init_size", "n_init", "max_iter",
    "ewm_alpha", "memory_budget_bytes", "seed",
)


# ---------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------
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


def _d2_sample(
    S: np.ndarray, centers: np.ndarray, n: int, rng: np.random.Generator, memory_budget_bytes: int
) -> np.ndarray:
    """Draw ``n`` rows of ``S`` by D² sampling relative to ``centers`` and to
    the rows already drawn (k-means++ continued). Returns row indices (n,).

    A loop over the ``n`` draws (not over points); each draw is O(len(S) · d).
    """
    if centers.shape[0]:
        _, d2 = _assign(S, centers, memory_budget_bytes=memory_budget_bytes)
        d2 = d2.astype(np.float64)
    else:
        d2 = np.ones(S.shape[0])
    picks = np.empty(n, dtype=np.int64)
    for t in range(n):
        cum = np.cumsum(d2)
        total = cum[-1]
        if total > 0:
            i = int(np.searchsorted(cum, rng.random() * total, side="right"))
            i = min(i, S.shape[0] - 1)
        else:  # every point coincides with a center
            i = int(rng.integers(S.shape[0]))
        picks[t] = i
        diff = S - S[i]
        np.minimum(d2, np.einsum("ij,ij->i", diff, diff), out=d2)
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
    best = None
    for _ in range(n_init):
        seeds, _ = _kmeans_plusplus(X, k, rng, x_sq=x_sq)
        centers, labels, inertia, _, _ = _lloyd(
            X, seeds, max_iter=max_iter, tol=_LLOYD_TOL,
            memory_budget_bytes=memory_budget_bytes, rng=rng, x_sq=x_sq,
        )
        if best is None or inertia < best[2]:
            best = (centers, labels, float(inertia))
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


# ---------------------------------------------------------------------------
# Estimator
# ---------------------------------------------------------------------------
class StreamingKMeans:
    """Mini-batch k-means over an unbounded stream, with forgetting.

    Points arrive in batches through :meth:`partial_fit`. Until
    ``max(n_clusters, init_size)`` points have arrived they are buffered; then
    the best of ``n_init`` runs of greedy k-means++ and ``max_iter`` Lloyd
    iterations on the buffer gives the first centers, with weights = the
    cluster sizes. Every later batch applies
    the decayed mini-batch rule below.

    **Update rule** (Spark/Flink form of Sculley 2010) for a batch of ``m``
    points: ``w_j ← γ_eff · w_j`` for every cluster (``γ_eff = γ`` per batch,
    or ``γ^m`` when ``time_unit="points"``), then for each cluster with ``m_j``
    assigned points of mean ``x̄_j``: ``w_j ← w_j + m_j``,
    ``μ_j ← μ_j + (m_j / w_j)(x̄_j − μ_j)``. With ``γ = 1`` every center is
    exactly the running mean of the points ever assigned to it.
    ``half_life = h`` means ``γ = 0.5^(1/h)``: a point's weight halves every
    ``h`` batches (points); the centers average about the last ``h / ln 2``.

    **Dying clusters**: after each batch, clusters whose weight is below
    ``dying_threshold × mean weight`` are re-placed at reservoir points drawn
    by D² sampling (k-means++ continued from the live centers) and given weight
    ``dying_threshold × mean weight``; counted in ``n_dying_replaced_``.

    **Reservoir and reseeding**: every point is offered to a reservoir of
    ``reservoir_size`` points, uniform (Algorithm L) or time-biased with the
    model's half-life (``reservoir="time_biased"``, needs ``γ < 1``). Every
    ``reseed_interval`` points (whenever ``n_seen_`` crosses a multiple of it)
    and on :meth:`reseed`, k-means++ + Lloyd on the reservoir proposes new
    centers; they replace the current ones only if they lower the reservoir's
    mean squared distance by at least ``reseed_min_gain`` (relative). Weights
    are carried over by assigning the reservoir to the new centers and scaling
    to the current total weight. The heavy part is :func:`compute_reseed`
    (pure; a daemon may run it in a thread via :meth:`prepare_reseed`) and
    :meth:`apply_reseed` installs it.

    Everything is deterministic given ``seed`` and the input order, and
    :meth:`state_dict` / :meth:`load_state_dict` round-trip the complete state
    (RNG included): a restored model continues bit-identically.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters ``k``.
    decay : float in (0, 1], default=1.0
        Forgetting factor ``γ`` per time unit. Mutually exclusive with
        ``half_life`` (leave it at 1.0 when ``half_life`` is set).
    half_life : float > 0 or None, default=None
        Half-life of a point's weight in ``time_unit``; ``γ = 0.5^(1/half_life)``.
    time_unit : {"batches", "points"}, default="batches"
        Whether ``γ`` applies once per batch or once per point (``γ^m`` for a
        batch of ``m``; batch-size independent forgetting).
    reservoir_size : int, default=10_000
        Capacity of the reservoir (>= n_clusters).
    reservoir : {"uniform", "time_biased"}, default="uniform"
        Reservoir kind; "time_biased" uses the model's half-life and unit.
    reseed_interval : int or None, default=None
        Reseed whenever ``n_seen_`` crosses a multiple of this (checked after
        every streaming batch, not after the batch that initializes the
        model); None disables.
    reseed_min_gain : float in [0, 1), default=0.01
        Minimum relative improvement of the reservoir objective to accept.
    dying_threshold : float in [0, 1), default=0.01
        Relative weight below which a cluster is re-placed; 0 disables.
    init_size : int or None, default=None
        Points to buffer before initializing; None means ``3 · n_clusters``.
        Whole batches are buffered, so initialization uses every point up to
        and including the batch that reaches the threshold.
    n_init : int, default=3
        k-means++ + Lloyd runs for initialization and for each reseed
        candidate; the one with the lowest objective is used. A single run
        lands in a poor local optimum surprisingly often (two close blobs
        merged, another split), and streaming updates alone rarely escape it.
    max_iter : int, default=20
        Lloyd iterations per run (initialization and reseeding).
    ewm_alpha : float in (0, 1], default=0.1
        Smoothing of ``ewm_objective_``:
        ``ewm ← (1 − α) · ewm + α · last_batch_objective_`` per batch (the
        first value is the initialization objective).
    memory_budget_bytes : int, default=64 MiB
        Bound on one ``(rows, k)`` distance block.
    seed : int or None, default=None
        Seed of ``np.random.default_rng``-style generators (one for the model,
        one for the reservoir, spawned from ``SeedSequence(seed)``).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        Centers in the data dtype (float32 unless the first batch was float64).
    counts_ : ndarray of shape (n_clusters,), float64
        Decayed weights ``w``.
    n_features_in_ : int or None
        Dimension fixed by the first batch.
    is_initialized_ : bool
        False while points are buffered; :meth:`predict` then raises.
    n_seen_, n_batches_ : int
        Points and non-empty batches seen (including buffered ones).
    last_batch_objective_ : float or None
        Mean squared distance of the last batch to its nearest centers, measured
        *before* the batch updated the model (prequential); at initialization,
        the in-sample objective of the initial clustering.
    ewm_objective_ : float or None
        Exponentially weighted mean of ``last_batch_objective_`` (``ewm_alpha``).
    last_center_shift_ : float or None
        ``max_j ‖Δμ_j‖`` of the last update (dying replacement and reseeds not
        included).
    n_reseeds_, n_reseeds_rejected_, n_dying_replaced_ : int
        Accepted reseeds, rejected reseeds, re-placed dying clusters.

    Notes
    -----
    Order of operations in one streaming :meth:`partial_fit`: validate →
    assign to the current centers → record the prequential objective → decay
    → update → offer the batch to the reservoir → replace dying clusters →
    reseed if an interval boundary was crossed.

    Drift. A *moderate* move of the clusters (each cluster's new points still
    nearest to its own center) is tracked by decay alone: the old regime keeps
    ``2^(−t/h)`` of the weight, so a center's lag shrinks by half every ``h``;
    in the tests the batch objective is back within 10 % of the new optimum
    after about ``3h`` batches, while ``γ = 1`` stays far off. A *relocation*
    (clusters jump to unrelated places) cannot be fixed by the update rule, as
    centers that receive no points do not move: it needs ``dying_threshold``
    (clusters deserted for ``≈ h·log2(1/dying_threshold)`` time units are
    re-placed) and above all ``reseed_interval`` with
    ``reservoir="time_biased"``, whose sample forgets the old regime with the
    model's half-life (recovery took 5-7 half-lives in the tests; a uniform
    reservoir keeps old points for ever). With ``γ = 1`` use the uniform
    reservoir (the time-biased one is rejected).

    Local optima. Streaming updates rarely escape a bad initialization (two
    nearby clusters sharing one center while another cluster holds two); the
    ``n_init`` restarts at initialization and a periodic ``reseed_interval``
    are the remedies.

    References
    ----------
    .. [1] D. Sculley, "Web-scale k-means clustering", Proc. WWW 2010.
    .. [2] D. Arthur and S. Vassilvitskii, "k-means++: the advantages of careful
       seeding", Proc. SODA 2007.
    .. [3] K.-H. Li, "Reservoir-sampling algorithms of time complexity
       O(n(1 + log(N/n)))", ACM TOMS 20(4), 1994.
    .. [4] C. C. Aggarwal, "On biased reservoir sampling in the presence of
       stream evolution", Proc. VLDB 2006.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(c, 0.5, size=(300, 2)) for c in (-5, 0, 5)])
    >>> X = X[rng.permutation(len(X))].astype(np.float32)
    >>> km = StreamingKMeans(n_clusters=3, half_life=20, seed=0)
    >>> for batch in np.array_split(X, 9):
    ...     _ = km.partial_fit(batch)
    >>> np.sort(np.round(km.cluster_centers_[:, 0])).astype(int).tolist()
    [-5, 0, 5]
    >>> km.n_seen_, km.n_batches_, km.is_initialized_
    (900, 9, True)
    >>> int(km.predict([[4.8, 5.1]])[0]) == int(km.predict([[5.0, 5.0]])[0])
    True
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        decay: float = 1.0,
        half_life: float | None = None,
        time_unit: str = "batches",
        reservoir_size: int = 10_000,
        reservoir: str = "uniform",
        reseed_interval: int | None = None,
        reseed_min_gain: float = 0.01,
        dying_threshold: float = 0.01,
        init_size: int | None = None,
        n_init: int = 3,
        max_iter: int = 20,
        ewm_alpha: float = 0.1,
        memory_budget_bytes: int = 64 * 2**20,
        seed: int | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.decay = decay
        self.half_life = half_life
        self.time_unit = time_unit
        self.reservoir_size = reservoir_size
        self.reservoir = reservoir
        self.reseed_interval = reseed_interval
        self.reseed_min_gain = reseed_min_gain
        self.dying_threshold = dying_threshold
        self.init_size = init_size
        self.n_init = n_init
        self.max_iter = max_iter
        self.ewm_alpha = ewm_alpha
        self.memory_budget_bytes = memory_budget_bytes
        self.seed = seed
        self._check_params()
        ss = np.random.SeedSequence(seed)
        model_ss, reservoir_ss = ss.spawn(2)
        self._rng = np.random.default_rng(model_ss)
        self._reservoir_rng = np.random.default_rng(reservoir_ss)
        self.is_initialized_ = False
        self.n_features_in_: int | None = None
        self.cluster_centers_: np.ndarray | None = None
        self.counts_: np.ndarray | None = None
        self.n_seen_ = 0
        self.n_batches_ = 0
        self.last_batch_objective_: float | None = None
        self.ewm_objective_: float | None = None
        self.last_center_shift_: float | None = None
        self.n_reseeds_ = 0
        self.n_reseeds_rejected_ = 0
        self.n_dying_replaced_ = 0
        self._dtype: np.dtype | None = None
        self._centers: np.ndarray | None = None  # float64 master copy
        self._c_sq: np.ndarray | None = None  # ‖μ‖² in the data dtype
        self._buffer: list[np.ndarray] = []
        self._n_buffered = 0
        self._res: UniformReservoir | TimeBiasedReservoir | None = None

    # ------------------------------------------------------------------
    # Hyperparameters
    # ------------------------------------------------------------------
    def _check_params(self) -> None:
        """Validate hyperparameters; set ``_gamma``. Raises ValueError/TypeError."""
        check_positive_int("n_clusters", self.n_clusters)
        gamma = check_float("decay", self.decay, low=0.0, high=1.0, low_inclusive=False)
        if self.half_life is not None:
            h = check_float("half_life", self.half_life, low=0.0, low_inclusive=False)
            if self.decay != 1.0:
                raise ValueError(
                    "decay and half_life are mutually exclusive; got "
                    f"decay={self.decay!r} and half_life={self.half_life!r}"
                )
            gamma = 0.5 ** (1.0 / h)
            if gamma == 0.0:
                raise ValueError(
                    f"half_life={self.half_life!r} is too small: gamma = 0.5^(1/half_life) "
                    "underflows to 0 (decay must be > 0)"
                )
        check_in("time_unit", self.time_unit, ("batches", "points"))
        check_positive_int("reservoir_size", self.reservoir_size)
        if self.reservoir_size < self.n_clusters:
            raise ValueError(
                f"reservoir_size={self.reservoir_size} must be >= n_clusters={self.n_clusters}"
            )
        check_in("reservoir", self.reservoir, ("uniform", "time_biased"))
        if self.reservoir == "time_biased" and gamma == 1.0:
            raise ValueError(
                "reservoir='time_biased' needs forgetting: set half_life or decay < 1 "
                f"(got decay={self.decay!r}, half_life={self.half_life!r})"
            )
        if self.reseed_interval is not None:
            check_positive_int("reseed_interval", self.reseed_interval)
        check_float("reseed_min_gain", self.reseed_min_gain, low=0.0, high=1.0,
                    high_inclusive=False)
        check_float("dying_threshold", self.dying_threshold, low=0.0, high=1.0,
                    high_inclusive=False)
        if self.init_size is not None:
            check_positive_int("init_size", self.init_size)
        check_positive_int("n_init", self.n_init)
        check_positive_int("max_iter", self.max_iter)
        check_float("ewm_alpha", self.ewm_alpha, low=0.0, high=1.0, low_inclusive=False)
        check_positive_int("memory_budget_bytes", self.memory_budget_bytes)
        if self.seed is not None and (
            not isinstance(self.seed, numbers.Integral) or isinstance(self.seed, bool)
            or self.seed < 0
        ):
            raise TypeError(f"seed must be None or a non-negative int; got {self.seed!r}")
        self._gamma = float(gamma)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyperparameters as passed to the constructor (``deep`` is ignored)."""
        return {name: getattr(self, name) for name in _PARAMS}

    @property
    def gamma(self) -> float:
        """Forgetting factor ``γ`` per time unit (``0.5^(1/half_life)`` or ``decay``)."""
        return self._gamma

    @property
    def _init_threshold(self) -> int:
        size = 3 * self.n_clusters if self.init_size is None else self.init_size
        return max(self.n_clusters, size)

    @property
    def reservoir_sample(self) -> np.ndarray | None:
        """Read-only view of the reservoir, shape (m, n_features); None before data."""
        return None if self._res is None else self._res.sample

    # ------------------------------------------------------------------
    # Input handling
    # ------------------------------------------------------------------
    def _validate_X(self, X: Any) -> np.ndarray:
        X = check_array(X, name="X", n_features=self.n_features_in_)
        if self._dtype is not None and X.dtype != self._dtype:
            # Only float64 -> float32 can overflow; the check costs a pass only
            # on this (already copying) conversion path.
            with np.errstate(over="ignore"):
                X = X.astype(self._dtype)
            if not (np.isfinite(X.min()) and np.isfinite(X.max())):
                row = int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])
                raise ValueError(
                    f"X row {row} overflows the model's {self._dtype} dtype "
                    f"(max |x| {float(np.finfo(self._dtype).max):.3g})"
                )
        return X

    def _require_initialized(self, what: str) -> None:
        if not self.is_initialized_:
            raise ValueError(
                f"StreamingKMeans is not initialized yet, cannot {what}: "
                f"{self._n_buffered} of {self._init_threshold} points buffered"
            )

    # ------------------------------------------------------------------
    # Learning
    # ------------------------------------------------------------------
    def partial_fit(self, X: Any, y: Any = None) -> StreamingKMeans:
        """Update the model with one batch.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Finite numeric values, ``n_samples >= 1``; the first batch fixes
            ``n_features_in_`` and the dtype (float64 kept, otherwise float32).
        y : ignored

        Returns
        -------
        self

        Raises
        ------
        ValueError, TypeError
            Bad input; the model is unchanged.
        """
        X = self._validate_X(X)
        # --- nothing was modified above this line ---
        if self.n_features_in_ is None:
            self._setup(X)
        m = X.shape[0]
        was_initialized = self.is_initialized_
        prev_seen = self.n_seen_
        if not was_initialized:
            self._buffer.append(X.copy())
            self._n_buffered += m
            if self._n_buffered >= self._init_threshold:
                self._initialize()
        else:
            self._step(X)
        self._res._add(X, self._reservoir_rng)
        self.n_seen_ += m
        self.n_batches_ += 1
        if was_initialized:
            self._replace_dying()
            R = self.reseed_interval
            if R is not None and self.n_seen_ // R > prev_seen // R:
                self.reseed()
        return self

    def fit(self, X: Any, y: Any = None, *, batch_size: int = 1024) -> StreamingKMeans:
        """Stream ``X`` through :meth:`partial_fit` in batches of ``batch_size``.

        Continues from the current state (it does not reset the model).
        """
        X = self._validate_X(X)
        batch_size = check_positive_int("batch_size", batch_size)
        for start in range(0, X.shape[0], batch_size):
            self.partial_fit(X[start : start + batch_size])
        return self

    def _setup(self, X: np.ndarray) -> None:
        d = X.shape[1]
        self.n_features_in_ = d
        self._dtype = X.dtype
        if self.reservoir == "uniform":
            self._res = UniformReservoir(self.reservoir_size, d, dtype=X.dtype)
        else:
            h = math.log(0.5) / math.log(self._gamma)
            self._res = TimeBiasedReservoir(self.reservoir_size, d, h, self.time_unit,
                                            dtype=X.dtype)

    def _set_centers(self, centers64: np.ndarray) -> None:
        self._centers = centers64
        self.cluster_centers_ = centers64.astype(self._dtype)
        self._c_sq = _row_norms_sq(self.cluster_centers_)

    def _initialize(self) -> None:
        """k-means++ + Lloyd on the init buffer; weights = cluster sizes."""
        B = np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        k = self.n_clusters
        centers, labels, inertia = _seed_and_refine(
            B, k, self._rng, self.n_init, self.max_iter, self.memory_budget_bytes)
        self._set_centers(np.asarray(centers, dtype=np.float64))
        self.counts_ = np.bincount(labels, minlength=k).astype(np.float64)
        obj = float(inertia) / B.shape[0]
        self.last_batch_objective_ = obj
        self.ewm_objective_ = obj
        self.last_center_shift_ = 0.0
        self._buffer = []
        self._n_buffered = 0
        self.is_initialized_ = True

    def _step(self, X: np.ndarray) -> None:
        """One decayed mini-batch update (shared by partial_fit and fit)."""
        k = self.n_clusters
        labels, min_sq = _assign(X, self.cluster_centers_, c_sq=self._c_sq,
                                 memory_budget_bytes=self.memory_budget_bytes)
        obj = float(min_sq.mean(dtype=np.float64))
        self.last_batch_objective_ = obj
        a = self.ewm_alpha
        self.ewm_objective_ = obj if self.ewm_objective_ is None else (
            (1.0 - a) * self.ewm_objective_ + a * obj)

        m = X.shape[0]
        g = self._gamma if self.time_unit == "batches" else self._gamma ** m
        counts, sums = _cluster_sums(X, labels, k)
        w = self.counts_ * g if g != 1.0 else self.counts_.copy()
        w += counts
        nz = np.flatnonzero(counts)
        centers = self._centers.copy()
        # μ + (m_j/w_j)(x̄_j − μ) written as μ + (S_j − m_j μ)/w_j (no division by m_j).
        delta = (sums[nz] - counts[nz, None] * centers[nz]) / w[nz, None]
        centers[nz] += delta
        self.last_center_shift_ = (
            float(np.sqrt(np.einsum("ij,ij->i", delta, delta).max())) if nz.size else 0.0
        )
        self.counts_ = w
        self._set_centers(centers)

    def _replace_dying(self) -> None:
        thr_rel = self.dying_threshold
        if thr_rel <= 0.0:
            return
        w = self.counts_
        thr = thr_rel * float(w.mean())
        dying = np.flatnonzero(w < thr)
        if dying.size == 0:
            return
        alive = np.flatnonzero(w >= thr)
        S = self._res.sample
        picks = _d2_sample(S, self.cluster_centers_[alive], dying.size, self._rng,
                           self.memory_budget_bytes)
        centers = self._centers.copy()
        centers[dying] = S[picks]
        w = w.copy()
        w[dying] = thr
        self.counts_ = w
        self._set_centers(centers)
        self.n_dying_replaced_ += int(dying.size)

    # ------------------------------------------------------------------
    # Reseeding
    # ------------------------------------------------------------------
    def prepare_reseed(self) -> dict[str, Any]:
        """Arguments for :func:`compute_reseed`, copied so it may run in a thread.

        Draws the reseed's seed from the model's RNG (so call it at a
        deterministic point of the stream). Pass the result of
        ``compute_reseed(**model.prepare_reseed())`` to :meth:`apply_reseed`;
        for bit-identical replay apply it at a deterministic point too (e.g.
        before the next :meth:`partial_fit`).
        """
        self._require_initialized("reseed")
        return {
            "reservoir_sample": self._res.sample.copy(),
            "centers": self._centers.copy(),
            "n_clusters": self.n_clusters,
            "rng": int(self._rng.integers(0, 2**63 - 1)),
            "min_gain": float(self.reseed_min_gain),
            "total_weight": float(self.counts_.sum()),
            "n_init": self.n_init,
            "max_iter": self.max_iter,
            "memory_budget_bytes": self.memory_budget_bytes,
        }

    def apply_reseed(self, result: ReseedResult) -> bool:
        """Install a :class:`ReseedResult` if it was accepted; count it either way.

        The candidate's counts are rescaled to the model's *current* total
        weight. Returns ``result.accepted``.
        """
        if not isinstance(result, ReseedResult):
            raise TypeError(f"result must be a ReseedResult; got {type(result).__name__}")
        self._require_initialized("apply a reseed")
        shape = (self.n_clusters, self.n_features_in_)
        if np.shape(result.centers) != shape or np.shape(result.counts) != (self.n_clusters,):
            raise ValueError(
                f"reseed result has centers {np.shape(result.centers)} and counts "
                f"{np.shape(result.counts)}; expected {shape} and ({self.n_clusters},)"
            )
        if not result.accepted:
            self.n_reseeds_rejected_ += 1
            return False
        centers = np.array(result.centers, dtype=np.float64)
        counts = np.array(result.counts, dtype=np.float64)
        if not (np.isfinite(centers).all() and np.isfinite(counts).all() and counts.min() >= 0):
            raise ValueError("reseed result holds non-finite centers or negative counts")
        total_now, total_res = float(self.counts_.sum()), float(counts.sum())
        if total_res > 0:
            counts *= total_now / total_res
        self.counts_ = counts
        self._set_centers(centers)
        self.n_reseeds_ += 1
        return True

    def reseed(self) -> bool:
        """Recluster the reservoir now; install the result if it is better enough.

        Returns whether the candidate was accepted.
        """
        return self.apply_reseed(compute_reseed(**self.prepare_reseed()))

    # ------------------------------------------------------------------
    # Inference
    # ------------------------------------------------------------------
    def predict(self, X: Any) -> np.ndarray:
        """Index of the nearest center, shape (n_samples,) int64."""
        self._require_initialized("predict")
        X = self._validate_X(X)
        labels, _ = _assign(X, self.cluster_centers_, c_sq=self._c_sq,
                            memory_budget_bytes=self.memory_budget_bytes)
        return labels

    def transform(self, X: Any) -> np.ndarray:
        """Squared distances to every center, shape (n_samples, n_clusters)."""
        self._require_initialized("transform")
        X = self._validate_X(X)
        return _sq_distances(X, self.cluster_centers_, c_sq=self._c_sq)

    def score(self, X: Any, y: Any = None) -> float:
        """Negative sum of squared distances to the nearest centers (higher is better)."""
        self._require_initialized("score")
        X = self._validate_X(X)
        _, min_sq = _assign(X, self.cluster_centers_, c_sq=self._c_sq,
                            memory_budget_bytes=self.memory_budget_bytes)
        return -float(min_sq.sum(dtype=np.float64))

    # ------------------------------------------------------------------
    # State
    # ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Complete state as plain arrays and JSON-able scalars (no pickle).

        Keys: ``format``, ``version``, ``params`` (hyperparameters), ``rng`` and
        ``reservoir_rng`` (``bit_generator.state`` dicts), ``is_initialized``,
        ``n_features_in``, ``dtype``, ``centers`` (float64) and ``counts``
        (or None before initialization), ``init_buffer`` (buffered points or
        None), ``reservoir`` (see the reservoir's ``state_dict``, or None), and
        the counters and objectives. Arrays are copies.
        """
        buf = None
        if self._buffer:
            buf = np.concatenate(self._buffer)
        return {
            "format": _STATE_FORMAT,
            "version": _STATE_VERSION,
            "params": self.get_params(),
            "rng": self._rng.bit_generator.state,
            "reservoir_rng": self._reservoir_rng.bit_generator.state,
            "is_initialized": self.is_initialized_,
            "n_features_in": self.n_features_in_,
            "dtype": None if self._dtype is None else self._dtype.name,
            "centers": None if self._centers is None else self._centers.copy(),
            "counts": None if self.counts_ is None else self.counts_.copy(),
            "init_buffer": buf,
            "reservoir": None if self._res is None else self._res.state_dict(),
            "n_seen": self.n_seen_,
            "n_batches": self.n_batches_,
            "last_batch_objective": self.last_batch_objective_,
            "ewm_objective": self.ewm_objective_,
            "last_center_shift": self.last_center_shift_,
            "n_reseeds": self.n_reseeds_,
            "n_reseeds_rejected": self.n_reseeds_rejected_,
            "n_dying_replaced": self.n_dying_replaced_,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> StreamingKMeans:
        """Build a model with the saved hyperparameters and load ``state``."""
        if not isinstance(state, dict) or not isinstance(state.get("params"), dict):
            raise ValueError("state must be a dict with a 'params' dict (from state_dict())")
        params = dict(state["params"])
        unknown = set(params) - set(_PARAMS)
        if unknown:
            raise ValueError(f"state params has unknown keys {sorted(unknown)}")
        model = cls(**params)
        model.load_state_dict(state)
        return model

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`. Everything is validated first.

        Raises ValueError (or TypeError) naming the problem when keys are
        missing or unknown, the hyperparameters differ from this object's, or
        shapes/dtypes/values are inconsistent; the model is then unchanged.
        The one exception is ``seed``: it is adopted from the state (the saved
        RNG state supersedes it), so ``StreamingKMeans(k, ...)`` with any seed
        can load a state saved with the same other hyperparameters.
        """
        new = self._validated_state(state)
        for name, value in new.items():
            setattr(self, name, value)
        if self._centers is not None:
            self._set_centers(self._centers)
        else:
            self.cluster_centers_ = None
            self._c_sq = None

    def _validated_state(self, state: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict; got {type(state).__name__}")
        expected = set(self.state_dict())
        missing, unknown = expected - set(state), set(state) - expected
        if missing or unknown:
            raise ValueError(
                f"state keys mismatch: missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        if state["format"] != _STATE_FORMAT or state["version"] != _STATE_VERSION:
            raise ValueError(
                f"state format {state['format']!r} version {state['version']!r} is not "
                f"{_STATE_FORMAT!r} version {_STATE_VERSION}"
            )
        params = state["params"]
        mine = self.get_params()
        if not isinstance(params, dict) or set(params) != set(mine):
            raise ValueError(f"state params must have keys {sorted(mine)}")
        # ``seed`` only matters at construction; the restored RNG state replaces
        # it, so it is adopted from the state rather than compared.
        diff = {key: (params[key], mine[key]) for key in mine
                if key != "seed" and params[key] != mine[key]}
        if diff:
            desc = ", ".join(f"{key}: state={a!r} vs model={b!r}" for key, (a, b) in diff.items())
            raise ValueError(f"hyperparameter mismatch between state and model: {desc}")

        rngs = {}
        for key in ("rng", "reservoir_rng"):
            gen = np.random.default_rng()
            try:
                gen.bit_generator.state = state[key]
            except (TypeError, ValueError, KeyError) as exc:
                raise ValueError(f"state[{key!r}] is not a valid {type(gen.bit_generator).__name__} "
                                 f"state: {exc}") from exc
            rngs[key] = gen

        counters = {}
        for key in ("n_seen", "n_batches", "n_reseeds", "n_reseeds_rejected", "n_dying_replaced"):
            v = state[key]
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 0:
                raise ValueError(f"state[{key!r}] must be an integer >= 0; got {v!r}")
            counters[key] = int(v)
        for key in ("last_batch_objective", "ewm_objective", "last_center_shift"):
            v = state[key]
            if v is not None and not (isinstance(v, numbers.Real) and math.isfinite(v)):
                raise ValueError(f"state[{key!r}] must be None or a finite number; got {v!r}")

        k = self.n_clusters
        d = state["n_features_in"]
        init = state["is_initialized"]
        if not isinstance(init, bool):
            raise ValueError(f"state['is_initialized'] must be a bool; got {init!r}")
        dtype_name = state["dtype"]
        if d is None:
            if init or dtype_name is not None or any(
                state[key] is not None for key in ("centers", "counts", "init_buffer", "reservoir")
            ) or counters["n_seen"]:
                raise ValueError("state without n_features_in must be a fresh, empty model")
            dtype = None
        else:
            if not isinstance(d, numbers.Integral) or isinstance(d, bool) or d < 1:
                raise ValueError(f"state['n_features_in'] must be an integer >= 1; got {d!r}")
            if dtype_name not in ("float32", "float64"):
                raise ValueError(f"state['dtype'] must be 'float32' or 'float64'; got {dtype_name!r}")
            dtype = np.dtype(dtype_name)

        centers = counts = None
        buffer: list[np.ndarray] = []
        if init:
            centers = np.asarray(state["centers"])
            counts = np.asarray(state["counts"])
            if centers.shape != (k, d) or centers.dtype != np.float64:
                raise ValueError(f"state['centers'] must be float64 of shape {(k, d)}; "
                                 f"got {centers.dtype} {centers.shape}")
            if counts.shape != (k,) or counts.dtype != np.float64:
                raise ValueError(f"state['counts'] must be float64 of shape ({k},); "
                                 f"got {counts.dtype} {counts.shape}")
            if not (np.isfinite(centers).all() and np.isfinite(counts).all()) or counts.min() < 0:
                raise ValueError("state['centers']/['counts'] must be finite with counts >= 0")
            if state["init_buffer"] is not None:
                raise ValueError("an initialized state must have init_buffer=None")
            centers, counts = centers.copy(), counts.copy()
        else:
            if state["centers"] is not None or state["counts"] is not None:
                raise ValueError("an uninitialized state must have centers=None and counts=None")
            buf = state["init_buffer"]
            if buf is not None:
                buf = np.asarray(buf)
                if buf.ndim != 2 or buf.shape[1] != d or buf.dtype != dtype or buf.shape[0] < 1:
                    raise ValueError(f"state['init_buffer'] must be {dtype} of shape (n, {d}); "
                                     f"got {buf.dtype} {buf.shape}")
                if buf.shape[0] >= self._init_threshold:
                    raise ValueError(f"state['init_buffer'] holds {buf.shape[0]} points, enough "
                                     f"to initialize ({self._init_threshold}); corrupted state")
                if not np.isfinite(buf).all():
                    raise ValueError("state['init_buffer'] contains NaN or infinity")
                buffer = [buf.copy()]
            # Before initialization every point seen is still in the buffer.
            n_buf = 0 if buf is None else buf.shape[0]
            if n_buf != counters["n_seen"]:
                raise ValueError(f"state['init_buffer'] holds {n_buf} points but n_seen="
                                 f"{counters['n_seen']}; an uninitialized model buffers "
                                 "every point it saw")
        res = None
        if d is not None:
            rstate = state["reservoir"]
            if not isinstance(rstate, dict):
                raise ValueError("state['reservoir'] must be a dict once data was seen")
            res = reservoir_from_state(rstate)
            if (res.kind, res.capacity, res.n_features, res.dtype) != (
                    self.reservoir, self.reservoir_size, d, dtype):
                raise ValueError(
                    f"state['reservoir'] is {res.kind} capacity={res.capacity} "
                    f"n_features={res.n_features} dtype={res.dtype}; expected {self.reservoir} "
                    f"capacity={self.reservoir_size} n_features={d} dtype={dtype}"
                )
            if res.n_seen != counters["n_seen"]:
                raise ValueError(f"state['reservoir'] saw {res.n_seen} points but n_seen="
                                 f"{counters['n_seen']}")

        seed = params["seed"]
        if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)
                                 or seed < 0):
            raise ValueError(f"state params seed must be None or an integer >= 0; got {seed!r}")
        return {
            "seed": seed,
            "_rng": rngs["rng"],
            "_reservoir_rng": rngs["reservoir_rng"],
            "is_initialized_": init,
            "n_features_in_": None if d is None else int(d),
            "_dtype": dtype,
            "_centers": centers,
            "counts_": counts,
            "_buffer": buffer,
            "_n_buffered": sum(b.shape[0] for b in buffer),
            "_res": res,
            "n_seen_": counters["n_seen"],
            "n_batches_": counters["n_batches"],
            "n_reseeds_": counters["n_reseeds"],
            "n_reseeds_rejected_": counters["n_reseeds_rejected"],
            "n_dying_replaced_": counters["n_dying_replaced"],
            "last_batch_objective_": state["last_batch_objective"],
            "ewm_objective_": state["ewm_objective"],
            "last_center_shift_": state["last_center_shift"],
        }

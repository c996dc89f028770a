"""Streaming mini-batch k-means with decay, dying-cluster replacement and reseeding.

:class:`StreamingKMeans` is the estimator. Its pure parts are private modules:
the mini-batch update kernel (:mod:`._streaming`), reseeding (:mod:`._reseed`)
and the hyperparameter/state_dict checks (:mod:`._state`). The update rule, the
choice of half-life and the behaviour under drift are explained in
``docs/kmeans.md`` (section 5).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._distance import _assign, _neg2_t, _row_norms_sq, _sq_distances, _Workspace
from ._params import ParamsMixin, not_fitted_error
from ._reseed import ReseedResult, _d2_sample, _seed_and_refine, compute_reseed
from ._state import _PARAMS, _check_params, _state_dict, _validated_state
from ._streaming import _apply_sums, _cluster_sums
from ._validation import MAX_ABS_VALUE, check_array, check_positive_int
from .reservoir import TimeBiasedReservoir, UniformReservoir

__all__ = ["StreamingKMeans", "ReseedResult", "compute_reseed"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: Rows whose squared norm is at most this hold only finite values of magnitude at
#: most ``0.5 · MAX_ABS_VALUE`` (a margin for the rounding of the norm).
_FAST_SQ_BOUND = 0.25 * MAX_ABS_VALUE**2


class StreamingKMeans(ParamsMixin):
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

    scikit-learn protocol (``clone``, ``Pipeline``, ``GridSearchCV``,
    ``check_estimator``): ``get_params`` / ``set_params`` (validated as the
    constructor validates; only a model that has seen no data accepts new
    values), tags that make it a clusterer and transformer, and "fitted"
    meaning ``is_initialized_``. Unlike scikit-learn estimators it validates
    its hyperparameters at construction and exposes its live state (``None``
    or 0 before data) from then on. :meth:`predict`, :meth:`transform`,
    :meth:`score` and :meth:`assign` before initialization raise
    :class:`~streamkm.cluster.NotFittedError` (a ``ValueError``).

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
        self._gamma = _check_params(self)
        self._reset()

    def _reset(self) -> None:
        """Fresh learned state and RNGs from ``seed`` (construction, and :meth:`fit`)."""
        ss = np.random.SeedSequence(self.seed)
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
        self._dtype: np.dtype[Any] | None = None
        self._centers: np.ndarray | None = None  # float64 master copy
        self._c_sq: np.ndarray | None = None  # ‖μ‖² in the data dtype
        self._neg2_ct: np.ndarray | None = None  # −2 μᵀ, the assignment GEMM operand
        self._work = _Workspace()  # scratch arrays of _step, reused between batches
        self._buffer: list[np.ndarray] = []
        self._n_buffered = 0
        self._res: UniformReservoir | TimeBiasedReservoir | None = None

    # ------------------------------------------------------------------
    # Hyperparameters
    # ------------------------------------------------------------------
    def _check_set_params(self, old: dict[str, Any]) -> None:
        """:meth:`set_params` validation: the constructor's, and only on a model without data.

        The learned state (centers of ``n_clusters`` rows, the reservoir's kind
        and capacity, ``γ``) is built from the hyperparameters, so changing them
        under a model that has seen data would corrupt or silently discard it.
        """
        gamma = _check_params(self)
        changed = sorted(name for name, value in old.items() if getattr(self, name) is not value
                         and getattr(self, name) != value)
        if changed and self.n_features_in_ is not None:
            raise ValueError(
                f"cannot set {', '.join(changed)} on a StreamingKMeans that has seen {self.n_seen_} "
                "points (its state depends on its hyperparameters); set them on a fresh model, "
                "e.g. sklearn.base.clone(model).set_params(...), or call fit(), which restarts"
            )
        self._gamma = gamma

    def __sklearn_is_fitted__(self) -> bool:
        """Whether the model is initialized (scikit-learn's ``check_is_fitted`` asks this)."""
        return bool(self.is_initialized_)

    @property
    def gamma(self) -> float:
        """Forgetting factor ``γ`` per time unit (``0.5^(1/half_life)`` or ``decay``)."""
        return self._gamma

    @property
    def init_threshold(self) -> int:
        """Points to buffer before initializing: ``max(n_clusters, init_size)``.

        ``init_size`` defaults to ``3 · n_clusters``. :meth:`partial_fit` only
        buffers until this many points have arrived; the batch that reaches it
        initializes the model, so feeding at least this many rows at once
        makes the first call initialize it.
        """
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
        arr = check_array(X, name="X", n_features=self.n_features_in_)
        if self._dtype is not None and arr.dtype != self._dtype:
            # Only float64 -> float32 can overflow; the check costs a pass only
            # on this (already copying) conversion path.
            with np.errstate(over="ignore"):
                arr = arr.astype(self._dtype)
            if not (np.isfinite(arr.min()) and np.isfinite(arr.max())):
                row = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
                raise ValueError(
                    f"X row {row} overflows the model's {self._dtype} dtype "
                    f"(max |x| {float(np.finfo(self._dtype).max):.3g})"
                )
        return arr

    def _validate_batch(self, X: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`_validate_X` for an update, with ``‖x‖²`` of the rows when it was computed.

        Fast path for what the service feeds (a C-contiguous float array of the
        model's dtype and width): instead of two reductions over ``X`` for the
        finiteness and magnitude checks, one pass computes the squared row
        norms that the assignment needs anyway, and their maximum proves every
        value finite and below :data:`MAX_ABS_VALUE` (a squared norm bounds
        every squared entry of its row; NaN and overflow fail the comparison).
        Anything else, or a failed bound, goes through :meth:`_validate_X`,
        which accepts and rejects exactly as before, with the same messages.
        """
        d = self.n_features_in_
        dt = self._dtype
        if (type(X) is np.ndarray and X.ndim == 2 and X.shape[0] > 0 and X.shape[1] > 0
                and (d is None or X.shape[1] == d) and X.flags.c_contiguous
                and (X.dtype == dt if dt is not None else X.dtype in _FLOAT_DTYPES)):
            x_sq = _row_norms_sq(X)
            if np.maximum.reduce(x_sq) <= _FAST_SQ_BOUND:  # NaN fails the comparison
                return X, x_sq
        return self._validate_X(X), None

    def _require_initialized(self, what: str) -> None:
        if not self.is_initialized_:
            raise not_fitted_error(
                f"StreamingKMeans is not initialized yet, cannot {what}: "
                f"{self._n_buffered} of {self.init_threshold} points buffered"
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
        X, x_sq = self._validate_batch(X)
        # --- nothing was modified above this line ---
        if self.n_features_in_ is None:
            self._setup(X)
        m = X.shape[0]
        was_initialized = self.is_initialized_
        prev_seen = self.n_seen_
        if not was_initialized:
            self._buffer.append(X.copy())
            self._n_buffered += m
            if self._n_buffered >= self.init_threshold:
                self._initialize()
        else:
            self._step(X, x_sq)
        # ‖x‖² of the rows (from the validation): the reservoir keeps those of its rows.
        self._end_batch(X, m, prev_seen, was_initialized, x_sq)
        return self

    def _end_batch(self, sample: np.ndarray, m: int, prev_seen: int, was_initialized: bool,
                   sample_sq: np.ndarray | None = None) -> None:
        """Reservoir, counters, dying clusters and interval reseeds after one update."""
        assert self._res is not None  # created by _setup
        if sample.shape[0]:
            self._res._add(sample, self._reservoir_rng, sample_sq)
        self.n_seen_ += m
        self.n_batches_ += 1
        if was_initialized:
            self._replace_dying()
            R = self.reseed_interval
            if R is not None and self.n_seen_ // R > prev_seen // R:
                self.reseed()

    def partial_fit_stats(self, counts: Any, sums: Any, sq_dist_sums: Any, sample: Any) -> StreamingKMeans:
        """Update the model with one batch's sufficient statistics instead of its points.

        The reduce step of Spark's ``StreamingKMeans`` and Flink ML's
        ``OnlineKMeans``: the points were assigned to these centers elsewhere
        (see :func:`streamkm.cluster.summarize`), and only their per-cluster
        counts and sums travel. The update is the one :meth:`partial_fit` applies
        (same kernel), so folding a batch's statistics gives the model that
        fitting its points against the same centers would.

        Parameters
        ----------
        counts : array-like of shape (n_clusters,)
            Points per cluster (>= 0, finite), summing to at least 1.
        sums : array-like of shape (n_clusters, n_features)
            Sum of the points assigned to each cluster.
        sq_dist_sums : array-like of shape (n_clusters,)
            Sum of their squared distances to their center (>= 0); gives
            ``last_batch_objective_``.
        sample : array-like of shape (n_sample, n_features)
            Points of the batch offered to the reservoir (may be empty). With
            equal batch sizes and equal sample sizes a uniform reservoir stays
            uniform over all points.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            Not initialized, or shapes/values are inconsistent; the model is
            unchanged.
        """
        self._require_initialized("fold statistics")
        assert self._centers is not None and self.counts_ is not None
        k, d = self._centers.shape
        c = np.asarray(counts, dtype=np.float64)
        S = np.asarray(sums, dtype=np.float64)
        q = np.asarray(sq_dist_sums, dtype=np.float64)
        if c.shape != (k,) or q.shape != (k,):
            raise ValueError(f"expected counts and sq_dist_sums of shape ({k},), got {c.shape} and {q.shape}")
        if S.shape != (k, d):
            raise ValueError(f"expected sums of shape ({k}, {d}), got {S.shape}")
        if not (np.isfinite(c).all() and np.isfinite(S).all() and np.isfinite(q).all()):
            raise ValueError("counts, sums and sq_dist_sums must be finite")
        if c.min() < 0 or q.min() < 0:
            raise ValueError("counts and sq_dist_sums must be >= 0")
        nz = c > 0
        if (np.abs(S[nz]) > MAX_ABS_VALUE * c[nz, None]).any() or (S[~nz] != 0).any():
            raise ValueError(f"sums imply a cluster mean above {MAX_ABS_VALUE:.3g} in magnitude, or a non-zero "
                             "sum for a cluster without points")
        m_float = float(c.sum())
        if m_float < 1:
            raise ValueError(f"statistics of at least 1 point expected, got a total count of {m_float}")
        smp = check_array(sample, name="sample", n_features=d, allow_empty=True)
        if smp.dtype != self._dtype:
            smp = self._validate_X(smp) if smp.shape[0] else smp.astype(self._dtype)
        # --- nothing was modified above this line ---
        m = int(round(m_float))
        prev_seen = self.n_seen_
        obj = float(q.sum()) / m_float
        self._observe_objective(obj)
        g = self._gamma if self.time_unit == "batches" else self._gamma ** m_float
        centers, self.counts_, self.last_center_shift_ = _apply_sums(c, S, self._centers, self.counts_, g)
        self._set_centers(centers)
        self._end_batch(smp, m, prev_seen, True)
        return self

    def fit(self, X: Any, y: Any = None, *, batch_size: int = 1024) -> StreamingKMeans:
        """Restart from ``seed`` and stream ``X`` through :meth:`partial_fit` in batches.

        As in scikit-learn, ``fit`` forgets everything learned before (the
        RNGs restart from ``seed``, so with an integer seed two fits of the
        same ``X`` give the same model); :meth:`partial_fit` is the call that
        continues. ``StreamingKMeans(...).fit(X)`` equals feeding the
        ``batch_size`` slices of ``X`` to :meth:`partial_fit` of a fresh model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Any width and dtype (float64 kept, otherwise float32): the model restarts.
        y : ignored
        batch_size : int, default=1024
            Rows per :meth:`partial_fit` call.

        Returns
        -------
        self

        Raises
        ------
        ValueError, TypeError
            Bad input or ``batch_size``; the model is unchanged.
        """
        X = check_array(X, name="X")
        batch_size = check_positive_int("batch_size", batch_size)
        # --- nothing was modified above this line ---
        self._reset()
        for start in range(0, X.shape[0], batch_size):
            self.partial_fit(X[start : start + batch_size])
        return self

    def fit_predict(self, X: Any, y: Any = None, *, batch_size: int = 1024) -> np.ndarray:
        """:meth:`fit` on ``X``, then the :meth:`predict` labels of ``X`` by the final model.

        Raises :class:`~streamkm.cluster.NotFittedError` if ``X`` has fewer
        rows than :attr:`init_threshold` (the model stays uninitialized).
        """
        return self.fit(X, batch_size=batch_size).predict(X)

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
        self._neg2_ct = _neg2_t(self.cluster_centers_, self._dtype)

    def _set_center_rows(self, centers64: np.ndarray, rows: np.ndarray) -> None:
        """:meth:`_set_centers` for ``centers64`` that differ from the current centers in ``rows`` only.

        The derived arrays are copied (never modified in place: callers may hold the old
        ones) and recomputed in those rows; the values are the ones :meth:`_set_centers`
        computes (element- and row-wise operations), without a pass over all k rows.
        """
        assert self.cluster_centers_ is not None and self._c_sq is not None
        assert self._neg2_ct is not None
        self._centers = centers64
        cc = self.cluster_centers_.copy()
        new = centers64[rows].astype(self._dtype)
        cc[rows] = new
        c_sq = self._c_sq.copy()
        c_sq[rows] = _row_norms_sq(new)
        neg2 = self._neg2_ct.copy()
        neg2[:, rows] = _neg2_t(new, self._dtype)
        self.cluster_centers_, self._c_sq, self._neg2_ct = cc, c_sq, neg2

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

    def _step(self, X: np.ndarray, x_sq: np.ndarray | None = None) -> None:
        """One decayed mini-batch update (shared by partial_fit and fit).

        The kernels and their order are those of :func:`summarize` followed by
        :meth:`partial_fit_stats` (labels and squared distances from
        ``_assign``, sums from ``_cluster_sums``, the objective from the
        per-cluster totals, the update from ``_apply_sums``), so both paths
        give the same bits; ``x_sq`` (``‖x‖²`` from the validation) and the
        scratch arrays kept in ``self._work`` do not change any value.
        """
        assert self.cluster_centers_ is not None and self._centers is not None
        assert self.counts_ is not None
        k = self.n_clusters
        labels, min_sq = _assign(X, self.cluster_centers_, x_sq=x_sq, c_sq=self._c_sq,
                                 neg2_ct=self._neg2_ct, memory_budget_bytes=self.memory_budget_bytes,
                                 work=self._work)
        # Per-cluster totals, summed: the objective partial_fit_stats computes from statistics.
        ssd = np.bincount(labels, weights=min_sq, minlength=k)
        m = X.shape[0]
        self._observe_objective(float(ssd.sum()) / m)
        g = self._gamma if self.time_unit == "batches" else self._gamma ** m
        counts, sums = _cluster_sums(X, labels, k, work=self._work)
        centers, self.counts_, self.last_center_shift_ = _apply_sums(
            counts, sums, self._centers, self.counts_, g)
        self._set_centers(centers)

    def _observe_objective(self, obj: float) -> None:
        self.last_batch_objective_ = obj
        a = self.ewm_alpha
        self.ewm_objective_ = obj if self.ewm_objective_ is None else (
            (1.0 - a) * self.ewm_objective_ + a * obj)

    def _replace_dying(self) -> None:
        thr_rel = self.dying_threshold
        if thr_rel <= 0.0:
            return
        w = self.counts_
        assert w is not None and self._centers is not None and self.cluster_centers_ is not None
        # w.mean() is this sum over k; most batches re-place nothing, and one reduction
        # tells (the per-call costs of mean and flatnonzero are most of this method's).
        thr = thr_rel * (float(np.add.reduce(w)) / w.shape[0])
        if np.minimum.reduce(w) >= thr:
            return
        dying = np.flatnonzero(w < thr)
        alive = np.flatnonzero(w >= thr)
        assert self._res is not None
        S = self._res.sample
        assert self._neg2_ct is not None and self._c_sq is not None
        # The model's GEMM operand for all k centers, the dying ones masked by ‖μ‖² = +inf
        # (no gather of the operand's columns).
        c_sq = self._c_sq.copy()
        c_sq[dying] = np.inf
        picks = _d2_sample(S, self.cluster_centers_[alive], dying.size, self._rng,
                           self.memory_budget_bytes, s_sq=self._res.sample_sq_norms,
                           neg2_ct=self._neg2_ct, c_sq=c_sq)
        centers = self._centers.copy()
        centers[dying] = S[picks]
        w = w.copy()
        w[dying] = thr
        self.counts_ = w
        self._set_center_rows(centers, dying)
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
        assert self._res is not None and self._centers is not None and self.counts_ is not None
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
        assert self.counts_ is not None
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
        assert self.cluster_centers_ is not None
        labels, _ = _assign(X, self.cluster_centers_, c_sq=self._c_sq, neg2_ct=self._neg2_ct,
                            memory_budget_bytes=self.memory_budget_bytes)
        return labels

    def assign(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Nearest center and squared distance to it for every row of ``X``.

        What a consumer reports per point: the labels of :meth:`predict`
        together with their squared distances, from one pass. The model is
        not changed.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Finite values, ``n_samples >= 1``; validated and converted to the
            model's dtype as in :meth:`predict` (no copy when ``X`` already is
            a C-contiguous array of that dtype and width).

        Returns
        -------
        labels : ndarray of shape (n_samples,), int64
            Index of the nearest center (lowest index on ties).
        sq_dist : ndarray of shape (n_samples,), dtype of ``cluster_centers_``
            Squared Euclidean distance to that center, clamped at 0.

        Raises
        ------
        ValueError
            If the model is not initialized yet, or ``X`` has the wrong number
            of features or non-finite values. The model is unchanged.

        Notes
        -----
        Same chunked GEMM kernel as :meth:`predict`, but always in the
        kernel's default row blocks (at most 4096 rows within 64 MiB), not
        those of ``memory_budget_bytes``: the output is bit-identical to what
        the service has always emitted. With the default
        ``memory_budget_bytes`` the labels are exactly :meth:`predict`'s.

        Examples
        --------
        >>> import numpy as np
        >>> X = np.array([[0, 0], [0, 1], [10, 10], [10, 11], [0, 0.5], [10, 10.5]])
        >>> km = StreamingKMeans(n_clusters=2, seed=0).partial_fit(X)
        >>> labels, sq_dist = km.assign([[0.0, 0.0], [10.0, 10.0], [0.0, 0.5]])
        >>> labels.tolist() == km.predict([[0.0, 0.0], [10.0, 10.0], [0.0, 0.5]]).tolist()
        True
        >>> bool(labels[0] == labels[2] != labels[1]), sq_dist.tolist()
        (True, [0.25, 0.25, 0.0])
        """
        self._require_initialized("assign")
        X = self._validate_X(X)
        assert self.cluster_centers_ is not None
        return _assign(X, self.cluster_centers_, c_sq=self._c_sq, neg2_ct=self._neg2_ct)

    def transform(self, X: Any) -> np.ndarray:
        """Squared distances to every center, shape (n_samples, n_clusters)."""
        self._require_initialized("transform")
        X = self._validate_X(X)
        assert self.cluster_centers_ is not None
        return _sq_distances(X, self.cluster_centers_, c_sq=self._c_sq)

    def fit_transform(self, X: Any, y: Any = None, *, batch_size: int = 1024) -> np.ndarray:
        """:meth:`fit`, then :meth:`transform` of ``X`` by the final model, shape (n_samples, n_clusters)."""
        return self.fit(X, batch_size=batch_size).transform(X)

    def score(self, X: Any, y: Any = None) -> float:
        """Negative sum of squared distances to the nearest centers (higher is better)."""
        self._require_initialized("score")
        X = self._validate_X(X)
        assert self.cluster_centers_ is not None
        _, min_sq = _assign(X, self.cluster_centers_, c_sq=self._c_sq, neg2_ct=self._neg2_ct,
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
        return _state_dict(self)

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
        new = _validated_state(self, state)
        for name, value in new.items():
            setattr(self, name, value)
        if self._centers is not None:
            self._set_centers(self._centers)
        else:
            self.cluster_centers_ = None
            self._c_sq = None
            self._neg2_ct = None

"""Batch k-means estimator: Lloyd's algorithm with greedy k-means++ seeding.

:class:`KMeans` validates and stores the result; the Lloyd iterations (chunked
distances, Hamerly pruning, incremental float64 sums) are the private kernels
of :mod:`streamkm.cluster._lloyd`. Why the objective never increases and what
an iteration costs is explained in ``docs/kmeans.md`` (section 2).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._distance import DEFAULT_MEMORY_BUDGET, _assign, _row_norms_sq, _sq_distances
from ._lloyd import _lloyd
from ._params import ParamsMixin, not_fitted_error
from ._validation import (
    check_array,
    check_float,
    check_n_clusters,
    check_positive_int,
    check_random_state,
    check_sample_weight,
)
from .kmeans_plusplus import _kmeans_plusplus

__all__ = ["KMeans"]


class KMeans(ParamsMixin):
    """Batch k-means (Lloyd's algorithm) with greedy k-means++ seeding.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters ``k``.
    init : {"k-means++", "random"} or ndarray of shape (n_clusters, n_features), \
default="k-means++"
        Starting centers: greedy k-means++, ``k`` distinct random rows, or
        the given array (then a single run is made whatever ``n_init`` is).
    n_init : int, default=1
        Number of seeded runs; the one with the lowest objective is kept.
    max_iter : int, default=300
        Maximum Lloyd iterations per run.
    tol : float, default=1e-4
        Stop when the relative decrease of the objective,
        ``(J_prev − J) / J_prev``, is at most ``tol`` (or no label changes).
    seed : None, int or numpy.random.Generator, default=None
        Seeds ``np.random.default_rng`` for the initialisation.
    memory_budget_bytes : int, default=64 MiB
        Bound on the size of each ``(rows, n_clusters)`` distance block; the
        full ``(n_samples, n_clusters)`` matrix is never held.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    labels_ : ndarray of shape (n_samples,), int64
    inertia_ : float
        Objective ``J = Σ_i w_i ‖x_i − μ_{c_i}‖²`` of the fitted model.
    n_iter_ : int
        Lloyd iterations of the kept run.
    objective_history_ : ndarray of shape (n_iter_ + 1,)
        ``J`` after each assignment step of the kept run (non-increasing).
    n_features_in_ : int

    Notes
    -----
    float64 input is fitted in float64, everything else in float32; sums are
    accumulated in float64. Iterations skip the distance computation for
    points whose label provably cannot change (Hamerly 2010); the iterates are
    those of plain Lloyd up to floating-point near-ties. Empty clusters are
    re-seeded farthest-first at the points farthest from their centers, which
    never increases ``J``.

    scikit-learn protocol (``clone``, ``Pipeline``, ``GridSearchCV``,
    ``check_estimator``): ``get_params`` / ``set_params``, and tags that make
    it a clusterer and transformer. As in scikit-learn, hyperparameters are
    validated by :meth:`fit`, not by the constructor or ``set_params``;
    :meth:`predict`, :meth:`transform` and :meth:`score` before :meth:`fit`
    raise :class:`~streamkm.cluster.NotFittedError` (a ``ValueError``).

    References
    ----------
    S. Lloyd, "Least squares quantization in PCM", IEEE Trans. Inf. Theory
    28(2), 1982. D. Arthur and S. Vassilvitskii, "k-means++: The Advantages
    of Careful Seeding", SODA 2007. G. Hamerly, "Making k-means even faster",
    SDM 2010.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 0.1, (50, 2)),
    ...                     rng.normal(5, 0.1, (50, 2))]).astype(np.float32)
    >>> km = KMeans(n_clusters=2, seed=0).fit(X)
    >>> [round(float(c), 1) + 0.0 for c in np.sort(km.cluster_centers_[:, 0])]
    [0.0, 5.0]
    >>> bool(np.all(km.objective_history_[1:] <= km.objective_history_[:-1]))
    True
    >>> km.predict(np.array([[4.8, 5.1]])) == km.predict(X[-1:])
    array([ True])
    """

    # Learned by fit (absent before it: ``_check_fitted`` tests for them).
    cluster_centers_: np.ndarray
    labels_: np.ndarray
    inertia_: float
    n_iter_: int
    objective_history_: np.ndarray
    n_features_in_: int

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: Any = "k-means++",
        n_init: int = 1,
        max_iter: int = 300,
        tol: float = 1e-4,
        seed: Any = None,
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed
        self.memory_budget_bytes = memory_budget_bytes

    # ------------------------------------------------------------ validation
    def _check_params(self) -> None:
        check_positive_int("n_clusters", self.n_clusters)
        check_positive_int("n_init", self.n_init)
        check_positive_int("max_iter", self.max_iter)
        check_float("tol", self.tol, low=0.0)
        check_positive_int("memory_budget_bytes", self.memory_budget_bytes)
        if isinstance(self.init, str):
            if self.init not in ("k-means++", "random"):
                raise ValueError(
                    f"init must be 'k-means++', 'random' or an array; got {self.init!r}"
                )
        elif not hasattr(self.init, "__array__") and not isinstance(self.init, (list, tuple)):
            raise TypeError(
                "init must be 'k-means++', 'random' or an array of shape "
                f"(n_clusters, n_features); got {type(self.init).__name__}"
            )

    def _check_fitted(self) -> None:
        if not hasattr(self, "cluster_centers_"):
            raise not_fitted_error(
                "this KMeans instance is not fitted yet; call fit(X) first"
            )

    def __sklearn_is_fitted__(self) -> bool:
        """Whether :meth:`fit` has run (scikit-learn's ``check_is_fitted`` asks this)."""
        return hasattr(self, "cluster_centers_")

    def _check_init_array(self, n_features: int, dtype: np.dtype[Any]) -> np.ndarray:
        init = check_array(self.init, name="init", n_features=n_features)
        if init.shape[0] != self.n_clusters:
            raise ValueError(
                f"init has {init.shape[0]} centers but n_clusters={self.n_clusters}"
            )
        return init.astype(dtype, copy=True)

    # ---------------------------------------------------------------- public
    def fit(self, X: Any, y: Any = None, *, sample_weight: Any = None) -> KMeans:
        """Compute k-means clustering.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights (default: all ones).

        Returns
        -------
        self : KMeans
        """
        self._check_params()
        X = check_array(X)
        n, d = X.shape
        k = check_n_clusters(self.n_clusters, n)
        w = None if sample_weight is None else check_sample_weight(sample_weight, n)
        init_array = None
        if not isinstance(self.init, str):
            init_array = self._check_init_array(d, X.dtype)
        rng = check_random_state(self.seed)
        # ---- everything validated; no state touched before this point ----
        x_sq = _row_norms_sq(X)
        n_runs = 1 if init_array is not None else self.n_init
        best: tuple[np.ndarray, np.ndarray, float, int, np.ndarray] | None = None
        for _ in range(n_runs):
            if init_array is not None:
                C0 = init_array
            elif self.init == "random":
                p = None if w is None else w / w.sum()
                C0 = X[rng.choice(n, size=k, replace=False, p=p)]
            else:
                C0, _ = _kmeans_plusplus(X, k, rng, x_sq=x_sq, sample_weight=w)
            res = _lloyd(
                X, C0, max_iter=self.max_iter, tol=self.tol, sample_weight=w,
                memory_budget_bytes=self.memory_budget_bytes, rng=rng, x_sq=x_sq,
            )
            if best is None or res[2] < best[2]:
                best = res
        assert best is not None  # n_runs >= 1
        C, labels, inertia, n_iter, history = best
        self.cluster_centers_ = C
        self.labels_ = labels
        self.inertia_ = float(inertia)
        self.n_iter_ = int(n_iter)
        self.objective_history_ = history
        self.n_features_in_ = d
        return self

    def fit_predict(self, X: Any, y: Any = None, *, sample_weight: Any = None) -> np.ndarray:
        """Fit and return ``labels_``."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def _check_X(self, X: Any) -> np.ndarray:
        self._check_fitted()
        return check_array(X, n_features=self.n_features_in_)

    def predict(self, X: Any) -> np.ndarray:
        """Index of the nearest center, shape (n_samples,), int64."""
        X = self._check_X(X)
        labels, _ = _assign(
            X, self.cluster_centers_.astype(X.dtype, copy=False),
            memory_budget_bytes=self.memory_budget_bytes,
        )
        return labels

    def transform(self, X: Any) -> np.ndarray:
        """Squared distances to every center, shape (n_samples, n_clusters)."""
        X = self._check_X(X)
        return _sq_distances(X, self.cluster_centers_.astype(X.dtype, copy=False))

    def fit_transform(self, X: Any, y: Any = None, *, sample_weight: Any = None) -> np.ndarray:
        """:meth:`fit`, then :meth:`transform` of ``X``, shape (n_samples, n_clusters)."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X: Any, y: Any = None) -> float:
        """Negative objective ``−Σ_i min_j ‖x_i − μ_j‖²`` of ``X``."""
        X = self._check_X(X)
        _, d2 = _assign(
            X, self.cluster_centers_.astype(X.dtype, copy=False),
            memory_budget_bytes=self.memory_budget_bytes,
        )
        return -float(d2.sum(dtype=np.float64))

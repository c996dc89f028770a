"""Batch k-means: Lloyd's algorithm with chunked distances.

One iteration is an *update* step (every center moves to the weighted mean of
its points) followed by an *assignment* step (every point moves to its nearest
center). Both steps can only lower ``J = Σ_i w_i ‖x_i − μ_{c_i}‖²``, so the
recorded objective is non-increasing.

Cost per iteration: the assignment is one ``O(n k d)`` GEMM in row chunks
(see :mod:`streamkm.cluster._distance`); the update is ``O(n_changed · k · d)``
because per-cluster sums are kept in float64 and only corrected for the
points whose label changed (plus an ``O(n)`` label comparison).
"""

from __future__ import annotations

import numpy as np

from ._distance import DEFAULT_MEMORY_BUDGET, _assign, _chunk_rows, _row_norms_sq, _sq_distances
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


def _accumulate(
    sums: np.ndarray,
    X: np.ndarray,
    idx: np.ndarray | None,
    new: np.ndarray,
    old: np.ndarray | None,
    w: np.ndarray | None,
    memory_budget_bytes: int,
) -> None:
    """Add ``w_i x_i`` to ``sums[new_i]`` and subtract it from ``sums[old_i]``.

    In place on ``sums`` (float64, shape (k, d)). ``idx`` selects rows of ``X``
    (``None`` = all rows, in order). Rows are processed in chunks through a
    signed one-hot GEMM: exact row gathers, float32 products inside a chunk of
    at most a few thousand rows for float32 data, float64 across chunks.
    """
    k = sums.shape[0]
    m_total = X.shape[0] if idx is None else idx.shape[0]
    if m_total == 0:
        return
    dtype = X.dtype
    rows = _chunk_rows(m_total, k, dtype.itemsize, memory_budget_bytes)
    onehot = np.zeros((rows, k), dtype=dtype)
    for start in range(0, m_total, rows):
        stop = min(start + rows, m_total)
        m = stop - start
        r = np.arange(m)
        Xc = X[start:stop] if idx is None else X[idx[start:stop]]
        oh = onehot[:m]
        wc = 1.0 if w is None else w[start:stop]
        oh[r, new[start:stop]] = wc
        if old is not None:
            oh[r, old[start:stop]] = -wc
        sums += oh.T @ Xc
        oh[r, new[start:stop]] = 0
        if old is not None:
            oh[r, old[start:stop]] = 0


def _reseed_empty(
    X: np.ndarray,
    centers: np.ndarray,
    empty: np.ndarray,
    d2: np.ndarray,
    x_sq: np.ndarray,
    w: np.ndarray | None,
) -> int:
    """Place the centers of empty clusters on far-away points, in place.

    Farthest-first: the first empty cluster gets the point with the largest
    weighted squared distance ``w_i d2_i`` to its center; every further one
    the point farthest from both its center and the points already chosen.
    Modifies ``centers`` in place and returns how many clusters were re-seeded
    (fewer than ``len(empty)`` only if every point sits on a center; those
    keep their previous center, so nothing becomes NaN).

    An empty cluster holds no points, so moving its center leaves J of the
    current labels unchanged; the following assignment step can only lower
    J, and the chosen point moves to its new center there.
    """
    score = d2.astype(np.float64)
    if w is not None:
        score *= w
    done = 0
    for j in empty:
        i = int(np.argmax(score))
        if not score[i] > 0:
            break
        xi = X[i]
        centers[j] = xi
        dist = x_sq - 2.0 * (X @ xi) + x_sq[i]
        np.maximum(dist, 0, out=dist)
        if w is not None:
            dist = dist * w
        np.minimum(score, dist, out=score)
        score[i] = 0.0
        done += 1
    return done


def _lloyd(
    X: np.ndarray,
    centers: np.ndarray,
    *,
    max_iter: int,
    tol: float,
    sample_weight: np.ndarray | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    rng: np.random.Generator | None = None,
    x_sq: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float, int, np.ndarray]:
    """Lloyd iterations from ``centers``; assumes valid input.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float32 or float64
    centers : ndarray of shape (n_clusters, n_features)
        Starting centers (not modified; cast to ``X.dtype``).
    max_iter : int >= 1
        Maximum number of update+assignment iterations.
    tol : float >= 0
        Stop when ``(J_prev − J) <= tol · J_prev``.
    sample_weight : ndarray of shape (n_samples,), optional
    memory_budget_bytes : int
        Bound on each ``(rows, n_clusters)`` scratch block.
    rng : numpy.random.Generator, optional
        Unused: empty-cluster relocation is deterministic. Accepted so every
        kernel takes the same arguments.
    x_sq : ndarray of shape (n_samples,), optional
        Precomputed ``‖x‖²``.

    Returns
    -------
    centers : ndarray of shape (n_clusters, n_features), dtype of ``X``
    labels : ndarray of shape (n_samples,), int64
        Nearest center of every point for the returned centers.
    inertia : float
        ``J`` of the returned centers and labels.
    n_iter : int
        Iterations whose step was accepted.
    objective_history : ndarray of shape (n_iter + 1,), float64
        ``J`` after the initial assignment and after every iteration;
        non-increasing. A step that would raise ``J`` (possible only through
        rounding at convergence) is discarded and iteration stops.
    """
    dtype = X.dtype
    k = centers.shape[0]
    w = sample_weight
    C = np.array(centers, dtype=dtype, order="C", copy=True)
    if x_sq is None:
        x_sq = _row_norms_sq(X)

    def objective(d2: np.ndarray) -> float:
        if w is None:
            return float(d2.sum(dtype=np.float64))
        return float(np.dot(d2.astype(np.float64), w))

    labels, d2 = _assign(X, C, x_sq=x_sq, memory_budget_bytes=memory_budget_bytes)
    J = objective(d2)
    history = [J]
    sums = np.zeros((k, X.shape[1]), dtype=np.float64)
    _accumulate(sums, X, None, labels, None, w, memory_budget_bytes)
    n_iter = 0
    for _ in range(max_iter):
        counts = np.bincount(labels, minlength=k)
        wcounts = counts if w is None else np.bincount(labels, weights=w, minlength=k)
        C_new = C.copy()
        nz = wcounts > 0
        C_new[nz] = sums[nz] / wcounts[nz, None]
        if not nz.all():
            _reseed_empty(X, C_new, np.flatnonzero(~nz), d2, x_sq, w)
        new_labels, new_d2 = _assign(
            X, C_new, x_sq=x_sq, memory_budget_bytes=memory_budget_bytes
        )
        J_new = objective(new_d2)
        if J_new > J:
            break
        changed = np.flatnonzero(new_labels != labels)
        if changed.size:  # sums are only touched once the step is accepted
            _accumulate(
                sums, X, changed, new_labels[changed], labels[changed],
                None if w is None else w[changed], memory_budget_bytes,
            )
        C, labels, d2 = C_new, new_labels, new_d2
        n_iter += 1
        history.append(J_new)
        converged = changed.size == 0 or (J - J_new) <= tol * J
        J = J_new
        if converged:
            break
    return C, labels, J, n_iter, np.asarray(history, dtype=np.float64)


class KMeans:
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
    accumulated in float64. Empty clusters are re-seeded at the points
    farthest from their centers, which never increases ``J``.

    References
    ----------
    S. Lloyd, "Least squares quantization in PCM", IEEE Trans. Inf. Theory
    28(2), 1982. D. Arthur and S. Vassilvitskii, "k-means++: The Advantages
    of Careful Seeding", SODA 2007.

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

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init="k-means++",
        n_init: int = 1,
        max_iter: int = 300,
        tol: float = 1e-4,
        seed=None,
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
            raise ValueError(
                "this KMeans instance is not fitted yet; call fit(X) first"
            )

    def _check_init_array(self, n_features: int, dtype) -> np.ndarray:
        init = check_array(self.init, name="init", n_features=n_features)
        if init.shape[0] != self.n_clusters:
            raise ValueError(
                f"init has {init.shape[0]} centers but n_clusters={self.n_clusters}"
            )
        return init.astype(dtype, copy=True)

    # ---------------------------------------------------------------- public
    def fit(self, X, y=None, *, sample_weight=None) -> "KMeans":
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
        best = None
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
        C, labels, inertia, n_iter, history = best
        self.cluster_centers_ = C
        self.labels_ = labels
        self.inertia_ = float(inertia)
        self.n_iter_ = int(n_iter)
        self.objective_history_ = history
        self.n_features_in_ = d
        return self

    def fit_predict(self, X, y=None, *, sample_weight=None) -> np.ndarray:
        """Fit and return ``labels_``."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def _check_X(self, X) -> np.ndarray:
        self._check_fitted()
        X = check_array(X, n_features=self.n_features_in_)
        return X

    def predict(self, X) -> np.ndarray:
        """Index of the nearest center, shape (n_samples,), int64."""
        X = self._check_X(X)
        labels, _ = _assign(
            X, self.cluster_centers_.astype(X.dtype, copy=False),
            memory_budget_bytes=self.memory_budget_bytes,
        )
        return labels

    def transform(self, X) -> np.ndarray:
        """Squared distances to every center, shape (n_samples, n_clusters)."""
        X = self._check_X(X)
        return _sq_distances(X, self.cluster_centers_.astype(X.dtype, copy=False))

    def score(self, X, y=None) -> float:
        """Negative objective ``−Σ_i min_j ‖x_i − μ_j‖²`` of ``X``."""
        X = self._check_X(X)
        _, d2 = _assign(
            X, self.cluster_centers_.astype(X.dtype, copy=False),
            memory_budget_bytes=self.memory_budget_bytes,
        )
        return -float(d2.sum(dtype=np.float64))

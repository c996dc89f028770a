"""Chunked squared Euclidean distances and nearest-center assignment.

Squared distances use the expansion ``‖x − μ‖² = ‖x‖² − 2 x·μ + ‖μ‖²`` so the
heavy part is one GEMM per row chunk. The ``(n, k)`` matrix is never
materialized as a whole: rows are processed in chunks whose ``(rows, k)``
block fits ``memory_budget_bytes`` (and, for speed, a cache-sized cap), and
only the per-row argmin and minimum are kept. ``‖x‖²`` does not change the
argmin, so it is added to the minimum only (one pass over ``X`` per call,
not per chunk). Rounding in the expansion can make tiny distances negative;
they are clamped at 0.

All functions are private kernels: they assume validated, finite, 2-D,
C-contiguous float32/float64 input with matching dtypes and do not modify
their arguments (only the scratch arrays of a :class:`_Workspace` passed to
them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "COLUMNWISE_MAX_D", "COLUMNWISE_MAX_K", "_Workspace", "_assign", "_chunk_rows", "_colwise_argmin",
    "_min_sq_dist", "_neg2_t", "_row_norms_sq", "_sq_distances",
]

DEFAULT_MEMORY_BUDGET = 64 * 2**20

#: Upper bound on the rows of one distance block. Past a few thousand rows a
#: bigger block no longer speeds up the GEMM, while the element-wise passes
#: (add ‖μ‖², argmin) start streaming through main memory instead of cache.
MAX_CHUNK_ROWS = 4096

#: Up to this many centers and features the nearest center is found column by column on
#: the transposed ``(k, rows)`` block (see :func:`_colwise_argmin`): NumPy's row-wise
#: ``argmin`` costs 60-70 ns per row for short rows (a scalar loop per row), more than the
#: whole GEMM when k and d are small; the transposed GEMM is slower than the row-major
#: one by more than that saving once d is larger (measured, one OpenBLAS thread).
COLUMNWISE_MAX_K = 64
COLUMNWISE_MAX_D = 32


class _Workspace:
    """Scratch arrays kept between calls of the same estimator.

    A mini-batch update allocates the same few arrays for every batch (the
    distance block, row offsets, the one-hot matrix of the sums); keeping
    them saves the allocation and the first-touch page faults. Arrays are
    keyed by name and rebuilt when the requested shape or dtype changes.
    Not thread-safe: one workspace per estimator, used by one thread at a
    time (as the estimator itself is).
    """

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: dict[str, tuple[Any, Any]] = {}

    def get(self, name: str, key: Any, make: Callable[[], Any]) -> Any:
        """The object stored under ``name`` if it was made for ``key``, else ``make()``."""
        item = self._items.get(name)
        if item is not None and item[0] == key:
            return item[1]
        obj = make()
        self._items[name] = (key, obj)
        return obj

    def put(self, name: str, key: Any, obj: Any) -> None:
        """Store ``obj`` under ``name`` for ``key`` (replacing what was there)."""
        self._items[name] = (key, obj)

    def take(self, name: str, key: Any) -> Any:
        """The object stored under ``name`` if it was stored for this very ``key`` object, else None.

        Identity, not equality: for results tied to one array (e.g. the one-hot matrix of
        one labels array). The entry is removed.
        """
        item = self._items.pop(name, None)
        if item is not None and item[0] is key:
            return item[1]
        return None

    def empty(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """An uninitialized array of ``shape`` and ``dtype`` (reused when it fits exactly)."""
        dt = np.dtype(dtype)
        arr: np.ndarray = self.get(name, (shape, dt), lambda: np.empty(shape, dtype=dt))
        return arr


def _row_norms_sq(X: np.ndarray) -> np.ndarray:
    """Squared L2 norm of every row, shape (n,), dtype of ``X``.

    Row by row (the same value for a row whatever the rows around it).
    """
    out: np.ndarray = np.einsum("ij,ij->i", X, X)
    return out


def _neg2_t(centers: np.ndarray, dtype: Any) -> np.ndarray:
    """``−2 μᵀ`` as a C-contiguous (n_features, n_clusters) GEMM operand in ``dtype``.

    Folding −2 into the operand saves one pass over every distance block
    (multiplying by −2 is exact).
    """
    C = np.asarray(centers, dtype=dtype)
    out = np.empty(C.shape[::-1], dtype=C.dtype)
    np.multiply(C.T, -2.0, out=out)
    return out


def _colwise_argmin(Dt: np.ndarray, eq: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index (lowest on ties) and value of the minimum of every column of ``Dt`` (k, m).

    Branch-free and vectorized along the m columns: the minimum is one
    vertical reduction, and the index of the (usually single) row equal to it
    is ``Σ_j j · [D_j = min]``, computed with the count ``Σ_j [D_j = min]`` in
    one small GEMM (exact: integers in float32). Columns with a tie (count > 1)
    take the first equal row. Same result as ``Dt.argmin(axis=0)`` and
    ``Dt.min(axis=0)``. ``eq`` is an optional float32 scratch array of
    ``Dt``'s shape; on return it holds the (k, m) one-hot matrix of the labels
    (the equality mask, its ties cleared). ``Dt`` is not modified.
    """
    k, m = Dt.shape
    mn: np.ndarray = np.minimum.reduce(Dt, axis=0)
    if eq is None:
        eq = np.empty((k, m), dtype=np.float32)
    np.copyto(eq, np.equal(Dt, mn))
    weights = np.ones((2, k), dtype=np.float32)
    weights[0] = np.arange(k, dtype=np.float32)
    sums = weights @ eq  # row 0: Σ j·[D_j = min]; row 1: how many rows are equal to it
    labels = sums[0].astype(np.int64)
    ties = np.flatnonzero(sums[1] > 1.0)
    if ties.size:
        labels[ties] = eq[:, ties].argmax(axis=0)
        eq[:, ties] = 0.0
        eq[labels[ties], ties] = 1.0
    return labels, mn


def _chunk_rows(
    n_samples: int,
    n_cols: int,
    itemsize: int,
    memory_budget_bytes: int,
    *,
    max_rows: int | None = MAX_CHUNK_ROWS,
) -> int:
    """Rows per chunk so a ``(rows, n_cols)`` block fits the memory budget.

    Always at least 1 row (a budget smaller than one row still makes
    progress) and at most ``n_samples`` (and ``max_rows`` when given).
    """
    per_row = max(1, n_cols * itemsize)
    rows = max(1, int(memory_budget_bytes) // per_row)
    if max_rows is not None:
        rows = min(rows, max_rows)
    return max(1, min(rows, max(1, n_samples)))


def _assign(
    X: np.ndarray,
    centers: np.ndarray,
    *,
    x_sq: np.ndarray | None = None,
    c_sq: np.ndarray | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    neg2_ct: np.ndarray | None = None,
    work: _Workspace | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest center of every row of ``X``, in row chunks.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    centers : ndarray of shape (n_clusters, n_features)
        Same dtype as ``X`` (cast otherwise).
    x_sq : ndarray of shape (n_samples,), optional
        Precomputed ``‖x‖²`` (:func:`_row_norms_sq` of ``X``); computed here
        otherwise, in one pass.
    c_sq : ndarray of shape (n_clusters,), optional
        Precomputed ``‖μ‖²``.
    memory_budget_bytes : int
        Bound on the size of one ``(rows, n_clusters)`` distance block.
    neg2_ct : ndarray of shape (n_features, n_clusters), optional
        Precomputed :func:`_neg2_t` of ``centers`` (the GEMM operand).
    work : _Workspace, optional
        Where to keep the distance block between calls; modified.

    Returns
    -------
    labels : ndarray of shape (n_samples,), int64
        Index of the nearest center (lowest index on ties).
    min_sq : ndarray of shape (n_samples,), dtype of ``X``
        Squared distance to that center, clamped at 0.

    Notes
    -----
    The result does not depend on ``x_sq``/``c_sq``/``neg2_ct`` being given
    or computed here, nor on ``work``: the same arrays go through the same
    operations, so every caller (``partial_fit``, ``assign``, ``summarize``)
    gets the same bits for the same rows, centers and chunk size.
    """
    n = X.shape[0]
    k = centers.shape[0]
    dtype = X.dtype
    if neg2_ct is None:
        neg2_ct = _neg2_t(centers, dtype)
    if c_sq is None:
        c_sq = _row_norms_sq(np.asarray(centers, dtype=dtype))
    c_sq = np.asarray(c_sq, dtype=dtype)
    if x_sq is None:
        x_sq = _row_norms_sq(X)
    labels = np.empty(n, dtype=np.int64)
    min_sq = np.empty(n, dtype=dtype)
    rows = _chunk_rows(n, k, dtype.itemsize, memory_budget_bytes)
    if k <= COLUMNWISE_MAX_K and X.shape[1] <= COLUMNWISE_MAX_D:
        # Transposed blocks (k, rows): −2 μ·x for every center in a row of the block.
        if work is None:
            flat = np.empty(rows * k, dtype=dtype)
            eq = np.empty(rows * k, dtype=np.float32)
        else:
            flat = work.empty("assign_block", (rows * k,), dtype)
            eq = work.empty("assign_eq", (rows * k,), np.float32)
        c_col = c_sq[:, None]
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            m = stop - start
            Dt = flat[: k * m].reshape(k, m)
            np.matmul(neg2_ct.T, X[start:stop].T, out=Dt)  # −2 μ·x
            Dt += c_col  # ‖μ‖² − 2 μ·x  (‖x‖² does not change the argmin)
            eq_block = eq[: k * m].reshape(k, m)
            lab, mins = _colwise_argmin(Dt, eq_block)
            labels[start:stop] = lab
            np.add(mins, x_sq[start:stop], out=min_sq[start:stop])
        np.maximum(min_sq, 0, out=min_sq)
        if work is not None and rows >= n and dtype == np.float32:
            # One block: eq is the one-hot matrix of all the labels; _cluster_sums reuses it.
            work.put("assign_onehot", labels, eq_block)
        return labels, min_sq
    if work is None:
        block = np.empty((rows, k), dtype=dtype)
        row_offsets = np.arange(rows, dtype=np.int64) * k
    else:
        block = work.empty("assign_block", (rows, k), dtype)
        row_offsets = work.get("assign_offsets", (rows, k), lambda: np.arange(rows, dtype=np.int64) * k)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        m = stop - start
        D = block[:m]
        np.matmul(X[start:stop], neg2_ct, out=D)  # −2 x·μ
        D += c_sq  # ‖μ‖² − 2 x·μ  (‖x‖² does not change the argmin)
        lab = labels[start:stop]
        D.argmin(axis=1, out=lab)
        mins = min_sq[start:stop]
        D.ravel().take(row_offsets[:m] + lab, out=mins)  # D[r, lab[r]]
        mins += x_sq[start:stop]
    np.maximum(min_sq, 0, out=min_sq)
    return labels, min_sq


def _min_sq_dist(
    X: np.ndarray,
    centers: np.ndarray,
    *,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
) -> np.ndarray:
    """Squared distance of every row of ``X`` to its nearest center (clamped at 0).

    :func:`_assign` without the labels: on transposed (k, rows) blocks the
    minimum is a single vertical reduction, so no argmin is needed.
    """
    n, k = X.shape[0], centers.shape[0]
    dtype = X.dtype
    neg2_ct = _neg2_t(centers, dtype)
    c_col = _row_norms_sq(np.asarray(centers, dtype=dtype))[:, None]
    x_sq = _row_norms_sq(X)
    out = np.empty(n, dtype=dtype)
    rows = _chunk_rows(n, k, dtype.itemsize, memory_budget_bytes)
    flat = np.empty(rows * k, dtype=dtype)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        Dt = flat[: k * (stop - start)].reshape(k, stop - start)
        np.matmul(neg2_ct.T, X[start:stop].T, out=Dt)
        Dt += c_col
        np.add(np.minimum.reduce(Dt, axis=0), x_sq[start:stop], out=out[start:stop])
    np.maximum(out, 0, out=out)
    return out


def _sq_distances(
    X: np.ndarray,
    centers: np.ndarray,
    *,
    x_sq: np.ndarray | None = None,
    c_sq: np.ndarray | None = None,
) -> np.ndarray:
    """Full ``(n_samples, n_clusters)`` matrix of squared distances (>= 0).

    Use only when the whole matrix is wanted (``transform``); for the nearest
    center use :func:`_assign`, which never holds the full matrix.
    """
    dtype = X.dtype
    centers = np.asarray(centers, dtype=dtype)
    if x_sq is None:
        x_sq = _row_norms_sq(X)
    if c_sq is None:
        c_sq = _row_norms_sq(centers)
    D: np.ndarray = np.matmul(X, (-2.0 * centers).T.astype(dtype, copy=False))
    D += np.asarray(x_sq, dtype=dtype)[:, None]
    D += np.asarray(c_sq, dtype=dtype)[None, :]
    np.maximum(D, 0, out=D)
    return D

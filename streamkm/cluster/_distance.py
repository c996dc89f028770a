"""Chunked squared Euclidean distances and nearest-center assignment.

Squared distances use the expansion ``‖x − μ‖² = ‖x‖² − 2 x·μ + ‖μ‖²`` so the
heavy part is one GEMM per row chunk. The ``(n, k)`` matrix is never
materialized as a whole: rows are processed in chunks whose ``(rows, k)``
block fits ``memory_budget_bytes`` (and, for speed, a cache-sized cap), and
only the per-row argmin and minimum are kept. Rounding in the expansion can
make tiny distances negative; they are clamped at 0.

All functions are private kernels: they assume validated, finite, 2-D,
C-contiguous float32/float64 input with matching dtypes and do not modify
their arguments.
"""

from __future__ import annotations

import numpy as np

__all__ = ["_assign", "_sq_distances", "_row_norms_sq", "_chunk_rows"]

DEFAULT_MEMORY_BUDGET = 64 * 2**20

#: Upper bound on the rows of one distance block. Past a few thousand rows a
#: bigger block no longer speeds up the GEMM, while the element-wise passes
#: (add ‖μ‖², argmin) start streaming through main memory instead of cache.
MAX_CHUNK_ROWS = 4096


def _row_norms_sq(X: np.ndarray) -> np.ndarray:
    """Squared L2 norm of every row, shape (n,), dtype of ``X``."""
    out: np.ndarray = np.einsum("ij,ij->i", X, X)
    return out


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
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest center of every row of ``X``, in row chunks.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    centers : ndarray of shape (n_clusters, n_features)
        Same dtype as ``X`` (cast otherwise).
    x_sq : ndarray of shape (n_samples,), optional
        Precomputed ``‖x‖²`` (saves one pass over ``X`` per call).
    c_sq : ndarray of shape (n_clusters,), optional
        Precomputed ``‖μ‖²``.
    memory_budget_bytes : int
        Bound on the size of one ``(rows, n_clusters)`` distance block.

    Returns
    -------
    labels : ndarray of shape (n_samples,), int64
        Index of the nearest center (lowest index on ties).
    min_sq : ndarray of shape (n_samples,), dtype of ``X``
        Squared distance to that center, clamped at 0.
    """
    n = X.shape[0]
    k = centers.shape[0]
    dtype = X.dtype
    centers = np.asarray(centers, dtype=dtype)
    if c_sq is None:
        c_sq = _row_norms_sq(centers)
    c_sq = np.asarray(c_sq, dtype=dtype)
    # -2 μᵀ folded into the GEMM operand saves one pass over every block.
    neg2_ct = np.ascontiguousarray((-2.0 * centers).T, dtype=dtype)
    labels = np.empty(n, dtype=np.int64)
    min_sq = np.empty(n, dtype=dtype)
    rows = _chunk_rows(n, k, dtype.itemsize, memory_budget_bytes)
    block = np.empty((rows, k), dtype=dtype)
    row_offsets = np.arange(rows, dtype=np.int64) * k  # flat index of D[r, 0]
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        m = stop - start
        Xc = X[start:stop]
        D = block[:m]
        np.matmul(Xc, neg2_ct, out=D)  # −2 x·μ
        D += c_sq  # ‖μ‖² − 2 x·μ  (‖x‖² does not change the argmin)
        lab = D.argmin(axis=1)
        labels[start:stop] = lab
        mins = D.ravel()[row_offsets[:m] + lab]  # D[r, lab[r]]
        xs = _row_norms_sq(Xc) if x_sq is None else x_sq[start:stop]
        np.add(mins, xs, out=min_sq[start:stop])
    np.maximum(min_sq, 0, out=min_sq)
    return labels, min_sq


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

"""Lloyd kernels for batch k-means: chunked assignment, Hamerly pruning, sums.

Private kernels behind :class:`~streamkm.cluster.kmeans.KMeans` (and the
initialization/reseeding of :class:`~streamkm.cluster.StreamingKMeans`). They
assume validated input; each says which arrays it modifies in place. The
algorithm and its cost are explained in ``docs/kmeans.md`` (section 2).
"""

from __future__ import annotations

import numpy as np

from ._distance import DEFAULT_MEMORY_BUDGET, _chunk_rows, _row_norms_sq

__all__ = ["_accumulate", "_assign_top2", "_lloyd", "_own_sq_dist", "_reseed_empty"]


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


def _assign_top2(
    X: np.ndarray,
    centers: np.ndarray,
    c_sq: np.ndarray,
    x_sq: np.ndarray,
    idx: np.ndarray | None,
    memory_budget_bytes: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest and second-nearest squared distances for rows ``idx`` of ``X``.

    Like :func:`~streamkm.cluster._distance._assign` (chunked GEMM expansion,
    clamped at 0) but also returns the second smallest squared distance
    (``inf`` when there is one center). ``idx=None`` means every row.
    Returns ``(labels int64, best, second)`` for the selected rows.
    """
    n = X.shape[0] if idx is None else idx.shape[0]
    k = centers.shape[0]
    dtype = X.dtype
    neg2_ct = np.ascontiguousarray((-2.0 * centers).T, dtype=dtype)
    labels = np.empty(n, dtype=np.int64)
    best = np.empty(n, dtype=dtype)
    second = np.full(n, np.inf, dtype=dtype)
    rows = _chunk_rows(n, k, dtype.itemsize, memory_budget_bytes)
    block = np.empty((rows, k), dtype=dtype)
    offsets = np.arange(rows, dtype=np.int64) * k
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        m = stop - start
        if idx is None:
            Xc, xs = X[start:stop], x_sq[start:stop]
        else:
            sel = idx[start:stop]
            Xc, xs = X[sel], x_sq[sel]
        D = block[:m]
        np.matmul(Xc, neg2_ct, out=D)
        D += c_sq
        flat = D.ravel()
        lab = D.argmin(axis=1)
        pos = offsets[:m] + lab
        labels[start:stop] = lab
        np.add(flat[pos], xs, out=best[start:stop])
        if k > 1:
            flat[pos] = np.inf
            lab2 = D.argmin(axis=1)
            np.add(flat[offsets[:m] + lab2], xs, out=second[start:stop])
    np.maximum(best, 0, out=best)
    np.maximum(second, 0, out=second)
    return labels, best, second


def _own_sq_dist(
    X: np.ndarray,
    centers: np.ndarray,
    labels: np.ndarray,
    idx: np.ndarray | None,
    memory_budget_bytes: int,
) -> np.ndarray:
    """``‖x_i − μ_{labels_i}‖²`` computed from the difference (no cancellation).

    ``idx`` selects rows of ``X`` (``labels`` then has ``len(idx)`` entries);
    ``None`` means every row. O(n·d), chunked.
    """
    n = X.shape[0] if idx is None else idx.shape[0]
    d = X.shape[1]
    out = np.empty(n, dtype=X.dtype)
    rows = _chunk_rows(n, d, X.dtype.itemsize, memory_budget_bytes)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        Xc = X[start:stop] if idx is None else X[idx[start:stop]]
        G = centers.take(labels[start:stop], axis=0)
        np.subtract(Xc, G, out=G)
        out[start:stop] = np.einsum("ij,ij->i", G, G)
    return out


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
    prune: bool = True,
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
    prune : bool, default=True
        Skip the distance computation for points whose label provably cannot
        change (Hamerly's bounds, see Notes). ``False`` recomputes all
        ``n × k`` distances every iteration; both give the same iterates up
        to floating-point near-ties.

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

    Notes
    -----
    Pruning (Hamerly 2010): every point keeps a lower bound ``l_i`` on its
    distance to every center other than its own. After the update step moves
    center ``j`` by ``δ_j``, ``l_i`` drops by the largest ``δ`` of the other
    centers, and the exact distance ``u_i`` to the point's own (moved) center
    is recomputed in O(d). If ``u_i <= max(l_i, s_{c_i})``, with ``s_j`` half
    the distance from center ``j`` to its nearest other center, no other
    center can be closer and the point is skipped; only the remaining points
    go through the chunked GEMM. The exact ``u_i`` also gives the exact
    objective. A label changes only if the new center is strictly closer by
    the exact distance, so J never increases through rounding.

    References
    ----------
    G. Hamerly, "Making k-means even faster", SDM 2010.
    """
    dtype = X.dtype
    n, k = X.shape[0], centers.shape[0]
    w = sample_weight
    budget = memory_budget_bytes
    C = np.array(centers, dtype=dtype, order="C", copy=True)
    if x_sq is None:
        x_sq = _row_norms_sq(X)
    eps = float(np.finfo(dtype).eps)

    def objective(d2: np.ndarray) -> float:
        if w is None:
            return float(d2.sum(dtype=np.float64))
        return float(np.dot(d2.astype(np.float64), w))

    def lower_bound(sq: np.ndarray, rows_x_sq: np.ndarray, c_sq: np.ndarray) -> np.ndarray:
        # the GEMM expansion may overstate a squared distance by a rounding
        # error of order eps·(‖x‖² + ‖μ‖²): subtract a safe margin.
        margin = 8.0 * eps * (rows_x_sq.astype(np.float64) + float(c_sq.max()))
        return np.sqrt(np.maximum(sq.astype(np.float64) - margin, 0.0))

    c_sq = _row_norms_sq(C)
    labels, _, second = _assign_top2(X, C, c_sq, x_sq, None, budget)
    d_own = _own_sq_dist(X, C, labels, None, budget)
    lower = lower_bound(second, x_sq, c_sq)
    J = objective(d_own)
    history = [J]
    sums = np.zeros((k, X.shape[1]), dtype=np.float64)
    _accumulate(sums, X, None, labels, None, w, budget)
    n_iter = 0
    for _ in range(max_iter):
        counts = np.bincount(labels, minlength=k)
        wcounts = counts if w is None else np.bincount(labels, weights=w, minlength=k)
        C_new = C.copy()
        nz = wcounts > 0
        C_new[nz] = sums[nz] / wcounts[nz, None]
        if not nz.all():
            _reseed_empty(X, C_new, np.flatnonzero(~nz), d_own, x_sq, w)
        # Update step done: exact distance of every point to its own center.
        d_post = _own_sq_dist(X, C_new, labels, None, budget)
        J_post = objective(d_post)
        if J_post > J:
            break  # rounding at convergence; nothing has been modified
        c_sq = _row_norms_sq(C_new)
        C64, Cn64 = C.astype(np.float64), C_new.astype(np.float64)
        if prune and k > 1:
            shift = np.sqrt(((Cn64 - C64) ** 2).sum(axis=1))
            j1 = int(np.argmax(shift))
            m1 = shift[j1]
            m2 = float(np.max(np.delete(shift, j1)))
            lower -= np.where(labels == j1, m2, m1)
            # center-center squared distances by the Gram expansion (k × k,
            # float64), less a margin for its rounding so the bound stays safe
            cn_sq = np.einsum("ij,ij->i", Cn64, Cn64)
            cc = cn_sq[:, None] + cn_sq[None, :] - 2.0 * (Cn64 @ Cn64.T)
            cc -= 1e-12 * (cn_sq[:, None] + cn_sq[None, :])
            np.fill_diagonal(cc, np.inf)
            half_gap = 0.5 * np.sqrt(np.maximum(cc.min(axis=1), 0.0))
            u = np.sqrt(d_post.astype(np.float64)) * (1.0 + 8.0 * eps)
            cand = np.flatnonzero(u > np.maximum(lower, half_gap[labels]))
        else:
            cand = np.arange(n) if k > 1 else np.empty(0, dtype=np.int64)
        moved = np.empty(0, dtype=np.int64)
        if cand.size:
            use_idx = None if cand.size > n // 2 else cand
            lab_c, best_c, sec_c = _assign_top2(X, C_new, c_sq, x_sq, use_idx, budget)
            if use_idx is None:
                cand = np.arange(n)
            old = labels[cand]
            xs_c = x_sq[cand]
            new_lower = lower_bound(sec_c, xs_c, c_sq)
            mv = np.flatnonzero(lab_c != old)
            if mv.size:
                rows = cand[mv]
                d_new = _own_sq_dist(X, C_new, lab_c[mv], rows, budget)
                ok = d_new < d_post[rows]
                # a rejected move (near-tie): the best other center is at
                # distance >= best_c, a valid lower bound for the old label
                rej = mv[~ok]
                new_lower[rej] = lower_bound(best_c[rej], xs_c[rej], c_sq)
                moved = rows[ok]
                new_lab = lab_c[mv][ok]
                if moved.size:
                    _accumulate(
                        sums, X, moved, new_lab, labels[moved],
                        None if w is None else w[moved], budget,
                    )
                    labels[moved] = new_lab
                    d_post[moved] = d_new[ok]
            lower[cand] = new_lower
        J_new = objective(d_post)
        C, d_own = C_new, d_post
        n_iter += 1
        history.append(J_new)
        converged = moved.size == 0 or (J - J_new) <= tol * J
        J = J_new
        if converged:
            break
    return C, labels, J, n_iter, np.asarray(history, dtype=np.float64)

"""Lloyd kernels for batch k-means: chunked assignment, Hamerly pruning, sums.

Private kernels behind :class:`~streamkm.cluster.kmeans.KMeans` (and the
initialization/reseeding of :class:`~streamkm.cluster.StreamingKMeans`). They
assume validated input; each says which arrays it modifies in place. The
algorithm and its cost are explained in ``docs/kmeans.md`` (section 2).
"""

from __future__ import annotations

import numpy as np

from ._distance import DEFAULT_MEMORY_BUDGET, _chunk_rows, _colwise_argmin, _neg2_t, _row_norms_sq

#: Up to this many centers :func:`_assign_top2` works on transposed (k, rows) blocks,
#: where both the nearest and the second nearest are vertical reductions.
_COLUMNWISE_TOP2_MAX_K = 64

#: Above this fraction of the rows :func:`_own_sq_dist` computes every row in order
#: (:func:`_own_sq_dist_in_order`) instead of gathering the selected ones (measured, one
#: thread, 100k × 32 and 200k × 64 float32: about break-even at 0.5 of the rows, 10-20 %
#: faster at 0.7).
_OWN_DENSE_FRACTION = 0.6

#: Size of the scratch block of :func:`_own_sq_dist` (rows × features): small enough to
#: stay in cache between its three passes.
_OWN_BLOCK_BYTES = 512 * 1024

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
    signed one-hot product, a sparse (k, rows) matrix with ``+w_i`` in row
    ``new_i`` and ``−w_i`` in row ``old_i`` of column ``i`` (SciPy adds each
    row of ``X`` into its two clusters: O(rows · d), no dense k-wide one-hot):
    exact row gathers, products in ``X``'s dtype inside a chunk of at most a
    few thousand rows, float64 across chunks.
    """
    from scipy.sparse import csc_array  # first use only: keeps ``import streamkm`` light

    k = sums.shape[0]
    m_total = X.shape[0] if idx is None else idx.shape[0]
    if m_total == 0:
        return
    dtype = X.dtype
    per = 1 if old is None else 2  # stored entries per column
    rows = _chunk_rows(m_total, k, dtype.itemsize, memory_budget_bytes)
    for start in range(0, m_total, rows):
        stop = min(start + rows, m_total)
        m = stop - start
        Xc = X[start:stop] if idx is None else X[idx[start:stop]]
        wc = np.ones(m, dtype=dtype) if w is None else np.asarray(w[start:stop], dtype=dtype)
        ind = np.empty(per * m, dtype=np.int32)
        val = np.empty(per * m, dtype=dtype)
        ind[0::per] = new[start:stop]
        val[0::per] = wc
        if old is not None:
            ind[1::per] = old[start:stop]
            np.negative(wc, out=val[1::per])
        onehot = csc_array((val, ind, np.arange(0, per * m + 1, per, dtype=np.int32)), shape=(k, m))
        sums += onehot @ Xc


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
    neg2_ct = _neg2_t(centers, dtype)
    labels = np.empty(n, dtype=np.int64)
    best = np.empty(n, dtype=dtype)
    second = np.full(n, np.inf, dtype=dtype)
    rows = _chunk_rows(n, k, dtype.itemsize, memory_budget_bytes)
    c_sq = np.asarray(c_sq, dtype=dtype)
    if k <= _COLUMNWISE_TOP2_MAX_K:
        flat = np.empty(rows * k, dtype=dtype)
        eq = np.empty(rows * k, dtype=np.float32)
        cols = np.arange(rows, dtype=np.int64)
        c_col = c_sq[:, None]
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            m = stop - start
            if idx is None:
                Xc, xs = X[start:stop], x_sq[start:stop]
            else:
                sel = idx[start:stop]
                Xc, xs = X[sel], x_sq[sel]
            Dt = flat[: k * m].reshape(k, m)
            np.matmul(neg2_ct.T, Xc.T, out=Dt)
            Dt += c_col
            lab, mins = _colwise_argmin(Dt, eq[: k * m].reshape(k, m))
            labels[start:stop] = lab
            np.add(mins, xs, out=best[start:stop])
            if k > 1:
                Dt[lab, cols[:m]] = np.inf
                np.add(np.minimum.reduce(Dt, axis=0), xs, out=second[start:stop])
        np.maximum(best, 0, out=best)
        np.maximum(second, 0, out=second)
        return labels, best, second
    block = np.empty((rows, k), dtype=dtype)
    offsets = np.arange(rows, dtype=np.int64) * k
    # ‖μ‖² tiled to a whole block once: adding it to every block is then a contiguous
    # add, several times faster than a broadcast over short rows (the same sums).
    c_add = np.broadcast_to(c_sq, (rows, k)).copy() if n > rows else c_sq
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
        D += c_add[:m] if c_add.ndim == 2 else c_add
        flat = D.ravel()
        lab = labels[start:stop]
        D.argmin(axis=1, out=lab)
        pos = offsets[:m] + lab
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
    if (idx is not None and _OWN_DENSE_FRACTION * X.shape[0] < idx.shape[0]
            and bool((idx[1:] > idx[:-1]).all())):
        return _own_sq_dist_in_order(X, centers, labels, idx, memory_budget_bytes)
    n = X.shape[0] if idx is None else idx.shape[0]
    d = X.shape[1]
    out = np.empty(n, dtype=X.dtype)
    rows = _chunk_rows(n, d, X.dtype.itemsize, min(memory_budget_bytes, _OWN_BLOCK_BYTES), max_rows=None)
    block = np.empty((rows, d), dtype=X.dtype)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        G = block[: stop - start]
        np.take(centers, labels[start:stop], axis=0, out=G, mode="clip")  # labels are valid
        Xc = X[start:stop] if idx is None else X[idx[start:stop]]
        np.subtract(Xc, G, out=G)
        np.einsum("ij,ij->i", G, G, out=out[start:stop])
    return out


def _own_sq_dist_in_order(
    X: np.ndarray,
    centers: np.ndarray,
    labels: np.ndarray,
    idx: np.ndarray,
    memory_budget_bytes: int,
) -> np.ndarray:
    """:func:`_own_sq_dist` for many rows ``idx`` (strictly increasing), without gathers.

    Gathering scattered rows of a large ``X`` waits on memory row by row; here every
    chunk of rows holding a selected row is computed in order (the unselected rows
    against whatever valid label the scratch holds) and the selected results are
    kept. A row's result does not depend on the rows around it, so the values are
    those of the gathered computation. Scratch memory is one chunk.
    """
    n_total, d = X.shape
    out = np.empty(idx.shape[0], dtype=X.dtype)
    rows = _chunk_rows(n_total, d, X.dtype.itemsize, min(memory_budget_bytes, _OWN_BLOCK_BYTES),
                       max_rows=None)
    block = np.empty((rows, d), dtype=X.dtype)
    dist = np.empty(rows, dtype=X.dtype)
    lab = np.zeros(rows, dtype=np.int64)
    starts = np.arange(0, n_total, rows)
    bounds = np.append(np.searchsorted(idx, starts), idx.shape[0])
    for c, start in enumerate(starts.tolist()):
        a, b = int(bounds[c]), int(bounds[c + 1])
        if a == b:
            continue
        stop = min(start + rows, n_total)
        m = stop - start
        loc = idx[a:b] - start
        lab[loc] = labels[a:b]  # the other rows keep some valid label
        G = block[:m]
        np.take(centers, lab[:m], axis=0, out=G, mode="clip")
        np.subtract(X[start:stop], G, out=G)
        np.einsum("ij,ij->i", G, G, out=dist[:m])
        np.take(dist, loc, out=out[a:b])
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
    # A computed squared distance (difference, square, sum of d terms) is within a
    # relative (d + 2)·eps of the true one; loosening an upper bound by this factor
    # after each update keeps it above any value the exact computation can return.
    slack = 1.0 + 4.0 * (X.shape[1] + 4) * eps

    def objective(d2: np.ndarray) -> float:
        if w is None:
            return float(d2.sum(dtype=np.float64))
        return float(np.dot(d2.astype(np.float64), w))

    def lower_bound(sq: np.ndarray, rows_x_sq: np.ndarray, c_sq: np.ndarray) -> np.ndarray:
        # the GEMM expansion may overstate a squared distance by a rounding
        # error of order eps·(‖x‖² + ‖μ‖²): subtract a safe margin.
        margin = 8.0 * eps * (rows_x_sq.astype(np.float64) + float(c_sq.max()))
        return np.sqrt(np.maximum(sq.astype(np.float64) - margin, 0.0))

    def exact_u(d2: np.ndarray) -> np.ndarray:
        # ‖x − μ‖ from an exactly computed squared distance, rounded up
        u: np.ndarray = np.sqrt(d2, dtype=np.float64)
        u *= 1.0 + 8.0 * eps
        return u

    c_sq = _row_norms_sq(C)
    labels, _, second = _assign_top2(X, C, c_sq, x_sq, None, budget)
    d_own = _own_sq_dist(X, C, labels, None, budget)  # exact ‖x − μ_label‖²
    own_exact = True  # d_own holds the exact distances to the current C
    lower = lower_bound(second, x_sq, c_sq)
    upper = exact_u(d_own)  # >= the exact-computation u of every point, kept valid below
    d_cur = np.empty(n, dtype=dtype)  # exact distances, valid for the rows computed this iteration
    J = objective(d_own)
    history = [J]
    sums = np.zeros((k, X.shape[1]), dtype=np.float64)
    _accumulate(sums, X, None, labels, None, w, budget)
    n_iter = 0
    counts = np.bincount(labels, minlength=k)  # kept up to date with the moves below
    for _ in range(max_iter):
        wcounts = counts if w is None else np.bincount(labels, weights=w, minlength=k)
        C_new = C.copy()
        nz = wcounts > 0
        means = sums[nz] / wcounts[nz, None]
        C_new[nz] = means
        if not nz.all():
            if not own_exact:
                d_own = _own_sq_dist(X, C, labels, None, budget)
                own_exact = True
            _reseed_empty(X, C_new, np.flatnonzero(~nz), d_own, x_sq, w)
        C64, Cn64 = C.astype(np.float64), C_new.astype(np.float64)
        # Update step, labels fixed: moving center j from μ to μ' changes its cost by
        # W_j (‖x̄_j − μ'‖² − ‖x̄_j − μ‖²), x̄_j the mean of its points (exact identity).
        gain = ((means - C64[nz]) ** 2).sum(axis=1) - ((means - Cn64[nz]) ** 2).sum(axis=1)
        J_post = J - float(np.dot(np.asarray(wcounts[nz], dtype=np.float64), gain))
        if J_post > J:
            break  # rounding at convergence; nothing has been modified
        own_exact = False
        c_sq = _row_norms_sq(C_new)
        thresh: np.ndarray | None = None
        if prune and k > 1:
            shift = np.sqrt(((Cn64 - C64) ** 2).sum(axis=1))
            j1 = int(np.argmax(shift))
            m1 = shift[j1]
            m2 = float(np.max(np.delete(shift, j1)))
            drop = np.full(k, m1)
            drop[j1] = m2
            lower -= drop[labels]  # m2 for the points of the center that moved most, m1 otherwise
            # center-center squared distances by the Gram expansion (k × k,
            # float64), less a margin for its rounding so the bound stays safe
            cn_sq = np.einsum("ij,ij->i", Cn64, Cn64)
            cc = cn_sq[:, None] + cn_sq[None, :] - 2.0 * (Cn64 @ Cn64.T)
            cc -= 1e-12 * (cn_sq[:, None] + cn_sq[None, :])
            np.fill_diagonal(cc, np.inf)
            half_gap = 0.5 * np.sqrt(np.maximum(cc.min(axis=1), 0.0))
            thresh = np.maximum(lower, half_gap[labels])
            upper += shift[labels]  # triangle inequality: the own center moved by its shift
            upper *= slack
            maybe = np.flatnonzero(upper > thresh)
        else:
            maybe = np.arange(n) if k > 1 else np.empty(0, dtype=np.int64)
        # Exact distance to the own (moved) center, only where the bound cannot rule out a
        # better center; the candidates are the points whose exact u still fails the test.
        d_maybe = _own_sq_dist(X, C_new, labels[maybe], maybe, budget)
        u_maybe = exact_u(d_maybe)
        upper[maybe] = u_maybe
        d_cur[maybe] = d_maybe
        del d_maybe
        cand = maybe if thresh is None else maybe[u_maybe > thresh[maybe]]
        del u_maybe
        moved = np.empty(0, dtype=np.int64)
        J_new = J_post
        if cand.size:
            # all rows in place when nearly all are candidates, else the candidates gathered
            use_idx = None if 10 * cand.size > 9 * n else cand
            lab_c, best_c, sec_c = _assign_top2(X, C_new, c_sq, x_sq, use_idx, budget)
            if use_idx is None:  # every row: no gathers
                cand = np.arange(n)
                old, xs_c = labels, x_sq  # read before any label changes below
            else:
                old, xs_c = labels[cand], x_sq[cand]
            new_lower = lower_bound(sec_c, xs_c, c_sq)
            mv = np.flatnonzero(lab_c != old)
            if mv.size:
                rows = cand[mv]
                if use_idx is None and maybe.size < n:  # rows whose exact distance is not known yet
                    known = np.zeros(n, dtype=bool)
                    known[maybe] = True
                    unknown = rows[~known[rows]]
                    d_cur[unknown] = _own_sq_dist(X, C_new, labels[unknown], unknown, budget)
                    upper[unknown] = exact_u(d_cur[unknown])
                d_new = _own_sq_dist(X, C_new, lab_c[mv], rows, budget)
                d_old = d_cur[rows]
                ok = d_new < d_old
                # a rejected move (near-tie): the best other center is at
                # distance >= best_c, a valid lower bound for the old label
                rej = mv[~ok]
                new_lower[rej] = lower_bound(best_c[rej], xs_c[rej], c_sq)
                moved = rows[ok]
                new_lab = lab_c[mv][ok]
                if moved.size:
                    old_lab = labels[moved]
                    _accumulate(
                        sums, X, moved, new_lab, old_lab,
                        None if w is None else w[moved], budget,
                    )
                    counts += np.bincount(new_lab, minlength=k)
                    counts -= np.bincount(old_lab, minlength=k)
                    labels[moved] = new_lab
                    d_in, d_out = d_new[ok], d_old[ok]
                    upper[moved] = exact_u(d_in)
                    # each move lowers J by its exact decrease of squared distance (> 0)
                    dec = d_out.astype(np.float64) - d_in.astype(np.float64)
                    J_new = J_post - float(dec.sum() if w is None else np.dot(dec, w[moved]))
            if use_idx is None:
                lower = new_lower
            else:
                lower[cand] = new_lower
        C = C_new
        n_iter += 1
        history.append(J_new)
        converged = moved.size == 0 or (J - J_new) <= tol * J
        J = J_new
        if converged:
            break
    return C, labels, J, n_iter, np.asarray(history, dtype=np.float64)

"""The fast paths of the mini-batch update (issue 12) compute exactly what the plain code does.

Column-wise argmin, the validation shortcut of ``partial_fit``, the sparse one-hot sums, the
update without gathers and the vectorized reservoir queue each replace a simpler computation;
these tests pin them to it (bit for bit where the claim is bit-identity).
"""

from __future__ import annotations

import numpy as np
import pytest

from streamkm.cluster import MAX_ABS_VALUE, StreamingKMeans, TimeBiasedReservoir, UniformReservoir
from streamkm.cluster._distance import COLUMNWISE_MAX_K, _assign, _colwise_argmin, _min_sq_dist, _Workspace
from streamkm.cluster._streaming import _apply_sums, _cluster_sums
from streamkm.cluster.reservoir import _last_wins
from tests.cluster.streaming_helpers import assert_state_equal


# ------------------------------------------------------------------ assignment
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 2, 3, 17, 64, 70])
def test_colwise_argmin_is_numpy_argmin_with_ties(dtype, k):
    rng = np.random.default_rng(k)
    for m in (1, 2, 33, 1000):
        D = rng.integers(0, 3, size=(k, m)).astype(dtype)  # many ties: lowest index must win
        D[:, : m // 3] = rng.normal(size=(k, m // 3))
        labels, mins = _colwise_argmin(D)
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(labels, D.argmin(axis=0))
        np.testing.assert_array_equal(mins, D.min(axis=0))


def _separated(rng, n, d, k, dtype):
    means = rng.normal(scale=20.0, size=(k, d))
    y = rng.integers(k, size=n)
    return (means[y] + rng.normal(size=(n, d))).astype(dtype), means.astype(dtype), y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 5, COLUMNWISE_MAX_K, COLUMNWISE_MAX_K + 1, 130])
def test_assign_both_layouts_give_the_nearest_center(dtype, k):
    rng = np.random.default_rng(3)
    X, C, y = _separated(rng, 3000, 9, k, dtype)
    work = _Workspace()
    labels, min_sq = _assign(X, C, work=work)
    ref = ((X.astype(np.float64)[:, None] - C.astype(np.float64)[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, ref.argmin(1))
    # the GEMM expansion loses about eps · (‖x‖² + ‖μ‖²) to cancellation
    scale = float(np.einsum("ij,ij->i", X, X).max() + np.einsum("ij,ij->i", C, C).max())
    np.testing.assert_allclose(min_sq, ref.min(1), rtol=0, atol=16 * np.finfo(dtype).eps * scale)
    # the workspace, the precomputed norms and a smaller budget change no bit
    again = _assign(X, C, work=work, x_sq=np.einsum("ij,ij->i", X, X))
    assert again[0].tobytes() == labels.tobytes() and again[1].tobytes() == min_sq.tobytes()
    chunked = _assign(X, C, memory_budget_bytes=k * X.itemsize * 100)
    np.testing.assert_array_equal(chunked[0], labels)


# ------------------------------------------------------------------ validation
def _fitted(dtype=np.float32):
    rng = np.random.default_rng(0)
    model = StreamingKMeans(n_clusters=3, seed=0, reservoir_size=50)
    model.partial_fit(rng.normal(size=(40, 4)).astype(dtype))
    return model


def _bad_inputs():
    ok = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    nan, inf, big, huge = ok.copy(), ok.copy(), ok.copy(), ok.copy()
    nan[2, 1] = np.nan
    inf[4, 3] = -np.inf
    big[1, 0] = 2 * MAX_ABS_VALUE
    huge[3, 2] = 1e30  # its square overflows float32
    return {"nan": nan, "inf": inf, "too-large": big, "overflow": huge,
            "width": ok[:, :3], "empty": ok[:0], "1-d": ok[0], "strings": np.array([["a"] * 4])}


@pytest.mark.parametrize("name", list(_bad_inputs()))
def test_fast_validation_rejects_like_check_array_and_changes_nothing(name):
    X = _bad_inputs()[name]
    model = _fitted()
    with pytest.raises((ValueError, TypeError)) as slow:
        model._validate_X(X)
    before = model.state_dict()
    with pytest.raises(type(slow.value)) as fast:
        model.partial_fit(X)
    assert str(fast.value) == str(slow.value)
    assert_state_equal(before, model.state_dict())


def test_fast_validation_accepts_what_check_array_accepts():
    model, ref = _fitted(), _fitted()
    rng = np.random.default_rng(2)
    # large but valid values: the squared-norm bound fails, the exact check accepts
    big = np.full((6, 4), 0.9 * MAX_ABS_VALUE, dtype=np.float32)
    big[::2] *= -1
    cases = [rng.normal(size=(7, 4)).astype(np.float32), big,
             np.asfortranarray(rng.normal(size=(7, 4)).astype(np.float32)),  # copied to C order
             rng.normal(size=(7, 4)),  # float64 into a float32 model: converted
             rng.integers(-5, 5, size=(7, 4))]
    for X in cases:
        model.partial_fit(X)
        ref._step(ref._validate_X(X))  # the plain path: validate, then the same step
        ref._end_batch(ref._validate_X(X), len(X), ref.n_seen_, True)
        assert_state_equal(model.state_dict(), ref.state_dict())


# ------------------------------------------------------------------ sums and update
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cluster_sums_are_the_per_cluster_sums(dtype):
    rng = np.random.default_rng(4)
    work = _Workspace()
    for m, k in ((1, 1), (50, 7), (1000, 64), (333, 300)):
        X = rng.normal(size=(m, 5)).astype(dtype)
        labels = rng.integers(k, size=m)
        counts, sums = _cluster_sums(X, labels, k, work=work)
        assert counts.dtype == np.int64 and sums.dtype == np.float64 and sums.shape == (k, 5)
        np.testing.assert_array_equal(counts, np.bincount(labels, minlength=k))
        ref = np.zeros((k, 5))
        np.add.at(ref, labels, X.astype(np.float64))
        np.testing.assert_allclose(sums, ref, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-4)
        assert np.all(sums[counts == 0] == 0)
        # with or without the kept one-hot matrix: the same bits
        assert _cluster_sums(X, labels, k)[1].tobytes() == sums.tobytes()


def test_apply_sums_leaves_empty_and_weightless_clusters_alone():
    rng = np.random.default_rng(5)
    centers = rng.normal(size=(5, 3))
    weights = np.array([3.0, 0.0, 2.0, 0.0, 1.0])
    counts = np.array([2, 0, 0, 4, 1])
    sums = np.zeros((5, 3))
    for j in np.flatnonzero(counts):
        sums[j] = counts[j] * rng.normal(size=3)
    for gamma in (1.0, 0.5):
        new, w, shift = _apply_sums(counts, sums, centers, weights, gamma)
        assert np.isfinite(new).all()
        np.testing.assert_array_equal(new[[1, 2]], centers[[1, 2]])  # no points: unchanged
        np.testing.assert_array_equal(w, weights * gamma + counts)
        ref = centers[[0, 3, 4]] + (sums[[0, 3, 4]] - counts[[0, 3, 4], None] * centers[[0, 3, 4]]) / w[[0, 3, 4], None]
        assert new[[0, 3, 4]].tobytes() == ref.tobytes()
        assert shift == pytest.approx(np.sqrt(((ref - centers[[0, 3, 4]]) ** 2).sum(1)).max(), rel=1e-15)
        # counts as float64 (partial_fit_stats) give the same bits as int64 (partial_fit)
        again = _apply_sums(counts.astype(np.float64), sums, centers, weights, gamma)
        assert again[0].tobytes() == new.tobytes() and again[1].tobytes() == w.tobytes() and again[2] == shift


# ------------------------------------------------------------------ reservoir
def test_last_wins_keeps_the_last_write_per_slot():
    rng = np.random.default_rng(6)
    for n in (0, 1, 2, 10, 500):
        slots = rng.integers(0, 20, size=n)
        rows = np.sort(rng.choice(10_000, size=n, replace=False))
        s, r = _last_wins(slots, rows)
        expect = dict(zip(slots.tolist(), rows.tolist(), strict=True))  # later writes overwrite earlier ones
        assert dict(zip(s.tolist(), r.tolist(), strict=True)) == expect and len(s) == len(expect)


def test_uniform_reservoir_does_not_depend_on_how_the_queue_is_generated():
    # Big batches generate many chunks of accepted positions in one vectorized call;
    # batches of one point generate them one chunk at a time. Same stream, same sample.
    stream = np.arange(60_000, dtype=np.float32).reshape(-1, 2)
    big, small = UniformReservoir(500, 2), UniformReservoir(500, 2)
    rng_big, rng_small = np.random.default_rng(9), np.random.default_rng(9)
    for a in range(0, len(stream), 7_000):
        big.add(stream[a : a + 7_000], rng_big)
    for a in range(len(stream)):
        small._add(stream[a : a + 1], rng_small)
    np.testing.assert_array_equal(big.sample, small.sample)
    # the queue of the vectorized path continues the other one's
    n = min(big._queue_pos.size, small._queue_pos.size)
    np.testing.assert_array_equal(big._queue_pos[:n], small._queue_pos[:n])


@pytest.mark.parametrize("k", [3, COLUMNWISE_MAX_K, 100])
def test_min_sq_dist_is_the_minimum_of_assign(k):
    rng = np.random.default_rng(k)
    X = rng.normal(size=(2500, 6)).astype(np.float32)
    C = rng.normal(size=(k, 6)).astype(np.float32)
    _, min_sq = _assign(X, C)
    got = _min_sq_dist(X, C)
    if k <= COLUMNWISE_MAX_K:  # the same transposed blocks: the same bits
        assert got.tobytes() == min_sq.tobytes()
    else:  # other block layout: BLAS may round differently
        np.testing.assert_allclose(got, min_sq, rtol=1e-5, atol=1e-5)


def test_last_wins_with_16_bit_keys_is_the_same():
    rng = np.random.default_rng(7)
    for n in (300, 5000):
        slots = rng.integers(0, 1000, size=n)
        rows = np.arange(n) * 3
        a, b = _last_wins(slots, rows), _last_wins(slots, rows, capacity=1000)
        assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()


def _sequential_last_wins(slots, rows, capacity=None):
    last = {}
    for slot, row in zip(slots.tolist(), rows.tolist(), strict=True):
        last[slot] = row  # writes applied in order: the last one stays
    keys = sorted(last)
    return np.array(keys, dtype=np.int64), np.array([last[key] for key in keys], dtype=np.int64)


@pytest.mark.parametrize("kind", ["uniform", "time_biased"])
def test_reservoirs_write_what_sequential_writes_would(kind, monkeypatch):
    import streamkm.cluster.reservoir as reservoir_module

    def run():
        res = (UniformReservoir(300, 2) if kind == "uniform"
               else TimeBiasedReservoir(300, 2, half_life=5.0, time_unit="batches"))
        rng, n = np.random.default_rng(3), 0
        for m in (400, 17, 900, 1, 2500, 60, 4000, 3):
            res.add(np.arange(n, n + 2 * m, dtype=np.float32).reshape(m, 2), rng)
            n += 2 * m
        return res.sample.copy()

    fast = run()
    monkeypatch.setattr(reservoir_module, "_last_wins", _sequential_last_wins)
    np.testing.assert_array_equal(fast, run())


# ------------------------------------------------------------------ fused and incremental paths
@pytest.mark.parametrize("k, d, m", [(16, 16, 4096), (8, 8, 256), (5, 3, 1000), (64, 32, 500)])
def test_sums_from_the_assignment_one_hot_are_the_built_ones(k, d, m):
    """_assign leaves its one-hot matrix for _cluster_sums; same sums as building it, ties included."""
    rng = np.random.default_rng(k + d)
    C = rng.normal(size=(k, d)).astype(np.float32)
    C[1] = C[0]  # duplicate centers: every point nearest to them is a tie
    X = np.concatenate([C[rng.integers(k, size=m // 2)], rng.normal(size=(m - m // 2, d))]).astype(np.float32)
    work = _Workspace()
    labels, _ = _assign(X, C, work=work)
    assert work.take("assign_onehot", labels) is not None  # the fused path is exercised
    labels, _ = _assign(X, C, work=work)
    fused = _cluster_sums(X, labels, k, work=work)
    built = _cluster_sums(X, labels, k)
    assert (labels == 1).sum() == 0 and (labels == 0).sum() > 0  # ties went to the lowest index
    for a, b in zip(fused, built, strict=True):
        np.testing.assert_array_equal(a, b)
    # The matrix is tied to its labels: other labels build their own.
    other = labels.copy()
    np.testing.assert_array_equal(_cluster_sums(X, other, k, work=work)[1], built[1])


def test_replacing_center_rows_equals_setting_all_centers():
    model, rng = _model_and_rng(k=6, d=5)
    centers = model._centers.copy()
    rows = np.array([1, 4])
    centers[rows] = rng.normal(size=(2, 5))
    old = model.cluster_centers_, model._c_sq, model._neg2_ct
    kept = [a.copy() for a in old]
    model._set_center_rows(centers, rows)
    got = model.cluster_centers_, model._c_sq, model._neg2_ct
    model._set_centers(centers)
    for a, b in zip(got, (model.cluster_centers_, model._c_sq, model._neg2_ct), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(old, kept, strict=True):  # the old arrays were not modified in place
        np.testing.assert_array_equal(a, b)


def _model_and_rng(k, d):
    rng = np.random.default_rng(0)
    model = StreamingKMeans(k, seed=0)
    model.partial_fit(rng.normal(size=(200, d)))
    return model, rng


@pytest.mark.parametrize("kind", ["uniform", "time_biased"])
def test_reservoir_keeps_the_squared_norms_of_its_rows(kind):
    from streamkm.cluster._distance import _row_norms_sq

    res = (UniformReservoir(300, 3) if kind == "uniform"
           else TimeBiasedReservoir(300, 3, half_life=5.0, time_unit="batches"))
    rng = np.random.default_rng(5)
    for m in (100, 250, 7, 1000, 3):
        res.add(rng.normal(size=(m, 3)), rng)  # float64 input into a float32 reservoir
        np.testing.assert_array_equal(res.sample_sq_norms, _row_norms_sq(res.sample))
    restored = type(res)(300, 3) if kind == "uniform" else TimeBiasedReservoir(
        300, 3, half_life=5.0, time_unit="batches")
    restored.load_state_dict(res.state_dict())
    np.testing.assert_array_equal(restored.sample_sq_norms, res.sample_sq_norms)


def test_colwise_argmin_leaves_the_one_hot_matrix_in_eq():
    rng = np.random.default_rng(2)
    D = rng.integers(0, 3, size=(7, 500)).astype(np.float32)  # ties in most columns
    eq = np.empty_like(D)
    labels, _ = _colwise_argmin(D, eq)
    onehot = np.zeros_like(D)
    onehot[labels, np.arange(D.shape[1])] = 1.0
    np.testing.assert_array_equal(eq, onehot)


@pytest.mark.parametrize("reservoir", ["uniform", "time_biased"])
def test_model_reservoir_norms_from_the_validation_are_the_rows_norms(reservoir):
    from streamkm.cluster._distance import _row_norms_sq

    rng = np.random.default_rng(6)
    model = StreamingKMeans(3, half_life=3, reservoir=reservoir, reservoir_size=500, seed=0)
    for m in (40, 300, 700, 5, 900):
        model.partial_fit(rng.normal(size=(m, 4)).astype(np.float32))  # fast validation path
        np.testing.assert_array_equal(model._res.sample_sq_norms, _row_norms_sq(model.reservoir_sample))
    model.partial_fit(rng.normal(size=(300, 4)).tolist())  # converted: norms computed by the reservoir
    np.testing.assert_array_equal(model._res.sample_sq_norms, _row_norms_sq(model.reservoir_sample))


def _reference_queue_chunk(res, rng):
    """One chunk of Algorithm L's accepted positions, computed plainly (allocating)."""
    s = res.capacity
    r = rng.random((1, 3, 256))
    steps = np.cumsum(np.log1p(-r[:, 0]), axis=1) / s
    log_w_before = np.concatenate(([[res._log_w]], res._log_w + steps[:, :-1]), axis=1)
    with np.errstate(divide="ignore"):
        skip = np.floor(np.log1p(-r[:, 1]) / np.log1p(-np.exp(log_w_before))) + 1.0
    pos = np.minimum(res._last_pos + np.cumsum(np.minimum(skip, 2.0**52), axis=1), float(2**62)).astype(np.int64)
    slot = np.minimum((r[:, 2] * s).astype(np.int64), s - 1)
    return pos.ravel(), slot.ravel(), float(res._log_w + steps[0, -1])


@pytest.mark.parametrize("n_chunks", [1, 3])
def test_uniform_reservoir_queue_is_the_plain_computation(n_chunks):
    stream = np.zeros((1_000, 2), dtype=np.float32)
    res = UniformReservoir(300, 2)
    res.add(stream, np.random.default_rng(1))  # full: log W is set
    ref = UniformReservoir(300, 2)
    ref.load_state_dict(res.state_dict())
    rng_fast, rng_ref = np.random.default_rng(4), np.random.default_rng(4)
    for _ in range(3):
        before = res._queue_pos.size
        res._extend_queue(rng_fast, n_chunks)
        for c in range(n_chunks):
            pos, slot, log_w = _reference_queue_chunk(ref, rng_ref)
            ref._log_w, ref._last_pos = log_w, int(pos[-1])
            np.testing.assert_array_equal(res._queue_pos[before + 256 * c : before + 256 * (c + 1)], pos)
            np.testing.assert_array_equal(res._queue_slot[before + 256 * c : before + 256 * (c + 1)], slot)
        assert (res._log_w, res._last_pos) == (ref._log_w, ref._last_pos)
    assert rng_fast.bit_generator.state == rng_ref.bit_generator.state


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_own_sq_dist_of_many_rows_is_the_gathered_computation(dtype, monkeypatch):
    from streamkm.cluster import _lloyd

    rng = np.random.default_rng(8)
    X = rng.normal(size=(2_000, 7)).astype(dtype)
    C = rng.normal(size=(5, 7)).astype(dtype)
    budget = 300 * 7 * X.itemsize  # chunks of 300 rows
    gaps = np.r_[0:300, 900:2_000]  # two chunks without a selected row
    for idx in (np.sort(rng.choice(2_000, 600, replace=False)), np.sort(rng.choice(2_000, 1_400, replace=False)),
                gaps, np.arange(2_000), rng.permutation(2_000)[:1_500]):
        lab = rng.integers(5, size=idx.size)
        got = _lloyd._own_sq_dist(X, C, lab, idx, budget)
        monkeypatch.setattr(_lloyd, "_OWN_DENSE_FRACTION", 2.0)  # always gather
        want = _lloyd._own_sq_dist(X, C, lab, idx, budget)
        monkeypatch.undo()
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(got, ((X[idx] - C[lab]) ** 2).sum(axis=1), rtol=1e-5)

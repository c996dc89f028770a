"""summarize + StreamingKMeans.partial_fit_stats is partial_fit, bit for bit; bad statistics change nothing."""

from __future__ import annotations

import numpy as np
import pytest

from streamkm.cluster import MAX_ABS_VALUE, StreamingKMeans, summarize
from tests.group.support import blobs, equal_trees

_CENTERS = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 1.0], [0.0, 9.0, -2.0], [7.0, 7.0, 7.0]])


def _chunks(seed: int, dtype=np.float32):
    rng = np.random.default_rng(seed)
    sizes = [1, 2, 57, 3, 140, 33, 1, 90, 64, 5, 250, 17] * 2
    chunks = [blobs(rng, _CENTERS, n, 1.5).astype(dtype) for n in sizes]
    # then the last cluster goes quiet: with forgetting its weight dies and it is re-placed
    chunks += [blobs(rng, _CENTERS[:3], 10, 1.5).astype(dtype) for _ in range(60)]
    return blobs(rng, _CENTERS, 40).astype(dtype), chunks


_OBJECTIVES = ("last_batch_objective_", "ewm_objective_")


def _compare(a: StreamingKMeans, b: StreamingKMeans, *, exact_objectives: bool = True):
    assert a.cluster_centers_.dtype == b.cluster_centers_.dtype
    assert a.cluster_centers_.tobytes() == b.cluster_centers_.tobytes()
    assert a.counts_.tobytes() == b.counts_.tobytes()
    assert np.asarray(a.reservoir_sample).tobytes() == np.asarray(b.reservoir_sample).tobytes()
    for name in ("n_reseeds_", "n_reseeds_rejected_", "n_dying_replaced_", "n_seen_", "n_batches_",
                 "last_center_shift_"):
        assert getattr(a, name) == getattr(b, name), name
    for name in _OBJECTIVES:
        x, y = getattr(a, name), getattr(b, name)
        assert x == y if exact_objectives else x == pytest.approx(y, rel=1e-12, abs=0), name
    # the whole state, RNGs included
    sa, sb = a.state_dict(), b.state_dict()
    if not exact_objectives:
        for key in [k for k in sa if "objective" in k]:
            sa.pop(key), sb.pop(key)
    assert equal_trees(sa, sb) == []


def _run(time_unit: str, decay: float, dtype, *, exact_objectives: bool = True):
    kw = {"n_clusters": 4, "decay": decay, "time_unit": time_unit, "reseed_interval": 97, "reservoir_size": 120,
          "n_init": 2, "max_iter": 10, "seed": 11}
    a, b = StreamingKMeans(**kw), StreamingKMeans(**kw)
    first, chunks = _chunks(5, dtype)
    a.partial_fit(first)
    b.partial_fit(first)
    assert a.is_initialized_ and b.is_initialized_
    for X in chunks:
        a.partial_fit(X)
        s = summarize(X, b.cluster_centers_, dtype=b.cluster_centers_.dtype)
        # the worker's view: the version's float64 centres give the same statistics
        s64 = summarize(X, np.asarray(b.cluster_centers_, np.float64), dtype=b.cluster_centers_.dtype)
        assert s.counts.tobytes() == s64.counts.tobytes() and s.sums.tobytes() == s64.sums.tobytes()
        assert int(s.counts.sum()) == X.shape[0]
        b.partial_fit_stats(s.counts, s.sums, s.sq_dist_sums, X)
        _compare(a, b, exact_objectives=exact_objectives)
    return a


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("decay", [1.0, 0.9])
@pytest.mark.parametrize("time_unit", ["batches", "points"])
def test_stats_fold_is_partial_fit(time_unit, decay, dtype):
    a = _run(time_unit, decay, dtype)
    assert a.n_reseeds_ + a.n_reseeds_rejected_ >= 5  # interval reseeds ran (and drew from the RNG) on both sides
    if decay < 1 and time_unit == "points":
        assert a.n_dying_replaced_ > 0  # so did dying-cluster replacement


def test_stats_fold_objectives_are_bit_identical():
    for time_unit in ("batches", "points"):
        for decay in (1.0, 0.9):
            for dtype in (np.float32, np.float64):
                _run(time_unit, decay, dtype, exact_objectives=True)


def test_labels_of_summarize_are_predict():
    first, chunks = _chunks(1)
    m = StreamingKMeans(n_clusters=4, seed=0).partial_fit(first)
    for X in chunks[:5]:
        s = summarize(X, m.cluster_centers_)
        labels, sq = m.assign(X)
        assert s.labels.tolist() == labels.tolist() and s.sq_dist.tobytes() == sq.tobytes()
        assert s.counts.tolist() == np.bincount(labels, minlength=4).tolist()
        np.testing.assert_allclose(s.sums, np.stack([X[labels == j].sum(0, dtype=np.float64) for j in range(4)]),
                                   rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(s.sq_dist_sums, np.bincount(labels, weights=sq, minlength=4))


def test_summarize_validates():
    with pytest.raises(ValueError):
        summarize(np.ones((2, 3)), np.ones((2, 2)))
    with pytest.raises(ValueError):
        summarize(np.empty((0, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError):
        summarize(np.ones((2, 2)), np.ones((2, 2)), dtype=np.int32)


def _model() -> tuple[StreamingKMeans, np.ndarray]:
    first, chunks = _chunks(2)
    m = StreamingKMeans(n_clusters=4, reseed_interval=50, seed=0).partial_fit(first)
    m.partial_fit(chunks[2])
    return m, chunks[4]


_K, _D = 4, 3


@pytest.mark.parametrize("counts,sums,ssd,sample", [
    (np.ones(_K + 1), np.ones((_K, _D)), np.ones(_K), np.ones((1, _D))),
    (np.ones((_K, 1)), np.ones((_K, _D)), np.ones(_K), np.ones((1, _D))),
    (np.ones(_K), np.ones((_K, _D + 1)), np.ones(_K), np.ones((1, _D))),
    (np.ones(_K), np.ones((_K + 1, _D)), np.ones(_K), np.ones((1, _D))),
    (np.ones(_K), np.ones(_K * _D), np.ones(_K), np.ones((1, _D))),
    (np.ones(_K), np.ones((_K, _D)), np.ones(_K - 1), np.ones((1, _D))),
    (np.array([2.0, -1.0, 1.0, 1.0]), np.ones((_K, _D)), np.ones(_K), np.ones((1, _D))),
    (np.ones(_K), np.ones((_K, _D)), np.array([0.0, -1e-9, 0.0, 0.0]), np.ones((1, _D))),
    (np.array([1.0, np.nan, 1.0, 1.0]), np.ones((_K, _D)), np.ones(_K), np.ones((1, _D))),
    (np.array([1.0, np.inf, 1.0, 1.0]), np.ones((_K, _D)), np.ones(_K), np.ones((1, _D))),
    (np.ones(_K), np.full((_K, _D), np.nan), np.ones(_K), np.ones((1, _D))),
    (np.ones(_K), np.ones((_K, _D)), np.array([np.inf, 0, 0, 0]), np.ones((1, _D))),
    (np.zeros(_K), np.zeros((_K, _D)), np.zeros(_K), np.ones((1, _D))),
    (np.array([0.25, 0.25, 0.0, 0.0]), np.zeros((_K, _D)), np.zeros(_K), np.ones((1, _D))),
    (np.ones(_K), np.ones((_K, _D)), np.ones(_K), np.ones((1, _D + 1))),
    (np.ones(_K), np.ones((_K, _D)), np.ones(_K), np.ones(_D)),
    (np.ones(_K), np.ones((_K, _D)), np.ones(_K), np.array([[1.0, np.nan, 1.0]])),
    (np.ones(_K), np.ones((_K, _D)), np.ones(_K), np.array([[1.0, 1e30, 1.0]])),
], ids=["counts-k+1", "counts-2d", "sums-d+1", "sums-k+1", "sums-1d", "ssd-k-1", "negative-count",
        "negative-ssd", "nan-count", "inf-count", "nan-sums", "inf-ssd", "total-0", "total-below-1",
        "sample-width", "sample-1d", "sample-nan", "sample-too-large"])
def test_bad_statistics_raise_and_change_nothing(counts, sums, ssd, sample):
    m, _ = _model()
    before = m.state_dict()
    with pytest.raises(ValueError):
        m.partial_fit_stats(counts, sums, ssd, sample)
    assert equal_trees(before, m.state_dict()) == []


@pytest.mark.parametrize("buffered", [0, 5])
def test_not_initialized_raises_and_changes_nothing(buffered):
    m = StreamingKMeans(n_clusters=4, seed=0)
    if buffered:
        m.partial_fit(np.ones((buffered, _D), np.float32))
    before = m.state_dict()
    with pytest.raises(ValueError, match="not initialized"):
        m.partial_fit_stats(np.ones(_K), np.ones((_K, _D)), np.ones(_K), np.ones((1, _D)))
    assert equal_trees(before, m.state_dict()) == []


def test_empty_sample_and_float64_sample_are_accepted():
    m, X = _model()
    s = summarize(X, m.cluster_centers_)
    n0 = m.n_seen_
    m.partial_fit_stats(s.counts, s.sums, s.sq_dist_sums, np.empty((0, _D)))
    m.partial_fit_stats(s.counts, s.sums, s.sq_dist_sums, X.astype(np.float64))
    assert m.n_seen_ == n0 + 2 * X.shape[0]
    assert m.cluster_centers_.dtype == np.float32


@pytest.mark.parametrize("case", ["mean-above-max", "negative-mean-above-max", "sum-without-points"])
def test_sums_inconsistent_with_points_raise_and_change_nothing(case):
    """At d7cf311 finite sums whose mean exceeds MAX_ABS_VALUE were folded and made the float32 centres inf."""
    m, _ = _model()
    counts = np.array([2.0, 1.0, 0.0, 0.0])
    sums = np.zeros((_K, _D))
    if case == "mean-above-max":
        sums[0, 0] = 2 * MAX_ABS_VALUE * 1.01
    elif case == "negative-mean-above-max":
        sums[1, 2] = -MAX_ABS_VALUE * 1.01
    else:
        sums[3, 1] = 1.0
    before = m.state_dict()
    with pytest.raises(ValueError):
        m.partial_fit_stats(counts, sums, np.zeros(_K), np.empty((0, _D)))
    assert equal_trees(before, m.state_dict()) == []
    assert np.isfinite(m.cluster_centers_).all()


def test_sums_at_the_magnitude_bound_are_accepted():
    m, _ = _model()
    counts = np.array([2.0, 0.0, 0.0, 0.0])
    sums = np.zeros((_K, _D))
    sums[0, 0] = 2 * MAX_ABS_VALUE * 0.99
    m.partial_fit_stats(counts, sums, np.zeros(_K), np.empty((0, _D)))
    assert np.isfinite(m.cluster_centers_).all()

import numpy as np
import pytest

from streamkm.cluster.kmeans_plusplus import _kmeans_plusplus, kmeans_plusplus
from tests.helpers.data import clusters_at as blobs


def potential(X, C):
    X = X.astype(np.float64)
    C = C.astype(np.float64)
    return ((X[:, None] - C[None]) ** 2).sum(-1).min(1).sum()


def test_centers_are_rows_and_deterministic():
    X, _ = blobs(50, np.random.default_rng(1).normal(size=(5, 3)) * 10)
    C1, i1 = kmeans_plusplus(X, 5, seed=3)
    C2, i2 = kmeans_plusplus(X, 5, seed=3)
    assert C1.dtype == np.float32 and i1.dtype == np.int64
    assert np.array_equal(C1, X[i1])
    assert np.array_equal(i1, i2) and np.array_equal(C1, C2)
    assert len(set(i1.tolist())) == 5
    _, i3 = kmeans_plusplus(X, 5, seed=4)
    assert not np.array_equal(i1, i3)


@pytest.mark.parametrize("seed", range(20))
def test_one_center_per_separated_blob(seed):
    centers = np.array([[0, 0], [100, 0], [0, 100], [100, 100], [50, 50], [-100, 30]])
    X, y = blobs(40, centers, scale=1.0, seed=seed)
    _, idx = kmeans_plusplus(X, len(centers), seed=seed)
    assert sorted(y[idx].tolist()) == list(range(len(centers)))


def test_plain_kmeanspp_follows_d2_distribution():
    # n_local_trials=1 is plain k-means++: P(second = j | first = i) ∝ D(j, i)².
    X = np.array([[0.0], [1.0], [3.0], [7.0]])
    n = len(X)
    D2 = (X - X.T) ** 2
    expected = np.zeros((n, n))
    for i in range(n):
        expected[i] = 0.25 * D2[i] / D2[i].sum()
    counts = np.zeros((n, n))
    runs = 4000
    rng = np.random.default_rng(123)
    for _ in range(runs):
        _, idx = _kmeans_plusplus(X, 2, rng, n_local_trials=1)
        counts[idx[0], idx[1]] += 1
    freq = counts / runs
    sigma = np.sqrt(expected * (1 - expected) / runs)
    assert np.all(np.abs(freq - expected) <= 4 * sigma + 1e-12), (freq, expected)
    assert counts[np.arange(n), np.arange(n)].sum() == 0  # never re-picks a center


def test_greedy_lowers_potential_on_average():
    X, _ = blobs(30, np.random.default_rng(2).normal(size=(12, 4)) * 3, scale=1.0)
    plain = np.mean([potential(X, kmeans_plusplus(X, 12, seed=s, n_local_trials=1)[0]) for s in range(30)])
    greedy = np.mean([potential(X, kmeans_plusplus(X, 12, seed=s)[0]) for s in range(30)])
    assert greedy < plain


def test_potential_comparable_to_sklearn():
    sk = pytest.importorskip("sklearn.cluster")
    X, _ = blobs(50, np.random.default_rng(5).normal(size=(20, 8)) * 2, scale=1.0)
    ours = np.mean([potential(X, kmeans_plusplus(X, 20, seed=s)[0]) for s in range(20)])
    ref = np.mean([potential(X, sk.kmeans_plusplus(X, 20, random_state=s)[0]) for s in range(20)])
    assert ours <= 1.1 * ref


def test_sample_weight_zero_points_never_chosen():
    X, _ = blobs(20, [[0, 0], [10, 10], [20, 0]], scale=1.0)
    w = np.ones(len(X))
    w[::2] = 0.0
    rng = np.random.default_rng(0)
    for _ in range(20):
        _, idx = _kmeans_plusplus(X, 3, rng, sample_weight=w)
        assert np.all(w[idx] > 0)


def test_fewer_distinct_points_than_clusters():
    X = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0]], dtype=np.float32), 5, axis=0)
    C, idx = kmeans_plusplus(X, 4, seed=0)
    assert np.isfinite(C).all() and np.array_equal(C, X[idx])
    # both distinct points are used before any repeat
    assert {tuple(r) for r in C[:2].tolist()} == {(0.0, 0.0), (1.0, 1.0)}


def test_float64_kept_and_single_cluster():
    X = np.random.default_rng(0).normal(size=(10, 2))
    C, idx = kmeans_plusplus(X, 1, seed=0)
    assert C.dtype == np.float64 and C.shape == (1, 2)


@pytest.mark.parametrize(
    "X, k, kw, exc, msg",
    [
        (np.ones((3, 2)), 4, {}, ValueError, r"n_clusters=4 must be <= n_samples=3"),
        (np.ones((3, 2)), 0, {}, ValueError, r"n_clusters must be an integer >= 1; got 0"),
        (np.ones((3, 2)), 2.0, {}, TypeError, r"n_clusters must be an integer"),
        (np.ones((3, 2)), 2, {"n_local_trials": 0}, ValueError, r"n_local_trials.*got 0"),
        (np.ones((3, 2)), 2, {"seed": "a"}, TypeError, r"seed must be"),
        (np.array([[0.0, 1.0], [np.nan, 0.0]]), 1, {}, ValueError, r"NaN or infinity in row 1"),
        (np.ones(3), 1, {}, ValueError, r"2-D"),
        (np.ones((0, 2)), 1, {}, ValueError, r"empty"),
    ],
)
def test_bad_input(X, k, kw, exc, msg):
    with pytest.raises(exc, match=msg):
        kmeans_plusplus(X, k, **kw)

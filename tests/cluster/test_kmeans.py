import numpy as np
import pytest

from streamkm.cluster import KMeans
from streamkm.cluster._lloyd import _lloyd, _reseed_empty
from tests.helpers.data import balanced_blobs as make_blobs


# ------------------------------------------------------------------ helpers
def adjusted_rand_index(a, b):
    """Hubert & Arabie (1985) adjusted Rand index from the contingency table."""
    a = np.unique(np.asarray(a), return_inverse=True)[1]
    b = np.unique(np.asarray(b), return_inverse=True)[1]
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)

    def comb2(x):
        return (x * (x - 1) / 2).sum()

    n = len(a)
    s_ij = comb2(table)
    s_a, s_b = comb2(table.sum(1)), comb2(table.sum(0))
    expected = s_a * s_b / comb2(np.array([n]))
    max_index = (s_a + s_b) / 2
    if max_index == expected:
        return 1.0
    return (s_ij - expected) / (max_index - expected)


def objective64(X, C, labels):
    X = X.astype(np.float64)
    C = C.astype(np.float64)
    return float(((X - C[labels]) ** 2).sum())


def state(km):
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(km).items()}


def same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert np.array_equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


# --------------------------------------------------------------------- ARI
def test_ari_helper_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.integers(4, size=200), rng.integers(5, size=200)
        assert adjusted_rand_index(a, b) == pytest.approx(metrics.adjusted_rand_score(a, b))
    assert adjusted_rand_index([0, 0, 1, 1], [5, 5, 3, 3]) == 1.0


# ---------------------------------------------------------------- recovery
@pytest.mark.parametrize("seed", range(5))
def test_recovers_known_clusters(seed):
    X, y = make_blobs(k=6, d=5, seed=seed)
    km = KMeans(n_clusters=6, seed=seed).fit(X)
    assert adjusted_rand_index(km.labels_, y) > 0.99
    assert km.cluster_centers_.shape == (6, 5)
    assert km.labels_.dtype == np.int64 and km.cluster_centers_.dtype == np.float32
    assert km.n_features_in_ == 5


@pytest.mark.parametrize("seed", range(40))
def test_objective_non_increasing_and_consistent(seed):
    # overlapping blobs and a random init: many iterations, many label moves
    X, _ = make_blobs(n_per=60, k=8, d=3, spread=2.0, seed=seed, dtype=np.float64)
    km = KMeans(n_clusters=8, init="random", tol=0.0, max_iter=500, seed=seed).fit(X)
    h = km.objective_history_
    assert len(h) == km.n_iter_ + 1
    assert np.all(np.diff(h) <= 0), h
    assert h[-1] == km.inertia_
    assert km.inertia_ == pytest.approx(objective64(X, km.cluster_centers_, km.labels_), rel=1e-9)
    # a converged Lloyd solution is a fixed point of both steps
    D = ((X[:, None] - km.cluster_centers_[None]) ** 2).sum(-1)
    assert np.array_equal(D.argmin(1), km.labels_)
    for j in range(8):
        np.testing.assert_allclose(km.cluster_centers_[j], X[km.labels_ == j].mean(0), atol=1e-9)


def test_float32_objective_history_monotone_many_seeds():
    for seed in range(20):
        X, _ = make_blobs(n_per=80, k=10, d=8, spread=1.5, seed=seed)
        km = KMeans(n_clusters=10, tol=0.0, seed=seed).fit(X)
        assert np.all(np.diff(km.objective_history_) <= 0)
        assert km.inertia_ == pytest.approx(
            objective64(X, km.cluster_centers_, km.labels_), rel=1e-5
        )


def test_matches_sklearn_from_same_init():
    sk = pytest.importorskip("sklearn.cluster")
    for seed in range(3):
        for dtype in (np.float32, np.float64):
            X, _ = make_blobs(n_per=300, k=12, d=6, spread=1.5, seed=seed, dtype=dtype)
            C0 = X[np.random.default_rng(seed).choice(len(X), 12, replace=False)]
            ours = KMeans(n_clusters=12, init=C0, max_iter=100, tol=0.0).fit(X)
            ref = sk.KMeans(12, init=C0, n_init=1, max_iter=100, tol=0.0, algorithm="lloyd").fit(X)
            assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-5)
            if dtype == np.float64:
                assert adjusted_rand_index(ours.labels_, ref.labels_) == 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pruned_iterations_equal_full_recomputation(dtype):
    rng = np.random.default_rng(0)
    for seed in range(6):
        X, _ = make_blobs(n_per=150, k=9, d=5, spread=1.5, seed=seed, dtype=dtype)
        w = rng.uniform(0.1, 2.0, size=len(X)) if seed % 2 else None
        C0 = X[rng.choice(len(X), 9, replace=False)]
        if seed == 5:
            C0[1:4] = C0[0]  # duplicates -> empty clusters on the way
        a = _lloyd(X, C0, max_iter=300, tol=0.0, sample_weight=w, prune=True)
        b = _lloyd(X, C0, max_iter=300, tol=0.0, sample_weight=w, prune=False)
        assert np.array_equal(a[1], b[1])
        np.testing.assert_allclose(a[0], b[0], rtol=1e-6, atol=1e-6)
        assert a[3] == b[3]
        np.testing.assert_allclose(a[4], b[4], rtol=1e-6)


def test_sample_weight_equals_repetition():
    X, _ = make_blobs(n_per=30, k=3, d=2, spread=3.0, seed=1, dtype=np.float64)
    w = np.random.default_rng(0).integers(1, 4, size=len(X))
    C0 = X[:3]
    a = KMeans(n_clusters=3, init=C0, tol=0.0).fit(X, sample_weight=w)
    b = KMeans(n_clusters=3, init=C0, tol=0.0).fit(np.repeat(X, w, axis=0))
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-10)
    assert a.inertia_ == pytest.approx(b.inertia_, rel=1e-10)


def test_n_init_keeps_best():
    X, _ = make_blobs(n_per=40, k=8, d=2, spread=2.0, seed=3)
    one = KMeans(n_clusters=8, n_init=1, seed=7).fit(X)
    many = KMeans(n_clusters=8, n_init=8, seed=7).fit(X)
    # the first of the 8 runs is the single run (same generator stream)
    assert many.inertia_ <= one.inertia_
    runs = [KMeans(n_clusters=8, seed=s).fit(X).inertia_ for s in range(8)]
    assert many.inertia_ <= np.median(runs)


# ------------------------------------------------------------ empty clusters
def test_duplicate_initial_centers_are_separated():
    X, y = make_blobs(n_per=50, k=4, d=3, seed=2)
    C0 = np.repeat(X[:1], 4, axis=0)  # all four centers identical
    km = KMeans(n_clusters=4, init=C0, tol=0.0).fit(X)
    assert np.isfinite(km.cluster_centers_).all()
    assert np.all(np.bincount(km.labels_, minlength=4) > 0)
    assert np.all(np.diff(km.objective_history_) <= 0)
    assert adjusted_rand_index(km.labels_, y) > 0.99


def test_far_away_initial_centers():
    X, y = make_blobs(n_per=50, k=4, d=3, seed=4)
    C0 = np.full((4, 3), 1e6, dtype=np.float32)
    C0[0] = X.mean(0)  # one center takes every point, three are empty
    C0[2] = -1e6
    km = KMeans(n_clusters=4, init=C0, tol=0.0).fit(X)
    assert np.isfinite(km.cluster_centers_).all()
    assert np.all(np.bincount(km.labels_, minlength=4) > 0)
    h = km.objective_history_
    assert np.all(np.diff(h) <= 0)
    assert h[-1] <= 1.0001 * KMeans(n_clusters=4, seed=0).fit(X).inertia_
    assert adjusted_rand_index(km.labels_, y) > 0.99


def test_more_clusters_than_distinct_points_never_nan():
    X = np.repeat(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32), 4, axis=0)
    km = KMeans(n_clusters=5, seed=0).fit(X)
    assert np.isfinite(km.cluster_centers_).all()
    assert km.inertia_ == 0.0


def test_reseed_empty_never_increases_objective():
    rng = np.random.default_rng(0)
    for _ in range(20):
        X = rng.normal(size=(60, 2))
        C = rng.normal(size=(5, 2))
        C[3] = C[4] = 100.0  # two empty clusters
        D = ((X[:, None] - C[None]) ** 2).sum(-1)
        d2 = D.min(1)
        x_sq = (X * X).sum(1)
        C2 = C.copy()
        assert _reseed_empty(X, C2, np.array([3, 4]), d2, x_sq, None) == 2
        assert np.array_equal(C2[:3], C[:3])
        far = np.argmax(d2)
        assert np.array_equal(C2[3], X[far])  # farthest point first
        assert not np.array_equal(C2[3], C2[4])  # then farthest-first, distinct
        assert any(np.array_equal(C2[4], x) for x in X)
        D2 = ((X[:, None] - C2[None]) ** 2).sum(-1)
        assert D2.min(1).sum() < d2.sum()  # the next assignment lowers J
        assert np.all(np.bincount(D2.argmin(1), minlength=5) > 0)


def test_reseed_empty_when_all_points_on_centers():
    X = np.array([[0.0, 0.0], [1.0, 1.0]])
    C = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    C2 = C.copy()
    assert _reseed_empty(X, C2, np.array([2]), np.zeros(2), (X * X).sum(1), None) == 0
    assert np.array_equal(C, C2)


# ------------------------------------------------------------------ chunking
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiny_memory_budget_gives_same_result(dtype):
    X, _ = make_blobs(n_per=100, k=7, d=5, spread=2.0, seed=5, dtype=dtype)
    a = KMeans(n_clusters=7, seed=1, tol=0.0).fit(X)
    b = KMeans(n_clusters=7, seed=1, tol=0.0, memory_budget_bytes=1).fit(X)
    c = KMeans(n_clusters=7, seed=1, tol=0.0, memory_budget_bytes=7 * 8 * 33).fit(X)
    for other in (b, c):
        assert np.array_equal(a.labels_, other.labels_)
        np.testing.assert_allclose(a.cluster_centers_, other.cluster_centers_, rtol=1e-5, atol=1e-5)
        assert a.inertia_ == pytest.approx(other.inertia_, rel=1e-5)
        np.testing.assert_array_equal(a.predict(X), other.predict(X))


def test_float64_kept():
    X, _ = make_blobs(dtype=np.float64)
    km = KMeans(n_clusters=5, seed=0).fit(X)
    assert km.cluster_centers_.dtype == np.float64
    assert km.transform(X).dtype == np.float64
    km32 = KMeans(n_clusters=5, seed=0).fit(X.astype(np.int64))
    assert km32.cluster_centers_.dtype == np.float32


# ------------------------------------------------------- predict/transform/score
def test_predict_transform_score_consistent():
    X, _ = make_blobs(seed=6)
    km = KMeans(n_clusters=5, seed=0).fit(X)
    D = km.transform(X)
    assert D.shape == (len(X), 5) and D.min() >= 0
    assert np.array_equal(km.predict(X), D.argmin(1))
    assert np.array_equal(km.predict(X), km.labels_)
    assert km.score(X) == pytest.approx(-km.inertia_, rel=1e-5)
    assert km.score(X) == pytest.approx(-D.min(1).sum(dtype=np.float64), rel=1e-5)
    assert np.array_equal(km.fit_predict(X), km.labels_)


def test_init_random_and_lloyd_kernel():
    X, y = make_blobs(seed=8)
    km = KMeans(n_clusters=5, init="random", n_init=5, seed=0).fit(X)
    assert adjusted_rand_index(km.labels_, y) > 0.95
    C, labels, inertia, n_iter, hist = _lloyd(X, X[:5], max_iter=2, tol=0.0)
    assert n_iter <= 2 and len(hist) == n_iter + 1 and hist[-1] == inertia


# ------------------------------------------------------------------ bad input
BAD_FIT = [
    (dict(n_clusters=0), np.ones((5, 2)), ValueError, r"n_clusters must be an integer >= 1; got 0"),
    (dict(n_clusters=2.5), np.ones((5, 2)), TypeError, r"n_clusters must be an integer"),
    (dict(n_clusters=6), np.ones((5, 2)), ValueError, r"n_clusters=6 must be <= n_samples=5"),
    (dict(n_init=0), np.ones((5, 2)), ValueError, r"n_init .*got 0"),
    (dict(max_iter=0), np.ones((5, 2)), ValueError, r"max_iter .*got 0"),
    (dict(tol=-1.0), np.ones((5, 2)), ValueError, r"tol must be in \[0.0, inf\]; got -1.0"),
    (dict(tol=float("nan")), np.ones((5, 2)), ValueError, r"tol must be"),
    (dict(memory_budget_bytes=0), np.ones((5, 2)), ValueError, r"memory_budget_bytes .*got 0"),
    (dict(init="kmeans"), np.ones((5, 2)), ValueError, r"init must be .*got 'kmeans'"),
    (dict(init=5), np.ones((5, 2)), TypeError, r"init must be .*got int"),
    (dict(n_clusters=2, init=np.ones((3, 2))), np.ones((5, 2)), ValueError, r"init has 3 centers but n_clusters=2"),
    (dict(n_clusters=2, init=np.ones((2, 3))), np.ones((5, 2)), ValueError, r"init: expected 2 features, got 3"),
    (dict(n_clusters=2, init=[[0, np.nan], [1, 1]]), np.ones((5, 2)), ValueError,
     r"init contains NaN or infinity in row 0"),
    (dict(seed=-3), np.ones((5, 2)), ValueError, r"seed must be a non-negative integer; got -3"),
    (dict(), np.array([[0.0, 1.0], [2.0, np.inf]]), ValueError, r"X contains NaN or infinity in row 1"),
    (dict(), np.array([[0.0, np.nan]]), ValueError, r"X contains NaN or infinity in row 0"),
    (dict(), np.ones(5), ValueError, r"X must be 2-D .*got 1-D"),
    (dict(), np.ones((0, 3)), ValueError, r"X is empty: got 0 samples"),
    (dict(), [["a", "b"]], TypeError, r"X must be numeric"),
]


@pytest.mark.parametrize("params, X, exc, msg", BAD_FIT)
def test_bad_fit_rejected_and_state_unchanged(params, X, exc, msg):
    Xg, _ = make_blobs(n_per=10, k=2, d=2)
    km = KMeans(n_clusters=2, seed=0).fit(Xg)
    before = state(km)
    for name, value in params.items():
        setattr(km, name, value)
    with pytest.raises(exc, match=msg):
        km.fit(X)
    for name in params:
        setattr(km, name, before[name])
    same_state(before, state(km))


def test_bad_sample_weight():
    km = KMeans(n_clusters=2, seed=0)
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(4,\); got \(3,\)"):
        km.fit(np.ones((4, 2)), sample_weight=[1, 1, 1])
    assert not hasattr(km, "cluster_centers_")


def test_predict_errors():
    km = KMeans(n_clusters=2, seed=0)
    with pytest.raises(ValueError, match="not fitted"):
        km.predict(np.ones((2, 2)))
    km.fit(make_blobs(n_per=10, k=2, d=3)[0])
    before = state(km)
    with pytest.raises(ValueError, match=r"expected 3 features, got 2"):
        km.predict(np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"row 1"):
        km.transform(np.array([[0, 0, 0], [0, np.nan, 0]]))
    with pytest.raises(ValueError, match=r"empty"):
        km.score(np.ones((0, 3)))
    same_state(before, state(km))


def test_hyperparameters_stored_verbatim():
    init = np.zeros((3, 2))
    km = KMeans(n_clusters=3, init=init, n_init=2, max_iter=7, tol=0.5, seed=9, memory_budget_bytes=123)
    assert km.init is init and km.n_init == 2 and km.max_iter == 7 and km.tol == 0.5
    assert km.seed == 9 and km.memory_budget_bytes == 123
    with pytest.raises(TypeError):
        KMeans(3, 1)  # keyword-only after n_clusters

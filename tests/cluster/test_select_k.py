from itertools import pairwise

import numpy as np
import pytest

from streamkm.cluster import SelectKResult, select_k
from streamkm.cluster.select_k import _bic, _knee, _silhouette
from tests.helpers.data import uniform_blobs as blobs


@pytest.mark.parametrize("method", ["silhouette", "elbow", "bic"])
@pytest.mark.parametrize("true_k, seed", [(3, 0), (5, 1), (7, 2)])
def test_picks_true_k_on_separated_blobs(method, true_k, seed):
    X, _ = blobs(true_k, seed=seed)
    ks = range(2, 11) if method == "silhouette" else range(1, 11)
    res = select_k(X, ks, method=method, seed=seed)
    assert isinstance(res, SelectKResult)
    assert res.k == true_k, res.scores
    assert res.method == method
    assert sorted(res.scores) == list(ks)
    assert all(np.isfinite(v) for v in res.scores.values())


def test_inertias_decrease_and_elbow_scores_are_inertias():
    X, _ = blobs(4, seed=3)
    res = select_k(X, range(1, 8), method="elbow", seed=0)
    J = [res.inertias[k] for k in range(1, 8)]
    assert all(a >= b for a, b in pairwise(J))
    assert res.scores == res.inertias


def test_silhouette_matches_sklearn_including_singletons():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(257, 3))
    labels = rng.integers(4, size=257)
    labels[labels == 3] = 2
    labels[11] = 3  # a singleton cluster
    for budget in (1, 5000, 64 * 2**20):  # chunking does not change the value
        assert _silhouette(X, labels, 5, budget) == pytest.approx(
            metrics.silhouette_score(X, labels), rel=1e-9
        )
    assert _silhouette(X, np.zeros(257, dtype=np.int64), 2, 2**20) == -1.0


def test_knee_of_a_known_curve():
    ks = np.arange(1, 9, dtype=float)
    J = np.array([1000, 300, 100, 90, 85, 80, 76, 72], dtype=float)
    assert ks[_knee(ks, J)] == 3
    J[5:] = 0.0  # a perfect fit at large k must not break the log scale
    assert np.isfinite(_knee(ks, J))
    assert _knee(ks, np.full(8, 3.0)) == 0


def test_bic_prefers_the_generating_k_and_penalises_splits():
    rng = np.random.default_rng(0)
    n, d = 400, 2
    X = rng.normal(size=(n, d))
    J1 = float(((X - X.mean(0)) ** 2).sum())
    # splitting one Gaussian along its first axis lowers J by about n·2/π
    left = X[:, 0] < 0
    J2 = float(((X[left] - X[left].mean(0)) ** 2).sum() + ((X[~left] - X[~left].mean(0)) ** 2).sum())
    assert J2 < J1
    assert _bic(J1, np.array([n]), n, d, 1) > _bic(J2, np.array([left.sum(), (~left).sum()]), n, d, 2)


def test_silhouette_sample_size_and_determinism():
    X, _ = blobs(3, n_per=400, seed=5)
    a = select_k(X, [2, 3, 4], seed=1, sample_size=300)
    b = select_k(X, [2, 3, 4], seed=1, sample_size=300)
    assert a == b and a.k == 3


@pytest.mark.parametrize(
    "kwargs, exc, msg",
    [
        (dict(k_values=[]), ValueError, "k_values is empty"),
        (dict(k_values=[2, 2]), ValueError, r"duplicates: \[2, 2\]"),
        (dict(k_values=[0, 2]), ValueError, r"k_values element must be an integer >= 1; got 0"),
        (dict(k_values=[2.5]), TypeError, r"k_values element must be an integer"),
        (dict(k_values=5), TypeError, r"k_values must be an iterable"),
        (dict(k_values=[2, 40]), ValueError, r"n_samples - 1 = 29; got k=40"),
        (dict(k_values=[1, 2]), ValueError, r"silhouette needs k >= 2; got k=1"),
        (dict(k_values=[1, 2], method="elbow"), ValueError, r"elbow needs at least 3"),
        (dict(k_values=[2], method="gap"), ValueError, r"method must be one of .*got 'gap'"),
        (dict(k_values=[2], sample_size=1), ValueError, r"sample_size must be an integer >= 2; got 1"),
        (dict(k_values=[2], n_init=0), ValueError, r"n_init .*got 0"),
        (dict(k_values=[2], seed=-1), ValueError, r"seed must be a non-negative"),
    ],
)
def test_bad_input(kwargs, exc, msg):
    X, _ = blobs(2, n_per=15)
    with pytest.raises(exc, match=msg):
        select_k(X, **kwargs)


def test_bad_X():
    with pytest.raises(ValueError, match=r"row 2"):
        select_k(np.array([[0.0], [1.0], [np.nan], [3.0]]), [2])
    with pytest.raises(ValueError, match=r"2-D"):
        select_k(np.ones(10), [2])

"""RiverStreamingKMeans against river's own checks, and its learn_one/predict_one behaviour."""

import copy
import random

import numpy as np
import pytest
import river.checks
from river.checks import common

from streamkm.cluster import StreamingKMeans
from streamkm.interop.river import RiverStreamingKMeans


def _stream(n=600, k=3, d=5, seed=0):
    """(x, y) pairs: dicts over features f0..f{d-1} drawn around k separated means."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 10, size=(k, d))
    y = rng.integers(0, k, size=n)
    X = means[y] + rng.normal(0, 0.3, size=(n, d))
    return [({f"f{j}": float(v) for j, v in enumerate(row)}, int(label)) for row, label in zip(X, y, strict=True)]


def _ari(a, b):
    from sklearn.metrics import adjusted_rand_score

    return adjusted_rand_score(a, b)


# --------------------------------------------------------------------------
# river's suite
# --------------------------------------------------------------------------
def test_river_check_estimator():
    for params in RiverStreamingKMeans._unit_test_params():
        river.checks.check_estimator(RiverStreamingKMeans(**params))


# river.checks.yield_checks pairs its dataset checks with datasets for classifiers, regressors,
# anomaly detectors and transformers, but has none for clusterers, so for a Clusterer it runs
# only the general checks above. These are the dataset checks, run by hand on a numeric stream.
# check_predict_one_pure and check_predict_one_before_any_learn are absent: for a clusterer they
# call no method (river lists no inference method of a Clusterer); test_predict_one_* cover them.
_DATASET_CHECKS = [
    common.check_learn_one,
    common.check_pickling,
    common.check_shuffle_features_no_impact,
    common.check_emerging_features,
    common.check_disappearing_features,
    common.check_radically_disappearing_features,
    common.check_no_state_aliasing_with_input,
    common.check_clone_is_independent,
    common.check_bounded_memory_growth,
]


@pytest.mark.parametrize("check", _DATASET_CHECKS, ids=lambda c: c.__name__)
def test_river_dataset_checks(check):
    random.seed(0)  # the feature-dropping checks draw with the random module
    model = RiverStreamingKMeans(n_clusters=3, batch_size=16, seed=0)
    check(model.clone(), dataset=_stream(n=400))


def test_river_seeding_is_idempotent():
    model = RiverStreamingKMeans(n_clusters=3, batch_size=16)  # seed=None: stochastic
    assert model._is_stochastic
    common.check_seeding_is_idempotent(model, dataset=_stream(n=200))


# --------------------------------------------------------------------------
# behaviour
# --------------------------------------------------------------------------
def test_learn_one_batches_into_partial_fit_in_sorted_feature_order():
    data = _stream(n=100, d=4)
    model = RiverStreamingKMeans(n_clusters=3, batch_size=20, seed=0)
    ref = StreamingKMeans(3, reservoir_size=1000, seed=0)
    for i, (x, _) in enumerate(data):
        keys = list(x)
        random.Random(i).shuffle(keys)  # key order of the dicts must not matter
        model.learn_one({key: x[key] for key in keys})
        assert model.kmeans.n_seen_ == 20 * ((i + 1) // 20) and model.n_pending == (i + 1) % 20
    assert model.features == ("f0", "f1", "f2", "f3")
    X = np.array([[x[f] for f in model.features] for x, _ in data])
    for s in range(0, 100, 20):
        ref.partial_fit(X[s : s + 20])
    np.testing.assert_array_equal(model.kmeans.cluster_centers_, ref.cluster_centers_)
    assert model.kmeans.n_batches_ == 5


def test_predict_one_before_initialization_returns_zero():
    data = _stream(n=40)
    model = RiverStreamingKMeans(n_clusters=3, batch_size=32, seed=0)
    assert model.predict_one(data[0][0]) == 0  # nothing learned
    for x, _ in data[:31]:
        model.learn_one(x)
    assert not model.kmeans.is_initialized_ and model.features is None
    assert {model.predict_one(x) for x, _ in data} == {0}
    model.learn_one(data[31][0])  # the 32nd point completes the first batch
    assert model.kmeans.is_initialized_


def test_predict_one_clusters_the_stream():
    data = _stream(n=900, k=3)
    model = RiverStreamingKMeans(n_clusters=3, seed=0)
    for x, _ in data[:600]:
        model.learn_one(x)
    test = data[600:]
    pred = [model.predict_one(x) for x, _ in test]
    assert all(isinstance(p, int) and 0 <= p < 3 for p in pred)
    assert _ari([y for _, y in test], pred) > 0.99
    # predict_one is the wrapped model's predict on the row in feature order
    row = np.array([[test[0][0][f] for f in model.features]])
    assert pred[0] == int(model.kmeans.predict(row)[0])


def test_predict_one_pure_missing_and_unknown_features():
    data = _stream(n=200, d=3)
    model = RiverStreamingKMeans(n_clusters=3, batch_size=50, seed=0)
    for x, _ in data:
        model.learn_one(x)
    x = dict(data[0][0])
    before = copy.deepcopy(x)
    label = model.predict_one(x)
    assert x == before  # not mutated
    assert model.predict_one({**x, "new": 1e6}) == label  # unknown features are ignored
    partial = {"f0": x["f0"], "f1": x["f1"]}
    row = np.array([[x["f0"], x["f1"], 0.0]])  # a missing feature counts as 0
    assert model.predict_one(partial) == int(model.kmeans.predict(row)[0])


def test_bad_values_are_named_and_nothing_is_learned():
    model = RiverStreamingKMeans(n_clusters=2, batch_size=4, seed=0)
    model.learn_one({"a": 1.0, "b": 2.0})
    with pytest.raises(ValueError, match="feature 'b' must be finite"):
        model.learn_one({"a": 1.0, "b": float("nan")})
    with pytest.raises(TypeError, match="feature 'a' must be a real number; got 'x'"):
        model.learn_one({"a": "x"})
    with pytest.raises(TypeError, match="x must be a dict"):
        model.learn_one([1.0, 2.0])
    assert model.n_pending == 1
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1; got 0"):
        RiverStreamingKMeans(batch_size=0)
    with pytest.raises(ValueError, match="reservoir_size=1 must be >= n_clusters=2"):
        RiverStreamingKMeans(n_clusters=2, reservoir_size=1)


def test_flush_sends_a_short_batch_and_empty_first_batch_is_discarded():
    model = RiverStreamingKMeans(n_clusters=2, batch_size=100, seed=0)
    for _ in range(3):
        model.learn_one({})
    model.flush()
    assert model.features is None and model.n_pending == 0 and model.kmeans.n_seen_ == 0
    for x, _ in _stream(n=10, k=2, d=2):
        model.learn_one(x)
    model.flush()
    assert model.kmeans.is_initialized_ and model.kmeans.n_seen_ == 10 and model.n_pending == 0
    model.flush()  # nothing pending: no empty batch
    assert model.kmeans.n_batches_ == 1


def test_clone_is_fresh_with_equal_params():
    model = RiverStreamingKMeans(n_clusters=4, batch_size=8, half_life=50.0, seed=3)
    for x, _ in _stream(n=64):
        model.learn_one(x)
    fresh = model.clone()
    assert fresh._get_params() == model._get_params()
    assert fresh.features is None and fresh.kmeans.n_seen_ == 0 and model.kmeans.n_seen_ == 64
    assert fresh.kmeans.gamma == model.kmeans.gamma == 0.5 ** (1 / 50)

"""Tests for streamkm.cluster.streaming_kmeans (StreamingKMeans: update, quality, drift, input)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from streamkm.cluster._distance import _assign
from streamkm.cluster.kmeans import KMeans
from streamkm.cluster.streaming_kmeans import StreamingKMeans
from tests.cluster.streaming_helpers import assert_state_equal, blobs, fitted_model, separated_means


# --------------------------------------------------------------------------
# update rule
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kw, unit_gamma", [
    ({}, None),  # γ = 1: running mean
    ({"half_life": 2.5}, "batches"),
    ({"decay": 0.999, "time_unit": "points"}, "points"),
])
def test_update_rule_matches_closed_form(kw, unit_gamma):
    """Centers = decayed weighted mean of all points ever assigned (float64)."""
    rng = np.random.default_rng(3)
    means = separated_means(5, 4, rng)
    model = StreamingKMeans(5, seed=1, dying_threshold=0.0, init_size=60, **kw)
    X0, _ = blobs(means, 100, rng, dtype=np.float64)
    model.partial_fit(X0)
    assert model.is_initialized_ and model.cluster_centers_.dtype == np.float64
    w = model.counts_.copy()
    S = model.cluster_centers_ * w[:, None]  # initial centers are means of their clusters
    g = model.gamma
    for _ in range(25):
        X, _ = blobs(means, int(rng.integers(20, 200)), rng, dtype=np.float64)
        labels = model.predict(X)  # assignment before the update (prequential)
        gb = g if unit_gamma != "points" else g ** len(X)
        if unit_gamma is None:
            assert gb == 1.0
        w = gb * w + np.bincount(labels, minlength=5)
        S = gb * S
        np.add.at(S, labels, X)
        model.partial_fit(X)
    np.testing.assert_allclose(model.counts_, w, rtol=1e-12)
    np.testing.assert_allclose(model.cluster_centers_, S / w[:, None], rtol=1e-10, atol=1e-10)
    if unit_gamma is None:
        # γ = 1: weights are exact integer counts of points assigned.
        assert model.counts_.sum() == model.n_seen_


def test_half_life_sets_gamma_and_excludes_decay():
    assert StreamingKMeans(2, half_life=4).gamma == pytest.approx(0.5 ** 0.25)
    assert StreamingKMeans(2, decay=0.9).gamma == 0.9
    with pytest.raises(ValueError, match="mutually exclusive.*decay=0.9.*half_life=3"):
        StreamingKMeans(2, decay=0.9, half_life=3)


def test_prequential_objective_and_shift():
    model, means, rng = fitted_model()
    X, _ = blobs(means, 300, rng)
    before_centers = model.cluster_centers_.copy()
    expected = -model.score(X) / len(X)
    ewm_before = model.ewm_objective_
    model.partial_fit(X)
    assert model.last_batch_objective_ == pytest.approx(expected, rel=1e-5)
    assert model.ewm_objective_ == pytest.approx(0.9 * ewm_before + 0.1 * expected, rel=1e-6)
    shift = np.linalg.norm(model.cluster_centers_ - before_centers, axis=1).max()
    assert model.last_center_shift_ == pytest.approx(float(shift), rel=1e-4, abs=1e-6)


# --------------------------------------------------------------------------
# quality
# --------------------------------------------------------------------------
def test_recovers_known_clusters():
    rng = np.random.default_rng(7)
    means = separated_means(6, 8, rng, scale=6.0)
    model = StreamingKMeans(6, seed=0)
    for _ in range(30):
        model.partial_fit(blobs(means, 256, rng)[0])
    X, y = blobs(means, 3000, rng)
    assert adjusted_rand_score(y, model.predict(X)) > 0.98


def test_single_pass_objective_close_to_batch_kmeans():
    rng = np.random.default_rng(11)
    means = separated_means(16, 16, rng, scale=3.0)
    X, _ = blobs(means, 40_000, rng)
    model = StreamingKMeans(16, seed=0).fit(X, batch_size=1024)
    stream_obj = -model.score(X)
    batch_obj = KMeans(16, seed=0, n_init=3).fit(X).inertia_
    assert stream_obj <= 1.05 * batch_obj, stream_obj / batch_obj


def test_lazy_initialization_buffers_whole_batches():
    model = StreamingKMeans(4, init_size=50, seed=0)
    rng = np.random.default_rng(0)
    model.partial_fit(rng.normal(size=(30, 2)))
    assert not model.is_initialized_ and model.n_seen_ == 30 and model.cluster_centers_ is None
    with pytest.raises(ValueError, match="not initialized yet.*30 of 50 points"):
        model.predict(np.zeros((1, 2)))
    model.partial_fit(rng.normal(size=(30, 2)))
    assert model.is_initialized_ and model.n_seen_ == 60 and model.n_batches_ == 2
    assert model.counts_.sum() == 60  # weights = cluster sizes of all 60 buffered points
    assert model.reservoir_sample.shape == (60, 2)
    # default init_size = 3 * n_clusters
    small = StreamingKMeans(4, seed=0).partial_fit(rng.normal(size=(11, 2)))
    assert not small.is_initialized_
    assert small.partial_fit(rng.normal(size=(1, 2))).is_initialized_


def test_predict_transform_score_agree():
    model, means, rng = fitted_model()
    X, _ = blobs(means, 500, rng)
    D = model.transform(X)
    assert D.shape == (500, 4) and (D >= 0).all()
    np.testing.assert_array_equal(model.predict(X), D.argmin(axis=1))
    assert model.score(X) == pytest.approx(-D.min(axis=1).sum(dtype=np.float64), rel=1e-5)


def test_assign_equals_predict_and_brute_force():
    model, means, rng = fitted_model()
    X, _ = blobs(means, 500, rng)
    before = model.state_dict()
    labels, sq = model.assign(X)
    assert labels.shape == sq.shape == (500,)
    assert labels.dtype == np.int64 and sq.dtype == np.float32
    np.testing.assert_array_equal(labels, model.predict(X))
    # The contract: exactly what the distance kernel returns for the centers.
    ref_labels, ref_sq = _assign(X, model.cluster_centers_)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(sq, ref_sq)
    # Squared distances match a float64 brute force within float32 rounding of
    # the expansion ‖x‖² − 2x·μ + ‖μ‖², and every label is a nearest center.
    X64, C64 = X.astype(np.float64), model.cluster_centers_.astype(np.float64)
    D = ((X64[:, None, :] - C64[None, :, :]) ** 2).sum(-1)
    tol = 16 * np.finfo(np.float32).eps * ((X64 * X64).sum(1) + (C64 * C64).sum(1).max())
    assert (np.abs(sq - D.min(1)) <= tol).all()
    assert (D[np.arange(500), labels] - D.min(1) <= tol).all()
    # float64 input is converted to the model's dtype, as in predict
    labels64, sq64 = model.assign(X64)
    np.testing.assert_array_equal(labels64, labels)
    np.testing.assert_array_equal(sq64, sq)
    assert_state_equal(before, model.state_dict())  # nothing changed, RNG included


def test_assign_rejects_bad_input_and_leaves_model_unchanged():
    model, _, _ = fitted_model()
    before = model.state_dict()
    with pytest.raises(ValueError, match="expected 3 features, got 2"):
        model.assign(np.zeros((5, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN or infinity in row 1"):
        model.assign([[0.0, 0.0, 0.0], [0.0, np.nan, 0.0]])
    assert_state_equal(before, model.state_dict())


def test_assign_before_initialization_raises():
    model = StreamingKMeans(4, init_size=50, seed=0)
    with pytest.raises(ValueError, match="not initialized yet, cannot assign: 0 of 50"):
        model.assign(np.zeros((1, 2)))
    model.partial_fit(np.random.default_rng(0).normal(size=(30, 2)))
    before = model.state_dict()
    with pytest.raises(ValueError, match="not initialized yet, cannot assign: 30 of 50"):
        model.assign(np.zeros((1, 2)))
    assert_state_equal(before, model.state_dict())


@pytest.mark.parametrize("kw, expected", [
    (dict(), 12),  # default init_size = 3 * n_clusters
    (dict(init_size=50), 50),
    (dict(init_size=2), 4),  # never fewer than n_clusters points
])
def test_init_threshold_is_the_point_count_that_initializes(kw, expected):
    model = StreamingKMeans(4, seed=0, **kw)
    assert model.init_threshold == expected
    with pytest.raises(AttributeError):
        model.init_threshold = 3
    rng = np.random.default_rng(0)
    model.partial_fit(rng.normal(size=(expected - 1, 2)))
    assert not model.is_initialized_
    model.partial_fit(rng.normal(size=(1, 2)))
    assert model.is_initialized_ and model.n_seen_ == expected
    one_batch = StreamingKMeans(4, seed=0, **kw).partial_fit(rng.normal(size=(expected, 2)))
    assert one_batch.is_initialized_


def test_deterministic_given_seed_and_order():
    a, _, _ = fitted_model(seed=5, reseed_interval=700)
    b, _, _ = fitted_model(seed=5, reseed_interval=700)
    assert_state_equal(a.state_dict(), b.state_dict())
    c = StreamingKMeans(4, seed=6)
    rng = np.random.default_rng(5)
    means = separated_means(4, 3, rng)
    c.partial_fit(blobs(means, 200, rng)[0])
    d = StreamingKMeans(4, seed=5)
    rng = np.random.default_rng(5)
    means = separated_means(4, 3, rng)
    d.partial_fit(blobs(means, 200, rng)[0])
    assert c.state_dict()["rng"] != d.state_dict()["rng"]


def test_fit_equals_partial_fit_batches():
    rng = np.random.default_rng(2)
    X, _ = blobs(separated_means(3, 2, rng), 1000, rng)
    a = StreamingKMeans(3, seed=0).fit(X, batch_size=128)
    b = StreamingKMeans(3, seed=0)
    for s in range(0, 1000, 128):
        b.partial_fit(X[s : s + 128])
    assert_state_equal(a.state_dict(), b.state_dict())


# --------------------------------------------------------------------------
# drift
# --------------------------------------------------------------------------
def _drift_run(model, old, new, rng, m=300, n_old=40, n_new=20):
    for _ in range(n_old):
        model.partial_fit(blobs(old, m, rng)[0])
    ratios = []
    for _ in range(n_new):
        X, lab = blobs(new, m, rng)
        optimum = float(((X - new[lab]) ** 2).sum(axis=1).mean())  # true means, this batch
        model.partial_fit(X)
        ratios.append(model.last_batch_objective_ / optimum)
    return np.array(ratios)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_half_life_tracks_a_translation_and_gamma_one_does_not(seed):
    """All means move by 4 sigma: decayed centers catch up within ~3 half-lives."""
    rng = np.random.default_rng(seed)
    k, d, h = 6, 5, 3
    old = separated_means(k, d, rng)
    step = rng.normal(size=(k, d))
    new = old + 4.0 * step / np.linalg.norm(step, axis=1, keepdims=True)
    decayed = _drift_run(StreamingKMeans(k, half_life=h, seed=0), old, new,
                         np.random.default_rng(seed + 10))
    frozen = _drift_run(StreamingKMeans(k, seed=0), old, new, np.random.default_rng(seed + 10))
    assert decayed[0] > 2.0 and frozen[0] > 2.0  # the shift hurts both at first
    assert decayed[3 * h : 5 * h].mean() < 1.10, decayed
    assert decayed[3 * h : 5 * h].max() < 1.15, decayed
    assert frozen[3 * h : 5 * h].min() > 1.5, frozen


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_time_biased_reseeding_recovers_from_relocation(seed):
    """All means jump to new places: periodic reseeds on the time-biased
    reservoir recover within a few half-lives; γ = 1 with a uniform reservoir
    does not."""
    rng = np.random.default_rng(seed)
    k, d, h, m = 6, 5, 3, 300
    old, new = separated_means(k, d, rng), separated_means(k, d, rng)
    common = dict(reseed_interval=h * m, reservoir_size=600, seed=0)
    decayed = StreamingKMeans(k, half_life=h, reservoir="time_biased", **common)
    frozen = StreamingKMeans(k, **common)
    r_dec = _drift_run(decayed, old, new, np.random.default_rng(seed + 10), n_new=30)
    r_frz = _drift_run(frozen, old, new, np.random.default_rng(seed + 10), n_new=30)
    assert r_dec[0] > 3.0
    # Slower than a translation: a reseed only wins once the old regime's
    # points have mostly left the reservoir (observed: 5-7 half-lives).
    assert r_dec[8 * h :].max() < 1.10, r_dec
    assert r_frz[8 * h :].min() > 1.5, r_frz
    assert decayed.n_reseeds_ >= 1


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------
BAD_BATCHES = [
    (np.array([[0.0, 1.0, np.nan], [1.0, 2.0, 3.0]]), ValueError, "NaN or infinity in row 0"),
    (np.array([[0.0, 1.0, 2.0], [1.0, np.inf, 3.0]]), ValueError, "row 1"),
    (np.zeros((5, 2)), ValueError, "expected 3 features, got 2"),
    (np.zeros(3), ValueError, "2-D"),
    (np.zeros((2, 3, 1)), ValueError, "2-D"),
    (np.zeros((0, 3)), ValueError, "empty"),
    (np.array([["a", "b", "c"]]), TypeError, "numeric"),
]


@pytest.mark.parametrize("phase", ["buffering", "streaming"])
@pytest.mark.parametrize("bad, exc, match", BAD_BATCHES)
def test_bad_batch_rejected_and_state_unchanged(phase, bad, exc, match):
    rng = np.random.default_rng(0)
    model = StreamingKMeans(4, seed=0, init_size=50 if phase == "streaming" else 500)
    for _ in range(3):
        model.partial_fit(rng.normal(size=(40, 3)))
    assert model.is_initialized_ == (phase == "streaming")
    before = model.state_dict()
    with pytest.raises(exc, match=match):
        model.partial_fit(bad)
    assert_state_equal(before, model.state_dict())
    if phase == "streaming" and bad.ndim == 2 and bad.size and bad.dtype.kind == "f":
        with pytest.raises(exc, match=match):
            model.predict(bad)


def test_first_batch_rejections_leave_fresh_model():
    model = StreamingKMeans(3, seed=0)
    before = model.state_dict()
    for bad, exc, _ in BAD_BATCHES:
        if bad.ndim == 2 and bad.shape[1] == 2:
            continue  # 2 features would be valid for a fresh model
        with pytest.raises(exc):
            model.partial_fit(bad)
        assert_state_equal(before, model.state_dict())
    assert model.n_features_in_ is None


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 80), min_size=2, max_size=10),
    decay=st.floats(0.5, 1.0),
    unit=st.sampled_from(["batches", "points"]),
    seed=st.integers(0, 2**16),
)
def test_total_weight_follows_decay_recursion(sizes, decay, unit, seed):
    rng = np.random.default_rng(seed)
    model = StreamingKMeans(3, decay=decay, time_unit=unit, dying_threshold=0.0,
                            reseed_interval=57, init_size=5, seed=seed)
    total = None
    for m in sizes:
        X = rng.normal(size=(m, 2)) * rng.uniform(0.1, 10)
        was_init = model.is_initialized_
        model.partial_fit(X)
        if not was_init:
            total = model.n_seen_ if model.is_initialized_ else None
            continue
        g = decay if unit == "batches" else decay ** m
        total = g * total + m  # reseeds rescale to the total, they never change it
        assert model.counts_.sum() == pytest.approx(total, rel=1e-9)
        assert np.isfinite(model.cluster_centers_).all() and (model.counts_ >= 0).all()
        assert model.last_batch_objective_ >= 0 and model.last_center_shift_ >= 0


@pytest.mark.parametrize("reservoir", ["uniform", "time_biased"])
def test_half_life_so_small_that_gamma_underflows_is_rejected(reservoir):
    # 0.5 ** (1 / 1e-300) underflows to 0.0, i.e. decay=0, which is invalid;
    # with a time-biased reservoir it used to fail inside the first
    # partial_fit after n_features_in_ was already set.
    with pytest.raises(ValueError, match=r"half_life=1e-300 .*underflows"):
        StreamingKMeans(2, half_life=1e-300, reservoir=reservoir)
    # The smallest half-lives that still give gamma > 0 stream without NaN.
    model = StreamingKMeans(2, half_life=1e-3, reservoir=reservoir, time_unit="points", seed=0)
    rng = np.random.default_rng(0)
    for _ in range(50):
        model.partial_fit(rng.normal(size=(8, 2)))
    assert model.gamma > 0.0
    assert np.isfinite(model.cluster_centers_).all() and np.isfinite(model.counts_).all()


@pytest.mark.parametrize("initialized", [True, False])
def test_float64_batch_overflowing_float32_model_is_rejected_unchanged(initialized):
    # The first batch fixed float32; a later float64 batch is finite as float64
    # but 1e39 overflows to inf when cast, which used to reach the centers.
    rng = np.random.default_rng(0)
    model = StreamingKMeans(2, seed=0, init_size=None if initialized else 1000)
    model.partial_fit(rng.normal(size=(64, 3)).astype(np.float32))
    assert model.is_initialized_ is initialized
    before = model.state_dict()
    bad = np.vstack([rng.normal(size=(4, 3)), [[0.0, 1e39, 0.0]]])
    with pytest.raises(ValueError, match=r"row 4 .*float32"):
        model.partial_fit(bad)
    assert_state_equal(before, model.state_dict())
    if initialized:
        with pytest.raises(ValueError, match=r"row 4 .*float32"):
            model.predict(bad)

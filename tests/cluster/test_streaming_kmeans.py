"""Tests for streamkm.cluster.streaming_kmeans (StreamingKMeans, compute_reseed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from streamkm.cluster.kmeans import KMeans
from streamkm.cluster.streaming_kmeans import (
    ReseedResult,
    StreamingKMeans,
    compute_reseed,
)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def blobs(means, n, rng, sigma=1.0, dtype=np.float32):
    labels = rng.integers(0, len(means), n)
    X = means[labels] + sigma * rng.normal(size=(n, means.shape[1]))
    return X.astype(dtype), labels


def separated_means(k, d, rng, scale=10.0):
    return rng.normal(scale=scale, size=(k, d))


def json_roundtrip(state):
    """Send every non-array leaf through JSON, as a checkpoint would."""
    if isinstance(state, dict):
        return {key: json_roundtrip(v) for key, v in state.items()}
    if isinstance(state, np.ndarray):
        return state.copy()
    return json.loads(json.dumps(state))


def assert_state_equal(a, b, path="state"):
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for key in a:
            assert_state_equal(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), path
        assert a.dtype == b.dtype and a.shape == b.shape, path
        np.testing.assert_array_equal(a, b, err_msg=path)
    else:
        assert a == b and type(a) is type(b), (path, a, b)


def fitted_model(seed=0, k=4, d=3, n_batches=10, m=200, **kw):
    rng = np.random.default_rng(seed)
    means = separated_means(k, d, rng)
    model = StreamingKMeans(k, seed=seed, **kw)
    for _ in range(n_batches):
        model.partial_fit(blobs(means, m, rng)[0])
    return model, means, rng


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
    for b in range(25):
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
# reseeding
# --------------------------------------------------------------------------
def _bad_result(model, centers):
    k = model.n_clusters
    return ReseedResult(True, centers, np.full(k, model.counts_.sum() / k), 0.0, 0.0, 0)


def test_reseed_accepts_a_better_clustering_and_carries_weight():
    model, means, rng = fitted_model(k=4, d=3, reservoir_size=500)
    total = model.counts_.sum()
    bad = np.repeat(model.cluster_centers_[:1], 4, axis=0) + np.arange(4)[:, None] * 1e-3
    assert model.apply_reseed(_bad_result(model, bad)) is True  # inject a bad model
    assert model.n_reseeds_ == 1
    S = model.reservoir_sample.copy()
    obj_bad = -model.score(S) / len(S)
    assert model.reseed() is True
    assert model.n_reseeds_ == 2 and model.n_reseeds_rejected_ == 0
    obj_new = -model.score(S) / len(S)
    assert obj_new < 0.1 * obj_bad
    assert model.counts_.sum() == pytest.approx(total, rel=1e-12)
    # Weights = reservoir assignment counts scaled to the total weight.
    share = np.bincount(model.predict(S), minlength=4) / len(S)
    np.testing.assert_allclose(model.counts_ / total, share, rtol=1e-9, atol=1e-12)


def test_reseed_rejected_when_gain_too_small():
    model, _, _ = fitted_model(k=4, d=3, reservoir_size=500)
    state = model.state_dict()
    assert model.reseed() is False  # already optimal: < 1 % gain
    assert model.n_reseeds_ == 0 and model.n_reseeds_rejected_ == 1
    np.testing.assert_array_equal(model.state_dict()["centers"], state["centers"])
    np.testing.assert_array_equal(model.counts_, state["counts"])
    # A huge min_gain rejects even a large improvement.
    strict = StreamingKMeans(4, seed=0, reseed_min_gain=0.999, reservoir_size=500)
    strict.load_state_dict({**state, "params": strict.get_params()})
    bad = np.repeat(strict.cluster_centers_[:1], 4, axis=0) + np.arange(4)[:, None] * 1e-3
    strict.apply_reseed(_bad_result(strict, bad))
    assert strict.reseed() is False
    np.testing.assert_array_equal(strict.cluster_centers_, bad.astype(np.float32))


def test_reseed_interval_triggers_by_point_count():
    model = StreamingKMeans(3, seed=0, reseed_interval=1000, init_size=300)
    rng = np.random.default_rng(0)
    means = separated_means(3, 2, rng)
    expected = 0
    for _ in range(20):
        before = model.n_seen_
        was_init = model.is_initialized_
        model.partial_fit(blobs(means, 300, rng)[0])
        if was_init:
            expected += model.n_seen_ // 1000 - before // 1000
        assert model.n_reseeds_ + model.n_reseeds_rejected_ == expected
    assert expected == 6  # n_seen 600 ... 6000 crosses 1000, 2000, ..., 6000


def test_compute_reseed_is_pure_and_deterministic():
    rng = np.random.default_rng(1)
    S, _ = blobs(separated_means(3, 2, rng), 300, rng)
    C = S[:3].astype(np.float64)
    S0, C0 = S.copy(), C.copy()
    a = compute_reseed(S, C, rng=5, total_weight=30.0)
    b = compute_reseed(S, C, rng=5, total_weight=30.0)
    np.testing.assert_array_equal(S, S0)
    np.testing.assert_array_equal(C, C0)
    np.testing.assert_array_equal(a.centers, b.centers)
    assert a.counts.sum() == pytest.approx(30.0)
    assert a.accepted and a.objective_after < a.objective_before
    with pytest.raises(ValueError, match="need at least n_clusters=3"):
        compute_reseed(S[:2], C)
    with pytest.raises(ValueError, match="n_clusters=4 does not match"):
        compute_reseed(S, C, n_clusters=4)
    with pytest.raises(ValueError, match="min_gain"):
        compute_reseed(S, C, min_gain=1.5)


def test_prepare_and_apply_reseed_equal_reseed():
    a, _, _ = fitted_model(seed=3, reservoir_size=300)
    b = StreamingKMeans.from_state_dict(a.state_dict())
    accepted = a.reseed()
    args = b.prepare_reseed()
    assert b.apply_reseed(compute_reseed(**args)) is accepted
    assert_state_equal(a.state_dict(), b.state_dict())


# --------------------------------------------------------------------------
# dying clusters
# --------------------------------------------------------------------------
def test_dying_cluster_is_replaced_at_a_reservoir_point():
    rng = np.random.default_rng(4)
    means = separated_means(4, 3, rng)
    model = StreamingKMeans(4, half_life=2, reservoir="time_biased", reservoir_size=400,
                            dying_threshold=0.05, seed=0)
    for _ in range(10):
        model.partial_fit(blobs(means, 200, rng)[0])
    assert model.n_dying_replaced_ == 0
    # Blob 3 disappears: its center stops receiving points and decays.
    gone = int(model.predict(means[3:4].astype(np.float32))[0])
    for step in range(40):
        before = model.n_dying_replaced_
        model.partial_fit(blobs(means[:3], 200, rng)[0])
        if model.n_dying_replaced_ > before:
            break
    else:
        pytest.fail("the deserted cluster was never replaced")
    # Half-life 2: weight falls below 5 % of the mean after ~log2(20)*2 ≈ 9 batches.
    assert 5 <= step <= 15
    assert model.n_dying_replaced_ - before == 1
    center = model.cluster_centers_[gone]
    assert (model.reservoir_sample == center).all(axis=1).any()  # placed at a reservoir point
    assert model.counts_[gone] == pytest.approx(0.05 * model.counts_.mean(), rel=0.05)
    # The replacement lands in the live data, far from the deserted blob.
    assert np.linalg.norm(center - means[3]) > 3.0


def test_dying_threshold_zero_disables_replacement():
    rng = np.random.default_rng(4)
    means = separated_means(4, 3, rng)
    model = StreamingKMeans(4, half_life=2, dying_threshold=0.0, seed=0)
    for _ in range(10):
        model.partial_fit(blobs(means, 200, rng)[0])
    for _ in range(30):
        model.partial_fit(blobs(means[:3], 200, rng)[0])
    assert model.n_dying_replaced_ == 0
    assert model.counts_.min() < 1e-3 * model.counts_.mean()


# --------------------------------------------------------------------------
# state_dict
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    dict(half_life=2, reservoir="time_biased", reservoir_size=300, reseed_interval=900,
         dying_threshold=0.05),
    dict(decay=0.999, time_unit="points", reservoir_size=250, reseed_interval=700,
         dying_threshold=0.05),
    dict(reservoir_size=200, reseed_interval=500, init_size=450),
])
def test_save_restore_continues_bit_identically(kw):
    rng = np.random.default_rng(8)
    means = separated_means(5, 4, rng)
    batches = [blobs(means if b < 12 else means[:3], int(rng.integers(50, 250)), rng)[0]
               for b in range(30)]
    full = StreamingKMeans(5, seed=3, **kw)
    for X in batches:
        full.partial_fit(X)
    for split in (1, 15):  # during the init buffer, and mid-stream
        first = StreamingKMeans(5, seed=3, **kw)
        for X in batches[:split]:
            first.partial_fit(X)
        saved = first.state_dict()
        events_at_split = first.n_reseeds_ + first.n_reseeds_rejected_ + first.n_dying_replaced_
        second = StreamingKMeans.from_state_dict(json_roundtrip(saved))
        assert_state_equal(saved, second.state_dict())
        for X in batches[split:]:
            second.partial_fit(X)
        np.testing.assert_array_equal(second.cluster_centers_, full.cluster_centers_)
        assert_state_equal(full.state_dict(), second.state_dict())
    events = full.n_reseeds_ + full.n_reseeds_rejected_ + full.n_dying_replaced_
    assert events > events_at_split  # reseeds/replacements happened after the split


def test_state_dict_is_plain_arrays_and_json():
    model, _, _ = fitted_model()
    state = model.state_dict()

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif not isinstance(x, np.ndarray):
            json.dumps(x)
            assert not isinstance(x, np.generic)

    walk(state)
    assert state["centers"].dtype == np.float64 and state["centers"].shape == (4, 3)


def test_load_state_dict_validates_and_leaves_model_unchanged():
    model, _, _ = fitted_model()
    good = model.state_dict()
    target, _, _ = fitted_model(seed=1)
    before = target.state_dict()
    assert target.seed == 1
    bad_centers = good["centers"][:2]
    cases = [
        ({**good, "params": {**good["params"], "n_clusters": 5}}, ValueError,
         "hyperparameter mismatch.*n_clusters: state=5 vs model=4"),
        ({k: v for k, v in good.items() if k != "counts"}, ValueError, r"missing \['counts'\]"),
        ({**good, "extra": 1}, ValueError, r"unknown \['extra'\]"),
        ({**good, "centers": bad_centers}, ValueError, r"centers.*shape \(4, 3\)"),
        ({**good, "counts": -good["counts"]}, ValueError, "counts >= 0"),
        ({**good, "rng": {"bit_generator": "PCG64", "state": "junk"}}, ValueError, "rng"),
        ({**good, "n_seen": -1}, ValueError, "n_seen"),
        ({**good, "n_seen": good["n_seen"] + 1}, ValueError, r"reservoir.\] saw 2000 points but n_seen=2001"),
        ({**good, "reservoir": {**good["reservoir"], "capacity": 20_000}}, ValueError,
         "reservoir.*capacity=20000.*expected uniform capacity=10000"),
        ({**good, "version": 99}, ValueError, "version"),
        ("nope", TypeError, "dict"),
    ]
    for state, exc, match in cases:
        with pytest.raises(exc, match=match):
            target.load_state_dict(state)
        assert_state_equal(before, target.state_dict())
    target.load_state_dict(good)
    assert_state_equal(good, target.state_dict())
    assert target.seed == 0  # adopted from the state


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


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(n_clusters=0), ValueError, "n_clusters must be an integer >= 1; got 0"),
    (dict(n_clusters=2.5), TypeError, "n_clusters"),
    (dict(decay=0.0), ValueError, r"decay must be in \(0.0, 1.0\]; got 0.0"),
    (dict(decay=1.5), ValueError, "decay"),
    (dict(half_life=-1), ValueError, "half_life"),
    (dict(time_unit="seconds"), ValueError, "time_unit must be one of"),
    (dict(reservoir_size=2, n_clusters=3), ValueError, "reservoir_size=2 must be >= n_clusters=3"),
    (dict(reservoir="lru"), ValueError, "reservoir must be one of"),
    (dict(reservoir="time_biased"), ValueError, "needs forgetting"),
    (dict(reseed_interval=0), ValueError, "reseed_interval"),
    (dict(reseed_min_gain=1.0), ValueError, "reseed_min_gain"),
    (dict(dying_threshold=-0.1), ValueError, "dying_threshold"),
    (dict(init_size=0), ValueError, "init_size"),
    (dict(max_iter=0), ValueError, "max_iter"),
    (dict(ewm_alpha=0.0), ValueError, "ewm_alpha"),
    (dict(seed=-1), TypeError, "seed"),
    (dict(seed="x"), TypeError, "seed"),
])
def test_invalid_hyperparameters(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        StreamingKMeans(**kwargs)


def test_apply_reseed_rejects_wrong_shapes_without_change():
    model, _, _ = fitted_model()
    before = model.state_dict()
    with pytest.raises(ValueError, match="expected"):
        model.apply_reseed(ReseedResult(True, np.zeros((3, 3)), np.ones(3), 1.0, 0.5, 10))
    with pytest.raises(TypeError, match="ReseedResult"):
        model.apply_reseed({"accepted": True})
    assert_state_equal(before, model.state_dict())
    fresh = StreamingKMeans(2)
    with pytest.raises(ValueError, match="not initialized"):
        fresh.reseed()


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


def test_load_state_dict_rejects_buffer_inconsistent_with_n_seen():
    # Until initialization every point seen sits in the init buffer; a state
    # whose buffer lost points was accepted and initialized from fewer points.
    rng = np.random.default_rng(0)
    src = StreamingKMeans(2, seed=0, init_size=20)
    src.partial_fit(rng.normal(size=(5, 3)).astype(np.float32))
    good = src.state_dict()
    bad = {**good, "init_buffer": good["init_buffer"][:2].copy()}
    target = StreamingKMeans(2, seed=0, init_size=20)
    target.partial_fit(rng.normal(size=(3, 3)).astype(np.float32))
    before = target.state_dict()
    with pytest.raises(ValueError, match="init_buffer'] holds 2 points but n_seen=5"):
        target.load_state_dict(bad)
    assert_state_equal(before, target.state_dict())
    target.load_state_dict(good)
    assert_state_equal(good, target.state_dict())

"""Tests for streamkm.cluster._reseed (reseeding and dying-cluster replacement of StreamingKMeans)."""

from __future__ import annotations

import numpy as np
import pytest

from streamkm.cluster.streaming_kmeans import ReseedResult, StreamingKMeans, compute_reseed
from tests.cluster.streaming_helpers import assert_state_equal, blobs, fitted_model, separated_means


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
    for step in range(40):  # noqa: B007 - step is checked after the loop
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


def _d2_frequencies(S, C, n, draws, seed=0):
    """How often each row of S is drawn by _d2_sample, over ``draws`` calls of ``n`` draws."""
    from streamkm.cluster._reseed import _d2_sample

    rng = np.random.default_rng(seed)
    counts = np.zeros(len(S))
    for _ in range(draws):
        picks = _d2_sample(S, C, n, rng, 2**26)
        assert len(set(picks.tolist())) == n  # a drawn row has D² = 0 afterwards
        counts[picks] += 1
    return counts


@pytest.mark.parametrize("case", ["centred", "offset", "outliers", "tight"])
@pytest.mark.parametrize("n", [1, 3])
def test_d2_rejection_sampler_has_the_exact_distribution(case, n, monkeypatch):
    """The rejection sampler (large reservoirs) draws rows ∝ D² like the full computation.

    "centred" and "outliers": the cheap norm bound accepts; "offset": data far from the
    origin, the GEMV bound does; "tight": every point within 1e-3 of a center, so both
    bounds are loose and the full computation draws. Frequencies per group of rows (their
    blob) agree within a chi-square test.
    """
    rng = np.random.default_rng(11)
    N, d, k = 2000, 6, 8
    means = rng.normal(scale=4.0, size=(k, d))
    lab = rng.integers(k, size=N)
    S = means[lab] + rng.normal(size=(N, d)) * (1e-3 if case == "tight" else 1.0)
    if case == "offset":
        S += 500.0
    if case == "outliers":
        S[:5] += 1e4
    S = S.astype(np.float32)
    # 5 centers for 8 blobs; "tight": one at every blob
    C = (means + 1e-3).astype(np.float32) if case == "tight" else S[rng.choice(N, 5, replace=False)] + np.float32(0.25)
    draws = 1500
    exact = _d2_frequencies(S, C, n, draws)
    monkeypatch.setattr("streamkm.cluster._reseed._D2_EXACT_MAX_WORK", 0)
    rejection = _d2_frequencies(S, C, n, draws, seed=1)
    groups = np.bincount(lab, weights=exact, minlength=k), np.bincount(lab, weights=rejection, minlength=k)
    e, r = groups
    assert e.sum() == r.sum() == n * draws
    chi2 = float((((e - r) ** 2) / np.maximum(e + r, 1)).sum())
    assert chi2 < 30.0, (case, e, r)  # 7 degrees of freedom: p < 1e-4 for a real difference
    if case == "outliers":
        assert r[lab[:5]].sum() > 0  # the outliers, which carry most of the D² mass, are drawn


def test_d2_sample_same_picks_with_precomputed_arrays(monkeypatch):
    from streamkm.cluster._distance import _neg2_t, _row_norms_sq
    from streamkm.cluster._reseed import _d2_sample

    monkeypatch.setattr("streamkm.cluster._reseed._D2_EXACT_MAX_WORK", 0)
    rng = np.random.default_rng(3)
    S = rng.normal(size=(3000, 5)).astype(np.float32)
    C = S[:7] + np.float32(0.5)
    a = _d2_sample(S, C, 4, np.random.default_rng(9), 2**26)
    b = _d2_sample(S, C, 4, np.random.default_rng(9), 2**26, s_sq=_row_norms_sq(S),
                   neg2_ct=_neg2_t(C, np.float32), c_sq=_row_norms_sq(C))
    np.testing.assert_array_equal(a, b)


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

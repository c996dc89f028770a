"""Tests for streamkm.cluster._state (StreamingKMeans hyperparameters and state_dict)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamkm.cluster.streaming_kmeans import StreamingKMeans
from tests.cluster.streaming_helpers import (
    assert_state_equal,
    blobs,
    fitted_model,
    json_roundtrip,
    separated_means,
)


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
@pytest.mark.parametrize("d2_rejection", [False, True], ids=["d2-exact", "d2-rejection"])
def test_save_restore_continues_bit_identically(kw, d2_rejection, monkeypatch):
    if d2_rejection:  # dying clusters re-placed by the rejection sampler of large reservoirs
        monkeypatch.setattr("streamkm.cluster._reseed._D2_EXACT_MAX_WORK", 0)
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
        ({**good, "n_seen": good["n_seen"] - 1}, ValueError, r"reservoir.\] saw 2000 points but n_seen=1999"),
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

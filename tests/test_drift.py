"""Tests for streamkm.drift: detection, no false alarms, bit-identical restore."""

from __future__ import annotations

import numpy as np
import pytest

from streamkm.checkpoint import CheckpointStore
from streamkm.drift import DriftMonitor

METHODS = [("adwin", {}), ("page_hinkley", {}), ("kswin", {})]


def _shift_series(seed=0, n=300, before=1.0, after=3.0, sd=0.1):
    rng = np.random.default_rng(seed)
    return np.r_[rng.normal(before, sd, n), rng.normal(after, sd, n)]


def _run(mon, series):
    return [i for i, v in enumerate(series) if mon.update(v)]


@pytest.mark.parametrize("method, params", METHODS)
def test_detects_abrupt_mean_shift(method, params):
    series = _shift_series()
    hits = _run(DriftMonitor(method, **params), series)
    assert hits, f"{method} missed the shift"
    assert 300 <= hits[0] < 360, hits  # after the change point, and promptly
    # a monitor fed only the first regime never fires
    assert _run(DriftMonitor(method, **params), series[:300]) == []


@pytest.mark.parametrize("method, params", METHODS)
def test_no_detection_on_stationary_series(method, params):
    series = np.random.default_rng(0).normal(1.0, 0.1, 1000)
    mon = DriftMonitor(method, **params)
    assert _run(mon, series) == []
    assert mon.n_detections_ == 0 and mon.n_updates_ == 1000


@pytest.mark.parametrize("method, params", METHODS)
def test_detection_resets_history(method, params):
    mon = DriftMonitor(method, **params)
    series = _shift_series()
    hits = _run(mon, series)
    assert mon.n_detections_ == len(hits) and mon.last_detection_ == hits[-1] + 1
    assert len(mon.history_) == len(series) - 1 - hits[-1]


def _multi_regime(seed=1):
    rng = np.random.default_rng(seed)
    means = [1.0, 3.0, 2.0, 5.0, 1.0]
    return np.concatenate([rng.normal(m, 0.2, 250) for m in means])


@pytest.mark.parametrize("method, params", METHODS)
@pytest.mark.parametrize("max_history", [128, 10_000])
def test_restore_gives_identical_detection_sequence(method, params, max_history):
    series = _multi_regime()
    ref = DriftMonitor(method, max_history=max_history, **params)
    expected = _run(ref, series)
    assert len(expected) >= 2
    for cut in (1, 100, 257, 600, 1100):
        a = DriftMonitor(method, max_history=max_history, **params)
        got = _run(a, series[:cut])
        st = a.state_dict()
        b = DriftMonitor(method, max_history=max_history, **params)
        b.load_state_dict(st)
        got += [cut + i for i in _run(b, series[cut:])]
        assert got == expected, (cut, got, expected)
        assert b.n_detections_ == ref.n_detections_ and b.n_updates_ == ref.n_updates_
        assert b.history_ == ref.history_
        assert len(b.history_) <= max_history


def test_restore_through_checkpoint_store(tmp_path):
    series = _multi_regime(2)
    ref = DriftMonitor("kswin", alpha=0.001, seed=7)
    expected = _run(ref, series)
    a = DriftMonitor("kswin", alpha=0.001, seed=7)
    got = _run(a, series[:500])
    store = CheckpointStore(tmp_path)
    store.save({"drift": {"vectors": a.state_dict()}})
    st, _ = store.load_latest()
    b = DriftMonitor("kswin", alpha=0.001, seed=7)
    b.load_state_dict(st["drift"]["vectors"])
    got += [500 + i for i in _run(b, series[500:])]
    assert got == expected


def test_trimming_is_bounded():
    mon = DriftMonitor("adwin", max_history=32)
    for v in np.random.default_rng(0).normal(1.0, 0.1, 500):
        mon.update(v)
        assert len(mon.history_) < 32
    assert mon.state_dict()["values"].shape[0] == len(mon.history_)


def test_kswin_seed_fixed_by_default():
    assert DriftMonitor("kswin").params["seed"] == 0
    series = _multi_regime(3)
    assert _run(DriftMonitor("kswin"), series) == _run(DriftMonitor("kswin"), series)


def test_validation_and_mismatched_state():
    with pytest.raises(ValueError, match="method"):
        DriftMonitor("cusum")
    with pytest.raises(ValueError, match="unknown parameter"):
        DriftMonitor("adwin", threshold=3)
    with pytest.raises(ValueError, match="seed"):
        DriftMonitor("kswin", seed=None)
    with pytest.raises(ValueError, match="max_history"):
        DriftMonitor("adwin", max_history=3)
    mon = DriftMonitor("adwin")
    mon.update(1.0)
    with pytest.raises(ValueError, match="finite"):
        mon.update(float("nan"))
    with pytest.raises(TypeError):
        mon.update("x")
    assert mon.n_updates_ == 1 and mon.history_ == [1.0]  # rejected calls leave state unchanged
    st = DriftMonitor("page_hinkley").state_dict()
    with pytest.raises(ValueError, match="page_hinkley"):
        mon.load_state_dict(st)
    st["n_updates"] = 9
    mon.load_state_dict(st, strict=False)  # config changed: counters kept, history dropped
    assert mon.n_updates_ == 9 and mon.history_ == []

"""Tests for streamkm.cluster.reservoir (uniform Algorithm L, time-biased)."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pytest

from streamkm.cluster.reservoir import (
    TimeBiasedReservoir,
    UniformReservoir,
    reservoir_from_state,
)


def chi2_critical(df: int, alpha: float = 1e-3) -> float:
    """Upper ``alpha`` quantile of chi-square(df), Wilson-Hilferty approximation."""
    z = NormalDist().inv_cdf(1.0 - alpha)
    c = 2.0 / (9.0 * df)
    return df * (1.0 - c + z * math.sqrt(c)) ** 3


class CountingGenerator(np.random.Generator):
    """A Generator that counts every variate it produces."""

    n_draws = 0

    def _count(self, size):
        self.n_draws += 1 if size is None else int(np.prod(size))

    def random(self, size=None, dtype=np.float64, out=None):
        self._count(size)
        return super().random(size, dtype, out)

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        self._count(size)
        return super().integers(low, high, size, dtype, endpoint)

    def geometric(self, p, size=None):
        self._count(size)
        return super().geometric(p, size)


def _stream(n, d=1, seed=0):
    # Row i carries its stream index in column 0, so the sample tells who is in.
    X = np.random.default_rng(seed).normal(size=(n, d))
    X[:, 0] = np.arange(n)
    return X


def _split(X, rng, n_cuts=3):
    cuts = np.sort(rng.integers(0, len(X), n_cuts))
    return np.split(X, cuts)


# --------------------------------------------------------------------------
# Uniform reservoir
# --------------------------------------------------------------------------
def test_uniform_inclusion_counts_pass_chi_square():
    N, s, runs = 200, 20, 2000
    X = _stream(N)
    counts = np.zeros(N)
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        res = UniformReservoir(s, 1, dtype=np.float64)
        for part in _split(X, rng):  # random batch boundaries, incl. empty ones
            res.add(part, rng)
        idx = res.sample[:, 0].astype(int)
        assert len(np.unique(idx)) == s  # a sample without repeats
        counts[idx] += 1
    expected = runs * s / N
    # Each cell is Binomial(runs, s/N): normalise by its variance.
    stat = float(((counts - expected) ** 2 / (expected * (1 - s / N))).sum())
    assert stat < chi2_critical(N - 1), stat
    # Early, middle and late thirds of the stream are all equally represented.
    thirds = [c.sum() for c in np.array_split(counts, 3)]
    assert max(thirds) / min(thirds) < 1.1


def test_uniform_fill_phase_keeps_everything_in_order():
    res = UniformReservoir(10, 2)
    X = _stream(7, 2)
    res.add(X, np.random.default_rng(0))
    assert res.n_seen == 7 and res.sample.shape == (7, 2)
    np.testing.assert_array_equal(res.sample, X.astype(np.float32))


def test_uniform_sample_is_independent_of_batch_boundaries():
    X = _stream(20_000, 3, seed=3)
    one = UniformReservoir(64, 3)
    one.add(X, np.random.default_rng(11))
    many = UniformReservoir(64, 3)
    rng = np.random.default_rng(11)
    for part in _split(X, np.random.default_rng(1), n_cuts=40):
        many.add(part, rng)
    np.testing.assert_array_equal(one.sample, many.sample)
    assert one.n_seen == many.n_seen == 20_000


def test_uniform_random_draws_are_sublinear():
    s = 100

    def draws(n):
        rng = CountingGenerator(np.random.PCG64(0))
        res = UniformReservoir(s, 1)
        X = np.zeros((1000, 1), dtype=np.float32)
        for _ in range(n // 1000):
            res.add(X, rng)
        return rng.n_draws

    d_small, d_large = draws(20_000), draws(200_000)
    # 3 uniforms per acceptance, E[acceptances] ~ s * ln(N / s), plus one
    # partially used chunk of 256 acceptances.
    bound = 3 * (s * (1 + math.log(200_000 / s)) + 256) + 1
    assert d_large <= bound, (d_large, bound)
    assert d_large < 200_000 / 20
    # Ten times more points costs about s * ln(10) more acceptances, not 10x draws.
    assert d_large - d_small < 3 * (1.5 * s * math.log(10) + 256)


def test_uniform_acceptances_follow_li_expectation():
    # E[#points from the second half of the stream kept] = s/2 exactly.
    s, N, runs = 50, 4000, 300
    X = _stream(N)
    late = []
    for seed in range(runs):
        res = UniformReservoir(s, 1, dtype=np.float64)
        res.add(X, np.random.default_rng(seed))
        late.append((res.sample[:, 0] >= N / 2).sum())
    # Hypergeometric: sd = sqrt(s * 1/4 * (N - s)/(N - 1)) ~ 3.5; mean over runs.
    assert abs(np.mean(late) - s / 2) < 4 * 3.6 / math.sqrt(runs)


def test_uniform_save_restore_continues_exactly():
    X = _stream(30_000, 4, seed=5)
    a = UniformReservoir(100, 4)
    rng_a = np.random.default_rng(9)
    a.add(X[:13_000], rng_a)
    state = a.state_dict()
    json.dumps({k: v for k, v in state.items() if not isinstance(v, np.ndarray)})
    rng_state = rng_a.bit_generator.state
    a.add(X[13_000:], rng_a)

    b = reservoir_from_state(state)
    rng_b = np.random.default_rng()
    rng_b.bit_generator.state = rng_state
    b.add(X[13_000:], rng_b)
    np.testing.assert_array_equal(a.sample, b.sample)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k])


# --------------------------------------------------------------------------
# Time-biased reservoir
# --------------------------------------------------------------------------
def _predicted_inclusion(batch_sizes, res):
    """Exact inclusion probability of every stream position at the end."""
    s = res.capacity
    p_point, fill = [], []
    seen = 0
    for m in batch_sizes:
        p = res.insertion_probability(m)
        for _ in range(m):
            fill.append(seen < s)
            p_point.append(1.0 if seen < s else p)
            seen += 1
    p_point = np.array(p_point)
    fill = np.array(fill)
    # Every post-fill arrival evicts a given stored point w.p. p/s.
    log_keep = np.where(fill, 0.0, np.log1p(-p_point / s))
    later = np.concatenate((np.cumsum(log_keep[::-1])[::-1][1:], [0.0]))
    return p_point * np.exp(later)


@pytest.mark.parametrize(
    "time_unit, half_life, batch_sizes",
    [
        ("points", 100.0, [300, 500, 200]),
        ("batches", 4.0, [25, 75] * 12),
    ],
)
def test_time_biased_inclusion_matches_prediction(time_unit, half_life, batch_sizes):
    s, runs = 40, 1500
    N = sum(batch_sizes)
    X = _stream(N)
    counts = np.zeros(N)
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        res = TimeBiasedReservoir(s, 1, half_life, time_unit, dtype=np.float64)
        start = 0
        for m in batch_sizes:
            res.add(X[start : start + m], rng)
            start += m
        assert res.sample.shape == (s, 1)
        counts[res.sample[:, 0].astype(int)] += 1
    pred = runs * _predicted_inclusion(batch_sizes, res)
    np.testing.assert_allclose(pred.sum(), runs * s, rtol=0.02)  # model is consistent

    # Chi-square over age bins of 50 points (tail merged until E >= 20);
    # Bernoulli cells make Pearson's statistic conservative.
    bins_o, bins_e = [], []
    o_acc = e_acc = 0.0
    for o, e in zip(np.add.reduceat(counts[::-1], np.arange(0, N, 50)),
                    np.add.reduceat(pred[::-1], np.arange(0, N, 50)), strict=True):
        o_acc += o
        e_acc += e
        if e_acc >= 20:
            bins_o.append(o_acc)
            bins_e.append(e_acc)
            o_acc = e_acc = 0.0
    bins_o[-1] += o_acc
    bins_e[-1] += e_acc
    bins_o, bins_e = np.array(bins_o), np.array(bins_e)
    stat = float(((bins_o - bins_e) ** 2 / bins_e).sum())
    assert stat < chi2_critical(len(bins_o) - 1), (stat, bins_o, bins_e)

    # Recent points are over-represented by the predicted factor 2 per half-life.
    if time_unit == "points":
        young, old = counts[-100:].sum(), counts[-200:-100].sum()
    else:  # 4 batches of 25+75 = 200 points per half-life
        young, old = counts[-200:].sum(), counts[-400:-200].sum()
    assert 1.75 < young / old < 2.3, young / old


def test_time_biased_tracks_a_shift():
    # After a shift, the time-biased sample is mostly new-regime points;
    # the uniform one is not.
    rng = np.random.default_rng(0)
    tb = TimeBiasedReservoir(200, 1, 5.0, "batches")
    un = UniformReservoir(200, 1)
    for b in range(40):
        X = np.full((100, 1), 0.0 if b < 30 else 1.0)
        tb.add(X, rng)
        un.add(X, rng)
    # 10 batches = 2 half-lives after the shift: ~75 % new points expected.
    assert tb.sample.mean() > 0.65
    assert un.sample.mean() < 0.4


def test_time_biased_capped_probability_and_validation():
    res = TimeBiasedReservoir(1000, 2, 10.0, "points")
    assert res.insertion_probability() == 1.0  # 1000 * (1 - 2^-0.1) > 1
    small = TimeBiasedReservoir(5, 2, 10.0, "points")
    assert small.insertion_probability() == pytest.approx(5 * (1 - 2 ** -0.1))
    with pytest.raises(ValueError, match="half_life"):
        TimeBiasedReservoir(5, 2, 0.0)
    with pytest.raises(ValueError, match="time_unit"):
        TimeBiasedReservoir(5, 2, 1.0, "seconds")


def test_time_biased_save_restore_continues_exactly():
    X = _stream(5000, 2, seed=2)
    a = TimeBiasedReservoir(64, 2, 3.0, "batches")
    rng = np.random.default_rng(4)
    for i in range(0, 2000, 100):
        a.add(X[i : i + 100], rng)
    state, rng_state = a.state_dict(), rng.bit_generator.state
    for i in range(2000, 5000, 100):
        a.add(X[i : i + 100], rng)
    b = reservoir_from_state(state)
    rng_b = np.random.default_rng()
    rng_b.bit_generator.state = rng_state
    for i in range(2000, 5000, 100):
        b.add(X[i : i + 100], rng_b)
    np.testing.assert_array_equal(a.sample, b.sample)
    assert a.n_seen == b.n_seen == 5000


# --------------------------------------------------------------------------
# Bad input leaves the reservoir unchanged
# --------------------------------------------------------------------------
def _snapshot(res):
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in res.state_dict().items()}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k])
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize("make", [
    lambda: UniformReservoir(8, 3),
    lambda: TimeBiasedReservoir(8, 3, 2.0),
])
@pytest.mark.parametrize("bad, exc, match", [
    (np.zeros((4, 2)), ValueError, "expected 3 features, got 2"),
    (np.zeros(3), ValueError, "2-D"),
    (np.array([[0.0, np.nan, 1.0]]), ValueError, "row 0"),
    (np.array([[0.0, 1.0, 2.0], [np.inf, 0.0, 0.0]]), ValueError, "row 1"),
    (np.array([["a", "b", "c"]]), TypeError, "numeric"),
])
def test_bad_batches_rejected_without_change(make, bad, exc, match):
    res = make()
    rng = np.random.default_rng(0)
    res.add(_stream(20, 3), rng)
    before = _snapshot(res)
    rng_before = rng.bit_generator.state
    with pytest.raises(exc, match=match):
        res.add(bad, rng)
    _assert_same(before, res.state_dict())
    assert rng.bit_generator.state == rng_before


def test_bad_constructor_and_rng_arguments():
    with pytest.raises(ValueError, match="capacity must be an integer >= 1; got 0"):
        UniformReservoir(0, 3)
    with pytest.raises(TypeError, match="n_features"):
        UniformReservoir(3, 2.5)
    with pytest.raises(ValueError, match="dtype"):
        UniformReservoir(3, 2, dtype=np.int32)
    with pytest.raises(TypeError, match="Generator"):
        UniformReservoir(3, 2).add(np.zeros((1, 2)), 42)


def test_load_state_dict_validates_and_leaves_state_unchanged():
    res = UniformReservoir(8, 3)
    res.add(_stream(50, 3), np.random.default_rng(0))
    good = res.state_dict()
    other = UniformReservoir(8, 3)
    other.add(_stream(5, 3, seed=1), np.random.default_rng(1))
    before = _snapshot(other)
    bad_states = [
        ({**good, "capacity": 9}, "capacity mismatch"),
        ({**good, "kind": "time_biased"}, "kind mismatch"),
        ({**good, "sample": good["sample"][:4]}, "shape"),
        ({**good, "sample": good["sample"].astype(np.float64)}, "dtype"),
        ({k: v for k, v in good.items() if k != "log_w"}, "missing"),
        ({**good, "queue_slot": good["queue_slot"] + 100}, "slots"),
    ]
    for state, match in bad_states:
        with pytest.raises(ValueError, match=match):
            other.load_state_dict(state)
        _assert_same(before, other.state_dict())
    other.load_state_dict(good)
    _assert_same(good, other.state_dict())
    with pytest.raises(ValueError, match="unknown reservoir kind"):
        reservoir_from_state({**good, "kind": "weird"})


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(
    capacity=st.integers(1, 30),
    sizes=st.lists(st.integers(0, 120), min_size=1, max_size=12),
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["uniform", "time_biased"]),
)
def test_sample_is_a_subset_of_the_stream_of_the_right_size(capacity, sizes, seed, kind):
    n = sum(sizes)
    X = _stream(n, 2, seed=seed % 1000)
    res = (UniformReservoir(capacity, 2, dtype=np.float64) if kind == "uniform"
           else TimeBiasedReservoir(capacity, 2, 3.0, dtype=np.float64))
    rng = np.random.default_rng(seed)
    start = 0
    for m in sizes:
        res.add(X[start : start + m], rng)
        start += m
    assert res.n_seen == n
    assert res.sample.shape == (min(n, capacity), 2)
    idx = res.sample[:, 0].astype(int)
    assert len(np.unique(idx)) == len(idx)  # no point stored twice
    np.testing.assert_array_equal(res.sample, X[idx])  # rows are intact stream rows
    if kind == "uniform":
        one = UniformReservoir(capacity, 2, dtype=np.float64)
        one.add(X, np.random.default_rng(seed))
        np.testing.assert_array_equal(one.sample, res.sample)  # boundary independent


def test_load_state_dict_rejects_non_finite_sample_without_change():
    # A NaN smuggled into a checkpointed reservoir would surface much later as
    # NaN reseed candidates; reject it at load time, leaving the reservoir as is.
    for make in (lambda: UniformReservoir(8, 3), lambda: TimeBiasedReservoir(8, 3, 4.0)):
        res = make()
        res.add(_stream(50, 3), np.random.default_rng(0))
        good = res.state_dict()
        bad = {**good, "sample": good["sample"].copy()}
        bad["sample"][2, 1] = np.nan
        other = make()
        other.add(_stream(5, 3, seed=1), np.random.default_rng(1))
        before = _snapshot(other)
        with pytest.raises(ValueError, match="NaN or infinity in row 2"):
            other.load_state_dict(bad)
        _assert_same(before, other.state_dict())

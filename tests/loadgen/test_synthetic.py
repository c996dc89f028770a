import math

import numpy as np
import pytest

from streamkm.loadgen.synthetic import (
    _cycle_successors,
    _encoding,
    behaviour_events,
    behaviour_sequences,
    behaviour_transition_matrices,
    drifting_blobs,
    iter_drifting_blobs,
)

# ---------------------------------------------------------------- blobs


def test_blobs_shapes_dtypes_and_determinism():
    X, y = drifting_blobs(500, n_clusters=4, n_features=3, drift_every=100, seed=7)
    assert X.shape == (500, 3) and X.dtype == np.float32
    assert y.shape == (500,) and y.dtype == np.int64
    assert set(np.unique(y).tolist()) == {0, 1, 2, 3}
    X2, y2 = drifting_blobs(500, n_clusters=4, n_features=3, drift_every=100, seed=7)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    X3, _ = drifting_blobs(500, n_clusters=4, n_features=3, drift_every=100, seed=8)
    assert not np.array_equal(X, X3)


@pytest.mark.parametrize("drift", ["abrupt", "gradual"])
def test_iterator_concatenation_equals_arrays(drift):
    kw = dict(n_clusters=3, n_features=2, drift_every=70, drift=drift, seed=3)
    X, y = drifting_blobs(1000, **kw)
    parts = list(iter_drifting_blobs(100, n_batches=10, **kw))
    assert len(parts) == 10
    assert np.array_equal(np.concatenate([p[0] for p in parts]), X)
    assert np.array_equal(np.concatenate([p[1] for p in parts]), y)


def test_iterator_is_infinite_without_n_batches():
    it = iter_drifting_blobs(5, n_clusters=2, n_features=2, seed=0)
    batches = [next(it) for _ in range(50)]
    assert all(b[0].shape == (5, 2) for b in batches)


def _cluster_means(X, y, k):
    return np.stack([X[y == c].mean(axis=0) for c in range(k)])


def test_stationary_blobs_do_not_move():
    X, y = drifting_blobs(40_000, n_clusters=3, n_features=2, cluster_std=1.0, seed=1)
    a = _cluster_means(X[:20_000], y[:20_000], 3)
    b = _cluster_means(X[20_000:], y[20_000:], 3)
    assert np.abs(a - b).max() < 0.1


def test_abrupt_drift_moves_every_mean_by_drift_scale_at_block_boundary():
    n, every = 30_000, 10_000
    X, y = drifting_blobs(n, n_clusters=3, n_features=4, drift_every=every, drift_scale=5.0,
                          cluster_std=0.5, seed=2)
    m = [_cluster_means(X[i:i + every], y[i:i + every], 3) for i in range(0, n, every)]
    for a, b in zip(m, m[1:], strict=False):
        shift = np.linalg.norm(b - a, axis=1)
        np.testing.assert_allclose(shift, 5.0, atol=0.1)
    # abrupt: within a block the first and second halves agree
    h = every // 2
    first = _cluster_means(X[:h], y[:h], 3)
    second = _cluster_means(X[h:every], y[h:every], 3)
    assert np.abs(first - second).max() < 0.1


def test_gradual_drift_moves_within_a_block():
    every = 20_000
    X, y = drifting_blobs(every, n_clusters=2, n_features=3, drift_every=every, drift="gradual",
                          drift_scale=4.0, cluster_std=0.3, seed=4)
    q = every // 4
    first = _cluster_means(X[:q], y[:q], 2)    # mean position at fraction 1/8
    last = _cluster_means(X[-q:], y[-q:], 2)   # mean position at fraction 7/8
    shift = np.linalg.norm(last - first, axis=1)
    np.testing.assert_allclose(shift, 4.0 * 0.75, atol=0.1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_clusters=0, n_features=2), "n_clusters"),
    (dict(n_clusters=2, n_features=2, drift_every=0), "drift_every"),
    (dict(n_clusters=2, n_features=2, drift="sudden"), "drift"),
    (dict(n_clusters=2, n_features=2, cluster_std=-1.0), "cluster_std"),
    (dict(n_clusters=2, n_features=2.5), "n_features"),
])
def test_blobs_bad_input(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        drifting_blobs(10, seed=0, **kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        iter_drifting_blobs(10, seed=0, **kwargs)


# ------------------------------------------------------------ behaviour


def test_transition_matrices_doubly_stochastic_and_distinct():
    for n_proc in (2, 4, 6, 7):
        P = behaviour_transition_matrices(n_proc, persistence=0.7)
        S = P.shape[1]
        assert math.factorial(S - 1) >= n_proc
        np.testing.assert_allclose(P.sum(axis=2), 1.0)
        np.testing.assert_allclose(P.sum(axis=1), 1.0)  # columns: uniform is stationary
        flat = P.reshape(n_proc, -1)
        for a in range(n_proc):
            for b in range(a + 1, n_proc):
                assert np.abs(flat[a] - flat[b]).max() > 0.5
    with pytest.raises(ValueError, match="n_processes=7"):
        behaviour_transition_matrices(7, n_states=4)


def test_cycles_are_hamiltonian():
    succ = _cycle_successors(6, 4)
    for row in succ:
        s, seen = 0, []
        for _ in range(4):
            seen.append(s)
            s = row[s]
        assert s == 0 and sorted(seen) == [0, 1, 2, 3]


def test_sequences_shapes_balance_determinism():
    X, y = behaviour_sequences(103, n_processes=4, length=9, n_features=6, seed=5)
    assert X.shape == (103, 9, 6) and X.dtype == np.float32 and y.dtype == np.int64
    assert np.bincount(y).max() - np.bincount(y).min() <= 1
    X2, y2 = behaviour_sequences(103, n_processes=4, length=9, n_features=6, seed=5)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    X3, _ = behaviour_sequences(103, n_processes=4, length=9, n_features=6, seed=6)
    assert not np.array_equal(X, X3)


def test_marginal_means_and_variances_equal_across_processes():
    X, y = behaviour_sequences(8000, n_processes=4, length=16, n_features=8, seed=0)
    flat_by_p = [X[y == p].reshape(-1, 8).astype(np.float64) for p in range(4)]
    means = np.stack([f.mean(axis=0) for f in flat_by_p])
    var = np.stack([f.var(axis=0) for f in flat_by_p])
    # per-feature spread across processes is at the level of sampling noise
    assert np.abs(means - means.mean(axis=0)).max() < 0.03
    assert np.abs(var - var.mean(axis=0)).max() < 0.05
    # ... also at every single time step (chains start from the stationary law)
    m_t = np.stack([X[y == p].mean(axis=0) for p in range(4)])  # (P, T, F)
    assert np.abs(m_t - m_t.mean(axis=0)).max() < 0.15
    # window means (what mean pooling sees) have the same centre in every process
    wm = np.stack([X[y == p].mean(axis=1).mean(axis=0) for p in range(4)])
    assert np.abs(wm - wm.mean(axis=0)).max() < 0.03


def test_dynamics_differ_between_processes():
    X, y = behaviour_sequences(4000, n_processes=4, length=16, n_features=8, seed=1)
    X = X.astype(np.float64)
    lag1 = []
    for p in range(4):
        a = X[y == p, :-1].reshape(-1, 8)
        b = X[y == p, 1:].reshape(-1, 8)
        lag1.append((a - a.mean(0)).T @ (b - b.mean(0)) / len(a))  # lag-1 cross-covariance
    for p in range(4):
        for q in range(p + 1, 4):
            assert np.abs(lag1[p] - lag1[q]).max() > 0.5


def _decode_states(X, n_states, n_features):
    codes = _encoding(n_states, n_features, 0)
    d = ((X[..., None, :] - codes) ** 2).sum(-1)
    return d.argmin(-1)


def test_sequences_follow_their_chain():
    persistence = 0.8
    X, y = behaviour_sequences(600, n_processes=4, length=30, n_features=8,
                               persistence=persistence, seed=2)
    states = _decode_states(X.astype(np.float64), 4, 8)
    succ = _cycle_successors(4, 4)
    follows = states[:, 1:] == succ[y[:, None], states[:, :-1]]
    # follow with prob persistence, plus a uniform jump that lands on the successor
    expected = persistence + (1 - persistence) / 4
    assert abs(follows.mean() - expected) < 0.02


def test_sequences_bad_input_and_limits():
    with pytest.raises(ValueError, match="persistence"):
        behaviour_sequences(4, persistence=1.5, seed=0)
    with pytest.raises(ValueError, match="length"):
        behaviour_sequences(4, length=0, seed=0)
    with pytest.raises(TypeError, match="n_windows"):
        behaviour_sequences(4.0, seed=0)
    with pytest.raises(ValueError, match="noise_std"):
        behaviour_sequences(4, noise_std=float("nan"), seed=0)


def test_events_stream_structure():
    n_keys, n_ev = 12, 25
    keys, ts, X, proc = behaviour_events(n_keys, n_ev, n_features=8, session_length=10,
                                         session_gap=50.0, seed=3)
    n = n_keys * n_ev
    assert len(keys) == n and ts.shape == (n,) and X.shape == (n, 8)
    assert ts.dtype == np.float64 and X.dtype == np.float32
    assert np.all(np.diff(ts) >= 0) and np.all(np.isfinite(ts))
    assert sorted(proc) == sorted(set(keys)) and len(proc) == n_keys
    assert np.bincount(list(proc.values())).tolist() == [3, 3, 3, 3]
    # the key -> process map does not depend on the seed (chunked producers)
    assert behaviour_events(n_keys, 2, n_features=8, seed=99)[3] == proc
    karr = np.array(keys)
    succ = _cycle_successors(4, 4)
    follow_rate = []
    for k, p in proc.items():
        sel = karr == k
        assert sel.sum() == n_ev
        kts = ts[sel]
        gaps = np.diff(kts)
        # idle gaps of >= 50 exactly after every 10th event
        assert np.flatnonzero(gaps >= 50.0).tolist() == [9, 19]
        st = _decode_states(X[sel].astype(np.float64), 4, 8)
        follow_rate.append((st[1:] == succ[p, st[:-1]]).mean())
    assert np.mean(follow_rate) > 0.7  # each key's events follow its own chain


def test_events_determinism():
    a = behaviour_events(5, 7, seed=11)
    b = behaviour_events(5, 7, seed=11)
    assert a[0] == b[0] and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    assert a[3] == b[3]
    c = behaviour_events(5, 7, seed=12)
    assert not np.array_equal(a[2], c[2])


def test_unbounded_iterator_keeps_bounded_state():
    from streamkm.loadgen.synthetic import _BlobStream
    s = _BlobStream(n_clusters=2, n_features=2, drift_every=10, drift="gradual", drift_scale=1.0,
                    cluster_std=1.0, center_box=10.0, seed=0)
    for _ in range(200):
        s.take(25)
    assert len(s._waypoints) <= 3 and s._way_base >= 490

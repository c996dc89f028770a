import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkm.loadgen.synthetic import behaviour_events
from streamkm.sequence.windows import EventWindower, WindowBatch


def feed(w, keys, ts, vals=None):
    """Add events whose single feature is ``vals`` (default: ts)."""
    ts = np.asarray(ts, dtype=np.float64)
    vals = ts if vals is None else np.asarray(vals, dtype=np.float64)
    return w.add(list(keys), ts, vals.reshape(-1, 1))


def as_list(batch):
    """[(key, [values...], end_ts)] of a WindowBatch (single feature)."""
    if batch is None:
        return []
    assert isinstance(batch, WindowBatch)
    B = len(batch)
    assert batch.X.dtype == np.float32 and batch.X.ndim == 3 and batch.X.shape[0] == B
    assert batch.lengths.dtype == np.int64 and batch.end_ts.dtype == np.float64
    assert batch.X.shape[1] == batch.lengths.max()
    res = []
    for i in range(B):
        L = int(batch.lengths[i])
        assert L >= 1
        assert np.all(batch.X[i, L:] == 0)  # zero padding
        res.append((batch.keys[i], batch.X[i, :L, 0].tolist(), float(batch.end_ts[i])))
    return res


# ---------------------------------------------------------------- tumbling


def test_tumbling_exact_windows_two_keys():
    w = EventWindower(1, kind="tumbling", size=2)
    keys = ["a", "b", "a", "b", "b", "a", "a", "b"]
    got = as_list(feed(w, keys, np.arange(8.0)))
    # windows in the order their last event arrived
    assert got == [("a", [0.0, 2.0], 2.0), ("b", [1.0, 3.0], 3.0), ("a", [5.0, 6.0], 6.0),
                   ("b", [4.0, 7.0], 7.0)]
    assert w.n_open_keys == 0 and w.n_open_events == 0   # complete windows free the key
    assert w.n_emitted_ == 4
    feed(w, ["b"], [8.0])
    assert as_list(w.flush()) == [("b", [8.0], 8.0)]
    assert w.n_open_keys == 0 and w.n_emitted_ == 5
    assert w.flush() is None


def test_tumbling_partial_flush_and_padding():
    w = EventWindower(3, kind="tumbling", size=4)
    X = np.arange(15, dtype=np.float32).reshape(5, 3) + 1
    out = w.add(["k", "k", "j", "k", "k"], np.arange(5.0), X)
    assert out.keys == ["k"] and out.lengths.tolist() == [4]
    np.testing.assert_array_equal(out.X[0], X[[0, 1, 3, 4]])
    fl = w.flush()
    assert fl.keys == ["j"] and fl.X.shape == (1, 1, 3)
    np.testing.assert_array_equal(fl.X[0, 0], X[2])


# ---------------------------------------------------------------- sliding


def test_sliding_overlapping_windows_and_flush():
    w = EventWindower(1, kind="sliding", size=3, stride=2)
    got = as_list(feed(w, ["a"] * 8, np.arange(8.0)))
    assert got == [("a", [0.0, 1.0, 2.0], 2.0), ("a", [2.0, 3.0, 4.0], 4.0),
                   ("a", [4.0, 5.0, 6.0], 6.0)]
    # the trailing partial window [6, 7] holds 7, never emitted
    assert as_list(w.flush()) == [("a", [6.0, 7.0], 7.0)]


def test_sliding_no_flush_when_nothing_new():
    w = EventWindower(1, kind="sliding", size=3, stride=2)
    feed(w, ["a"] * 7, np.arange(7.0))   # windows end at 2, 4, 6; buffer [6] already emitted
    assert w.flush() is None


def test_sliding_stride_larger_than_size_skips():
    w = EventWindower(1, kind="sliding", size=2, stride=3)
    got = as_list(feed(w, ["a"] * 8, np.arange(8.0)))
    assert got == [("a", [0.0, 1.0], 1.0), ("a", [3.0, 4.0], 4.0), ("a", [6.0, 7.0], 7.0)]
    assert w.flush() is None


@pytest.mark.parametrize("kind, kw", [("tumbling", dict(size=4)),
                                      ("sliding", dict(size=4, stride=1)),
                                      ("sliding", dict(size=3, stride=5))])
def test_count_windows_independent_of_batching(kind, kw):
    keys, ts, X, _ = behaviour_events(7, 30, n_features=3, seed=1)
    one = EventWindower(3, kind=kind, **kw)
    ref = [one.add(keys, ts, X), one.flush()]
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, len(keys)), size=12, replace=False))
    many = EventWindower(3, kind=kind, **kw)
    outs = [many.add(keys[a:b], ts[a:b], X[a:b])
            for a, b in zip([0, *cuts], [*cuts, len(keys)], strict=True)]
    outs.append(many.flush())

    def windows(batches):
        res = []
        for b in batches:
            if b is not None:
                res += [(k, b.X[i, :b.lengths[i]].tobytes()) for i, k in enumerate(b.keys)]
        return res
    assert windows(ref) == windows(outs)   # same windows in the same order
    assert one.n_emitted_ == many.n_emitted_ > 0


def test_tumbling_conserves_every_event():
    keys, ts, X, _ = behaviour_events(13, 17, n_features=2, seed=4)
    w = EventWindower(2, kind="tumbling", size=5)
    outs = [w.add(keys[i:i + 40], ts[i:i + 40], X[i:i + 40]) for i in range(0, len(keys), 40)]
    outs.append(w.flush())
    total = sum(int(b.lengths.sum()) for b in outs if b is not None)
    assert total == len(keys)
    rows = np.concatenate([b.X[i, :b.lengths[i]] for b in outs if b is not None
                           for i in range(len(b))])
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, X.tolist()))


# ---------------------------------------------------------------- sessions


def test_session_closes_on_own_gap_and_on_watermark():
    w = EventWindower(1, kind="session", gap=2.0)
    keys = ["a", "b", "a", "a", "a", "a", "c"]
    ts = [0.0, 0.5, 1.0, 2.0, 10.0, 11.0, 20.0]
    got = as_list(feed(w, keys, ts))
    # a:[0,1,2] and b:[0.5] both close when the watermark passes 4 / 2.5 (at ts 10);
    # a:[10,11] closes when c's event moves the watermark to 20 (> 11 + 2)
    assert got == [("a", [0.0, 1.0, 2.0], 2.0), ("b", [0.5], 0.5), ("a", [10.0, 11.0], 11.0)]
    assert w.n_open_keys == 1
    assert as_list(w.flush()) == [("c", [20.0], 20.0)]


def test_session_gap_is_strict_and_idle_keys_close_between_batches():
    w = EventWindower(1, kind="session", gap=2.0)
    assert feed(w, ["a", "a"], [0.0, 2.0]) is None          # exactly gap: same session
    assert feed(w, ["b"], [4.0]) is None                      # 4 - 2 = 2, not > 2
    got = as_list(feed(w, ["b"], [4.5]))                      # watermark 4.5 closes a
    assert got == [("a", [0.0, 2.0], 2.0)]
    assert list(w._keys) == ["b"]


def test_session_independent_of_batching():
    keys, ts, X, _ = behaviour_events(9, 24, n_features=2, session_length=6, session_gap=30.0,
                                      seed=2)
    one = EventWindower(2, kind="session", gap=10.0)
    ref = [one.add(keys, ts, X), one.flush()]
    many = EventWindower(2, kind="session", gap=10.0)
    outs = [many.add(keys[i:i + 17], ts[i:i + 17], X[i:i + 17]) for i in range(0, len(keys), 17)]
    outs.append(many.flush())

    def windows(batches):
        return sorted((k, b.X[i, :b.lengths[i]].tobytes()) for b in batches if b is not None
                      for i, k in enumerate(b.keys))
    w_ref = windows(ref)
    assert w_ref == windows(outs)
    assert len(w_ref) == 9 * 4           # every key: 24 events = 4 sessions of 6
    lengths = np.concatenate([b.lengths for b in ref if b is not None])
    assert np.all(lengths == 6)


# ---------------------------------------------------------------- caps


def test_max_keys_lru_flush():
    w = EventWindower(1, kind="tumbling", size=10, max_keys=2, on_evict="flush")
    got = as_list(feed(w, ["a", "b", "a", "c"], [0.0, 1.0, 2.0, 3.0]))
    # after the call 3 keys are open; b was least recently updated
    assert got == [("b", [1.0], 1.0)]
    assert w.n_evicted_ == {"max_keys": 1, "max_events_per_key": 0}
    assert w.n_open_keys == 2 and list(w._keys) == ["a", "c"]
    got = as_list(feed(w, ["d"], [4.0]))
    assert got == [("a", [0.0, 2.0], 2.0)]
    assert w.n_evicted_["max_keys"] == 2 and w.n_dropped_events_ == 0


def test_max_keys_lru_drop():
    w = EventWindower(1, kind="session", gap=100.0, max_keys=2, on_evict="drop")
    assert feed(w, ["a", "b", "a", "c", "d"], [0.0, 1.0, 2.0, 3.0, 4.0]) is None
    assert w.n_evicted_["max_keys"] == 2          # a then b... LRU: b (1), a (2)
    assert sorted(w._keys) == ["c", "d"]
    assert w.n_dropped_events_ == 3              # a: 2 events, b: 1
    assert w.n_emitted_ == 0
    assert as_list(w.flush()) == [("c", [3.0], 3.0), ("d", [4.0], 4.0)]


def test_session_max_events_split_flush_and_drop():
    w = EventWindower(1, kind="session", gap=5.0, max_events_per_key=3, on_evict="flush")
    got = as_list(feed(w, ["a"] * 7, np.arange(7.0)))
    assert got == [("a", [0.0, 1.0, 2.0], 2.0), ("a", [3.0, 4.0, 5.0], 5.0)]
    assert w.n_evicted_ == {"max_keys": 0, "max_events_per_key": 2}
    assert w.n_open_events == 1
    # the session continues after a split: 8.0 is within the gap of 6.0
    got = as_list(feed(w, ["a", "a"], [8.0, 20.0]))
    assert got == [("a", [6.0, 8.0], 8.0)]

    d = EventWindower(1, kind="session", gap=5.0, max_events_per_key=3, on_evict="drop")
    assert feed(d, ["a"] * 7, np.arange(7.0)) is None
    assert d.n_evicted_["max_events_per_key"] == 2 and d.n_dropped_events_ == 6
    assert as_list(d.flush()) == [("a", [6.0], 6.0)]


def test_session_buffer_grows_beyond_initial_capacity():
    w = EventWindower(1, kind="session", gap=1.0, max_events_per_key=100)
    feed(w, ["a"] * 40, np.arange(40) * 0.5)
    assert w.n_open_events == 40
    got = as_list(feed(w, ["b"], [100.0]))
    assert got == [("a", (np.arange(40) * 0.5).tolist(), 19.5)]


def test_memory_bounded_under_many_keys():
    keys, ts, X, _ = behaviour_events(300, 20, n_features=2, seed=5)
    w = EventWindower(2, kind="session", gap=1e9, max_keys=50, max_events_per_key=8)
    for i in range(0, len(keys), 100):
        w.add(keys[i:i + 100], ts[i:i + 100], X[i:i + 100])
        assert w.n_open_keys <= w.n_tracked_keys <= 50
        assert w.n_open_events <= 50 * 8
    assert w.n_evicted_["max_keys"] > 0 and w.n_evicted_["max_events_per_key"] > 0


# ---------------------------------------------------------------- lateness


def test_lateness_zero_drops_older_events_but_accepts_ties():
    w = EventWindower(1, kind="tumbling", size=3)
    got = as_list(feed(w, ["a"] * 5, [1.0, 3.0, 2.0, 3.0, 4.0]))
    assert w.n_late_dropped_ == 1
    assert got == [("a", [1.0, 3.0, 3.0], 3.0)]
    # other keys have their own clock
    assert feed(w, ["b"], [0.0]) is None and w.n_late_dropped_ == 1


def test_lateness_within_bound_appended_in_arrival_order():
    w = EventWindower(1, kind="tumbling", size=4, allowed_lateness=1.5)
    got = as_list(feed(w, ["a"] * 5, [5.0, 4.0, 3.0, 6.0, 5.0]))
    # 3.0 is 2 behind 5.0: dropped; 4.0 and 5.0 (vs 6.0) are within 1.5
    assert w.n_late_dropped_ == 1
    assert got == [("a", [5.0, 4.0, 6.0, 5.0], 6.0)]


def test_lateness_across_batches_and_all_late_key():
    w = EventWindower(1, kind="session", gap=10.0)
    feed(w, ["a", "b"], [5.0, 6.0])
    assert feed(w, ["a", "a"], [1.0, 2.0]) is None
    assert w.n_late_dropped_ == 2
    assert w.n_open_events == 2
    assert as_list(w.flush()) == [("a", [5.0], 5.0), ("b", [6.0], 6.0)]


# ---------------------------------------------------------------- state


def _checkpoint_roundtrip(state):
    """Split arrays into .npz and the rest into JSON, like CheckpointStore."""
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    rest = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as npz:
        loaded = {k: npz[k] for k in npz.files}
    loaded.update(json.loads(json.dumps(rest)))
    return loaded


CONFIGS = [
    dict(kind="tumbling", size=5, max_keys=6, on_evict="flush"),
    dict(kind="sliding", size=6, stride=4, max_keys=6, on_evict="drop"),
    dict(kind="sliding", size=3, stride=4, max_keys=40),
    dict(kind="session", gap=4.0, max_keys=6, max_events_per_key=5, allowed_lateness=0.5),
    dict(kind="session", gap=4.0, max_keys=6, max_events_per_key=5, on_evict="drop"),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_restore_then_continue_equals_uninterrupted(cfg):
    keys, ts, X, _ = behaviour_events(20, 30, n_features=3, session_length=7, session_gap=8.0,
                                      seed=3)
    rng = np.random.default_rng(1)
    ts = ts + rng.uniform(-1.0, 0.0, size=ts.shape) * (rng.random(ts.shape) < 0.1)  # some late
    chunks = [(a, min(a + 37, len(keys))) for a in range(0, len(keys), 37)]

    def run(w, part):
        res = []
        for a, b in part:
            out = w.add(keys[a:b], ts[a:b], X[a:b])
            res.append(None if out is None else (out.keys, out.X.tobytes(), out.lengths.tolist(),
                                                 out.end_ts.tolist()))
        return res

    ref_w = EventWindower(3, **cfg)
    ref = run(ref_w, chunks)
    ref_final = ref_w.flush()

    half = len(chunks) // 2
    w1 = EventWindower(3, **cfg)
    first = run(w1, chunks[:half])
    state = _checkpoint_roundtrip(w1.state_dict())
    w2 = EventWindower(3, **cfg)
    w2.load_state_dict(state)
    assert w2.n_open_keys == w1.n_open_keys and w2.n_open_events == w1.n_open_events
    second = run(w2, chunks[half:])
    assert first + second == ref
    final = w2.flush()
    assert (final is None) == (ref_final is None)
    if final is not None:
        assert final.keys == ref_final.keys
        np.testing.assert_array_equal(final.X, ref_final.X)
    for attr in ("n_emitted_", "n_evicted_", "n_late_dropped_", "n_dropped_events_",
                 "watermark_", "n_events_"):
        assert getattr(w2, attr) == getattr(ref_w, attr), attr
    assert ref_w.n_emitted_ > 10


def test_state_of_fresh_windower_roundtrips():
    w = EventWindower(2, kind="session", gap=1.0)
    s = _checkpoint_roundtrip(w.state_dict())
    v = EventWindower(2, kind="session", gap=1.0)
    v.load_state_dict(s)
    assert v.watermark_ == -np.inf and v.n_open_keys == 0


def test_load_state_rejects_other_config_and_leaves_state():
    w = EventWindower(1, kind="tumbling", size=4)
    feed(w, ["a", "b"], [0.0, 1.0])
    s = w.state_dict()
    other = EventWindower(1, kind="tumbling", size=5)
    feed(other, ["z"], [9.0])
    with pytest.raises(ValueError, match="config"):
        other.load_state_dict(s)
    assert list(other._keys) == ["z"] and other.watermark_ == 9.0
    bad = dict(s, X=np.zeros((3, 1), np.float32))
    with pytest.raises(ValueError, match="'X' has shape"):
        EventWindower(1, kind="tumbling", size=4).load_state_dict(bad)
    with pytest.raises(ValueError, match="missing"):
        EventWindower(1, kind="tumbling", size=4).load_state_dict({"config": s["config"]})
    with pytest.raises(ValueError, match="version"):
        EventWindower(1, kind="tumbling", size=4).load_state_dict(dict(s, format_version=99))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("keys, ts, X, exc, match", [
    (["a", "b"], [0.0], np.zeros((2, 2)), ValueError, r"ts must have shape \(2,\)"),
    (["a", "b"], [0.0, np.nan], np.zeros((2, 2)), ValueError, "ts must be finite.*index 1"),
    (["a", "b"], [0.0, 1.0], np.zeros((2, 3)), ValueError, "expected 2 features, got 3"),
    (["a", "b"], [0.0, 1.0], np.zeros((3, 2)), ValueError, "3 rows but there are 2 keys"),
    (["a", 7], [0.0, 1.0], np.zeros((2, 2)), TypeError, "got int at index 1"),
    ("ab", [0.0, 1.0], np.zeros((2, 2)), TypeError, "sequence of str"),
    (["a", "b"], [0.0, 1.0], np.array([[0, 1], [np.inf, 0]]), ValueError, "row 1"),
    (["a", "b"], [0.0, 1.0], np.zeros(2), ValueError, "2-D"),
    (["a", "b"], ["x", "y"], np.zeros((2, 2)), TypeError, "ts must be numeric"),
])
def test_bad_input_raises_and_leaves_state_unchanged(keys, ts, X, exc, match):
    w = EventWindower(2, kind="tumbling", size=3)
    w.add(["a", "c"], np.array([0.0, 0.5]), np.ones((2, 2)))
    before = w.state_dict()
    with pytest.raises(exc, match=match):
        w.add(keys, ts, X)
    after = w.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        if isinstance(before[k], np.ndarray):
            np.testing.assert_array_equal(before[k], after[k])
        else:
            assert before[k] == after[k], k


def test_numpy_keys_and_empty_batch():
    w = EventWindower(1, kind="tumbling", size=2)
    out = w.add(np.array(["a", "a"]), np.array([0.0, 1.0]), np.zeros((2, 1)))
    assert out.keys == ["a", "a"][:1]
    assert w.add([], np.zeros(0), np.zeros((0, 1))) is None


@pytest.mark.parametrize("kw, exc, match", [
    (dict(kind="hopping"), ValueError, "kind"),
    (dict(kind="sliding", size=4), ValueError, "stride"),
    (dict(kind="session"), ValueError, "gap"),
    (dict(kind="session", gap=0.0), ValueError, "gap"),
    (dict(kind="tumbling", size=0), ValueError, "size"),
    (dict(kind="tumbling", size=2.5), ValueError, "size"),
    (dict(kind="tumbling", size=64, max_events_per_key=10), ValueError, "max_events_per_key"),
    (dict(on_evict="spill"), ValueError, "on_evict"),
    (dict(allowed_lateness=-1.0), ValueError, "allowed_lateness"),
    (dict(max_keys=0), ValueError, "max_keys"),
])
def test_bad_parameters(kw, exc, match):
    with pytest.raises(exc, match=match):
        EventWindower(2, **kw)


def test_integral_float_size_accepted():
    w = EventWindower(2, kind="sliding", size=4.0, stride=2.0)
    assert w.size == 4.0 and w._size == 4 and w._stride == 2


# ------------------------------------------------- reference implementation


def reference_windows(keys, ts, vals, *, kind, size=None, stride=None, gap=None,
                      max_events_per_key=1024, on_evict="flush", allowed_lateness=0.0):
    """Event-at-a-time windowing written straight from the documented rules.

    Returns ({key: [window values tuple, ...]}, n_late, n_split, n_dropped).
    """
    stride = size if kind == "tumbling" else stride
    state, out = {}, {}
    late = split = dropped = 0
    wm = -np.inf

    def emit(k, buf):
        out.setdefault(k, []).append(tuple(v for _, v in buf))

    for k, t, v in zip(keys, ts, vals, strict=True):
        wm = max(wm, t)
        if kind == "session":
            for kk in [kk for kk, s in state.items() if wm - s["max"] > gap]:
                if state[kk]["buf"]:
                    emit(kk, state[kk]["buf"])
                del state[kk]
        s = state.get(k)
        if s is not None and t < s["max"] - allowed_lateness:
            late += 1
            continue
        if s is None:
            s = state[k] = {"buf": [], "max": -np.inf, "seen": 0, "skip": 0}
        s["max"] = max(s["max"], t)
        if kind == "session":
            s["buf"].append((t, v))
            if len(s["buf"]) == max_events_per_key:
                split += 1
                if on_evict == "flush":
                    emit(k, s["buf"])
                else:
                    dropped += len(s["buf"])
                s["buf"] = []
            continue
        if s["skip"]:
            s["skip"] -= 1
            continue
        s["buf"].append((t, v))
        if len(s["buf"]) == size:
            emit(k, s["buf"])
            if stride <= size:
                s["buf"] = s["buf"][stride:]
                s["seen"] = size - stride
            else:
                s["buf"], s["seen"], s["skip"] = [], 0, stride - size
    for k, s in state.items():       # flush()
        if len(s["buf"]) > s["seen"]:
            emit(k, s["buf"])
    return out, late, split, dropped


def run_windower(keys, ts, vals, cuts, **cfg):
    w = EventWindower(1, max_keys=10_000, **cfg)
    ts = np.asarray(ts, dtype=np.float64)
    X = np.asarray(vals, dtype=np.float32).reshape(-1, 1)
    batches = [w.add(keys[a:b], ts[a:b], X[a:b]) for a, b in zip([0, *cuts], [*cuts, len(keys)], strict=True)]
    batches.append(w.flush())
    out = {}
    for b in batches:
        for (k, values, _) in as_list(b):
            out.setdefault(k, []).append(tuple(values))
    return out, w


WINDOW_CONFIGS = st.one_of(
    st.builds(lambda size: dict(kind="tumbling", size=size), st.integers(1, 5)),
    st.builds(lambda size, stride: dict(kind="sliding", size=size, stride=stride),
              st.integers(1, 5), st.integers(1, 6)),
    st.builds(lambda gap, cap, ev: dict(kind="session", gap=gap, max_events_per_key=cap,
                                        on_evict=ev),
              st.sampled_from([0.5, 2.0, 5.0]), st.integers(1, 6),
              st.sampled_from(["flush", "drop"])),
)


@settings(max_examples=150, deadline=None)
@given(events=st.lists(st.tuples(st.sampled_from("abcd"), st.integers(-3, 6)),
                       min_size=1, max_size=60),
       cfg=WINDOW_CONFIGS,
       lateness=st.sampled_from([0.0, 1.0, 2.5, float("inf")]),
       cut_seed=st.integers(0, 2**16))
def test_matches_event_at_a_time_reference(events, cfg, lateness, cut_seed):
    """Per-key windows, late drops and splits equal the documented per-event rules,
    for any cut of the stream into add() calls."""
    keys = [k for k, _ in events]
    # timestamps: mostly increasing with jitter (so some events are late)
    ts = (np.arange(len(events)) + np.array([d for _, d in events], dtype=float)).tolist()
    vals = list(range(len(events)))                   # identifies each event
    rng = np.random.default_rng(cut_seed)
    n_cuts = int(rng.integers(0, min(8, len(events))))
    cuts = sorted(set(rng.integers(1, len(events) + 1, size=n_cuts).tolist()) - {len(events)})
    ref, late, split, dropped = reference_windows(keys, ts, vals, allowed_lateness=lateness, **cfg)
    got, w = run_windower(keys, ts, vals, cuts, allowed_lateness=lateness, **cfg)
    assert got == {k: [tuple(float(x) for x in win) for win in wins] for k, wins in ref.items()}
    assert w.n_late_dropped_ == late
    assert w.n_evicted_["max_events_per_key"] == split
    assert w.n_dropped_events_ == dropped
    assert w.n_emitted_ == sum(len(v) for v in ref.values())


def test_load_state_rejects_non_finite_or_negative_entries_and_leaves_state():
    # A corrupted checkpoint must not smuggle NaN events (they would reach the
    # LSTM at the next emission) or a NaN watermark/negative counters.
    w = EventWindower(2, kind="session", gap=5.0)
    w.add(["a", "b"], np.array([1.0, 2.0]), np.ones((2, 2)))
    s = w.state_dict()

    def with_array(name, index, value):
        arr = s[name].copy()
        arr[index] = value
        return dict(s, **{name: arr})

    bad_states = [
        (with_array("X", (1, 0), np.nan), "'X' contains NaN or infinity"),
        (with_array("ts", 0, np.inf), "'ts' contains NaN or infinity"),
        (with_array("max_ts", 1, np.nan), "'max_ts' contains NaN"),
        (dict(s, watermark=float("nan")), "watermark must be a finite number"),
        (dict(s, n_events=-5), "n_events must be >= 0, got -5"),
        (dict(s, n_emitted=float("inf")), "malformed windower state"),
    ]
    for bad, match in bad_states:
        other = EventWindower(2, kind="session", gap=5.0)
        other.add(["z"], np.array([9.0]), np.zeros((1, 2)))
        before = other.state_dict()
        with pytest.raises(ValueError, match=match):
            other.load_state_dict(bad)
        after = other.state_dict()
        assert after["keys"] == ["z"] and after["watermark"] == 9.0
        np.testing.assert_array_equal(after["X"], before["X"])
        assert after["n_events"] == before["n_events"]

"""Unit tests of streamkm.pipeline (no Kafka): decoding routes, chunked exactly-once updates,
state round trips, drift, the sequence pipeline."""

from __future__ import annotations

import collections
import json
import struct

import numpy as np
import pytest

from streamkm.checkpoint import CheckpointStore
from streamkm.codec import encode_binary, encode_event_json, encode_json
from streamkm.pipeline import SequencePipeline, VectorPipeline
from tests.helpers.data import blobs
from tests.helpers.e2e import offline

Rec = collections.namedtuple("Rec", "topic partition offset key value headers timestamp")

KW = dict(n_clusters=3, seed=0)




def bad_values(d=4):
    """One bad record value per reason the vector decoder knows."""
    hdr = struct.Struct("<4sBBHII")
    good_bin = encode_binary(np.ones((1, d), np.float32))
    return {
        "not_json": b"{not json",
        "schema": json.dumps({"y": [1.0] * d}).encode(),
        "dimension": encode_json(np.ones(d + 1)),
        "non_finite": b'{"x": [1.0, NaN, 2.0, 3.0]}',
        "empty": b"",
        "oversized": b'{"x": [' + b", ".join([b"1.5"] * 400) + b"]}",  # 2 kB > 600
        "truncated": good_bin[:-3],
        "unsupported_version": hdr.pack(b"SKMV", 9, 1, 0, 1, d) + b"\0" * 4 * d,
        "dtype": b'{"x": ["a", "b", "c", "d"]}',
        "tombstone": None,
    }


def make_records(X, *, bad_every=11, d=4, binary_every=5):
    """Records for X (JSON, every `binary_every`-th binary) with bad records interleaved."""
    recs, valid_rows, bad = [], [], {}
    kinds = list(bad_values(d).items())
    off = 0
    for i, x in enumerate(X):
        if i % bad_every == 3:
            reason, v = kinds[(i // bad_every) % len(kinds)]
            recs.append(Rec("in", 0, off, f"bad{off}".encode(), v, (("h", b"1"),), 1000 + off))
            bad[off] = "empty" if reason == "tombstone" else reason
            off += 1
        v = encode_binary(x[None]) if i % binary_every == 0 else encode_json(x)
        recs.append(Rec("in", 0, off, f"k{off}".encode(), v, (), 1000 + off))
        valid_rows.append(off)
        off += 1
    return recs, valid_rows, bad


def run(pipe, recs, sizes):
    outs, dls = [], []
    i = 0
    k = 0
    while i < len(recs):
        n = sizes[k % len(sizes)]
        r = pipe.process(recs[i:i + n])
        outs += r.outputs
        dls += r.dead_letters
        i += n
        k += 1
    r = pipe.flush()
    outs += r.outputs
    return outs, dls


def test_every_valid_record_clustered_once_and_equals_offline():
    X = blobs(400)
    recs, valid, bad = make_records(X)
    pipe = VectorPipeline(model_kwargs=KW, dim=4, max_record_bytes=600, batch_rows=32)
    outs, dls = run(pipe, recs, [29, 7, 50])
    assert {dl.record.offset: dl.error.reason for dl in dls} == bad
    assert set(bad.values()) >= {"not_json", "schema", "dimension", "non_finite", "empty",
                                 "oversized", "truncated", "unsupported_version", "dtype"}
    m = pipe.model
    assert pipe.n_pending == 0
    assert m.counts_.sum() == pytest.approx(len(X))  # decay 1: weights sum to N valid
    ref = offline(X, KW, 32)
    np.testing.assert_array_equal(m.cluster_centers_, ref.cluster_centers_)
    # one output per valid record, in order, keyed by the input key
    assert [o.key for o in outs] == [f"k{o}".encode() for o in valid]
    vals = [json.loads(o.value) for o in outs]
    assert [v["offset"] for v in vals] == valid
    # the last chunk's assignments are the final model's nearest centres
    last = len(X) - (len(X) - max(32, ref.init_threshold)) % 32
    tail = X[last:]
    d2 = ((tail[:, None, :] - m.cluster_centers_[None]) ** 2).sum(-1)
    assert [v["cluster"] for v in vals[last:]] == d2.argmin(1).tolist()
    np.testing.assert_allclose([v["sq_distance"] for v in vals[last:]], d2.min(1), rtol=1e-4, atol=1e-4)
    assert vals[-1]["model_version"] == m.n_batches_


def test_fetch_boundaries_do_not_change_the_model():
    X = blobs(300, seed=1)
    recs, _, _ = make_records(X)
    states = []
    for sizes in ([1], [300], [17, 3, 64]):
        pipe = VectorPipeline(model_kwargs=KW, batch_rows=20)
        run(pipe, recs, sizes)
        states.append(pipe.model.cluster_centers_.copy())
    np.testing.assert_array_equal(states[0], states[1])
    np.testing.assert_array_equal(states[0], states[2])


def test_multi_row_records_output_per_segment():
    X = blobs(50, seed=2)
    recs = [Rec("in", 0, i, f"k{i}".encode(), encode_binary(X[i * 10:(i + 1) * 10]), (), 0)
            for i in range(5)]
    pipe = VectorPipeline(model_kwargs=KW, batch_rows=15)
    outs, _ = run(pipe, recs, [5])
    vals = [json.loads(o.value) for o in outs]
    rows = sum(len(v["clusters"]) for v in vals)
    assert rows == 50 and pipe.model.counts_.sum() == 50
    # a record split over two chunks yields two segments whose rows follow on
    by_off = collections.defaultdict(list)
    for v in vals:
        by_off[v["offset"]].append((v["row"], len(v["clusters"])))
    for segs in by_off.values():
        assert segs[0][0] == 0
        assert sum(n for _, n in segs) == 10
        for (r0, n0), (r1, _) in zip(segs, segs[1:], strict=False):
            assert r1 == r0 + n0


def test_state_roundtrip_through_checkpoint_store_continues_identically(tmp_path):
    X = blobs(500, seed=3)
    recs, _, _ = make_records(X)
    drift = {"method": "adwin"}
    full = VectorPipeline(model_kwargs=KW, batch_rows=40, drift_kwargs=drift)
    run(full, recs, [33])

    first = VectorPipeline(model_kwargs=KW, batch_rows=40, drift_kwargs=drift)
    cut = 271
    for i in range(0, cut, 33):
        first.process(recs[i:min(i + 33, cut)])
    assert first.n_pending > 0  # the cut falls inside a model chunk
    store = CheckpointStore(tmp_path, keep=2)
    store.save({"p": first.state_dict()})
    state, _ = store.load_latest()
    second = VectorPipeline(model_kwargs=KW, batch_rows=40, drift_kwargs=drift)
    second.load_state_dict(state["p"])
    assert second.n_pending == first.n_pending
    run(second, recs[cut:], [33])
    np.testing.assert_array_equal(second.model.cluster_centers_, full.model.cluster_centers_)
    np.testing.assert_array_equal(second.model.counts_, full.model.counts_)
    assert second.core.drift.n_updates_ == full.core.drift.n_updates_ > 0
    np.testing.assert_array_equal(second.core.drift.history_, full.core.drift.history_)


def test_load_state_rejects_mismatches():
    pipe = VectorPipeline(model_kwargs=KW, dim=4, batch_rows=8)
    pipe.process(make_records(blobs(40))[0])
    st = pipe.state_dict()
    other = VectorPipeline(model_kwargs=KW, dim=5)
    with pytest.raises(ValueError, match="dimension 4"):
        other.load_state_dict(st)
    with pytest.raises(ValueError, match="'vectors' pipeline state"):
        other.load_state_dict({**st, "kind": "sequence"})
    with pytest.raises(ValueError, match="fmt"):
        VectorPipeline(model_kwargs=KW, fmt="xml")
    with pytest.raises(ValueError, match="batch_rows"):
        VectorPipeline(model_kwargs=KW, batch_rows=0)


def test_drift_detected_after_change_and_reseed_attempted():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(2000, 2)).astype(np.float32)
    b = (rng.normal(size=(2000, 2)) * 8 + 30).astype(np.float32)
    X = np.r_[a, b]
    recs = [Rec("in", 0, i, None, encode_binary(x[None]), (), 0) for i, x in enumerate(X)]
    pipe = VectorPipeline(model_kwargs=KW, batch_rows=50, drift_kwargs={"method": "page_hinkley"},
                          emit_outputs=False)
    events = []
    for i in range(0, len(recs), 100):
        events += pipe.process(recs[i:i + 100]).events
    drifts = [e for e in events if e["event"] == "drift"]
    assert drifts, events
    assert pipe.core.n_drift_ == len(drifts)
    assert drifts[0]["n_batches"] > 2000 // 50  # not before the change
    assert all("reseed_accepted" in e for e in drifts)
    no_reseed = VectorPipeline(model_kwargs=KW, batch_rows=50, reseed_on_drift=False,
                               drift_kwargs={"method": "page_hinkley"}, emit_outputs=False)
    ev2 = []
    for i in range(0, len(recs), 100):
        ev2 += no_reseed.process(recs[i:i + 100]).events
    assert [e for e in ev2 if e["event"] == "drift"] and all(
        "reseed_accepted" not in e for e in ev2 if e["event"] == "drift")


def _events(n_keys=12, per_key=24, seed=0):
    from streamkm.loadgen.synthetic import behaviour_events

    keys, ts, X, proc = behaviour_events(n_keys, per_key, n_processes=3, n_features=3, seed=seed)
    recs = [Rec("ev", 0, i, None, encode_event_json(k, float(t), x), (), 0)
            for i, (k, t, x) in enumerate(zip(keys, ts, X, strict=True))]
    return recs, keys, proc


def _seq_pipe(encoder, **kw):
    return SequencePipeline(encoder=encoder, windower_kwargs={"kind": "tumbling", "size": 8},
                            model_kwargs=dict(n_clusters=3, seed=0), batch_rows=6, **kw)


def test_sequence_pipeline_windows_embeds_clusters_and_roundtrips():
    from streamkm.sequence.lstm import LSTMEncoder

    enc = LSTMEncoder(3, 6, seed=0)
    recs, keys, _ = _events()
    recs.insert(5, Rec("ev", 0, 999, None, b'{"key": "x"}', (), 0))
    full = _seq_pipe(enc)
    outs, dls = run(full, recs, [37])
    assert [d.error.reason for d in dls] == ["schema"]
    n_windows = len(keys) // 8  # 12 keys x 24 events, tumbling windows of 8
    assert full.model.counts_.sum() == pytest.approx(n_windows)
    assert len(outs) == n_windows
    v = json.loads(outs[0].value)
    assert set(v) == {"cluster", "sq_distance", "model_version", "window_end_ts", "length"}
    assert v["length"] == 8 and 0 <= v["cluster"] < 3

    half = _seq_pipe(enc)
    cut = 150
    run_part = [half.process(recs[i:min(i + 37, cut)]) for i in range(0, cut, 37)]
    assert sum(r.n_windows for r in run_part) < n_windows
    st = half.state_dict()
    assert st["lstm_hash"] == enc.content_hash
    resumed = _seq_pipe(enc)
    resumed.load_state_dict(st)
    run(resumed, recs[cut:], [37])
    np.testing.assert_array_equal(resumed.model.cluster_centers_, full.model.cluster_centers_)

    with pytest.raises(ValueError, match="LSTM weights"):
        _seq_pipe(LSTMEncoder(3, 6, seed=1)).load_state_dict(st)
    with pytest.raises(ValueError, match="expects 3"):
        _seq_pipe(enc, n_features=4)


def test_vectors_too_large_for_float32_distances_are_dead_lettered_not_clustered():
    # 3e38 is a finite float32, but its squared distances overflow: one such record
    # turned a centre into ~1e37 and the EWM objective into NaN for the whole stream.
    X = blobs(200)
    ref = VectorPipeline(model_kwargs=KW, batch_rows=32)
    ref.process([Rec("t", 0, i, None, encode_json(x), (), 0) for i, x in enumerate(X)])
    ref.flush()
    recs = [Rec("t", 0, i, None, encode_json(x), (), 0) for i, x in enumerate(X[:100])]
    huge = np.ones((2, 4), np.float32)
    huge[1, 2] = 3e38
    recs.append(Rec("t", 0, 100, b"h", encode_binary(huge), (), 0))  # all-or-nothing per record
    recs.append(Rec("t", 0, 101, b"j", encode_json([1e20, 0.0, 0.0, 0.0]), (), 0))
    # above the model's MAX_ABS_VALUE: partial_fit would raise (a poison pill for the loop)
    recs.append(Rec("t", 0, 102, b"k", encode_json([0.0, -2e15, 0.0, 0.0]), (), 0))
    recs += [Rec("t", 0, 103 + i, None, encode_json(x), (), 0) for i, x in enumerate(X[100:])]
    p = VectorPipeline(model_kwargs=KW, batch_rows=32)
    r = p.process(recs)
    r.merge(p.flush())
    assert [(d.record.offset, d.error.reason) for d in r.dead_letters] == [
        (100, "non_finite"), (101, "non_finite"), (102, "non_finite")]
    assert "row 1" in r.dead_letters[0].error.message
    assert r.n_valid_records == len(X) and r.n_clustered == len(X)
    np.testing.assert_array_equal(p.model.cluster_centers_, ref.model.cluster_centers_)
    assert np.isfinite(p.model.ewm_objective_)


def test_events_too_large_are_dead_lettered_and_never_reach_the_windows():
    # The same limit as for vectors: |x| > MAX_ABS_VALUE could overflow the LSTM's input
    # projection (inf - inf = NaN in the gates), and one NaN embedding makes partial_fit
    # raise on every replay.
    from streamkm.sequence.lstm import LSTMEncoder

    enc = LSTMEncoder(3, 6, seed=0)
    recs, keys, _ = _events()
    ref = _seq_pipe(enc)
    run(ref, recs, [37])
    bad = [Rec("ev", 0, 1000, b"h", encode_event_json(keys[0], 0.5, [3e38, -3e38, 3e38]), (), 0),
           Rec("ev", 0, 1001, b"j", encode_event_json(keys[1], 0.5, [0.0, 2e15, 0.0]), (), 0)]
    p = _seq_pipe(enc)
    outs, dls = run(p, recs[:40] + bad + recs[40:], [37])
    assert [(d.record.offset, d.error.reason) for d in dls] == [(1000, "non_finite"), (1001, "non_finite")]
    assert p.n_events_ == len(recs)
    np.testing.assert_array_equal(p.model.cluster_centers_, ref.model.cluster_centers_)


@pytest.mark.parametrize("output_format", ["json", "binary"])
def test_outputs_and_queue_state_do_not_depend_on_fetch_boundaries(output_format):
    """Output records byte for byte and the checkpointed queue are the same however the
    records were split into fetches (chunks spanning several queued fetches, records split
    over two chunks, one-row and multi-row records, two partitions)."""
    X = blobs(700, seed=4)
    recs, off = [], 0
    i = 0
    while i < len(X):
        rows = 1 if off % 3 else 7
        recs.append(Rec("in", off % 2, off, f"k{off}".encode(), encode_binary(X[i:i + rows]), (), 0))
        i += rows
        off += 1
    results = []
    for sizes in ([len(recs)], [1], [13, 2, 41]):
        pipe = VectorPipeline(model_kwargs=KW, batch_rows=37, output_format=output_format)
        outs, i, k = [], 0, 0
        cut = len(recs) - 5  # stop with a partial chunk queued
        while i < cut:
            n = min(sizes[k % len(sizes)], cut - i)
            outs += pipe.process(recs[i:i + n]).outputs
            i, k = i + n, k + 1
        st = pipe.state_dict()
        results.append(([(o.key, o.value) for o in outs], st["pending_X"], st["pending_meta"], st["pending_keys"]))
        assert pipe.n_pending == st["pending_X"].shape[0] > 0
    ref = results[0]
    assert len(ref[0]) > 20
    for outs, px, pm, pk in results[1:]:
        assert outs == ref[0]
        np.testing.assert_array_equal(px, ref[1])
        np.testing.assert_array_equal(pm, ref[2])
        assert pk == ref[3]

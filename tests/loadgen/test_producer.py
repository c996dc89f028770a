"""Tests for streamkm.loadgen: sources, recording, producer and replay (real broker)."""

from __future__ import annotations

import asyncio
import io
import json
import time

import numpy as np
import pytest

from streamkm import codec as formats
from streamkm.loadgen import (
    Record,
    RecordingWriter,
    blob_records,
    event_records,
    file_records,
    produce,
    progress_bar,
    read_positioned,
    read_recording,
    record,
    synthetic,
    vector_records,
)
from tests.helpers.e2e import consume_all


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def _values(msgs):
    return [m.value for m in msgs]


# ---------------------------------------------------------------- offline parts
def test_vector_records_roundtrip_json_and_binary():
    X = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    for fmt, rows in (("json", 1), ("json", 4), ("binary", 1), ("binary", 4)):
        recs = list(vector_records(X, fmt=fmt, rows_per_record=rows))
        assert len(recs) == -(-10 // rows)
        batch = formats.decode_vectors([r.value for r in recs], fmt=fmt, dim=3,
                                       max_record_bytes=1 << 20)
        assert not batch.errors
        np.testing.assert_array_equal(batch.X, X)


def test_blob_records_match_synthetic_stream_and_count():
    recs = list(blob_records(25, fmt="binary", rows_per_record=3, n_clusters=2, n_features=4,
                             drift_every=30, seed=5, chunk_records=4))
    assert len(recs) == 25
    X = formats.decode_vectors([r.value for r in recs], fmt="binary", dim=4,
                               max_record_bytes=1 << 20).X
    ref, _ = synthetic.drifting_blobs(75, n_clusters=2, n_features=4, drift_every=30, seed=5)
    np.testing.assert_array_equal(X, ref)


def test_event_records_are_keyed_and_time_ordered_per_key():
    recs = list(event_records(100, n_keys=5, n_features=3, seed=1, chunk_events=30))
    assert len(recs) == 100
    batch = formats.decode_events([r.value for r in recs], fmt="json", dim=3,
                                  max_record_bytes=1 << 20)
    assert not batch.errors and len(batch.keys) == 100
    assert [r.key.decode() for r in recs] == batch.keys
    for k in set(batch.keys):
        ts = batch.ts[np.array(batch.keys) == k]
        assert np.all(np.diff(ts) > 0), k  # timelines continue across chunks


def test_recording_roundtrip_and_errors(tmp_path):
    recs = [Record(b"k1", b"v1", 5, (("a", b"1"), ("b", b""))), Record(None, b"v2"),
            Record(b"k3", None, 7)]
    path = tmp_path / "r.skmrec"
    with RecordingWriter(path) as w:
        for r in recs:
            w.write(r)
    assert list(read_recording(path)) == recs
    data = path.read_bytes()
    (tmp_path / "trunc.skmrec").write_bytes(data[:-1])
    with pytest.raises(ValueError, match="truncated"):
        list(read_recording(tmp_path / "trunc.skmrec"))
    (tmp_path / "bad.skmrec").write_bytes(b"NOPE" + data[4:])
    with pytest.raises(ValueError, match="bad magic"):
        list(read_recording(tmp_path / "bad.skmrec"))
    (tmp_path / "v9.skmrec").write_bytes(data[:6] + b"\x09\x00" + data[8:])
    with pytest.raises(ValueError, match="unsupported recording version 9"):
        list(read_recording(tmp_path / "v9.skmrec"))
    with pytest.raises(TypeError, match="bytes"):
        RecordingWriter(tmp_path / "x.skmrec").write(Record("str", b""))


def test_recording_keeps_positions_and_reads_version_1_as_partition_0(tmp_path):
    recs = [Record(b"a", b"1", 3), Record(None, b"2"), Record(b"c", None, 9, (("h", b"x"),))]
    pos = [(2, 10), (0, 4), (2, 11)]
    with RecordingWriter(tmp_path / "v2.skmrec", positions=True) as w:
        for r, (p, o) in zip(recs, pos, strict=True):
            w.write(r, partition=p, offset=o)
    assert (tmp_path / "v2.skmrec").read_bytes()[6:8] == b"\x02\x00"
    assert list(read_positioned(tmp_path / "v2.skmrec")) == [(p, o, r) for (p, o), r in zip(pos, recs, strict=True)]
    assert list(read_recording(tmp_path / "v2.skmrec")) == recs
    with RecordingWriter(tmp_path / "v1.skmrec") as w:
        for r in recs:
            w.write(r)
    assert (tmp_path / "v1.skmrec").read_bytes()[6:8] == b"\x01\x00"
    assert list(read_positioned(tmp_path / "v1.skmrec")) == [(0, i, r) for i, r in enumerate(recs)]
    with RecordingWriter(tmp_path / "x.skmrec", positions=True) as w:
        with pytest.raises(ValueError, match="partition and offset"):
            w.write(recs[0])
        with pytest.raises(ValueError, match="non-negative"):
            w.write(recs[0], partition=-1, offset=0)
        assert w.count == 0
    data = (tmp_path / "v2.skmrec").read_bytes()
    (tmp_path / "cut.skmrec").write_bytes(data[:8 + 20 + 5])  # inside the first record's position
    with pytest.raises(ValueError, match="cut.skmrec: truncated recording while reading record position"):
        list(read_positioned(tmp_path / "cut.skmrec"))


def test_file_records_npz_and_jsonl(tmp_path):
    X = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.savez(tmp_path / "v.npz", X=X)
    vals = [r.value for r in file_records(tmp_path / "v.npz", fmt="binary", rows_per_record=2)]
    np.testing.assert_array_equal(
        formats.decode_vectors(vals, fmt="binary", dim=2, max_record_bytes=1 << 20).X, X)

    np.savez(tmp_path / "e.npz", X=X, keys=np.array(["a", "b"] * 3), ts=np.arange(6.0))
    recs = list(file_records(tmp_path / "e.npz"))
    ev = formats.decode_events([r.value for r in recs], fmt="json", dim=2, max_record_bytes=1 << 20)
    assert ev.keys == ["a", "b"] * 3 and ev.ts.tolist() == list(range(6))
    assert [r.key for r in recs] == [b"a", b"b"] * 3

    lines = [b'{"key": "u1", "x": [1.0, 2.0]}', b"not json", b'{"x": [3.0, 4.0]}']
    (tmp_path / "r.jsonl").write_bytes(b"\n".join(lines) + b"\n\n")
    recs = list(file_records(tmp_path / "r.jsonl"))
    assert [r.value for r in recs] == lines  # verbatim, bad line included
    assert [r.key for r in recs] == [b"u1", None, None]

    (tmp_path / "r.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported replay file type"):
        list(file_records(tmp_path / "r.txt"))
    with pytest.raises(ValueError, match="does not exist"):
        list(file_records(tmp_path / "missing.npz"))
    np.savez(tmp_path / "nox.npz", Y=X)
    with pytest.raises(ValueError, match="'X'"):
        list(file_records(tmp_path / "nox.npz"))


def test_progress_bar_renders_percent_and_final_line():
    buf = io.StringIO()
    bar = progress_bar(200, enabled=True, file=buf, mininterval=0.0)
    bar.update(50, 1000)
    assert "25.0%" in buf.getvalue() and "50/200" in buf.getvalue()
    bar.update(150, 3000)
    bar.close()
    bar.close()
    out = buf.getvalue()
    assert "100.0%" in out and out.endswith("\n") and out.count("\n") == 1
    assert "MB/s" in out and "records/s" in out
    unbounded = progress_bar(None, enabled=True, file=io.StringIO(), mininterval=0.0)
    unbounded.update(7)
    assert str(unbounded).startswith("7 records")


def test_progress_bar_writes_nothing_when_off_or_not_a_terminal():
    for enabled in (None, False):  # a StringIO is not a terminal
        buf = io.StringIO()
        bar = progress_bar(10, enabled=enabled, file=buf, mininterval=0.0)
        bar.update(10, 100)
        bar.close()
        assert buf.getvalue() == ""


@pytest.mark.parametrize("kwargs, match", [
    ({"rate": 0}, "rate"),
    ({"count": 0}, "count"),
    ({"topic": ""}, "topic"),
])
def test_produce_rejects_bad_arguments(kwargs, match):
    args = {"topic": "t", "bootstrap_servers": "127.0.0.1:1"} | kwargs
    with pytest.raises(ValueError, match=match):
        run(produce([], **args))


def test_sources_reject_bad_arguments():
    with pytest.raises(ValueError, match="fmt"):
        list(vector_records(np.zeros((2, 2)), fmt="xml"))
    with pytest.raises(ValueError, match="rows_per_record"):
        list(vector_records(np.zeros((2, 2)), rows_per_record=0))
    with pytest.raises(ValueError, match="2-D"):
        list(vector_records(np.zeros(3)))
    with pytest.raises(ValueError, match="no bootstrap"):
        run(produce([], topic="t"))


# ---------------------------------------------------------------- real broker


@pytest.mark.broker
@pytest.mark.parametrize("fmt, rows", [("json", 1), ("binary", 1), ("binary", 16)])
def test_produce_and_consume_back(broker, make_topic, fmt, rows):
    topic = make_topic("produce", partitions=2)
    n_records = 300
    stats = run(produce(blob_records(n_records, fmt=fmt, rows_per_record=rows, n_clusters=3,
                                     n_features=5, seed=2, chunk_records=64),
                        topic=topic, bootstrap_servers=broker, progress=False))
    assert stats.records == n_records and sum(stats.partitions.values()) == n_records
    msgs = run(consume_all(broker, topic, expected=n_records, idle=0.5))
    assert len(msgs) == n_records
    batch = formats.decode_vectors(_values(msgs), fmt=fmt, dim=5, max_record_bytes=1 << 20)
    assert not batch.errors
    ref, _ = synthetic.drifting_blobs(n_records * rows, n_clusters=3, n_features=5, seed=2)
    # two partitions: compare as multisets of rows
    got = batch.X[np.lexsort(batch.X.T[::-1])]
    want = ref[np.lexsort(ref.T[::-1])]
    np.testing.assert_array_equal(got, want)


@pytest.mark.broker
def test_keyed_events_stay_in_one_partition_in_order(broker, make_topic):
    topic = make_topic("events", partitions=3)
    recs = list(event_records(240, n_keys=12, n_features=3, seed=4))
    stats = run(produce(recs, topic=topic, bootstrap_servers=broker, progress=False))
    assert stats.records == 240
    msgs = run(consume_all(broker, topic, expected=240, idle=0.5))
    by_key: dict[bytes, set[int]] = {}
    for m in msgs:
        by_key.setdefault(m.key, set()).add(m.partition)
    assert all(len(p) == 1 for p in by_key.values())
    assert len({p for ps in by_key.values() for p in ps}) > 1  # spread over partitions
    sent = {}
    for r in recs:
        sent.setdefault(r.key, []).append(r.value)
    got = {}
    for m in sorted(msgs, key=lambda m: (m.partition, m.offset)):
        got.setdefault(m.key, []).append(m.value)
    assert got == sent


@pytest.mark.broker
def test_record_then_replay_gives_same_records_in_order(broker, make_topic, tmp_path):
    src, dst = make_topic("rec-src"), make_topic("rec-dst")
    X = np.random.default_rng(3).normal(size=(50, 4)).astype(np.float32)
    base = list(vector_records(X, fmt="json"))
    # mix in headers, a null key and a bad record: all must survive the round trip
    recs = [Record(b"key-%d" % i, r.value, None, (("trace", b"%d" % i),)) if i % 3 == 0 else r
            for i, r in enumerate(base)] + [Record(b"bad", b"\xff not json")]
    run(produce(recs, topic=src, bootstrap_servers=broker, partition=0, progress=False))
    path = tmp_path / "src.skmrec"
    n = run(record(topic=src, out=path, bootstrap_servers=broker, progress=False))
    assert n == len(recs)
    stored = list(read_recording(path))
    assert [(r.key, r.value, r.headers) for r in stored] == [(r.key, r.value, r.headers) for r in recs]
    assert all(r.timestamp_ms is not None for r in stored)

    stats = run(produce(file_records(path), topic=dst, bootstrap_servers=broker, progress=False))
    assert stats.records == len(recs)
    msgs = run(consume_all(broker, dst, expected=len(recs), idle=0.5))
    assert [(m.key, m.value, tuple(m.headers)) for m in msgs] == \
        [(r.key, r.value, r.headers) for r in recs]
    assert [m.timestamp for m in msgs] == [r.timestamp_ms for r in stored]
    # --count stops a recording early
    assert run(record(topic=src, out=tmp_path / "head.skmrec", bootstrap_servers=broker,
                      count=5, progress=False)) == 5
    assert len(list(read_recording(tmp_path / "head.skmrec"))) == 5


@pytest.mark.broker
def test_rate_limit_spreads_records_over_time(broker, make_topic):
    topic = make_topic("rate")
    t0 = time.monotonic()
    stats = run(produce(vector_records(np.zeros((60, 2)), fmt="binary"), topic=topic,
                        bootstrap_servers=broker, rate=200.0, progress=False))
    # 60 records at 200/s cannot be delivered in less than ~0.3 s (lower bound only)
    assert stats.records == 60 and time.monotonic() - t0 >= 0.25


@pytest.mark.broker
def test_stop_event_ends_an_unbounded_stream(broker, make_topic):
    topic = make_topic("unbounded")

    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(produce(blob_records(None, n_features=2, seed=0),
                                           topic=topic, bootstrap_servers=broker,
                                           rate=2000.0, stop_event=stop, progress=False))
        await asyncio.sleep(0.5)
        stop.set()
        return await task

    stats = run(main())
    assert stats.records > 0
    msgs = run(consume_all(broker, topic))
    assert len(msgs) == stats.records  # everything counted was delivered


@pytest.mark.broker
def test_unknown_partition_is_rejected(broker, make_topic):
    topic = make_topic("part")
    with pytest.raises(ValueError, match="partition 5"):
        run(produce([Record(None, b"x")], topic=topic, bootstrap_servers=broker, partition=5,
                    progress=False))


def test_jsonl_replay_keys_are_strings(tmp_path):
    (tmp_path / "k.jsonl").write_text(json.dumps({"key": 12, "x": [1]}) + "\n")
    assert next(file_records(tmp_path / "k.jsonl")).key == b"12"


@pytest.mark.broker
def test_record_multi_partition_topic_with_empty_partitions(broker, make_topic, tmp_path):
    topic = make_topic("rec-multi", partitions=3)
    recs = [Record(b"k%d" % i, b"v%d" % i) for i in range(40)]
    run(produce(recs, topic=topic, bootstrap_servers=broker, partition=1, progress=False))
    n = run(record(topic=topic, out=tmp_path / "m.skmrec", bootstrap_servers=broker,
                   timeout_s=20, progress=False))
    assert n == 40
    assert [r.value for r in read_recording(tmp_path / "m.skmrec")] == [r.value for r in recs]
    assert [(p, o) for p, o, _ in read_positioned(tmp_path / "m.skmrec")] == [(1, i) for i in range(40)]

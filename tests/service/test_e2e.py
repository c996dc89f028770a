"""End to end against Tansu: the worker as a subprocess (`python -m streamkm run`) killed
with SIGKILL at precise points and restarted, SIGTERM, and the sequence pipeline with a small
trained LSTM."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from streamkm.checkpoint import CheckpointStore
from streamkm.cluster.streaming_kmeans import StreamingKMeans
from streamkm.codec import encode_binary, encode_event_json, encode_json
from streamkm.service.offsets import parse_offsets
from tests.helpers.data import blobs
from tests.helpers.e2e import (
    committed_offsets,
    consume_all,
    load_config,
    offline,
    produce,
    to_toml,
    unique_name,
    wait_until,
    worker_config,
)
from tests.helpers.processes import WorkerProcess

pytestmark = pytest.mark.broker

N = 1500
BATCH = 50


def vectors(seed=0):
    X = blobs(N, d=5, k=4, center_scale=5.0, seed=seed)
    records = [(f"k{i}".encode(), encode_binary(x[None]) if i % 2 else encode_json(x))
               for i, x in enumerate(X)]
    return X, records




def model_from_checkpoint(ckpt_dir, kw):
    state, info = CheckpointStore(ckpt_dir).load_latest()
    m = StreamingKMeans(**kw)
    m.load_state_dict(state["pipelines"]["vectors"]["model"])
    return m, state, info


def assert_no_torn_checkpoint(ckpt_dir):
    store = CheckpointStore(ckpt_dir)
    infos = store.list()
    assert infos, "no checkpoint"
    for info in infos:
        store.load(info.sequence)  # raises on a torn or corrupted one


@pytest.mark.faults
@pytest.mark.parametrize("fault", ["after_update:6", "after_checkpoint:2", "after_temp_write:2"])
def test_kill9_and_restart_gives_the_uninterrupted_model(broker, make_topic, tmp_path, fault):
    topic, out = make_topic("in"), make_topic("out")
    group = unique_name("g")
    X, records = vectors()
    ckpt = tmp_path / "ckpt"
    cfg = worker_config(broker, ckpt, group=group, vectors_topic=topic, output=out, n_clusters=4,
                        max_records=BATCH, checkpoint={"interval_records": 200})
    settings = load_config(cfg, tmp_path / "w.toml")
    kw = settings.model.estimator_kwargs()
    asyncio.run(produce(broker, topic, records, partition=0))

    with WorkerProcess(tmp_path / "w.toml", tmp_path / "run1.log", fault=fault) as w:
        rc = w.wait(60)
        assert rc == -signal.SIGKILL, w.tail()
    point = fault.split(":")[0]
    if point == "after_temp_write":
        assert any(p.name.startswith(".tmp-") for p in ckpt.iterdir())  # the torn write is there
    state, info = CheckpointStore(ckpt).load_latest()
    killed_at = {tp.partition: o for tp, o in parse_offsets(state["offsets"]).items()}
    assert 0 < killed_at[0] < len(records)  # really interrupted mid-stream
    committed_before = asyncio.run(committed_offsets(broker, group, topic))
    if point == "after_checkpoint":
        assert committed_before[0] is None or committed_before[0] < killed_at[0]

    with WorkerProcess(tmp_path / "w.toml", tmp_path / "run2.log") as w:
        async def done():
            return (await committed_offsets(broker, group, topic)).get(0) == len(records)

        try:
            asyncio.run(wait_until(done, 60, "restarted worker commits the end", interval=0.3))
        except TimeoutError:
            raise AssertionError(w.tail()) from None
        w.proc.send_signal(signal.SIGTERM)
        assert w.wait(30) == 0, w.tail()
        assert f"restored checkpoint {info.sequence} " in w.tail()

    assert_no_torn_checkpoint(ckpt)
    model, state, _ = model_from_checkpoint(ckpt, kw)
    assert model.counts_.sum() == pytest.approx(N)  # each record once
    ref = offline(X, kw, BATCH)
    np.testing.assert_allclose(model.cluster_centers_, ref.cluster_centers_, rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.counts_, ref.counts_, rtol=0, atol=1e-6)
    # the output topic is at-least-once: every input key has an assignment
    outs = asyncio.run(consume_all(broker, out, timeout=30))
    assert {r.key for r in outs} == {k for k, _ in records}
    assert len(outs) >= len(records)


def test_sigterm_exits_0_with_fresh_checkpoint_and_matching_commit(broker, make_topic, tmp_path):
    topic = make_topic("in")
    group = unique_name("g")
    X, records = vectors(seed=1)
    ckpt = tmp_path / "ckpt"
    cfg = worker_config(broker, ckpt, group=group, vectors_topic=topic, n_clusters=4,
                        max_records=BATCH, checkpoint={"interval_records": 300})
    (tmp_path / "w.toml").write_text(to_toml(cfg))
    asyncio.run(produce(broker, topic, records[:900], partition=0))

    with WorkerProcess(tmp_path / "w.toml", tmp_path / "run.log") as w:
        async def started():
            return ((await committed_offsets(broker, group, topic)).get(0) or 0) > 0

        asyncio.run(wait_until(started, 60, "first commit", interval=0.2))
        asyncio.run(produce(broker, topic, records[900:], partition=0))
        t_term = time.time()
        w.proc.send_signal(signal.SIGTERM)
        rc = w.wait(30)
        t_exit = time.time()
        log = w.tail()
    assert rc == 0, log
    assert t_exit - t_term < 30
    assert "shutdown" in log
    state, info = CheckpointStore(ckpt).load_latest()
    assert info.created_at >= t_term - 0.01  # fresh: written after the signal
    ck = {tp.partition: o for tp, o in parse_offsets(state["offsets"]).items()}
    committed = asyncio.run(committed_offsets(broker, group, topic))
    assert committed == ck
    assert 0 < ck[0] <= len(records)
    # the checkpointed model holds exactly the records before its offset
    pipe = state["pipelines"]["vectors"]
    assert pipe["n_clustered"] + pipe["pending_X"].shape[0] == ck[0]


def _train_small_lstm(path: Path):
    from streamkm.loadgen.synthetic import behaviour_sequences
    from streamkm.sequence.lstm import LSTMEncoder
    from streamkm.sequence.train import train_encoder

    W, _ = behaviour_sequences(96, n_processes=3, length=8, n_features=3, seed=0)
    enc = LSTMEncoder(3, 8, seed=0)
    before = enc.content_hash
    res = train_encoder(enc, W, epochs=3, batch_size=32, lr=1e-2, seed=0, val_fraction=0.0)
    assert enc.content_hash != before  # it did train
    enc.save(path)
    return enc, res


def test_sequence_pipeline_end_to_end_with_trained_lstm(broker, make_topic, tmp_path):
    from streamkm.loadgen.synthetic import behaviour_events
    from streamkm.pipeline import SequencePipeline
    from streamkm.service.worker import Worker

    enc, _ = _train_small_lstm(tmp_path / "lstm.npz")
    topic, dlq, out = make_topic("ev"), make_topic("dlq"), make_topic("out")
    group = unique_name("g")
    keys, ts, Xe, _ = behaviour_events(12, 32, n_processes=3, n_features=3, seed=1)
    records = [(k.encode(), encode_event_json(k, float(t), x)) for k, t, x in zip(keys, ts, Xe, strict=True)]
    bad = [(b"b1", b'{"key": "u", "ts": 1.0}'), (b"b2", b'{"key": "u", "ts": 1.0, "x": [1, 2]}')]
    records = records[:10] + bad + records[10:]
    cfg = worker_config(broker, tmp_path / "ckpt", group=group, events_topic=topic, dlq=dlq,
                        output=out, max_records=40,
                        sequence={"enabled": True, "lstm_path": str(tmp_path / "lstm.npz"),
                                  "window_kind": "tumbling", "window_size": 8,
                                  "model": {"n_clusters": 3, "seed": 0}})
    settings = load_config(cfg, tmp_path / "w.toml")
    n_windows = len(keys) // 8

    async def scenario():
        await produce(broker, topic, records, partition=0)
        worker = Worker(settings)
        task = asyncio.create_task(worker.run())
        pipe = worker.pipelines["sequence"]
        await wait_until(lambda: pipe.core.n_clustered_ == n_windows, 30, "all windows clustered")
        await worker.shutdown(20)
        await task
        dl = await consume_all(broker, dlq, expected=2, idle=0.3)
        outs = await consume_all(broker, out, expected=n_windows, idle=0.3)
        return worker, dl, outs

    worker, dl, outs = asyncio.run(scenario())
    pipe = worker.pipelines["sequence"]
    assert pipe.model.counts_.sum() == pytest.approx(n_windows)
    assert sorted(dict(r.headers)["__connect.errors.reason"] for r in dl) == [b"dimension", b"schema"]
    assert len(outs) == n_windows
    per_key = {}
    for r in outs:
        per_key[r.key] = per_key.get(r.key, 0) + 1
    assert per_key == {k.encode(): 32 // 8 for k in set(keys)}  # one output per window, keyed
    vals = [json.loads(r.value) for r in outs]
    assert all(v["length"] == 8 and 0 <= v["cluster"] < 3 for v in vals)

    # the same records through an offline pipeline give the same model
    class Rec:
        def __init__(self, i, kv):
            self.topic, self.partition, self.offset = topic, 0, i
            self.key, self.value, self.headers, self.timestamp = kv[0], kv[1], (), 0

    ref = SequencePipeline(encoder=enc, windower_kwargs=settings.sequence.windower_kwargs(),
                           model_kwargs={"n_clusters": 3, "seed": 0}, batch_rows=pipe.core.batch_rows,
                           pooling=settings.sequence.pooling, normalize=settings.sequence.normalize)
    recs = [Rec(i, kv) for i, kv in enumerate(records)]
    for i in range(0, len(recs), 40):
        ref.process(recs[i:i + 40])
    ref.flush()
    np.testing.assert_allclose(pipe.model.cluster_centers_, ref.model.cluster_centers_, rtol=0, atol=1e-6)
    state, _ = CheckpointStore(tmp_path / "ckpt").load_latest()
    assert state["pipelines"]["sequence"]["lstm_hash"] == enc.content_hash


def test_sequence_kill9_with_open_windows_and_restart(broker, make_topic, tmp_path):
    """Killed between a checkpoint and its commit while windows are open: the restarted
    worker restores the windows and queued embeddings and ends with the offline model."""
    from streamkm.loadgen.synthetic import behaviour_events
    from streamkm.pipeline import SequencePipeline

    enc, _ = _train_small_lstm(tmp_path / "lstm.npz")
    topic = make_topic("ev")
    group = unique_name("g")
    keys, ts, Xe, _ = behaviour_events(16, 40, n_processes=3, n_features=3, seed=2)
    records = [(k.encode(), encode_event_json(k, float(t), x)) for k, t, x in zip(keys, ts, Xe, strict=True)]
    ckpt = tmp_path / "ckpt"
    cfg = worker_config(broker, ckpt, group=group, events_topic=topic, max_records=30,
                        checkpoint={"interval_records": 90},
                        sequence={"enabled": True, "lstm_path": str(tmp_path / "lstm.npz"),
                                  "window_kind": "tumbling", "window_size": 8,
                                  "model": {"n_clusters": 3, "seed": 0}})
    settings = load_config(cfg, tmp_path / "w.toml")
    asyncio.run(produce(broker, topic, records, partition=0))

    with WorkerProcess(tmp_path / "w.toml", tmp_path / "run1.log", fault="after_checkpoint:3") as w:
        assert w.wait(60) == -signal.SIGKILL, w.tail()
    state, _ = CheckpointStore(ckpt).load_latest()
    win = state["pipelines"]["sequence"]["windows"]
    assert win["lengths"].sum() > 0 and 0 < win["n_events"] < len(records)  # mid-stream, windows open

    with WorkerProcess(tmp_path / "w.toml", tmp_path / "run2.log") as w:
        async def done():
            return (await committed_offsets(broker, group, topic)).get(0) == len(records)

        asyncio.run(wait_until(done, 60, "restarted worker commits the end", interval=0.3))
        w.proc.send_signal(signal.SIGTERM)
        assert w.wait(30) == 0, w.tail()

    state, _ = CheckpointStore(ckpt).load_latest()
    got = state["pipelines"]["sequence"]

    class Rec:
        def __init__(self, i, kv):
            self.topic, self.partition, self.offset = topic, 0, i
            self.key, self.value, self.headers, self.timestamp = kv[0], kv[1], (), 0

    ref = SequencePipeline(encoder=enc, windower_kwargs=settings.sequence.windower_kwargs(),
                           model_kwargs={"n_clusters": 3, "seed": 0}, batch_rows=30,
                           pooling=settings.sequence.pooling, normalize=settings.sequence.normalize)
    for i in range(0, len(records), 7):
        ref.process([Rec(j, records[j]) for j in range(i, min(i + 7, len(records)))])
    ref.flush()
    m = StreamingKMeans(n_clusters=3, seed=0)
    m.load_state_dict(got["model"])
    assert m.counts_.sum() == pytest.approx(len(keys) // 8)
    np.testing.assert_allclose(m.cluster_centers_, ref.model.cluster_centers_, rtol=0, atol=1e-6)

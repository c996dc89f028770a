"""The worker in-process against a real Tansu broker: exactly-once clustering, DLQ headers,
output topic, metrics over HTTP, restart from a checkpoint, broker down, rebalances."""

from __future__ import annotations

import asyncio
import json
import struct
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamkm.checkpoint import CheckpointStore
from streamkm.cluster.streaming_kmeans import StreamingKMeans
from streamkm.codec import encode_binary, encode_json
from streamkm.ops.metrics import Metrics
from streamkm.service.offsets import parse_offsets
from streamkm.service.worker import Worker
from tests.helpers.data import blobs
from tests.helpers.e2e import (
    committed_offsets,
    consume_all,
    end_offsets,
    load_config,
    offline,
    produce,
    unique_name,
    wait_until,
    worker_config,
)

pytestmark = pytest.mark.broker

BAD = {  # value -> DLQ reason
    b"{not json": "not_json",
    b'{"y": [1, 2, 3, 4]}': "schema",
    encode_json(np.ones(5)): "dimension",
    b'{"x": [1.0, NaN, 2.0, 3.0]}': "non_finite",
    b"": "empty",
    b'{"x": [' + b", ".join([b"1.5"] * 400) + b"]}": "oversized",  # 2 kB > 1000
    encode_binary(np.ones((2, 4), np.float32))[:-5]: "truncated",
    b'{"x": ["a", "b", "c", "d"]}': "dtype",
}




def dataset(n=600, d=4, seed=0):
    X = blobs(n, d=d, k=3, center_scale=6.0, seed=seed)
    records, bad_at = [], {}
    bad_items = list(BAD.items())
    for i, x in enumerate(X):
        if i % 40 == 7:
            v, reason = bad_items[(i // 40) % len(bad_items)]
            bad_at[len(records)] = reason
            records.append((f"bad{i}".encode(), v, [("trace", f"t{i}".encode())]))
        value = encode_binary(x[None]) if i % 3 == 0 else encode_json(x)
        records.append((f"k{i}".encode(), value))
    return X, records, bad_at


def scrape(url):
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_vectors_exactly_once_dlq_output_and_metrics(broker, make_topic, tmp_path):
    from streamkm.ops.http import HealthServer

    topic, dlq, out = make_topic("in"), make_topic("dlq"), make_topic("out")
    group = unique_name("g")
    X, records, bad_at = dataset()
    cfg = worker_config(broker, tmp_path / "ckpt", group=group, vectors_topic=topic, dlq=dlq,
                        output=out, max_records=64, input={"dimension": 4, "max_record_bytes": 1000})
    settings = load_config(cfg, tmp_path / "w.toml")
    n_bad = len(bad_at)

    async def scenario():
        await produce(broker, topic, records, partition=0)
        metrics = Metrics()
        worker = Worker(settings, metrics=metrics)
        async with HealthServer(metrics.registry, port=0, ready=worker.is_ready,
                                live=worker.is_live) as server:
            task = asyncio.create_task(worker.run())
            pipe = worker.pipelines["vectors"]
            await wait_until(lambda: pipe.core.n_clustered_ == len(X) and worker.is_ready(), 30,
                             "all vectors clustered")
            await wait_until(lambda: worker.n_checkpoints >= 1, 10, "checkpoint after flush")
            # Output and dead-letter sends are counted when acknowledged, which can trail the
            # model update: scrape only once every send of the run has been counted.
            sample = metrics.registry.get_sample_value

            def all_sends_counted():
                dead = sum(sample("streamkm_records_dead_lettered_total",
                                  {"pipeline": "vectors", "reason": r}) or 0
                           for r in set(bad_at.values()))
                return (sample("streamkm_output_records_total", {"pipeline": "vectors"}) == len(X)
                        and dead == n_bad)

            await wait_until(all_sends_counted, 10, "output and dead-letter sends acknowledged")
            live = await asyncio.to_thread(scrape, server.url)
            ok = await worker.shutdown(20)
            await task
        committed = await committed_offsets(broker, group, topic)
        dl = await consume_all(broker, dlq, expected=n_bad, idle=0.5)
        outs = await consume_all(broker, out, expected=len(X), idle=0.5)
        return worker, live, ok, committed, dl, outs

    worker, live, ok, committed, dl, outs = asyncio.run(scenario())
    assert ok and not worker.is_live()
    model = worker.pipelines["vectors"].model
    # every valid record clustered exactly once (decay 1: weights sum to N valid)
    assert model.counts_.sum() == pytest.approx(len(X))
    ref = offline(X, dict(settings.model.estimator_kwargs()), 64)
    np.testing.assert_allclose(model.cluster_centers_, ref.cluster_centers_, rtol=0, atol=1e-6)

    # dead letters: original key/value/headers + provenance
    assert len(dl) == n_bad
    for rec in dl:
        h = dict(rec.headers)
        off = int(h["__connect.errors.offset"])
        orig_key, orig_value, orig_headers = records[off]
        assert rec.key == orig_key and rec.value == orig_value
        assert ("trace", orig_headers[0][1]) in rec.headers
        reason = bad_at[off]
        assert h["__connect.errors.reason"].decode() == reason
        assert h["__connect.errors.topic"].decode() == topic
        assert h["__connect.errors.partition"] == b"0"
        assert h["__connect.errors.connector.name"].decode() == group
        assert h["__connect.errors.exception.class.name"]
        assert h["__connect.errors.exception.message"]
        assert h["kafka_dlt-original-topic"].decode() == topic
        assert struct.unpack(">i", h["kafka_dlt-original-partition"])[0] == 0
        assert struct.unpack(">q", h["kafka_dlt-original-offset"])[0] == off
        assert struct.unpack(">q", h["kafka_dlt-original-timestamp"])[0] > 0
        assert h["kafka_dlt-original-consumer-group"].decode() == group
        assert h["kafka_dlt-exception-fqcn"] == h["__connect.errors.exception.class.name"]
    # output: one assignment per valid record, keyed by the input key
    assert sorted(r.key for r in outs) == sorted(f"k{i}".encode() for i in range(len(X)))
    vals = [json.loads(r.value) for r in outs]
    assert all(0 <= v["cluster"] < 3 and v["sq_distance"] >= 0 for v in vals)
    assert max(v["model_version"] for v in vals) == model.n_batches_

    # checkpoint == committed == end of the topic
    state, info = CheckpointStore(tmp_path / "ckpt").load_latest()
    ck = {tp.partition: off for tp, off in parse_offsets(state["offsets"]).items()}
    assert ck == committed == {0: len(records)}

    # /metrics while running
    def val(name, **labels):
        return live[(name, tuple(sorted(labels.items())))]

    assert val("streamkm_records_consumed_total", pipeline="vectors", topic=topic) == len(records)
    assert val("streamkm_records_clustered_total", pipeline="vectors") == len(X)
    assert val("streamkm_vectors_clustered_total", pipeline="vectors") == len(X)
    by_reason = {}
    for r in bad_at.values():
        by_reason[r] = by_reason.get(r, 0) + 1
    for reason, n in by_reason.items():
        assert val("streamkm_records_dead_lettered_total", pipeline="vectors", reason=reason) == n
    assert sum(val("streamkm_cluster_weight", pipeline="vectors", cluster=str(j)) for j in range(3)) \
        == pytest.approx(len(X))
    assert val("streamkm_consumer_lag_records", consumergroup=group, topic=topic, partition="0") == 0
    assert val("streamkm_model_version", pipeline="vectors") == model.n_batches_
    assert val("streamkm_output_records_total", pipeline="vectors") == len(X)
    assert val("streamkm_checkpoints_total") >= 1 and val("streamkm_commits_total") >= 1
    assert val("streamkm_rebalances_total") >= 1
    assert val("streamkm_assigned_partitions") == 1
    assert val("streamkm_ready") == 1


def test_restart_resumes_from_checkpoint_without_loss(broker, make_topic, tmp_path):
    topic = make_topic("in")
    group = unique_name("g")
    X, records, _ = dataset(n=400, seed=1)
    records = [r for r in records if not r[0].startswith(b"bad")]
    cfg = worker_config(broker, tmp_path / "ckpt", group=group, vectors_topic=topic, max_records=50)
    settings = load_config(cfg, tmp_path / "w.toml")

    async def one_run(n_expected):
        worker = Worker(settings)
        task = asyncio.create_task(worker.run())
        pipe = worker.pipelines["vectors"]
        await wait_until(lambda: pipe.core.n_clustered_ == n_expected and pipe.n_pending == 0, 30,
                         f"{n_expected} clustered")
        await worker.shutdown(20)
        await task
        return worker

    async def scenario():
        await produce(broker, topic, records[:230], partition=0)
        first = await one_run(230)
        await produce(broker, topic, records[230:], partition=0)
        second = await one_run(len(records))
        return first, second

    first, second = asyncio.run(scenario())
    m = second.pipelines["vectors"].model
    assert m.counts_.sum() == pytest.approx(len(X))
    assert second.pipelines["vectors"].core.n_clustered_ == len(X)
    # the restarted worker's model saw only the second half over the Kafka connection
    assert first.pipelines["vectors"].core.n_clustered_ == 230


def test_broker_unreachable_live_not_ready_and_clean_shutdown(tmp_path):
    from streamkm.kafka.embedded import free_port

    cfg = worker_config(f"127.0.0.1:{free_port()}", tmp_path / "ckpt", group="g",
                        vectors_topic="nowhere")
    settings = load_config(cfg, tmp_path / "w.toml")

    async def scenario():
        metrics = Metrics()
        worker = Worker(settings, metrics=metrics)
        task = asyncio.create_task(worker.run())
        await wait_until(lambda: metrics.registry.get_sample_value("streamkm_broker_errors_total") >= 2, 20,
                         "two retries")
        live, ready = worker.is_live(), worker.is_ready()
        ok = await worker.shutdown(10)
        await task
        return live, ready, ok, worker

    live, ready, ok, worker = asyncio.run(scenario())
    assert live and not ready and ok
    assert not worker.is_live()
    # a checkpoint is still written on shutdown (fresh state, no offsets)
    state, _ = CheckpointStore(tmp_path / "ckpt").load_latest()
    assert state["offsets"] == {}


@pytest.mark.faults
def test_two_workers_partitions_move_nothing_lost(broker, make_topic, tmp_path):
    topic = make_topic("in", partitions=4)
    group = unique_name("g")
    rng = np.random.default_rng(5)
    X = rng.normal(size=(800, 3)).astype(np.float32)
    records = [(f"k{i}".encode(), encode_binary(x[None])) for i, x in enumerate(X)]

    def settings(name):
        cfg = worker_config(broker, tmp_path / name, group=group, vectors_topic=topic, max_records=40)
        return load_config(cfg, tmp_path / f"{name}.toml")

    async def put(recs, start):
        for p in range(4):
            await produce(broker, topic, [r for i, r in enumerate(recs, start) if i % 4 == p], partition=p)

    async def scenario():
        a, b = Worker(settings("a")), Worker(settings("b"))
        ta = asyncio.create_task(a.run())
        await wait_until(lambda: len(a.assignment) == 4, 20, "a owns all partitions")
        tb = asyncio.create_task(b.run())
        await wait_until(lambda: len(a.assignment) == 2 and len(b.assignment) == 2, 30,
                         "partitions split between a and b")
        await put(records[:400], 0)

        def total():
            return sum(w.pipelines["vectors"].core.n_clustered_ for w in (a, b))

        await wait_until(lambda: total() == 400, 30, "first half clustered")
        a_parts = {tp.partition for tp in a.assignment}
        await a.shutdown(20)
        await ta
        await wait_until(lambda: len(b.assignment) == 4, 30, "b takes over a's partitions")
        await put(records[400:], 400)
        await wait_until(lambda: total() == len(X) and b.pipelines["vectors"].n_pending == 0, 30,
                         "everything clustered")
        await b.shutdown(20)
        await tb
        committed = await committed_offsets(broker, group, topic)
        ends = await end_offsets(broker, topic)
        return a, b, a_parts, committed, ends

    a, b, a_parts, committed, ends = asyncio.run(scenario())
    na = a.pipelines["vectors"].core.n_clustered_
    nb = b.pipelines["vectors"].core.n_clustered_
    assert na + nb == len(X)  # nothing lost, nothing counted twice across the group
    assert a.pipelines["vectors"].model.counts_.sum() == pytest.approx(na)
    assert b.pipelines["vectors"].model.counts_.sum() == pytest.approx(nb)
    assert na == 200 and nb == 600  # a: its 2 partitions of the first half; b: the rest
    assert committed == ends == {p: 200 for p in range(4)}
    # a's final checkpoint holds only its own partitions, at the offsets it committed
    state, _ = CheckpointStore(tmp_path / "a").load_latest()
    assert {tp.partition: o for tp, o in parse_offsets(state["offsets"]).items()} == {p: 100 for p in a_parts}


def test_broker_lost_while_running_not_ready_still_live_and_shuts_down(tmp_path):
    from streamkm.kafka.embedded import EmbeddedBroker, create_topics

    broker = EmbeddedBroker()
    broker.start()
    try:
        bs = broker.bootstrap_servers
        cfg = worker_config(bs, tmp_path / "ckpt", group="g", vectors_topic="in", max_records=20)
        settings = load_config(cfg, tmp_path / "w.toml")
        X = np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32)

        async def scenario():
            await create_topics(bs, {"in": 1})
            await produce(bs, "in", [(None, encode_binary(x[None])) for x in X], partition=0)
            worker = Worker(settings)
            task = asyncio.create_task(worker.run())
            pipe = worker.pipelines["vectors"]
            await wait_until(lambda: pipe.core.n_clustered_ == 100 and worker.is_ready(), 30, "ready")
            await asyncio.to_thread(broker.stop)
            await wait_until(lambda: not worker.is_ready(), 30, "readiness drops with the broker")
            live = worker.is_live()
            t0 = asyncio.get_running_loop().time()
            ok = await worker.shutdown(25)
            took = asyncio.get_running_loop().time() - t0
            await task
            return live, ok, took

        live, ok, took = asyncio.run(scenario())
    finally:
        broker.stop()
        broker.cleanup_log()
    assert live and ok and took < 15  # no commit attempt against a dead coordinator
    # the model state was still checkpointed (commit impossible): a restart resumes from it
    state, _ = CheckpointStore(tmp_path / "ckpt").load_latest()
    assert {tp.partition: o for tp, o in parse_offsets(state["offsets"]).items()} == {0: 100}


@pytest.mark.faults
def test_member_joins_mid_stream_each_record_absorbed_once(broker, make_topic, tmp_path):
    """A second member joins while the first is consuming a backlog (rebalance mid-stream,
    revoke during an in-flight batch); then the first leaves. Across both models every
    record is absorbed exactly once."""
    import time as _time

    topic = make_topic("in", partitions=4)
    group = unique_name("g")
    n = 2400
    X = np.random.default_rng(7).normal(size=(n, 3)).astype(np.float32)

    def settings(name):
        cfg = worker_config(broker, tmp_path / name, group=group, vectors_topic=topic, max_records=20,
                            checkpoint={"interval_records": 100})
        return load_config(cfg, tmp_path / f"{name}.toml")

    def slow(point):  # ~30 ms per batch so the backlog outlasts a rebalance
        if point == "after_update":
            _time.sleep(0.03)

    async def scenario():
        for p in range(4):
            await produce(broker, topic, [(None, encode_binary(X[i][None])) for i in range(p, n, 4)],
                          partition=p)
        a = Worker(settings("a"), fault_hook=slow)
        b = Worker(settings("b"), fault_hook=slow)
        pa, pb = a.pipelines["vectors"], b.pipelines["vectors"]
        ta = asyncio.create_task(a.run())
        await wait_until(lambda: pa.core.n_clustered_ + pa.n_pending >= 200, 30, "a consuming")
        tb = asyncio.create_task(b.run())
        await wait_until(lambda: len(b.assignment) == 2, 30, "b joined")
        mid = pa.core.n_clustered_ + pa.n_pending
        await wait_until(lambda: pb.core.n_clustered_ > 0, 30, "b consuming")
        await a.shutdown(20)
        await ta
        await wait_until(lambda: len(b.assignment) == 4, 30, "b took over")
        try:
            await wait_until(lambda: pa.core.n_clustered_ + pb.core.n_clustered_ + pa.n_pending == n
                             and pb.n_pending == 0, 60, "all absorbed")
        except TimeoutError:
            raise AssertionError((pa.core.n_clustered_, pa.n_pending, pb.core.n_clustered_, pb.n_pending,
                                  a.offsets, b.offsets, a.n_batches, b.n_batches)) from None
        await b.shutdown(20)
        await tb
        return a, b, mid, await committed_offsets(broker, group, topic)

    a, b, mid, committed = asyncio.run(scenario())
    pa, pb = a.pipelines["vectors"], b.pipelines["vectors"]
    na = pa.core.n_clustered_ + pa.n_pending  # a's queued rows are in its final checkpoint
    nb = pb.core.n_clustered_
    assert mid < n  # the rebalance really happened with a backlog left
    assert na + nb == n and na > 0 and nb > 0
    if pa.model.is_initialized_:
        assert pa.model.counts_.sum() == pytest.approx(pa.core.n_clustered_)
    assert pb.model.counts_.sum() == pytest.approx(nb)
    assert committed == {p: n // 4 for p in range(4)}
    assert a.metrics.registry.get_sample_value("streamkm_rebalances_total") >= 2


def test_pipeline_failure_is_not_checkpointed_and_restart_replays(broker, make_topic, tmp_path):
    """A model update that blows up half way must not reach a checkpoint: the worker stops
    with the error, and a restart replays from the last good checkpoint (no double count)."""
    from streamkm.pipeline import build_pipelines

    topic = make_topic("in")
    group = unique_name("g")
    X = np.random.default_rng(9).normal(size=(300, 2)).astype(np.float32)
    cfg = worker_config(broker, tmp_path / "ckpt", group=group, vectors_topic=topic, max_records=30,
                        checkpoint={"interval_records": 60})
    settings = load_config(cfg, tmp_path / "w.toml")

    pipes = build_pipelines(settings)
    pipe = pipes["vectors"]
    real = pipe.process
    calls = [0]

    def flaky(records):
        calls[0] += 1
        res = real(records)  # the model is updated ...
        if calls[0] == 6:
            raise RuntimeError("boom after the update")  # ... but the batch fails
        return res

    pipe.process = flaky

    async def scenario():
        await produce(broker, topic, [(None, encode_binary(x[None])) for x in X], partition=0)
        bad = Worker(settings, pipelines=pipes)
        with pytest.raises(RuntimeError, match="boom"):
            await bad.run()
        state, _ = CheckpointStore(tmp_path / "ckpt").load_latest()
        saved = parse_offsets(state["offsets"])
        good = Worker(settings)
        task = asyncio.create_task(good.run())
        p = good.pipelines["vectors"]
        await wait_until(lambda: p.core.n_clustered_ == 300 and p.n_pending == 0
                         and good.offsets and list(good.offsets.values())[0] == 300, 30, "replayed")
        await good.shutdown(20)
        await task
        return saved, p

    saved, p = asyncio.run(scenario())
    assert list(saved.values())[0] <= 5 * 30  # nothing from the failed batch was saved
    assert p.model.counts_.sum() == pytest.approx(300)
    ref = StreamingKMeans(**settings.model.estimator_kwargs())
    ref_n = [max(30, ref.init_threshold)] + [30] * 20
    i = 0
    for n in ref_n:
        if i >= 300:
            break
        ref.partial_fit(X[i:i + n])
        i += n
    np.testing.assert_allclose(p.model.cluster_centers_, ref.cluster_centers_, atol=1e-6)


def test_checkpoint_dir_locked_and_foreign_checkpoint_refused(tmp_path):
    cfg = worker_config("127.0.0.1:9", tmp_path / "ckpt", group="g", vectors_topic="in", n_clusters=3)
    s3 = load_config(cfg, tmp_path / "a.toml")

    async def scenario():
        w = Worker(s3)
        await w.start()
        with pytest.raises(RuntimeError, match="in use by another worker"):
            await Worker(s3).start()  # one worker per checkpoint directory
        await w.stop()  # no broker: writes a checkpoint, releases the directory
        cfg["model"]["n_clusters"] = 5
        w5 = Worker(load_config(cfg, tmp_path / "b.toml"))
        with pytest.raises(ValueError, match=r"checkpoint 1 in .* does not match the configuration"):
            await w5.start()
        # a refused start releases the directory: the original configuration starts again
        w3 = Worker(s3)
        await w3.start()
        await w3.stop()

    asyncio.run(scenario())


def test_drift_detected_counted_logged_and_reseeded(broker, make_topic, tmp_path, caplog):
    import logging

    topic = make_topic("in")
    rng = np.random.default_rng(11)
    X = np.r_[rng.normal(size=(1500, 2)), rng.normal(size=(1500, 2)) * 8 + 30].astype(np.float32)
    cfg = worker_config(broker, tmp_path / "ckpt", group=unique_name("g"), vectors_topic=topic,
                        max_records=50, drift={"method": "page_hinkley", "reseed_on_drift": True})
    settings = load_config(cfg, tmp_path / "w.toml")

    async def scenario():
        await produce(broker, topic, [(None, encode_binary(x[None])) for x in X], partition=0)
        metrics = Metrics()
        worker = Worker(settings, metrics=metrics)
        task = asyncio.create_task(worker.run())
        pipe = worker.pipelines["vectors"]
        await wait_until(lambda: pipe.core.n_clustered_ == len(X), 30, "all clustered")
        await worker.shutdown(20)
        await task
        return metrics, pipe

    with caplog.at_level(logging.INFO, logger="streamkm.worker"):
        metrics, pipe = asyncio.run(scenario())
    n_drift = pipe.core.n_drift_
    assert n_drift >= 1
    get = metrics.registry.get_sample_value
    assert get("streamkm_drift_detections_total", {"pipeline": "vectors"}) == n_drift
    m = pipe.model
    assert get("streamkm_reseeds_accepted_total", {"pipeline": "vectors"}) == m.n_reseeds_
    assert get("streamkm_reseeds_rejected_total", {"pipeline": "vectors"}) == m.n_reseeds_rejected_
    assert m.n_reseeds_ + m.n_reseeds_rejected_ >= n_drift  # a reseed was attempted per drift
    drift_logs = [r for r in caplog.records if getattr(r, "event", None) == "drift"]
    assert len(drift_logs) == n_drift and "drift detected in vectors" in drift_logs[0].getMessage()


def test_bad_record_too_large_for_the_dlq_producer_does_not_stall_the_worker(broker, make_topic, tmp_path):
    # A consumer can fetch a record larger than the producer's max_request_size (1 MiB by
    # default); dead-lettering it verbatim can never succeed, so the worker must not retry
    # it forever: it dead-letters key + headers + provenance without the value.
    topic, dlq = make_topic("in"), make_topic("dlq")
    group = unique_name("g")
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 4)).astype(np.float32)
    huge = b"{" + b"x" * (3 * 2**19)  # 1.5 MiB, not JSON
    records = [(f"k{i}".encode(), encode_json(x)) for i, x in enumerate(X[:20])]
    records.append((b"huge", huge, [("trace", b"t-huge")]))
    records += [(f"k{i}".encode(), encode_json(x)) for i, x in enumerate(X[20:], 20)]
    cfg = worker_config(broker, tmp_path / "ckpt", group=group, vectors_topic=topic, dlq=dlq,
                        max_records=64, input={"dimension": 4})
    settings = load_config(cfg, tmp_path / "w.toml")

    async def scenario():
        await produce(broker, topic, records, partition=0, max_request_size=4 * 2**20)
        metrics = Metrics()
        worker = Worker(settings, metrics=metrics)
        task = asyncio.create_task(worker.run())
        pipe = worker.pipelines["vectors"]
        try:
            await wait_until(lambda: pipe.core.n_clustered_ == len(X), 30, "all vectors clustered")
            await wait_until(lambda: worker.n_checkpoints >= 1, 10, "checkpoint")
        finally:
            await worker.shutdown(20)
            await task
        dead = await consume_all(broker, dlq, expected=1, idle=0.5)
        commits = await committed_offsets(broker, group, topic)
        return worker, dead, commits

    worker, dead, commits = asyncio.run(scenario())
    assert len(dead) == 1
    rec = dead[0]
    headers = dict(rec.headers)
    assert rec.key == b"huge" and rec.value is None
    assert headers["trace"] == b"t-huge"
    assert headers["__connect.errors.reason"] == b"not_json"
    assert headers["__connect.errors.offset"] == b"20"
    assert headers["streamkm.dlq.value-dropped-bytes"] == str(len(huge)).encode()
    assert commits[0] == len(records)
    assert worker.pipelines["vectors"].model.counts_.sum() == pytest.approx(len(X))


def test_sequence_batches_are_embedded_off_the_event_loop(broker, make_topic, tmp_path):
    # A small batch of events can close many windows at once (a watermark jump closes
    # every open session): LSTM embedding must never run on the event loop, which would
    # stall heartbeats. The real pipeline is wrapped only to see which thread runs it.
    import threading

    from streamkm.codec import encode_event_json
    from streamkm.sequence.lstm import LSTMEncoder

    LSTMEncoder(3, 8, seed=0).save(tmp_path / "lstm.npz")
    topic = make_topic("ev")
    group = unique_name("g")
    rng = np.random.default_rng(5)
    records = [(f"u{i % 4}".encode(), encode_event_json(f"u{i % 4}", float(i), rng.normal(size=3)))
               for i in range(64)]
    cfg = worker_config(broker, tmp_path / "ckpt", group=group, events_topic=topic, max_records=16,
                        sequence={"enabled": True, "lstm_path": str(tmp_path / "lstm.npz"),
                                  "window_kind": "tumbling", "window_size": 4,
                                  "model": {"n_clusters": 2, "seed": 0}})
    settings = load_config(cfg, tmp_path / "w.toml")
    on_loop_thread = []

    async def scenario():
        await produce(broker, topic, records, partition=0)
        worker = Worker(settings)
        pipe = worker.pipelines["sequence"]
        real = pipe.process

        def process(recs):
            on_loop_thread.append(threading.current_thread() is threading.main_thread())
            return real(recs)

        pipe.process = process
        task = asyncio.create_task(worker.run())
        await wait_until(lambda: pipe.n_events_ == len(records), 30, "all events consumed")
        await worker.shutdown(20)
        await task
        return pipe

    pipe = asyncio.run(scenario())
    assert pipe.core.n_clustered_ + pipe.n_pending == len(records) // 4
    assert on_loop_thread and not any(on_loop_thread)


def test_not_ready_while_checkpoints_fail_and_nothing_is_committed(broker, make_topic, tmp_path):
    """A failing checkpoint disk: /readyz turns false, no offset is committed past the last
    durable checkpoint, and readiness and commits come back with the disk."""
    topic = make_topic("in")
    group = unique_name("g")
    cfg = worker_config(broker, tmp_path / "ckpt", group=group, vectors_topic=topic, max_records=20,
                        checkpoint={"interval_records": 40},
                        worker={"retry_backoff_initial_seconds": 0.1, "retry_backoff_max_seconds": 0.5})
    settings = load_config(cfg, tmp_path / "w.toml")
    X = np.random.default_rng(1).normal(size=(200, 2)).astype(np.float32)

    async def scenario():
        await produce(broker, topic, [(None, encode_binary(x[None])) for x in X[:100]], partition=0)
        worker = Worker(settings)
        real_save = worker.store.save
        task = asyncio.create_task(worker.run())
        pipe = worker.pipelines["vectors"]
        await wait_until(lambda: pipe.core.n_clustered_ + pipe.n_pending == 100 and worker.is_ready(), 30, "ready")
        await wait_until(lambda: not worker.durability.dirty, 30, "first 100 checkpointed")
        durable = await committed_offsets(broker, group, topic)

        def failing(state):
            raise OSError(28, "No space left on device")

        worker.store.save = failing
        await produce(broker, topic, [(None, encode_binary(x[None])) for x in X[100:]], partition=0)
        await wait_until(lambda: worker.durability.blocked and not worker.is_ready(), 30, "not ready")
        await asyncio.sleep(1.0)
        blocked_commit = await committed_offsets(broker, group, topic)
        attempts = worker.durability.n_failed_attempts
        worker.store.save = real_save
        await wait_until(lambda: worker.is_ready() and not worker.durability.blocked, 30, "ready again")
        ok = await worker.shutdown(20)
        await task
        return durable, blocked_commit, attempts, ok, worker.metrics

    durable, blocked_commit, attempts, ok, metrics = asyncio.run(scenario())
    assert durable == {0: 100} and blocked_commit == {0: 100}  # nothing committed while failing
    assert attempts >= 2 and ok
    assert metrics.registry.get_sample_value("streamkm_checkpoint_failures_total") == attempts
    assert asyncio.run(committed_offsets(broker, group, topic)) == {0: 200}


def test_the_per_worker_model_refuses_group_settings():
    """The group model is the default: a per-worker Worker built from those settings would run a
    model of its own partitions under a configuration that promises one per group."""
    from streamkm.config import load_settings

    env = {"STREAMKM_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9", "STREAMKM_METRICS__ENABLED": "false"}
    with pytest.raises(ValueError, match="group.enabled is true"):
        Worker(load_settings(env=env))
    assert Worker(load_settings(env={**env, "STREAMKM_GROUP__ENABLED": "false"})).bootstrap_servers == "127.0.0.1:9"

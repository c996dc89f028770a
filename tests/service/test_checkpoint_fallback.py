"""Unreadable checkpoints never lose records silently (issue 9, part 2), on the real broker.

A worker (a ``streamkm run`` process) absorbs a stream, checkpointing every 200 records,
and commits its end. Then its newest checkpoint (or every manifest) is truncated, more
records arrive and it restarts. It must fall back to the older checkpoint (or to nothing)
*and* re-read from that checkpoint's offsets (or the log start), not from the committed
offset: the final model holds every record once and equals the uninterrupted model. With
``checkpoint.on_fallback = "committed"`` the documented loss is what happens instead.
"""

from __future__ import annotations

import asyncio
import signal
import time

import numpy as np
import pytest

from streamkm.checkpoint import CheckpointStore
from streamkm.cluster.streaming_kmeans import StreamingKMeans
from streamkm.codec import encode_json
from streamkm.service.offsets import parse_offsets
from tests.helpers.data import blobs
from tests.helpers.e2e import committed_offsets, load_config, offline, produce, unique_name, wait_until, worker_config
from tests.helpers.processes import WorkerProcess

pytestmark = pytest.mark.broker

N1, N2 = 1_000, 500
BATCH = 50


def _model(ckpt, kw) -> tuple[StreamingKMeans, int]:
    state, _ = CheckpointStore(ckpt).load_latest()
    m = StreamingKMeans(**kw)
    m.load_state_dict(state["pipelines"]["vectors"]["model"])
    return m, next(iter(parse_offsets(state["offsets"]).values()))


def _run_until_committed(cfg_path, log, broker, group, topic, n) -> str:
    with WorkerProcess(cfg_path, log) as w:
        async def done():
            return (await committed_offsets(broker, group, topic)).get(0) == n

        try:
            asyncio.run(wait_until(done, 60, f"the worker commits offset {n}", interval=0.3))
        except TimeoutError:
            raise AssertionError(w.tail()) from None
        w.proc.send_signal(signal.SIGTERM)
        assert w.wait(30) == 0, w.tail()
        return log.read_text()


@pytest.mark.faults
@pytest.mark.parametrize("corrupt, policy, restart_first", [
    ("newest", "reread", False), ("every manifest", "reread", False), ("newest", "committed", False),
    ("newest", "reread", True), ("every manifest", "reread", True)])
def test_a_fallback_rereads_what_the_restored_model_lacks(broker, make_topic, tmp_path, corrupt, policy,
                                                          restart_first):
    """*restart_first*: the worker that falls back first runs against a broker that is down and is
    stopped before any partition is assigned; its shutdown checkpoint must keep the re-read."""
    topic, group = make_topic("in"), unique_name("g")
    X = blobs(N1 + N2, d=4, k=3, center_scale=6.0, seed=4)
    records = [(f"k{i}".encode(), encode_json(x)) for i, x in enumerate(X)]
    ckpt = tmp_path / "ckpt"
    cfg = worker_config(broker, ckpt, group=group, vectors_topic=topic, n_clusters=3, max_records=BATCH,
                        checkpoint={"interval_records": 200, "keep": 10, "on_fallback": policy})
    settings = load_config(cfg, tmp_path / "w.toml")
    kw = settings.model.estimator_kwargs()

    asyncio.run(produce(broker, topic, records[:N1], partition=0))
    _run_until_committed(tmp_path / "w.toml", tmp_path / "run1.log", broker, group, topic, N1)
    store = CheckpointStore(ckpt)
    infos = sorted(store.list(), key=lambda i: i.sequence)
    assert len(infos) >= 3
    if corrupt == "newest":
        # the newest checkpoints (the caught-up one and the shutdown one hold the end) are torn
        while True:
            state, info = CheckpointStore(ckpt).load_latest()
            restored_at = next(iter(parse_offsets(state["offsets"]).values()))
            if restored_at < N1:
                break
            info.data_path.write_bytes(info.data_path.read_bytes()[:-200])
        assert 0 < restored_at < N1, "the older checkpoint lacks the newest records"
    else:
        for i in infos:
            i.manifest_path.write_bytes(i.manifest_path.read_bytes()[:20])
        assert CheckpointStore(ckpt).load_latest() is None
        restored_at = 0

    asyncio.run(produce(broker, topic, records[N1:], partition=0))
    if restart_first:
        from tests.helpers.tls import free_port

        down = load_config({**cfg, "kafka": {**cfg["kafka"], "bootstrap_servers": f"127.0.0.1:{free_port()}"}},
                           tmp_path / "down.toml")
        assert down.checkpoint.on_fallback == policy
        with WorkerProcess(tmp_path / "down.toml", tmp_path / "down.log") as w:
            deadline = time.monotonic() + 30
            while "broker unreachable" not in (tmp_path / "down.log").read_text():
                assert w.alive() and time.monotonic() < deadline, w.tail()
                time.sleep(0.2)
            w.proc.send_signal(signal.SIGTERM)
            assert w.wait(30) == 0, w.tail()
        state, _ = CheckpointStore(ckpt).load_latest()
        assert "reread_pending" in state, "the shutdown checkpoint keeps the pending re-read"
    text = _run_until_committed(tmp_path / "w.toml", tmp_path / "run2.log", broker, group, topic, N1 + N2)
    model, end = _model(ckpt, kw)
    assert end == N1 + N2
    if policy == "reread":
        if not restart_first:
            assert "unreadable" in text, text[-3000:]
        assert f"re-reading {restored_at}..{N1 - 1}" in text, text[-3000:]
        assert model.counts_.sum() == N1 + N2, "every record once"
        ref = offline(X, kw, BATCH)
        np.testing.assert_allclose(model.cluster_centers_, ref.cluster_centers_, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(model.counts_, ref.counts_)
    else:  # the documented alternative: resume at the committed offset, the records between are left out
        assert model.counts_.sum() == restored_at + N2

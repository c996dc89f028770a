"""A checkpoint whose offsets lie beyond the topic's end (the daemon restarted against a new
broker or a recreated topic): the worker warns at start-up, naming the partition, the
checkpoint offset and the log end, and exports how far beyond the end it is.

End to end: a real worker against the real embedded broker, a fresh topic, a checkpoint
written by a worker in the checkpoint layout.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
from aiokafka import TopicPartition

from streamkm.codec import encode_binary
from streamkm.ops.metrics import Metrics
from streamkm.service.worker import Worker
from tests.helpers.e2e import load_config, produce, unique_name, wait_until, worker_config

pytestmark = pytest.mark.broker

BEYOND = "streamkm_checkpoint_offset_beyond_end_records"
LAG = "streamkm_consumer_lag_records"


def test_checkpoint_offsets_beyond_the_log_end_warn_and_are_exported(broker, make_topic, tmp_path, caplog):
    topic = make_topic("fresh", partitions=2)
    group = unique_name("g")
    ckpt = tmp_path / "ckpt"
    cfg = worker_config(broker, ckpt, group=group, vectors_topic=topic, input={"dimension": 4})
    settings = load_config(cfg, tmp_path / "w.toml")
    n = 20  # records per partition in the fresh topic
    # p0: the checkpoint says 500, far beyond the fresh log's end (20); p1: 5, within it
    stored = {0: 500, 1: 5}

    async def scenario():
        # The checkpoint of an earlier life: a worker (no broker) whose offsets book says
        # where each partition resumes; its final checkpoint stores them.
        old = Worker(settings, metrics=Metrics())
        await old.start()
        old.book.next = {TopicPartition(topic, p): off for p, off in stored.items()}
        await old.stop()
        assert old.final_checkpoint_ok
        X = np.random.default_rng(0).normal(size=(2 * n, 4)).astype(np.float32)
        for p in (0, 1):
            await produce(broker, topic, [(None, encode_binary(x[None])) for x in X[p * n:(p + 1) * n]],
                          partition=p)
        metrics = Metrics()
        worker = Worker(settings, metrics=metrics)
        task = asyncio.create_task(worker.run())
        sample = metrics.registry.get_sample_value

        def labels(p):
            return {"consumergroup": group, "topic": topic, "partition": str(p)}

        try:
            await wait_until(lambda: sample(BEYOND, labels(0)) is not None and sample(BEYOND, labels(1)) is not None
                             and sample(LAG, labels(1)) == 0, 30, "both partitions reported")
            await wait_until(lambda: any(getattr(r, "event", None) == "offset_beyond_end" for r in caplog.records),
                             10, "the warning")
            got = {p: (sample(BEYOND, labels(p)), sample(LAG, labels(p))) for p in (0, 1)}
            consumed = sample("streamkm_records_consumed_total", {"pipeline": "vectors", "topic": topic})
        finally:
            await worker.shutdown(20)
            await task
        return got, consumed

    with caplog.at_level(logging.INFO, logger="streamkm.worker"):
        got, consumed = asyncio.run(scenario())
    # p0 resumes 480 records beyond its end (and shows no lag); p1 is fine and consumed its 15 records
    assert got[0] == (500 - n, 0)
    assert got[1] == (0, 0)
    assert consumed == n - stored[1]
    warnings = [r for r in caplog.records if getattr(r, "event", None) == "offset_beyond_end"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    w = warnings[0]
    assert w.levelno == logging.WARNING
    assert (w.topic, w.partition, w.offset, w.log_end, w.source) == (topic, 0, 500, n, "checkpoint")
    msg = w.getMessage()
    assert f"{topic}:0" in msg and "checkpoint offset 500" in msg and "log end 20" in msg

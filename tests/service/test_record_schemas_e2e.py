"""The record schemas against what a daemon really writes to the embedded broker: output records
(JSON and binary, per-worker and group model), model-topic records and the model export."""

from __future__ import annotations

import asyncio
import collections
import json
import struct
import zlib

import jsonschema
import numpy as np
import pytest

from streamkm.codec import encode_binary, encode_json
from streamkm.group import ModelVersion, WireError
from streamkm.group.export import export_version
from streamkm.pipeline.output import decode_output
from streamkm.schemas import load_schema
from streamkm.service.group import GroupWorker
from streamkm.service.worker import Worker
from tests.helpers.data import blobs
from tests.helpers.e2e import consume_all, load_config, produce, unique_name, wait_until, worker_config

pytestmark = pytest.mark.broker

N = 400
D = 4


def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema(name))


def records(seed: int = 0):
    """One-row JSON and binary records and some 5-row binary records; (records, valid rows)."""
    X = blobs(N, d=D, seed=seed)
    out, i = [], 0
    while i < N:
        if i % 23 == 9 and i + 5 <= N:
            out.append((f"m{i}".encode(), encode_binary(X[i:i + 5])))
            i += 5
        else:
            out.append((f"k{i}".encode(), encode_binary(X[i:i + 1]) if i % 2 else encode_json(X[i])))
            i += 1
        if i % 97 == 0:
            out.append((b"bad", b"{not json"))  # dead-lettered, no output
    return out


def rows_covered(vals: list[dict]) -> collections.Counter:
    """(partition, offset, row) -> how many outputs assign it."""
    got: collections.Counter = collections.Counter()
    for v in vals:
        for j in range(len(v["clusters"]) if "clusters" in v else 1):
            got[(v["partition"], v["offset"], v.get("row", 0) + j)] += 1
    return got


def run_worker(broker: str, topic: str, out: str, tmp_path, fmt: str) -> list:
    cfg = worker_config(broker, tmp_path / f"ckpt-{fmt}", group=unique_name("g"), vectors_topic=topic, output=out,
                        n_clusters=3, max_records=64, input={"dimension": D})
    cfg["output"]["format"] = fmt
    settings = load_config(cfg, tmp_path / f"{fmt}.toml")

    async def scenario():
        worker = Worker(settings)
        task = asyncio.create_task(worker.run())
        pipe = worker.pipelines["vectors"]
        await wait_until(lambda: pipe.core.n_clustered_ == N and worker.n_checkpoints >= 1, 60, "all rows clustered")
        assert await worker.shutdown(20)
        await task
        return await consume_all(broker, out, timeout=30)

    return asyncio.run(scenario())


def test_per_worker_outputs_on_the_broker_match_the_schema_in_json_and_binary(broker, make_topic, tmp_path):
    topic, out_json, out_bin = make_topic("in"), make_topic("out"), make_topic("out")
    recs = records()
    asyncio.run(produce(broker, topic, recs, partition=0))
    val = validator("output")

    js = run_worker(broker, topic, out_json, tmp_path, "json")
    vals = [json.loads(r.value) for r in js]
    for v in vals:
        val.validate(v)
        assert v["topic"] == topic
    assert any("clusters" in v for v in vals) and any("cluster" in v for v in vals)
    by_offset = {i: k for i, (k, _) in enumerate(recs)}
    assert all(r.key == by_offset[v["offset"]] for r, v in zip(js, vals, strict=True))
    covered = rows_covered(vals)
    assert len(covered) == N and set(covered.values()) == {1}, "every row assigned once"

    # the same records through a second daemon writing binary: the same assignments, byte for byte
    bn = run_worker(broker, topic, out_bin, tmp_path, "binary")
    assert all(r.value[:4] == b"SKMV" for r in bn)
    decoded = [decode_output(r.value) for r in bn]
    for v in decoded:
        val.validate({**v, "topic": topic})
    assert sorted(json.dumps({**v, "topic": topic}, sort_keys=True) for v in decoded) == \
        sorted(json.dumps(v, sort_keys=True) for v in vals)


HEAD = struct.Struct("<4sBII")
# Group model: the last partial chunks are cut after idle_partition_seconds / 2 without records
# (15 s by default) and the last round may wait for an idle declaration; the schemas do not care when.
IDLE = 2.0


def test_group_model_outputs_model_topic_and_export_match_the_schemas(broker, make_topic, tmp_path):
    topic, out = make_topic("in", 2), make_topic("out")
    cfg = worker_config(broker, tmp_path / "unused", group=unique_name("g"), vectors_topic=topic, output=out,
                        n_clusters=3, max_records=64, input={"dimension": D}, drift={"enabled": False})
    cfg["group"] = {"enabled": True, "chunk_rows": 50, "publish_interval_seconds": 0.05, "snapshot_every": 3,
                    "sync_timeout_seconds": 10.0, "idle_partition_seconds": IDLE}
    settings = load_config(cfg, tmp_path / "g.toml")
    recs = records(seed=1)
    for p in (0, 1):
        asyncio.run(produce(broker, topic, recs[p::2], partition=p))

    async def scenario():
        worker = GroupWorker(settings, bootstrap_servers=broker)
        task = asyncio.create_task(worker.run())

        def folded() -> bool:
            if task.done():
                task.result()
                raise AssertionError("the worker stopped")
            v = worker.version
            return v is not None and v.n_seen == N

        try:
            await wait_until(folded, 60, "every row folded")
        finally:
            await worker.stop()
            await asyncio.wait_for(task, 30)
        return await asyncio.gather(consume_all(broker, out, timeout=30),
                                    consume_all(broker, settings.group_model_topic, timeout=30))

    out_recs, model_recs = asyncio.run(scenario())
    val = validator("output")
    vals = [json.loads(r.value) for r in out_recs]
    for v in vals:
        val.validate(v)
    assert {v["model_version"] for v in vals} - {0}, "outputs assigned against a published version"
    assert len(rows_covered(vals)) == N, "every row has an output (at least once)"

    model_val = validator("model-topic")
    kinds = set()
    latest = None
    for r in model_recs:
        magic, version, hlen, crc = HEAD.unpack_from(r.value)
        assert (magic, version) == (b"SKMG", 1) and zlib.crc32(r.value[HEAD.size:]) == crc
        header = json.loads(r.value[HEAD.size:HEAD.size + hlen])
        model_val.validate(header)
        kinds.add((r.key, header["kind"]))
        if header["kind"] == "model_version":
            v = ModelVersion.from_bytes(r.value)
            assert not isinstance(v, WireError), v
            if latest is None or v.version >= latest.version:
                latest = v
    assert kinds == {(b"vectors", "model_version"), (b"vectors#snapshot", "reducer_snapshot")}
    assert latest is not None and latest.n_seen == N
    # every output cluster is a stable id of some version (ids are never reused)
    assert {c for v in vals if v["model_version"] > 0 for c in v.get("clusters", [v.get("cluster")])} \
        <= set(range(latest.next_id))

    _, meta = export_version(latest, tmp_path / "model")
    validator("model-export").validate(json.loads(meta.read_text()))
    np.testing.assert_array_equal(np.load(tmp_path / "model.npz")["ids"], latest.ids)


def test_group_model_writes_binary_outputs_when_configured(broker, make_topic, tmp_path):
    # Needs GroupWorker to pass output_format=settings.output.format to its VectorPipeline.
    topic, out = make_topic("in", 2), make_topic("out")
    cfg = worker_config(broker, tmp_path / "unused", group=unique_name("g"), vectors_topic=topic, output=out,
                        n_clusters=3, max_records=64, input={"dimension": D}, drift={"enabled": False})
    cfg["group"] = {"enabled": True, "chunk_rows": 50, "idle_partition_seconds": IDLE}
    cfg["output"]["format"] = "binary"
    settings = load_config(cfg, tmp_path / "g.toml")
    recs = records(seed=2)
    for p in (0, 1):
        asyncio.run(produce(broker, topic, recs[p::2], partition=p))

    async def scenario():
        worker = GroupWorker(settings, bootstrap_servers=broker)
        task = asyncio.create_task(worker.run())
        try:
            await wait_until(lambda: worker.version is not None and worker.version.n_seen == N, 60, "every row folded")
        finally:
            await worker.stop()
            await asyncio.wait_for(task, 30)
        return await consume_all(broker, out, timeout=30)

    outs = asyncio.run(scenario())
    assert outs and all(r.value[:4] == b"SKMV" for r in outs), "output.format = binary ignored by the group worker"
    val = validator("output")
    vals = [decode_output(r.value) for r in outs]
    for v in vals:
        val.validate({**v, "topic": topic})
    assert len(rows_covered(vals)) == N

"""The group model end to end: real worker processes on the embedded broker, killed, joined and left.

Three `python -m streamkm run` processes (group.enabled) share six input partitions while a
producer trickles records in. During the run members are SIGKILLed at random moments (some at
the fault points between delivering outputs and sending statistics, and right after the
statistics), restarted, and an extra member joins and leaves. At the end, with decay 1:

- the total weight of the one group model equals the number of valid records exactly;
- ``group.ordering = "arrival"``: the final version equals an offline fold of the stats log,
  bit for bit, and an offline ``StreamingKMeans`` over the accepted chunks' records within 1e-5;
- ``group.ordering = "rounds"``: the final version equals ``streamkm replay``'s model of the
  input records, bit for bit, although members were killed, joined and left (no partition was
  idle long enough to be left out of a round);
- for each model version, every worker gave the records of one true cluster the same id.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer

from streamkm.cluster import StreamingKMeans
from streamkm.codec import decode_vectors
from streamkm.group import ChunkStats, WireError
from streamkm.loadgen.recording import Record, RecordingWriter
from streamkm.replay import RoundReplay, open_source
from streamkm.service.group import GroupWorker
from tests.helpers.e2e import consume_all, load_config, unique_name, worker_config
from tests.helpers.group import Member, latest_version, make_stream, trickle, wait_for_model, wait_for_stats_end
from tests.helpers.processes import term_all

pytestmark = pytest.mark.broker

K, D = 4, 4
N_VALID = 9_000
N_BAD = 90
PARTITIONS = 6


async def _reproduce_some_stats(bootstrap: str, topic: str, n: int, rnd: random.Random) -> int:
    recs = await consume_all(bootstrap, topic, timeout=30)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        for rec in rnd.sample(recs, n):
            await producer.send_and_wait(topic, rec.value, key=rec.key, partition=rec.partition)
    finally:
        await producer.stop()
    return n


@pytest.mark.faults
@pytest.mark.parametrize("ordering", ["arrival", "rounds"])
def test_group_model_survives_kills_joins_and_leaves(broker, make_topic, tmp_path, ordering):
    topic, out = make_topic("in", PARTITIONS), make_topic("out")
    group = unique_name("g")
    cfg = worker_config(broker, tmp_path / "unused", group=group, vectors_topic=topic, output=out,
                        n_clusters=K, max_records=200,
                        model={"decay": 1.0, "dying_threshold": 0.0},
                        drift={"enabled": False})
    cfg["group"] = {"enabled": True, "chunk_rows": 100, "max_in_flight": 4, "sync_timeout_seconds": 10.0,
                    "ordering": ordering, "idle_partition_seconds": 15.0}
    cfg["input"]["dimension"] = D
    settings = load_config(cfg, tmp_path / "w.toml")
    config = tmp_path / "w.toml"
    records, truth = make_stream(N_VALID, N_BAD)
    rnd = random.Random(8)
    members: list[Member] = []
    extra: Member | None = None
    kills = joins = 0
    n_log = 0

    faulty: set[int] = set()  # ids of members that carry a kill point they may not have reached yet

    def spawn(fault: str | None = None) -> Member:
        nonlocal n_log
        n_log += 1
        m = Member(config, tmp_path / f"m{n_log}.log", fault)
        if fault:
            faulty.add(id(m))
        return m

    async def chaos() -> None:
        nonlocal kills, joins, extra
        producer = asyncio.create_task(trickle(broker, topic, records, seconds=24.0))
        members.extend(spawn() for _ in range(3))
        await asyncio.sleep(6.0)  # the group forms, the model initializes
        t_end = time.monotonic() + 24.0
        while time.monotonic() < t_end or kills < 5:
            await asyncio.sleep(rnd.uniform(1.5, 3.0))
            action = rnd.random()
            if action < 0.65 or kills < 5 and time.monotonic() > t_end:
                i = rnd.randrange(len(members))
                members[i].kill()
                kills += 1
                await asyncio.sleep(rnd.uniform(0.2, 1.5))
                fault = rnd.choice([None, "after_outputs:3", "after_stats:2", None])
                members[i] = spawn(fault)
            elif extra is None:
                extra = spawn()
                joins += 1
            else:
                extra.term()
                extra = None
            for i, m in enumerate(members):  # a member that hit its fault point is restarted plainly
                if not m.alive():
                    m.kill()
                    kills += 1
                    members[i] = spawn()
        await producer
        if extra is not None:
            extra.term()

    try:
        asyncio.run(chaos())
        assert kills >= 5 and joins >= 1
        for i, m in enumerate(members):
            # Dead ones, and those whose kill point is still ahead (it would fire after the chaos).
            if not m.alive() or id(m) in faulty:
                m.kill()
                members[i] = spawn()

        # A zombie's late writes: copies of earlier statistics land in the log again.
        dups = asyncio.run(_reproduce_some_stats(broker, settings.group_stats_topic, 25, rnd))
        v = wait_for_model(broker, settings.group_model_topic, N_VALID)
        assert v is not None and v.n_seen == N_VALID, (
            f"model saw {None if v is None else v.n_seen} of {N_VALID} valid records; "
            + (tmp_path / "m1.log").read_text()[-3000:])
        # The re-produced copies are folded (and dropped) before the members stop: wait for a
        # version that has read the stats log to its end (a rebalance can delay the reducer).
        wait_for_stats_end(broker, settings)
        for m in members:  # one respawned just now may still be starting its interpreter
            m.wait_started()
        for m, code in zip(members, term_all(members), strict=True):
            assert code == 0, m.log.read_text()[-3000:]
        v = asyncio.run(latest_version(broker, settings.group_model_topic))
    finally:
        for m in members + ([extra] if extra is not None else []):
            m.kill()

    # 1. exactly once: the weight is the number of valid records
    assert v is not None
    assert float(v.weights.sum()) == N_VALID and v.n_seen == N_VALID
    inputs = asyncio.run(consume_all(broker, topic, timeout=30))
    ends = {}
    for r in inputs:
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    assert v.offsets == {f"{topic}:{p}": e for p, e in ends.items()}

    if ordering == "rounds":
        # 2'. the model is a function of the records: replay gives it, bit for bit
        # At the very end a partition without a partial chunk is declared idle; that changes no
        # order (replay's partition has ended there too). Earlier, it would: the logs say so.
        idle = [line for log in sorted(tmp_path.glob("m*.log")) for line in log.read_text().splitlines()
                if "rounds go on without" in line]
        assert v.counters["duplicate"] + v.counters["overlap"] >= dups == 25, v.counters
        assert v.counters["gap"] == 0 and v.counters["invalid"] == 0, v.counters
        rec_path = tmp_path / "in.skmrec"
        with RecordingWriter(rec_path, positions=True) as wr:
            for r in sorted(inputs, key=lambda r: (r.partition, r.offset)):
                wr.write(Record(r.key, r.value, r.timestamp, tuple(r.headers or ())), partition=r.partition,
                         offset=r.offset)
        replayed = RoundReplay(settings)
        replayed.run(open_source(str(rec_path), topic=topic))
        rv = replayed.model.version()
        np.testing.assert_array_equal(rv.centers, v.centers, err_msg=f"idle declarations: {idle}")
        np.testing.assert_array_equal(rv.weights, v.weights)
        np.testing.assert_array_equal(rv.ids, v.ids)
        assert rv.offsets == v.offsets
    else:
        _check_arrival_fold(broker, settings, v, inputs, dups)
    _check_outputs_and_exports(broker, out, config, records, truth, tmp_path, v)


def _check_arrival_fold(broker, settings, v, inputs, dups) -> None:
    # 2. the final version is the offline fold of the stats log, bit for bit
    stats = asyncio.run(consume_all(broker, settings.group_stats_topic, timeout=30))
    w = GroupWorker(settings, bootstrap_servers=broker)
    g = w.new_group_model("vectors")
    accepted: list[ChunkStats] = []
    for rec in stats:
        msg = ChunkStats.from_bytes(rec.value)
        assert not isinstance(msg, WireError), msg
        if g.fold(msg, rec.offset).status == "accepted":
            accepted.append(msg)
    assert g.counters_["duplicate"] + g.counters_["overlap"] >= dups == 25, g.counters_
    assert g.counters_["gap"] == 0 and g.counters_["invalid"] == 0, g.counters_
    assert g.version().same_model(v), (g.version(), v)

    # 3. ... and an offline StreamingKMeans over the accepted chunks' records, within 1e-5
    by_part: dict[int, dict[int, bytes]] = {}
    for r in inputs:
        by_part.setdefault(r.partition, {})[r.offset] = r.value
    ref = StreamingKMeans(**settings.model.estimator_kwargs())
    for msg in accepted:
        values = [by_part[msg.partition][o] for o in range(msg.first_offset, msg.end_offset)]
        X = decode_vectors(values, fmt="auto").X
        if X.shape[0]:
            ref.partial_fit(X)
    assert ref.n_seen_ == N_VALID
    np.testing.assert_allclose(ref.cluster_centers_, v.centers, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ref.counts_, v.weights)


def _check_outputs_and_exports(broker, out, config, records, truth, tmp_path, v) -> None:
    # 4. agreement: per version, one true cluster -> one id, whichever worker emitted it
    seen: dict[tuple[int, int], set[int]] = {}
    n_out = 0
    for r in asyncio.run(consume_all(broker, out, timeout=30)):
        o = json.loads(r.value)
        if o["cluster"] < 0:
            continue
        n_out += 1
        seen.setdefault((o["model_version"], truth[r.key]), set()).add(o["cluster"])
    assert n_out >= N_VALID - 2_000  # outputs are at least once once the model exists
    assert all(len(ids) == 1 for ids in seen.values()), {k: s for k, s in seen.items() if len(s) > 1}

    # 5. `streamkm model export` writes the final version; its loader predicts the ids the daemon emitted
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}
    run = subprocess.run([sys.executable, "-m", "streamkm", "model", "export", "--config", str(config),
                          "--out", str(tmp_path / "model")], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    show = subprocess.run([sys.executable, "-m", "streamkm", "model", "show", "--config", str(config)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert show.returncode == 0 and f"version {v.version}" in show.stdout, show.stdout + show.stderr
    from streamkm.group.export import load_model

    exported = load_model(tmp_path / "model")
    np.testing.assert_array_equal(exported.cluster_centers_, v.centers)
    np.testing.assert_array_equal(exported.cluster_ids_, v.ids)
    assert exported.model_version_ == v.version
    X = np.stack([np.asarray(json.loads(val)["x"], dtype=np.float32) for key, val in records if key in truth])
    labels = np.array([truth[key] for key, _ in records if key in truth])
    predicted = exported.predict(X)
    for (_, lab), ids in seen.items():
        assert set(predicted[labels == lab].tolist()) == ids

    # 6. the last reducer's handover snapshot, saved to a file, exports the same model offline
    snap = tmp_path / "reducer.snapshot"
    run = subprocess.run([sys.executable, "-m", "streamkm", "model", "snapshot", "--config", str(config),
                          "--out", str(snap)], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and snap.stat().st_size > 0, run.stderr
    run = subprocess.run([sys.executable, "-m", "streamkm", "model", "export", "--config", str(config),
                          "--snapshot", str(snap), "--out", str(tmp_path / "from-snapshot")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    offline = load_model(tmp_path / "from-snapshot")
    np.testing.assert_array_equal(offline.cluster_centers_, v.centers)
    np.testing.assert_array_equal(offline.cluster_ids_, v.ids)
    assert offline.model_version_ == v.version

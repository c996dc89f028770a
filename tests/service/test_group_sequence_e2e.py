"""The sequence pipeline on the group model: open windows move with their partition.

Real broker, real ``streamkm run`` processes. Events of 20 keys go to 4 partitions while the
group changes under them: a third member joins (partitions move from live owners) and one
member is SIGKILLed (its partitions move from the model's state alone). Every window's events
may span a move. At the end:

- the model's weight equals the number of windows one uninterrupted reader of each partition
  makes, exactly (nothing lost, nothing counted twice);
- the accepted chunks of every partition are that reader's chunks: same offsets, same windows
  (embeddings equal to float32 rounding: BLAS blocks a batch of windows by its shape);
- the published model is the offline fold, in rounds, of the stats log, bit for bit;
- partitions did start from restored windows, and none lost them;
- ``streamkm replay --pipeline sequence`` of a recording of the topic builds the same model
  (ids, weights, offsets, version; centres within 1e-5).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from streamkm.codec.events import encode_event_json
from streamkm.group import WireError, partition_key
from streamkm.group.export import load_model
from streamkm.group.messages import read_stats_log
from streamkm.group.rounds import RoundFold
from streamkm.sequence.lstm import LSTMEncoder
from streamkm.service.group import group_sequence_pipeline, new_group_model
from tests.helpers.e2e import consume_all, load_config, unique_name, worker_config
from tests.helpers.group import Member, latest_version, trickle
from tests.helpers.processes import term_all

pytestmark = pytest.mark.broker

PARTITIONS, N_EVENTS, N_BAD, F, KEYS = 4, 2_400, 24, 3, 20


def _events(seed: int = 5):
    """(key, value) pairs; record i goes to partition i mod PARTITIONS (trickle)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(N_EVENTS):
        key = f"user{int(rng.integers(KEYS))}"
        x = rng.normal(size=F) + (3.0 if key < "user1" else -3.0)
        out.append((key.encode(), encode_event_json(key, float(i), x)))
    for _ in range(N_BAD):
        out.insert(int(rng.integers(len(out))), (b"bad", b"{not an event"))
    return out


class _Rec:
    __slots__ = ("topic", "partition", "offset", "key", "value", "headers", "timestamp")

    def __init__(self, topic, partition, offset, value):
        self.topic, self.partition, self.offset, self.value = topic, partition, offset, value
        self.key, self.headers, self.timestamp = None, (), 0


def _offline_chunks(settings, topic, records):
    """Per partition, the chunks one uninterrupted reader cuts: {key: [(first, end, rows)]}."""
    chunker, pipe = group_sequence_pipeline(settings, member="offline", topic=topic, emit_outputs=False)
    out = {}
    for p in range(PARTITIONS):
        recs = [_Rec(topic, p, off, v) for off, (_, v) in enumerate(records[p::PARTITIONS])]
        chunker.reset(topic, p, 0)
        res = pipe.process(recs)
        chunker.advance(topic, p, len(recs))
        res.merge(pipe.flush_partition(topic, p))
        out[partition_key(topic, p)] = [(st.first_offset, st.end_offset, st.rows) for st in res.stats]
    return out


@pytest.mark.faults
def test_windows_move_with_their_partition_through_joins_and_kills(broker, make_topic, tmp_path):
    topic = make_topic("events", PARTITIONS)
    group = unique_name("gseq")
    LSTMEncoder(F, 8, seed=0).save(tmp_path / "lstm.npz")
    cfg = worker_config(broker, tmp_path / "unused", group=group, events_topic=topic, max_records=40,
                        drift={"enabled": False})
    cfg["sequence"] = {"enabled": True, "lstm_path": str(tmp_path / "lstm.npz"), "window_kind": "tumbling",
                       "window_size": 6, "model": {"n_clusters": 3, "seed": 0, "dying_threshold": 0.0}}
    cfg["group"] = {"enabled": True, "chunk_rows": 12, "ordering": "rounds", "idle_partition_seconds": 14.0}
    settings = load_config(cfg, tmp_path / "w.toml")
    records = _events()
    want = _offline_chunks(settings, topic, records)
    n_windows = sum(r.shape[0] for chunks in want.values() for _, _, r in chunks)
    assert n_windows > 300

    members = [Member(tmp_path / "w.toml", tmp_path / f"m{i}.log") for i in range(2)]
    try:
        time.sleep(4.0)  # the group forms

        async def produce_and_churn():
            feed = asyncio.create_task(trickle(broker, topic, records, seconds=12.0, slices=48,
                                               partitions=PARTITIONS))
            await asyncio.sleep(4.0)
            members.append(Member(tmp_path / "w.toml", tmp_path / "m2.log"))  # a join: live owners hand over
            await asyncio.sleep(4.0)
            members[0].kill()  # SIGKILL: its partitions resume from the model's state alone
            await feed

        asyncio.run(produce_and_churn())
        deadline = time.monotonic() + 90
        while (v := asyncio.run(latest_version(broker, settings.group_model_topic))) is None \
                or v.n_seen < n_windows:
            assert time.monotonic() < deadline, (v and v.n_seen, n_windows, [m.tail() for m in members[1:]])
            time.sleep(1.0)
        time.sleep(2.0)  # nothing more may arrive
        v = asyncio.run(latest_version(broker, settings.group_model_topic))
        for m, code in zip(members[1:], term_all(members[1:]), strict=True):
            assert code == 0, m.tail()
    finally:
        for m in members:
            m.kill()
    logs = "\n".join((tmp_path / f"m{i}.log").read_text() for i in range(3))
    assert v.n_seen == n_windows, (v.n_seen, n_windows)
    assert v.counters["gap"] == 0 and v.counters["invalid"] == 0, v.counters
    assert "cannot be restored" not in logs
    assert "starts at offset" in logs

    # The stats log: the accepted chunks of each partition are the uninterrupted reader's.
    model = new_group_model(settings, "sequence")
    fold = RoundFold(model)
    fold.expect(want)
    accepted: dict[str, list] = {k: [] for k in want}
    for rec in asyncio.run(consume_all(broker, settings.group_stats_topic, timeout=30)):
        if rec.partition != 1:  # the sequence pipeline's stats partition
            continue
        msg = read_stats_log(rec.value)  # chunks, and the idle markers of the stream's end
        assert not isinstance(msg, WireError), msg
        for o in fold.offer_bytes(rec.value, rec.offset):
            if o.status == "queued":
                accepted[o.msg.key].append(o.msg)
    fold.drain()
    for key, chunks in want.items():
        got = accepted[key]
        assert [(m.first_offset, m.end_offset) for m in got] == [(a, b) for a, b, _ in chunks], key
        for m, (_, _, rows) in zip(got, chunks, strict=True):
            np.testing.assert_allclose(m.rows, rows, rtol=0, atol=1e-6)
    # Partitions that started mid-stream, at a chunk's end, from the windows it left.
    restored_moves = len(re.findall(rf"{re.escape(topic)}:\d+ starts at offset [1-9]", logs))
    assert restored_moves >= 2, f"no partition changed hands mid-stream: the test saw no move\n{logs[-3000:]}"
    off = model.version()
    np.testing.assert_array_equal(off.centers, v.centers)
    np.testing.assert_array_equal(off.weights, v.weights)
    np.testing.assert_array_equal(off.ids, v.ids)
    assert off.offsets == v.offsets and off.n_seen == v.n_seen

    # streamkm replay of a recording of the events topic builds the same model: the same chunks,
    # weights and ids; centres to float32 rounding (the embeddings', not the fold's).
    env = {k: val for k, val in os.environ.items() if not k.startswith("STREAMKM_")}
    rec = subprocess.run([sys.executable, "-m", "streamkm", "record", "--bootstrap", broker, "--topic", topic,
                          "--out", str(tmp_path / "ev.skmrec")], env=env, capture_output=True, text=True,
                         timeout=60)
    assert rec.returncode == 0, rec.stderr
    rep = subprocess.run([sys.executable, "-m", "streamkm", "replay", str(tmp_path / "ev.skmrec"), "--config",
                          str(tmp_path / "w.toml"), "--out", str(tmp_path / "run"), "--pipeline", "sequence"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    replayed = load_model(tmp_path / "run" / "model")
    np.testing.assert_array_equal(replayed.cluster_ids_, v.ids)
    np.testing.assert_array_equal(replayed.weights_, v.weights)
    np.testing.assert_allclose(replayed.cluster_centers_, v.centers, rtol=0, atol=1e-5)
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["offsets"] == v.offsets and meta["model_version"] == v.version
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["pipeline"] == "sequence" and sum(run["dead_letters"].values()) == N_BAD

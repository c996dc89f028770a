"""Live equals replay: a group folding in rounds builds, bit for bit, the model ``streamkm replay`` builds.

Two ``streamkm run`` members (group.ordering = "rounds") share three partitions while a producer
trickles records into them (bad records mixed in). When the stream ends and every partial chunk
has been folded, the group's final version must equal the model replay computes from a recording
of the same topic: same centres, weights, ids and offsets, to the last bit.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from streamkm.group.export import load_model
from tests.helpers.e2e import load_config, unique_name, worker_config
from tests.helpers.group import Member, latest_version, make_stream, trickle
from tests.helpers.processes import term_all

pytestmark = pytest.mark.broker

K, D, N_VALID, N_BAD, PARTITIONS = 4, 4, 3_000, 30, 3


def test_a_live_group_folding_in_rounds_equals_its_replay(broker, make_topic, tmp_path):
    topic = make_topic("in", PARTITIONS)
    group = unique_name("g")
    cfg = worker_config(broker, tmp_path / "unused", group=group, vectors_topic=topic, n_clusters=K,
                        max_records=50, model={"decay": 0.9, "dying_threshold": 0.0}, drift={"enabled": False})
    cfg["group"] = {"enabled": True, "chunk_rows": 100, "ordering": "rounds", "idle_partition_seconds": 3.0}
    cfg["input"]["dimension"] = D
    settings = load_config(cfg, tmp_path / "w.toml")
    records, _ = make_stream(N_VALID, N_BAD, seed=3)
    members = [Member(tmp_path / "w.toml", tmp_path / f"m{i}.log") for i in range(2)]
    try:
        time.sleep(4.0)  # the group forms
        asyncio.run(trickle(broker, topic, records, seconds=8.0, slices=30, partitions=PARTITIONS))
        deadline = time.monotonic() + 60
        while (v := asyncio.run(latest_version(broker, settings.group_model_topic))) is None \
                or v.n_seen < N_VALID:
            assert time.monotonic() < deadline, (v and v.n_seen, members[0].tail(), members[1].tail())
            time.sleep(1.0)
        for m, code in zip(members, term_all(members), strict=True):
            assert code == 0, m.tail()
    finally:
        for m in members:
            m.kill()
    assert v.counters["gap"] == 0 and v.counters["invalid"] == 0, v.counters

    env = {k: val for k, val in os.environ.items() if not k.startswith("STREAMKM_")}
    cfg_path = str(tmp_path / "w.toml")
    rec = subprocess.run([sys.executable, "-m", "streamkm", "record", "--bootstrap", broker, "--topic", topic,
                          "--out", str(tmp_path / "in.skmrec")], env=env, capture_output=True, text=True, timeout=60)
    assert rec.returncode == 0, rec.stderr
    rep = subprocess.run([sys.executable, "-m", "streamkm", "replay", str(tmp_path / "in.skmrec"), "--config", cfg_path,
                          "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    replayed = load_model(tmp_path / "run" / "model")
    idle = [ln for i in range(2) for ln in (tmp_path / f"m{i}.log").read_text().splitlines()
            if "rounds go on without" in ln]
    np.testing.assert_array_equal(replayed.cluster_centers_, v.centers, err_msg=f"idle declarations: {idle}")
    np.testing.assert_array_equal(replayed.weights_, v.weights)
    np.testing.assert_array_equal(replayed.cluster_ids_, v.ids)
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["offsets"] == v.offsets and meta["model_version"] == v.version
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["valid_rows"] == N_VALID and sum(run["dead_letters"].values()) == N_BAD

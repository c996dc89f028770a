"""Stable cluster ids on the group model, through reseeds, on a real broker (in-process worker).

One ``GroupWorker`` (it is also the reducer) reads a 2-partition stream of JSON vectors in
two phases, the second produced only once the model has folded the first:

- phase 1: four well-separated blobs A, B, C, D;
- phase 2: A and B unchanged, C moved by 1.5 (well below the identity threshold 6),
  D gone, and a new blob E 13.5 beside C (in C's Voronoi cell, so C's centre first
  drifts toward E by streaming updates alone).

Interval reseeds (every 100 points, ``reseed_min_gain = 0``, so most are accepted and
every one re-matches all ids) recluster a time-biased reservoir with the model's
half-life (300 points). Once the reservoir has forgotten D, a reseed gives C and E a
centre each and drops D: D's id is *retired* (nothing within the threshold) and E gets a
fresh id (*born*, it is 9-10 from C's drifted centre), while C's id *moves* with it.
(In about 2 % of orders, found offline, the reservoir still holds enough of D that one
later reseed brings a centre back to D and the next drops it again: more born/retired,
same ids for A, B, C; the assertions allow that.)

Checked: A's and B's (and C's) ids in every published version; ids never reused; the
events topic names each change and equals, transition for transition, an offline fold of
the stats log; ``streamkm_cluster_transitions_total`` counts the events of each kind; the
output records carry ``model_version`` and ``cluster``, the id of the nearest centre of
that version, so every record of A carries A's id.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import numpy as np
import pytest

from streamkm.cluster import TRANSITIONS, summarize
from streamkm.codec import encode_json
from streamkm.group import ChunkStats, ModelVersion, WireError
from streamkm.group.messages import KIND_VERSION
from streamkm.group.wire import decode
from streamkm.service.group import GroupWorker
from tests.helpers.e2e import consume_all, load_config, produce, unique_name, wait_until, worker_config

pytestmark = pytest.mark.broker

K = 4
N1, N2 = 1_500, 3_000
SPREAD = 1.0
THRESHOLD = 6.0
TRUE = {"A": (0.0, 0.0), "B": (30.0, 0.0), "C": (0.0, 30.0), "D": (40.0, 25.0),
        "C2": (1.5, 30.0), "E": (-12.0, 30.0)}
PHASE1 = (("A", "B", "C", "D"), (0.25, 0.25, 0.25, 0.25))
PHASE2 = (("A", "B", "C2", "E"), (0.3, 0.3, 0.3, 0.1))

MODEL = {"n_clusters": K, "seed": 0, "half_life": 300.0, "time_unit": "points", "reservoir": "time_biased",
         "reservoir_size": 400, "reseed_interval": 100, "reseed_min_gain": 0.0, "dying_threshold": 0.0}
GROUP = {"enabled": True, "chunk_rows": 50, "sample_rows": 64, "max_in_flight": 4,
         "publish_interval_seconds": 0.05, "sync_timeout_seconds": 10.0, "identity_threshold": THRESHOLD,
         # Phases end on partial chunks: arrival order folds them at once, rounds once each partition
         # has been quiet for half of this.
         "idle_partition_seconds": 2.0}


def _refold(stats_recs: list[Any], g: Any, ordering: str, topic: str) -> list[tuple[int, Any]]:
    """The stats log folded offline as the reducer folds it: ``(offset, outcome)`` of every message
    decided (folded or refused), in fold order."""
    from streamkm.group.rounds import RoundFold

    out: list[tuple[int, Any]] = []
    stats_recs = sorted((r for r in stats_recs if r.partition == 0), key=lambda r: r.offset)  # vectors
    if ordering == "arrival":
        for rec in stats_recs:
            msg = ChunkStats.from_bytes(rec.value)
            assert not isinstance(msg, WireError), msg
            out.append((rec.offset, g.fold(msg, rec.offset)))
        return out
    rf = RoundFold(g)
    rf.expect([f"{topic}:0", f"{topic}:1"])
    for rec in stats_recs:
        out += [(o.offset, o.outcome) for o in rf.offer_bytes(rec.value, rec.offset) if o.status != "queued"]
    assert rf.queued == 0, "every chunk was folded live"
    return out


def make_phase(rng: np.random.Generator, phase: tuple, n: int, start: int) -> list[tuple[bytes, str, np.ndarray]]:
    """*n* points of the phase's blobs as ``(key, label, x)``; the key names the label."""
    names, weights = phase
    labels = rng.choice(len(names), size=n, p=weights)
    X = (np.asarray([TRUE[names[j]] for j in labels]) + rng.normal(scale=SPREAD, size=(n, 2))).astype(np.float32)
    label = {"C2": "C"}  # C moved: the same true cluster
    return [(f"{label.get(names[j], names[j])}-{start + i}".encode(), label.get(names[j], names[j]), X[i])
            for i, j in enumerate(labels.tolist())]


def nearest_ids(v: ModelVersion, names: tuple[str, ...]) -> tuple[list[int], list[float]]:
    """Id of the centre of *v* nearest each true centre, and its distance."""
    P = np.asarray([TRUE[n] for n in names])
    d = np.sqrt(((v.centers[None, :, :] - P[:, None, :]) ** 2).sum(-1))
    return [int(v.ids[j]) for j in d.argmin(1)], d.min(1).tolist()


def check_identity(versions: list[ModelVersion], events: list[dict[str, Any]], v1: ModelVersion) -> dict[str, int]:
    """The identity assertions over the published *versions* (in order), the transition *events*
    and *v1*, the version at the end of phase 1. Returns the ids of A, B, C, D, E."""
    assert v1.is_initialized and v1.ids.size == K
    (id_a, id_b, id_c, id_d), dist = nearest_ids(v1, ("A", "B", "C", "D"))
    assert max(dist) < 1.0 and len({id_a, id_b, id_c, id_d}) == K, (v1.centers, v1.ids)
    last = versions[-1]
    (id_a2, id_b2, id_c2, id_e), dist = nearest_ids(last, ("A", "B", "C2", "E"))
    assert max(dist) < 1.0, (last.centers, last.ids)
    assert (id_a2, id_b2, id_c2) == (id_a, id_b, id_c), "A, B keep their ids, C moved and keeps its id"
    assert id_e not in {id_a, id_b, id_c, id_d} and id_e >= K and id_d not in last.ids.tolist()

    # A's and B's ids in every version; C's too (the nearest centre to C, then to where it moved)
    for v in versions:
        if not v.is_initialized:
            continue
        assert v.ids.size == K and np.unique(v.ids).size == K
        ids, dist = nearest_ids(v, ("A", "B", "C"))
        assert ids == [id_a, id_b, id_c], f"version {v.version}: {ids} != {[id_a, id_b, id_c]}"
        assert max(dist[:2]) < THRESHOLD / 2, (v.version, v.centers)

    # ids are never reused: one that disappears never comes back, fresh ones exceed all earlier ones
    ever: set[int] = set()
    gone: set[int] = set()
    current: set[int] = set()
    next_id = 0
    for v in versions:
        ids = set(v.ids.tolist())
        assert v.next_id >= next_id and all(i < v.next_id for i in ids), (v.version, v.ids, v.next_id)
        next_id = v.next_id
        assert not ids & gone, f"version {v.version} reuses retired ids {sorted(ids & gone)}"
        fresh = ids - ever
        if fresh and ever:
            assert min(fresh) > max(ever), f"version {v.version}: fresh ids {sorted(fresh)} not above {max(ever)}"
        gone |= current - ids
        ever |= ids
        current = ids
    assert id_d in gone and id_e not in {int(i) for i in v1.ids}

    # the events name each change
    assert all(e["pipeline"] == "vectors" and e["kind"] in TRANSITIONS for e in events), events
    # (a version may be folded and superseded between two publications: the events see every one)
    born = [e for e in events if e["kind"] in ("born", "split")]
    ended = [e for e in events if e["kind"] in ("retired", "absorbed")]
    born_ids = [e["cluster_id"] for e in born]
    ended_ids = [e["cluster_id"] for e in ended]
    assert born_ids == sorted(set(born_ids)), f"ids are born once, in increasing order: {born_ids}"
    assert len(ended_ids) == len(set(ended_ids)) and set(ended_ids) <= set(born_ids), ended
    assert ever <= set(born_ids) and gone <= set(ended_ids), (ever, gone, born, ended)
    assert set(born_ids) - set(ended_ids) == set(last.ids.tolist()), "the events replay to the last version's ids"
    assert max(born_ids) < last.next_id
    assert any(e["cluster_id"] == id_e and e["version"] > v1.version for e in born), born
    assert any(e["cluster_id"] == id_d and e["version"] > v1.version for e in ended), ended
    assert not any(e["cluster_id"] in (id_a, id_b, id_c) for e in ended), ended
    kept = [e for e in events if e["kind"] in ("moved", "survived")]
    assert {id_a, id_b, id_c} <= {e["cluster_id"] for e in kept if e["version"] > v1.version}, \
        "A, B and C went through the reseeds of phase 2 under their ids"
    return {"A": id_a, "B": id_b, "C": id_c, "D": id_d, "E": id_e}


def _versions(recs: list[Any]) -> list[ModelVersion]:
    out = []
    for rec in recs:
        got = decode(rec.value)
        if isinstance(got, WireError) or got[0] != KIND_VERSION:
            continue  # a snapshot
        v = ModelVersion.from_bytes(rec.value)
        assert not isinstance(v, WireError), v
        out.append(v)
    return out


def _event(tr: Any, version: int) -> dict[str, Any]:
    return {"pipeline": "vectors", "version": version, "kind": tr.kind, "cluster_id": tr.cluster_id,
            "other_id": tr.other_id, "distance": tr.distance}


def _unversioned(e: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in e.items() if k != "version"}


def _not_json(name: str) -> Any:
    raise AssertionError(f"{name} is not JSON (RFC 8259)")


@pytest.mark.parametrize("ordering", ["arrival", "rounds"])
def test_cluster_ids_survive_reseeds_and_changes_are_published(broker, make_topic, tmp_path, ordering):
    topic, out, events_topic = make_topic("in", 2), make_topic("out"), make_topic("ev")
    cfg = worker_config(broker, tmp_path / "unused", group=unique_name("g"), vectors_topic=topic, output=out,
                        n_clusters=K, max_records=200, model=MODEL, drift={"enabled": False})
    cfg["input"]["dimension"] = 2
    cfg["group"] = {**GROUP, "events_topic": events_topic, "ordering": ordering}
    settings = load_config(cfg, tmp_path / "w.toml")
    rng = np.random.default_rng(7)
    phase1 = make_phase(rng, PHASE1, N1, 0)
    phase2 = make_phase(rng, PHASE2, N2, N1)
    truth = {key: (lab, x) for key, lab, x in phase1 + phase2}

    async def feed(recs):  # alternate partitions: both carry every phase
        for p in (0, 1):
            await produce(broker, topic, [(key, encode_json(x)) for key, _, x in recs[p::2]], partition=p)

    async def scenario() -> tuple[GroupWorker, ModelVersion]:
        worker = GroupWorker(settings, bootstrap_servers=broker)
        task = asyncio.create_task(worker.run())

        def seen(n: int):
            def pred() -> bool:
                if task.done():
                    task.result()  # the worker died: raise its error
                    raise AssertionError("the worker stopped")
                v = worker.version
                return v is not None and v.n_seen >= n
            return pred

        try:
            await feed(phase1)
            await wait_until(seen(N1), 25, "phase 1 folded")
            v1 = worker.version
            await feed(phase2)
            await wait_until(seen(N1 + N2), 25, "phase 2 folded")
        finally:
            await worker.stop()
            await asyncio.wait_for(task, 30)
        return worker, v1

    worker, v1 = asyncio.run(scenario())
    assert v1.n_seen == N1, "phase 2 is produced only after phase 1 is folded"

    async def read_all():
        return await asyncio.gather(*(consume_all(broker, t, timeout=20) for t in
                                      (settings.group_model_topic, events_topic, out, settings.group_stats_topic)))

    model_recs, event_recs, out_recs, stats_recs = asyncio.run(read_all())
    versions = _versions(model_recs)
    assert versions and versions[-1].n_seen == N1 + N2 and float(versions[-1].weights.sum()) > 0
    assert [v.version for v in versions] == sorted(v.version for v in versions)
    events = [json.loads(r.value, parse_constant=_not_json) for r in event_recs]
    assert all(r.key == b"vectors" for r in event_recs)

    # 1. identities, never-reused ids, events naming each change
    ids = check_identity(versions, events, v1)
    assert worker.version is not None and worker.version.version <= versions[-1].version

    # 2. the events are exactly the transitions of the fold: refold the stats log offline
    g = worker.new_group_model("vectors")
    offline: list[dict[str, Any]] = []
    for _, outcome in _refold(stats_recs, g, ordering, topic):
        assert outcome.status in ("accepted", "duplicate", "overlap"), outcome  # one member: no gaps
        offline.extend(_event(tr, outcome.version) for tr in outcome.transitions)
    assert [_unversioned(e) for e in events] == [_unversioned(e) for e in offline]
    # each event carries the version of the fold that caused it
    assert [e["version"] for e in events] == [e["version"] for e in offline]
    assert g.version().same_model(versions[-1])

    # 3. the counter counts the events of each kind
    kinds = Counter(e["kind"] for e in events)
    for kind in TRANSITIONS:
        got = worker.metrics.registry.get_sample_value("streamkm_cluster_transitions_total",
                                                       {"pipeline": "vectors", "reason": kind})
        assert (got or 0.0) == kinds.get(kind, 0), (kind, got, kinds)
    assert kinds["born"] + kinds["split"] >= K + 1 and kinds["retired"] + kinds["absorbed"] >= 1
    assert kinds["moved"] > 0

    # 4. outputs: model_version and cluster, the nearest centre of that version; A's records carry A's id
    by_version = {v.version: v for v in versions}
    rows: dict[int, list[tuple[str, np.ndarray, int]]] = {}
    n_clustered = 0
    for r in out_recs:
        o = json.loads(r.value)
        assert isinstance(o["model_version"], int) and isinstance(o["cluster"], int), o
        lab, x = truth[r.key]
        if o["cluster"] < 0:  # before the model existed
            assert o["model_version"] == 0
            continue
        n_clustered += 1
        rows.setdefault(o["model_version"], []).append((lab, x, o["cluster"]))
        if lab == "A":
            assert o["cluster"] == ids["A"], o
        if lab == "B":
            assert o["cluster"] == ids["B"], o
    assert {r.key for r in out_recs} == set(truth), "one output (at least) per input record"
    # Unclustered: records cut before the first initialized version reached the member, at most
    # the points the model needs to initialize plus what the member reads ahead meanwhile:
    # max_in_flight chunks per partition (4 x 50 x 2) and the batch being processed and the one
    # prefetched (max_records 200 each). Measured: 200 (arrival) and 600 (rounds).
    assert n_clustered >= N1 + N2 - 800
    for version, items in rows.items():
        v = by_version[version]
        labels = summarize(np.stack([x for _, x, _ in items]), v.centers, dtype=np.dtype(v.dtype)).labels
        assert [c for _, _, c in items] == v.ids[labels].tolist(), f"version {version}"
    assert any(c == ids["E"] for items in rows.values() for lab, _, c in items if lab == "E")


@pytest.mark.parametrize("ordering", ["arrival", "rounds"])
def test_a_new_reducer_does_not_announce_or_count_again_what_was_published(broker, make_topic, tmp_path, ordering):
    """A reducer killed after publishing leaves no snapshot to start from (``snapshot_every`` is
    large): its successor refolds the whole stats log. The refold rebuilds the same versions, but
    the events topic and the counters must not repeat the transitions of the versions already
    published: the events equal an offline fold's transitions, each once."""
    from tests.helpers.group import wait_for_model
    from tests.helpers.processes import WorkerProcess

    topic, out, events_topic = make_topic("in", 2), make_topic("out"), make_topic("ev")
    cfg = worker_config(broker, tmp_path / "unused", group=unique_name("g"), vectors_topic=topic, output=out,
                        n_clusters=K, max_records=200, model=MODEL, drift={"enabled": False})
    cfg["input"]["dimension"] = 2
    cfg["group"] = {**GROUP, "events_topic": events_topic, "snapshot_every": 100_000, "ordering": ordering}
    settings = load_config(cfg, tmp_path / "w.toml")
    rng = np.random.default_rng(7)
    phase1, phase2 = make_phase(rng, PHASE1, N1, 0), make_phase(rng, PHASE2, N2, N1)

    async def feed(recs):
        for p in (0, 1):
            await produce(broker, topic, [(key, encode_json(x)) for key, _, x in recs[p::2]], partition=p)

    with WorkerProcess(tmp_path / "w.toml", tmp_path / "first.log") as first:
        asyncio.run(feed(phase1))
        v1 = wait_for_model(broker, settings.group_model_topic, N1, timeout=60)
        assert v1 is not None and v1.n_seen == N1, first.tail()
        first.kill()  # no handover: no last snapshot
    phase1_events = asyncio.run(consume_all(broker, events_topic, timeout=10))
    assert phase1_events, "phase 1 announced its clusters"

    async def second() -> GroupWorker:
        worker = GroupWorker(settings, bootstrap_servers=broker)
        task = asyncio.create_task(worker.run())

        def folded() -> bool:
            if task.done():
                task.result()
                raise AssertionError("the worker stopped")
            return worker.version is not None and worker.version.n_seen >= N1 + N2

        try:
            await feed(phase2)
            await wait_until(folded, 60, "phase 2 folded by the second reducer")
        finally:
            await worker.stop()
            await asyncio.wait_for(task, 30)
        return worker

    worker = asyncio.run(second())
    async def read_back():
        return await asyncio.gather(consume_all(broker, events_topic, timeout=20),
                                    consume_all(broker, settings.group_stats_topic, timeout=20))

    event_recs, stats_recs = asyncio.run(read_back())
    events = [json.loads(r.value) for r in event_recs]

    g = worker.new_group_model("vectors")
    offline: list[dict[str, Any]] = []
    accepted_after = 0
    for offset, outcome in _refold(stats_recs, g, ordering, topic):
        offline.extend(_event(tr, outcome.version) for tr in outcome.transitions)
        accepted_after += outcome.status == "accepted" and offset > v1.stats_offset
    assert events == offline, "every transition announced once, in fold order"
    assert any(e["version"] > v1.version for e in events)

    new = [e for e in events if e["version"] > v1.version]
    for kind in TRANSITIONS:
        got = worker.metrics.registry.get_sample_value("streamkm_cluster_transitions_total",
                                                       {"pipeline": "vectors", "reason": kind}) or 0.0
        assert got == sum(e["kind"] == kind for e in new), kind
    got = worker.metrics.registry.get_sample_value("streamkm_group_stats_messages_total",
                                                   {"pipeline": "vectors", "reason": "accepted"})
    assert got == accepted_after

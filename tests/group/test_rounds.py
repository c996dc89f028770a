"""RoundFold: stats folded in rounds, whatever order they reached the log in."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from streamkm.group import GroupModel
from streamkm.group.rounds import RoundFold
from tests.group.support import PIPE, TOPIC, blobs, raw_stats

KW = {"n_clusters": 3, "seed": 0, "init_size": 60, "dying_threshold": 0.0}
CENTERS = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])


def _chunks(n_parts: int = 3, n_chunks: int = 4, rows: int = 40, seed: int = 0):
    """Per partition, consecutive raw chunks of *rows* points."""
    rng = np.random.default_rng(seed)
    return {p: [raw_stats(i * rows, blobs(rng, CENTERS, rows), part=p) for i in range(n_chunks)]
            for p in range(n_parts)}


def _keys(n_parts: int) -> list[str]:
    return [f"{TOPIC}:{p}" for p in range(n_parts)]


def _run(order, chunks, *, n_parts=3):
    g = GroupModel(pipeline=PIPE, model_kwargs=KW)
    rf = RoundFold(g)
    rf.expect(_keys(n_parts))
    folded = []
    nxt = dict.fromkeys(chunks, 0)
    for off, p in enumerate(order):
        msg = chunks[p][nxt[p]]
        nxt[p] += 1
        folded += [(o.msg.partition, o.msg.first_offset) for o in rf.offer(msg, off) if o.status == "accepted"]
    folded += [(o.msg.partition, o.msg.first_offset) for o in rf.drain() if o.status == "accepted"]
    return g, folded


def test_any_interleaving_of_the_log_gives_the_same_model_bit_for_bit():
    chunks = _chunks()
    orders = [
        [p for p in range(3) for _ in range(4)],  # partition after partition
        [p for _ in range(4) for p in range(3)],  # round robin
        [2, 2, 1, 0, 2, 1, 1, 0, 0, 2, 1, 0],
    ]
    rng = np.random.default_rng(5)
    for _ in range(3):  # random interleavings that keep each partition's own order
        bag = [p for p in range(3) for _ in range(4)]
        rng.shuffle(bag)
        orders.append(list(bag))
    results = [_run(o, chunks) for o in orders]
    g0, f0 = results[0]
    assert f0 == [(p, i * 40) for i in range(4) for p in range(3)]  # round r: chunk r of p0, p1, p2
    for g, f in results[1:]:
        assert f == f0
        np.testing.assert_array_equal(g.model.cluster_centers_, g0.model.cluster_centers_)
        np.testing.assert_array_equal(g.model.counts_, g0.model.counts_)
        assert g.version_ == g0.version_ == 12 and g.offsets_ == g0.offsets_


def test_a_round_waits_for_every_expected_partition():
    chunks = _chunks()
    g = GroupModel(pipeline=PIPE, model_kwargs=KW)
    rf = RoundFold(g)
    rf.expect(_keys(3))
    assert [o.status for o in rf.offer(chunks[0][0], 0)] == ["queued"]
    assert [o.status for o in rf.offer(chunks[0][1], 1)] == ["queued"]
    assert [o.status for o in rf.offer(chunks[1][0], 2)] == ["queued"]
    assert g.version_ == 0 and rf.queued == 3
    assert g.stats_offset_ == -1  # nothing before the oldest queued message is settled
    got = rf.offer(chunks[2][0], 3)
    assert [(o.status, o.msg.partition) for o in got] == [("queued", 2), ("accepted", 0), ("accepted", 1),
                                                           ("accepted", 2)]
    assert g.version_ == 3 and rf.queued == 1 and rf.n_rounds == 1
    assert g.stats_offset_ == 0  # offset 1 (p0's second chunk) still waits


def test_duplicates_overlaps_and_gaps_are_refused_at_once_and_never_folded():
    chunks = _chunks(n_parts=1)
    g = GroupModel(pipeline=PIPE, model_kwargs=KW)
    rf = RoundFold(g)
    rf.expect(_keys(1))
    assert rf.offer(chunks[0][0], 0)[-1].status == "accepted"
    st = [o.status for o in rf.offer(chunks[0][0], 1)]  # re-sent after a rebalance
    assert st == ["duplicate"]
    assert [o.status for o in rf.offer(chunks[0][2], 2)] == ["gap"]
    assert [o.status for o in rf.offer(raw_stats(20, chunks[0][1].rows), 3)] == ["overlap"]
    assert [o.status for o in rf.offer(None, 4, reason="bad magic")] == ["invalid"]
    assert g.version_ == 1 and g.counters_ == {"accepted": 1, "duplicate": 1, "overlap": 1, "gap": 1, "invalid": 1}
    assert g.stats_offset_ == 4
    with pytest.raises(ValueError, match="log order"):
        rf.offer(chunks[0][1], 4)


def test_an_idle_partition_is_left_out_after_the_timeout_and_rejoins_when_it_sends():
    chunks = _chunks()
    g = GroupModel(pipeline=PIPE, model_kwargs=KW)
    rf = RoundFold(g, idle_seconds=5.0)
    rf.expect(_keys(3))
    rf.offer(chunks[0][0], 0, now=100.0)
    rf.offer(chunks[1][0], 1, now=101.0)
    assert rf.tick(104.9) == ([], [])
    folded, idle = rf.tick(105.0)
    assert idle == [f"{TOPIC}:2"] and [o.msg.partition for o in folded] == [0, 1] and rf.n_idle == 1
    rf.offer(chunks[0][1], 2, now=106.0)
    got = rf.offer(chunks[1][1], 3, now=106.0)  # p2 idle: p0 and p1 make a round
    assert [o.msg.partition for o in got if o.status == "accepted"] == [0, 1]
    rf.offer(chunks[2][0], 4, now=107.0)  # p2 is back: the next round waits for it again
    rf.offer(chunks[0][2], 5, now=107.0)
    got = rf.offer(chunks[1][2], 6, now=107.0)
    assert [o.msg.partition for o in got if o.status == "accepted"] == [0, 1, 2]
    assert rf.idle == set()


def test_a_restart_from_the_safe_offset_rebuilds_the_same_model():
    """The queue is not in the snapshot: a new reducer re-reads from stats_offset_ + 1."""
    chunks = _chunks(seed=3)
    order = [0, 0, 1, 0, 2, 1, 1, 0, 2, 2, 1, 2]
    log = []
    nxt = dict.fromkeys(chunks, 0)
    for p in order:
        log.append(chunks[p][nxt[p]])
        nxt[p] += 1
    whole = GroupModel(pipeline=PIPE, model_kwargs=KW)
    rf = RoundFold(whole)
    rf.expect(_keys(3))
    for off, msg in enumerate(log):
        rf.offer(msg, off)
    for cut in range(1, len(log)):
        first = GroupModel(pipeline=PIPE, model_kwargs=KW)
        a = RoundFold(first)
        a.expect(_keys(3))
        for off, msg in enumerate(log[:cut]):
            a.offer(msg, off)
        state = first.state_dict()
        second = GroupModel(pipeline=PIPE, model_kwargs=KW)
        second.load_state_dict(state)
        b = RoundFold(second)
        b.expect(_keys(3))
        for off in range(second.stats_offset_ + 1, len(log)):
            b.offer(log[off], off)
        np.testing.assert_array_equal(second.model.cluster_centers_, whole.model.cluster_centers_)
        assert second.version_ == whole.version_ and second.offsets_ == whole.offsets_, cut


def test_drain_folds_the_rest_in_rounds_over_the_partitions_with_chunks():
    chunks = _chunks(n_chunks=3)
    g = GroupModel(pipeline=PIPE, model_kwargs=KW)
    rf = RoundFold(g)
    rf.expect(_keys(3))
    seq = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]  # p2 never sends
    for off, (p, i) in enumerate(seq):
        assert all(o.status == "queued" for o in rf.offer(chunks[p][i], off))
    got = rf.drain()
    assert [(o.msg.partition, o.msg.first_offset) for o in got] == [(0, 0), (1, 0), (0, 40), (1, 40), (0, 80)]
    assert rf.queued == 0 and g.stats_offset_ == 4


def test_ending_a_partition_lets_the_rounds_go_on_without_it():
    chunks = _chunks(n_chunks=2)
    g = GroupModel(pipeline=PIPE, model_kwargs=KW)
    rf = RoundFold(g)
    rf.expect(_keys(2))
    rf.offer(chunks[0][0], 0)
    assert rf.end(f"{TOPIC}:1") and g.version_ == 1
    assert list(itertools.chain(rf.offer(chunks[0][1], 1)))[-1].status == "accepted"


def test_no_round_is_folded_before_the_partitions_are_known():
    chunks = _chunks(n_parts=2)
    g = GroupModel(pipeline=PIPE, model_kwargs=KW)
    rf = RoundFold(g)
    assert [o.status for o in rf.offer(chunks[0][0], 0)] == ["queued"]
    assert g.version_ == 0 and rf.tick(1e9) == ([], [])
    rf.expect(_keys(2))
    got = rf.offer(chunks[1][0], 1)
    assert [(o.status, o.msg.partition) for o in got if o.status == "accepted"] == [("accepted", 0),
                                                                                 ("accepted", 1)]


def test_a_chunk_the_model_refuses_at_fold_time_drops_what_was_queued_behind_it():
    """Queued before the model knew its width, a chunk of another width is refused when its
    round comes; the partition's later chunks no longer follow on and are dropped (the sender
    realigns to the model's offset), while the other partitions go on."""
    rng = np.random.default_rng(1)
    g = GroupModel(pipeline=PIPE, model_kwargs=KW)
    rf = RoundFold(g)
    rf.expect(_keys(2))
    good = [raw_stats(i * 40, blobs(rng, CENTERS, 40), part=0) for i in range(3)]
    wide = [raw_stats(i * 40, rng.normal(size=(40, 3)), part=1) for i in range(2)]
    rf.offer(wide[0], 0)
    rf.offer(wide[1], 1)
    got = rf.offer(good[0], 2) + rf.offer(good[1], 3)
    statuses = [(o.msg.partition, o.status) for o in got if o.status != "queued"]
    assert (0, "accepted") in statuses and (1, "invalid") in statuses and (1, "gap") in statuses
    assert rf.queued == 1  # p0's second chunk waits for p1, which must send again from offset 0
    assert [o.status for o in rf.offer(raw_stats(0, blobs(rng, CENTERS, 40), part=1), 4)
            if o.msg.partition == 1] == ["queued", "accepted"]


# ---------------------------------------------------------------- idle markers and the snapshot's queue
def _log_with_an_idle_partition():
    """A log where partition 2 sends one chunk and stops, then p0 and p1 go on (bytes, in order)."""
    chunks = _chunks(n_chunks=5)
    order = [0, 1, 2, 0, 1, 0, 1, 0, 1, 0, 1]
    nxt = dict.fromkeys(chunks, 0)
    log = []
    for p in order:
        log.append(chunks[p][nxt[p]].to_bytes())
        nxt[p] += 1
    return log


def _live(log, *, idle_after: int, with_marker: bool):
    """A live reducer: reads *log* in order, and after message *idle_after* finds p2 overdue.
    With a marker it appends an IdleMarker to the log and acts on it when read back."""
    from streamkm.group.messages import IdleMarker

    g = GroupModel(pipeline=PIPE, model_kwargs=KW)
    rf = RoundFold(g, idle_seconds=10.0)
    rf.expect(_keys(3))
    log = list(log)
    off = 0
    while off < len(log):
        rf.offer_bytes(log[off], off, now=float(off))
        if off == idle_after:
            due = rf.due_idle(now=1e6)
            assert list(due) == [f"{TOPIC}:2"]
            if with_marker:
                log.insert(off + 1, IdleMarker(PIPE, tuple(due), tuple(due.values())).to_bytes())
            else:
                rf.tick(now=1e6)
        off += 1
    return g, rf, log


def test_an_idle_marker_makes_the_declaration_part_of_the_log():
    """A successor (or an offline fold) reading the log with the marker makes the rounds the
    live reducer made, bit for bit, without any clock; without the marker it cannot."""
    base = _log_with_an_idle_partition()
    live, live_rf, log = _live(base, idle_after=6, with_marker=True)
    assert live_rf.n_idle == 1 and live.version_ > 3
    again = GroupModel(pipeline=PIPE, model_kwargs=KW)
    rf = RoundFold(again)  # no idle_seconds: time plays no part
    rf.expect(_keys(3))
    for off, value in enumerate(log):
        rf.offer_bytes(value, off)
    assert rf.n_idle == 1
    np.testing.assert_array_equal(again.model.cluster_centers_, live.model.cluster_centers_)
    assert again.version_ == live.version_ and again.offsets_ == live.offsets_
    # The control: declared at once (the old way), the log holds no trace and a refold waits forever.
    old, _, old_log = _live(base, idle_after=6, with_marker=False)
    assert old.version_ == live.version_
    refold = GroupModel(pipeline=PIPE, model_kwargs=KW)
    rf2 = RoundFold(refold)
    rf2.expect(_keys(3))
    for off, value in enumerate(old_log):
        rf2.offer_bytes(value, off)
    assert refold.version_ < old.version_


def test_a_marker_for_a_partition_that_sent_meanwhile_leaves_it_active():
    from streamkm.group.messages import IdleMarker

    chunks = _chunks()
    g = GroupModel(pipeline=PIPE, model_kwargs=KW)
    rf = RoundFold(g)
    rf.expect(_keys(3))
    rf.offer(chunks[0][0], 0)
    rf.offer(chunks[1][0], 1)
    assert rf.due_idle(1e9) == {}  # idle_seconds unset: never due
    tail = rf._tail(f"{TOPIC}:2")
    rf.offer(chunks[2][0], 2)  # p2 sent before the marker was read back: a round folds
    assert g.version_ == 3
    folded, idle = rf.mark_idle({f"{TOPIC}:2": tail}, 3)
    assert idle == [] and rf.idle == set() and folded == []
    assert rf.offer_bytes(IdleMarker(PIPE, (f"{TOPIC}:1",), (rf._tail(f"{TOPIC}:1"),)).to_bytes(), 4) == []
    assert rf.idle == {f"{TOPIC}:1"}


def test_a_successor_restored_from_the_snapshot_re_queues_exactly_what_was_queued():
    """Duplicates read after the safe offset are counted once, not again by the successor."""
    chunks = _chunks(n_chunks=4)
    c = [chunks[0][0], chunks[0][1], chunks[0][1], chunks[1][0], chunks[0][1], chunks[0][2],
         chunks[2][0], chunks[1][1], chunks[2][1], chunks[1][2], chunks[2][2], chunks[0][3]]
    log = [m.to_bytes() for m in c]  # p0's chunk 1 arrives three times (two duplicates)
    snap_at = 5

    def reference():
        g = GroupModel(pipeline=PIPE, model_kwargs=KW)
        rf = RoundFold(g)
        rf.expect(_keys(3))
        for off, value in enumerate(log):
            rf.offer_bytes(value, off)
        return g

    g = GroupModel(pipeline=PIPE, model_kwargs=KW)
    rf = RoundFold(g)
    rf.expect(_keys(3))
    for off in range(snap_at + 1):
        rf.offer_bytes(log[off], off)
    assert rf.queued == 4 and g.counters_["duplicate"] == 2 and g.stats_offset_ == -1
    snap = {"state": g.state_dict(), "stats_offset": g.stats_offset_, "rounds": rf.state_dict()}

    def successor(with_rounds: bool):
        g2 = GroupModel(pipeline=PIPE, model_kwargs=KW)
        g2.load_state_dict(snap["state"])
        rf2 = RoundFold(g2)
        rf2.expect(_keys(3))
        if with_rounds:
            rf2.load_state_dict(snap["rounds"])
        for off in range(snap["stats_offset"] + 1, len(log)):
            if rf2.wants(off):
                rf2.offer_bytes(log[off], off)
        return g2

    ref, got = reference(), successor(True)
    assert got.counters_ == ref.counters_ and got.counters_["duplicate"] == 2
    np.testing.assert_array_equal(got.model.cluster_centers_, ref.model.cluster_centers_)
    assert got.version_ == ref.version_ and got.offsets_ == ref.offsets_
    assert successor(False).counters_["duplicate"] == 4  # the control: the old recovery counts them again


def test_a_rounds_state_that_does_not_fit_the_fold_is_refused():
    g = GroupModel(pipeline=PIPE, model_kwargs=KW)
    rf = RoundFold(g)
    with pytest.raises(ValueError, match="does not fit"):
        rf.load_state_dict({"read_to": 5, "queued": [9], "idle": []})
    with pytest.raises(ValueError, match="needs read_to"):
        rf.load_state_dict({"read_to": "x", "queued": [], "idle": []})
    assert rf.wants(0) and rf.read_to == -1

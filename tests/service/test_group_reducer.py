"""The reducer's bookkeeping, unit level (no broker): what a successor counts, what the round queue holds."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np

from streamkm.group import ChunkStats, GroupModel
from streamkm.group.rounds import RoundFold
from streamkm.service.group import _Reducer
from tests.group.support import PIPE, TOPIC, blobs, raw_stats
from tests.helpers.reducer import stand_in_reducer

KW = {"n_clusters": 3, "seed": 0, "init_size": 60, "dying_threshold": 0.0}
CENTERS = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
KEYS = [f"{TOPIC}:{p}" for p in range(3)]


def _reducer() -> _Reducer:
    """A reducer of a stand-in member (metrics and a transition sink), folding in rounds."""
    return stand_in_reducer(PIPE, TOPIC, KEYS, KW)


def _recs(log):
    return [SimpleNamespace(offset=o, value=m.to_bytes()) for o, m in log]


def _accepted(r: _Reducer) -> float:
    return r.w.metrics.group_stats_messages.labels(pipeline=PIPE, reason="accepted")._value.get()


def test_a_successor_does_not_count_again_what_was_folded_past_the_safe_offset():
    """Chunks at 2 and 3 fold while p0's second chunk (1) waits: the version's stats offset is 0,
    but 2 and 3 were counted. Before: a successor (crash, older snapshot) counted them again."""
    rng = np.random.default_rng(0)
    c = {p: [raw_stats(i * 40, blobs(rng, CENTERS, 40), part=p) for i in range(2)] for p in range(3)}
    log = [(0, c[0][0]), (1, c[0][1]), (2, c[1][0]), (3, c[2][0]), (4, c[1][1]), (5, c[2][1])]
    pred = _reducer()
    pred._account(pred.model, pred._fold(pred.model, _recs(log[:4])))
    assert _accepted(pred) == 3 and pred.model.stats_offset_ == 0 and pred.rounds.waiting() == [1]
    published = dataclasses.replace(pred.model.version(), read_to=pred.rounds.read_to,
                                    waiting=pred.rounds.waiting())  # as _publish writes it
    published = type(published).from_bytes(published.to_bytes())

    succ = _reducer()
    succ._replayed_from(published)
    succ._account(succ.model, succ._fold(succ.model, _recs(log)))
    # 0, 2, 3: counted by the predecessor; 1 waited, 4 and 5 are new: folded and counted here, once
    assert _accepted(succ) == 3
    assert succ.model.version().same_model(_reference(log))


def _reference(log):
    g = GroupModel(pipeline=PIPE, model_kwargs=KW)
    rf = RoundFold(g)
    rf.expect(KEYS)
    for o, m in log:
        rf.offer(m, o)
    return g.version()


def test_the_round_queue_keeps_no_window_state():
    """Before: every queued sequence chunk kept its partition's whole window state (about 13 MB
    per chunk at the default window settings) until its round folded; only the newest one per
    partition is ever published."""
    rng = np.random.default_rng(0)
    big = {"offset": 0, "windows": {"X": np.zeros((250_000, 8), np.float32)},
           "carry": {"X": np.zeros((0, 2), np.float32), "meta": {}, "keys": []}}
    r = _reducer()
    log = []
    for i in range(8):  # partition 0 runs ahead: its chunks wait for partitions 1 and 2
        st = raw_stats(i * 40, blobs(rng, CENTERS, 40), part=0)
        log.append((i, dataclasses.replace(st, resume={**big, "offset": (i + 1) * 40})))
    r._fold(r.model, _recs(log))
    queued = [m for q in r.rounds._queues.values() for _, m, _ in q]
    assert len(queued) == 8 and all(isinstance(m, ChunkStats) and m.resume is None for m in queued)
    assert list(r._resumes) == [f"{TOPIC}:0"] and r._resumes[f"{TOPIC}:0"].end_offset == 320


def test_a_reducer_folds_its_own_statistics_without_fetching_them_and_reads_the_log_for_others():
    """This member's acknowledged statistics are folded from memory while they follow on from the
    next offset (the stats partition paused: nothing fetched back); another writer's message
    before them (a gap) is read from the log, from that offset; with nothing local and this
    member's statistics on their way, it waits for their acknowledgement instead of fetching."""
    import asyncio

    outstanding = {"n": 0}

    class Consumer:
        def __init__(self):
            self.calls: list = []
            self.log: dict[int, bytes] = {}
            self.pos = 0

        def pause(self, tp):
            self.calls.append("pause")

        def resume(self, tp):
            self.calls.append("resume")

        def seek(self, tp, off):
            self.calls.append(("seek", off))
            self.pos = off

        async def getmany(self, timeout_ms=0):
            self.calls.append("getmany")
            recs = [SimpleNamespace(offset=o, value=v) for o, v in sorted(self.log.items()) if o >= self.pos]
            if recs:
                self.pos = recs[-1].offset + 1
            return {"tp": recs}

    r = _reducer()
    r.w.stats_outstanding = lambda pipeline: outstanding["n"]  # type: ignore[attr-defined]
    r.tp = "tp"  # type: ignore[assignment]
    c = Consumer()

    async def main():
        r.offer_local(0, b"a")
        r.offer_local(1, b"b")
        got = await r._next_records(c, 0.2)
        assert [(x.offset, x.value) for x in got] == [(0, b"a"), (1, b"b")] and c.calls == ["pause"]
        r.rounds._read_to = 1  # folded
        # another member wrote offset 2; this member's next landed at 3
        c.log = {2: b"other", 3: b"c"}
        r.offer_local(3, b"c")
        got = await r._next_records(c, 0.2)
        assert [x.offset for x in got] == [2, 3] and c.calls[1:] == [("seek", 2), "resume", "getmany"]
        r.rounds._read_to = 3
        assert r._take_local(4) == [] and not r._local, "the local copy of 3 is dropped once read"
        # nothing local, this member's next statistics on their way: wait (no fetch) for them
        outstanding["n"] = 1
        asyncio.get_running_loop().call_later(0.05, r.offer_local, 4, b"d")
        got = await r._next_records(c, 0.2)
        assert got == [] and "getmany" not in c.calls[4:]
        got = await r._next_records(c, 0.2)
        assert [x.offset for x in got] == [4] and c.calls[-1] == "pause"

    asyncio.run(main())


def test_a_restored_reducer_reads_the_log_from_the_oldest_queued_message():
    """After a snapshot whose queue held offset 1 (read_to 3), the next records come from offset 1,
    not 4: the queued message must be re-read (the first cut of the local-read path filtered on
    read_to + 1 and lost it, failing the group end-to-end, sequence and network-cut tests)."""
    import asyncio

    rng = np.random.default_rng(0)
    c = {p: [raw_stats(i * 40, blobs(rng, CENTERS, 40), part=p) for i in range(2)] for p in range(3)}
    log = [(0, c[0][0]), (1, c[0][1]), (2, c[1][0]), (3, c[2][0]), (4, c[1][1]), (5, c[2][1])]
    pred = _reducer()
    pred._fold(pred.model, _recs(log[:4]))
    model_state, rounds_state = pred.model.state_dict(), pred.rounds.state_dict()

    succ = _reducer()
    succ.model.load_state_dict(model_state)
    succ.rounds = RoundFold(succ.model)
    succ.rounds.expect(KEYS)
    succ.rounds.load_state_dict(rounds_state)
    assert succ.rounds.read_to == 3 and succ._next_offset() == 1

    class Consumer:
        def __init__(self):
            self.pos = succ.model.stats_offset_ + 1  # where _run seeks it

        async def getmany(self, timeout_ms=0):
            recs = [SimpleNamespace(offset=o, value=m.to_bytes()) for o, m in log if o >= self.pos]
            self.pos = log[-1][0] + 1
            return {"tp": recs}

    succ.w.stats_outstanding = lambda pipeline: 0  # type: ignore[attr-defined]
    recs = asyncio.run(succ._next_records(Consumer(), 0.2))
    assert [r.offset for r in recs] == [1, 2, 3, 4, 5]
    succ._fold(succ.model, recs)
    assert succ.model.version().same_model(_reference(log))


def test_a_folded_model_is_published_when_due_even_if_nothing_more_comes():
    """After a fold, the next read waits only until the version is due, and the log read passes
    that wait on. Before: it waited a whole poll (200 ms) with nothing to read, while members
    whose in-flight budget was used up waited for that version (docs/benchmarks.md)."""
    import asyncio
    import time

    r = _reducer()
    r.w.settings = SimpleNamespace(group=SimpleNamespace(publish_interval_seconds=0.05))  # type: ignore[attr-defined]
    r.w.stats_outstanding = lambda pipeline: 0  # type: ignore[attr-defined]
    r.tp = "tp"  # type: ignore[assignment]
    r._last_publish = time.monotonic()
    assert r._read_wait(False) == 0.2, "nothing folded: a whole poll"
    assert 0.0 < r._read_wait(True) <= 0.05, "folded: until the publish is due"
    r._last_publish -= 1.0
    assert r._read_wait(True) == 0.0, "overdue: no wait"

    class Consumer:
        timeouts: list = []

        def seek(self, tp, off):
            pass

        def resume(self, tp):
            pass

        async def getmany(self, timeout_ms=0):
            self.timeouts.append(timeout_ms)
            return {}

    c = Consumer()
    assert asyncio.run(r._next_records(c, 0.03)) == [] and c.timeouts == [30]


def test_a_read_cut_short_for_a_due_publish_does_not_go_to_the_log():
    """This member's statistics on their way and a publish due: the read waits for their
    acknowledgement only until then, and returns without seeking and fetching the log (found in
    review: it then fetched for the same time again, so the version came up to twice late, and
    rounds re-fetched the member's own rows)."""
    import asyncio
    import time

    r = _reducer()
    r.w.stats_outstanding = lambda pipeline: 1  # type: ignore[attr-defined]
    r.tp = "tp"  # type: ignore[assignment]

    class Consumer:
        calls: list = []

        def seek(self, tp, off):
            self.calls.append("seek")

        def resume(self, tp):
            self.calls.append("resume")

        async def getmany(self, timeout_ms=0):
            self.calls.append(("getmany", timeout_ms))
            await asyncio.sleep(timeout_ms / 1000)
            return {}

    c = Consumer()

    async def main():
        t0 = time.monotonic()
        assert await r._next_records(c, 0.05) == []
        assert time.monotonic() - t0 < 0.09 and c.calls == []
        # a whole poll with nothing acknowledged: the log is read (another writer may come
        # first), within the same deadline
        t0 = time.monotonic()
        assert await r._next_records(c, 0.2) == []
        assert time.monotonic() - t0 < 0.3 and c.calls[-1][0] == "getmany" and c.calls[-1][1] <= 1

    asyncio.run(main())

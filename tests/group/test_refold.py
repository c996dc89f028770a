"""refold_stats_log: a stats log refolded offline in the order the group folded it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from streamkm.group import GroupModel
from streamkm.group.messages import IdleMarker
from streamkm.group.refold import refold_stats_log
from tests.group.support import PIPE, TOPIC, blobs, raw_stats
from tests.helpers.reducer import stand_in_reducer

KW = {"n_clusters": 3, "seed": 0, "init_size": 60, "dying_threshold": 0.0}
CENTERS = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
KEYS = [f"{TOPIC}:0", f"{TOPIC}:1"]


def _log():
    """Two chunks of partition 0, then two of partition 1 (a member far ahead on p0)."""
    rng = np.random.default_rng(0)
    chunks = [raw_stats(i * 40, blobs(rng, CENTERS, 40), part=p) for p in (0, 1) for i in range(2)]
    return [(off, c.to_bytes()) for off, c in enumerate(chunks)]


def _folded(got):
    return [(o.msg.partition, o.msg.first_offset, o.outcome.version) for o in got if o.status == "accepted"]


def test_a_rounds_log_is_refolded_in_rounds_not_in_log_order():
    g = GroupModel(pipeline=PIPE, model_kwargs=KW)
    got = refold_stats_log(g, _log(), ordering="rounds", expect=KEYS)
    # Round 1: chunk 0 of p0 and p1; round 2: chunk 1 of each. p0's second chunk goes into
    # version 2 (it makes 3); an arrival refold would have it make version 2.
    assert _folded(got) == [(0, 0, 1), (1, 0, 2), (0, 40, 3), (1, 40, 4)]
    arrival = refold_stats_log(GroupModel(pipeline=PIPE, model_kwargs=KW), _log(), ordering="arrival")
    assert _folded(arrival) == [(0, 0, 1), (0, 40, 2), (1, 0, 3), (1, 40, 4)]
    # The model is the live reducer's: a rounds reducer (service/group.py) folding the same records.
    live = _live_reducer()
    outcomes = live._fold(live.model, [SimpleNamespace(offset=o, value=v) for o, v in _log()])
    assert [(off, out.version) for off, out, _ in outcomes] == [(o.offset, o.outcome.version) for o in got]
    np.testing.assert_array_equal(g.model.cluster_centers_, live.model.model.cluster_centers_)
    assert g.version_ == live.model.version_ == 4 and g.stats_offset_ == live.model.stats_offset_


def _live_reducer():
    return stand_in_reducer(PIPE, TOPIC, KEYS, KW)


def test_a_rounds_refold_needs_the_partitions_its_rounds_wait_for():
    """Without them, a round waits only for the partitions that have sent, which is log order
    (found in review: expect=() silently refolded a rounds log in arrival order)."""
    with pytest.raises(ValueError, match="expect"):
        refold_stats_log(GroupModel(pipeline=PIPE, model_kwargs=KW), _log(), ordering="rounds")


def test_idle_markers_in_the_log_form_the_live_rounds_and_waiting_chunks_need_drain():
    log = _log()
    p1 = log[2:]
    marker = IdleMarker(PIPE, (KEYS[1],), (-1,)).to_bytes()
    # p0's chunks, the marker that declared p1 idle, then p1's chunks (p1 rejoins: rounds wait for it again).
    log = [*log[:2], (2, marker), *((off + 1, v) for off, v in p1)]
    got = refold_stats_log(GroupModel(pipeline=PIPE, model_kwargs=KW), log, ordering="rounds", expect=KEYS)
    assert _folded(got) == [(0, 0, 1), (0, 40, 2)]  # p1's chunks wait for p0's next
    drained = refold_stats_log(GroupModel(pipeline=PIPE, model_kwargs=KW), log, ordering="rounds", expect=KEYS,
                               drain=True)
    assert _folded(drained) == [(0, 0, 1), (0, 40, 2), (1, 0, 3), (1, 40, 4)]
    # The arrival reducer cannot read a marker: it skips it as invalid.
    arrival = refold_stats_log(GroupModel(pipeline=PIPE, model_kwargs=KW), log, ordering="arrival")
    assert [o.status for o in arrival] == ["accepted", "accepted", "invalid", "accepted", "accepted"]


def test_an_unknown_ordering_is_refused():
    with pytest.raises(ValueError, match="ordering must be one of"):
        refold_stats_log(GroupModel(pipeline=PIPE, model_kwargs=KW), [], ordering="fifo")


def test_a_refused_message_carries_the_version_it_left_the_model_at_in_both_orderings():
    """Found in review: an arrival skip said version 0 whatever had been folded; rounds gave the
    model's version. Here p0's two chunks come first: arrival has folded them (version 2) when it
    refuses the message, rounds still holds them for p1's (version 0)."""
    log = [*_log()[:2], (2, b"not a stats message")]
    for ordering, version in (("arrival", 2), ("rounds", 0)):
        got = refold_stats_log(GroupModel(pipeline=PIPE, model_kwargs=KW), log, ordering=ordering, expect=KEYS,
                               drain=True)
        bad = [o for o in got if o.status == "invalid"]
        assert len(bad) == 1 and bad[0].outcome.version == version, ordering

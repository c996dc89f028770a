"""The checkpoint policy: every decision, and that Kafka is asked for 'caught up' only when it matters."""

import itertools

import pytest

from streamkm.service.policy import ASK_CAUGHT_UP, CheckpointPolicy, Progress, due

POLICY = CheckpointPolicy(interval_seconds=30.0, interval_records=500, flush_linger_seconds=0.5, idle_seconds=1.0)


def progress(**kw):
    base = dict(now=100.0, last_checkpoint_at=99.9, records_since_checkpoint=0, dirty=False, pending=False,
                pending_since=None, has_assignment=True)
    base.update(kw)
    return Progress(**base)


def decide(p, caught_up):
    """What the worker does: ask only if the policy says so."""
    asked = []
    reason = due(p, POLICY)
    if reason == ASK_CAUGHT_UP:
        asked.append(True)
        reason = due(p, POLICY, caught_up=caught_up)
    return reason, bool(asked)


@pytest.mark.parametrize("caught_up, expected", [(True, "flush"), (False, None)])
def test_partial_chunk_lingering_flushes_only_when_caught_up(caught_up, expected):
    p = progress(pending=True, pending_since=99.0, dirty=True, last_checkpoint_at=99.9)
    assert decide(p, caught_up) == (expected, True)


def test_interval_records_and_seconds_do_not_ask_kafka():
    assert decide(progress(dirty=True, records_since_checkpoint=500), False) == ("interval", False)
    # also when idle with an assignment: keeps the checkpoint age a liveness signal
    assert decide(progress(last_checkpoint_at=60.0), False) == ("interval", False)
    assert decide(progress(last_checkpoint_at=60.0, has_assignment=False), False) == (None, False)


def test_interval_wins_over_idle_without_asking():
    p = progress(dirty=True, records_since_checkpoint=600, last_checkpoint_at=90.0)  # idle time passed too
    assert decide(p, True) == ("interval", False)


@pytest.mark.parametrize("caught_up, expected", [(True, "idle"), (False, None)])
def test_idle_checkpoint_when_caught_up(caught_up, expected):
    assert decide(progress(dirty=True, last_checkpoint_at=98.0), caught_up) == (expected, True)


def test_nothing_to_do_asks_nothing():
    assert decide(progress(), True) == (None, False)
    assert decide(progress(dirty=True), True) == (None, False)  # checkpointed 0.1 s ago


def _old_rule(p, caught_up):
    """The pre-restructure worker's decision, inline (the reference)."""
    if p.pending and p.pending_since is not None and p.now - p.pending_since >= POLICY.flush_linger_seconds \
            and caught_up:
        return "flush"
    due_records = POLICY.interval_records and p.records_since_checkpoint >= POLICY.interval_records
    due_time = POLICY.interval_seconds and p.now - p.last_checkpoint_at >= POLICY.interval_seconds
    if (p.dirty and due_records) or (due_time and (p.dirty or p.has_assignment)):
        return "interval"
    if p.dirty and p.now - p.last_checkpoint_at >= POLICY.idle_seconds and caught_up:
        return "idle"
    return None


def test_same_decisions_as_the_old_rule_over_a_grid():
    grid = itertools.product([99.95, 98.0, 60.0], [0, 499, 500], [False, True], [False, True], [None, 99.9, 99.0],
                             [False, True], [False, True])
    n = 0
    for last, recs, dirty, pending, since, assigned, caught_up in grid:
        p = progress(last_checkpoint_at=last, records_since_checkpoint=recs, dirty=dirty, pending=pending,
                     pending_since=since, has_assignment=assigned)
        assert decide(p, caught_up)[0] == _old_rule(p, caught_up), p
        n += 1
    assert n == 432

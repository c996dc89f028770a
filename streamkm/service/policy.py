"""When to checkpoint: a pure function of the worker's progress and the configured policy."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Progress", "CheckpointPolicy", "due", "ASK_CAUGHT_UP"]


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    """The configured intervals (0 disables the records or seconds trigger)."""

    interval_seconds: float
    interval_records: int
    flush_linger_seconds: float
    idle_seconds: float


@dataclass(frozen=True, slots=True)
class Progress:
    """What the worker knows at one moment (times on the monotonic clock)."""

    now: float
    last_checkpoint_at: float
    records_since_checkpoint: int
    dirty: bool  # absorbed progress not yet checkpointed
    pending: bool  # rows queued for a partial chunk
    pending_since: float | None
    has_assignment: bool


def _linger_elapsed(p: Progress, policy: CheckpointPolicy) -> bool:
    return p.pending and p.pending_since is not None and p.now - p.pending_since >= policy.flush_linger_seconds


def _idle_elapsed(p: Progress, policy: CheckpointPolicy) -> bool:
    return p.dirty and p.now - p.last_checkpoint_at >= policy.idle_seconds


#: Returned by :func:`due` when the decision depends on whether the worker has caught up
#: (asking Kafka costs a round trip per unpositioned partition, so it is asked only then).
ASK_CAUGHT_UP = "ask_caught_up"


def due(p: Progress, policy: CheckpointPolicy, *, caught_up: bool | None = None) -> str | None:
    """The reason to checkpoint now, or None; :data:`ASK_CAUGHT_UP` if that depends on *caught_up*
    and it is None (call again with the answer).

    - ``"flush"``: caught up with a partial chunk queued for ``flush_linger_seconds``:
      absorb it (the caller flushes the pipelines first), then checkpoint.
    - ``"interval"``: ``interval_records`` absorbed, or ``interval_seconds`` passed
      (also when idle with an assignment, so the checkpoint age stays a liveness signal).
    - ``"idle"``: caught up with un-checkpointed progress for ``idle_seconds``: the
      cheapest moment to make progress durable and commit it.

    Examples
    --------
    >>> pol = CheckpointPolicy(interval_seconds=30, interval_records=500, flush_linger_seconds=0.5,
    ...                        idle_seconds=1.0)
    >>> p = Progress(now=10.0, last_checkpoint_at=0.0, records_since_checkpoint=10, dirty=True,
    ...              pending=False, pending_since=None, has_assignment=True)
    >>> due(p, pol), due(p, pol, caught_up=False), due(p, pol, caught_up=True)
    ('ask_caught_up', None, 'idle')
    """
    if _linger_elapsed(p, policy):
        if caught_up is None:
            return ASK_CAUGHT_UP
        if caught_up:
            return "flush"
    due_records = bool(policy.interval_records) and p.records_since_checkpoint >= policy.interval_records
    due_time = bool(policy.interval_seconds) and p.now - p.last_checkpoint_at >= policy.interval_seconds
    if (p.dirty and due_records) or (due_time and (p.dirty or p.has_assignment)):
        return "interval"
    if _idle_elapsed(p, policy):
        if caught_up is None:
            return ASK_CAUGHT_UP
        if caught_up:
            return "idle"
    return None

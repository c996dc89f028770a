"""An offline fold of a stats log, in the ordering the group ran with.

A live reducer folds the stats log in one of two orders (``group.ordering``): ``"arrival"``
folds each message as it is read (:meth:`GroupModel.fold`); ``"rounds"`` queues chunks per
source partition and folds rounds of them, with the idle decisions the log holds as markers
(:class:`~streamkm.group.rounds.RoundFold`). Refolding a log in the other order gives other
version numbers (and another model), so tools that measure a run from its log (staleness,
the version a chunk went into) refold it here, with the fold code the reducer uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamkm.group.messages import ChunkStats, WireError
from streamkm.group.rounds import Offered, RoundFold

if TYPE_CHECKING:
    from collections.abc import Iterable

    from streamkm.group.fold import GroupModel

__all__ = ["refold_stats_log"]

_ORDERINGS = ("rounds", "arrival")


def refold_stats_log(model: GroupModel, log: Iterable[tuple[int, bytes | None]], *, ordering: str,
                     expect: Iterable[str] | None = None, drain: bool = False) -> list[Offered]:
    """Fold a stats log into *model* as a reducer with ``group.ordering = ordering`` does.

    Parameters
    ----------
    model : GroupModel
        The fold to feed (modified in place): a fresh one, for a log read from its start.
    log : iterable of (int, bytes or None)
        ``(offset, value)`` of the stats partition's messages, in log order.
    ordering : {"rounds", "arrival"}
        The ordering the group ran with.
    expect : iterable of str, optional
        ``rounds`` (required): the source partitions (``"topic:partition"``) every round waits
        for, as the live reducer waits for every partition of the input topic (without them a
        round would wait only for the partitions that have sent: log order). Ignored for
        ``arrival``.
    drain : bool
        ``rounds``: at the end of *log*, also fold what is still waiting for its round (as
        ``streamkm replay`` does at the end of its input; a live reducer that has read this far
        has not folded it). Ignored for ``arrival``, where nothing waits.

    Returns
    -------
    list of Offered
        What became of each message, in fold order: ``outcome.version`` of an accepted chunk
        is the version it made, so it was folded into version ``outcome.version - 1``. Chunks
        still waiting for their round are not listed; idle markers only through what they fold.
    """
    if ordering not in _ORDERINGS:
        raise ValueError(f"ordering must be one of {_ORDERINGS}, got {ordering!r}")
    out: list[Offered] = []
    if ordering == "arrival":
        for offset, value in log:
            msg = ChunkStats.from_bytes(value)
            if isinstance(msg, WireError):  # the arrival reducer skips it (an idle marker too)
                out.append(Offered(offset, None, model.skip(offset, str(msg)), "invalid"))
            else:
                outcome = model.fold(msg, offset)
                out.append(Offered(offset, msg, outcome, outcome.status))
        return out
    keys = list(expect or ())
    if not keys:
        raise ValueError("ordering='rounds' needs expect: the partitions ('topic:partition') every round waits for")
    rounds = RoundFold(model)
    rounds.expect(keys)
    for offset, value in log:
        out += rounds.offer_bytes(value, offset)
    if drain:
        out += rounds.drain()
    return [o for o in out if o.status != "queued"]

"""Folding in rounds: the group model as a function of the records, not of their timing.

With ``group.ordering = "rounds"`` workers send each chunk's rows (not a summary against the
version they hold), and the reducer does not fold statistics in stats-log order. It queues
them per source partition, and folds **rounds**: round *r* is the next chunk of every active
partition, folded in partition order. A chunk's bounds depend on the data only
(:class:`~streamkm.group.GroupChunker`), so the model after any number of rounds is a function
of each partition's records in offset order and of the settings, whichever member sent what
when. ``streamkm replay`` drives the same :class:`RoundFold` offline.

**Idle partitions.** A round waits for every active partition. A partition with nothing
queued while another partition's chunk has waited ``idle_seconds`` is declared *idle* and
rounds go on without it until it sends again (it then joins the next round formed). This is
the one rule that depends on time; each declaration is counted and logged, and a run with
none is reproduced exactly by a replay. Without ``idle_seconds`` (replay) rounds never wait:
at the end of the input, :meth:`RoundFold.drain` folds what is left in rounds over the
partitions that still have chunks.

**Idle markers.** A live reducer does not act on an idle declaration when it makes it: it
writes an :class:`~streamkm.group.messages.IdleMarker` to the stats log and declares the
partitions idle when it reads the marker back (:meth:`RoundFold.mark_idle`), in log order. The
time-dependent decision is then part of the log, so a reducer taking over, or any offline
fold of the log, forms exactly the same rounds.

**Recovery.** The model's ``stats_offset_`` is kept *safe*: every stats message before it has
been folded or refused. A new reducer re-reads the log from there. The reducer's snapshot
also holds the queue's metadata (:meth:`RoundFold.state_dict`: how far it had read, the log
offsets of the queued messages, the idle set), so the re-read re-queues exactly those and
skips what was already counted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamkm.group.fold import FoldOutcome
from streamkm.group.messages import ChunkStats, IdleMarker, WireError, parse_partition_key, read_stats_log

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from streamkm.group.fold import GroupModel

__all__ = ["RoundFold", "Offered"]


@dataclass(slots=True)
class Offered:
    """What became of one stats message: folded now (``outcome``), queued, or refused."""

    offset: int
    msg: ChunkStats | None
    outcome: FoldOutcome | None  # None while queued
    status: str  # accepted | queued | duplicate | overlap | gap | invalid


def _order(key: str) -> tuple[str, int]:
    return parse_partition_key(key)


class RoundFold:
    """A :class:`GroupModel` fed stats messages in log order and folding them in rounds.

    Parameters
    ----------
    model : GroupModel
        The fold (its acceptance rule and update are used unchanged).
    idle_seconds : float or None
        How long a queued chunk waits for a partition with nothing queued before that
        partition is declared idle; None: never (offline replay, ended by :meth:`drain`).
    on_fold : callable, optional
        ``on_fold(offered)`` right after each message of a round is folded (the model is then
        exactly as that message left it: per-chunk logs).
    """

    def __init__(self, model: GroupModel, *, idle_seconds: float | None = None,
                 on_fold: Callable[[Offered], None] | None = None):
        if idle_seconds is not None and not idle_seconds > 0:
            raise ValueError(f"idle_seconds must be > 0 or None, got {idle_seconds!r}")
        self.model = model
        self.idle_seconds = idle_seconds
        self.on_fold = on_fold
        self._queues: dict[str, deque[tuple[int, ChunkStats, float]]] = {}
        self._tails: dict[str, int] = {}
        self._expected: set[str] | None = None  # unknown until expect(): no round is folded before
        self.idle: set[str] = set()
        #: Partitions declared idle so far (each declaration once).
        self.n_idle = 0
        #: Rounds folded so far.
        self.n_rounds = 0
        self._read_to = model.stats_offset_
        #: Restored from a snapshot: log offsets (<= read_to) of the messages that were queued.
        self._requeue: set[int] = set()

    # ------------------------------------------------------------------ partitions
    def expect(self, keys: Iterable[str]) -> None:
        """Source partitions (``"topic:partition"``) every round waits for, unless idle. No round
        is folded before the first call (:meth:`drain` aside)."""
        self._expected = set(keys)

    def end(self, key: str) -> list[Offered]:
        """Partition *key* has ended (offline replay): rounds stop waiting for it once its queued
        chunks are folded, as a live reducer stops once it is idle; returns what that folds."""
        if self._expected is not None:
            self._expected.discard(key)
        out = self._fold_ready()
        self._sync_offset()
        return out

    @property
    def read_to(self) -> int:
        """The last stats-log offset offered."""
        return self._read_to

    @property
    def next_offset(self) -> int:
        """The first stats-log offset still to offer: the oldest message to re-queue after
        :meth:`load_state_dict`, else the one after :attr:`read_to`."""
        return min(self._requeue) if self._requeue else self._read_to + 1

    def tails(self) -> dict[str, int]:
        """Per partition, the end of the last chunk accepted (folded or queued)."""
        return {**self.model.offsets_, **self._tails}

    @property
    def queued(self) -> int:
        """Messages waiting for their round."""
        return sum(len(q) for q in self._queues.values())

    def _active(self) -> set[str]:
        return ((self._expected or set()) | {k for k, q in self._queues.items() if q}) - self.idle

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The queue's metadata for the reducer's snapshot (the messages themselves stay in the log)."""
        return {"read_to": self._read_to, "queued": self.waiting(),
                "idle": sorted(self.idle, key=_order), "n_idle": self.n_idle, "n_rounds": self.n_rounds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` over a fold restored from the same snapshot: re-reading the
        log from ``model.stats_offset_ + 1`` then re-queues the queued messages and skips the rest
        up to ``read_to`` (already counted). ValueError if inconsistent (nothing changes then)."""
        read_to, queued, idle = state.get("read_to"), state.get("queued"), state.get("idle")
        if type(read_to) is not int or not isinstance(queued, list) or not all(type(o) is int for o in queued) \
                or not isinstance(idle, list) or not all(isinstance(k, str) for k in idle):
            raise ValueError("rounds state needs read_to, queued offsets and idle partitions")
        if read_to < self.model.stats_offset_ or any(not self.model.stats_offset_ < o <= read_to for o in queued):
            raise ValueError(f"rounds state (read to {read_to}, queued {queued[:3]}...) does not fit the fold's "
                             f"stats offset {self.model.stats_offset_}")
        if self.queued:
            raise ValueError("restore before offering any message")
        self._read_to = read_to
        self._requeue = set(queued)
        self.idle = set(idle)
        self.n_idle = int(state.get("n_idle", 0))
        self.n_rounds = int(state.get("n_rounds", 0))

    def waiting(self) -> list[int]:
        """The stats-log offsets of the queued messages, ascending."""
        return sorted(o for q in self._queues.values() for o, _, _ in q)

    def wants(self, offset: int) -> bool:
        """Whether the message at log *offset* is still to be offered (it is after what was
        read, or a queued message of a restored snapshot)."""
        return offset > self._read_to or offset in self._requeue

    # ------------------------------------------------------------------ input
    def offer_bytes(self, value: bytes | None, offset: int, *, now: float = 0.0) -> list[Offered]:
        """:meth:`offer` or :meth:`mark_idle` for the raw stats-log message at *offset*."""
        got = read_stats_log(value)
        if isinstance(got, IdleMarker):
            return self.mark_idle(dict(zip(got.keys, got.tails, strict=True)), offset)[0]
        if isinstance(got, WireError):
            return self.offer(None, offset, now=now, reason=str(got))
        return self.offer(got, offset, now=now)

    def offer(self, msg: ChunkStats | None, offset: int, *, now: float = 0.0, reason: str = "") -> list[Offered]:
        """Take the stats message at log *offset* (None: undecodable, *reason* says why).

        Returns what became of it and of every message a round folded as a result (in fold order).
        After :meth:`load_state_dict`, offer only what :meth:`wants`.
        """
        if offset in self._requeue:  # queued when the snapshot was taken: queue it again, uncounted
            self._requeue.discard(offset)
            if msg is not None:
                key = msg.key
                self._queues.setdefault(key, deque()).append((offset, msg, now))
                self._tails[key] = int(msg.end_offset)
                again = [Offered(offset, msg, None, "queued"), *self._fold_ready()]
                self._sync_offset()
                return again
            return []
        if offset <= self._read_to:
            raise ValueError(f"stats offset {offset} is not after {self._read_to} (log order)")
        self._read_to = int(offset)
        out: list[Offered] = []
        if msg is None:
            self.model.count("invalid")
            out.append(Offered(offset, None, FoldOutcome("invalid", reason=reason, version=self.model.version_),
                               "invalid"))
        else:
            key = msg.key
            expected = self._tails.get(key, self.model.offsets_.get(key))
            status = self.model.classify(msg, expected)
            if status == "accepted":
                self._queues.setdefault(key, deque()).append((offset, msg, now))
                self._tails[key] = int(msg.end_offset)
                self.idle.discard(key)
                out.append(Offered(offset, msg, None, "queued"))
            else:
                self.model.count(status)
                why = self.model.invalid_reason(msg) if status == "invalid" else ""
                out.append(Offered(offset, msg, FoldOutcome(status, expected=expected, reason=why,
                                                            version=self.model.version_), status))
        out += self._fold_ready()
        self._sync_offset()
        return out

    def due_idle(self, now: float) -> dict[str, int]:
        """The partitions a queued chunk has waited for longer than ``idle_seconds`` (not yet
        declared idle), each with its tail (-1: none): what a live reducer writes in an
        :class:`IdleMarker`."""
        if self.idle_seconds is None:
            return {}
        heads = [q[0][2] for q in self._queues.values() if q]
        if not heads or now - min(heads) < self.idle_seconds:
            return {}
        return {k: self._tail(k) for k in sorted((k for k in self._active() if not self._queues.get(k)), key=_order)}

    def _tail(self, key: str) -> int:
        t = self._tails.get(key, self.model.offsets_.get(key))
        return -1 if t is None else int(t)

    def tick(self, now: float) -> tuple[list[Offered], list[str]]:
        """Declare idle at once the partitions :meth:`due_idle` names, and fold the rounds that
        completes; returns (folded, partitions declared idle). (A live reducer writes a marker
        instead and calls :meth:`mark_idle` when it reads it back.)"""
        missing = list(self.due_idle(now))
        if not missing:
            return [], []
        return self._declare(missing)

    def mark_idle(self, tails: Mapping[str, int], offset: int | None = None) -> tuple[list[Offered], list[str]]:
        """An idle marker read at log *offset*: declare idle those partitions of *tails* that
        still have nothing queued and no chunk accepted since the decision (their tail unchanged;
        one that sent meanwhile stays active), and fold what that completes; returns (folded,
        partitions declared idle)."""
        if offset is not None:
            if offset <= self._read_to:
                raise ValueError(f"stats offset {offset} is not after {self._read_to} (log order)")
            self._read_to = int(offset)
        missing = sorted((k for k, t in tails.items()
                          if not self._queues.get(k) and k not in self.idle and self._tail(k) == t), key=_order)
        out, declared = self._declare(missing) if missing else ([], [])
        self._sync_offset()
        return out, declared

    def _declare(self, missing: list[str]) -> tuple[list[Offered], list[str]]:
        self.idle.update(missing)
        self.n_idle += len(missing)
        out = self._fold_ready()
        self._sync_offset()
        return out, missing

    def drain(self) -> list[Offered]:
        """The input has ended: fold everything queued, in rounds over the partitions with chunks."""
        out: list[Offered] = []
        while self.queued:
            out += self._fold_round(sorted((k for k, q in self._queues.items() if q), key=_order))
        self._sync_offset()
        return out

    # ------------------------------------------------------------------ rounds
    def _fold_ready(self) -> list[Offered]:
        out: list[Offered] = []
        if self._expected is None:  # which partitions a round needs is not known yet
            return out
        while True:
            active = self._active()
            if not active or any(not self._queues.get(k) for k in active):
                return out
            out += self._fold_round(sorted(active, key=_order))

    def _fold_round(self, keys: list[str]) -> list[Offered]:
        self.n_rounds += 1
        out = []
        for key in keys:
            offset, msg, _ = self._queues[key].popleft()
            outcome = self.model.apply(msg)
            if outcome.status != "accepted":
                # Refused by the model itself (its validation): what was queued behind it no longer
                # follows on; drop it, so that the partition's sender realigns to the model.
                self._tails[key] = self.model.offsets_.get(key, msg.first_offset)
                for later_offset, later, _ in self._queues.pop(key, deque()):
                    self.model.count("gap")
                    out.append(Offered(later_offset, later, FoldOutcome("gap", expected=self._tails[key],
                                                                        version=self.model.version_), "gap"))
            done = Offered(offset, msg, outcome, outcome.status)
            if self.on_fold is not None:
                self.on_fold(done)
            out.append(done)
        return out

    def _sync_offset(self) -> None:
        """``stats_offset_``: every message before the oldest queued one is folded or refused."""
        oldest = min((q[0][0] for q in self._queues.values() if q), default=None)
        self.model.stats_offset_ = self._read_to if oldest is None else oldest - 1

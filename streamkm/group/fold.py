"""The reducer's fold: statistics messages, in stats-log order, into one versioned model.

:class:`GroupModel` is deterministic: the same stats log gives the same versions,
bit for bit, on any machine and after any failover. That is what lets a new
reducer recover from a snapshot plus a replay of the log, and what makes the
acceptance rule below an exactly-once effect on the model.

**Acceptance rule.** Each source partition has a next expected offset. A message
is folded only if its ``first_offset`` equals it (or the partition is new);
then the expected offset becomes its ``end_offset``. A message entirely below it
is a *duplicate* (a re-read after a crash or a rebalance), one that straddles it
an *overlap* (a re-read cut at other boundaries), one above it a *gap* (records
the model has not seen would be skipped). None of these is folded; all are
counted, and the worker that sent them realigns to the published offsets.

**Staleness.** A worker summarises against the version it holds; the statistics
are folded by stable cluster id into whatever version the reducer is at. Ids
retired since then fold into their successor (the nearest new centre), so no
point is lost. Workers bound how stale they get (``group.max_in_flight``); the
rule and its comparison with Flink's global batches are in docs/operations.md.

**Update.** The decayed mini-batch rule of Spark's ``StreamingKMeans`` and Flink
ML's ``OnlineKMeans``, applied by :meth:`StreamingKMeans.partial_fit_stats` (the
same kernel as ``partial_fit``). Dying-cluster replacement, interval and drift
reseeds happen here, and every change of centres is matched to the previous ones
(:func:`streamkm.cluster.match_clusters`) so that cluster ids survive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streamkm.cluster import MAX_ABS_VALUE, StreamingKMeans, Transition, match_clusters
from streamkm.drift import DriftMonitor
from streamkm.group.messages import ChunkStats, ModelVersion

__all__ = ["GroupModel", "FoldOutcome", "OUTCOMES", "GROUP_STATE_FORMAT"]

#: What :meth:`GroupModel.fold` can do with a message.
OUTCOMES = ("accepted", "duplicate", "overlap", "gap", "invalid")

GROUP_STATE_FORMAT = "streamkm.group_model"
_STATE_VERSION = 1


class _Refused(Exception):
    """The model refused a message before changing anything."""


@dataclass(slots=True)
class FoldOutcome:
    """What one :meth:`GroupModel.fold` did.

    Attributes
    ----------
    status : str
        One of :data:`OUTCOMES`.
    expected : int or None
        The partition's next expected offset before the message.
    reason : str
        Why an ``invalid`` message was refused.
    transitions : tuple of Transition
        Cluster identity changes this message caused (reseed, replacement, init).
    events : list of dict
        ``{"event": "initialized" | "reseed" | "drift", ...}`` for the logs.
    version : int
        The model version after this message (its transitions belong to it).
    """

    status: str
    expected: int | None = None
    reason: str = ""
    transitions: tuple[Transition, ...] = ()
    events: list[dict[str, Any]] = field(default_factory=list)
    version: int = 0


class GroupModel:
    """One pipeline's group model: a :class:`StreamingKMeans` folded from statistics.

    Parameters
    ----------
    pipeline : str
        The pipeline whose stats it folds (messages of another are ``invalid``).
    model_kwargs : dict
        ``StreamingKMeans`` keyword arguments.
    drift_kwargs : dict or None
        ``DriftMonitor`` arguments (on the per-message objective); None: off.
    reseed_on_drift : bool
    identity_threshold : float or None
        Largest distance at which a new centre inherits an old centre's id
        (None: half the smallest distance between the old centres).
    config_hash : str
        Copied into every version (which settings produced it).

    Examples
    --------
    >>> import numpy as np
    >>> from streamkm.group.messages import ChunkStats
    >>> def raw(first, rows):
    ...     e = np.empty(0)
    ...     return ChunkStats("vectors", "t", 0, first, first + len(rows), 0, len(rows), e.astype(np.int64),
    ...                       e.astype(np.int64), np.empty((0, 2)), e, np.empty((0, 2), np.float32),
    ...                       np.asarray(rows, np.float32))
    >>> g = GroupModel(pipeline="vectors", model_kwargs={"n_clusters": 2, "seed": 0})
    >>> X = np.array([[0, 0], [0, 1], [9, 9], [9, 8], [0, 0.5], [9, 8.5]])
    >>> g.fold(raw(0, X), 0).status, g.version_, g.ids_.tolist()
    ('accepted', 1, [0, 1])
    >>> g.fold(raw(0, X), 1).status, g.fold(raw(4, X[:3]), 2).status, g.fold(raw(7, X[:1]), 3).status
    ('duplicate', 'overlap', 'gap')
    >>> g.fold(raw(6, X[:2]), 4).status, float(g.model.counts_.sum()), g.offsets_
    ('accepted', 8.0, {'t:0': 8})
    """

    def __init__(self, *, pipeline: str, model_kwargs: dict[str, Any], drift_kwargs: dict[str, Any] | None = None,
                 reseed_on_drift: bool = True, identity_threshold: float | None = None, config_hash: str = ""):
        self.pipeline = pipeline
        self.model_kwargs = dict(model_kwargs)
        self.drift_kwargs = None if drift_kwargs is None else dict(drift_kwargs)
        self.reseed_on_drift = bool(reseed_on_drift)
        self.identity_threshold = identity_threshold
        self.config_hash = config_hash
        self.model = StreamingKMeans(**self.model_kwargs)
        self.drift = None if self.drift_kwargs is None else DriftMonitor(**self.drift_kwargs)
        self.ids_: NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self.next_id_ = 0
        #: Retired or absorbed id -> the current id its statistics fold into.
        self.successors_: dict[int, int] = {}
        self.version_ = 0
        self.stats_offset_ = -1
        self.offsets_: dict[str, int] = {}
        self.counters_ = {status: 0 for status in OUTCOMES}
        self.n_drift_ = 0
        self.n_drift_reseeds_ = 0

    # ------------------------------------------------------------------ fold
    def fold(self, msg: ChunkStats, stats_offset: int) -> FoldOutcome:
        """Fold the stats message at *stats_offset* of the log (if the acceptance rule allows).

        *stats_offset* must increase from call to call (log order); every message,
        folded or not, advances :attr:`stats_offset_`.
        """
        if stats_offset <= self.stats_offset_:
            raise ValueError(f"stats offset {stats_offset} is not after {self.stats_offset_} (log order)")
        self.stats_offset_ = int(stats_offset)
        return self.apply(msg)

    def classify(self, msg: ChunkStats, expected: int | None) -> str:
        """The acceptance rule: ``accepted``, ``duplicate``, ``overlap`` or ``gap`` of *msg* against
        the partition's next *expected* offset (None: a partition new to the model), or ``invalid``."""
        if self._invalid(msg):
            return "invalid"
        if expected is None or msg.first_offset == expected:
            return "accepted"
        if msg.end_offset <= expected:
            return "duplicate"
        return "overlap" if msg.first_offset < expected else "gap"

    def invalid_reason(self, msg: ChunkStats) -> str:
        """Why *msg* cannot be folded into this model ("" if it can)."""
        return self._invalid(msg)

    def count(self, status: str) -> None:
        """Count a message the caller decided on (:class:`~streamkm.group.rounds.RoundFold`)."""
        self.counters_[status] += 1

    def apply(self, msg: ChunkStats) -> FoldOutcome:
        """:meth:`fold` without the log-order bookkeeping (:attr:`stats_offset_` is the caller's):
        the acceptance rule, then the update."""
        expected = self.offsets_.get(msg.key)
        status = self.classify(msg, expected)
        out = FoldOutcome(status=status, expected=expected, reason=self._invalid(msg) if status == "invalid" else "")
        if status == "accepted":
            try:
                self._apply(msg, out)
            except _Refused as exc:  # refused by the model's own validation: it is unchanged
                out = FoldOutcome(status="invalid", expected=expected, reason=str(exc))
            else:
                self.offsets_[msg.key] = int(msg.end_offset)
                self.version_ += 1
        out.version = self.version_
        self.counters_[out.status] += 1
        return out

    def skip(self, stats_offset: int, reason: str = "") -> FoldOutcome:
        """Count the undecodable message at *stats_offset* as ``invalid`` and move past it."""
        if stats_offset <= self.stats_offset_:
            raise ValueError(f"stats offset {stats_offset} is not after {self.stats_offset_} (log order)")
        self.stats_offset_ = int(stats_offset)
        self.counters_["invalid"] += 1
        return FoldOutcome(status="invalid", reason=reason, version=self.version_)

    def _invalid(self, msg: ChunkStats) -> str:
        if msg.pipeline != self.pipeline:
            return f"pipeline {msg.pipeline!r}, expected {self.pipeline!r}"
        d = self.model.n_features_in_
        width = next((a.shape[1] for a in (msg.rows, msg.sums, msg.sample) if a.shape[0]), None)
        if d is not None and width is not None and width != d:
            return f"expected {d} features, got {width}"
        for name, arr in (("rows", msg.rows), ("sample", msg.sample)):
            # max |x| without an |arr| temporary (rows are a whole chunk); rows and sample are finite
            if arr.shape[0] and max(float(arr.max()), -float(arr.min())) > MAX_ABS_VALUE:
                return f"{name} hold values above {MAX_ABS_VALUE:.3g} in magnitude"
        if msg.ids.shape[0]:
            if np.unique(msg.ids).size != msg.ids.shape[0]:
                return "duplicate cluster ids"
            if not self.model.is_initialized_:
                return "summarised statistics but the model is not initialized"
            known = set(self.ids_.tolist()) | set(self.successors_)
            unknown = sorted(set(msg.ids.tolist()) - known)
            if unknown:
                return f"unknown cluster ids {unknown[:5]}"
        return ""

    def _apply(self, msg: ChunkStats, out: FoldOutcome) -> None:
        m = self.model
        if msg.n_points == 0:
            return  # only invalid records: the offsets move, the model does not
        was_init = bool(m.is_initialized_)
        before = None if not was_init else np.array(m.cluster_centers_, dtype=np.float64)
        changes = (m.n_reseeds_, m.n_dying_replaced_)
        if msg.rows.shape[0]:
            try:
                m.partial_fit(msg.rows)
            except ValueError as exc:  # validated before anything changed
                raise _Refused(str(exc)) from None
        else:
            k = self.ids_.shape[0]
            pos = {int(cid): j for j, cid in enumerate(self.ids_.tolist())}
            target = np.array([pos[self.successors_.get(int(cid), int(cid))] for cid in msg.ids.tolist()],
                              dtype=np.int64)
            counts = np.zeros(k, dtype=np.float64)
            ssd = np.zeros(k, dtype=np.float64)
            sums = np.zeros((k, msg.sums.shape[1]), dtype=np.float64)
            np.add.at(counts, target, msg.counts)
            np.add.at(ssd, target, msg.sq_dist_sums)
            np.add.at(sums, target, msg.sums)
            try:
                m.partial_fit_stats(counts, sums, ssd, msg.sample)
            except ValueError as exc:  # validated before anything changed
                raise _Refused(str(exc)) from None
        if not m.is_initialized_:
            return
        if not was_init:
            k = int(m.n_clusters)
            self.ids_ = np.arange(k, dtype=np.int64)
            self.next_id_ = k
            # Distance 0: the first centres have no predecessor (inf would not be valid JSON in the events).
            out.transitions = tuple(Transition("born", j, None, 0.0) for j in range(k))
            out.events.append({"event": "initialized", "n_seen": int(m.n_seen_)})
            return
        if (m.n_reseeds_, m.n_dying_replaced_) != changes:
            if m.n_reseeds_ != changes[0]:
                out.events.append({"event": "reseed", "trigger": "interval", "accepted": True,
                                   "n_reseeds": int(m.n_reseeds_)})
            assert before is not None
            self._rematch(before, out)
        obj = m.last_batch_objective_
        if self.drift is not None and obj is not None and np.isfinite(obj) and self.drift.update(float(obj)):
            self.n_drift_ += 1
            ev: dict[str, Any] = {"event": "drift", "objective": float(obj), "n_batches": int(m.n_batches_),
                                  "n_drift": self.n_drift_}
            if self.reseed_on_drift:
                before = np.array(m.cluster_centers_, dtype=np.float64)
                accepted = bool(m.reseed())
                self.n_drift_reseeds_ += int(accepted)
                ev["reseed_accepted"] = accepted
                if accepted:
                    self._rematch(before, out)
            out.events.append(ev)

    def _rematch(self, before: NDArray[np.float64], out: FoldOutcome) -> None:
        """Carry the cluster ids from *before* to the model's new centres."""
        after = np.array(self.model.cluster_centers_, dtype=np.float64)
        match = match_clusters(before, self.ids_, after, next_id=self.next_id_, threshold=self.identity_threshold)
        self.ids_ = np.asarray(match.ids, dtype=np.int64)
        self.next_id_ = int(match.next_id)
        current = set(self.ids_.tolist())
        succ = {old: new for old, new in self.successors_.items()}
        succ.update({int(a): int(b) for a, b in match.successors.items()})
        for old, new in list(succ.items()):  # chains: a successor retired since
            while new not in current:
                new = succ[new]
            succ[old] = new
        self.successors_ = succ
        out.transitions = out.transitions + tuple(match.transitions)

    # ------------------------------------------------------------------ output
    def version(self, *, published_at: float = 0.0) -> ModelVersion:
        """The current state as a :class:`ModelVersion` (arrays copied)."""
        m = self.model
        init = bool(m.is_initialized_)
        d = int(m.n_features_in_ or 0)
        return ModelVersion(
            pipeline=self.pipeline, version=self.version_, stats_offset=self.stats_offset_,
            offsets=dict(self.offsets_),
            centers=np.array(m.cluster_centers_, dtype=np.float64) if init else np.empty((0, d)),
            weights=np.array(m.counts_, dtype=np.float64) if init else np.empty(0),
            ids=self.ids_.copy(), next_id=self.next_id_, n_seen=int(m.n_seen_),
            dtype=_dtype_of(m),
            config_hash=self.config_hash, counters=dict(self.counters_), published_at=published_at,
            summary={"last_batch_objective": _finite(m.last_batch_objective_),
                     "ewm_objective": _finite(m.ewm_objective_), "last_center_shift": _finite(m.last_center_shift_),
                     "n_reseeds": int(m.n_reseeds_), "n_reseeds_rejected": int(m.n_reseeds_rejected_),
                     "n_dying_replaced": int(m.n_dying_replaced_), "n_drift": self.n_drift_})

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything the fold depends on (the reducer's snapshot)."""
        succ = sorted(self.successors_.items())
        return {
            "format": GROUP_STATE_FORMAT, "version": _STATE_VERSION, "pipeline": self.pipeline,
            "model": self.model.state_dict(),
            "drift": None if self.drift is None else self.drift.state_dict(),
            "ids": self.ids_.copy(), "next_id": self.next_id_,
            "successors": np.array(succ, dtype=np.int64).reshape(-1, 2),
            "model_version": self.version_, "stats_offset": self.stats_offset_,
            "offsets": dict(self.offsets_), "counters": dict(self.counters_),
            "n_drift": self.n_drift_, "n_drift_reseeds": self.n_drift_reseeds_,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (ValueError naming the problem; unchanged on error)."""
        if state.get("format") != GROUP_STATE_FORMAT or int(state.get("version", -1)) != _STATE_VERSION:
            raise ValueError(f"not a group model state (format {state.get('format')!r}, "
                             f"version {state.get('version')!r})")
        if state.get("pipeline") != self.pipeline:
            raise ValueError(f"state of pipeline {state.get('pipeline')!r}, expected {self.pipeline!r}")
        try:
            model = StreamingKMeans(**self.model_kwargs)
            model.load_state_dict(state["model"])
            ids = np.asarray(state["ids"], dtype=np.int64)
            k = 0 if not model.is_initialized_ else int(model.n_clusters)
            if ids.shape != (k,):
                raise ValueError(f"ids of shape {ids.shape} for a model with {k} centres")
            drift = None
            if self.drift_kwargs is not None:
                drift = DriftMonitor(**self.drift_kwargs)
                if state.get("drift") is not None:
                    drift.load_state_dict(state["drift"])
            succ = np.asarray(state["successors"], dtype=np.int64).reshape(-1, 2)
            scalars = {name: int(state[key]) for name, key in (
                ("next_id_", "next_id"), ("version_", "model_version"), ("stats_offset_", "stats_offset"),
                ("n_drift_", "n_drift"), ("n_drift_reseeds_", "n_drift_reseeds"))}
            offsets = {str(a): int(b) for a, b in state["offsets"].items()}
            counters = {status: int(state["counters"].get(status, 0)) for status in OUTCOMES}
        except KeyError as exc:
            raise ValueError(f"group model state lacks {exc}") from None
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"group model state is malformed ({exc})") from None
        # --- nothing was modified above this line ---
        self.model, self.drift, self.ids_ = model, drift, ids
        self.successors_ = {int(a): int(b) for a, b in succ.tolist()}
        for name, value in scalars.items():
            setattr(self, name, value)
        self.offsets_ = offsets
        self.counters_ = counters

def _finite(v: float | None) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def _dtype_of(model: StreamingKMeans) -> str:
    centers = model.cluster_centers_
    return "float32" if centers is None else str(centers.dtype)

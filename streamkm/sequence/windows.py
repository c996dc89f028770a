"""Per-key event windows: tumbling, sliding and session windows over a keyed stream.

:class:`EventWindower` buffers each key's events and returns the windows that
became ready as a :class:`WindowBatch` (keys, zero-padded (B, T, F) float32
array, lengths, end timestamps), ready for
:meth:`streamkm.sequence.LSTMEncoder.embed`. Driven only by event order and
timestamps, never the wall clock, so replays and restored checkpoints yield the
same windows. Exact semantics (kinds, watermark, lateness, eviction): docs/lstm.md,
section 4.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray

from streamkm.sequence._window_state import (
    REASONS,
    SESSION_INITIAL_CAPACITY,
    STATE_VERSION,
    Collector,
    KeyState,
    as_count,
    check_events,
    decode_state,
    encode_keys,
)

__all__ = ["EventWindower", "WindowBatch"]

_KINDS = ("tumbling", "sliding", "session")
_ON_EVICT = ("flush", "drop")


@dataclass(eq=False)
class WindowBatch:
    """Windows that became ready, as one zero-padded batch.

    Attributes
    ----------
    keys : list of str, length B
        Key of each window (a key can appear several times).
    X : ndarray of shape (B, T, F), float32
        Events of each window in arrival order, zero-padded after
        ``lengths[b]`` steps; ``T = lengths.max()``.
    lengths : ndarray of shape (B,), int64
        Number of events in each window (>= 1).
    end_ts : ndarray of shape (B,), float64
        Largest timestamp in each window.
    trigger : ndarray of shape (B,), int64, optional
        Index, within the :meth:`EventWindower.add` call, of the event that made each
        window ready (``n``, the batch size, for windows closed at the batch's end by an
        eviction; None for :meth:`EventWindower.flush`). Non-decreasing. The group model
        maps it to the source record, so a chunk of windows ends at a record boundary.
    """

    keys: list[str]
    X: np.ndarray
    lengths: np.ndarray
    end_ts: np.ndarray
    trigger: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.keys)


class EventWindower:
    """Per-key tumbling, sliding or session windows over an event stream.

    Parameters
    ----------
    n_features : int
        Feature dimension ``F`` of every event.
    kind : {"tumbling", "sliding", "session"}, default="tumbling"
        Window kind (exact semantics: docs/lstm.md, section 4).
    size : int, default=32
        Events per window (tumbling, sliding); unused for sessions.
    stride : int or None, default=None
        Events between the starts of consecutive sliding windows (required
        for ``"sliding"``); unused otherwise.
    gap : float or None, default=None
        Inactivity gap in event-time units closing a session (required for
        ``"session"``); unused otherwise.
    max_keys : int, default=10_000
        Keys tracked after each :meth:`add`; least recently updated keys
        beyond it are evicted.
    max_events_per_key : int, default=1024
        Buffered events per key; a longer session is split.  Must be
        ``>= size`` for count windows.
    on_evict : {"flush", "drop"}, default="flush"
        Whether an evicted or split buffer is emitted or discarded.
    allowed_lateness : float, default=0.0
        How far (in event time) an event may be older than its key's newest
        event and still be accepted; older events are dropped and counted.

    Attributes
    ----------
    n_open_keys : int
        Keys with at least one buffered event.
    n_tracked_keys : int
        Keys with state (also those whose buffer is empty but whose newest
        timestamp, sliding position or session is kept); at most
        ``max_keys`` after each :meth:`add`.
    n_open_events : int
        Buffered events over all keys.
    watermark_ : float
        Largest timestamp seen (``-inf`` before the first event).
    n_emitted_ : int
        Windows emitted so far.
    n_evicted_ : dict of str to int
        Evictions by reason (``"max_keys"``, ``"max_events_per_key"``).
    n_dropped_events_ : int
        Events discarded by ``on_evict="drop"``.
    n_late_dropped_ : int
        Events dropped for being later than ``allowed_lateness``.
    n_events_ : int
        Events passed to :meth:`add` (accepted or not).

    Examples
    --------
    >>> import numpy as np
    >>> w = EventWindower(2, kind="tumbling", size=2)
    >>> X = np.arange(10, dtype=np.float32).reshape(5, 2)
    >>> out = w.add(["a", "b", "a", "a", "a"], np.arange(5.0), X)
    >>> out.keys, out.X.shape, out.lengths.tolist(), out.end_ts.tolist()
    (['a', 'a'], (2, 2, 2), [2, 2], [2.0, 4.0])
    >>> out.X[1].tolist()
    [[6.0, 7.0], [8.0, 9.0]]
    >>> last = w.flush()
    >>> last.keys, last.lengths.tolist()
    (['b'], [1])

    References
    ----------
    Akidau, T. et al. (2015). The Dataflow Model. PVLDB 8(12), 1792-1803.
    """

    def __init__(self, n_features: int, *, kind: str = "tumbling", size: int = 32, stride: int | None = None,
                 gap: float | None = None, max_keys: int = 10_000, max_events_per_key: int = 1024,
                 on_evict: str = "flush", allowed_lateness: float = 0.0) -> None:
        self.n_features = n_features
        self.kind = kind
        self.size = size
        self.stride = stride
        self.gap = gap
        self.max_keys = max_keys
        self.max_events_per_key = max_events_per_key
        self.on_evict = on_evict
        self.allowed_lateness = allowed_lateness
        self._validate_params()
        self._keys: OrderedDict[str, KeyState] = OrderedDict()
        self.watermark_ = -math.inf
        self.n_emitted_ = 0
        self.n_evicted_ = {r: 0 for r in REASONS}
        self.n_dropped_events_ = 0
        self.n_late_dropped_ = 0
        self.n_events_ = 0

    # ------------------------------------------------------------ params
    def _validate_params(self) -> None:
        self._F = as_count("n_features", self.n_features)
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")
        if self.on_evict not in _ON_EVICT:
            raise ValueError(f"on_evict must be one of {_ON_EVICT}, got {self.on_evict!r}")
        self._max_keys = as_count("max_keys", self.max_keys)
        self._max_events = as_count("max_events_per_key", self.max_events_per_key)
        lat = self.allowed_lateness
        if isinstance(lat, bool) or not isinstance(lat, (int, float, np.integer, np.floating)):
            raise TypeError(f"allowed_lateness must be a number, got {type(lat).__name__}")
        if math.isnan(lat) or lat < 0:
            raise ValueError(f"allowed_lateness must be >= 0, got {lat}")
        self._lateness = float(lat)
        self._size = self._stride = 0
        self._gap = math.inf
        if self.kind in ("tumbling", "sliding"):
            self._size = as_count("size", self.size)
            if self._size > self._max_events:
                raise ValueError(
                    f"size ({self._size}) must be <= max_events_per_key ({self._max_events})")
            if self.kind == "tumbling":
                self._stride = self._size
            else:
                if self.stride is None:
                    raise ValueError("sliding windows need stride (events between window starts)")
                self._stride = as_count("stride", self.stride)
        else:
            g = self.gap
            if g is None:
                raise ValueError("session windows need gap (inactivity in event-time units)")
            if isinstance(g, bool) or not isinstance(g, (int, float, np.integer, np.floating)):
                raise TypeError(f"gap must be a number, got {type(g).__name__}")
            if not math.isfinite(g) or g <= 0:
                raise ValueError(f"gap must be finite and > 0, got {g}")
            self._gap = float(g)

    # ------------------------------------------------------------ properties
    @property
    def n_open_keys(self) -> int:
        return sum(1 for st in self._keys.values() if st.n)

    @property
    def n_tracked_keys(self) -> int:
        return len(self._keys)

    @property
    def n_open_events(self) -> int:
        return sum(st.n for st in self._keys.values())

    # ------------------------------------------------------------ core
    def add(self, keys: Sequence[str], ts: ArrayLike, X: ArrayLike) -> WindowBatch | None:
        """Add a batch of events; return the windows that became ready.

        Parameters
        ----------
        keys : sequence of str, length n
            Key of each event.
        ts : array-like of shape (n,), float64
            Event timestamps (finite; any unit, the same as ``gap``).
        X : array-like of shape (n, n_features)
            Feature vectors (finite), converted to float32.

        Returns
        -------
        WindowBatch or None
            The ready windows in the order they became ready, or ``None``.

        Raises
        ------
        TypeError, ValueError
            On malformed input; the windower is then unchanged.
        """
        keys, ts, X = check_events(keys, ts, X, self._F)
        n = len(keys)
        if n == 0:
            return None
        out = Collector()
        seq0 = self.n_events_
        # watermark including each event: w_incl[i] = max(watermark, ts[:i+1])
        w_incl = np.maximum.accumulate(np.maximum(ts, self.watermark_))
        uniq, inverse = np.unique(np.asarray(keys, dtype=str), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(np.bincount(inverse, minlength=len(uniq)))))
        touched: list[str] = []
        for u in range(len(uniq)):
            gidx = order[bounds[u]:bounds[u + 1]]  # this key's events, arrival order
            key = keys[gidx[0]]
            if self.kind == "session":
                self._add_session(key, gidx, w_incl, X, ts, seq0, out)
            else:
                self._add_count(key, gidx, X, ts, seq0, out)
            touched.append(key)
        # LRU order: keys updated in this batch move to the end, by last accepted event
        live = [(self._keys[k].last_seq, k) for k in touched
                if k in self._keys and self._keys[k].last_seq >= seq0]
        for _, key in sorted(live):
            self._keys.move_to_end(key)
        self.watermark_ = float(w_incl[-1])
        self.n_events_ += n
        if self.kind == "session":
            self._close_idle(w_incl, seq0, out)
        if len(self._keys) > self._max_keys:
            self._evict_lru(len(self._keys) - self._max_keys, trigger=n, out=out)
        return self._finish(out)

    def _new_state(self) -> KeyState:
        cap = self._size if self.kind != "session" else min(SESSION_INITIAL_CAPACITY,
                                                             self._max_events)
        return KeyState(cap, self._F)

    def _finish(self, out: Collector, *, triggers: bool = True) -> WindowBatch | None:
        built = out.build(self._F)
        if built is None:
            return None
        keys, X, lengths, end_ts, trigger = built
        batch = WindowBatch(keys=keys, X=X, lengths=lengths, end_ts=end_ts,
                            trigger=trigger if triggers else None)
        self.n_emitted_ += len(batch)
        return batch

    def _drop_late(self, ref: float, kts: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Running reference before each event and the late mask, from ``ref``."""
        prev = np.maximum.accumulate(np.concatenate(([ref], kts)))[:-1]
        late = kts < prev - self._lateness
        return prev, late

    def _add_count(self, key: str, gidx: NDArray[np.intp], X: NDArray[np.float32], ts: NDArray[np.float64], seq0: int,
                   out: Collector) -> None:
        """Tumbling/sliding: drop late events, append, emit every completed window."""
        st = self._keys.get(key)
        kts = ts[gidx]
        _, late = self._drop_late(st.max_ts if st is not None else -math.inf, kts)
        if late.any():
            self.n_late_dropped_ += int(late.sum())
            gidx, kts = gidx[~late], kts[~late]
            if gidx.size == 0:
                return
        if st is None:
            st = self._keys[key] = KeyState(0, self._F)
        st.max_ts = max(st.max_ts, float(kts.max()))
        st.last_seq = seq0 + int(gidx[-1])
        if st.skip:
            s = min(st.skip, gidx.size)
            st.skip -= s
            gidx = gidx[s:]
            if gidx.size == 0:
                return
        if st.X.shape[0] == 0:   # buffers are released while a key's buffer is empty
            st.X = np.zeros((self._size, self._F), dtype=np.float32)
            st.ts = np.zeros(self._size, dtype=np.float64)
        size, stride, n0 = self._size, self._stride, st.n
        total = n0 + gidx.size
        if total < size:
            st.X[n0:total] = X[gidx]
            st.ts[n0:total] = ts[gidx]
            st.n = total
            return
        full_X = np.concatenate((st.X[:n0], X[gidx]))
        full_ts = np.concatenate((st.ts[:n0], ts[gidx]))
        j = (total - size) // stride + 1
        starts = np.arange(j) * stride
        win_X = sliding_window_view(full_X, (size, self._F))[::stride, 0][:j]
        win_ts = sliding_window_view(full_ts, size)[::stride][:j]
        trigger = gidx[starts + size - 1 - n0]
        out.add(trigger, key, np.array(win_X), win_ts.max(axis=1))
        nxt = j * stride
        if nxt <= total:
            rem = total - nxt
            st.X[:rem] = full_X[nxt:]
            st.ts[:rem] = full_ts[nxt:]
            st.n, st.skip = rem, 0
            st.seen = min(rem, max(0, size - stride))
        else:
            st.n, st.skip, st.seen = 0, nxt - total, 0
        if st.n == 0:
            st.release()

    def _add_session(self, key: str, gidx: NDArray[np.intp], w_incl: NDArray[np.float64], X: NDArray[np.float32],
                     ts: NDArray[np.float64], seq0: int, out: Collector) -> None:
        """Sessions: close at watermark/gap breaks, drop late events, split at the cap.

        Loops over the sessions of the key in this batch (not over events):
        each pass handles the events up to the next break.
        """
        gap = self._gap
        st = self._keys.get(key)
        kts = ts[gidx]
        pos, m = 0, gidx.size
        while pos < m:
            ref = st.max_ts if st is not None else -math.inf
            prev, late = self._drop_late(ref, kts[pos:])
            brk = np.flatnonzero(((w_incl[gidx[pos:]] - prev) > gap) & np.isfinite(prev))
            b = int(brk[0]) if brk.size else m - pos
            if b == 0:
                # the open session closed before event gidx[pos] (when the
                # watermark passed its newest timestamp + gap): emit it
                assert st is not None  # a break needs a finite reference: an open session
                self._close_session(key, st, w_incl, seq0, out)
                st = None
                continue
            seg, late = gidx[pos:pos + b], late[:b]
            if late.any():
                self.n_late_dropped_ += int(late.sum())
                seg = seg[~late]
            if seg.size:
                if st is None:
                    st = self._keys[key] = self._new_state()
                st.max_ts = max(st.max_ts, float(ts[seg].max()))
                self._append_session(key, st, seg, X, ts, out)
                st.last_seq = seq0 + int(seg[-1])
            pos += b

    def _close_session(self, key: str, st: KeyState, w_incl: NDArray[np.float64], seq0: int,
                       out: Collector) -> None:
        """Remove a session whose gap elapsed; emit its buffer at the crossing event."""
        del self._keys[key]
        if st.n:
            p = int(np.searchsorted(w_incl, st.max_ts + self._gap, side="right"))
            self._emit_buffer(key, st, max(p, st.last_seq - seq0), out)

    def _append_session(self, key: str, st: KeyState, idx: NDArray[np.intp], X: NDArray[np.float32],
                        ts: NDArray[np.float64], out: Collector) -> None:
        cap_max = self._max_events
        pos = 0
        m = idx.size
        while pos < m:
            take = min(cap_max - st.n, m - pos)
            need = st.n + take
            if need > st.X.shape[0]:
                newcap = max(st.X.shape[0], 1)
                while newcap < need:
                    newcap *= 2
                newcap = min(newcap, cap_max)
                bx = np.zeros((newcap, self._F), dtype=np.float32)
                bt = np.zeros(newcap, dtype=np.float64)
                bx[:st.n] = st.X[:st.n]
                bt[:st.n] = st.ts[:st.n]
                st.X, st.ts = bx, bt
            part = idx[pos:pos + take]
            st.X[st.n:need] = X[part]
            st.ts[st.n:need] = ts[part]
            st.n = need
            pos += take
            if st.n == cap_max:
                self.n_evicted_["max_events_per_key"] += 1
                self._evict_buffer(key, st, int(part[-1]), out)

    def _emit_buffer(self, key: str, st: KeyState, trigger: int, out: Collector) -> None:
        n = st.n
        out.add([trigger], key, st.X[None, :n].copy(), [st.ts[:n].max()])
        st.n = st.seen = 0

    def _evict_buffer(self, key: str, st: KeyState, trigger: int, out: Collector) -> None:
        """Emit (flush) or discard (drop) the un-emitted part of a key's buffer."""
        if st.n > st.seen:
            if self.on_evict == "flush":
                self._emit_buffer(key, st, trigger, out)
            else:
                self.n_dropped_events_ += st.n - st.seen
        st.n = st.seen = 0

    def _close_idle(self, w_incl: NDArray[np.float64], seq0: int, out: Collector) -> None:
        wm, gap = self.watermark_, self._gap
        idle = [(k, st) for k, st in self._keys.items() if wm - st.max_ts > gap]
        for key, st in idle:
            self._close_session(key, st, w_incl, seq0, out)

    def _evict_lru(self, count: int, *, trigger: int, out: Collector) -> None:
        """Evict the ``count`` least recently updated keys.

        Only keys holding events not yet emitted count as evictions; a key
        with an empty buffer loses only its lateness reference.
        """
        for _ in range(count):
            key, st = self._keys.popitem(last=False)
            if st.n > st.seen:
                self.n_evicted_["max_keys"] += 1
                self._evict_buffer(key, st, trigger, out)

    def flush(self) -> WindowBatch | None:
        """Close every open window and return the non-empty ones.

        Partial windows are emitted if they hold an event not yet part of an
        emitted window, least recently updated key first; all key state is
        cleared (the watermark and counters are kept).

        Returns
        -------
        WindowBatch or None
        """
        out = Collector()
        for i, (key, st) in enumerate(self._keys.items()):
            if st.n > st.seen:
                self._emit_buffer(key, st, i, out)
        self._keys.clear()
        return self._finish(out, triggers=False)

    # ------------------------------------------------------------ state
    def _config(self) -> dict[str, Any]:
        return {"n_features": self._F, "kind": self.kind, "size": self._size,
                "stride": self._stride, "gap": None if self.kind != "session" else self._gap}

    def state_dict(self) -> dict[str, Any]:
        """Open windows and counters as NumPy arrays and JSON-able values (no pickle).

        Returns
        -------
        dict
            ``keys`` (list of str, LRU order), ``lengths`` (K,) int64,
            ``X`` (sum(lengths), F) float32, ``ts`` (sum(lengths),) float64,
            ``max_ts`` (K,) float64, ``last_seq``, ``seen``, ``skip`` (K,)
            int64, plus ``config``, counters, ``watermark`` (None before the
            first event) and ``format_version``.
        """
        return {
            "format_version": STATE_VERSION,
            "config": self._config(),
            **encode_keys(self._keys, self._F),
            "watermark": None if self.watermark_ == -math.inf else self.watermark_,
            "n_events": self.n_events_,
            "n_emitted": self.n_emitted_,
            "n_evicted": dict(self.n_evicted_),
            "n_dropped_events": self.n_dropped_events_,
            "n_late_dropped": self.n_late_dropped_,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output; validated before anything changes.

        Raises
        ------
        ValueError
            If the state is from another window configuration or malformed.
        """
        restored = decode_state(state, config=self._config(), session=self.kind == "session", size=self._size,
                                max_events=self._max_events, n_features=self._F)
        self._keys = restored.keys
        self.watermark_ = restored.watermark
        self.n_events_ = restored.counters["n_events"]
        self.n_emitted_ = restored.counters["n_emitted"]
        self.n_dropped_events_ = restored.counters["n_dropped_events"]
        self.n_late_dropped_ = restored.counters["n_late_dropped"]
        self.n_evicted_ = restored.evicted

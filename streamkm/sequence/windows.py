"""Per-key event windows: tumbling, sliding and session windows over a keyed stream.

An event is ``(key, timestamp, feature vector)``.  :class:`EventWindower`
keeps, per key, a buffer of the events that belong to a window not yet
emitted, and returns the windows that became ready as a :class:`WindowBatch`
(keys, zero-padded ``(B, T, F)`` float32 array, lengths, end timestamps)
ready for :meth:`streamkm.sequence.LSTMEncoder.embed`.

Window kinds
------------
``"tumbling"`` (``size``)
    Each key's events, in arrival order, are cut into consecutive windows of
    ``size`` events.  A window is emitted when its last event arrives.
``"sliding"`` (``size``, ``stride``)
    Window ``j`` of a key holds its events ``[j*stride, j*stride + size)``;
    it is emitted when event ``j*stride + size - 1`` arrives.  ``stride >
    size`` skips the events between windows.
``"session"`` (``gap``)
    A key's session collects events until the key has been inactive for more
    than ``gap`` time units *of event time*: the session closes as soon as the
    watermark (the largest timestamp seen in the whole stream) exceeds the
    session's newest timestamp by more than ``gap``.  The next event of the key
    opens a new session.  Sessions have variable length; the batch is padded.

Determinism
-----------
Everything is driven by the order of the events and their timestamps, never
by the wall clock, so replaying the same events (e.g. after restoring a
checkpoint with :meth:`EventWindower.state_dict`) yields the same windows --
the daemon's exactly-once guarantee depends on this.  Session closes are
evaluated per event: before each event the watermark including that event is
compared with every open session, so which events form a session does not
depend on how the stream is cut into ``add`` calls.  The windows of one call
are ordered by the position of the event that made them ready (ties in a
fixed order).

Out-of-order events
-------------------
Per key, an event older than the key's newest timestamp by more than
``allowed_lateness`` is dropped and counted in ``n_late_dropped_``; an
accepted late event is *appended* in arrival order (windows are sequences
in arrival order; the key's clock stays at its newest timestamp and a
window's ``end_ts`` is its largest timestamp).  Appending rather than
inserting keeps count windows well defined (an event never moves into a
window that was already emitted).  The reference is the newest timestamp of
the key while the key is tracked: for count windows until the key is evicted
(its buffers are released while empty, its newest timestamp and sliding
position are kept), for sessions until the session closes -- the first
event after a closed session starts a new one and is never late.  A key that
is not tracked accepts any event.  ``allowed_lateness=inf`` accepts
everything.  With these rules the windows, the late drops and the
``max_events_per_key`` splits do not depend on how the stream is cut into
``add`` calls (only ``max_keys`` eviction, applied at the end of a call,
does).

Bounded memory
--------------
* ``max_keys``: after each ``add``, if more keys are tracked than
  ``max_keys``, the least recently updated keys (by their last accepted
  event's position in the stream) are evicted.  An evicted key holding events
  not yet emitted counts as an eviction; ``on_evict="flush"`` emits its
  partial window, ``"drop"`` discards it.  Evicting a key whose buffer is
  empty only forgets its lateness reference and is not counted.  During one
  call the number of tracked keys can exceed the cap by at most the number
  of distinct keys in that call's batch.
* ``max_events_per_key``: a session reaching this many buffered events is
  split: the full buffer is emitted (``"flush"``) or discarded (``"drop"``)
  and the session continues with an empty buffer.  Count windows must have
  ``size <= max_events_per_key``, so they never hit this cap.

Both count into ``n_evicted_`` by reason (``"max_keys"``,
``"max_events_per_key"``); events discarded by ``"drop"`` count into
``n_dropped_events_``.

Buffers are per-key NumPy arrays: fixed capacity ``size`` for count windows,
for sessions grown by doubling up to ``max_events_per_key``.  Grouping the
events of a batch by key is vectorized (``np.unique`` + stable ``argsort``);
the Python loop runs over the distinct keys of a batch, not over events.

References
----------
Akidau, T. et al. (2015). The Dataflow Model: a practical approach to
balancing correctness, latency, and cost in massive-scale, unbounded,
out-of-order data processing. PVLDB 8(12), 1792-1803 (windows, watermarks,
allowed lateness).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["EventWindower", "WindowBatch"]

_KINDS = ("tumbling", "sliding", "session")
_ON_EVICT = ("flush", "drop")
_REASONS = ("max_keys", "max_events_per_key")
_STATE_VERSION = 1
_SESSION_INITIAL_CAPACITY = 16


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
    """

    keys: list[str]
    X: np.ndarray
    lengths: np.ndarray
    end_ts: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)


class _KeyState:
    """Open state of one key.

    ``X[:n]``, ``ts[:n]``: buffered events (arrival order); ``max_ts``: newest
    timestamp; ``last_seq``: stream position of the key's last event (LRU);
    ``seen``: leading buffered events already part of an emitted window
    (sliding); ``skip``: upcoming events to discard (sliding, stride > size).
    """

    __slots__ = ("X", "ts", "n", "max_ts", "last_seq", "seen", "skip")

    def __init__(self, capacity: int, n_features: int):
        self.X = np.zeros((capacity, n_features), dtype=np.float32)
        self.ts = np.zeros(capacity, dtype=np.float64)
        self.n = 0
        self.max_ts = -math.inf
        self.last_seq = -1
        self.seen = 0
        self.skip = 0

    def release(self) -> None:
        """Free the buffers of an empty count-window key (reallocated on demand)."""
        self.X = self.X[:0]
        self.ts = self.ts[:0]


class _Collector:
    """Blocks of emitted windows, assembled into one sorted WindowBatch."""

    def __init__(self):
        self.blocks = []  # (trigger (j,), key, X (j, L, F), end_ts (j,))

    def add(self, trigger, key, X, end_ts):
        self.blocks.append((np.asarray(trigger, dtype=np.int64).reshape(-1), key, X,
                            np.asarray(end_ts, dtype=np.float64).reshape(-1)))

    def build(self, n_features: int) -> WindowBatch | None:
        if not self.blocks:
            return None
        sizes = [b[2].shape[0] for b in self.blocks]
        B = sum(sizes)
        T = max(b[2].shape[1] for b in self.blocks)
        X = np.zeros((B, T, n_features), dtype=np.float32)
        lengths = np.empty(B, dtype=np.int64)
        keys: list[str] = []
        pos = 0
        for (_, key, xb, _), m in zip(self.blocks, sizes):
            X[pos:pos + m, :xb.shape[1]] = xb
            lengths[pos:pos + m] = xb.shape[1]
            keys.extend([key] * m)
            pos += m
        trigger = np.concatenate([b[0] for b in self.blocks])
        end_ts = np.concatenate([b[3] for b in self.blocks])
        order = np.argsort(trigger, kind="stable")  # ties: creation order
        if not np.array_equal(order, np.arange(B)):
            X = X[order]
            lengths = lengths[order]
            end_ts = end_ts[order]
            keys = [keys[i] for i in order.tolist()]
        return WindowBatch(keys=keys, X=X, lengths=lengths, end_ts=end_ts)


def _as_count(name: str, value, *, minimum: int = 1) -> int:
    """Accept ints and integral floats (config files may give ``64.0``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"{name} must be a whole number of events, got {value}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


class EventWindower:
    """Per-key tumbling, sliding or session windows over an event stream.

    Parameters
    ----------
    n_features : int
        Feature dimension ``F`` of every event.
    kind : {"tumbling", "sliding", "session"}, default="tumbling"
        Window kind (see the module docstring for exact semantics).
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

    def __init__(self, n_features, *, kind="tumbling", size=32, stride=None, gap=None,
                 max_keys=10_000, max_events_per_key=1024, on_evict="flush",
                 allowed_lateness=0.0):
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
        self._keys: OrderedDict[str, _KeyState] = OrderedDict()
        self.watermark_ = -math.inf
        self.n_emitted_ = 0
        self.n_evicted_ = {r: 0 for r in _REASONS}
        self.n_dropped_events_ = 0
        self.n_late_dropped_ = 0
        self.n_events_ = 0

    # ------------------------------------------------------------ params
    def _validate_params(self):
        self._F = _as_count("n_features", self.n_features)
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")
        if self.on_evict not in _ON_EVICT:
            raise ValueError(f"on_evict must be one of {_ON_EVICT}, got {self.on_evict!r}")
        self._max_keys = _as_count("max_keys", self.max_keys)
        self._max_events = _as_count("max_events_per_key", self.max_events_per_key)
        lat = self.allowed_lateness
        if isinstance(lat, bool) or not isinstance(lat, (int, float, np.integer, np.floating)):
            raise TypeError(f"allowed_lateness must be a number, got {type(lat).__name__}")
        if math.isnan(lat) or lat < 0:
            raise ValueError(f"allowed_lateness must be >= 0, got {lat}")
        self._lateness = float(lat)
        self._size = self._stride = 0
        self._gap = math.inf
        if self.kind in ("tumbling", "sliding"):
            self._size = _as_count("size", self.size)
            if self._size > self._max_events:
                raise ValueError(
                    f"size ({self._size}) must be <= max_events_per_key ({self._max_events})")
            if self.kind == "tumbling":
                self._stride = self._size
            else:
                if self.stride is None:
                    raise ValueError("sliding windows need stride (events between window starts)")
                self._stride = _as_count("stride", self.stride)
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

    # ------------------------------------------------------------ input
    def _check_input(self, keys, ts, X):
        if isinstance(keys, np.ndarray) and keys.ndim == 1:
            keys = keys.tolist()
        if isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence):
            raise TypeError(f"keys must be a sequence of str, got {type(keys).__name__}")
        n = len(keys)
        if not all(type(k) is str for k in keys):
            i, k = next((i, k) for i, k in enumerate(keys) if type(k) is not str)
            raise TypeError(f"keys must be str, got {type(k).__name__} at index {i}")
        try:
            ts = np.asarray(ts, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"ts must be numeric: {exc}") from None
        if ts.ndim != 1 or ts.shape[0] != n:
            raise ValueError(f"ts must have shape ({n},) to match {n} keys, got {ts.shape}")
        bad = np.flatnonzero(~np.isfinite(ts))
        if bad.size:
            raise ValueError(f"ts must be finite, got {ts[bad[0]]} at index {bad[0]}")
        X = np.asarray(X)
        if X.dtype.kind not in "fiub":
            raise TypeError(f"X must be numeric, got dtype {X.dtype}")
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_events, n_features), got shape {X.shape}")
        if X.shape[0] != n:
            raise ValueError(f"X has {X.shape[0]} rows but there are {n} keys")
        if X.shape[1] != self._F:
            raise ValueError(f"expected {self._F} features, got {X.shape[1]}")
        X = np.ascontiguousarray(X, dtype=np.float32)
        bad_rows = np.flatnonzero(~np.isfinite(X).all(axis=1))
        if bad_rows.size:
            raise ValueError(f"X must be finite, got a non-finite value in row {bad_rows[0]}")
        return list(keys), ts, X

    # ------------------------------------------------------------ core
    def add(self, keys: Sequence[str], ts, X) -> WindowBatch | None:
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
        keys, ts, X = self._check_input(keys, ts, X)
        n = len(keys)
        if n == 0:
            return None
        out = _Collector()
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

    def _new_state(self) -> _KeyState:
        cap = self._size if self.kind != "session" else min(_SESSION_INITIAL_CAPACITY,
                                                             self._max_events)
        return _KeyState(cap, self._F)

    def _finish(self, out: _Collector) -> WindowBatch | None:
        batch = out.build(self._F)
        if batch is not None:
            self.n_emitted_ += len(batch)
        return batch

    def _drop_late(self, ref: float, kts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Running reference before each event and the late mask, from ``ref``."""
        prev = np.maximum.accumulate(np.concatenate(([ref], kts)))[:-1]
        late = kts < prev - self._lateness
        return prev, late

    def _add_count(self, key, gidx, X, ts, seq0, out):
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
            st = self._keys[key] = _KeyState(0, self._F)
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

    def _add_session(self, key, gidx, w_incl, X, ts, seq0, out):
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

    def _close_session(self, key, st, w_incl, seq0, out):
        """Remove a session whose gap elapsed; emit its buffer at the crossing event."""
        del self._keys[key]
        if st.n:
            p = int(np.searchsorted(w_incl, st.max_ts + self._gap, side="right"))
            self._emit_buffer(key, st, max(p, st.last_seq - seq0), out)

    def _append_session(self, key, st, idx, X, ts, out):
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

    def _emit_buffer(self, key, st, trigger, out):
        n = st.n
        out.add([trigger], key, st.X[None, :n].copy(), [st.ts[:n].max()])
        st.n = st.seen = 0

    def _evict_buffer(self, key, st, trigger, out):
        """Emit (flush) or discard (drop) the un-emitted part of a key's buffer."""
        if st.n > st.seen:
            if self.on_evict == "flush":
                self._emit_buffer(key, st, trigger, out)
            else:
                self.n_dropped_events_ += st.n - st.seen
        st.n = st.seen = 0

    def _close_idle(self, w_incl, seq0, out):
        wm, gap = self.watermark_, self._gap
        idle = [(k, st) for k, st in self._keys.items() if wm - st.max_ts > gap]
        for key, st in idle:
            self._close_session(key, st, w_incl, seq0, out)

    def _evict_lru(self, count, *, trigger, out):
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
        out = _Collector()
        for i, (key, st) in enumerate(self._keys.items()):
            if st.n > st.seen:
                self._emit_buffer(key, st, i, out)
        self._keys.clear()
        return self._finish(out)

    # ------------------------------------------------------------ state
    def _config(self) -> dict:
        return {"n_features": self._F, "kind": self.kind, "size": self._size,
                "stride": self._stride, "gap": None if self.kind != "session" else self._gap}

    def state_dict(self) -> dict:
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
        states = list(self._keys.values())
        lengths = np.array([st.n for st in states], dtype=np.int64)
        X = (np.concatenate([st.X[:st.n] for st in states]) if states
             else np.zeros((0, self._F), dtype=np.float32))
        ts = (np.concatenate([st.ts[:st.n] for st in states]) if states
              else np.zeros(0, dtype=np.float64))
        return {
            "format_version": _STATE_VERSION,
            "config": self._config(),
            "keys": list(self._keys.keys()),
            "lengths": lengths,
            "X": X.astype(np.float32, copy=False),
            "ts": ts,
            "max_ts": np.array([st.max_ts for st in states], dtype=np.float64),
            "last_seq": np.array([st.last_seq for st in states], dtype=np.int64),
            "seen": np.array([st.seen for st in states], dtype=np.int64),
            "skip": np.array([st.skip for st in states], dtype=np.int64),
            "watermark": None if self.watermark_ == -math.inf else self.watermark_,
            "n_events": self.n_events_,
            "n_emitted": self.n_emitted_,
            "n_evicted": dict(self.n_evicted_),
            "n_dropped_events": self.n_dropped_events_,
            "n_late_dropped": self.n_late_dropped_,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output; validated before anything changes.

        Raises
        ------
        ValueError
            If the state is from another window configuration or malformed.
        """
        try:
            version = state["format_version"]
            config = state["config"]
            keys = list(state["keys"])
            arrays = {name: np.asarray(state[name]) for name in
                      ("lengths", "X", "ts", "max_ts", "last_seq", "seen", "skip")}
            watermark = state["watermark"]
            counters = {name: int(state[name]) for name in
                        ("n_events", "n_emitted", "n_dropped_events", "n_late_dropped")}
            evicted = {r: int(state["n_evicted"].get(r, 0)) for r in _REASONS}
        except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as exc:
            raise ValueError(f"malformed windower state: missing or bad entry {exc}") from None
        if version != _STATE_VERSION:
            raise ValueError(f"unsupported windower state version {version!r}, "
                             f"expected {_STATE_VERSION}")
        mine = self._config()
        if dict(config) != mine:
            raise ValueError(f"windower state is for config {dict(config)}, this windower is {mine}")
        K = len(keys)
        if not all(type(k) is str for k in keys) or len(set(keys)) != K:
            raise ValueError("windower state keys must be distinct strings")
        for name in ("lengths", "max_ts", "last_seq", "seen", "skip"):
            if arrays[name].shape != (K,):
                raise ValueError(f"windower state {name!r} has shape {arrays[name].shape}, "
                                 f"expected ({K},)")
        lengths = arrays["lengths"].astype(np.int64)
        total = int(lengths.sum())
        limit = self._size if self.kind != "session" else self._max_events
        if K and (lengths.min() < 0 or lengths.max() > limit):
            raise ValueError(f"windower state lengths must be in [0, {limit}], "
                             f"got max {lengths.max()}")
        if arrays["X"].shape != (total, self._F):
            raise ValueError(f"windower state 'X' has shape {arrays['X'].shape}, "
                             f"expected ({total}, {self._F})")
        if arrays["ts"].shape != (total,):
            raise ValueError(f"windower state 'ts' has shape {arrays['ts'].shape}, "
                             f"expected ({total},)")
        for name in ("X", "ts"):
            if arrays[name].dtype.kind not in "biuf" or not np.isfinite(arrays[name]).all():
                raise ValueError(f"windower state {name!r} contains NaN or infinity "
                                 f"(or is not numeric: dtype {arrays[name].dtype})")
        # max_ts is -inf for a key with no events yet; NaN/+inf never happen.
        if arrays["max_ts"].dtype.kind not in "biuf" or (
                K and not (arrays["max_ts"] < math.inf).all()):
            raise ValueError("windower state 'max_ts' contains NaN or +inf")
        if watermark is not None and not (isinstance(watermark, (int, float))
                                          and math.isfinite(watermark)):
            raise ValueError(f"windower state watermark must be a finite number or None, "
                             f"got {watermark!r}")
        for name, value in (*counters.items(), *evicted.items()):
            if value < 0:
                raise ValueError(f"windower state {name} must be >= 0, got {value}")
        keys_state: OrderedDict[str, _KeyState] = OrderedDict()
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        for i, key in enumerate(keys):
            n = int(lengths[i])
            if self.kind == "session":
                cap = max(min(_SESSION_INITIAL_CAPACITY, self._max_events), n)
            else:
                cap = self._size if n else 0
            st = _KeyState(cap, self._F)
            st.X[:n] = arrays["X"][offsets[i]:offsets[i + 1]]
            st.ts[:n] = arrays["ts"][offsets[i]:offsets[i + 1]]
            st.n = n
            st.max_ts = float(arrays["max_ts"][i])
            st.last_seq = int(arrays["last_seq"][i])
            st.seen = int(arrays["seen"][i])
            st.skip = int(arrays["skip"][i])
            keys_state[key] = st
        self._keys = keys_state
        self.watermark_ = -math.inf if watermark is None else float(watermark)
        self.n_events_ = counters["n_events"]
        self.n_emitted_ = counters["n_emitted"]
        self.n_dropped_events_ = counters["n_dropped_events"]
        self.n_late_dropped_ = counters["n_late_dropped"]
        self.n_evicted_ = evicted

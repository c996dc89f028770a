"""Internals of :class:`~streamkm.sequence.windows.EventWindower`: buffers, input checks, checkpoint state.

:class:`KeyState` is one key's open buffer; :class:`Collector` gathers the
windows emitted during one call; :func:`check_events` validates a batch of
events; :func:`encode_keys` and :func:`decode_state` turn the windower's keys
into the arrays of ``EventWindower.state_dict()`` and back, validating
everything before the windower changes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["REASONS", "STATE_VERSION", "SESSION_INITIAL_CAPACITY", "KeyState", "Collector", "as_count",
           "check_events", "encode_keys", "DecodedState", "decode_state"]

#: Eviction reasons, the keys of ``n_evicted_``.
REASONS = ("max_keys", "max_events_per_key")
STATE_VERSION = 1
#: Initial buffer capacity of a session (grown by doubling up to ``max_events_per_key``).
SESSION_INITIAL_CAPACITY = 16


class KeyState:
    """Open state of one key.

    Attributes
    ----------
    X : ndarray of shape (capacity, F), float32
        ``X[:n]``: buffered events in arrival order.
    ts : ndarray of shape (capacity,), float64
        ``ts[:n]``: their timestamps.
    n : int
        Buffered events.
    max_ts : float
        Newest timestamp of the key (``-inf`` before its first event).
    last_seq : int
        Stream position of the key's last accepted event (for LRU eviction).
    seen : int
        Leading buffered events already part of an emitted window (sliding).
    skip : int
        Upcoming events to discard (sliding, stride > size).
    """

    __slots__ = ("X", "ts", "n", "max_ts", "last_seq", "seen", "skip")

    def __init__(self, capacity: int, n_features: int) -> None:
        self.X: NDArray[np.float32] = np.zeros((capacity, n_features), dtype=np.float32)
        self.ts: NDArray[np.float64] = np.zeros(capacity, dtype=np.float64)
        self.n = 0
        self.max_ts = -math.inf
        self.last_seq = -1
        self.seen = 0
        self.skip = 0

    def release(self) -> None:
        """Free the buffers of an empty count-window key (reallocated on demand)."""
        self.X = self.X[:0]
        self.ts = self.ts[:0]


class Collector:
    """Blocks of windows emitted during one call, assembled into one batch sorted by trigger."""

    def __init__(self) -> None:
        # (trigger (j,), key, X (j, L, F), end_ts (j,))
        self.blocks: list[tuple[NDArray[np.int64], str, NDArray[np.float32], NDArray[np.float64]]] = []

    def add(self, trigger: ArrayLike, key: str, X: NDArray[np.float32], end_ts: ArrayLike) -> None:
        """Record ``X`` (j, L, F) (kept, not copied): j windows of key ``key``, made ready by events ``trigger``."""
        self.blocks.append((np.asarray(trigger, dtype=np.int64).reshape(-1), key, X,
                            np.asarray(end_ts, dtype=np.float64).reshape(-1)))

    def build(self, n_features: int) -> tuple[list[str], NDArray[np.float32], NDArray[np.int64],
                                              NDArray[np.float64], NDArray[np.int64]] | None:
        """(keys, X (B, T, F) zero-padded, lengths (B,), end_ts (B,), trigger (B,)) in trigger order,
        or None if empty."""
        if not self.blocks:
            return None
        sizes = [b[2].shape[0] for b in self.blocks]
        B = sum(sizes)
        T = max(b[2].shape[1] for b in self.blocks)
        X = np.zeros((B, T, n_features), dtype=np.float32)
        lengths = np.empty(B, dtype=np.int64)
        keys: list[str] = []
        pos = 0
        for (_, key, xb, _), m in zip(self.blocks, sizes, strict=True):
            X[pos:pos + m, :xb.shape[1]] = xb
            lengths[pos:pos + m] = xb.shape[1]
            keys.extend([key] * m)
            pos += m
        trigger = np.concatenate([b[0] for b in self.blocks])
        end_ts = np.concatenate([b[3] for b in self.blocks])
        # Ties (sessions the watermark closes at one event) by key, then creation: an order that
        # does not depend on how the events were split into add() calls.
        order = np.lexsort((np.arange(B), np.asarray(keys, dtype=str), trigger))
        if not np.array_equal(order, np.arange(B)):
            X = X[order]
            lengths = lengths[order]
            end_ts = end_ts[order]
            trigger = trigger[order]
            keys = [keys[i] for i in order.tolist()]
        return keys, X, lengths, end_ts, trigger


def as_count(name: str, value: Any, *, minimum: int = 1) -> int:
    """Accept ints and integral floats (config files may give ``64.0``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"{name} must be a whole number of events, got {value}")
    count = int(value)
    if count < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {count}")
    return count


def check_events(keys: Any, ts: ArrayLike, X: ArrayLike, n_features: int
                 ) -> tuple[list[str], NDArray[np.float64], NDArray[np.float32]]:
    """Validate one batch of events for ``EventWindower.add``.

    Parameters
    ----------
    keys : sequence of str (or 1-D ndarray of str), length n
    ts : array_like of shape (n,)
        Finite timestamps.
    X : array_like of shape (n, n_features)
        Finite numeric features.

    Returns
    -------
    keys : list of str
    ts : ndarray of shape (n,), float64
    X : ndarray of shape (n, n_features), float32, C-contiguous

    Raises
    ------
    TypeError, ValueError
        Naming the first problem found.
    """
    if isinstance(keys, np.ndarray) and keys.ndim == 1:
        keys = keys.tolist()
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence):
        raise TypeError(f"keys must be a sequence of str, got {type(keys).__name__}")
    n = len(keys)
    if not all(type(k) is str for k in keys):
        i, k = next((i, k) for i, k in enumerate(keys) if type(k) is not str)
        raise TypeError(f"keys must be str, got {type(k).__name__} at index {i}")
    try:
        ts_arr = np.asarray(ts, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"ts must be numeric: {exc}") from None
    if ts_arr.ndim != 1 or ts_arr.shape[0] != n:
        raise ValueError(f"ts must have shape ({n},) to match {n} keys, got {ts_arr.shape}")
    bad = np.flatnonzero(~np.isfinite(ts_arr))
    if bad.size:
        raise ValueError(f"ts must be finite, got {ts_arr[bad[0]]} at index {bad[0]}")
    X_arr = np.asarray(X)
    if X_arr.dtype.kind not in "fiub":
        raise TypeError(f"X must be numeric, got dtype {X_arr.dtype}")
    if X_arr.ndim != 2:
        raise ValueError(f"X must be 2-D (n_events, n_features), got shape {X_arr.shape}")
    if X_arr.shape[0] != n:
        raise ValueError(f"X has {X_arr.shape[0]} rows but there are {n} keys")
    if X_arr.shape[1] != n_features:
        raise ValueError(f"expected {n_features} features, got {X_arr.shape[1]}")
    X32 = np.ascontiguousarray(X_arr, dtype=np.float32)
    bad_rows = np.flatnonzero(~np.isfinite(X32).all(axis=1))
    if bad_rows.size:
        raise ValueError(f"X must be finite, got a non-finite value in row {bad_rows[0]}")
    return list(keys), ts_arr, X32


def encode_keys(keys: Mapping[str, KeyState], n_features: int) -> dict[str, Any]:
    """The per-key entries of ``state_dict()``, keys in the mapping's (LRU) order.

    Returns
    -------
    dict
        ``keys`` (list of str), ``lengths`` (K,) int64, ``X`` (sum(lengths), F)
        float32, ``ts`` (sum(lengths),) float64, ``max_ts`` (K,) float64,
        ``last_seq``, ``seen``, ``skip`` (K,) int64 (all new arrays).
    """
    states = list(keys.values())
    lengths = np.array([st.n for st in states], dtype=np.int64)
    X = (np.concatenate([st.X[:st.n] for st in states]) if states
         else np.zeros((0, n_features), dtype=np.float32))
    ts = (np.concatenate([st.ts[:st.n] for st in states]) if states
          else np.zeros(0, dtype=np.float64))
    return {
        "keys": list(keys.keys()),
        "lengths": lengths,
        "X": X.astype(np.float32, copy=False),
        "ts": ts,
        "max_ts": np.array([st.max_ts for st in states], dtype=np.float64),
        "last_seq": np.array([st.last_seq for st in states], dtype=np.int64),
        "seen": np.array([st.seen for st in states], dtype=np.int64),
        "skip": np.array([st.skip for st in states], dtype=np.int64),
    }


@dataclass
class DecodedState:
    """A validated ``state_dict()``, ready to be assigned to a windower."""

    keys: OrderedDict[str, KeyState]
    watermark: float
    counters: dict[str, int]    # n_events, n_emitted, n_dropped_events, n_late_dropped
    evicted: dict[str, int]     # reason -> count


def decode_state(state: Mapping[str, Any], *, config: Mapping[str, Any], session: bool, size: int,
                 max_events: int, n_features: int) -> DecodedState:
    """Validate ``state`` (from ``state_dict()``) against a windower's configuration and rebuild its keys.

    Parameters
    ----------
    state : mapping
        What ``EventWindower.state_dict()`` returned (not modified; arrays are copied).
    config : mapping
        The restoring windower's ``_config()``; the state must have been made with
        the same one.
    session : bool
        Session windows (buffers grow) rather than count windows (capacity ``size``).
    size, max_events, n_features : int
        The windower's window size (count windows), ``max_events_per_key`` and F.

    Raises
    ------
    ValueError
        If the state is from another window configuration or malformed.
    """
    try:
        version = state["format_version"]
        state_config = state["config"]
        keys = list(state["keys"])
        arrays = {name: np.asarray(state[name]) for name in
                  ("lengths", "X", "ts", "max_ts", "last_seq", "seen", "skip")}
        watermark = state["watermark"]
        counters = {name: int(state[name]) for name in
                    ("n_events", "n_emitted", "n_dropped_events", "n_late_dropped")}
        evicted = {r: int(state["n_evicted"].get(r, 0)) for r in REASONS}
    except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as exc:
        raise ValueError(f"malformed windower state: missing or bad entry {exc}") from None
    if version != STATE_VERSION:
        raise ValueError(f"unsupported windower state version {version!r}, "
                         f"expected {STATE_VERSION}")
    if dict(state_config) != dict(config):
        raise ValueError(f"windower state is for config {dict(state_config)}, this windower is {dict(config)}")
    K = len(keys)
    if not all(type(k) is str for k in keys) or len(set(keys)) != K:
        raise ValueError("windower state keys must be distinct strings")
    for name in ("lengths", "max_ts", "last_seq", "seen", "skip"):
        if arrays[name].shape != (K,):
            raise ValueError(f"windower state {name!r} has shape {arrays[name].shape}, "
                             f"expected ({K},)")
    lengths = arrays["lengths"].astype(np.int64)
    total = int(lengths.sum())
    limit = size if not session else max_events
    if K and (lengths.min() < 0 or lengths.max() > limit):
        raise ValueError(f"windower state lengths must be in [0, {limit}], "
                         f"got max {lengths.max()}")
    if arrays["X"].shape != (total, n_features):
        raise ValueError(f"windower state 'X' has shape {arrays['X'].shape}, "
                         f"expected ({total}, {n_features})")
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
    keys_state: OrderedDict[str, KeyState] = OrderedDict()
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    for i, key in enumerate(keys):
        n = int(lengths[i])
        if session:
            cap = max(min(SESSION_INITIAL_CAPACITY, max_events), n)
        else:
            cap = size if n else 0
        st = KeyState(cap, n_features)
        st.X[:n] = arrays["X"][offsets[i]:offsets[i + 1]]
        st.ts[:n] = arrays["ts"][offsets[i]:offsets[i + 1]]
        st.n = n
        st.max_ts = float(arrays["max_ts"][i])
        st.last_seq = int(arrays["last_seq"][i])
        st.seen = int(arrays["seen"][i])
        st.skip = int(arrays["skip"][i])
        keys_state[key] = st
    return DecodedState(keys=keys_state, watermark=-math.inf if watermark is None else float(watermark),
                        counters=counters, evicted=evicted)

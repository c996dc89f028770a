"""Fixed-size reservoir samples of an unbounded stream of vectors.

Two samplers keep at most ``capacity`` rows of the stream in a preallocated
``(capacity, n_features)`` array:

* :class:`UniformReservoir` -- every point seen so far is in the sample with
  the same probability ``capacity / n_seen`` (Algorithm L, Li 1994). It draws
  O(capacity · (1 + log(n_seen / capacity))) random numbers in total, not one
  per point: it jumps straight to the next accepted position.
* :class:`TimeBiasedReservoir` -- an exponentially time-biased sample
  (Aggarwal 2006): the probability that a point is still in the sample halves
  every ``half_life`` points or batches, so after a drift the sample reflects
  the new regime. Used by :class:`~streamkm.cluster.StreamingKMeans` to reseed
  under drift.

Both insert a whole batch with a few vectorized NumPy operations (slices and
one fancy-indexed write); randomness comes from a ``numpy.random.Generator``
passed explicitly to :meth:`add`, so the owner controls (and checkpoints) it.
The state is plain arrays and JSON-able scalars (:meth:`state_dict`).

References
----------
.. [1] K.-H. Li, "Reservoir-sampling algorithms of time complexity
   O(n(1 + log(N/n)))", ACM Transactions on Mathematical Software 20(4),
   481-493, 1994.
.. [2] C. C. Aggarwal, "On biased reservoir sampling in the presence of stream
   evolution", Proc. VLDB 2006, 607-618.
.. [3] J. S. Vitter, "Random sampling with a reservoir", ACM Transactions on
   Mathematical Software 11(1), 37-57, 1985.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from ._distance import _row_norms_sq

__all__ = ["UniformReservoir", "TimeBiasedReservoir", "reservoir_from_state"]

#: Accepted positions of Algorithm L are generated this many at a time (one
#: ``rng.random((3, _CHUNK))`` call). A fixed chunk makes the sample a function
#: of the seed and the stream only -- independent of how it is cut into batches.
_CHUNK = 256

#: Positions beyond this are "never" (avoids int64 overflow when W underflows).
_FAR = float(2**62)


def _check_size(name: str, value: Any) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer >= 1; got {value!r} of type {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value}")
    return int(value)


def _check_dtype(dtype: Any) -> np.dtype[Any]:
    dt: np.dtype[Any] = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64; got {dt}")
    return dt


def _last_wins(slots: np.ndarray, rows: np.ndarray, capacity: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Keep, for every slot written several times, only its last write.

    NumPy does not promise which value a fancy-indexed assignment with
    repeated indices keeps, so duplicates are removed explicitly. Returns the
    kept (slot, row) pairs in slot order. ``capacity`` (the number of slots),
    when at most 2**16, lets the sort use 16-bit keys (a radix sort).
    """
    if slots.size < 2:
        return slots, rows
    # A stable sort keeps the writes to one slot in their order; the last of each run wins.
    keys = slots.astype(np.uint16) if capacity is not None and capacity <= 2**16 and slots.size > 256 else slots
    order = np.argsort(keys, kind="stable")
    by_slot = slots[order]
    last = np.empty(slots.size, dtype=bool)
    last[-1] = True
    np.not_equal(by_slot[:-1], by_slot[1:], out=last[:-1])
    return by_slot[last], rows[order[last]]


class _Reservoir:
    """Storage, validation and (de)serialization shared by both samplers."""

    kind = ""

    def __init__(self, capacity: int, n_features: int, *, dtype: Any = np.float32) -> None:
        self.capacity = _check_size("capacity", capacity)
        self.n_features = _check_size("n_features", n_features)
        self.dtype = _check_dtype(dtype)
        self._buf = np.zeros((self.capacity, self.n_features), dtype=self.dtype)
        # ‖row‖² of every stored row (:func:`._distance._row_norms_sq`, row by row), kept with
        # the buffer: derived from the sample alone, so a restored reservoir has the same bits.
        self._sq = np.zeros(self.capacity, dtype=self.dtype)
        self._size = 0
        self.n_seen = 0

    @property
    def sample(self) -> np.ndarray:
        """Current sample, shape ``(min(n_seen, capacity), n_features)``.

        A read-only *view* of the internal buffer: it changes on the next
        :meth:`add`. Copy it before handing it to another thread.
        """
        view = self._buf[: self._size]
        view.flags.writeable = False
        return view

    @property
    def sample_sq_norms(self) -> np.ndarray:
        """Squared norm of every row of :attr:`sample`, shape ``(len(sample),)`` (read-only view)."""
        view = self._sq[: self._size]
        view.flags.writeable = False
        return view

    def __len__(self) -> int:
        return self._size

    def _write(self, slots: np.ndarray, rows: np.ndarray, rows_sq: np.ndarray | None) -> None:
        """Store ``rows`` (gathered already) in ``slots`` (distinct), with their squared norms
        (``rows_sq`` when the caller has them, else computed)."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)  # the norms of the stored values
        self._buf[slots] = rows
        self._sq[slots] = _row_norms_sq(rows) if rows_sq is None else rows_sq

    def _check_add(self, X: Any, rng: Any) -> np.ndarray:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
        arr = np.asarray(X)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise TypeError(f"X must be numeric; got dtype {arr.dtype}")
        if arr.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features); got shape {arr.shape}")
        if arr.shape[1] != self.n_features:
            raise ValueError(f"X: expected {self.n_features} features, got {arr.shape[1]}")
        if arr.size and not np.isfinite(arr).all():
            row = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
            raise ValueError(f"X contains NaN or infinity in row {row}")
        return arr

    def add(self, X: Any, rng: np.random.Generator) -> None:
        """Offer a batch of points to the reservoir.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Finite values; cast to the reservoir's dtype. An empty batch is a
            no-op.
        rng : numpy.random.Generator
            Source of randomness (advanced in place).
        """
        arr = self._check_add(X, rng)
        self._add(np.asarray(arr, dtype=self.dtype), rng)

    def _add(self, X: np.ndarray, rng: np.random.Generator,
             x_sq: np.ndarray | None = None) -> None:  # pragma: no cover
        raise NotImplementedError

    def _fill(self, X: np.ndarray, x_sq: np.ndarray | None = None) -> int:
        """Append leading rows while there is room; return how many."""
        t: int = min(self.capacity - self._size, X.shape[0])
        if t > 0:
            self._buf[self._size : self._size + t] = X[:t]
            self._sq[self._size : self._size + t] = (
                _row_norms_sq(self._buf[self._size : self._size + t]) if x_sq is None else x_sq[:t])
            self._size += t
        return t

    # --- state -----------------------------------------------------------
    def _base_state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "capacity": self.capacity,
            "n_features": self.n_features,
            "dtype": self.dtype.name,
            "n_seen": self.n_seen,
            "sample": self._buf[: self._size].copy(),
        }

    def _load_base(self, state: dict[str, Any], extra_keys: tuple[str, ...]) -> np.ndarray:
        """Validate the common keys; return the sample array (nothing mutated)."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict; got {type(state).__name__}")
        expected = {"kind", "capacity", "n_features", "dtype", "n_seen", "sample", *extra_keys}
        missing = expected - set(state)
        unknown = set(state) - expected
        if missing or unknown:
            raise ValueError(
                f"reservoir state keys mismatch: missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        if state["kind"] != self.kind:
            raise ValueError(f"reservoir kind mismatch: state is {state['kind']!r}, this is {self.kind!r}")
        for key, mine in (("capacity", self.capacity), ("n_features", self.n_features),
                          ("dtype", self.dtype.name)):
            if state[key] != mine:
                raise ValueError(f"reservoir {key} mismatch: state has {state[key]!r}, this has {mine!r}")
        n_seen = state["n_seen"]
        if not isinstance(n_seen, numbers.Integral) or n_seen < 0:
            raise ValueError(f"reservoir n_seen must be an integer >= 0; got {n_seen!r}")
        sample = np.asarray(state["sample"])
        want = (min(int(n_seen), self.capacity), self.n_features)
        if sample.shape != want:
            raise ValueError(f"reservoir sample has shape {sample.shape}; expected {want} for n_seen={n_seen}")
        if sample.dtype != self.dtype:
            raise ValueError(f"reservoir sample dtype {sample.dtype}; expected {self.dtype}")
        if sample.size and not np.isfinite(sample).all():
            row = int(np.flatnonzero(~np.isfinite(sample).all(axis=1))[0])
            raise ValueError(f"reservoir sample contains NaN or infinity in row {row}")
        return sample

    def _set_base(self, state: dict[str, Any], sample: np.ndarray) -> None:
        self._buf[:] = 0
        self._sq[:] = 0
        self._size = sample.shape[0]
        self._buf[: self._size] = sample
        self._sq[: self._size] = _row_norms_sq(self._buf[: self._size])
        self.n_seen = int(state["n_seen"])


class UniformReservoir(_Reservoir):
    """Uniform reservoir sample of a stream (Algorithm L, Li 1994).

    After ``n_seen`` points, every one of them is in :attr:`sample` with
    probability ``min(1, capacity / n_seen)``, and the sample is a uniformly
    random subset of that size.

    Algorithm L keeps ``W``, distributed as the largest of ``capacity`` i.i.d.
    uniforms, and jumps over ``floor(log(V) / log(1 − W)) `` points to the next
    accepted one, which replaces a uniformly chosen slot; ``W`` is then
    multiplied by ``U^(1/capacity)``. Each acceptance costs three uniforms and
    the expected number of acceptances up to ``N`` is
    ``capacity · (H_N − H_capacity) ≈ capacity · ln(N / capacity)``, so the
    total number of random draws is O(capacity · (1 + log(N / capacity))).

    Acceptances are generated ``256`` at a time with cumulative sums (``W`` is
    a cumulative product, positions a cumulative sum of skips) and kept in a
    small queue; a batch consumes the queued positions that fall inside it and
    writes them with one fancy-indexed assignment. The sample therefore depends
    only on the seed and the stream, not on the batch boundaries.

    Parameters
    ----------
    capacity : int
        Maximum number of stored points ``s``.
    n_features : int
        Dimension of the points.
    dtype : {float32, float64}, default=float32
        Storage dtype.

    Attributes
    ----------
    sample : ndarray of shape (min(n_seen, capacity), n_features)
        Read-only view of the current sample.
    n_seen : int
        Number of points offered so far.

    References
    ----------
    .. [1] K.-H. Li, "Reservoir-sampling algorithms of time complexity
       O(n(1 + log(N/n)))", ACM TOMS 20(4), 481-493, 1994.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> res = UniformReservoir(100, 2)
    >>> res.add(np.arange(20_000, dtype=np.float32).reshape(-1, 2), rng)
    >>> res.sample.shape, res.n_seen
    ((100, 2), 10000)
    >>> bool(abs(res.sample[:, 0].mean() / 20_000 - 0.5) < 0.1)
    True
    """

    kind = "uniform"

    def __init__(self, capacity: int, n_features: int, *, dtype: Any = np.float32) -> None:
        super().__init__(capacity, n_features, dtype=dtype)
        self._log_w: float | None = None  # log W; None until the reservoir first fills
        self._last_pos = -1  # stream index of the last generated acceptance
        self._queue_pos = np.empty(0, dtype=np.int64)
        self._queue_slot = np.empty(0, dtype=np.int64)

    def _extend_queue(self, rng: np.random.Generator, n_chunks: int = 1) -> None:
        """Generate the next ``n_chunks · _CHUNK`` accepted positions and their slots.

        Exactly what ``n_chunks`` successive one-chunk calls produce (the same
        draws in the same order, the same floating-point operations per
        chunk, chained through ``log W`` and the last position), in one
        vectorized pass: a chunk's worth of NumPy calls costs as much as the
        arithmetic of several chunks.
        """
        s = self.capacity
        if self._log_w is None:
            self._log_w = math.log(1.0 - rng.random()) / s
            self._last_pos = s - 1
        r = rng.random((n_chunks, 3, _CHUNK))  # the stream of n_chunks draws of (3, _CHUNK)
        # In place, with as few NumPy calls as possible (a call costs about as much as the
        # arithmetic of a chunk); every element goes through the same operations in the
        # same order as one chunk at a time. 1 − r lies in (0, 1], so every logarithm is
        # finite: lg[:, 0] = log(1 − r₀), lg[:, 1] = log(1 − r₁).
        lg = r[:, :2]
        np.negative(lg, out=lg)
        np.log1p(lg, out=lg)
        steps = np.add.accumulate(lg[:, 0], axis=1)  # np.cumsum, without its wrapper's cost
        steps /= s
        # log W before every draw: the chunk's start, then start + steps[:-1].
        log_w_before = np.empty((n_chunks, _CHUNK))
        log_w = self._log_w
        for c in range(n_chunks):  # log W at the start of every chunk (a scalar chain)
            log_w_before[c, 0] = log_w
            log_w = log_w + float(steps[c, -1])
        np.add(log_w_before[:, :1], steps[:, :-1], out=log_w_before[:, 1:])
        skip = log_w_before  # log1p(−exp(log W)), then the skips, in place
        np.exp(skip, out=skip)
        np.negative(skip, out=skip)
        with np.errstate(divide="ignore"):
            np.log1p(skip, out=skip)
            np.divide(lg[:, 1], skip, out=skip)
        np.floor(skip, out=skip)
        skip += 1.0
        np.minimum(skip, 2.0**52, out=skip)
        csum = np.add.accumulate(skip, axis=1)
        last = self._last_pos
        for c in range(n_chunks):  # the last position of every chunk (a scalar chain)
            tail = float(csum[c, -1])
            csum[c] += last
            last = int(min(last + tail, _FAR))
        pos = np.minimum(csum, _FAR, out=csum).astype(np.int64)
        slot_f = r[:, 2]
        slot_f *= s
        slot = slot_f.astype(np.int64)
        np.minimum(slot, s - 1, out=slot)
        self._log_w = log_w
        self._last_pos = int(pos[-1, -1])
        self._queue_pos = np.concatenate((self._queue_pos, pos.ravel()))
        self._queue_slot = np.concatenate((self._queue_slot, slot.ravel()))

    def _add(self, X: np.ndarray, rng: np.random.Generator, x_sq: np.ndarray | None = None) -> None:
        m = X.shape[0]
        start = self.n_seen
        end = start + m
        self._fill(X, x_sq)
        if end > self.capacity:
            if self._last_pos < end and self._log_w is not None:
                # Algorithm L accepts about capacity · ln(end / last_pos) points up to ``end``:
                # generate the chunks surely needed in one call (a safe underestimate, so that
                # no more than one chunk beyond ``end`` is ever drawn), the rest one by one.
                expect = self.capacity * math.log(end / max(self._last_pos, 1))
                sure = int((expect - 4.0 * math.sqrt(expect)) // _CHUNK)
                if sure > 0:
                    self._extend_queue(rng, min(sure, 64))
            while self._last_pos < end:
                self._extend_queue(rng)
            k = int(self._queue_pos.searchsorted(end))
            if k:
                slots, rows = _last_wins(self._queue_slot[:k], self._queue_pos[:k] - start, self.capacity)
                self._write(slots, X[rows], None if x_sq is None else x_sq[rows])
                self._queue_pos = self._queue_pos[k:]
                self._queue_slot = self._queue_slot[k:]
        self.n_seen = end

    def state_dict(self) -> dict[str, Any]:
        """Plain arrays and JSON-able scalars describing the reservoir exactly."""
        state = self._base_state()
        state.update(
            log_w=self._log_w,
            last_pos=self._last_pos,
            queue_pos=self._queue_pos.copy(),
            queue_slot=self._queue_slot.copy(),
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (validated first; unchanged on error)."""
        sample = self._load_base(state, ("log_w", "last_pos", "queue_pos", "queue_slot"))
        qp = np.asarray(state["queue_pos"])
        qs = np.asarray(state["queue_slot"])
        if qp.ndim != 1 or qs.shape != qp.shape or qp.dtype.kind != "i" or qs.dtype.kind != "i":
            raise ValueError(
                f"reservoir queue must be two 1-D integer arrays of equal length; "
                f"got shapes {qp.shape} and {qs.shape}"
            )
        if qs.size and (qs.min() < 0 or qs.max() >= self.capacity):
            raise ValueError(f"reservoir queue slots must be in [0, {self.capacity})")
        log_w = state["log_w"]
        if log_w is not None and not (isinstance(log_w, numbers.Real) and log_w <= 0):
            raise ValueError(f"reservoir log_w must be None or a real <= 0; got {log_w!r}")
        self._set_base(state, sample)
        self._log_w = None if log_w is None else float(log_w)
        self._last_pos = int(state["last_pos"])
        self._queue_pos = qp.astype(np.int64)
        self._queue_slot = qs.astype(np.int64)


class TimeBiasedReservoir(_Reservoir):
    """Exponentially time-biased reservoir (Aggarwal 2006) matched to a half-life.

    The first ``capacity`` points fill the reservoir. Afterwards every arriving
    point is inserted with probability ``p`` into a uniformly chosen slot
    (evicting its occupant), so a stored point survives each later arrival with
    probability ``1 − p / capacity``. ``p`` is chosen so that survival halves
    every ``half_life``:

    * ``time_unit="points"``: ``p = min(1, capacity · (1 − 2^(−1/half_life)))``.
      A point that arrived ``a`` points ago (after the fill) is in the sample
      with probability ``p · (1 − p/capacity)^a = p · 2^(−a/half_life)``.
    * ``time_unit="batches"``: for a batch of ``m`` points
      ``p = min(1, capacity · (1 − 2^(−1/(half_life · m))))``, so a stored point
      survives a whole batch with probability exactly ``2^(−1/half_life)``
      (``(1 − p/capacity)^m``). A point from ``b`` batches ago is in the sample
      with probability ``p_b · 2^(−b/half_life)`` times its survival of the
      rest of its own batch (at most a factor ``2^(−1/half_life)``), where
      ``p_b`` is its own batch's insertion probability (``p_b ∝ 1/m_b``: each
      batch carries the same total weight, like the model's per-batch decay).

    Points from the fill phase are in the sample with probability
    ``(1 − p/capacity)^a`` (``a`` = later arrivals). When ``p`` is capped at 1
    the reservoir is too large for the half-life (more than about
    ``half_life / ln 2`` points would be needed): every point is inserted and
    the effective half-life is ``capacity · ln 2`` points, longer than asked.

    Insertion positions are drawn as geometric gaps and slots as integers, so
    a batch costs O(number of insertions) random draws and one fancy-indexed
    write.

    Parameters
    ----------
    capacity : int
        Maximum number of stored points.
    n_features : int
        Dimension of the points.
    half_life : float
        Number of points or batches after which a point's inclusion probability
        has halved; > 0.
    time_unit : {"batches", "points"}, default="batches"
        Unit of ``half_life``.
    dtype : {float32, float64}, default=float32
        Storage dtype.

    References
    ----------
    .. [1] C. C. Aggarwal, "On biased reservoir sampling in the presence of
       stream evolution", Proc. VLDB 2006, 607-618.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> res = TimeBiasedReservoir(100, 1, half_life=1_000, time_unit="points")
    >>> res.add(np.arange(50_000, dtype=np.float32)[:, None], rng)
    >>> bool(np.median(res.sample) > 47_000)  # recent points dominate
    True
    """

    kind = "time_biased"

    def __init__(
        self,
        capacity: int,
        n_features: int,
        half_life: float,
        time_unit: str = "batches",
        *,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__(capacity, n_features, dtype=dtype)
        if not isinstance(half_life, numbers.Real) or isinstance(half_life, (bool, np.bool_)):
            raise TypeError(f"half_life must be a real number > 0; got {half_life!r}")
        if not (math.isfinite(half_life) and half_life > 0):
            raise ValueError(f"half_life must be a finite number > 0; got {half_life}")
        if time_unit not in ("batches", "points"):
            raise ValueError(f"time_unit must be one of ('batches', 'points'); got {time_unit!r}")
        self.half_life: float = float(half_life)
        self.time_unit: str = time_unit

    def insertion_probability(self, batch_size: int = 1) -> float:
        """Probability ``p`` that a point arriving in a batch of this size is inserted."""
        per_point = self.half_life if self.time_unit == "points" else self.half_life * batch_size
        # 1 − 2^(−1/h) computed without cancellation.
        return min(1.0, -self.capacity * math.expm1(-math.log(2.0) / per_point))

    def _add(self, X: np.ndarray, rng: np.random.Generator, x_sq: np.ndarray | None = None) -> None:
        m = X.shape[0]
        if m == 0:
            return
        t = self._fill(X, x_sq)
        rest = m - t
        if rest > 0:
            p = self.insertion_probability(m)
            if p >= 1.0:
                rows = np.arange(t, m, dtype=np.int64)
            elif p > 0.0:
                # Bernoulli(p) insertions = cumulative geometric gaps.
                expect = rest * p
                parts = []
                last = -1
                while last < rest:
                    gaps = rng.geometric(p, size=int(expect + 4.0 * math.sqrt(expect) + 16))
                    pos = last + np.cumsum(gaps)
                    parts.append(pos)
                    last = int(pos[-1])
                pos = np.concatenate(parts)
                rows = t + pos[: int(np.searchsorted(pos, rest))]
            else:  # pragma: no cover - half_life astronomically large
                rows = np.empty(0, dtype=np.int64)
            if rows.size:
                slots = rng.integers(0, self.capacity, size=rows.size)
                slots, rows = _last_wins(slots, rows, self.capacity)
                self._write(slots, X[rows], None if x_sq is None else x_sq[rows])
        self.n_seen += m

    def state_dict(self) -> dict[str, Any]:
        """Plain arrays and JSON-able scalars describing the reservoir exactly."""
        state = self._base_state()
        state.update(half_life=self.half_life, time_unit=self.time_unit)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (validated first; unchanged on error)."""
        sample = self._load_base(state, ("half_life", "time_unit"))
        for key, mine in (("half_life", self.half_life), ("time_unit", self.time_unit)):
            if state[key] != mine:
                raise ValueError(f"reservoir {key} mismatch: state has {state[key]!r}, this has {mine!r}")
        self._set_base(state, sample)


def reservoir_from_state(state: dict[str, Any]) -> UniformReservoir | TimeBiasedReservoir:
    """Build the reservoir described by a :meth:`state_dict` output."""
    if not isinstance(state, dict) or "kind" not in state:
        raise ValueError("reservoir state must be a dict with a 'kind' key")
    kind = state["kind"]
    try:
        if kind == "uniform":
            res: UniformReservoir | TimeBiasedReservoir = UniformReservoir(
                state["capacity"], state["n_features"], dtype=state["dtype"])
        elif kind == "time_biased":
            res = TimeBiasedReservoir(
                state["capacity"], state["n_features"], state["half_life"], state["time_unit"],
                dtype=state["dtype"])
        else:
            raise ValueError(f"unknown reservoir kind {kind!r}; expected 'uniform' or 'time_biased'")
    except KeyError as exc:
        raise ValueError(f"reservoir state is missing key {exc.args[0]!r}") from exc
    res.load_state_dict(state)
    return res

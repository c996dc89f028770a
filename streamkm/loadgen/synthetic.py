"""Seeded synthetic streams: drifting Gaussian blobs and behaviour processes.

Two families of data drive the load generator (``streamkm produce``), the tests
and the benchmarks:

* **Drifting blobs** -- points from ``n_clusters`` isotropic Gaussians whose
  means jump (``drift="abrupt"``) or glide (``drift="gradual"``) every
  ``drift_every`` points.  :func:`drifting_blobs` returns arrays,
  :func:`iter_drifting_blobs` yields batches forever (or ``n_batches`` of
  them); both draw from the same random streams, so concatenating the batches
  of the iterator gives exactly the arrays of :func:`drifting_blobs` with the
  same arguments.
* **Behaviour processes** -- event sequences from ``n_processes`` Markov
  chains over ``n_states`` event types.  Process ``p`` follows its own
  directed Hamiltonian cycle over the states with probability
  ``persistence`` and otherwise jumps to a uniformly random state, so its
  transition matrix is ``persistence * Pi_p + (1 - persistence) / S * 1 1^T``
  with ``Pi_p`` a cyclic permutation matrix.  Every such matrix is doubly
  stochastic: the stationary distribution is uniform for *all* processes, and
  because each chain starts from that distribution every time step has the
  same marginal law in every process.  The processes are relabelings of one
  another (``Pi_q = Q Pi_p Q^T`` for a permutation ``Q``), so any statistic
  that ignores the order of events -- in particular the mean of a window's
  features -- has the same distribution up to a permutation of the event
  types and cannot tell the processes apart; only the order (which type
  follows which) does.  Each event type is encoded as a fixed vector (rows of
  a random orthogonal matrix scaled to norm ``sqrt(F)``, fixed by
  ``encoding_seed`` so producers and trainers agree) plus Gaussian noise.
  :func:`behaviour_sequences` returns fixed-length windows,
  :func:`behaviour_events` an interleaved per-key event stream with
  timestamps for the sequence pipeline.

All functions use NumPy only and are deterministic given ``seed``.

References
----------
Hochreiter, S. and Schmidhuber, J. (1997). Long short-term memory. Neural
Computation 9(8), 1735-1780.

Norris, J. R. (1997). Markov Chains. Cambridge University Press (doubly
stochastic matrices have the uniform stationary distribution).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np

__all__ = [
    "drifting_blobs",
    "iter_drifting_blobs",
    "behaviour_transition_matrices",
    "behaviour_sequences",
    "behaviour_events",
]

_DRIFT_KINDS = ("abrupt", "gradual")


def _check_int(name: str, value, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_float(name: str, value, *, minimum: float = 0.0, strict: bool = False,
                 maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < minimum or (strict and value == minimum):
        op = ">" if strict else ">="
        raise ValueError(f"{name} must be {op} {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


# --------------------------------------------------------------------------
# drifting blobs
# --------------------------------------------------------------------------


class _BlobStream:
    """Stateful generator behind :func:`drifting_blobs` / :func:`iter_drifting_blobs`.

    Three independent child streams of ``SeedSequence(seed)``: one for the
    mean trajectory (waypoints, generated lazily one drift step at a time),
    one for the labels (uniform doubles, chunk-invariant) and one for the
    noise (standard normals, chunk-invariant).  Hence any split of the point
    range into chunks yields the same points.
    """

    def __init__(self, *, n_clusters, n_features, drift_every, drift, drift_scale,
                 cluster_std, center_box, seed):
        self.k = _check_int("n_clusters", n_clusters, minimum=1)
        self.d = _check_int("n_features", n_features, minimum=1)
        if drift_every is not None:
            drift_every = _check_int("drift_every", drift_every, minimum=1)
        self.drift_every = drift_every
        if drift not in _DRIFT_KINDS:
            raise ValueError(f"drift must be one of {_DRIFT_KINDS}, got {drift!r}")
        self.gradual = drift == "gradual"
        self.drift_scale = _check_float("drift_scale", drift_scale)
        self.cluster_std = _check_float("cluster_std", cluster_std)
        self.center_box = _check_float("center_box", center_box, strict=True)
        ss = np.random.SeedSequence(seed)
        mean_ss, label_ss, noise_ss = ss.spawn(3)
        self._mean_rng = np.random.default_rng(mean_ss)
        self._label_rng = np.random.default_rng(label_ss)
        self._noise_rng = np.random.default_rng(noise_ss)
        first = self._mean_rng.uniform(-self.center_box, self.center_box, size=(self.k, self.d))
        self._waypoints = [first]   # waypoints _way_base, _way_base + 1, ...
        self._way_base = 0
        self._pos = 0

    def _waypoint(self, j: int) -> np.ndarray:
        while self._way_base + len(self._waypoints) <= j:
            step = self._mean_rng.standard_normal((self.k, self.d))
            norms = np.linalg.norm(step, axis=1, keepdims=True)
            norms[norms == 0] = 1.0
            self._waypoints.append(self._waypoints[-1] + self.drift_scale * step / norms)
        return self._waypoints[j - self._way_base]

    def _forget_before(self, j: int) -> None:
        """Drop waypoints before ``j`` (points are drawn in order): bounded memory."""
        drop = j - self._way_base
        if drop > 0:
            del self._waypoints[:drop]
            self._way_base = j

    def means_at(self, idx: np.ndarray) -> np.ndarray:
        """Means (n, k, d) -- or (k, d) broadcast -- for global point indices ``idx``."""
        if self.drift_every is None:
            return self._waypoint(0)[None]
        block = idx // self.drift_every
        lo, hi = int(block.min()), int(block.max())
        nxt = hi + 1 if self.gradual else hi
        way = np.stack([self._waypoint(j) for j in range(lo, nxt + 1)])  # (m, k, d)
        self._forget_before(hi)
        rel = block - lo
        if not self.gradual:
            return way[rel]
        frac = ((idx % self.drift_every) / self.drift_every)[:, None, None]
        return way[rel] * (1.0 - frac) + way[rel + 1] * frac

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        idx = np.arange(self._pos, self._pos + n, dtype=np.int64)
        self._pos += n
        u = self._label_rng.random(n)
        labels = np.minimum((u * self.k).astype(np.int64), self.k - 1)
        noise = self._noise_rng.standard_normal((n, self.d))
        means = self.means_at(idx) if n else np.zeros((1, self.k, self.d))
        if means.shape[0] == 1:
            centers = means[0][labels]
        else:
            centers = means[np.arange(n), labels]
        X = (centers + self.cluster_std * noise).astype(np.float32)
        return X, labels


def drifting_blobs(n_points, *, n_clusters, n_features, drift_every=None, drift="abrupt",
                   drift_scale=5.0, cluster_std=1.0, center_box=10.0, seed=None):
    """Gaussian blobs whose means drift every ``drift_every`` points.

    Parameters
    ----------
    n_points : int
        Number of points to draw.
    n_clusters : int
        Number of Gaussian components (labels are uniform over them).
    n_features : int
        Dimension of the points.
    drift_every : int or None, default=None
        Length (in points) of a drift period; ``None`` means stationary.
    drift : {"abrupt", "gradual"}, default="abrupt"
        ``"abrupt"``: at the start of each period every mean jumps by a
        vector of norm ``drift_scale`` in a random direction.  ``"gradual"``:
        the means move linearly from one waypoint to the next over the period
        (so the total displacement per period is the same).
    drift_scale : float, default=5.0
        Norm of each mean's displacement per drift period.
    cluster_std : float, default=1.0
        Standard deviation of the isotropic noise around each mean.
    center_box : float, default=10.0
        Initial means are uniform in ``[-center_box, center_box]^d``.
    seed : int, SeedSequence or None
        Seed for :func:`numpy.random.SeedSequence`.

    Returns
    -------
    X : ndarray of shape (n_points, n_features), float32
    labels : ndarray of shape (n_points,), int64
        Component of each point.

    Examples
    --------
    >>> X, y = drifting_blobs(1000, n_clusters=3, n_features=2, drift_every=500, seed=0)
    >>> X.shape, X.dtype, y.shape, sorted(set(y.tolist()))
    ((1000, 2), dtype('float32'), (1000,), [0, 1, 2])
    """
    n_points = _check_int("n_points", n_points, minimum=0)
    stream = _BlobStream(n_clusters=n_clusters, n_features=n_features, drift_every=drift_every,
                         drift=drift, drift_scale=drift_scale, cluster_std=cluster_std,
                         center_box=center_box, seed=seed)
    return stream.take(n_points)


def iter_drifting_blobs(batch_size, *, n_batches=None, n_clusters, n_features, drift_every=None,
                        drift="abrupt", drift_scale=5.0, cluster_std=1.0, center_box=10.0,
                        seed=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(X, labels)`` batches of :func:`drifting_blobs` forever or ``n_batches`` times.

    The concatenation of the first ``m`` batches equals
    ``drifting_blobs(m * batch_size, ...)`` with the same keyword arguments,
    so a load generator and an offline reference see the same points.

    Parameters
    ----------
    batch_size : int
        Points per batch.
    n_batches : int or None, default=None
        Number of batches; ``None`` yields forever.
    **others
        As in :func:`drifting_blobs`.

    Yields
    ------
    X : ndarray of shape (batch_size, n_features), float32
    labels : ndarray of shape (batch_size,), int64

    Examples
    --------
    >>> it = iter_drifting_blobs(4, n_batches=2, n_clusters=2, n_features=3, seed=1)
    >>> [X.shape for X, _ in it]
    [(4, 3), (4, 3)]
    """
    batch_size = _check_int("batch_size", batch_size, minimum=1)
    if n_batches is not None:
        n_batches = _check_int("n_batches", n_batches, minimum=0)
    # Validate eagerly (a generator body would only run on first next()).
    stream = _BlobStream(n_clusters=n_clusters, n_features=n_features, drift_every=drift_every,
                         drift=drift, drift_scale=drift_scale, cluster_std=cluster_std,
                         center_box=center_box, seed=seed)
    return _iter_blobs(stream, batch_size, n_batches)


def _iter_blobs(stream: _BlobStream, batch_size: int, n_batches: int | None):
    count = itertools.count() if n_batches is None else range(n_batches)
    for _ in count:
        yield stream.take(batch_size)


# --------------------------------------------------------------------------
# behaviour processes
# --------------------------------------------------------------------------


def _default_n_states(n_processes: int) -> int:
    s = 4
    while math.factorial(s - 1) < n_processes:
        s += 1
    return s


def _cycle_successors(n_processes: int, n_states: int) -> np.ndarray:
    """Successor table (P, S): process p's cycle is 0 -> perm_p[0] -> ... -> 0.

    The cycles are the first ``n_processes`` orderings of states 1..S-1 in
    lexicographic order (all distinct directed Hamiltonian cycles).
    """
    if math.factorial(n_states - 1) < n_processes:
        raise ValueError(
            f"n_states={n_states} allows only {math.factorial(n_states - 1)} distinct cycles, "
            f"got n_processes={n_processes}")
    succ = np.empty((n_processes, n_states), dtype=np.int64)
    perms = itertools.permutations(range(1, n_states))
    for p, perm in zip(range(n_processes), perms, strict=False):  # perms may be longer
        order = (0, *perm)
        for a, b in zip(order, order[1:] + (0,), strict=True):
            succ[p, a] = b
    return succ


def _check_behaviour(n_processes, n_states, persistence):
    n_processes = _check_int("n_processes", n_processes, minimum=1)
    if n_states is None:
        n_states = _default_n_states(n_processes)
    n_states = _check_int("n_states", n_states, minimum=3)
    persistence = _check_float("persistence", persistence, maximum=1.0)
    succ = _cycle_successors(n_processes, n_states)
    return n_processes, n_states, persistence, succ


def behaviour_transition_matrices(n_processes=4, *, n_states=None, persistence=0.8):
    """Transition matrices of the behaviour processes.

    Parameters
    ----------
    n_processes : int, default=4
    n_states : int or None
        Number of event types; default: the smallest ``S >= 4`` with
        ``(S-1)! >= n_processes`` distinct cycles.
    persistence : float in [0, 1], default=0.8
        Probability of following the process's cycle at each step.

    Returns
    -------
    P : ndarray of shape (n_processes, n_states, n_states), float64
        ``P[p, a, b]`` = probability that type ``b`` follows type ``a``.
        Rows and columns sum to one (doubly stochastic), so the stationary
        distribution of every process is uniform.

    Examples
    --------
    >>> P = behaviour_transition_matrices(4)
    >>> P.shape, bool(np.allclose(P.sum(axis=1), 1)), bool(np.allclose(P.sum(axis=2), 1))
    ((4, 4, 4), True, True)
    """
    n_processes, S, persistence, succ = _check_behaviour(n_processes, n_states, persistence)
    P = np.full((n_processes, S, S), (1.0 - persistence) / S)
    rows = np.arange(S)
    for p in range(n_processes):
        P[p, rows, succ[p]] += persistence
    return P


def _encoding(n_states: int, n_features: int, encoding_seed) -> np.ndarray:
    """Fixed (S, F) codes: orthonormal rows scaled to norm sqrt(F) when F >= S, else Gaussian."""
    rng = np.random.default_rng(encoding_seed)
    if n_features >= n_states:
        q, r = np.linalg.qr(rng.standard_normal((n_features, n_features)))
        q *= np.sign(np.diag(r))
        return q[:n_states] * math.sqrt(n_features)
    return rng.standard_normal((n_states, n_features))


def _simulate(proc: np.ndarray, length: int, succ: np.ndarray, persistence: float,
              rng: np.random.Generator) -> np.ndarray:
    """States (N, T) of the chains ``proc`` (N,), started from the uniform law.

    Vectorized over sequences; the loop runs over time only.
    """
    n = proc.shape[0]
    S = succ.shape[1]
    follow = rng.random((n, length)) < persistence
    jump = rng.integers(0, S, size=(n, length))
    states = np.empty((n, length), dtype=np.int64)
    if length == 0:
        return states
    states[:, 0] = jump[:, 0]
    for t in range(1, length):
        states[:, t] = np.where(follow[:, t], succ[proc, states[:, t - 1]], jump[:, t])
    return states


def behaviour_sequences(n_windows, *, n_processes=4, length=20, n_features=8, n_states=None,
                        persistence=0.8, noise_std=0.5, encoding_seed=0, seed=None):
    """Fixed-length windows from behaviour processes with equal marginals.

    Parameters
    ----------
    n_windows : int
        Number of windows (sequences).  Labels are balanced: window ``i`` of
        a random permutation gets process ``i % n_processes``.
    n_processes : int, default=4
        Number of distinct processes (Markov chains).
    length : int, default=20
        Events per window ``T``.
    n_features : int, default=8
        Feature dimension ``F``.
    n_states : int or None
        Event types; see :func:`behaviour_transition_matrices`.
    persistence : float in [0, 1], default=0.8
        Probability of following the process's cycle; at 0 all processes
        are the same i.i.d. uniform sequence, at 1 they are deterministic.
    noise_std : float, default=0.5
        Standard deviation of the Gaussian noise added to every feature.
    encoding_seed : int, default=0
        Seed of the fixed event-type codes (keep it equal between producers
        and trainers).
    seed : int, SeedSequence or None
        Seed of the sampling (labels, chains, noise).

    Returns
    -------
    X : ndarray of shape (n_windows, length, n_features), float32
    labels : ndarray of shape (n_windows,), int64
        The process of each window.

    Examples
    --------
    >>> X, y = behaviour_sequences(8, length=5, n_features=6, seed=0)
    >>> X.shape, X.dtype, np.bincount(y).tolist()
    ((8, 5, 6), dtype('float32'), [2, 2, 2, 2])
    """
    n_windows = _check_int("n_windows", n_windows, minimum=0)
    length = _check_int("length", length, minimum=1)
    n_features = _check_int("n_features", n_features, minimum=1)
    noise_std = _check_float("noise_std", noise_std)
    n_processes, S, persistence, succ = _check_behaviour(n_processes, n_states, persistence)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n_windows, dtype=np.int64) % n_processes)
    states = _simulate(labels, length, succ, persistence, rng)
    codes = _encoding(S, n_features, encoding_seed)
    X = codes[states] + noise_std * rng.standard_normal((n_windows, length, n_features))
    return X.astype(np.float32), labels


def behaviour_events(n_keys, n_events_per_key, *, n_processes=4, n_features=8, n_states=None,
                     persistence=0.8, noise_std=0.5, mean_interarrival=1.0, session_length=None,
                     session_gap=100.0, start_ts=0.0, encoding_seed=0, seed=None):
    """An interleaved per-key event stream; each key follows one behaviour process.

    Each key ``k`` runs the chain of ``process_of_key[k]`` for
    ``n_events_per_key`` events; its arrival times are ``start_ts`` plus a
    uniform offset in ``[0, mean_interarrival)`` plus cumulative exponential
    gaps of mean ``mean_interarrival``; optionally, after every
    ``session_length`` events the key is idle for an extra ``session_gap``
    (so session windows with a gap below ``session_gap`` split there).  The
    events of all keys are merged in timestamp order.

    Parameters
    ----------
    n_keys : int
        Number of keys (entities).  Key ``i`` follows process
        ``i % n_processes`` whatever the seed, so the processes are balanced
        and a load generator that calls this function chunk by chunk with
        different seeds keeps every key on the same process.
    n_events_per_key : int
        Events per key.
    n_processes, n_features, n_states, persistence, noise_std, encoding_seed
        As in :func:`behaviour_sequences`.
    mean_interarrival : float, default=1.0
        Mean time between consecutive events of one key.
    session_length : int or None, default=None
        Events per session; ``None`` means one session per key.
    session_gap : float, default=100.0
        Extra idle time between sessions.
    start_ts : float, default=0.0
        Earliest timestamp.
    seed : int, SeedSequence or None

    Returns
    -------
    keys : list of str, length n
        ``n = n_keys * n_events_per_key``; keys look like ``"key-007"``.
    ts : ndarray of shape (n,), float64
        Non-decreasing timestamps (the merge is stable).
    X : ndarray of shape (n, n_features), float32
    process_of_key : dict of str to int

    Examples
    --------
    >>> keys, ts, X, proc = behaviour_events(3, 4, n_features=5, seed=0)
    >>> len(keys), ts.shape, X.shape, bool(np.all(np.diff(ts) >= 0)), sorted(proc)
    (12, (12,), (12, 5), True, ['key-0', 'key-1', 'key-2'])
    """
    n_keys = _check_int("n_keys", n_keys, minimum=0)
    n_events_per_key = _check_int("n_events_per_key", n_events_per_key, minimum=1)
    n_features = _check_int("n_features", n_features, minimum=1)
    noise_std = _check_float("noise_std", noise_std)
    mean_interarrival = _check_float("mean_interarrival", mean_interarrival, strict=True)
    session_gap = _check_float("session_gap", session_gap)
    start_ts = _check_float("start_ts", start_ts, minimum=-math.inf)
    if session_length is not None:
        session_length = _check_int("session_length", session_length, minimum=1)
    n_processes, S, persistence, succ = _check_behaviour(n_processes, n_states, persistence)
    rng = np.random.default_rng(seed)
    proc = np.arange(n_keys, dtype=np.int64) % n_processes
    T = n_events_per_key
    states = _simulate(proc, T, succ, persistence, rng)
    codes = _encoding(S, n_features, encoding_seed)
    feats = codes[states] + noise_std * rng.standard_normal((n_keys, T, n_features))
    gaps = rng.exponential(mean_interarrival, size=(n_keys, T))
    gaps[:, 0] = rng.uniform(0.0, mean_interarrival, size=n_keys)
    if session_length is not None:
        gaps[:, session_length::session_length] += session_gap
    ts = start_ts + np.cumsum(gaps, axis=1)
    width = len(str(max(n_keys - 1, 0)))
    names = [f"key-{i:0{width}d}" for i in range(n_keys)]
    flat_ts = ts.reshape(-1)
    order = np.argsort(flat_ts, kind="stable")
    key_idx = np.repeat(np.arange(n_keys), T)[order]
    keys = [names[i] for i in key_idx.tolist()]
    X = feats.reshape(-1, n_features)[order].astype(np.float32)
    process_of_key = {names[i]: int(proc[i]) for i in range(n_keys)}
    return keys, flat_ts[order].astype(np.float64), X, process_of_key

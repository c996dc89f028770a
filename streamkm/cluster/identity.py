"""Stable cluster identities across centre replacements, with MONIC-style transitions.

When a reseed or a dying-cluster replacement installs new centres, the
positions of the centres change meaning. :func:`match_clusters` matches the
old centres to the new ones by minimum total squared distance (the Hungarian
method, :func:`scipy.optimize.linear_sum_assignment`) with a distance
threshold, so that a cluster that only moved keeps its id, and describes
what happened as transitions in the spirit of MONIC (Spiliopoulou et al.,
KDD 2006): ``survived`` / ``moved`` (matched), ``born`` / ``split`` (new
centre without a match) and ``retired`` / ``absorbed`` (old centre without a
match). Fresh ids are never reused. Everything here is pure.

SciPy is imported on first use, not at import time: ``scipy.optimize`` and
``scipy.spatial`` would add about 0.3 s to ``import streamkm.cluster``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validation import check_array, check_nonnegative_int

__all__ = ["TRANSITIONS", "Matching", "Transition", "default_threshold", "match_clusters"]

#: Transition kinds, in the order :attr:`Matching.transitions` lists them.
TRANSITIONS = ("survived", "moved", "born", "retired", "split", "absorbed")

_KIND_ORDER = {kind: i for i, kind in enumerate(TRANSITIONS)}


@dataclass(frozen=True, slots=True)
class Transition:
    """One cluster transition between an old and a new set of centres.

    Attributes
    ----------
    kind : str
        One of :data:`TRANSITIONS`.
    cluster_id : int
        The id the transition is about: the (new-side) id for ``survived``,
        ``moved``, ``born`` and ``split``; the old id for ``retired`` and
        ``absorbed``.
    other_id : int or None
        ``split``: the old id the new cluster split from; ``absorbed``: the
        id of the new centre the old cluster went into; otherwise ``None``.
    distance : float
        Euclidean distance: old → new centre for ``survived`` / ``moved``; to
        the related centre for ``split`` / ``absorbed``; to the nearest old
        centre for ``born`` (``inf`` when there were no old centres); to the
        nearest new centre for ``retired``.
    """

    kind: str
    cluster_id: int
    other_id: int | None
    distance: float

    def __post_init__(self) -> None:
        if self.kind not in _KIND_ORDER:
            raise ValueError(f"kind must be one of {TRANSITIONS}; got {self.kind!r}")


@dataclass(frozen=True, slots=True, eq=False)
class Matching:
    """Outcome of :func:`match_clusters`.

    Attributes
    ----------
    ids : ndarray of shape (k_new,), int64
        Id of each new centre, by position (read-only).
    next_id : int
        The next fresh id; ids below it are used up and never handed out again.
    transitions : tuple of Transition
        Exactly one per new centre and one per unmatched old centre, ordered
        by kind (order of :data:`TRANSITIONS`), then ``cluster_id``.
    successors : dict of int to int
        For every old id that is not kept (``retired`` or ``absorbed``): the id
        of the nearest new centre, where stale statistics for that id should go.
    """

    ids: NDArray[np.int64]
    next_id: int
    transitions: tuple[Transition, ...]
    successors: dict[int, int]


def _check_centers(centers: Any, name: str) -> NDArray[np.float64]:
    """2-D, finite centres as a new float64 array (empty allowed)."""
    arr = check_array(centers, name=name, allow_empty=True)
    return np.array(arr, dtype=np.float64)  # a copy: the input is never aliased


def default_threshold(centers: ArrayLike) -> float:
    """Half the smallest distance between two distinct centres.

    A centre moved by less than this stays closer to its old position than
    to any other old centre's, so it cannot be confused with a neighbour.

    Parameters
    ----------
    centers : array-like of shape (k, n_features)
        Finite centres; ``k = 0`` is allowed.

    Returns
    -------
    float
        ``0.5 · min ‖c_i − c_j‖`` over pairs with ``c_i ≠ c_j`` (exact
        duplicates are ignored); ``inf`` when there are fewer than 2 centres
        or all of them coincide.

    Raises
    ------
    ValueError, TypeError
        If ``centers`` is not a 2-D finite numeric array.

    Examples
    --------
    >>> default_threshold([[0.0, 0.0], [3.0, 4.0], [0.0, 10.0]])
    2.5
    >>> default_threshold([[1.0, 2.0]])
    inf
    """
    C = _check_centers(centers, "centers")
    return _default_threshold(C)


def _default_threshold(C: NDArray[np.float64]) -> float:
    """Kernel of :func:`default_threshold`; ``C`` is valid float64 (k, d)."""
    if C.shape[0] < 2:
        return float("inf")
    from scipy.spatial.distance import pdist

    d = pdist(C)  # condensed (k (k - 1) / 2,), computed directly (no cancellation)
    positive = d[d > 0]
    if positive.size == 0:
        return float("inf")
    return 0.5 * float(positive.min())


def _check_ids(old_ids: Any, k_old: int, next_id: int) -> NDArray[np.int64]:
    """(k_old,) distinct integers in [0, next_id) as a new int64 array."""
    ids = np.asarray(old_ids)
    if ids.ndim != 1 or ids.shape[0] != k_old:
        raise ValueError(f"old_ids must have shape ({k_old},) to match old_centers; got shape {ids.shape}")
    if k_old == 0:
        return np.empty(0, dtype=np.int64)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"old_ids must be integers; got dtype {ids.dtype}")
    if ids.dtype.kind == "u" and int(ids.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"old_ids has an id above the int64 range: {int(ids.max())}")
    out = ids.astype(np.int64)  # a copy
    if int(out.min()) < 0:
        raise ValueError(f"old_ids must be non-negative; got {int(out.min())}")
    if int(out.max()) >= next_id:
        raise ValueError(f"old_ids must all be < next_id={next_id}; got id {int(out.max())}")
    uniq, counts = np.unique(out, return_counts=True)
    if uniq.size != k_old:
        raise ValueError(f"old_ids must be distinct; duplicated: {uniq[counts > 1].tolist()}")
    return out


def _check_threshold(threshold: Any) -> float:
    if not isinstance(threshold, numbers.Real) or isinstance(threshold, (bool, np.bool_)):
        raise TypeError(
            f"threshold must be a real number or None; got {threshold!r} of type {type(threshold).__name__}"
        )
    t = float(threshold)
    if not t > 0:  # also catches NaN
        raise ValueError(f"threshold must be > 0 (or inf); got {threshold}")
    return t


def _check_tolerance(tol: Any) -> float:
    if not isinstance(tol, numbers.Real) or isinstance(tol, (bool, np.bool_)):
        raise TypeError(f"survive_tolerance must be a real number; got {tol!r} of type {type(tol).__name__}")
    t = float(tol)
    if not (np.isfinite(t) and t >= 0):
        raise ValueError(f"survive_tolerance must be finite and >= 0; got {tol}")
    return t


def match_clusters(
    old_centers: ArrayLike,
    old_ids: ArrayLike,
    new_centers: ArrayLike,
    *,
    next_id: int,
    threshold: float | None = None,
    survive_tolerance: float = 1e-9,
) -> Matching:
    """Carry cluster ids from old centres to new ones and name the transitions.

    The old and new centres are matched one-to-one by minimum total squared
    Euclidean distance (Hungarian method; ``k_old`` and ``k_new`` may
    differ). A pair is a match only if its distance is ``<= threshold``; to
    make the assignment itself respect the threshold, each pair's cost is
    ``min(‖o − n‖², threshold²)``, i.e. leaving a slot unmatched costs
    ``threshold²``. Without the cap, one far-away new centre could pull an old
    centre away from a new one right next to it (old ``0, 1``, new ``0.9, 10``
    in 1-D: the plain optimum pairs ``0–0.9`` and ``1–10``, neither within the
    default threshold 0.5, so the obvious match ``1–0.9`` would be lost).

    Matched new centres keep the old id; unmatched new centres get the fresh
    ids ``next_id, next_id + 1, ...`` in order of position. Transitions
    (an adaptation of MONIC's external transitions from member overlap to
    centre distance):

    * ``survived``: matched, distance ``<= survive_tolerance · max(1, scale)``,
      where ``scale`` is the RMS norm of the old centres,
      ``sqrt(mean_i ‖o_i‖²)`` (so the tolerance is relative for large
      coordinates and absolute for small ones);
    * ``moved``: matched, larger distance (MONIC's location transition);
    * ``split``: unmatched new centre whose nearest old centre is within
      ``threshold`` (``other_id`` = that old id);
    * ``born``: any other unmatched new centre (MONIC's emergence);
    * ``absorbed``: unmatched old centre whose nearest new centre is within
      ``threshold`` (``other_id`` = that new centre's id);
    * ``retired``: any other unmatched old centre (MONIC's disappearance).

    Ties are broken by position (the assignment and every ``argmin`` are
    deterministic), so the result depends on the inputs only.

    Parameters
    ----------
    old_centers : array-like of shape (k_old, n_features)
        Finite centres before the replacement; ``k_old = 0`` makes every new
        centre ``born``.
    old_ids : array-like of shape (k_old,), integer
        Distinct, non-negative ids of the old centres, all ``< next_id``.
    new_centers : array-like of shape (k_new, n_features)
        Finite centres after the replacement, ``k_new >= 1``.
    next_id : int >= 0
        First fresh id (one more than the largest id ever handed out).
    threshold : float > 0 or inf, optional
        Largest distance (not squared) of a match, a split or an absorption.
        ``None`` means :func:`default_threshold` of ``old_centers``.
    survive_tolerance : float >= 0, default=1e-9
        Relative distance up to which a matched centre counts as unchanged.

    Returns
    -------
    Matching
        ``ids`` (k_new,), the new ``next_id``, the transitions (one per new
        centre plus one per unmatched old centre) and the ``successors`` of
        the old ids that are not kept.

    Raises
    ------
    ValueError
        If the centres are not 2-D and finite, their feature counts differ,
        ``new_centers`` is empty, ``old_ids`` has the wrong shape, negative,
        duplicated or ``>= next_id`` ids, or ``threshold`` is not > 0 (NaN).
    TypeError
        On non-numeric centres, non-integer ids or ``next_id``, or a
        non-numeric ``threshold`` / ``survive_tolerance``.

    References
    ----------
    M. Spiliopoulou, I. Ntoutsi, Y. Theodoridis and R. Schult, "MONIC:
    modeling and monitoring cluster transitions", KDD 2006.
    H. W. Kuhn, "The Hungarian method for the assignment problem", Naval
    Research Logistics Quarterly 2 (1955).

    Examples
    --------
    >>> import numpy as np
    >>> old = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
    >>> new = np.array([[20.0, 0.0], [0.5, 0.0], [50.0, 0.0]])
    >>> m = match_clusters(old, [7, 3, 5], new, next_id=8)
    >>> m.ids.tolist(), m.next_id
    ([5, 7, 8], 9)
    >>> [(t.kind, t.cluster_id) for t in m.transitions]
    [('survived', 5), ('moved', 7), ('born', 8), ('retired', 3)]
    >>> m.successors      # old id 3 -> nearest new centre, [0.5, 0]
    {3: 7}
    """
    old = _check_centers(old_centers, "old_centers")
    new = _check_centers(new_centers, "new_centers")
    if old.shape[1] != new.shape[1]:
        raise ValueError(f"old_centers has {old.shape[1]} features, new_centers has {new.shape[1]}")
    k_old, k_new = old.shape[0], new.shape[0]
    if k_new == 0:
        raise ValueError(f"new_centers is empty: need at least 1 centre (shape {new.shape})")
    next_id = check_nonnegative_int("next_id", next_id)
    ids_old = _check_ids(old_ids, k_old, next_id)
    tau = _default_threshold(old) if threshold is None else _check_threshold(threshold)
    tol = _check_tolerance(survive_tolerance)
    return _match_clusters(old, ids_old, new, next_id, tau, tol)


def _match_clusters(
    old: NDArray[np.float64],
    old_ids: NDArray[np.int64],
    new: NDArray[np.float64],
    next_id: int,
    threshold: float,
    survive_tolerance: float,
) -> Matching:
    """Kernel of :func:`match_clusters`; assumes valid input, modifies nothing."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    k_old, k_new = old.shape[0], new.shape[0]
    d2: NDArray[np.float64] = cdist(old, new, "sqeuclidean")  # (k_old, k_new), exact 0 for equal rows
    dist = np.sqrt(d2)

    matched_old = np.zeros(k_old, dtype=bool)
    match_of_new = np.full(k_new, -1, dtype=np.int64)  # old position matched to each new centre
    if k_old:
        cost = np.minimum(d2, threshold * threshold)  # threshold = inf leaves d2 unchanged
        rows, cols = linear_sum_assignment(cost)
        keep = dist[rows, cols] <= threshold
        rows, cols = rows[keep], cols[keep]
        matched_old[rows] = True
        match_of_new[cols] = rows

    unmatched_new = match_of_new < 0
    n_fresh = int(unmatched_new.sum())
    ids = np.empty(k_new, dtype=np.int64)
    ids[~unmatched_new] = old_ids[match_of_new[~unmatched_new]]
    ids[unmatched_new] = np.arange(next_id, next_id + n_fresh, dtype=np.int64)
    ids.setflags(write=False)

    transitions: list[Transition] = []
    scale = float(np.sqrt(np.mean(np.einsum("ij,ij->i", old, old)))) if k_old else 0.0
    survive_at = survive_tolerance * max(1.0, scale)
    # New side: one transition per new centre (a loop over k_new clusters, not points).
    nearest_old = dist.argmin(axis=0) if k_old else np.zeros(k_new, dtype=np.int64)
    for j in range(k_new):
        cid = int(ids[j])
        if not unmatched_new[j]:
            dj = float(dist[match_of_new[j], j])
            transitions.append(Transition("survived" if dj <= survive_at else "moved", cid, None, dj))
        elif k_old == 0:
            transitions.append(Transition("born", cid, None, float("inf")))
        else:
            dj = float(dist[nearest_old[j], j])
            if dj <= threshold:
                transitions.append(Transition("split", cid, int(old_ids[nearest_old[j]]), dj))
            else:
                transitions.append(Transition("born", cid, None, dj))
    # Old side: unmatched old centres are absorbed or retired; both get a successor.
    successors: dict[int, int] = {}
    if k_old:
        nearest_new = dist.argmin(axis=1)
        for i in np.flatnonzero(~matched_old):
            oid, j = int(old_ids[i]), int(nearest_new[i])
            di = float(dist[i, j])
            successors[oid] = int(ids[j])
            if di <= threshold:
                transitions.append(Transition("absorbed", oid, int(ids[j]), di))
            else:
                transitions.append(Transition("retired", oid, None, di))
    transitions.sort(key=lambda t: (_KIND_ORDER[t.kind], t.cluster_id))
    return Matching(ids, next_id + n_fresh, tuple(transitions), dict(sorted(successors.items())))

"""Tests for streamkm.cluster.identity (stable cluster ids and MONIC-style transitions)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkm.cluster import TRANSITIONS, Matching, Transition, default_threshold, match_clusters


def _kinds(m: Matching) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {k: [] for k in TRANSITIONS}
    for t in m.transitions:
        out[t.kind].append(t.cluster_id)
    return out


def _by_kind(m: Matching, kind: str) -> list[Transition]:
    return [t for t in m.transitions if t.kind == kind]


def _check_invariants(m: Matching, old_ids: np.ndarray, next_id: int) -> None:
    """Structural facts every Matching must satisfy."""
    k_new = m.ids.shape[0]
    assert m.ids.dtype == np.int64
    assert len(set(m.ids.tolist())) == k_new  # ids of new centres are distinct
    fresh = [i for i in m.ids.tolist() if i not in set(old_ids.tolist())]
    assert sorted(fresh) == list(range(next_id, m.next_id))  # fresh ids are exactly next_id, next_id+1, ...
    kept = set(m.ids.tolist()) & set(old_ids.tolist())
    assert set(m.successors) == set(old_ids.tolist()) - kept
    assert set(m.successors.values()) <= set(m.ids.tolist())
    new_side = [t for t in m.transitions if t.kind in ("survived", "moved", "born", "split")]
    assert sorted(t.cluster_id for t in new_side) == sorted(m.ids.tolist())
    keys = [(TRANSITIONS.index(t.kind), t.cluster_id) for t in m.transitions]
    assert keys == sorted(keys)


GRID = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])  # default threshold 5


# --------------------------------------------------------------------------
# default_threshold
# --------------------------------------------------------------------------
def test_default_threshold_known_centres():
    assert default_threshold(GRID) == 5.0
    assert default_threshold([[0.0, 0.0], [3.0, 4.0], [0.0, 10.0]]) == 2.5
    # exact duplicates are ignored; the smallest distance between distinct centres counts
    assert default_threshold([[1.0], [1.0], [4.0], [10.0]]) == 1.5


def test_default_threshold_degenerate_is_inf():
    assert default_threshold(np.empty((0, 3))) == float("inf")
    assert default_threshold([[1.0, 2.0]]) == float("inf")
    assert default_threshold([[1.0, 2.0], [1.0, 2.0]]) == float("inf")


def test_default_threshold_validates():
    with pytest.raises(ValueError, match="centers contains NaN"):
        default_threshold([[0.0, np.nan], [1.0, 1.0]])
    with pytest.raises(ValueError, match="centers must be 2-D"):
        default_threshold([1.0, 2.0])


# --------------------------------------------------------------------------
# matching
# --------------------------------------------------------------------------
def test_identical_centres_permuted_keep_their_ids():
    old_ids = np.array([4, 9, 2, 7])
    perm = np.array([2, 0, 3, 1])
    m = match_clusters(GRID, old_ids, GRID[perm], next_id=10)
    np.testing.assert_array_equal(m.ids, old_ids[perm])
    assert m.next_id == 10 and m.successors == {}
    assert [t.kind for t in m.transitions] == ["survived"] * 4
    assert [t.cluster_id for t in m.transitions] == [2, 4, 7, 9]  # sorted by id
    assert all(t.distance == 0.0 and t.other_id is None for t in m.transitions)
    _check_invariants(m, old_ids, 10)


def test_survive_tolerance_is_relative_to_the_scale_of_the_centres():
    big = GRID * 1e6 + 1e6  # RMS norm ~2e6: a shift of 1e-4 is within 1e-9 * scale
    m = match_clusters(big, [0, 1, 2, 3], big + [1e-4, 0.0], next_id=4)
    assert {t.kind for t in m.transitions} == {"survived"}
    m = match_clusters(GRID, [0, 1, 2, 3], GRID + [1e-4, 0.0], next_id=4)  # scale ~10: moved
    assert {t.kind for t in m.transitions} == {"moved"}


def test_slightly_moved_centre_keeps_its_id():
    new = GRID.copy()
    new[1] += [0.0, 3.0]  # 3 < threshold 5
    m = match_clusters(GRID, [0, 1, 2, 3], new, next_id=4)
    np.testing.assert_array_equal(m.ids, [0, 1, 2, 3])
    assert m.next_id == 4
    assert _kinds(m) == {"survived": [0, 2, 3], "moved": [1], "born": [], "retired": [], "split": [], "absorbed": []}
    (moved,) = _by_kind(m, "moved")
    assert moved.distance == pytest.approx(3.0) and moved.other_id is None


def test_centre_moved_beyond_threshold_is_retired_and_a_new_one_born():
    new = GRID.copy()
    new[1] = [30.0, -20.0]  # far from every old centre
    m = match_clusters(GRID, [0, 1, 2, 3], new, next_id=4)
    np.testing.assert_array_equal(m.ids, [0, 4, 2, 3])
    assert m.next_id == 5
    k = _kinds(m)
    assert k["born"] == [4] and k["retired"] == [1] and k["moved"] == [] and k["survived"] == [0, 2, 3]
    (born,) = _by_kind(m, "born")
    assert born.distance == pytest.approx(np.hypot(20.0, 20.0))  # nearest old centre: [10, 0]
    (retired,) = _by_kind(m, "retired")
    assert retired.distance == pytest.approx(10.0)  # nearest new centre: [0, 0] (first of the tie at 10)
    assert m.successors == {1: 0}
    _check_invariants(m, np.array([0, 1, 2, 3]), 4)


def test_explicit_threshold_decides_match():
    new = GRID.copy()
    new[1] += [0.0, 3.0]
    m = match_clusters(GRID, [0, 1, 2, 3], new, next_id=4, threshold=2.0)
    assert _kinds(m)["born"] == [4] and _kinds(m)["retired"] == [1]
    m = match_clusters(GRID, [0, 1, 2, 3], new, next_id=4, threshold=3.0)  # distance == threshold: a match
    assert _kinds(m)["moved"] == [1]


def test_split_new_centre_near_a_surviving_one():
    new = np.vstack([GRID, [[1.0, 1.0]]])  # a new centre next to [0, 0], which stays
    m = match_clusters(GRID, [0, 1, 2, 3], new, next_id=4)
    np.testing.assert_array_equal(m.ids, [0, 1, 2, 3, 4])
    assert m.next_id == 5 and m.successors == {}
    (split,) = _by_kind(m, "split")
    assert (split.cluster_id, split.other_id) == (4, 0)
    assert split.distance == pytest.approx(np.sqrt(2.0))
    assert _kinds(m)["survived"] == [0, 1, 2, 3] and _kinds(m)["born"] == []


def test_two_old_centres_merged_into_one_new():
    old = np.array([[0.0, 0.0], [2.0, 0.0], [20.0, 20.0]])  # default threshold 1
    new = np.array([[20.0, 20.0], [1.2, 0.0]])  # [0,0] and [2,0] merged; [1.2,0] is nearer to [2,0]
    m = match_clusters(old, [5, 6, 7], new, next_id=8, threshold=1.5)
    np.testing.assert_array_equal(m.ids, [7, 6])
    assert m.next_id == 8
    (absorbed,) = _by_kind(m, "absorbed")
    assert (absorbed.cluster_id, absorbed.other_id) == (5, 6)
    assert absorbed.distance == pytest.approx(1.2)
    assert m.successors == {5: 6}
    assert _kinds(m)["moved"] == [6] and _kinds(m)["survived"] == [7] and _kinds(m)["retired"] == []
    _check_invariants(m, np.array([5, 6, 7]), 8)


def test_threshold_caps_the_assignment_cost():
    # Plain minimum Σd² would pair 0–0.9 and 1–10 (81.81 < 100.01) and match nothing;
    # with the cost capped at threshold² the obvious match 1–0.9 is kept.
    old = np.array([[0.0], [1.0]])
    new = np.array([[0.9], [10.0]])
    m = match_clusters(old, [0, 1], new, next_id=2)  # default threshold 0.5
    np.testing.assert_array_equal(m.ids, [1, 2])
    assert _kinds(m)["moved"] == [1] and _kinds(m)["born"] == [2] and _kinds(m)["retired"] == [0]
    assert m.successors == {0: 1}


def test_retired_ids_are_never_reused_over_a_chain():
    rng = np.random.default_rng(0)
    centers = GRID.copy()
    ids = np.arange(4)
    next_id = 4
    seen: set[int] = set(ids.tolist())
    retired: set[int] = set()
    for step in range(3):
        new = centers.copy()
        new[step] = rng.uniform(100.0, 200.0, size=2) + 1000.0 * step  # replace one centre far away
        m = match_clusters(centers, ids, new, next_id=next_id)
        _check_invariants(m, ids, next_id)
        assert m.next_id == next_id + 1
        retired |= set(m.successors)
        fresh = set(m.ids.tolist()) - set(ids.tolist())
        assert fresh == {next_id} and not fresh & seen
        assert not set(m.ids.tolist()) & retired
        seen |= fresh
        centers, ids, next_id = new, m.ids, m.next_id
    assert next_id == 7 and retired == {0, 1, 2}
    np.testing.assert_array_equal(ids, [4, 5, 6, 3])


def test_more_new_than_old():
    old = GRID[:2]
    new = np.array([[50.0, 50.0], [10.0, 0.5], [0.0, 0.0], [-40.0, 0.0]])
    m = match_clusters(old, [3, 1], new, next_id=8)
    np.testing.assert_array_equal(m.ids, [8, 1, 3, 9])
    assert m.next_id == 10
    k = _kinds(m)
    assert k["survived"] == [3] and k["moved"] == [1] and k["born"] == [8, 9] and k["retired"] == []
    assert m.successors == {}
    _check_invariants(m, np.array([3, 1]), 8)


def test_fewer_new_than_old():
    new = np.array([[10.0, 10.0], [0.0, 0.5]])
    m = match_clusters(GRID, [0, 1, 2, 3], new, next_id=4)
    np.testing.assert_array_equal(m.ids, [3, 0])
    assert m.next_id == 4
    k = _kinds(m)
    assert k["survived"] == [3] and k["moved"] == [0] and k["retired"] == [1, 2] and k["born"] == []
    assert m.successors == {1: 3, 2: 0}  # nearest new centre: [10,10] for [10,0]; [0,0.5] for [0,10]
    _check_invariants(m, np.arange(4), 4)


def test_no_old_centres_everything_is_born():
    new = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    m = match_clusters(np.empty((0, 2)), np.array([], dtype=np.int64), new, next_id=7)
    np.testing.assert_array_equal(m.ids, [7, 8, 9])
    assert m.next_id == 10 and m.successors == {}
    assert [(t.kind, t.cluster_id) for t in m.transitions] == [("born", 7), ("born", 8), ("born", 9)]
    assert all(t.distance == float("inf") for t in m.transitions)
    m = match_clusters(np.empty((0, 2)), [], new, next_id=0)  # a plain empty list of ids is fine
    np.testing.assert_array_equal(m.ids, [0, 1, 2])


def test_inputs_are_not_modified_and_result_is_read_only():
    old, ids, new = GRID.copy(), np.array([0, 1, 2, 3]), GRID[::-1] + 0.1
    copies = (old.copy(), ids.copy(), new.copy())
    m = match_clusters(old, ids, new, next_id=4)
    for a, b in zip((old, ids, new), copies, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not m.ids.flags.writeable
    assert not np.shares_memory(m.ids, ids)


def test_deterministic_with_ties():
    old = np.array([[0.0], [2.0]])
    new = np.array([[1.0]])  # equidistant from both old centres
    results = [match_clusters(old, [0, 1], new, next_id=2, threshold=1.0) for _ in range(3)]
    assert all(r.ids.tolist() == results[0].ids.tolist() for r in results)
    assert all(r.transitions == results[0].transitions for r in results)
    assert results[0].ids.tolist() == [0]  # ties go to the first position
    assert results[0].successors == {1: 0}


def test_transition_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        Transition("vanished", 0, None, 0.0)


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"new_centers": np.zeros((2, 3))}, "old_centers has 2 features, new_centers has 3"),
        ({"old_ids": np.array([0, 1, 1, 2])}, r"old_ids must be distinct; duplicated: \[1\]"),
        ({"old_ids": np.array([0, 1, 2, 4])}, "old_ids must all be < next_id=4; got id 4"),
        ({"old_ids": np.array([0, -1, 2, 3])}, "old_ids must be non-negative"),
        ({"old_ids": np.array([0, 1, 2])}, r"old_ids must have shape \(4,\)"),
        ({"old_centers": np.array([[0.0, 0.0], [np.nan, 0.0], [1.0, 1.0], [2.0, 2.0]])},
         "old_centers contains NaN or infinity in row 1"),
        ({"new_centers": np.array([[0.0, np.inf]])}, "new_centers contains NaN or infinity in row 0"),
        ({"new_centers": np.empty((0, 2))}, "new_centers is empty"),
        ({"old_centers": GRID[0]}, "old_centers must be 2-D"),
        ({"threshold": 0.0}, r"threshold must be > 0 \(or inf\); got 0.0"),
        ({"threshold": -1.0}, "threshold must be > 0"),
        ({"threshold": float("nan")}, "threshold must be > 0"),
        ({"survive_tolerance": -1e-9}, "survive_tolerance must be finite and >= 0"),
        ({"next_id": -1}, "next_id must be an integer >= 0"),
    ],
)
def test_validation_errors_name_the_problem(kwargs, message):
    args = {"old_centers": GRID.copy(), "old_ids": np.array([0, 1, 2, 3]), "new_centers": GRID.copy(),
            "next_id": 4} | kwargs
    snapshot = {k: np.array(v, copy=True) for k, v in args.items() if isinstance(v, np.ndarray)}
    with pytest.raises(ValueError, match=message):
        match_clusters(args["old_centers"], args["old_ids"], args["new_centers"], next_id=args["next_id"],
                       threshold=args.get("threshold"), survive_tolerance=args.get("survive_tolerance", 1e-9))
    for k, v in snapshot.items():
        np.testing.assert_array_equal(args[k], v)


def test_type_errors():
    with pytest.raises(TypeError, match="old_ids must be integers"):
        match_clusters(GRID, np.array([0.0, 1.0, 2.0, 3.0]), GRID, next_id=4)
    with pytest.raises(TypeError, match="threshold must be a real number"):
        match_clusters(GRID, [0, 1, 2, 3], GRID, next_id=4, threshold="5")
    with pytest.raises(TypeError, match="next_id must be an integer"):
        match_clusters(GRID, [0, 1, 2, 3], GRID, next_id=4.0)


def test_infinite_threshold_matches_every_assigned_pair():
    new = GRID + 100.0
    m = match_clusters(GRID, [0, 1, 2, 3], new, next_id=4, threshold=float("inf"))
    np.testing.assert_array_equal(m.ids, [0, 1, 2, 3])
    assert {t.kind for t in m.transitions} == {"moved"}


# --------------------------------------------------------------------------
# property: a permutation plus tiny noise is recognised exactly
# --------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(
    k=st.integers(1, 8),
    d=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
    noise_frac=st.floats(0.0, 0.099),
)
def test_permutation_plus_noise_recovers_ids(k, d, seed, noise_frac):
    rng = np.random.default_rng(seed)
    old = rng.uniform(-100.0, 100.0, size=(k, d))
    tau = default_threshold(old)
    if not np.isfinite(tau):  # k == 1: any finite scale works
        tau = 1.0
    old_ids = rng.choice(1000, size=k, replace=False)
    perm = rng.permutation(k)
    step = rng.normal(size=(k, d))
    step /= np.maximum(np.linalg.norm(step, axis=1, keepdims=True), 1e-300)
    new = old[perm] + step * (noise_frac * tau)  # every centre moves by < threshold / 10
    m = match_clusters(old, old_ids, new, next_id=1000)
    np.testing.assert_array_equal(m.ids, old_ids[perm])
    assert m.next_id == 1000 and m.successors == {}
    kinds = {t.kind for t in m.transitions}
    assert kinds <= {"survived", "moved"}
    assert len(m.transitions) == k

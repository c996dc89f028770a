"""GroupModel: the acceptance rule, exact weights, replay, snapshots, noisy logs and stable ids."""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from streamkm.group import ChunkStats, GroupModel, ModelVersion, WireError
from streamkm.group.messages import KIND_SNAPSHOT
from streamkm.group.wire import decode, encode
from tests.group.support import (
    PIPE,
    Group,
    blobs,
    equal_trees,
    fold_log,
    make_records,
    raw_stats,
    summarised_stats,
)

_CENTERS = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]])
_X6 = np.array([[0, 0], [0, 1], [9, 9], [9, 8], [0, 0.5], [9, 8.5]], dtype=np.float32)
_KW2 = {"n_clusters": 2, "seed": 0}


def _state(g: GroupModel) -> dict:
    return {"counters": dict(g.counters_), "offsets": dict(g.offsets_), "version": g.version_,
            "stats_offset": g.stats_offset_, "n_seen": g.model.n_seen_}


# ---------------------------------------------------------------- the acceptance rule
def test_acceptance_rule_cases():
    g = GroupModel(pipeline=PIPE, model_kwargs=_KW2)
    expected_counters = dict.fromkeys(("accepted", "duplicate", "overlap", "gap", "invalid"), 0)

    def check(msg, so, status, expected, offsets, version):
        out = g.fold(msg, so)
        expected_counters[status] += 1
        assert (out.status, out.expected) == (status, expected), out
        assert g.counters_ == expected_counters
        assert g.offsets_ == offsets and g.version_ == version and g.stats_offset_ == so
        v = g.version()
        assert v.counters == expected_counters and v.offsets == offsets and v.version == version
        assert v.stats_offset == so
        return out

    out = check(raw_stats(0, _X6), 0, "accepted", None, {"t:0": 6}, 1)
    assert [e["event"] for e in out.events] == ["initialized"]
    assert [t.kind for t in out.transitions] == ["born", "born"] and g.ids_.tolist() == [0, 1]
    n_seen = g.model.n_seen_
    check(raw_stats(0, _X6), 1, "duplicate", 6, {"t:0": 6}, 1)  # a re-read
    check(raw_stats(2, _X6[:3]), 2, "duplicate", 6, {"t:0": 6}, 1)  # entirely below, end < expected
    check(raw_stats(5, _X6[:1]), 3, "duplicate", 6, {"t:0": 6}, 1)  # end == expected
    check(raw_stats(4, _X6[:3]), 4, "overlap", 6, {"t:0": 6}, 1)  # straddles
    check(raw_stats(0, _X6, end=7), 5, "overlap", 6, {"t:0": 6}, 1)
    check(raw_stats(7, _X6[:1]), 6, "gap", 6, {"t:0": 6}, 1)
    assert g.model.n_seen_ == n_seen  # none of them was folded
    # a new partition starts wherever its first message does
    check(raw_stats(100, _X6[:2], part=1), 10, "accepted", None, {"t:0": 6, "t:1": 102}, 2)
    check(raw_stats(0, _X6[:2], part=0, topic="u"), 11, "accepted", None, {"t:0": 6, "t:1": 102, "u:0": 2}, 3)
    # invalid ones, even at the expected offset
    out = check(raw_stats(6, _X6, pipeline="other"), 12, "invalid", 6, {"t:0": 6, "t:1": 102, "u:0": 2}, 3)
    assert "pipeline" in out.reason
    out = check(raw_stats(6, np.ones((2, 3))), 13, "invalid", 6, {"t:0": 6, "t:1": 102, "u:0": 2}, 3)
    assert "features" in out.reason
    v = g.version()
    bad_ids = dataclasses.replace(v, ids=np.array([0, 99]))
    out = check(summarised_stats(bad_ids, 6, _X6), 14, "invalid", 6, {"t:0": 6, "t:1": 102, "u:0": 2}, 3)
    assert "unknown cluster ids [99]" in out.reason
    wide = dataclasses.replace(v, centers=np.zeros((2, 3)))
    out = check(summarised_stats(wide, 6, np.ones((4, 3))), 15, "invalid", 6, {"t:0": 6, "t:1": 102, "u:0": 2}, 3)
    assert "features" in out.reason
    assert g.model.n_seen_ == n_seen + 4
    # and the right message at the expected offset is accepted after all that
    out = check(summarised_stats(v, 6, _X6), 16, "accepted", 6, {"t:0": 12, "t:1": 102, "u:0": 2}, 4)
    assert g.model.n_seen_ == n_seen + 10


def test_summarised_before_initialization_is_invalid():
    g = GroupModel(pipeline=PIPE, model_kwargs={"n_clusters": 2, "seed": 0, "init_size": 10})
    assert g.fold(raw_stats(0, _X6), 0).status == "accepted"  # buffered: 6 < 10 points
    assert not g.model.is_initialized_ and g.version_ == 1 and not g.version().is_initialized
    v = ModelVersion(PIPE, 1, 0, {}, np.array([[0.0, 0.0], [9.0, 9.0]]), np.ones(2), np.array([0, 1]), 2, 6)
    out = g.fold(summarised_stats(v, 6, _X6), 1)
    assert out.status == "invalid" and "not initialized" in out.reason
    assert g.offsets_ == {"t:0": 6} and g.model.n_seen_ == 6
    assert g.fold(raw_stats(6, _X6), 2).status == "accepted" and g.model.is_initialized_


def test_stats_offset_must_increase():
    g = GroupModel(pipeline=PIPE, model_kwargs=_KW2)
    g.fold(raw_stats(0, _X6), 5)
    before = _state(g)
    for so in (5, 4, -1):
        with pytest.raises(ValueError, match="not after"):
            g.fold(raw_stats(6, _X6), so)
        with pytest.raises(ValueError, match="not after"):
            g.skip(so, "x")
        assert _state(g) == before
    assert g.fold(raw_stats(6, _X6), 1000).status == "accepted"  # gaps in the log are fine


def test_skip_counts_an_undecodable_message():
    g = GroupModel(pipeline=PIPE, model_kwargs=_KW2)
    g.fold(raw_stats(0, _X6), 0)
    out = g.skip(3, "CRC-32 mismatch")
    assert (out.status, out.reason) == ("invalid", "CRC-32 mismatch")
    assert g.counters_["invalid"] == 1 and g.stats_offset_ == 3 and g.version_ == 1 and g.offsets_ == {"t:0": 6}
    assert g.version().stats_offset == 3


def test_empty_and_zero_count_chunks_only_move_offsets():
    g = GroupModel(pipeline=PIPE, model_kwargs=_KW2)
    g.fold(raw_stats(0, _X6), 0)
    before = g.model.state_dict()
    assert g.fold(raw_stats(6, np.empty((0, 2)), end=9), 1).status == "accepted"
    v = g.version()
    zero = dataclasses.replace(summarised_stats(v, 9, _X6[:2]), counts=np.zeros(2, np.int64), end_offset=11)
    assert zero.n_points == 0
    assert g.fold(zero, 2).status == "accepted"
    assert g.offsets_ == {"t:0": 11} and g.version_ == 3
    assert equal_trees(before, g.model.state_dict()) == []


@pytest.mark.parametrize("poison", ["rows", "sample", "sums", "dup-ids", "rows-before-init"])
def test_a_decodable_but_unusable_message_is_invalid(poison):
    """At d7cf311 partial_fit raised inside fold (after counters_ and stats_offset_ changed: the reducer
    stopped on it) for rows above MAX_ABS_VALUE, and huge sums made the centres inf."""
    g = GroupModel(pipeline=PIPE, model_kwargs=_KW2)
    if poison != "rows-before-init":
        g.fold(raw_stats(0, _X6), 0)
    v = g.version()
    before = g.model.state_dict()
    if poison == "rows":
        msg = raw_stats(6, [[1e20, 0.0]])
    elif poison == "sample":
        msg = summarised_stats(v, 6, _X6, sample=[[1e20, 0.0]])
    elif poison == "sums":
        s = summarised_stats(v, 6, _X6[:1])
        msg = dataclasses.replace(s, sums=np.where(s.counts[:, None] > 0, np.full_like(s.sums, 1e300), 0.0))
    elif poison == "dup-ids":
        s = summarised_stats(v, 6, _X6)
        msg = dataclasses.replace(s, ids=np.array([0, 0]))
    else:
        msg = raw_stats(0, [[1e20, 0.0]] * 6)
    msg = ChunkStats.from_bytes(msg.to_bytes())
    assert isinstance(msg, ChunkStats)  # it passes the message validation
    expected_offsets = dict(g.offsets_)
    out = g.fold(msg, 1)
    assert out.status == "invalid" and out.reason
    assert equal_trees(before, g.model.state_dict()) == []
    assert g.offsets_ == expected_offsets and g.stats_offset_ == 1
    assert g.counters_["accepted"] == g.version_ == len(expected_offsets)
    assert g.counters_["invalid"] == 1 and sum(g.counters_.values()) == len(expected_offsets) + 1
    # the reducer goes on: the right message at the expected offset folds
    first = expected_offsets.get("t:0", 0)
    assert g.fold(raw_stats(first, _X6), 2).status == "accepted"


# ---------------------------------------------------------------- the real worker path
def _run(model_kwargs, *, seed=0, steps=45, batch_rows=30, bad_frac=0.1, multi=False, drift_shift=False, **group_kw):
    rng = np.random.default_rng(seed)
    grp = Group(model_kwargs=model_kwargs, batch_rows=batch_rows, **group_kw)
    n_rows = 0
    for i in range(steps):
        part = int(rng.integers(3))
        centers = _CENTERS + (40.0 if drift_shift and i > steps // 2 else 0.0)
        recs, rows = make_records(rng, part, grp.next_offset[part], int(rng.integers(1, 40)), centers,
                                  bad_frac=bad_frac, rows_per_record=(1, 3) if multi else (1, 1))
        n_rows += sum(r.shape[0] for r in rows.values())
        grp.step(recs)
    grp.flush()
    return grp, n_rows


@pytest.mark.parametrize("multi", [False, True])
def test_exact_weight_through_the_pipeline(multi):
    kw = {"n_clusters": 4, "seed": 0, "dying_threshold": 0.0}
    grp, n_rows = _run(kw, multi=multi)
    g = grp.g
    assert set(grp.outcomes) == {"accepted"}
    raw = sum(1 for s in grp.stats if s.rows.shape[0])
    summ = sum(1 for s in grp.stats if s.ids.shape[0])
    assert raw >= 1 and summ >= 10  # both kinds of chunks were folded
    assert float(g.model.counts_.sum()) == float(n_rows)
    assert g.model.n_seen_ == n_rows == g.version().n_seen
    assert float(g.version().weights.sum()) == float(n_rows)
    assert g.offsets_ == {f"t:{p}": n for p, n in grp.next_offset.items()}
    assert sum(s.n_points for s in grp.stats) == n_rows


_KW_RESEED = {"n_clusters": 4, "seed": 3, "half_life": 6, "reseed_interval": 150, "reservoir_size": 120,
              "n_init": 2, "max_iter": 10}
_DRIFT = {"method": "page_hinkley", "min_instances": 5, "threshold": 5.0}


@pytest.fixture(scope="module")
def reseed_run():
    grp, _ = _run(_KW_RESEED, seed=7, steps=60, multi=True, drift_shift=True, drift_kwargs=_DRIFT)
    assert set(grp.outcomes) == {"accepted"}
    assert grp.g.model.n_reseeds_ >= 3
    return grp


def test_replay_gives_the_same_version_after_every_message(reseed_run):
    grp = reseed_run
    versions: list[ModelVersion] = []
    g2 = fold_log(grp.log, model_kwargs=_KW_RESEED, versions=versions, drift_kwargs=_DRIFT)
    assert len(versions) == len(grp.versions) == len(grp.log)
    for i, (a, b) in enumerate(zip(grp.versions, versions, strict=True)):
        assert a.same_model(b), i
    assert equal_trees(grp.g.state_dict(), g2.state_dict()) == []


def test_replay_of_a_different_log_differs(reseed_run):
    """The comparison above can fail: a log with two messages swapped gives other versions."""
    grp = reseed_run
    log = list(grp.log)
    i = next(i for i in range(5, len(log) - 1)
             if ChunkStats.from_bytes(log[i]).partition != ChunkStats.from_bytes(log[i + 1]).partition)
    log[i], log[i + 1] = log[i + 1], log[i]
    g2 = fold_log(log, model_kwargs=_KW_RESEED, drift_kwargs=_DRIFT)
    assert g2.version().offsets == grp.g.version().offsets
    assert not g2.version().same_model(grp.g.version())


def test_snapshot_recovery(reseed_run):
    grp = reseed_run
    final = grp.versions[-1]
    n = len(grp.log)
    reseeds_at = [v.summary["n_reseeds"] for v in grp.versions]
    for cut in sorted({1, n // 3, n // 2, n - 2, *range(2, n, 7)}):
        g1 = fold_log(grp.log[:cut], model_kwargs=_KW_RESEED, drift_kwargs=_DRIFT)
        got = decode(encode(KIND_SNAPSHOT, g1.state_dict()))
        assert not isinstance(got, WireError), got
        kind, state = got
        assert kind == KIND_SNAPSHOT
        g2 = GroupModel(pipeline=PIPE, model_kwargs=_KW_RESEED, drift_kwargs=_DRIFT)
        g2.load_state_dict(state)
        assert g2.version().same_model(grp.versions[cut - 1]), cut
        versions: list[ModelVersion] = []
        fold_log(grp.log, model_kwargs=_KW_RESEED, g=g2, start=cut, versions=versions)
        assert all(a.same_model(b) for a, b in zip(grp.versions[cut:], versions, strict=True)), cut
        assert g2.version().same_model(final), cut
        assert equal_trees(g2.state_dict(), grp.g.state_dict()) == [], cut
    assert reseeds_at[n // 2] < reseeds_at[-1]  # reseeds (RNG draws) happened after a cut


def test_snapshot_without_the_rng_would_diverge(reseed_run):
    """A negative control: the same centres with a fresh RNG state do not replay the same."""
    grp = reseed_run
    n = len(grp.log)
    cut = n // 2
    g1 = fold_log(grp.log[:cut], model_kwargs=_KW_RESEED, drift_kwargs=_DRIFT)
    state = g1.state_dict()
    fresh = GroupModel(pipeline=PIPE, model_kwargs={**_KW_RESEED, "seed": 999}).model.state_dict()
    state["model"]["rng"] = fresh["rng"]
    g2 = GroupModel(pipeline=PIPE, model_kwargs=_KW_RESEED, drift_kwargs=_DRIFT)
    g2.load_state_dict(state)
    fold_log(grp.log, model_kwargs=_KW_RESEED, g=g2, start=cut)
    assert not g2.version().same_model(grp.versions[-1])


def test_load_state_dict_rejects_and_changes_nothing():
    g = GroupModel(pipeline=PIPE, model_kwargs=_KW2)
    g.fold(raw_stats(0, _X6), 0)
    good = g.state_dict()
    target = GroupModel(pipeline=PIPE, model_kwargs=_KW2)
    target.fold(raw_stats(0, _X6[::-1]), 0)
    before = target.state_dict()
    for bad in ({**good, "format": "x"}, {**good, "version": 2}, {**good, "pipeline": "other"},
                {**good, "ids": np.array([0, 1, 2])}):
        with pytest.raises(ValueError):
            target.load_state_dict(bad)
        assert equal_trees(before, target.state_dict()) == []
    other = GroupModel(pipeline="other", model_kwargs=_KW2)
    with pytest.raises(ValueError):
        other.load_state_dict(good)
    wrong_k = GroupModel(pipeline=PIPE, model_kwargs={"n_clusters": 3, "seed": 0})
    with pytest.raises(ValueError):
        wrong_k.load_state_dict(good)


@pytest.mark.parametrize("key", ["model", "ids", "successors", "next_id", "model_version", "stats_offset", "offsets",
                                 "counters", "n_drift", "n_drift_reseeds", "offsets=list", "counters=list",
                                 "next_id=None"])
def test_load_state_dict_missing_key_is_a_value_error_and_changes_nothing(key):
    """At d7cf311 a missing next_id/model_version/... raised KeyError after model, drift and ids were replaced."""
    g = GroupModel(pipeline=PIPE, model_kwargs=_KW2)
    g.fold(raw_stats(0, _X6), 0)
    state = g.state_dict()
    if "=" in key:
        name, junk = key.split("=")
        state[name] = [1] if junk == "list" else None
    else:
        del state[key]
    target = GroupModel(pipeline=PIPE, model_kwargs=_KW2)
    before = target.state_dict()
    try:
        target.load_state_dict(state)
    except ValueError:
        pass
    else:
        raise AssertionError("loaded an incomplete state")
    assert equal_trees(before, target.state_dict()) == []


# ---------------------------------------------------------------- noisy logs (the property)
_KW_H = {"n_clusters": 3, "seed": 1, "half_life": 8, "reseed_interval": 45, "reservoir_size": 60, "n_init": 1,
         "max_iter": 8}
_C3 = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
_chunk = st.tuples(st.integers(0, 30), st.integers(0, 2), st.booleans())  # rows, invalid records, summarised


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_noisy_log_folds_like_the_clean_log(data):
    draw = data.draw
    rng = np.random.default_rng(draw(st.integers(0, 2**20), label="seed"))
    init = raw_stats(0, blobs(rng, _C3, 12))
    scratch = GroupModel(pipeline=PIPE, model_kwargs=_KW_H)
    assert scratch.fold(init, 0).status == "accepted" and scratch.model.is_initialized_
    v1 = scratch.version()  # what the workers summarise against (stale later on: ids may retire meanwhile)

    chunks: dict[int, list[ChunkStats]] = {}
    for p in range(3):
        off = init.end_offset if p == 0 else draw(st.integers(0, 5))
        chunks[p] = []
        for rows, extra, summ in draw(st.lists(_chunk, min_size=0 if p == 0 else 1, max_size=5), label=f"p{p}"):
            extra = max(extra, 1 - rows)  # at least one offset
            X = blobs(rng, _C3, rows)
            end = off + rows + extra
            m = summarised_stats(v1, off, X, part=p, end=end) if summ and rows else raw_stats(off, X, part=p, end=end)
            chunks[p].append(m)
            off = end
    order = draw(st.permutations([p for p in range(3) for _ in chunks[p]]), label="interleaving")

    clean, noisy, placed = [init.to_bytes()], [init.to_bytes()], [init]
    expected = {0: init.end_offset}
    injected: collections.Counter[str] = collections.Counter()

    def inject():
        for _ in range(draw(st.integers(0, 2))):
            kind = draw(st.sampled_from(["duplicate", "overlap", "gap", "garbage", "invalid"]))
            p = draw(st.sampled_from(sorted(expected)))
            e = expected[p]
            if kind == "duplicate":
                msg = draw(st.sampled_from(placed))
            elif kind == "overlap":
                first, end = e - draw(st.integers(1, e)), e + draw(st.integers(1, 5))
                msg = raw_stats(first, blobs(rng, _C3, min(draw(st.integers(0, 4)), end - first)), part=p, end=end)
            elif kind == "gap":
                first = e + draw(st.integers(1, 5))
                msg = raw_stats(first, blobs(rng, _C3, draw(st.integers(0, 4))), part=p, end=first + 5)
            elif kind == "garbage":
                noisy.append(draw(st.binary(max_size=40)))
                injected["invalid"] += 1
                continue
            elif draw(st.booleans()):
                msg = raw_stats(e, blobs(rng, _C3, 3), part=p, pipeline="other")
            else:
                msg = raw_stats(e, np.ones((2, 3)), part=p)  # wrong dimension
            noisy.append(msg.to_bytes())
            injected[kind] += 1

    nxt = dict.fromkeys(range(3), 0)
    for p in order:
        m = chunks[p][nxt[p]]
        nxt[p] += 1
        inject()
        b = m.to_bytes()
        noisy.append(b)
        clean.append(b)
        placed.append(m)
        expected[p] = m.end_offset
    inject()

    gc = fold_log(clean, model_kwargs=_KW_H, identity_threshold=0.4)
    gn = fold_log(noisy, model_kwargs=_KW_H, identity_threshold=0.4)
    assert gc.counters_ == {"accepted": len(clean), "duplicate": 0, "overlap": 0, "gap": 0, "invalid": 0}
    assert gn.counters_ == {"accepted": len(clean), "duplicate": injected["duplicate"],
                            "overlap": injected["overlap"], "gap": injected["gap"], "invalid": injected["invalid"]}
    assert sum(gn.counters_.values()) == len(noisy)
    assert gn.counters_["duplicate"] + gn.counters_["overlap"] == injected["duplicate"] + injected["overlap"]
    vc, vn = gc.version(), gn.version()
    assert vn.stats_offset == len(noisy) - 1
    assert dataclasses.replace(vn, stats_offset=vc.stats_offset, counters=vc.counters).same_model(vc)
    assert vn.centers.tobytes() == vc.centers.tobytes() and vn.weights.tobytes() == vc.weights.tobytes()
    assert vn.offsets == vc.offsets == {f"t:{p}": e for p, e in expected.items()}
    assert gn.successors_ == gc.successors_
    assert equal_trees(gn.model.state_dict(), gc.model.state_dict()) == []
    event(f"reseeds: {min(gn.model.n_reseeds_ + gn.model.n_reseeds_rejected_, 3)}")
    event(f"retired ids: {bool(gn.successors_)}")
    event(f"injected: {min(sum(injected.values()), 5)}")


# ---------------------------------------------------------------- stable cluster ids
_KW_IDS = {"n_clusters": 4, "seed": 0, "reseed_interval": 200, "reservoir_size": 200, "half_life": 5,
           "reservoir": "time_biased", "n_init": 3}
_A4 = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])


def test_stable_ids_across_reseeds():
    rng = np.random.default_rng(0)
    g = GroupModel(pipeline=PIPE, model_kwargs=_KW_IDS, identity_threshold=0.6)
    so, off = 0, 0
    X = blobs(rng, _A4, 40, 0.5)
    g.fold(raw_stats(off, X), so)
    off += X.shape[0]
    v_old = g.version()
    assert v_old.ids.tolist() == [0, 1, 2, 3]
    # the centre near _A4[0] moves by 0.3 per chunk, the others stay
    moving = int(v_old.ids[np.argmin(((v_old.centers - _A4[0]) ** 2).sum(1))])
    untouched = sorted(set(v_old.ids.tolist()) - {moving})
    seen_ids = set(v_old.ids.tolist())
    next_ids = [g.next_id_]
    transitions = []
    for i in range(1, 31):
        C = _A4.copy()
        C[0, 0] += 0.3 * i
        X = blobs(rng, C, 50, 0.5)
        so += 1
        out = g.fold(summarised_stats(g.version(), off, X), so)
        off += X.shape[0]
        assert out.status == "accepted"
        transitions += out.transitions
        ids = g.ids_.tolist()
        assert len(set(ids)) == 4 and max(ids) < g.next_id_
        new = set(ids) - seen_ids
        assert all(n >= next_ids[-1] for n in new)  # fresh ids only, never reused
        retired = seen_ids - set(ids)
        assert retired <= set(g.successors_)  # every retired id has a successor ...
        assert set(g.successors_.values()) <= set(ids)  # ... that is a current id
        assert not (set(g.successors_) & set(ids))
        seen_ids |= set(ids)
        next_ids.append(g.next_id_)
    assert next_ids == sorted(next_ids)
    assert g.model.n_reseeds_ >= 4
    assert {"retired", "born"} <= {t.kind for t in transitions}
    for cid in untouched:  # survive every reseed, at their blob
        assert cid in g.ids_.tolist()
        j = g.ids_.tolist().index(cid)
        k = int(np.argmin(((v_old.centers - v_old.centers[v_old.ids.tolist().index(cid)]) ** 2).sum(1)))
        assert np.linalg.norm(g.model.cluster_centers_[j] - v_old.centers[k]) < 1.0
    assert moving not in g.ids_.tolist() and g.successors_[moving] in g.ids_.tolist()
    assert g.next_id_ > 4

    # statistics summarised against the first version (the moving id since retired) still fold, fully
    n_seen = g.model.n_seen_
    R = _KW_IDS["reseed_interval"]
    n = R - 1 - n_seen % R  # no interval reseed in this fold
    assert n >= 20
    X = blobs(rng, _A4, n, 0.5)
    stale = summarised_stats(v_old, off, X)
    assert moving in stale.ids.tolist() and stale.counts[stale.ids.tolist().index(moving)] > 0
    w_before = g.model.counts_.copy()
    pos = {cid: j for j, cid in enumerate(g.ids_.tolist())}
    add = np.zeros(4)
    for cid, c in zip(stale.ids.tolist(), stale.counts.tolist(), strict=True):
        add[pos[g.successors_.get(cid, cid)]] += c
    reseeds, dying = g.model.n_reseeds_, g.model.n_dying_replaced_
    out = g.fold(stale, so + 1)
    assert out.status == "accepted"
    assert (g.model.n_reseeds_, g.model.n_dying_replaced_) == (reseeds, dying)
    assert g.model.n_seen_ == n_seen + n
    gamma = g.model.gamma
    np.testing.assert_allclose(g.model.counts_, gamma * w_before + add, rtol=1e-12)
    assert float(g.model.counts_.sum()) == pytest.approx(gamma * float(w_before.sum()) + n, rel=1e-12)


def test_retired_id_chains_resolve_to_a_current_id():
    rng = np.random.default_rng(0)
    g = GroupModel(pipeline=PIPE, model_kwargs=_KW_IDS, identity_threshold=0.6)
    g.fold(raw_stats(0, blobs(rng, _A4, 40, 0.5)), 0)
    off, olds = 40, [g.version()]
    for i in range(1, 40):
        C = _A4.copy()
        C[0, 0] += 0.3 * i
        X = blobs(rng, C, 50, 0.5)
        g.fold(summarised_stats(g.version(), off, X), i)
        off += 50
        olds.append(g.version())
    chained = [old for old, new in g.successors_.items() if any(old in v.ids.tolist() for v in olds[1:])]
    assert len(g.successors_) >= 2 and chained  # an id born after the start and retired since
    # a worker holding ANY earlier version can still be folded (no unknown ids)
    so = 100
    for v in olds[::5]:
        n0 = g.model.n_seen_
        out = g.fold(summarised_stats(v, off, blobs(rng, _A4, 5, 0.5)), so)
        assert out.status == "accepted", out.reason
        assert g.model.n_seen_ == n0 + 5
        off += 5
        so += 1


def test_stale_ids_merged_into_one_cluster_add_up():
    """Two ids of an old version that now fold into the same cluster (one retired into the other): both count."""
    b0 = np.array([[0.0, 0.0], [10.0, 0.0], [13.0, 0.0]])
    kw = {"n_clusters": 3, "seed": 0, "half_life": 3, "reservoir": "time_biased", "reservoir_size": 100,
          "dying_threshold": 0.0, "reseed_interval": 900}
    rng = np.random.default_rng(0)
    g = GroupModel(pipeline=PIPE, model_kwargs=kw)
    g.fold(raw_stats(0, blobs(rng, b0, 30, 0.3)), 0)
    off, v_old = 30, g.version()
    for i in range(1, 31):  # the blob at 13 is gone; the reseed at 900 points drops its centre
        X = blobs(rng, b0[:2], 30, 0.3)
        assert g.fold(summarised_stats(g.version(), off, X), i).status == "accepted"
        off += 30
    assert g.model.n_reseeds_ == 1
    targets = [g.successors_.get(c, c) for c in v_old.ids.tolist()]
    assert len(set(targets)) < len(targets)  # two old ids now mean one current cluster
    stale = summarised_stats(v_old, off, blobs(rng, b0, 60, 0.3))
    assert (stale.counts > 0).all()
    w, n_seen = g.model.counts_.copy(), g.model.n_seen_
    pos = {cid: j for j, cid in enumerate(g.ids_.tolist())}
    add = np.zeros(3)
    for cid, c in zip(stale.ids.tolist(), stale.counts.tolist(), strict=True):
        add[pos[g.successors_.get(cid, cid)]] += c
    assert g.fold(stale, 100).status == "accepted"
    assert g.model.n_seen_ == n_seen + 60 and g.model.n_reseeds_ == 1
    np.testing.assert_allclose(g.model.counts_, g.model.gamma * w + add, rtol=1e-12)

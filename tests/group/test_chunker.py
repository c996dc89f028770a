"""GroupChunker as the core of VectorPipeline: chunks that tile partitions at record boundaries."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamkm.codec import encode_binary, encode_json
from streamkm.group import ChunkStats, GroupModel, ModelVersion
from streamkm.group.chunker import GroupChunker
from streamkm.pipeline.vectors import VectorPipeline
from tests.group.support import BAD, PIPE, TOPIC, Group, Rec, blobs, equal_trees, make_records, raw_stats

_CENTERS = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]])
_KW = {"n_clusters": 4, "seed": 0}


def _rows_in(rows: dict[int, np.ndarray], first: int, end: int) -> list[np.ndarray]:
    return [rows[o] for o in sorted(rows) if first <= o < end]


@pytest.mark.parametrize("batch_rows,sample_rows", [(25, 64), (25, 7), (1, 64), (60, 10)])
def test_chunks_tile_partitions_at_record_boundaries(batch_rows, sample_rows):
    rng = np.random.default_rng(batch_rows + sample_rows)
    grp = Group(model_kwargs=_KW, batch_rows=batch_rows, sample_rows=sample_rows)
    rows: dict[int, dict[int, np.ndarray]] = {p: {} for p in range(3)}
    flushed: set[int] = set()
    for step in range(40):
        part = int(rng.integers(3))
        recs, r = make_records(rng, part, grp.next_offset[part], int(rng.integers(1, 30)), _CENTERS, bad_frac=0.15,
                               rows_per_record=(1, 5), fmt="binary")
        rows[part].update(r)
        grp.step(recs)
        if step == 20:  # a flush in the middle too (as when caught up)
            n = len(grp.stats)
            grp.flush()
            flushed |= set(range(n, len(grp.stats)))
    n = len(grp.stats)
    grp.flush()
    flushed |= set(range(n, len(grp.stats)))
    assert set(grp.outcomes) == {"accepted"}
    has_invalid_inside = False
    for part in range(3):
        idx = [i for i, s in enumerate(grp.stats) if s.partition == part]
        assert idx, part
        prev_end = 0
        for i in idx:
            s = grp.stats[i]
            assert (s.topic, s.pipeline, s.member) == (TOPIC, PIPE, "w")
            assert s.first_offset == prev_end, (part, i)  # tiles the partition
            assert s.end_offset > s.first_offset
            recs_rows = _rows_in(rows[part], s.first_offset, s.end_offset)
            m = sum(x.shape[0] for x in recs_rows)
            assert s.n_points == m  # whole records: exactly the rows of the valid records in the range
            if i not in flushed:
                assert m >= batch_rows
                # ... and it ends at the first record boundary at or past batch_rows
                assert m - recs_rows[-1].shape[0] < batch_rows
            has_invalid_inside |= len(recs_rows) < s.end_offset - s.first_offset
            X = np.concatenate(recs_rows) if recs_rows else np.empty((0, 3), np.float32)
            if s.rows.shape[0] or s.base_version == 0:
                assert s.ids.shape[0] == 0 and s.rows.tobytes() == X.tobytes()
            else:
                assert s.rows.shape[0] == 0 and int(s.counts.sum()) == m
                np.testing.assert_allclose(s.sums.sum(0), X.sum(0, dtype=np.float64), rtol=1e-5, atol=1e-3)
                assert s.sample.shape == (min(sample_rows, m), 3)
                rowset = {x.tobytes() for x in X}
                assert all(x.tobytes() in rowset for x in s.sample)
                if sample_rows >= m:
                    assert s.sample.tobytes() == X.tobytes()
            prev_end = s.end_offset
        assert prev_end == grp.next_offset[part]  # the flush sent everything consumed
        assert grp.ch.start_of(TOPIC, part) == prev_end and not grp.ch.unsent(TOPIC, part)
    assert has_invalid_inside
    assert grp.ch.n_pending == 0
    assert grp.g.offsets_ == {f"{TOPIC}:{p}": grp.next_offset[p] for p in range(3)}


def test_flush_of_only_invalid_records_advances_the_offset():
    rng = np.random.default_rng(0)
    grp = Group(model_kwargs=_KW, batch_rows=15)
    recs, _ = make_records(rng, 0, 0, 15, _CENTERS)
    grp.step(recs)
    assert [(s.first_offset, s.end_offset) for s in grp.stats] == [(0, 15)]
    assert grp.g.model.is_initialized_
    n_seen, version = grp.g.model.n_seen_, grp.g.version_
    state = grp.g.model.state_dict()
    bad = [Rec(TOPIC, 0, o, None, BAD, (), 0) for o in range(15, 19)]
    res = grp.step(bad)
    assert res.stats == [] and grp.ch.unsent(TOPIC, 0)
    res = grp.flush()
    assert len(res.stats) == 1
    s = res.stats[0]
    assert (s.first_offset, s.end_offset, s.n_points) == (15, 19, 0)
    assert s.rows.shape == (0, 3) and s.ids.shape == (0,)
    assert isinstance(ChunkStats.from_bytes(s.to_bytes()), ChunkStats)
    assert grp.outcomes[-1] == "accepted"
    assert grp.g.offsets_ == {"t:0": 19} and grp.g.version_ == version + 1 and grp.g.model.n_seen_ == n_seen
    assert equal_trees(state, grp.g.model.state_dict()) == []
    # and the next chunk continues from there
    recs, _ = make_records(rng, 0, 19, 15, _CENTERS)
    grp.step(recs)
    assert (grp.stats[-1].first_offset, grp.stats[-1].end_offset) == (19, 34) and grp.outcomes[-1] == "accepted"


def test_flush_before_any_valid_record():
    grp = Group(model_kwargs=_KW, batch_rows=15)
    grp.step([Rec(TOPIC, 2, o, None, BAD, (), 0) for o in range(7, 10)])
    grp.ch.reset(TOPIC, 2, 7)  # (assigned at 7)
    grp.ch.advance(TOPIC, 2, 10)
    res = grp.flush()
    assert [(s.partition, s.first_offset, s.end_offset, s.n_points) for s in res.stats] == [(2, 7, 10, 0)]
    assert grp.outcomes == ["accepted"] and grp.g.offsets_ == {"t:2": 10} and not grp.g.model.is_initialized_


def _fixed_version() -> ModelVersion:
    rng = np.random.default_rng(5)
    g = GroupModel(pipeline=PIPE, model_kwargs=_KW)
    g.fold(raw_stats(0, blobs(rng, _CENTERS, 40)), 0)
    return g.version()


def _records(seed: int, n: int, *, bad_frac: float, part: int = 1):
    rng = np.random.default_rng(seed)
    return make_records(rng, part, 0, n, _CENTERS, bad_frac=bad_frac, rows_per_record=(1, 4), fmt="binary")[0]


def _chunk(recs: list[Rec], splits: list[int], *, version: ModelVersion | None, ch: GroupChunker | None = None,
           start: int = 0, batch_rows: int = 20, sample_rows: int = 6, flush: bool = False):
    """Feed recs[start:] in fetches ending at *splits*; the stats bytes and outputs."""
    if ch is None:
        ch = GroupChunker(pipeline=PIPE, batch_rows=batch_rows, sample_rows=sample_rows, seed=3, member="w")
        ch.set_topic(TOPIC)
    ch.version = version
    ch.reset(TOPIC, recs[start].partition, recs[start].offset)
    p = VectorPipeline(model_kwargs=_KW, batch_rows=batch_rows, core=ch)
    stats, outputs = [], []
    a = start
    for b in [*splits, len(recs)]:
        if b <= a:
            continue
        res = p.process(recs[a:b])
        ch.advance(TOPIC, recs[a].partition, recs[b - 1].offset + 1)
        stats += res.stats
        outputs += res.outputs
        a = b
    if flush:
        res = p.flush()
        stats += res.stats
        outputs += res.outputs
    return [s.to_bytes() for s in stats], [s for s in stats], outputs, ch


@pytest.mark.parametrize("with_version", [True, False])
def test_reread_after_reset_at_a_chunk_boundary_is_byte_identical(with_version):
    v = _fixed_version() if with_version else None
    recs = _records(1, 150, bad_frac=0.1)
    splits = [13, 40, 41, 77, 100, 120]
    b1, s1, o1, ch = _chunk(recs, splits, version=v)
    assert len(s1) >= 5
    if with_version:
        assert all(s.sample.shape[0] == 6 < s.n_points for s in s1)  # a drawn sample, not all rows
    for k in (1, len(s1) // 2, len(s1) - 1):
        boundary = s1[k].first_offset
        # the same worker, realigned (reset) at the boundary, re-reads with the same fetches from there
        b2, _, o2, _ = _chunk(recs, [x for x in splits if x > boundary], version=v, ch=ch, start=boundary)
        assert b2 == b1[k:]
        # a new worker from the boundary: the same bytes too
        b3, _, o3, _ = _chunk(recs, [x for x in splits if x > boundary], version=v, start=boundary)
        assert b3 == b1[k:]
        first_out = next(i for i, o in enumerate(o1) if json.loads(o.value)["offset"] >= boundary)
        assert [o.value for o in o2] == [o.value for o in o1[first_out:]] == [o.value for o in o3]


@pytest.mark.parametrize("bad_frac", [0.0, 0.2])
def test_reread_with_other_fetches_is_byte_identical(bad_frac):
    v = _fixed_version()
    recs = _records(2, 150, bad_frac=bad_frac)
    b1, s1, _, _ = _chunk(recs, [13, 40, 41, 77, 100, 120], version=v)
    for splits in ([], [1, 2, 3, 99], list(range(0, 150, 7)), list(range(150))):
        b2, _, _, _ = _chunk(recs, splits, version=v)
        assert b2 == b1, splits
    boundary = s1[2].first_offset
    b3, _, _, _ = _chunk(recs, list(range(boundary, 150, 5)), version=v, start=boundary)
    assert b3 == b1[2:]


def test_chunk_boundaries_do_not_depend_on_fetches_with_invalid_records():
    """At d7cf311 a chunk ended at the next queued row (taking the invalid records in between) only if that row
    was already fetched, else at its last record + 1: here (0, 4) in one fetch but (0, 3) when split at 3."""
    recs = [Rec(TOPIC, 0, o, None, BAD if o == 3 else encode_json([float(o), 0.0]), (), 0) for o in range(10)]
    one, s1, _, _ = _chunk(recs, [], version=None, batch_rows=3)
    split, _, _, _ = _chunk(recs, [3], version=None, batch_rows=3)
    assert one == split
    assert [(s.first_offset, s.end_offset) for s in s1] == [(0, 3), (3, 7), (7, 10)]  # the bad one opens a chunk


def test_outputs_carry_version_ids_and_number():
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    ids = np.array([7, 3, 11], dtype=np.int64)
    v = ModelVersion(PIPE, 5, 42, {"t:0": 0}, centers, np.ones(3), ids, 12, 30)
    ch = GroupChunker(pipeline=PIPE, batch_rows=4, sample_rows=2)
    ch.set_topic(TOPIC)
    ch.reset(TOPIC, 0, 0)
    ch.version = v
    p = VectorPipeline(model_kwargs=_KW, batch_rows=4, core=ch)
    pts = [[0.1, 0.0], [9.0, 1.0], [0.0, 9.5], [10.0, 0.2], [0.3, 0.3], [1.0, 8.0]]
    recs = [Rec(TOPIC, 0, 0, b"a", encode_json(pts[0]), (), 0), Rec(TOPIC, 0, 1, b"b", BAD, (), 0),
            Rec(TOPIC, 0, 2, b"c", encode_binary(pts[1:4]), (), 0), Rec(TOPIC, 0, 3, b"d", encode_json(pts[4]), (), 0),
            Rec(TOPIC, 0, 4, b"e", encode_binary(pts[5:]), (), 0)]
    res = p.process(recs)
    res.merge(p.flush())
    nearest = ids[np.argmin(((np.array(pts)[:, None, :] - centers[None]) ** 2).sum(-1), axis=1)]
    assert nearest.tolist() == [7, 3, 11, 3, 7, 11]
    out = [(o.key, json.loads(o.value)) for o in res.outputs]
    assert [k for k, _ in out] == [b"a", b"c", b"d", b"e"]
    assert all(o["model_version"] == 5 and o["topic"] == TOPIC and o["partition"] == 0 for _, o in out)
    assert [o["offset"] for _, o in out] == [0, 2, 3, 4]
    assert out[0][1]["cluster"] == 7 and out[0][1]["sq_distance"] == pytest.approx(0.01, rel=1e-5)
    assert out[1][1]["clusters"] == [3, 11, 3] and out[1][1]["row"] == 0 and len(out[1][1]["sq_distances"]) == 3
    assert out[2][1]["cluster"] == 7
    assert out[3][1]["cluster"] == 11  # a one-row binary record is a single-row record
    assert [(s.first_offset, s.end_offset) for s in res.stats] == [(0, 3), (3, 5)]
    s0 = res.stats[0]
    assert s0.ids.tolist() == [7, 3, 11] and s0.base_version == 5 and s0.counts.tolist() == [1, 2, 1]
    assert s0.sample.shape == (2, 2)
    assert ch.model.n_batches_ == 5 and ch.model.is_initialized_ and ch.model.n_seen_ == 30


def test_outputs_before_any_version():
    ch = GroupChunker(pipeline=PIPE, batch_rows=2)
    ch.set_topic(TOPIC)
    ch.reset(TOPIC, 0, 0)
    p = VectorPipeline(model_kwargs=_KW, batch_rows=2, core=ch)
    res = p.process([Rec(TOPIC, 0, o, None, encode_json([1.0, 2.0]), (), 0) for o in range(2)])
    vals = [json.loads(o.value) for o in res.outputs]
    assert [(v["cluster"], v["sq_distance"], v["model_version"]) for v in vals] == [(-1, None, 0)] * 2
    assert res.stats[0].base_version == 0 and res.stats[0].rows.shape == (2, 2)
    assert not ch.model.is_initialized_ and ch.model.n_batches_ == 0


def test_untracked_partitions_are_not_queued():
    ch = GroupChunker(pipeline=PIPE, batch_rows=2)
    ch.set_topic(TOPIC)
    ch.reset(TOPIC, 0, 5)
    p = VectorPipeline(model_kwargs=_KW, batch_rows=2, core=ch)
    res = p.process([Rec(TOPIC, 1, o, None, encode_json([1.0, 2.0]), (), 0) for o in range(3)])
    assert res.stats == [] and ch.n_pending == 0 and ch.start_of(TOPIC, 1) is None
    p.process([Rec(TOPIC, 0, 5, None, encode_json([1.0, 2.0]), (), 0)])
    assert ch.n_pending == 1 and ch.unsent(TOPIC, 0)
    ch.forget(TOPIC, 0)
    assert ch.n_pending == 0 and ch.start_of(TOPIC, 0) is None and p.flush().stats == []


def test_constructor_validates():
    with pytest.raises(ValueError):
        GroupChunker(pipeline=PIPE, batch_rows=0)
    with pytest.raises(ValueError):
        GroupChunker(pipeline=PIPE, batch_rows=1, sample_rows=-1)

"""The sequence pipeline on the group model: per-partition windows that move with their partition.

A partition's chunks must not depend on who read it, in which fetch sizes, or where it moved:
a fresh pipeline restored from any chunk's ``resume`` (after a trip through the wire format)
and fed the records from ``resume["offset"]`` on must cut exactly the chunks (bounds, windows
and their order, outputs) that one uninterrupted reader cuts; the embeddings agree to float32
rounding.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

from streamkm.codec.events import encode_event_json
from streamkm.group import ChunkStats
from streamkm.group.chunker import GroupChunker
from streamkm.pipeline.base import BatchResult
from streamkm.pipeline.sequence import SequencePipeline
from streamkm.sequence.lstm import LSTMEncoder

Rec = collections.namedtuple("Rec", "topic partition offset key value headers timestamp")
TOPIC = "events"
F = 3

WINDOWS = {
    "tumbling": {"kind": "tumbling", "size": 4},
    "sliding": {"kind": "sliding", "size": 5, "stride": 2},
    "session": {"kind": "session", "gap": 2.5, "max_events_per_key": 6},
}


def _records(partition: int, n: int, seed: int) -> list[Rec]:
    rng = np.random.default_rng(seed)
    out = []
    ts = 0.0
    for off in range(n):
        ts += float(rng.exponential(0.4))
        if rng.random() < 0.03:
            value = b"{not json"
        else:
            value = encode_event_json(f"k{int(rng.integers(6))}", ts, rng.normal(size=F))
        out.append(Rec(TOPIC, partition, off, None, value, (), 0))
    return out


def _pipeline(windows: dict, encoder: LSTMEncoder) -> tuple[GroupChunker, SequencePipeline]:
    chunker = GroupChunker(pipeline="sequence", batch_rows=16, sample_rows=4, raw=True)
    chunker.set_topic(TOPIC)
    pipe = SequencePipeline(encoder=encoder, windower_kwargs=windows, model_kwargs={"n_clusters": 3},
                            topic=TOPIC, batch_rows=16, emit_outputs=True, core=chunker)
    return chunker, pipe


def _feed(chunker, pipe, records, sizes: int, partition: int) -> BatchResult:
    res = BatchResult()
    for i in range(0, len(records), sizes):
        part = records[i:i + sizes]
        res.merge(pipe.process(part))
        chunker.advance(TOPIC, partition, part[-1].offset + 1)
    res.merge(pipe.flush_partition(TOPIC, partition))
    return res


def _chunks(res: BatchResult):
    return [(st.first_offset, st.end_offset, st.rows) for st in res.stats]


@pytest.mark.parametrize("kind", sorted(WINDOWS))
def test_a_partition_moved_at_any_chunk_end_cuts_the_same_chunks(kind):
    encoder = LSTMEncoder(F, 8, seed=0)
    records = _records(1, 600, seed=7)
    chunker, pipe = _pipeline(WINDOWS[kind], encoder)
    chunker.reset(TOPIC, 1, 0)
    ref = _feed(chunker, pipe, records, 37, 1)
    ref_chunks = _chunks(ref)
    assert len(ref_chunks) >= 6 and sum(r.shape[0] for _, _, r in ref_chunks) > 100
    # the chunks tile the partition
    assert ref_chunks[0][0] == 0 and ref_chunks[-1][1] == len(records)
    assert all(a[1] == b[0] for a, b in zip(ref_chunks, ref_chunks[1:], strict=False))
    ref_keys = [o.key for o in ref.outputs]
    assert len(ref_keys) == sum(r.shape[0] for _, _, r in ref_chunks)

    n_carried = 0
    for j in (0, 2, len(ref.stats) // 2, len(ref.stats) - 2):
        st = ChunkStats.from_bytes(ref.stats[j].to_bytes())  # as the next owner gets it
        assert isinstance(st, ChunkStats), st
        resume = st.resume
        assert resume is not None and resume["offset"] >= st.end_offset
        n_carried += resume["carry"]["X"].shape[0]
        chunker2, pipe2 = _pipeline(WINDOWS[kind], encoder)
        pipe2.restore_partition(1, resume["windows"], read_to=resume["offset"])
        chunker2.restore(TOPIC, 1, st.end_offset, resume)
        moved = _feed(chunker2, pipe2, records[resume["offset"]:], 11, 1)
        got = _chunks(moved)
        want = ref_chunks[j + 1:]
        assert [(a, b) for a, b, _ in got] == [(a, b) for a, b, _ in want], f"moved after chunk {j}"
        for (_, _, r1), (_, _, r2) in zip(got, want, strict=True):
            # The same windows in the same order; their embeddings agree to float32 rounding
            # (BLAS blocks a batch of windows by its shape, which depends on the fetch sizes).
            np.testing.assert_allclose(r1, r2, rtol=0, atol=1e-6)
        # every window not yet in a chunk gets its output from the new owner, once
        done = sum(r.shape[0] for _, _, r in ref_chunks[:j + 1])
        assert [o.key for o in moved.outputs] == ref_keys[done:]
    assert n_carried > 0, "no move happened with rows carried over: the test would not see them lost"


def test_without_the_resume_the_moved_partition_loses_its_open_windows():
    """The control: a new owner starting at the chunk's end with no windows cuts different chunks."""
    encoder = LSTMEncoder(F, 8, seed=0)
    records = _records(0, 400, seed=3)
    chunker, pipe = _pipeline(WINDOWS["tumbling"], encoder)
    chunker.reset(TOPIC, 0, 0)
    ref = _chunks(_feed(chunker, pipe, records, 29, 0))
    _, end, _ = ref[1]
    chunker2, pipe2 = _pipeline(WINDOWS["tumbling"], encoder)
    chunker2.reset(TOPIC, 0, end)
    got = _chunks(_feed(chunker2, pipe2, records[end:], 29, 0))
    assert sum(r.shape[0] for _, _, r in got) != sum(r.shape[0] for _, _, r in ref[2:]) or any(
        not np.array_equal(a[2], b[2]) for a, b in zip(got, ref[2:], strict=False))


def test_partitions_have_their_own_windows():
    """Events of one key on two partitions never share a window (each partition's windows move alone)."""
    encoder = LSTMEncoder(F, 8, seed=0)
    chunker, pipe = _pipeline({"kind": "tumbling", "size": 2}, encoder)
    for p in (0, 1):
        chunker.reset(TOPIC, p, 0)
    recs = [Rec(TOPIC, p, off, None, encode_event_json("same", float(off), [1.0, 2.0, 3.0]), (), 0)
            for off in range(3) for p in (0, 1)]
    res = pipe.process(recs)
    assert res.n_windows == 2  # one full window of 2 per partition, not 3 of the 6 events
    assert pipe.windowers.keys() == {0, 1}
    assert all(w.n_open_events == 1 for w in pipe.windowers.values())


def test_a_resume_from_other_window_settings_is_refused_and_changes_nothing():
    encoder = LSTMEncoder(F, 8, seed=0)
    chunker, pipe = _pipeline(WINDOWS["tumbling"], encoder)
    chunker.reset(TOPIC, 0, 0)
    res = _feed(chunker, pipe, _records(0, 200, seed=1), 50, 0)
    resume = res.stats[0].resume
    _, other = _pipeline(WINDOWS["session"], encoder)
    with pytest.raises(ValueError):
        other.restore_partition(0, resume["windows"], read_to=resume["offset"])
    assert other.windowers == {}


def test_a_malformed_resume_makes_the_chunk_invalid():
    encoder = LSTMEncoder(F, 8, seed=0)
    chunker, pipe = _pipeline(WINDOWS["tumbling"], encoder)
    chunker.reset(TOPIC, 0, 0)
    st = _feed(chunker, pipe, _records(0, 200, seed=1), 50, 0).stats[0]
    import dataclasses

    bad = dataclasses.replace(st, resume={**st.resume, "offset": st.end_offset - 1})
    got = ChunkStats.from_bytes(bad.to_bytes())
    assert not isinstance(got, ChunkStats) and "resume offset" in str(got)

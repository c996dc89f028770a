"""Offline replay in rounds: deterministic, exact, and the daemon's own pipeline and fold."""

from __future__ import annotations

import numpy as np
import pytest

from streamkm.codec import encode_binary
from streamkm.config import Settings
from streamkm.loadgen.recording import Record, RecordingWriter
from streamkm.replay import RoundReplay, open_source
from streamkm.service.group import group_vector_pipeline, new_group_model

D, K = 4, 3


def _settings(**model) -> Settings:
    return Settings.model_validate({
        "input": {"dimension": D, "format": "binary"},
        "model": {"n_clusters": K, "seed": 0, "dying_threshold": 0.0, **model},
        "drift": {"enabled": False},
        "group": {"chunk_rows": 200, "sample_rows": 16},
    })


def _stream(n: int, seed: int = 0, n_bad: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(K, D)) * 20.0
    X = (centers[rng.integers(K, size=n)] + rng.normal(size=(n, D))).astype(np.float32)
    values = [encode_binary(x[None, :]) for x in X]
    for j in range(n_bad):
        i = int(rng.integers(len(values)))
        values[i] = b"\x00bad" if j % 2 else encode_binary(np.full((1, D), np.nan, dtype=np.float32))
    return values


def _write(path, parts: dict[int, list[bytes]], *, interleave: bool) -> None:
    """A version-2 recording; *interleave* alternates partitions record by record."""
    order: list[tuple[int, int]] = []
    if interleave:
        longest = max(len(v) for v in parts.values())
        order = [(p, i) for i in range(longest) for p in sorted(parts) if i < len(parts[p])]
    else:
        order = [(p, i) for p in sorted(parts) for i in range(len(parts[p]))]
    with RecordingWriter(path, positions=True) as w:
        for p, i in order:
            w.write(Record(f"k{p}-{i}".encode(), parts[p][i], 1_000 * i + p, ()), partition=p, offset=i)


def _replay(path, settings=None):
    lines: list[dict] = []
    r = RoundReplay(settings or _settings(), on_chunk=lines.append)
    s = r.run(open_source(str(path), topic="streamkm.vectors"))
    return r, s, lines


def _state(r):
    v = r.model.version()
    return v.centers, v.weights, v.ids, v.offsets


def test_the_model_does_not_depend_on_how_partitions_are_interleaved(tmp_path):
    parts = {0: _stream(900, 1), 1: _stream(450, 2), 2: _stream(1300, 3, n_bad=5)}
    _write(tmp_path / "a.skmrec", parts, interleave=False)
    _write(tmp_path / "b.skmrec", parts, interleave=True)
    ra, sa, la = _replay(tmp_path / "a.skmrec")
    rb, sb, lb = _replay(tmp_path / "b.skmrec")
    for x, y in zip(_state(ra), _state(rb), strict=True):
        if isinstance(x, dict):
            assert x == y
        else:
            np.testing.assert_array_equal(x, y)
    assert la == lb  # the chunk log too, line for line
    assert ra.model.version().version == sa.chunks == sb.chunks
    # Round r folds the next chunk of each partition in partition order.
    first_round = [ln["partition"] for ln in la[:3]]
    assert first_round == [0, 1, 2]


def test_every_valid_row_is_counted_once_and_bad_records_never_reach_the_model(tmp_path):
    parts = {0: _stream(1000, 4, n_bad=6), 1: _stream(777, 5, n_bad=3)}
    _write(tmp_path / "r.skmrec", parts, interleave=True)
    r, s, lines = _replay(tmp_path / "r.skmrec", _settings(decay=1.0))
    assert s.records == 1777
    assert s.valid_rows == 1777 - 9
    assert sum(s.dead_letters.values()) == 9 and set(s.dead_letters) <= {"non_finite", "bad_magic", "truncated",
                                                                         "bad_header", "decode_error"}
    v = r.model.version()
    assert float(v.weights.sum()) == pytest.approx(s.valid_rows, abs=1e-6)  # no decay: weight = rows
    assert np.isfinite(v.centers).all()
    assert sum(ln["rows"] for ln in lines) == s.valid_rows
    assert s.outcomes == {"accepted": s.chunks}
    # The chunks tile each partition: no offset skipped, none twice.
    for p, n in ((0, 1000), (1, 777)):
        spans = [(ln["first_offset"], ln["end_offset"]) for ln in lines if ln["partition"] == p]
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert v.offsets == {"streamkm.vectors:0": 1000, "streamkm.vectors:1": 777}


def test_one_partition_replays_as_a_member_that_folds_each_chunk_before_the_next(tmp_path):
    """With one partition a round is one chunk: replay equals the daemon's own chunker and fold
    used chunk by chunk (each chunk summarised against the version its predecessor made)."""
    values = _stream(1500, 6, n_bad=4)
    _write(tmp_path / "one.skmrec", {0: values}, interleave=False)
    r, s, _ = _replay(tmp_path / "one.skmrec")

    settings = _settings()
    chunker, pipe = group_vector_pipeline(settings, member="m", topic="streamkm.vectors", emit_outputs=False)
    chunker.reset("streamkm.vectors", 0, 0)
    model = new_group_model(settings, "vectors")

    class Rec:
        def __init__(self, off, value):
            self.topic, self.partition, self.offset, self.key, self.value = "streamkm.vectors", 0, off, None, value
            self.headers, self.timestamp = (), 0

    n = 0
    for off, val in enumerate(values):  # record by record, as small fetches would bring them
        res = pipe.process([Rec(off, val)])
        chunker.advance("streamkm.vectors", 0, off + 1)
        for st in res.stats:
            model.fold(st, n)
            n += 1
            chunker.version = model.version()
    res = pipe.flush()
    for st in res.stats:
        model.fold(st, n)
        n += 1
    mine, theirs = r.model.version(), model.version()
    np.testing.assert_array_equal(mine.centers, theirs.centers)
    np.testing.assert_array_equal(mine.weights, theirs.weights)
    np.testing.assert_array_equal(mine.ids, theirs.ids)
    assert mine.version == theirs.version == s.chunks


def test_rounds_take_one_chunk_of_each_partition_and_an_ended_partition_leaves_them(tmp_path):
    parts = {0: _stream(650, 7), 1: _stream(250, 8)}  # chunks of 200: p0 200,200,200,50; p1 200,50
    _write(tmp_path / "r.skmrec", parts, interleave=False)
    _, s, lines = _replay(tmp_path / "r.skmrec")
    assert [(ln["partition"], ln["rows"]) for ln in lines] == [(0, 200), (1, 200), (0, 200), (1, 50), (0, 200),
                                                               (0, 50)]
    assert [ln["version"] for ln in lines] == list(range(1, 7)) and s.chunks == 6


def test_a_truncated_recording_is_an_error_naming_the_file(tmp_path):
    _write(tmp_path / "t.skmrec", {0: _stream(300, 9)}, interleave=False)
    data = (tmp_path / "t.skmrec").read_bytes()
    (tmp_path / "t.skmrec").write_bytes(data[:-7])
    with pytest.raises(ValueError, match="t.skmrec: truncated"):
        _replay(tmp_path / "t.skmrec")


def test_record_times_are_the_chunk_maxima(tmp_path):
    _write(tmp_path / "r.skmrec", {0: _stream(450, 10)}, interleave=False)
    _, s, lines = _replay(tmp_path / "r.skmrec")
    # Record i of partition 0 has timestamp 1000 * i; chunk [a, b) ends at record b - 1.
    assert [ln["record_time_ms"] for ln in lines] == [1000 * (ln["end_offset"] - 1) for ln in lines]
    assert s.record_time_ms == [0, 1000 * 449]

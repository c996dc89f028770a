"""Tests for streamkm.codec: decoding never raises on data, errors are values, roundtrips."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from streamkm.codec import (
    HEADER_SIZE,
    MAGIC,
    REASONS,
    DecodeError,
    decode_events,
    decode_vectors,
    encode_binary,
    encode_binary_records,
    encode_event_json,
    encode_json,
    encode_json_batch,
)

RNG = np.random.default_rng(0)


def _reasons(batch):
    return {i: e.reason for i, e in batch.errors}


# ------------------------------------------------------------------ layout
def test_binary_layout_is_documented_bytes():
    X = np.array([[1.0, -2.5, 3.0]], dtype=np.float32)
    b = encode_binary(X)
    assert b[:4] == MAGIC == b"SKMV"
    assert b[4] == 1 and b[5] == 1 and b[6:8] == b"\x00\x00"
    assert struct.unpack("<II", b[8:16]) == (1, 3)
    assert len(b) == HEADER_SIZE + 3 * 4
    assert np.array_equal(np.frombuffer(b[16:], "<f4"), X.ravel())


# ------------------------------------------------------------------ valid decoding
@pytest.mark.parametrize("fmt", ["binary", "auto"])
def test_binary_fast_path_roundtrip(fmt):
    X = RNG.normal(size=(300, 5)).astype(np.float32)
    for rows in (1, 7, 300):
        recs = encode_binary_records(X, rows)
        b = decode_vectors(recs, fmt=fmt, dim=5)
        assert b.errors == []
        assert b.X.dtype == np.float32 and b.X.flags.c_contiguous and b.X.flags.writeable
        assert np.array_equal(b.X, X)
        assert np.array_equal(b.record_index, np.arange(300) // rows)


def test_json_forms_and_mixed_auto():
    X = RNG.normal(size=(4, 3)).astype(np.float32)
    values = [
        encode_json(X[0], key="k", ts=1.0),
        encode_json_batch(X[1:3]),
        encode_binary(X[3]),
    ]
    b = decode_vectors(values, fmt="auto", dim=3)
    assert b.errors == []
    assert np.array_equal(b.X, X)
    assert b.record_index.tolist() == [0, 1, 1, 2]
    assert b.n_valid_records == 3
    # integers are numbers too
    b = decode_vectors([b'{"x": [1, 2, 3]}'], fmt="json")
    assert b.X.tolist() == [[1.0, 2.0, 3.0]]


def test_dim_inferred_from_first_valid_record():
    values = [b"junk", encode_binary(np.ones((1, 4))), encode_binary(np.ones((2, 3)))]
    b = decode_vectors(values, fmt="auto")
    assert b.X.shape == (1, 4)
    assert _reasons(b) == {0: "not_json", 2: "dimension"}
    assert "expected 4 features, got 3" in dict(b.errors)[2].message


# ------------------------------------------------------------------ bad records
def _bad_cases():
    good = encode_binary(np.ones((2, 3), dtype=np.float32))
    nan = encode_binary(np.array([[1, np.nan, 3]], dtype=np.float32))
    return [
        (None, "empty"),
        (b"", "empty"),
        (b"x" * 2000, "oversized"),
        (b"{not json", "not_json"),
        (b"\xff\xfe\xfa", "not_json"),
        (b"[1, 2, 3]", "schema"),
        (b'{"y": [1, 2, 3]}', "schema"),
        (b'{"x": [[1, 2], [3]]}', "schema"),
        (b'{"x": [[1, 2, 3]]}', "schema"),
        (b'{"x": "abc"}', "schema"),
        (b'{"x": []}', "empty"),
        (b'{"x": ["1", "2", "3"]}', "dtype"),
        (b'{"x": [true, false, true]}', "dtype"),
        (b'{"x": [1, NaN, 3]}', "non_finite"),
        (b'{"x": [1, 1e39, 3]}', "non_finite"),  # overflows float32
        (b'{"x": [1, 2]}', "dimension"),
        (b'{"X": [[1, 2, 3], [4, 5]]}', "schema"),
        (nan, "non_finite"),
        (good[:10], "truncated"),
        (good[:-4], "truncated"),
        (good + b"\x00" * 4, "bad_header"),
        (b"SKMX" + good[4:], "not_json"),  # not the magic -> treated as JSON in auto
        (good[:4] + b"\x02" + good[5:], "unsupported_version"),
        (good[:5] + b"\x02" + good[6:], "dtype"),
        (good[:6] + b"\x01\x00" + good[8:], "bad_header"),
        (good[:8] + struct.pack("<I", 0) + good[12:16], "empty"),
        (good[:12] + struct.pack("<I", 0), "bad_header"),
        (encode_binary(np.ones((1, 2))), "dimension"),
    ]


@pytest.mark.parametrize("value, reason", _bad_cases())
def test_bad_record_reason_and_neighbours_unaffected(value, reason):
    ok1 = encode_binary(np.full((1, 3), 1.0))
    ok2 = encode_json(np.full(3, 2.0))
    b = decode_vectors([ok1, value, ok2], fmt="auto", dim=3, max_record_bytes=1000)
    assert _reasons(b) == {1: reason}, b.errors
    err = b.errors[0][1]
    assert isinstance(err, DecodeError) and err.reason in REASONS and err.message and err.exc_type
    assert b.record_index.tolist() == [0, 2]
    assert b.X.tolist() == [[1.0] * 3, [2.0] * 3]


def test_binary_mode_rejects_json_as_bad_magic():
    b = decode_vectors([b'{"x": [1, 2, 3]}'], fmt="binary", dim=3)
    assert _reasons(b) == {0: "bad_magic"}
    b = decode_vectors([b"SK"], fmt="binary")
    assert _reasons(b) == {0: "truncated"}


def test_fast_path_non_finite_record_isolated():
    X = RNG.normal(size=(50, 4)).astype(np.float32)
    X[17, 2] = np.inf
    X[30, 0] = np.nan
    recs = encode_binary_records(X, 2)  # uniform -> vectorized path
    b = decode_vectors(recs, fmt="binary", dim=4)
    assert _reasons(b) == {8: "non_finite", 15: "non_finite"}
    keep = np.ones(50, bool)
    keep[16:18] = keep[30:32] = False
    assert np.array_equal(b.X, X[keep])
    assert np.array_equal(b.record_index, (np.arange(50) // 2)[keep])
    assert "row 1, column 2" in dict(b.errors)[8].message


def test_fast_path_dimension_mismatch_all_records():
    recs = encode_binary_records(np.ones((10, 4)), 1)
    b = decode_vectors(recs, fmt="binary", dim=5)
    assert b.X.shape == (0, 5) and len(b.errors) == 10
    assert {e.reason for _, e in b.errors} == {"dimension"}


def test_events_decode_and_errors():
    values = [
        encode_event_json("a", 1.0, [1.0, 2.0]),
        b'[{"key": "b", "ts": 2, "x": [3, 4]}, {"key": "c", "ts": 3, "x": [5, 6]}]',
        b'{"key": "d", "ts": "x", "x": [1, 2]}',
        b'{"key": "d", "ts": 1, "x": [1, 2, 3]}',
        b'{"key": "e", "ts": NaN, "x": [1, 2]}',
        b'[{"key": "f", "ts": 1, "x": [1, 2]}, {"key": "g", "ts": 1}]',
        None,
        encode_binary(np.ones((1, 2))),
        b"nope",
    ]
    b = decode_events(values, dim=None)
    assert b.keys == ["a", "b", "c"]
    assert b.ts.dtype == np.float64 and b.ts.tolist() == [1.0, 2.0, 3.0]
    assert b.X.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert b.record_index.tolist() == [0, 1, 1]
    assert _reasons(b) == {2: "dtype", 3: "dimension", 4: "non_finite", 5: "schema", 6: "empty",
                           7: "schema", 8: "not_json"}


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="fmt"):
        decode_vectors([], fmt="xml")
    with pytest.raises(ValueError, match="dim"):
        decode_vectors([], dim=0)
    with pytest.raises(ValueError, match="max_record_bytes"):
        decode_vectors([], max_record_bytes=0)
    with pytest.raises(ValueError, match="fmt"):
        decode_events([], fmt="binary")
    with pytest.raises(ValueError, match="non-empty"):
        encode_binary(np.empty((0, 3)))
    with pytest.raises(TypeError, match="numeric"):
        encode_json(["a"])
    with pytest.raises(ValueError):
        DecodeError("made_up", "X", "y")


def test_empty_batch():
    b = decode_vectors([], dim=3)
    assert b.X.shape == (0, 3) and b.record_index.shape == (0,) and b.errors == []
    e = decode_events([], dim=2)
    assert e.X.shape == (0, 2) and e.keys == []


# ------------------------------------------------------------------ properties
@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=80),
                          st.binary(max_size=60).map(lambda b: MAGIC + b)), max_size=8),
       st.sampled_from(["json", "binary", "auto"]), st.one_of(st.none(), st.integers(1, 5)))
def test_random_bytes_never_raise(values, fmt, dim):
    b = decode_vectors(values, fmt=fmt, dim=dim, max_record_bytes=64)
    bad = {i for i, _ in b.errors}
    good = set(b.record_index.tolist())
    assert bad.isdisjoint(good) and bad | good == set(range(len(values)))
    assert all(e.reason in REASONS for _, e in b.errors)
    assert b.X.shape[0] == b.record_index.shape[0] and np.isfinite(b.X).all()
    e = decode_events(values, dim=dim, max_record_bytes=64)
    assert {i for i, _ in e.errors}.isdisjoint(set(e.record_index.tolist()))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6).flatmap(lambda d: st.lists(
    hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.just(d)),
               elements=st.floats(width=32, allow_nan=False, allow_infinity=False)), min_size=1, max_size=6)),
       st.sampled_from(["binary", "json_batch", "json_single"]))
def test_encode_decode_roundtrip(chunks, form):
    if form == "json_single":  # one record per row: the batched JSON path
        rows = np.concatenate(chunks)
        values = [encode_json(r, key=str(i), ts=float(i)) for i, r in enumerate(rows)]
        sizes = [1] * len(rows)
    else:
        values = [encode_json_batch(c) if form == "json_batch" else encode_binary(c) for c in chunks]
        sizes = [len(c) for c in chunks]
    for fmt in ("auto", "binary" if form == "binary" else "json"):
        b = decode_vectors(values, fmt=fmt)
        assert b.errors == []
        assert np.array_equal(b.X, np.concatenate(chunks))
        assert np.array_equal(b.record_index, np.repeat(np.arange(len(values)), sizes))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([b'{"x": [1, 2, 3]}', b'{"x": [1.5, 2, 3], "key": "k", "ts": 3}',
                                 b'{"x": [1, 2]}', b'{"x": [1, "a", 3]}', b'{"x": [1, 2, 1e39]}',
                                 b'{"x": [1, 2, 3], "extra": 1}', b'{"X": [[1, 2, 3]]}', b"oops", b"",
                                 b'{"x": [[1, 2, 3]]}']), max_size=12),
       st.one_of(st.none(), st.just(3)))
def test_batched_json_path_matches_per_record_path(values, dim):
    from streamkm.codec.formats import _decode_vectors_generic

    fast = decode_vectors(values, fmt="json", dim=dim)
    slow = _decode_vectors_generic(values, "json", dim, 8 * 2**20)
    assert np.array_equal(fast.X, slow.X) and np.array_equal(fast.record_index, slow.record_index)
    assert fast.errors == slow.errors


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 30), st.integers(1, 3), st.data())
def test_single_bad_record_does_not_affect_others(n, rows, data):
    d = 3
    X = np.arange(n * rows * d, dtype=np.float32).reshape(n * rows, d)
    recs = encode_binary_records(X, rows)
    j = data.draw(st.integers(0, n - 1))
    bad_value, reason = data.draw(st.sampled_from(_bad_cases()[:6] + [(b'{"x": [1, 2]}', "dimension")]))
    recs[j] = bad_value
    b = decode_vectors(recs, fmt="auto", dim=d, max_record_bytes=1000)
    assert _reasons(b) == {j: reason}
    keep = np.repeat(np.arange(n) != j, rows)
    assert np.array_equal(b.X, X[keep])
    assert np.array_equal(b.record_index, np.repeat(np.arange(n), rows)[keep])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=5), st.floats(-1e9, 1e9),
                          st.lists(st.floats(-1e6, 1e6, width=32), min_size=2, max_size=2)),
                min_size=1, max_size=10))
def test_event_roundtrip(events):
    values = [encode_event_json(k, t, x) for k, t, x in events]
    b = decode_events(values, dim=2)
    assert b.errors == []
    assert b.keys == [k for k, _, _ in events]
    assert b.ts.tolist() == [t for _, t, _ in events]
    assert np.array_equal(b.X, np.array([x for _, _, x in events], dtype=np.float32))


def test_json_float32_exact():
    x = RNG.normal(size=16).astype(np.float32)
    assert np.array_equal(decode_vectors([encode_json(x)]).X[0], x)
    assert json.loads(encode_json(x, key="k", ts=2))["key"] == "k"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([b'{"key": "a", "ts": 1, "x": [1, 2]}', b'{"key": "b", "ts": 2.5, "x": [1.5, 2]}',
                                 b'{"key": 7, "ts": 1, "x": [1, 2]}', b'{"key": "c", "ts": true, "x": [1, 2]}',
                                 b'{"key": "c", "ts": 1e400, "x": [1, 2]}', b'{"key": "d", "ts": 1, "x": [1]}',
                                 b'{"key": "e", "ts": 1, "x": [1, "2"]}', b'[{"key": "f", "ts": 1, "x": [3, 4]}]',
                                 b'{"key": "g", "ts": 1, "x": [1, 2], "more": 0}', b"nope", b"",
                                 b'{"key": "h", "ts": 1, "x": [1, 1e39]}']), max_size=12),
       st.one_of(st.none(), st.just(2)))
def test_batched_event_path_matches_per_record_path(values, dim):
    from streamkm.codec.formats import _decode_events_generic

    fast = decode_events(values, dim=dim)
    slow = _decode_events_generic(values, dim, 8 * 2**20)
    assert fast.keys == slow.keys and fast.errors == slow.errors
    assert np.array_equal(fast.ts, slow.ts) and np.array_equal(fast.X, slow.X)
    assert np.array_equal(fast.record_index, slow.record_index)
    assert fast.X.dtype == np.float32 and fast.ts.dtype == np.float64


@settings(max_examples=200, deadline=None)
@given(st.data(), st.sampled_from(["binary", "auto"]), st.booleans())
def test_bulk_binary_path_matches_per_record_path(data, fmt, fix_dim):
    """Same-length binary batches with odd headers/NaNs decode exactly like the per-record path."""
    from streamkm.codec.formats import _decode_vectors_generic

    rows, d = data.draw(st.sampled_from([(1, 4), (2, 2), (4, 1), (3, 2)]))
    n = data.draw(st.integers(1, 12))
    X = np.arange(n * rows * d, dtype=np.float32).reshape(n * rows, d)
    recs = [bytearray(r) for r in encode_binary_records(X, rows)]
    L = len(recs[0])
    for i in range(n):
        kind = data.draw(st.sampled_from(["ok", "ok", "ok", "byte", "nan", "refactor", "json"]))
        if kind == "byte":
            recs[i][data.draw(st.integers(0, HEADER_SIZE - 1))] = data.draw(st.integers(0, 255))
        elif kind == "nan":
            recs[i][HEADER_SIZE:HEADER_SIZE + 4] = np.float32(np.nan).tobytes()
        elif kind == "refactor":  # valid record, same byte length, other rows x dim
            recs[i] = bytearray(encode_binary(np.ones((rows * d, 1), np.float32)))
        elif kind == "json":
            txt = b'{"x": [1, 2, 3, 4]}'
            if len(txt) <= L:
                recs[i] = bytearray(txt.ljust(L))
    values = [bytes(r) for r in recs]
    assert all(len(v) == L for v in values)
    dim = d if fix_dim else None
    fast = decode_vectors(values, fmt=fmt, dim=dim)
    slow = _decode_vectors_generic(values, fmt, dim, 8 * 2**20)
    assert fast.errors == slow.errors
    assert np.array_equal(fast.record_index, slow.record_index)
    assert np.array_equal(fast.X, slow.X) and fast.X.shape == slow.X.shape
    assert fast.X.flags.c_contiguous and fast.X.flags.writeable


def test_event_with_integer_ts_too_large_for_float_is_a_value_error():
    # json.loads gives a Python int that float() cannot convert (OverflowError):
    # it must become a DecodeError, not crash the consume loop.
    big = b"1" + b"0" * 400
    good = encode_event_json("u", 1.0, [0.0, 1.0])
    bad = b'{"key": "u", "ts": ' + big + b', "x": [0.0, 1.0]}'
    b = decode_events([good, bad, b"[" + bad + b"]"], fmt="json", dim=2)
    assert b.keys == ["u"] and b.record_index.tolist() == [0]
    assert [(i, e.reason) for i, e in b.errors] == [(1, "non_finite"), (2, "non_finite")]
    assert "ts" in b.errors[0][1].message

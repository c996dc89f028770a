"""Tests for streamkm.codec.json_vectors: JSON forms, exact float32 text, batched path == per-record path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkm.codec import VectorBatch, decode_vectors, encode_binary, encode_json, encode_json_batch
from streamkm.codec.json_vectors import _fast_json, _loads_json
from streamkm.codec.vectors import _decode_json_exact, _decode_vectors_generic

RNG = np.random.default_rng(0)


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


def test_json_float32_exact():
    x = RNG.normal(size=16).astype(np.float32)
    assert np.array_equal(decode_vectors([encode_json(x)]).X[0], x)
    assert json.loads(encode_json(x, key="k", ts=2))["key"] == "k"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([b'{"x": [1, 2, 3]}', b'{"x": [1.5, 2, 3], "key": "k", "ts": 3}',
                                 b'{"x": [1, 2]}', b'{"x": [1, "a", 3]}', b'{"x": [1, 2, 1e39]}',
                                 b'{"x": [1, 2, 3], "extra": 1}', b'{"X": [[1, 2, 3]]}', b"oops", b"",
                                 b'{"x": [[1, 2, 3]]}']), max_size=12),
       st.one_of(st.none(), st.just(3)))
def test_batched_json_path_matches_per_record_path(values, dim):
    fast = decode_vectors(values, fmt="json", dim=dim)
    slow = _decode_vectors_generic(values, "json", dim, 8 * 2**20)
    assert np.array_equal(fast.X, slow.X) and np.array_equal(fast.record_index, slow.record_index)
    assert fast.errors == slow.errors


# Booleans are dtype errors on every path (issue 9). Before, np.array turned true into
# 1.0: every example below was accepted by the path named, except an all-boolean
# vector on the per-record path, which was already a dtype error.
GOOD3 = b'{"x": [1.0, 2.0, 3.0]}'
BOOLEAN_RECORDS = [
    b'{"x": [true, 2.0, 3.0]}',
    b'{"x": [1, false, 3]}',
    b'{"x": [1.5, 2.5, true], "key": "k", "ts": 1}',
    b'{"x": [true, false, true]}',
    b'{"X": [[1, 2, 3], [true, 5, 6]]}',
    b'{"X": [[1, 2, 3], [true, false, true]]}',
]


@pytest.mark.parametrize("bad", BOOLEAN_RECORDS)
@pytest.mark.parametrize("path", ["batched", "per_record", "auto"])
def test_booleans_are_dtype_errors_on_every_path(bad, path):
    if path == "batched":  # a batch the batched path handles, but for the boolean
        values = [GOOD3, bad, GOOD3]
        assert not isinstance(_loads_json(values, 3, 2**20, False), VectorBatch)
        b = decode_vectors(values, fmt="json", dim=3)
    elif path == "per_record":
        b = _decode_vectors_generic([GOOD3, bad, GOOD3], "json", None, 2**20)
    else:
        b = decode_vectors([encode_binary(np.ones((1, 3))), bad, GOOD3], fmt="auto")
    assert [(i, e.reason, e.exc_type) for i, e in b.errors] == [(1, "dtype", "TypeError")]
    assert "true" in b.errors[0][1].message.lower() or "false" in b.errors[0][1].message.lower()
    assert b.record_index.tolist() == [0, 2] and b.X.shape == (2, 3)


# ---------------------------------------------------------------- the number scanner (issue 12)
# decode_vectors reads strict {"x": [...]} records with streamkm.codec._json_numbers and hands
# every other record to the json.loads path: the result must be the per-record path's, bit for bit.
def _same(a: VectorBatch, b: VectorBatch) -> None:
    assert a.X.dtype == b.X.dtype == np.float32 and a.X.shape == b.X.shape and a.X.flags.c_contiguous
    assert a.X.tobytes() == b.X.tobytes()  # signed zeros included
    assert a.record_index.dtype == np.int64 and np.array_equal(a.record_index, b.record_index)
    assert a.errors == b.errors


_numbers = st.one_of(
    st.floats(width=32, allow_nan=False, allow_infinity=False).map(lambda v: f"{v:.9g}"),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(-1e6, 1e6).map(lambda v: f"{v:.4e}"),
    st.integers(-10**6, 10**6).map(str),
    st.sampled_from(["-0", "-0.0", "0e0", "-0E-0", "1e39", "-1e39", "1e-46", "1e400", "NaN", "Infinity", "true",
                     "false", "null", '"1"', "[1]", "01", "1.", ".5", "+1", "1e", "1_0", "123456789012345678901",
                     "3.4028235e38", "3.4028236e38", "1.00000005960464477539"]))
_ws = st.sampled_from(["", "", " ", "\n  ", "\t"])
_keys = st.sampled_from(['"k"', '"sensor-7"', '"a\\"b"', '"\\u00e9"', '"\\ud800"', '"é"', '"a[b]"', '"a\\u0000"',
                         '"a\x01"', "1", "null", "true", "-0.5e3", '"tab\\t"'])


@st.composite
def vector_records(draw, d):
    n = draw(st.sampled_from([d, d, d, d, d - 1, d + 1, 0]))
    ws = draw(_ws)
    sep = draw(st.sampled_from([",", ", ", " , ", ",\n  "]))
    arr = "[" + ws + sep.join(draw(st.lists(_numbers, min_size=n, max_size=n))) + ws + "]"
    members = [f'"x"{draw(_ws)}:{draw(_ws)}{arr}']
    for name in draw(st.lists(st.sampled_from(['"key"', '"ts"', '"y"', '"X"', '"k\\u0065y"', '"x"']), max_size=2)):
        members.insert(draw(st.integers(0, len(members))), f"{name}:{draw(_ws)}{draw(_keys)}")
    text = draw(_ws) + "{" + draw(_ws) + f",{draw(_ws)}".join(members) + draw(_ws) + "}" + draw(_ws)
    raw = text.encode("utf-8", "surrogatepass")
    kind = draw(st.sampled_from(["as is"] * 8 + ["truncated", "garbage", "binary"]))
    if kind == "truncated":
        return raw[:draw(st.integers(0, max(len(raw) - 1, 0)))]
    if kind == "garbage":
        return raw + draw(st.sampled_from([b"x", b",", b"}", b"\x0b", b"\xff"]))
    if kind == "binary":
        return encode_binary(np.ones((1, d), np.float32))
    return raw


@settings(max_examples=250, deadline=None)
@given(st.integers(1, 4).flatmap(lambda d: st.tuples(
    st.just(d), st.lists(st.one_of(vector_records(d), st.lists(st.floats(width=32, allow_nan=False,
                                                                             allow_infinity=False),
                                                                   min_size=d, max_size=d).map(encode_json)),
                         min_size=1, max_size=10))),
       st.sampled_from(["json", "auto"]), st.booleans())
def test_number_scanner_path_matches_per_record_path(case, fmt, fix_dim):
    d, values = case
    dim = d if fix_dim else None
    ref = _decode_vectors_generic(values, fmt, dim, 8 * 2**20)
    _same(decode_vectors(values, fmt=fmt, dim=dim), ref)
    _same(_fast_json(values, fmt, dim, 8 * 2**20, _decode_json_exact), ref)


FRAME_TRAPS = [b'{"x":[1,2],"x":[3,4]}', b'{"key":"a[b","x":[1,2]}', b'{"key":"a]","x":[1,2]}',
               b'{"x":[1,2],"key":"a]"}', b'{"k\\u0065y":"a","x":[1,2]}', b'{"key":"\\u00e9","x":[1,2]}',
               '{"key":"é","x":[1,2]}'.encode(), b'{"key":"\xff","x":[1,2]}', b'{"ts":NaN,"x":[1,2]}',
               b'{"ts":1e999,"x":[1,2]}', b'{"ts":01,"x":[1,2]}', b'{"key":"a\x01","x":[1,2]}',
               b'\x0b{"x":[1,2]}', b'{"x":[1,2]}\x0c', b'{"x":[1,2]} x', b'{"x":[1,2],}', b'{,"x":[1,2]}',
               b'{"x":[1,2]', b'{"x" :[ 1 , 2 ] } ', b'{"X":[[1,2]]}', b'{"x":[1,2],"X":[[1,2]]}',
               b'{"x":[1,2],"y":3}', b'{"x":[[1,2]]}', b'{"x":[]}', b'{"x":[1,2]}{"x":[1,2]}', b'["x",1,2]',
               b'{"x":[1,true]}', b'{"x":[1,"2"]}', b'{"x":[1,2],"key":"' + b"k" * 10 + b'","ts":-0}',
               b'{"ts":' + b"1" * 5000 + b',"x":[1,2]}', b'{"x":[1,2],"key":"\\ud800"}', b'{"x":[1,2,3]}',
               b'\xef\xbb\xbf{"x":[1,2]}', '{"x":[1,2]}'.encode("utf-16")]


@pytest.mark.parametrize("trap", FRAME_TRAPS)
@pytest.mark.parametrize("dim", [None, 2])
def test_frame_traps_match_per_record_path(trap, dim):
    good = [encode_json([0.5, -1.25]), b'{"x": [3, 4], "key": "k"}']
    for values in ([trap], [good[0], trap, good[1]], [trap, *good], [*good, trap]):
        _same(decode_vectors(values, fmt="auto", dim=dim), _decode_vectors_generic(values, "auto", dim, 2**20))


def test_exact_path_sees_only_the_records_the_scanner_cannot_read():
    seen: list[list[bytes | None]] = []

    def exact(values, fmt, dim, max_record_bytes):
        seen.append(list(values))
        return _decode_json_exact(values, fmt, dim, max_record_bytes)

    good = [encode_json(RNG.normal(size=3)) for _ in range(6)]
    values = [*good[:2], b'{"x": [1, 2, 3], "y": 0}', *good[2:4], b"oops", *good[4:]]
    b = _fast_json(values, "json", None, 2**20, exact)
    _same(b, _decode_vectors_generic(values, "json", None, 2**20))
    assert seen == [[values[2], values[5]]]  # one call, the two odd records only
    seen.clear()
    assert _fast_json(good, "json", 3, 2**20, exact).X.shape == (6, 3) and seen == []


def test_records_with_megabyte_frames_are_read_without_batch_sized_index_arrays_or_a_pinning_cache():
    """Found in review: the frame comparison built n x len(frame) index arrays (100 records with
    a 500 KB key peaked at 891 MB), and the frame cache kept up to 1,024 such prefixes alive."""
    import tracemalloc

    from streamkm.codec.json_vectors import _frame_ok_cached

    key = "k" * 100_000
    values = [json.dumps({"key": key, "x": [float(i), 2.0]}).encode() for i in range(50)]
    size = sum(map(len, values))
    cached = _frame_ok_cached.cache_info().currsize
    tracemalloc.start()
    try:
        b = decode_vectors(values, fmt="json", dim=2, max_record_bytes=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert b.X.tolist() == [[float(i), 2.0] for i in range(50)] and not b.errors
    assert peak < 4 * size, f"peak {peak:,} bytes for {size:,} bytes of records"
    assert _frame_ok_cached.cache_info().currsize == cached


def test_a_batch_may_be_any_sequence():
    """Found in review: a deque (a Sequence without slices) raised TypeError; 2f97cbc decoded it."""
    from collections import deque

    values = [b'{"x":[1,2]}', b'{"x":[3,4]}', None, b'{"x":[5,6]}']
    a, b = decode_vectors(values, fmt="json"), decode_vectors(deque(values), fmt="json")
    assert a.X.tolist() == b.X.tolist() == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    assert a.record_index.tolist() == b.record_index.tolist() and [i for i, _ in b.errors] == [2]

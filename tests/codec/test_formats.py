"""Tests for streamkm.codec as a whole: decoding never raises on data, errors are values, roundtrips."""

from __future__ import annotations

import codecs
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from streamkm.codec import (
    MAGIC,
    REASONS,
    DecodeError,
    decode_events,
    decode_vectors,
    encode_binary,
    encode_binary_records,
    encode_json,
    encode_json_batch,
)
from streamkm.codec.events import _decode_events_generic
from streamkm.codec.vectors import _decode_vectors_generic


def _reasons(batch):
    return {i: e.reason for i, e in batch.errors}


def test_dim_inferred_from_first_valid_record():
    values = [b"junk", encode_binary(np.ones((1, 4))), encode_binary(np.ones((2, 3)))]
    b = decode_vectors(values, fmt="auto")
    assert b.X.shape == (1, 4)
    assert _reasons(b) == {0: "not_json", 2: "dimension"}
    assert "expected 4 features, got 3" in dict(b.errors)[2].message


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


# JSON is UTF-8 only (RFC 8259 section 8.1; issue 9). Before, json.loads(bytes) guessed
# the encoding: every value below decoded to a valid vector or event.
_VECTOR_TEXT = '{"x": [1.0, 2.0, 3.0]}'
_EVENT_TEXT = '{"key": "b", "ts": 2, "x": [1.0, 2.0, 3.0]}'
FOREIGN_ENCODINGS = {
    "utf-8 with BOM": lambda s: s.encode("utf-8-sig"),
    "utf-16 with BOM (LE)": lambda s: s.encode("utf-16"),
    "utf-16-be with BOM": lambda s: codecs.BOM_UTF16_BE + s.encode("utf-16-be"),
    "utf-16-le": lambda s: s.encode("utf-16-le"),
    "utf-16-be": lambda s: s.encode("utf-16-be"),
    "utf-32 with BOM (LE)": lambda s: s.encode("utf-32"),
    "utf-32-be with BOM": lambda s: codecs.BOM_UTF32_BE + s.encode("utf-32-be"),
    "utf-32-le": lambda s: s.encode("utf-32-le"),
    "utf-32-be": lambda s: s.encode("utf-32-be"),
}


@pytest.mark.parametrize("encoding", FOREIGN_ENCODINGS)
@pytest.mark.parametrize("decoder", ["vectors_json", "vectors_auto", "vectors_per_record", "events",
                                     "events_per_record"])
def test_json_that_is_not_utf8_is_an_encoding_error(encoding, decoder):
    good_v, good_e = encode_json(np.ones(3)), _EVENT_TEXT.encode()
    if decoder.startswith("vectors"):
        values = [good_v, FOREIGN_ENCODINGS[encoding](_VECTOR_TEXT), good_v]
        b = (_decode_vectors_generic(values, "json", 3, 2**20) if decoder == "vectors_per_record"
             else decode_vectors(values, fmt=decoder.split("_")[1], dim=3))
    else:
        values = [good_e, FOREIGN_ENCODINGS[encoding](_EVENT_TEXT), good_e]
        b = (_decode_events_generic(values, 3, 2**20) if decoder == "events_per_record"
             else decode_events(values, dim=3))
    assert [(i, e.reason, e.exc_type) for i, e in b.errors] == [(1, "encoding", "UnicodeError")]
    assert "UTF-8" in b.errors[0][1].message
    assert b.record_index.tolist() == [0, 2]


@pytest.mark.parametrize("value, reason", [
    (b"\xff\xfe\xfa", "not_json"),  # a UTF-16 BOM, but not UTF-16 text (odd length): invalid UTF-8
    (b"\xfe\xff\xd8\x00", "not_json"),  # UTF-16-BE BOM and a lone surrogate
    (b'{"x": [1, 2, 3], "key": "\xc3("}', "not_json"),  # invalid UTF-8 in a string
    (b'{"x": [1, 2, 3], "key": "\xed\xa0\x80"}', "not_json"),  # an encoded surrogate is not UTF-8 (was accepted)
    (b"\x00", "not_json"),
    (b"1\x00\x00", "not_json"),  # three bytes: no UTF-16 or UTF-32 text
    (b"1\x00", "encoding"),  # "1" in UTF-16-LE
    (b'{"x": [1, 2, 3], "key": "\\ud800"}', None),  # an escaped lone surrogate is valid UTF-8 JSON
])
def test_invalid_utf8_in_no_other_encoding_stays_not_json(value, reason):
    b = decode_vectors([value], fmt="auto", dim=3)
    assert [e.reason for _, e in b.errors] == ([reason] if reason else [])
    e = decode_events([value], dim=3)
    assert reason is None or [x.reason for _, x in e.errors] == [reason]

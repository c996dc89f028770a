"""Tests for streamkm.codec.events: event decoding, errors as values, batched path == per-record path."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkm.codec import EventBatch, decode_events, encode_binary, encode_event_json
from streamkm.codec.events import _decode_events_generic, _fast_events


def _reasons(batch):
    return {i: e.reason for i, e in batch.errors}


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


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([b'{"key": "a", "ts": 1, "x": [1, 2]}', b'{"key": "b", "ts": 2.5, "x": [1.5, 2]}',
                                 b'{"key": 7, "ts": 1, "x": [1, 2]}', b'{"key": "c", "ts": true, "x": [1, 2]}',
                                 b'{"key": "c", "ts": 1e400, "x": [1, 2]}', b'{"key": "d", "ts": 1, "x": [1]}',
                                 b'{"key": "e", "ts": 1, "x": [1, "2"]}', b'[{"key": "f", "ts": 1, "x": [3, 4]}]',
                                 b'{"key": "g", "ts": 1, "x": [1, 2], "more": 0}', b"nope", b"",
                                 b'{"key": "h", "ts": 1, "x": [1, 1e39]}']), max_size=12),
       st.one_of(st.none(), st.just(2)))
def test_batched_event_path_matches_per_record_path(values, dim):
    fast = decode_events(values, dim=dim)
    slow = _decode_events_generic(values, dim, 8 * 2**20)
    assert fast.keys == slow.keys and fast.errors == slow.errors
    assert np.array_equal(fast.ts, slow.ts) and np.array_equal(fast.X, slow.X)
    assert np.array_equal(fast.record_index, slow.record_index)
    assert fast.X.dtype == np.float32 and fast.ts.dtype == np.float64


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


# Booleans in 'x' are dtype errors on both event paths (issue 9); before, they became
# 1.0/0.0 on both, except an all-boolean 'x' on the per-record path.
GOOD_EVENT = b'{"key": "a", "ts": 1, "x": [1.0, 2.0]}'
BOOLEAN_EVENTS = [
    b'{"key": "b", "ts": 2, "x": [true, 2.0]}',
    b'{"key": "b", "ts": 2, "x": [0, false]}',
    b'{"key": "b", "ts": 2, "x": [false, true]}',
    b'[{"key": "b", "ts": 2, "x": [1, 2]}, {"key": "c", "ts": 3, "x": [1, true]}]',
]


@pytest.mark.parametrize("bad", BOOLEAN_EVENTS)
@pytest.mark.parametrize("path", ["batched", "per_record"])
def test_boolean_features_are_dtype_errors_on_every_path(bad, path):
    values = [GOOD_EVENT, bad, GOOD_EVENT]
    if path == "batched":
        assert not isinstance(_fast_events(values, 2, 2**20), EventBatch)
        b = decode_events(values, dim=2)
    else:
        b = _decode_events_generic(values, None, 2**20)
    assert [(i, e.reason, e.exc_type) for i, e in b.errors] == [(1, "dtype", "TypeError")]
    assert b.record_index.tolist() == [0, 2] and b.keys == ["a", "a"]


@pytest.mark.parametrize("batch", [1, 3])
def test_a_key_that_is_a_lone_surrogate_escape_is_a_schema_error(batch):
    # '\ud800' is valid JSON but no UTF-8 string: the sequence pipeline would crash encoding
    # the window key for its output record (UnicodeEncodeError), a poison pill.
    bad = b'{"key": "\\ud800", "ts": 1.0, "x": [1.0, 2.0]}'
    good = encode_event_json("k\u00fc", 2.0, [1.0, 2.0])
    b = decode_events([good] * (batch - 1) + [bad], dim=2)
    assert [(i, e.reason) for i, e in b.errors] == [(batch - 1, "schema")]
    assert b.keys == ["k\u00fc"] * (batch - 1)

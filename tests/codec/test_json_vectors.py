"""Tests for streamkm.codec.json_vectors: JSON forms, exact float32 text, batched path == per-record path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkm.codec import VectorBatch, decode_vectors, encode_binary, encode_json, encode_json_batch
from streamkm.codec.json_vectors import _loads_json
from streamkm.codec.vectors import _decode_vectors_generic

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

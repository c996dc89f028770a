"""Tests for streamkm.codec.binary: the SKMV layout, the vectorized path and its per-record fallback."""

from __future__ import annotations

import struct
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkm.codec import HEADER_SIZE, MAGIC, binary, decode_vectors, encode_binary, encode_binary_records
from streamkm.codec.vectors import _decode_vectors_generic

RNG = np.random.default_rng(0)


def _reasons(batch):
    return {i: e.reason for i, e in batch.errors}


def test_binary_layout_is_documented_bytes():
    X = np.array([[1.0, -2.5, 3.0]], dtype=np.float32)
    b = encode_binary(X)
    assert b[:4] == MAGIC == b"SKMV"
    assert b[4] == 1 and b[5] == 1 and b[6:8] == b"\x00\x00"
    assert struct.unpack("<II", b[8:16]) == (1, 3)
    assert len(b) == HEADER_SIZE + 3 * 4
    assert np.array_equal(np.frombuffer(b[16:], "<f4"), X.ravel())


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


@settings(max_examples=200, deadline=None)
@given(st.data(), st.sampled_from(["binary", "auto"]), st.booleans(), st.booleans())
def test_bulk_binary_path_matches_per_record_path(data, fmt, fix_dim, copy_each):
    """Same-length binary batches with odd headers/NaNs decode exactly like the per-record path,
    on both bulk variants (joined, or each record copied into X: large records)."""
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
    with mock.patch.object(binary, "_COPY_EACH_BYTES", 0 if copy_each else binary._COPY_EACH_BYTES):
        fast = decode_vectors(values, fmt=fmt, dim=dim)
    slow = _decode_vectors_generic(values, fmt, dim, 8 * 2**20)
    assert fast.errors == slow.errors
    if fast.max_abs is not None:  # only ever the true bound
        assert fast.max_abs == float(np.abs(fast.X).max())
    assert np.array_equal(fast.record_index, slow.record_index)
    assert np.array_equal(fast.X, slow.X) and fast.X.shape == slow.X.shape
    assert fast.X.flags.c_contiguous and fast.X.flags.writeable


@pytest.mark.parametrize("rows", [1, 64])
def test_bulk_paths_bound_magnitudes_and_isolate_bad_records(rows):
    """Both bulk variants (many small records joined; few large ones copied one by one) give
    the per-record path's rows and errors, and ``max_abs`` only for a clean uniform batch."""
    X = RNG.normal(size=(20 * rows, 8)).astype(np.float32) * 100
    recs = encode_binary_records(X, rows)
    assert (len(recs[0]) >= binary._COPY_EACH_BYTES) == (rows == 64)
    b = decode_vectors(recs, fmt="binary", dim=8)
    assert b.errors == [] and np.array_equal(b.X, X)
    assert b.max_abs == float(np.abs(X).max())
    bad = list(recs)
    bad[3] = bad[3][:HEADER_SIZE] + np.float32(np.inf).tobytes() + bad[3][HEADER_SIZE + 4:]
    bad[7] = bad[7][:4] + b"\x09" + bad[7][5:]  # unsupported version, same length
    b = decode_vectors(bad, fmt="binary", dim=8)
    ref = _decode_vectors_generic(bad, "binary", 8, 8 * 2**20)
    assert _reasons(b) == {3: "non_finite", 7: "unsupported_version"} == _reasons(ref)
    assert np.array_equal(b.X, ref.X) and np.array_equal(b.record_index, ref.record_index)
    assert b.max_abs is None

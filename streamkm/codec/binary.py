"""The SKMV binary vector format: per-record decode, the vectorized batch path, encoders.

A record is a 16-byte little-endian header ``<4sBBHII`` (magic ``b"SKMV"``,
version, dtype, flags, rows, dim) followed by ``rows*dim`` float32, row-major.
The full layout and validation rules are in ``docs/formats.md``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streamkm.codec._validation import _check_matrix, _non_finite_error
from streamkm.codec.batches import VectorBatch
from streamkm.codec.errors import DecodeError, _Bad

__all__ = ["MAGIC", "VERSION", "HEADER_SIZE", "encode_binary", "encode_binary_records"]

MAGIC = b"SKMV"
VERSION = 1
DTYPE_FLOAT32 = 1
HEADER_SIZE = 16
_HEADER = struct.Struct("<4sBBHII")

#: Per-record decoder of the records the vectorized path leaves out:
#: ``(values, fmt, dim, max_record_bytes) -> VectorBatch``.
_PerRecord = Callable[[Sequence[bytes], str, int, int], VectorBatch]
_Decoded = tuple[NDArray[np.float32], NDArray[np.int64], list[tuple[int, DecodeError]], float | None]

#: Records at least this long are copied into the matrix one by one (few, large records);
#: shorter ones are joined and copied in one strided pass (many small records).
_COPY_EACH_BYTES = 2048


# ---------------------------------------------------------------------- decoding
def _binary_record(v: bytes, dim: int | None) -> NDArray[Any]:
    """Decode one binary record to a (rows, dim) float32 array or raise _Bad."""
    n = len(v)
    if n < 4 or v[:4] != MAGIC:
        if n < 4 and MAGIC.startswith(bytes(v)):
            raise _Bad("truncated", f"record of {n} bytes is shorter than the {HEADER_SIZE}-byte header")
        raise _Bad("bad_magic", f"expected magic {MAGIC!r}, got {bytes(v[:4])!r}")
    if n < HEADER_SIZE:
        raise _Bad("truncated", f"record of {n} bytes is shorter than the {HEADER_SIZE}-byte header")
    _, version, dtype, flags, rows, d = _HEADER.unpack_from(v, 0)
    if version != VERSION:
        raise _Bad("unsupported_version", f"binary format version {version} is not supported (expected {VERSION})")
    if dtype != DTYPE_FLOAT32:
        raise _Bad("dtype", f"binary dtype code {dtype} is not supported (expected {DTYPE_FLOAT32} = float32)")
    if flags != 0:
        raise _Bad("bad_header", f"reserved flags must be 0, got {flags}")
    if rows == 0:
        raise _Bad("empty", "binary record has 0 rows")
    if d == 0:
        raise _Bad("bad_header", "binary record has dim 0")
    expected = HEADER_SIZE + 4 * rows * d
    if n < expected:
        raise _Bad("truncated", f"header says {rows}x{d} float32 ({expected} bytes), record has {n} bytes")
    if n > expected:
        raise _Bad("bad_header", f"header says {rows}x{d} float32 ({expected} bytes), record has {n} bytes")
    if dim is not None and d != dim:
        raise _Bad("dimension", f"expected {dim} features, got {d}")
    return np.frombuffer(v, dtype="<f4", offset=HEADER_SIZE).reshape(rows, d)


def _fast_binary(values: Sequence[bytes], L: int, dim: int | None, fmt: str, max_record_bytes: int,
                 per_record: _PerRecord) -> _Decoded | None:
    """Vectorized path: all values are bytes of length L and the first is a valid binary record.

    Records whose 16-byte header equals the first record's are decoded in
    bulk (one float32 copy, one header comparison, one min/max pass for the
    finiteness check); any others go through ``per_record`` (the generic
    decoder of :mod:`streamkm.codec.vectors`, which also handles JSON in
    ``fmt="auto"``) with the dimension the first record fixed, and the rows
    are merged back in record order. Returns (X, record_index, errors,
    max_abs), or None if the first record is not a valid binary record;
    ``max_abs`` is the largest magnitude in X when every record was uniform
    (else None).
    """
    n = len(values)
    if L < HEADER_SIZE or L % 4:
        return None
    try:
        proto = _binary_record(values[0], dim)
    except _Bad:
        return None
    if dim is None and not np.isfinite(proto).all():
        return None  # record 0 is invalid, so it does not fix the dimension: per-record path
    rows, d = proto.shape
    if L >= _COPY_EACH_BYTES:
        # Few large records: compare each header in Python and copy each payload once,
        # straight into X (joining them first would copy every byte twice).
        head = values[0][:HEADER_SIZE]
        same_list = [v[:HEADER_SIZE] == head for v in values]
        keep = [i for i, ok in enumerate(same_list) if ok]
        idx = np.asarray(keep, dtype=np.int64)
        X = np.empty((idx.size * rows, d), dtype=np.float32)
        flat = X.reshape(idx.size, rows * d)
        for j, i in enumerate(keep):
            flat[j] = np.frombuffer(values[i], dtype="<f4", offset=HEADER_SIZE)
        same = np.asarray(same_list, dtype=bool)
        uniform = idx.size == n
    else:
        buf = b"".join(values)
        # the header as four uint32 columns: four 1-D comparisons instead of an (n, 16) one
        head4 = np.ndarray((n, HEADER_SIZE // 4), dtype="<u4", buffer=buf, strides=(L, 4))
        same = head4[:, 0] == head4[0, 0]
        for j in range(1, HEADER_SIZE // 4):
            same &= head4[:, j] == head4[0, j]
        f32 = np.frombuffer(buf, dtype="<f4").reshape(n, L // 4)[:, HEADER_SIZE // 4:]
        uniform = bool(same.all())
        if uniform:
            idx = np.arange(n, dtype=np.int64)
            # one copy into a native, writable, C-contiguous array (reshaping the strided
            # view first would copy twice when records hold several rows)
            X = np.empty((n * rows, d), dtype=np.float32)
            X.reshape(n, rows * d)[...] = f32
        else:
            idx = np.flatnonzero(same).astype(np.int64)
            X = f32[same].reshape(idx.size * rows, d).astype(np.float32, copy=False)
    record_index = np.repeat(idx, rows) if rows > 1 else idx
    errors: list[tuple[int, DecodeError]] = []
    max_abs: float | None = None
    if X.size:
        # min and max propagate NaN and show ±inf: both finite means every value is
        # (one pass each, no boolean temporary), and they bound the magnitudes for free
        lo, hi = float(X.min()), float(X.max())
        if math.isfinite(lo) and math.isfinite(hi):
            max_abs = max(-lo, hi)
        else:
            finite = np.isfinite(X)
            bad_rec = ~finite.reshape(idx.size, rows * d).all(axis=1)
            for j in np.flatnonzero(bad_rec).tolist():
                errors.append((int(idx[j]), _non_finite_error(X[j * rows:(j + 1) * rows])))
            keep_rows = np.repeat(~bad_rec, rows)
            X = X[keep_rows]
            record_index = record_index[keep_rows]
    if not uniform:
        max_abs = None
        odd = np.flatnonzero(~same)
        sub = per_record([values[i] for i in odd.tolist()], fmt, d, max_record_bytes)
        errors += [(int(odd[i]), e) for i, e in sub.errors]
        errors.sort(key=lambda t: t[0])
        if sub.X.shape[0]:
            X = np.concatenate([X, sub.X])
            record_index = np.concatenate([record_index, odd[sub.record_index].astype(np.int64)])
            order = np.argsort(record_index, kind="stable")
            X = X[order]
            record_index = record_index[order]
    return X, record_index, errors, max_abs


# ---------------------------------------------------------------------- encoding
def _header(rows: int, d: int) -> bytes:
    return _HEADER.pack(MAGIC, VERSION, DTYPE_FLOAT32, 0, rows, d)


def encode_binary(X: Any) -> bytes:
    """Encode vectors as one binary record.

    Parameters
    ----------
    X : array-like of shape (n, d) or (d,)
        Cast to little-endian float32.

    Returns
    -------
    bytes
        ``16 + 4*n*d`` bytes (layout in ``docs/formats.md``).

    Examples
    --------
    >>> rec = encode_binary([[1.0, 2.0, 3.0]])
    >>> len(rec), rec[:4]
    (28, b'SKMV')
    """
    a = _check_matrix(X)
    return _header(*a.shape) + np.ascontiguousarray(a, dtype="<f4").tobytes()


def encode_binary_records(X: Any, rows_per_record: int = 1) -> list[bytes]:
    """Split X into binary records of ``rows_per_record`` rows (the last may be shorter).

    Parameters
    ----------
    X : array-like of shape (n, d)
    rows_per_record : int

    Returns
    -------
    list of bytes
    """
    a = _check_matrix(X)
    if isinstance(rows_per_record, bool) or not isinstance(rows_per_record, (int, np.integer)) \
            or rows_per_record < 1:
        raise ValueError(f"rows_per_record must be a positive int, got {rows_per_record!r}")
    n, d = a.shape
    r = int(rows_per_record)
    full = n // r
    out: list[bytes] = []
    if full:
        payload = np.ascontiguousarray(a[: full * r], dtype="<f4").reshape(full, r * d).view(np.uint8)
        head = np.frombuffer(_header(r, d), dtype=np.uint8)
        buf = np.empty((full, HEADER_SIZE + payload.shape[1]), dtype=np.uint8)
        buf[:, :HEADER_SIZE] = head
        buf[:, HEADER_SIZE:] = payload
        L = buf.shape[1]
        raw = buf.tobytes()
        out = [raw[i * L:(i + 1) * L] for i in range(full)]
    if full * r < n:
        out.append(encode_binary(a[full * r:]))
    return out

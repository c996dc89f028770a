"""Record formats: decode Kafka record values into vectors / events, and encode them.

Decoding never raises on bad data: every record either contributes rows to
the batch or yields a :class:`DecodeError` value (reason from the bounded set
:data:`REASONS`) so the worker can dead-letter it and keep going. The byte
layouts are specified in ``docs/formats.md``.

Binary record (all little-endian)::

    offset size field
    0      4    magic   b"SKMV"
    4      1    version uint8 = 1
    5      1    dtype   uint8 = 1 (float32)
    6      2    flags   uint16 = 0 (reserved)
    8      4    rows    uint32 >= 1
    12     4    dim     uint32 >= 1
    16     4*rows*dim   payload, float32 row-major

JSON vector record: ``{"x": [floats], "key": ..., "ts": ...}`` (``key``/``ts``
optional and ignored by the vectors pipeline) or batch ``{"X": [[...], ...]}``.
JSON event record: ``{"key": str, "ts": number, "x": [floats]}`` or a JSON
array of such objects.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = [
    "REASONS",
    "MAGIC",
    "VERSION",
    "HEADER_SIZE",
    "DecodeError",
    "VectorBatch",
    "EventBatch",
    "decode_vectors",
    "decode_events",
    "encode_binary",
    "encode_binary_records",
    "encode_json",
    "encode_json_batch",
    "encode_event_json",
]

#: Every value DecodeError.reason can take (bounded: used as a metric label).
REASONS: tuple[str, ...] = (
    "empty",
    "oversized",
    "not_json",
    "schema",
    "dtype",
    "dimension",
    "non_finite",
    "truncated",
    "bad_header",
    "bad_magic",
    "unsupported_version",
)

MAGIC = b"SKMV"
VERSION = 1
DTYPE_FLOAT32 = 1
HEADER_SIZE = 16
_HEADER = struct.Struct("<4sBBHII")
_MAX_ROWS_DIM = 2**32 - 1


@dataclass(frozen=True, slots=True)
class DecodeError:
    """Why one record could not be decoded (a value, not an exception).

    Parameters
    ----------
    reason : str
        One of :data:`REASONS` (bounded; safe as a metric label).
    exc_type : str
        Class name of the underlying error (e.g. ``"JSONDecodeError"``,
        ``"ValueError"``), for the dead-letter ``exception.class`` header.
    message : str
        Human-readable detail naming the offending values.
    """

    reason: str
    exc_type: str
    message: str

    def __post_init__(self):
        if self.reason not in REASONS:
            raise ValueError(f"unknown decode error reason {self.reason!r}; expected one of {REASONS}")


@dataclass(slots=True)
class VectorBatch:
    """Decoded vectors of a batch of records.

    Attributes
    ----------
    X : ndarray of shape (n_rows, dim), float32
        All valid rows, in record order.
    record_index : ndarray of shape (n_rows,), int64
        ``record_index[i]`` is the position (in the input ``values``) of the
        record row ``i`` came from; a record may contribute several rows.
    errors : list of (int, DecodeError)
        Bad records by position, ascending. A bad record contributes no rows.
    """

    X: np.ndarray
    record_index: np.ndarray
    errors: list[tuple[int, DecodeError]] = field(default_factory=list)

    @property
    def n_valid_records(self) -> int:
        """Number of distinct records that contributed rows."""
        if self.record_index.size == 0:
            return 0
        ri = self.record_index
        return int(1 + np.count_nonzero(ri[1:] != ri[:-1]))


@dataclass(slots=True)
class EventBatch:
    """Decoded events of a batch of records.

    Attributes
    ----------
    keys : list of str, length n
    ts : ndarray of shape (n,), float64
    X : ndarray of shape (n, dim), float32
    record_index : ndarray of shape (n,), int64
    errors : list of (int, DecodeError)
    """

    keys: list[str]
    ts: np.ndarray
    X: np.ndarray
    record_index: np.ndarray
    errors: list[tuple[int, DecodeError]] = field(default_factory=list)


class _Bad(Exception):
    """Internal: carries a DecodeError out of per-record helpers."""

    def __init__(self, reason: str, message: str, exc_type: str = "ValueError"):
        super().__init__(message)
        self.err = DecodeError(reason, exc_type, message)


def _check_common(fmt: str, dim: int | None, max_record_bytes: int, allowed: tuple[str, ...]) -> None:
    if fmt not in allowed:
        raise ValueError(f"fmt must be one of {allowed}, got {fmt!r}")
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1):
        raise ValueError(f"dim must be a positive int or None, got {dim!r}")
    if isinstance(max_record_bytes, bool) or not isinstance(max_record_bytes, (int, np.integer)) \
            or max_record_bytes < 1:
        raise ValueError(f"max_record_bytes must be a positive int, got {max_record_bytes!r}")


# ----------------------------------------------------------------------- binary
def _binary_record(v: bytes, dim: int | None) -> np.ndarray:
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


def _fast_binary(values: Sequence[bytes], L: int, dim: int | None, fmt: str, max_record_bytes: int):
    """Vectorized path: all values are bytes of length L and the first is a valid binary record.

    Records whose 16-byte header equals the first record's are decoded in
    bulk (one join, one header comparison, one float32 view, one finiteness
    check); any others go through the per-record path with the dimension the
    first record fixed, and the rows are merged back in record order.
    Returns (X, record_index, errors), or None if the first record is not a
    valid binary record.
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
    buf = b"".join(values)
    u8 = np.frombuffer(buf, dtype=np.uint8).reshape(n, L)
    same = (u8[:, :HEADER_SIZE] == u8[0, :HEADER_SIZE]).all(axis=1)
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
    finite = np.isfinite(X)
    if not finite.all():
        bad_rec = ~finite.reshape(idx.size, rows * d).all(axis=1)
        for j in np.flatnonzero(bad_rec).tolist():
            errors.append((int(idx[j]), _non_finite_error(X[j * rows:(j + 1) * rows])))
        keep = np.repeat(~bad_rec, rows)
        X = X[keep]
        record_index = record_index[keep]
    if not uniform:
        odd = np.flatnonzero(~same)
        sub = _decode_vectors_generic([values[i] for i in odd.tolist()], fmt, d, max_record_bytes)
        errors += [(int(odd[i]), e) for i, e in sub.errors]
        errors.sort(key=lambda t: t[0])
        if sub.X.shape[0]:
            X = np.concatenate([X, sub.X])
            record_index = np.concatenate([record_index, odd[sub.record_index].astype(np.int64)])
            order = np.argsort(record_index, kind="stable")
            X = X[order]
            record_index = record_index[order]
    return X, record_index, errors


def _non_finite_error(a: np.ndarray) -> DecodeError:
    flat = np.asarray(a).ravel()
    pos = int(np.flatnonzero(~np.isfinite(flat))[0])
    row, col = divmod(pos, a.shape[-1] if a.ndim > 1 else max(flat.size, 1))
    return DecodeError("non_finite", "ValueError",
                       f"non-finite value {float(flat[pos])!r} at row {row}, column {col}")


# ------------------------------------------------------------------------- json
def _as_float_array(obj: Any, ndim: int, what: str) -> np.ndarray:
    """Strictly convert a JSON list (of lists) of numbers into float32, or raise _Bad."""
    if not isinstance(obj, list):
        raise _Bad("schema", f"{what} must be a JSON array, got {type(obj).__name__}")
    if len(obj) == 0:
        raise _Bad("empty", f"{what} is empty")
    try:
        a = np.array(obj)
    except (ValueError, TypeError) as e:  # ragged
        raise _Bad("schema", f"{what} is not a rectangular array of numbers: {e}", type(e).__name__) from None
    if a.ndim != ndim:
        raise _Bad("schema", f"{what} must be {ndim}-D, got {a.ndim}-D with shape {a.shape}")
    if a.size == 0:
        raise _Bad("empty", f"{what} has shape {a.shape}")
    if a.dtype.kind not in "iuf":
        raise _Bad("dtype", f"{what} must contain only numbers, got element dtype {a.dtype.kind!r} "
                            f"({_first_non_number(obj)!r})", "TypeError")
    with np.errstate(over="ignore", invalid="ignore"):
        out = a.astype(np.float32)
    if not np.isfinite(out).all():
        err = _non_finite_error(out if out.ndim == 2 else out[None, :])
        raise _Bad("non_finite", err.message.replace("value", f"value in {what}", 1)
                   + (" (out of float32 range)" if np.isfinite(a).all() else ""))
    return out


def _first_non_number(obj: Any) -> Any:
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, list):
            stack.extend(reversed(o))
        elif isinstance(o, bool) or not isinstance(o, (int, float)):
            return o
    return None


def _load_json(v: bytes) -> Any:
    try:
        return json.loads(v)
    except UnicodeDecodeError as e:
        raise _Bad("not_json", f"not UTF-8: {e}", "UnicodeDecodeError") from None
    except ValueError as e:
        raise _Bad("not_json", f"not JSON: {e}", type(e).__name__) from None
    except RecursionError as e:
        raise _Bad("not_json", "JSON nested too deeply", type(e).__name__) from None


def _json_vectors(obj: Any) -> np.ndarray:
    if isinstance(obj, dict):
        has_x, has_X = "x" in obj, "X" in obj
        if has_x and has_X:
            raise _Bad("schema", "record has both 'x' and 'X'")
        if has_x:
            return _as_float_array(obj["x"], 1, "'x'")[None, :]
        if has_X:
            return _as_float_array(obj["X"], 2, "'X'")
        raise _Bad("schema", f"expected an object with 'x' or 'X', got keys {sorted(map(str, obj))[:8]}")
    raise _Bad("schema", f"expected a JSON object, got {type(obj).__name__}")


# --------------------------------------------------------------------- decoding
def _precheck(v: Any, max_record_bytes: int) -> bytes:
    if v is None:
        raise _Bad("empty", "record value is null (tombstone)")
    if not isinstance(v, (bytes, bytearray, memoryview)):
        raise _Bad("dtype", f"record value must be bytes, got {type(v).__name__}", "TypeError")
    n = len(v)
    if n == 0:
        raise _Bad("empty", "record value is empty")
    if n > max_record_bytes:
        raise _Bad("oversized", f"record of {n} bytes exceeds max_record_bytes={max_record_bytes}")
    return bytes(v) if not isinstance(v, bytes) else v


def decode_vectors(
    values: Sequence[bytes | None],
    *,
    fmt: str = "auto",
    dim: int | None = None,
    max_record_bytes: int = 8 * 2**20,
) -> VectorBatch:
    """Decode record values into one float32 matrix.

    Parameters
    ----------
    values : sequence of bytes or None
        Kafka record values, in consumption order (None = tombstone).
    fmt : {"json", "binary", "auto"}
        ``"auto"`` treats a value starting with the binary magic as binary,
        anything else as JSON.
    dim : int, optional
        Required vector dimension; if None, the first valid record fixes it
        for this batch and records with another dimension are errors.
    max_record_bytes : int
        Larger values are rejected as ``"oversized"``.

    Returns
    -------
    VectorBatch
        ``X`` (n_rows, dim) float32, ``record_index`` (n_rows,) int64 and
        ``errors`` [(position, DecodeError)]. Bad data never raises.

    Raises
    ------
    ValueError
        Only for invalid *arguments* (unknown fmt, dim < 1, ...).

    Examples
    --------
    >>> import numpy as np
    >>> good = encode_binary(np.ones((2, 3), dtype=np.float32))
    >>> b = decode_vectors([good, b"{not json", None, b'{"x": [1, 2, 3]}'], dim=3)
    >>> b.X.shape, b.record_index.tolist(), [(i, e.reason) for i, e in b.errors]
    ((3, 3), [0, 0, 3], [(1, 'not_json'), (2, 'empty')])
    """
    _check_common(fmt, dim, max_record_bytes, ("json", "binary", "auto"))
    n = len(values)
    if n and fmt != "json":
        first = values[0]
        if isinstance(first, bytes):
            L = len(first)
            if L <= max_record_bytes and first[:4] == MAGIC:
                # set(map(...)) iterates in C: no Python-level work per record
                try:
                    uniform = len(set(map(len, values))) == 1  # TypeError on None
                except TypeError:
                    uniform = False
                if uniform and set(map(type, values)) == {bytes}:
                    res = _fast_binary(values, L, dim, fmt, max_record_bytes)
                    if res is not None:
                        return VectorBatch(*res)
    parsed = None
    if n and fmt != "binary":
        res = _fast_json(values, dim, max_record_bytes, fmt == "auto")
        if isinstance(res, VectorBatch):
            return res
        parsed = res
    return _decode_vectors_generic(values, fmt, dim, max_record_bytes, parsed)


_JSON_VECTOR_KEYS = frozenset({"x", "key", "ts"})


def _fast_json(values, dim, max_record_bytes, auto):
    """Batched path for batches of one-vector JSON records ``{"x": [...]}``.

    Returns a VectorBatch if every record is such a record with a valid
    vector, else the list of parsed objects (None where not parsed) for the
    generic path to reuse.
    """
    parsed: list[Any] = [None] * len(values)
    xs = []
    ok = True
    loads = json.loads
    for i, v in enumerate(values):
        if type(v) is not bytes or not v or len(v) > max_record_bytes or (auto and v[:4] == MAGIC):
            ok = False
            continue
        try:
            obj = loads(v)
        except (ValueError, RecursionError):
            ok = False
            continue
        parsed[i] = obj
        if ok:
            if type(obj) is dict and type(obj.get("x")) is list and obj.keys() <= _JSON_VECTOR_KEYS:
                xs.append(obj["x"])
            else:
                ok = False
    if not ok:
        return parsed
    try:
        a = np.array(xs)
    except (ValueError, TypeError):
        return parsed
    if a.ndim != 2 or a.dtype.kind not in "iuf" or a.shape[1] == 0 or (dim is not None and a.shape[1] != dim):
        return parsed
    with np.errstate(over="ignore", invalid="ignore"):
        X = a.astype(np.float32)
    if not np.isfinite(X).all():
        return parsed
    return VectorBatch(X, np.arange(len(values), dtype=np.int64), [])


def _decode_vectors_generic(values, fmt, dim, max_record_bytes, parsed=None) -> VectorBatch:
    chunks: list[np.ndarray] = []
    owners: list[int] = []
    errors: list[tuple[int, DecodeError]] = []
    d = dim
    for i, v in enumerate(values):
        try:
            b = _precheck(v, max_record_bytes)
            if fmt == "binary" or (fmt == "auto" and b[:4] == MAGIC):
                a = _binary_record(b, d)
            else:
                obj = parsed[i] if parsed is not None and parsed[i] is not None else _load_json(b)
                a = _json_vectors(obj)
                if d is not None and a.shape[1] != d:
                    raise _Bad("dimension", f"expected {d} features, got {a.shape[1]}")
            if not np.isfinite(a).all():
                errors.append((i, _non_finite_error(a)))
                continue
            if d is None:
                d = a.shape[1]
        except _Bad as e:
            errors.append((i, e.err))
            continue
        chunks.append(a)
        owners.append(i)
    if chunks:
        X = np.concatenate(chunks, axis=0).astype(np.float32, copy=False)
        if not X.flags.writeable or not X.flags.c_contiguous:
            X = np.array(X, dtype=np.float32, order="C")
        counts = np.fromiter((c.shape[0] for c in chunks), dtype=np.int64, count=len(chunks))
        record_index = np.repeat(np.asarray(owners, dtype=np.int64), counts)
    else:
        X = np.empty((0, d or 0), dtype=np.float32)
        record_index = np.empty(0, dtype=np.int64)
    return VectorBatch(X, record_index, errors)


def _json_event(obj: Any, d: int | None) -> tuple[str, float, np.ndarray]:
    if not isinstance(obj, dict):
        raise _Bad("schema", f"expected a JSON object with key, ts, x; got {type(obj).__name__}")
    missing = [k for k in ("key", "ts", "x") if k not in obj]
    if missing:
        raise _Bad("schema", f"event is missing {missing}")
    key = obj["key"]
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise _Bad("schema", f"'key' must be a string, got {type(key).__name__}")
    ts = obj["ts"]
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        raise _Bad("dtype", f"'ts' must be a number, got {type(ts).__name__} {ts!r}", "TypeError")
    try:
        ts = float(ts)
    except OverflowError:  # a JSON integer beyond the float64 range
        raise _Bad("non_finite", f"'ts' is an integer too large for a float ({len(str(ts))} digits)") from None
    if ts != ts or ts in (float("inf"), float("-inf")):
        raise _Bad("non_finite", f"'ts' is {ts!r}")
    x = _as_float_array(obj["x"], 1, "'x'")
    if d is not None and x.shape[0] != d:
        raise _Bad("dimension", f"expected {d} features, got {x.shape[0]}")
    return str(key), ts, x


def decode_events(
    values: Sequence[bytes | None],
    *,
    fmt: str = "json",
    dim: int | None = None,
    max_record_bytes: int = 8 * 2**20,
) -> EventBatch:
    """Decode JSON event records ``{"key", "ts", "x"}`` (or arrays of them).

    Parameters
    ----------
    values : sequence of bytes or None
    fmt : {"json", "auto"}
        Events are JSON only (``"auto"`` is accepted and means JSON).
    dim : int, optional
        Required feature dimension; None: fixed by the first valid event.
    max_record_bytes : int

    Returns
    -------
    EventBatch
        ``keys`` (n,), ``ts`` (n,) float64, ``X`` (n, dim) float32,
        ``record_index`` (n,) int64, ``errors``. A record that is an array of
        events is all-or-nothing: one bad event rejects the record.

    Examples
    --------
    >>> b = decode_events([encode_event_json("u1", 1.5, [0.0, 1.0]), b'{"key": "u2"}'])
    >>> b.keys, b.ts.tolist(), b.X.shape, [(i, e.reason) for i, e in b.errors]
    (['u1'], [1.5], (1, 2), [(1, 'schema')])
    """
    _check_common(fmt, dim, max_record_bytes, ("json", "auto"))
    res = _fast_events(values, dim, max_record_bytes)
    if isinstance(res, EventBatch):
        return res
    return _decode_events_generic(values, dim, max_record_bytes, res)


_EVENT_KEYS = frozenset({"key", "ts", "x"})


def _fast_events(values, dim, max_record_bytes):
    """Batched path when every record is one well-formed event; else the parsed objects."""
    parsed: list[Any] = [None] * len(values)
    keys: list[str] = []
    ts_list: list[Any] = []
    xs: list[Any] = []
    ok = True
    loads = json.loads
    for i, v in enumerate(values):
        if type(v) is not bytes or not v or len(v) > max_record_bytes or v[:4] == MAGIC:
            ok = False
            continue
        try:
            obj = loads(v)
        except (ValueError, RecursionError):
            ok = False
            continue
        parsed[i] = obj
        if ok:
            if (type(obj) is dict and obj.keys() == _EVENT_KEYS and type(obj["key"]) is str
                    and type(obj["ts"]) in (int, float) and type(obj["x"]) is list):
                keys.append(obj["key"])
                ts_list.append(obj["ts"])
                xs.append(obj["x"])
            else:
                ok = False
    if not ok or not values:
        return parsed
    try:
        ts = np.array(ts_list, dtype=np.float64)
        a = np.array(xs)
    except (ValueError, TypeError, OverflowError):
        return parsed
    if a.ndim != 2 or a.dtype.kind not in "iuf" or a.shape[1] == 0 or (dim is not None and a.shape[1] != dim):
        return parsed
    with np.errstate(over="ignore", invalid="ignore"):
        X = a.astype(np.float32)
    if not (np.isfinite(X).all() and np.isfinite(ts).all()):
        return parsed
    return EventBatch(keys, ts, X, np.arange(len(values), dtype=np.int64), [])


def _decode_events_generic(values, dim, max_record_bytes, parsed=None) -> EventBatch:
    keys: list[str] = []
    ts_list: list[float] = []
    xs: list[np.ndarray] = []
    owners: list[int] = []
    errors: list[tuple[int, DecodeError]] = []
    d = dim
    for i, v in enumerate(values):
        try:
            b = _precheck(v, max_record_bytes)
            if b[:4] == MAGIC:
                raise _Bad("schema", "binary record on the events pipeline (events are JSON)")
            obj = parsed[i] if parsed is not None and parsed[i] is not None else _load_json(b)
            if isinstance(obj, list):
                if not obj:
                    raise _Bad("empty", "event array is empty")
                evs = []
                d_rec = d
                for ev in obj:
                    k, t, x = _json_event(ev, d_rec)
                    d_rec = x.shape[0]
                    evs.append((k, t, x))
                d = d_rec
            else:
                k, t, x = _json_event(obj, d)
                if d is None:
                    d = x.shape[0]
                evs = [(k, t, x)]
        except _Bad as e:
            errors.append((i, e.err))
            continue
        for k, t, x in evs:
            keys.append(k)
            ts_list.append(t)
            xs.append(x)
            owners.append(i)
    if xs:
        X = np.stack(xs).astype(np.float32, copy=False)
    else:
        X = np.empty((0, d or 0), dtype=np.float32)
    return EventBatch(
        keys,
        np.asarray(ts_list, dtype=np.float64),
        X,
        np.asarray(owners, dtype=np.int64),
        errors,
    )


# --------------------------------------------------------------------- encoding
def _check_matrix(X: Any, name: str = "X") -> np.ndarray:
    a = np.asarray(X)
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be numeric, got dtype {a.dtype}")
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D, got {a.ndim}-D with shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {a.shape}")
    if a.shape[0] > _MAX_ROWS_DIM or a.shape[1] > _MAX_ROWS_DIM:
        raise ValueError(f"{name} shape {a.shape} does not fit the uint32 header")
    return a


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
        ``16 + 4*n*d`` bytes (layout in the module docstring).
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


def _floats(x: np.ndarray) -> list:
    # float32 -> float64 repr round-trips exactly back to float32
    return np.asarray(x, dtype=np.float32).astype(np.float64).tolist()


_F9_RAW = "{:.9g}".format  # 9 significant digits round-trip every float32 exactly


def _F9(v: float) -> str:
    s = _F9_RAW(v)
    return s if ("." in s or "e" in s) else s + ".0"  # keep numbers typed as floats ("1.0")


def _json_numbers(a: np.ndarray) -> str | None:
    """Compact JSON array text of a float32 vector, or None if it has NaN/Inf."""
    v = np.asarray(a, dtype=np.float32)
    if not np.isfinite(v).all():
        return None
    return "[" + ",".join(map(_F9, v.tolist())) + "]"


def _check_vector(x: Any) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "iuf":
        raise TypeError(f"x must be numeric, got dtype {a.dtype}")
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"x must be a non-empty 1-D vector, got shape {a.shape}")
    return a


def encode_json(x: Any, *, key: str | None = None, ts: float | None = None) -> bytes:
    """Encode one vector as ``{"key": ..., "ts": ..., "x": [...]}`` (key/ts only if given)."""
    a = _check_vector(x)
    head = ""
    if key is not None:
        head += '"key":' + json.dumps(str(key)) + ","
    if ts is not None:
        head += '"ts":' + json.dumps(float(ts)) + ","
    nums = _json_numbers(a)
    if nums is None:  # NaN/Inf: standard-library spelling (NaN, Infinity)
        nums = json.dumps(_floats(a), allow_nan=True)
    return ("{" + head + '"x":' + nums + "}").encode()


def encode_json_batch(X: Any) -> bytes:
    """Encode vectors as the batch form ``{"X": [[...], ...]}``."""
    a = _check_matrix(X)
    return json.dumps({"X": _floats(a)}, separators=(",", ":"), allow_nan=True).encode()


def encode_event_json(key: str, ts: float, x: Any) -> bytes:
    """Encode one event ``{"key": key, "ts": ts, "x": [...]}``."""
    if not isinstance(key, str):
        raise TypeError(f"key must be str, got {type(key).__name__}")
    a = _check_vector(x)
    nums = _json_numbers(a)
    if nums is None:
        nums = json.dumps(_floats(a), allow_nan=True)
    return ('{"key":' + json.dumps(key) + ',"ts":' + json.dumps(float(ts)) + ',"x":' + nums + "}").encode()

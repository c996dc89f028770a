"""JSON vector records ``{"x": [...]}`` / ``{"X": [[...], ...]}``: decode helpers and encoders.

The batched path here reads records of the strict form ``{"x": [...]}`` with the
number scanner of :mod:`streamkm.codec._json_numbers` (no ``json.loads``); every
other record goes through the json.loads path of :mod:`streamkm.codec.vectors`.
The schema is described in ``docs/formats.md``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from streamkm.codec._json_numbers import read_number_arrays
from streamkm.codec._validation import _as_float_array, _check_matrix, _check_vector, _holds_bool, _to_float32
from streamkm.codec.batches import VectorBatch
from streamkm.codec.binary import MAGIC
from streamkm.codec.errors import DecodeError, _Bad

__all__ = ["encode_json", "encode_json_batch"]

_JSON_VECTOR_KEYS = frozenset({"x", "key", "ts"})
_PerRecord = Callable[[Sequence[bytes | None], str, "int | None", int], VectorBatch]


# ---------------------------------------------------------------------- decoding
def _json_vectors(obj: Any) -> NDArray[np.float32]:
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


# The strict form the scanner takes: {"x": [numbers]} with optional "key"/"ts" members in
# any order, JSON whitespace anywhere between tokens, ASCII only. A record is cut at its
# first "[" and its last "]"; the part before must match _PREFIX, the part after _SUFFIX
# and the part between is checked by read_number_arrays, so together they are exactly
# this grammar (a "[" or "]" inside a key string makes a part fail: the exact path then
# reads the record).
_WS = rb"[ \t\n\r]*"  # JSON whitespace: not \s, which also matches \v and \f
_NUMBER = rb"-?(?:0|[1-9][0-9]{0,99})(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"  # json.loads refuses ints > 4300 digits
_STRING = rb'"(?:[\x20\x21\x23-\x5b\x5d-\x7f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"'
_MEMBER = rb'"(?:key|ts)"' + _WS + rb":" + _WS + rb"(?:" + _STRING + rb"|" + _NUMBER + rb"|true|false|null)"
_PREFIX = re.compile(_WS + rb"\{" + _WS + rb"(?:" + _MEMBER + _WS + rb"," + _WS + rb")*" + rb'"x"' + _WS + rb":"
                     + _WS + rb"\[")
_SUFFIX = re.compile(rb"\]" + _WS + rb"(?:," + _WS + _MEMBER + _WS + rb")*\}" + _WS)


def _frame_ok(prefix: bytes, suffix: bytes) -> bool:
    # Only small frames are cached: the cache keeps its keys alive, and a frame can hold a key
    # of megabytes (1,024 of them would pin gigabytes; found in review).
    if len(prefix) + len(suffix) <= _CACHED_FRAME_BYTES:
        return _frame_ok_cached(prefix, suffix)
    return _PREFIX.fullmatch(prefix) is not None and _SUFFIX.fullmatch(suffix) is not None


_CACHED_FRAME_BYTES = 256
#: A frame compared byte by byte across a batch in NumPy (index arrays of n x its length):
#: larger ones are compared record by record (bytes.startswith/endswith).
_VECTOR_FRAME_BYTES = 256


@functools.lru_cache(maxsize=1024)
def _frame_ok_cached(prefix: bytes, suffix: bytes) -> bool:
    return _PREFIX.fullmatch(prefix) is not None and _SUFFIX.fullmatch(suffix) is not None


def _array_text(v: Any, max_record_bytes: int) -> bytes | None:
    """The text between the brackets of a strict-form record, or None."""
    if type(v) is not bytes or len(v) > max_record_bytes:
        return None
    i, j = v.find(b"["), v.rfind(b"]")
    if i < 0 or j <= i + 1 or not _frame_ok(v[:i + 1], v[j:]):
        return None
    return v[i + 1:j]


def _array_texts(values: Sequence[bytes | None], max_record_bytes: int) -> list[bytes | None]:
    """Per record, the text of its ``x`` array if the record has the strict form, else None."""
    template = next((v for v in values[:8] if _array_text(v, max_record_bytes) is not None), None)
    if template is None:
        return [_array_text(v, max_record_bytes) for v in values]
    # A producer writes the same frame around every vector (same key, or none):
    # compare each record with that frame in C and look closer only at the others.
    assert isinstance(template, bytes)
    head, tail = template[:template.find(b"[") + 1], template[template.rfind(b"]"):]
    lh, lt = len(head), len(tail)
    if lh + lt <= _VECTOR_FRAME_BYTES and set(map(type, values)) == {bytes}:
        same = _same_frame(cast("Sequence[bytes]", values), head, tail, max_record_bytes)
        if same.all():
            return [v[lh:-lt] for v in cast("Sequence[bytes]", values)]
        texts: list[bytes | None] = [v[lh:-lt] if ok else None
                                     for v, ok in zip(cast("Sequence[bytes]", values), same.tolist(), strict=True)]
    else:
        texts = [v[lh:-lt] if type(v) is bytes and lh + lt < len(v) <= max_record_bytes and v.startswith(head)
                 and v.endswith(tail) else None for v in values]
    for i in [i for i, t in enumerate(texts) if t is None]:
        texts[i] = _array_text(values[i], max_record_bytes)
    return texts


def _same_frame(values: Sequence[bytes], head: bytes, tail: bytes, max_record_bytes: int) -> NDArray[np.bool_]:
    """Which records are ``head + text + tail`` with a non-empty text (a few NumPy calls, no loop)."""
    lens = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    ok = (lens > len(head) + len(tail)) & (lens <= max_record_bytes)
    joined = np.frombuffer(b"".join(values), dtype=np.uint8)
    last = joined.size - 1
    starts = np.cumsum(lens) - lens
    h = np.frombuffer(head, dtype=np.uint8)
    t = np.frombuffer(tail, dtype=np.uint8)
    ok &= (joined[np.clip(starts[:, None] + np.arange(h.size), 0, last)] == h).all(axis=1)
    ok &= (joined[np.clip((starts + lens - t.size)[:, None] + np.arange(t.size), 0, last)] == t).all(axis=1)
    return ok


def _fast_json(values: Sequence[bytes | None], fmt: str, dim: int | None, max_record_bytes: int,
               exact: _PerRecord) -> VectorBatch:
    """Batched path for JSON vector records: the strict ``{"x": [...]}`` ones without json.loads.

    Records of the strict form (see ``_PREFIX``) are read by
    :func:`~streamkm.codec._json_numbers.read_number_arrays`, whose numbers
    equal those ``json.loads`` gives; every other record (other members,
    nesting, ``X``, non-ASCII, bad JSON, non-finite values, another
    dimension, binary in ``auto``, ...) goes through ``exact`` (the
    json.loads-based path of :mod:`streamkm.codec.vectors`) with the
    dimension the batch fixed, and the rows are merged back in record order.
    The result equals ``exact(values, fmt, dim, max_record_bytes)``.
    """
    if not isinstance(values, list | tuple):  # slices below (a deque is a Sequence without them)
        values = list(values)
    n = len(values)
    texts = _array_texts(values, max_record_bytes)
    strict = [i for i, t in enumerate(texts) if t is not None]
    if not strict:
        return exact(values, fmt, dim, max_record_bytes)
    vals, counts, accepted = read_number_arrays([t for t in texts if t is not None])
    read = np.asarray(strict, dtype=np.int64)[accepted]
    counts = counts[accepted]
    X = vals
    if X.size and not np.isfinite(X).all():
        ends = np.cumsum(counts)
        finite = np.logical_and.reduceat(np.isfinite(X), ends - counts)
        X = X[np.repeat(finite, counts)]
        read, counts = read[finite], counts[finite]
    if read.size == 0:
        return exact(values, fmt, dim, max_record_bytes)
    # Which records the scan's rows stand for, with the dimension the exact path would use:
    # the given one, else the width of the first valid record (the exact path decides the
    # records before the first one read here, and may find that record among them).
    head: VectorBatch | None = None
    first = 0
    d = dim
    if d is None:
        first = int(read[0])
        if first:
            head = exact(values[:first], fmt, None, max_record_bytes)
        d = head.X.shape[1] if head is not None and head.X.shape[0] else int(counts[0])
    take = counts == d
    if not take.all():
        X = X[np.repeat(take, counts)]
        read = read[take]
    X = X.reshape(read.size, d)
    if read.size == n:
        return VectorBatch(X, read, [])
    others = np.setdiff1d(np.arange(first, n, dtype=np.int64), read, assume_unique=True)
    parts: list[tuple[NDArray[Any], NDArray[np.int64], list[tuple[int, DecodeError]]]] = [(X, read, [])]
    if head is not None:
        parts.append((head.X, head.record_index, head.errors))
    if others.size:
        rest = exact([values[i] for i in others.tolist()], fmt, d, max_record_bytes)
        parts.append((rest.X, others[rest.record_index], [(int(others[i]), e) for i, e in rest.errors]))
    errors = sorted((e for p in parts for e in p[2]), key=lambda t: t[0])
    parts = [p for p in parts if p[0].shape[0]] or parts[:1]  # a part without rows may have no columns
    record_index = np.concatenate([p[1] for p in parts])
    order = np.argsort(record_index, kind="stable")
    rows = np.concatenate([p[0] for p in parts])[order]
    return VectorBatch(rows, record_index[order], errors)


def _loads_json(values: Sequence[bytes | None], dim: int | None, max_record_bytes: int,
                auto: bool) -> VectorBatch | list[Any]:
    """json.loads path for batches of one-vector JSON records ``{"x": [...]}``.

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
            obj = loads(v.decode())  # UTF-8 only; anything else is left to the per-record path
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
    X = _to_float32(a)
    if not np.isfinite(X).all() or _holds_bool(X, xs, cast("Sequence[bytes]", values)):  # all bytes by now
        return parsed
    return VectorBatch(X, np.arange(len(values), dtype=np.int64), [])


# ---------------------------------------------------------------------- encoding
def _floats(x: NDArray[Any]) -> list[Any]:
    # float32 -> float64 repr round-trips exactly back to float32
    out: list[Any] = np.asarray(x, dtype=np.float32).astype(np.float64).tolist()
    return out


_F9_RAW = "{:.9g}".format  # 9 significant digits round-trip every float32 exactly


def _F9(v: float) -> str:
    s = _F9_RAW(v)
    return s if ("." in s or "e" in s) else s + ".0"  # keep numbers typed as floats ("1.0")


def _json_numbers(a: NDArray[Any]) -> str | None:
    """Compact JSON array text of a float32 vector, or None if it has NaN/Inf."""
    v = np.asarray(a, dtype=np.float32)
    if not np.isfinite(v).all():
        return None
    return "[" + ",".join(map(_F9, v.tolist())) + "]"


def encode_json(x: Any, *, key: str | None = None, ts: float | None = None) -> bytes:
    """Encode one vector as ``{"key": ..., "ts": ..., "x": [...]}`` (key/ts only if given).

    Examples
    --------
    >>> encode_json([1, 0.5], key="k")
    b'{"key":"k","x":[1.0,0.5]}'
    """
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

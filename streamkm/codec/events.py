"""JSON event records ``{"key", "ts", "x"}`` (or arrays of them) for the sequence pipeline.

:func:`decode_events` tries one batched path and falls back to a per-record
decoder with identical results; :func:`encode_event_json` is the producer side.
The schema is described in ``docs/formats.md``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from streamkm.codec._validation import (
    _as_float_array,
    _check_common,
    _check_vector,
    _holds_bool,
    _load_json,
    _precheck,
    _to_float32,
)
from streamkm.codec.batches import EventBatch
from streamkm.codec.binary import MAGIC
from streamkm.codec.errors import DecodeError, _Bad
from streamkm.codec.json_vectors import _floats, _json_numbers

__all__ = ["decode_events", "encode_event_json"]

_EVENT_KEYS = frozenset({"key", "ts", "x"})


def _utf8_key(key: str) -> bool:
    """False for a key the pipeline could not encode back to bytes (a JSON ``\\ud800`` escape)."""
    if key.isascii():
        return True
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_event(obj: Any, d: int | None) -> tuple[str, float, NDArray[np.float32]]:
    if not isinstance(obj, dict):
        raise _Bad("schema", f"expected a JSON object with key, ts, x; got {type(obj).__name__}")
    missing = [k for k in ("key", "ts", "x") if k not in obj]
    if missing:
        raise _Bad("schema", f"event is missing {missing}")
    key = obj["key"]
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise _Bad("schema", f"'key' must be a string, got {type(key).__name__}")
    if isinstance(key, str) and not _utf8_key(key):
        raise _Bad("schema", "'key' holds a lone surrogate escape (not encodable as UTF-8)")
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


def _fast_events(values: Sequence[bytes | None], dim: int | None,
                 max_record_bytes: int) -> EventBatch | list[Any]:
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
            obj = loads(v.decode())  # UTF-8 only; anything else is left to the per-record path
        except (ValueError, RecursionError):
            ok = False
            continue
        parsed[i] = obj
        if ok:
            if (type(obj) is dict and obj.keys() == _EVENT_KEYS and type(obj["key"]) is str
                    and _utf8_key(obj["key"]) and type(obj["ts"]) in (int, float) and type(obj["x"]) is list):
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
    X = _to_float32(a)
    if not (np.isfinite(X).all() and np.isfinite(ts).all()):
        return parsed
    if _holds_bool(X, xs, cast("Sequence[bytes]", values)):  # all bytes by now
        return parsed
    return EventBatch(keys, ts, X, np.arange(len(values), dtype=np.int64), [])


def _decode_events_generic(values: Sequence[bytes | None], dim: int | None, max_record_bytes: int,
                           parsed: list[Any] | None = None) -> EventBatch:
    keys: list[str] = []
    ts_list: list[float] = []
    xs: list[NDArray[np.float32]] = []
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


def encode_event_json(key: str, ts: float, x: Any) -> bytes:
    """Encode one event ``{"key": key, "ts": ts, "x": [...]}``."""
    if not isinstance(key, str):
        raise TypeError(f"key must be str, got {type(key).__name__}")
    a = _check_vector(x)
    nums = _json_numbers(a)
    if nums is None:
        nums = json.dumps(_floats(a), allow_nan=True)
    return ('{"key":' + json.dumps(key) + ',"ts":' + json.dumps(float(ts)) + ',"x":' + nums + "}").encode()

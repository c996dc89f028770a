"""JSON vector records ``{"x": [...]}`` / ``{"X": [[...], ...]}``: decode helpers and encoders.

The batched path here handles the common all-``{"x": [...]}`` batch; anything
else falls back to the per-record decoder in :mod:`streamkm.codec.vectors`.
The schema is described in ``docs/formats.md``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from streamkm.codec._validation import _as_float_array, _check_matrix, _check_vector, _holds_bool, _to_float32
from streamkm.codec.batches import VectorBatch
from streamkm.codec.binary import MAGIC
from streamkm.codec.errors import _Bad

__all__ = ["encode_json", "encode_json_batch"]

_JSON_VECTOR_KEYS = frozenset({"x", "key", "ts"})


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


def _fast_json(values: Sequence[bytes | None], dim: int | None, max_record_bytes: int,
               auto: bool) -> VectorBatch | list[Any]:
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

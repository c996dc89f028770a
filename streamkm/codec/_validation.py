"""Checks shared by the decoders and encoders of :mod:`streamkm.codec` (package-internal).

Argument checks raise ``ValueError``/``TypeError``; per-record checks raise the
internal :class:`~streamkm.codec.errors._Bad`, which the decoders turn into a
:class:`~streamkm.codec.errors.DecodeError` value.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streamkm.codec.errors import DecodeError, _Bad

__all__: list[str] = []  # package-internal helpers only

_MAX_ROWS_DIM = 2**32 - 1  # rows and dim are uint32 in the binary header


# ------------------------------------------------------------- decoder arguments
def _check_common(fmt: str, dim: int | None, max_record_bytes: int, allowed: tuple[str, ...]) -> None:
    if fmt not in allowed:
        raise ValueError(f"fmt must be one of {allowed}, got {fmt!r}")
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1):
        raise ValueError(f"dim must be a positive int or None, got {dim!r}")
    if isinstance(max_record_bytes, bool) or not isinstance(max_record_bytes, (int, np.integer)) \
            or max_record_bytes < 1:
        raise ValueError(f"max_record_bytes must be a positive int, got {max_record_bytes!r}")


# -------------------------------------------------------------------- per record
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


def _load_json(v: bytes) -> Any:
    try:
        return json.loads(v)
    except UnicodeDecodeError as e:
        raise _Bad("not_json", f"not UTF-8: {e}", "UnicodeDecodeError") from None
    except ValueError as e:
        raise _Bad("not_json", f"not JSON: {e}", type(e).__name__) from None
    except RecursionError as e:
        raise _Bad("not_json", "JSON nested too deeply", type(e).__name__) from None


def _non_finite_error(a: NDArray[Any]) -> DecodeError:
    flat = np.asarray(a).ravel()
    pos = int(np.flatnonzero(~np.isfinite(flat))[0])
    row, col = divmod(pos, a.shape[-1] if a.ndim > 1 else max(flat.size, 1))
    return DecodeError("non_finite", "ValueError",
                       f"non-finite value {float(flat[pos])!r} at row {row}, column {col}")


def _as_float_array(obj: Any, ndim: int, what: str) -> NDArray[np.float32]:
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


# ------------------------------------------------------------- encoder arguments
def _check_matrix(X: Any, name: str = "X") -> NDArray[Any]:
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


def _check_vector(x: Any) -> NDArray[Any]:
    a = np.asarray(x)
    if a.dtype.kind not in "iuf":
        raise TypeError(f"x must be numeric, got dtype {a.dtype}")
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"x must be a non-empty 1-D vector, got shape {a.shape}")
    return a

"""Checks shared by the decoders and encoders of :mod:`streamkm.codec` (package-internal).

Argument checks raise ``ValueError``/``TypeError``; per-record checks raise the
internal :class:`~streamkm.codec.errors._Bad`, which the decoders turn into a
:class:`~streamkm.codec.errors.DecodeError` value.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Sequence
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
    """Parse one record as UTF-8 JSON (RFC 8259) or raise _Bad (``encoding`` or ``not_json``)."""
    try:
        return json.loads(v.decode("utf-8"))  # not json.loads(bytes): that guesses UTF-16/32 and skips a BOM
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        enc = _foreign_encoding(v)
        if enc is not None:
            raise _Bad("encoding", f"JSON must be UTF-8 (RFC 8259), this record is {enc}", "UnicodeError") from None
        if isinstance(e, UnicodeDecodeError):
            raise _Bad("not_json", f"not UTF-8: {e}", "UnicodeDecodeError") from None
        if isinstance(e, RecursionError):
            raise _Bad("not_json", "JSON nested too deeply", type(e).__name__) from None
        raise _Bad("not_json", f"not JSON: {e}", type(e).__name__) from None


_BOMS = ((codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16: FF FE 00 00
         (codecs.BOM_UTF16_BE, "utf-16"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF8, "utf-8-sig"))
_BOM_NAMES = {"utf-8-sig": "UTF-8 with a byte-order mark", "utf-16": "UTF-16 with a byte-order mark",
              "utf-32": "UTF-32 with a byte-order mark"}


def _foreign_encoding(v: bytes) -> str | None:
    """Name of the non-UTF-8 Unicode encoding ``v`` is text in, or None.

    Detected as ``json.detect_encoding`` (and RFC 4627 section 3) do: a
    byte-order mark, else the pattern of NUL bytes among the first four (JSON
    text starts with an ASCII character). The value must also decode in that
    encoding, so bytes valid in no encoding (``b"\\xff\\xfe\\xfa"``) stay
    ``not_json``. Only called once UTF-8 parsing has failed: a BOM or a NUL byte
    never parses as UTF-8 JSON, so a record this names was never accepted.
    """
    enc = next((e for bom, e in _BOMS if v.startswith(bom)), None)
    if enc is None:
        n = len(v)
        if n >= 4 and not v[0]:
            enc = "utf-16-be" if v[1] else "utf-32-be"
        elif n >= 4 and not v[1]:
            enc = "utf-16-le" if v[2] or v[3] else "utf-32-le"
        elif n == 2 and not (v[0] and v[1]):
            enc = "utf-16-be" if not v[0] else "utf-16-le"
        else:
            return None
    try:
        v.decode(enc)
    except UnicodeDecodeError:
        return None
    return _BOM_NAMES.get(enc, enc.upper())


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
        bad = _first_non_number(obj)
        raise _Bad("dtype", f"{what} must contain only numbers, got element dtype {a.dtype.kind!r} "
                            + (f"({bad!r})" if bad is not _ALL_NUMBERS else "(an integer outside the 64-bit range)"),
                   "TypeError")
    out = _to_float32(a)
    if _holds_bool(out if ndim == 2 else out[None, :], obj if ndim == 2 else [obj]):
        raise _Bad("dtype", f"{what} must contain only numbers, got the boolean {json.dumps(_first_non_number(obj))}",
                   "TypeError")
    if not np.isfinite(out).all():
        err = _non_finite_error(out if out.ndim == 2 else out[None, :])
        raise _Bad("non_finite", err.message.replace("value", f"value in {what}", 1)
                   + (" (out of float32 range)" if np.isfinite(a).all() else ""))
    return out


def _to_float32(a: NDArray[Any]) -> NDArray[np.float32]:
    """The float32 rows of a numeric array converted from JSON, rounded the same way on every path.

    Integers go through float64 first, as floats do when ``json.loads`` reads
    them: an int64 array cast straight to float32 can round differently (once,
    not twice), so a batch whose integers end up in one float64 array would
    disagree with the same record decoded alone. Out-of-range values become
    ±inf, which the callers reject as ``non_finite``.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return a.astype(np.float64, copy=False).astype(np.float32)


def _holds_bool(X: NDArray[Any], rows: Sequence[Any], texts: Sequence[bytes] | None = None) -> bool:
    """Whether a numeric 2-D array converted from the JSON lists ``rows`` came from booleans too.

    ``np.array`` turns ``true``/``false`` into exactly 1/0 and gives no other sign
    of them, so only the rows of ``X`` holding a 0 or a 1 are looked at (the
    others cost one vectorized comparison): element by element, unless
    ``texts[r]``, the UTF-8 text row ``r`` was parsed from, holds neither a
    ``u`` nor an ``l`` (no ``true``, no ``false``; two ``memchr`` calls).
    """
    m = X == 0
    m |= X == 1
    if not m.any():
        return False
    for r in np.flatnonzero(m.any(axis=1)).tolist():
        if texts is not None and b"u" not in texts[r] and b"l" not in texts[r]:
            continue
        if bool in set(map(type, rows[r])):
            return True
    return False


_ALL_NUMBERS = object()  # _first_non_number found none (JSON null is a value it can return)


def _first_non_number(obj: Any) -> Any:
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, list):
            stack.extend(reversed(o))
        elif isinstance(o, bool) or not isinstance(o, (int, float)):
            return o
    return _ALL_NUMBERS


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

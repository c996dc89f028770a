"""Input checks shared by the LSTM encoder and its trainer (error messages name the problem and the values)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

__all__ = ["as_float_array", "check_finite", "check_lengths", "canonical_dtype", "check_positive_int"]


def as_float_array(x: Any, name: str, dtype: DTypeLike) -> NDArray[Any]:
    """``x`` (array_like or torch tensor, duck-typed) as an array of ``dtype``; no copy if it already is one.

    Raises TypeError if ``x`` is not real numeric (float, int or bool).
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, duck-typed
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating)
                                   or np.issubdtype(arr.dtype, np.integer)
                                   or arr.dtype == np.bool_):
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return arr.astype(dtype, copy=False)


def check_finite(arr: NDArray[Any], name: str) -> None:
    """Raise ValueError naming the index of the first NaN or infinity in ``arr``."""
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name} contains a non-finite value at index {tuple(int(i) for i in bad)}")


def check_lengths(lengths: Any, B: int, T: int) -> NDArray[np.int64]:
    """Sequence lengths as an int64 array of shape (B,), each in [1, T].

    Integral floats are accepted; anything else raises TypeError or ValueError.
    """
    if hasattr(lengths, "detach") and hasattr(lengths, "cpu"):
        lengths = lengths.detach().cpu().numpy()
    lengths = np.asarray(lengths)
    if lengths.dtype.kind not in "iu":
        if lengths.dtype.kind == "f" and np.all(np.isfinite(lengths)) and np.all(lengths == np.round(lengths)):
            lengths = lengths.astype(np.int64)
        else:
            raise TypeError(f"lengths must be integers, got dtype {lengths.dtype}")
    if lengths.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},) (one per sequence), got {lengths.shape}")
    lengths = lengths.astype(np.int64)
    if B and (lengths.min() < 1 or lengths.max() > T):
        bad = int(np.flatnonzero((lengths < 1) | (lengths > T))[0])
        raise ValueError(f"lengths must be in [1, {T}] (the sequence length), "
                         f"got lengths[{bad}] = {int(lengths[bad])}")
    result: NDArray[np.int64] = lengths
    return result


def canonical_dtype(dtype: DTypeLike) -> np.dtype[Any]:
    """``np.dtype(dtype)`` if it is float32 or float64, else ValueError."""
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def check_positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1 (bools refused): TypeError or ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)

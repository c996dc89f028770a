"""Input and hyperparameter validation shared by the clustering estimators.

Every public function in :mod:`streamkm.cluster` runs its arguments through
these helpers *before* touching any state, so a rejected call leaves an
estimator unchanged. Errors are ``ValueError`` (bad value) or ``TypeError``
(bad type) and their messages name the argument and the offending value.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "MAX_ABS_VALUE",
    "check_array",
    "check_sample_weight",
    "check_positive_int",
    "check_nonnegative_int",
    "check_float",
    "check_in",
    "check_random_state",
    "check_seed",
    "check_n_clusters",
]


#: Largest accepted feature magnitude. Squared distances of larger values can overflow
#: float32 (max ~3.4e38) even though each value is finite, and one such point would leave
#: the objective at inf for good; 1e15 keeps ||x - mu||^2 finite for up to ~1e8 features.
MAX_ABS_VALUE = 1e15


def _first_bad_row(X: np.ndarray) -> int:
    """Index of the first row of ``X`` holding a NaN or an infinity."""
    # Only called on failure, so the temporary boolean array is acceptable.
    return int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])


def check_array(
    X: Any,
    *,
    name: str = "X",
    n_features: int | None = None,
    allow_empty: bool = False,
) -> np.ndarray:
    """Validate a data matrix and return it as a C-contiguous float array.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Numeric data. Integer and boolean input is converted to float32;
        float64 input is kept as float64; every other float becomes float32.
    name : str, default="X"
        Name used in error messages.
    n_features : int or None, default=None
        If given, the number of columns ``X`` must have.
    allow_empty : bool, default=False
        Whether ``n_samples == 0`` is accepted.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), dtype float32 or float64
        ``X`` itself when it already has the right dtype and layout (no copy).

    Raises
    ------
    TypeError
        If ``X`` is not numeric (object, string, complex, sparse ...).
    ValueError
        If ``X`` is not 2-D, is empty, has the wrong number of features, or
        holds NaN/Inf (the message names the first bad row).

    Examples
    --------
    >>> check_array([[1, 2], [3, 4]]).dtype
    dtype('float32')
    >>> check_array([[1.0, float("nan")]])
    Traceback (most recent call last):
    ...
    ValueError: X contains NaN or infinity in row 0 (first bad row of 1)
    """
    if hasattr(X, "toarray") or hasattr(X, "tocsr"):
        raise TypeError(f"{name} must be a dense array; got sparse {type(X).__name__}")
    try:
        arr = np.asarray(X)
    except (ValueError, TypeError) as exc:  # ragged nested lists etc.
        raise ValueError(f"{name} could not be converted to an array: {exc}") from exc
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must be numeric (bool, int or float); got dtype {arr.dtype}"
        )
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_features); got {arr.ndim}-D array "
            f"of shape {arr.shape}"
        )
    n, d = arr.shape
    if d == 0:
        raise ValueError(f"{name} has 0 features (shape {arr.shape})")
    if n_features is not None and d != n_features:
        raise ValueError(f"{name}: expected {n_features} features, got {d}")
    if n == 0 and not allow_empty:
        raise ValueError(f"{name} is empty: got 0 samples (shape {arr.shape})")
    dtype = np.float64 if arr.dtype == np.float64 else np.float32
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if n:
        # min/max propagate NaN and expose +-inf without an (n, d) temporary.
        lo, hi = arr.min(), arr.max()
        if not (np.isfinite(lo) and np.isfinite(hi)):
            row = _first_bad_row(arr)
            raise ValueError(
                f"{name} contains NaN or infinity in row {row} (first bad row of {n})"
            )
        if max(-float(lo), float(hi)) > MAX_ABS_VALUE:
            row = int(np.flatnonzero((np.abs(arr) > MAX_ABS_VALUE).any(axis=1))[0])
            raise ValueError(
                f"{name} has a value of magnitude above {MAX_ABS_VALUE:.0e} in row {row} "
                f"(largest |value| {max(-float(lo), float(hi)):.3g}); squared distances "
                f"would overflow float32"
            )
    return arr


def check_sample_weight(
    sample_weight: Any, n_samples: int, *, dtype: Any = np.float64
) -> np.ndarray:
    """Validate per-sample weights: shape (n_samples,), finite, >= 0, not all 0.

    ``None`` becomes an array of ones. Returns a C-contiguous array of ``dtype``.

    Examples
    --------
    >>> check_sample_weight(None, 3)
    array([1., 1., 1.])
    """
    if sample_weight is None:
        return np.ones(n_samples, dtype=dtype)
    w = np.asarray(sample_weight)
    if w.dtype == object or w.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must be numeric; got dtype {w.dtype}")
    if w.shape != (n_samples,):
        raise ValueError(
            f"sample_weight must have shape ({n_samples},); got {w.shape}"
        )
    w = np.ascontiguousarray(w, dtype=dtype)
    if n_samples and not np.isfinite(w).all():
        raise ValueError("sample_weight contains NaN or infinity")
    if n_samples and w.min() < 0:
        raise ValueError(f"sample_weight must be >= 0; got minimum {w.min()}")
    if n_samples and not w.sum() > 0:
        raise ValueError("sample_weight must not be all zero")
    return w


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` as an ``int`` if it is an integer ``>= minimum``.

    Examples
    --------
    >>> check_positive_int("n_init", 3)
    3
    >>> check_positive_int("n_init", 0)
    Traceback (most recent call last):
    ...
    ValueError: n_init must be an integer >= 1; got 0
    """
    if not _is_int(value):
        raise TypeError(
            f"{name} must be an integer >= {minimum}; got {value!r} "
            f"of type {type(value).__name__}"
        )
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}")
    return int(value)


def check_nonnegative_int(name: str, value: Any) -> int:
    """Return ``value`` as an ``int`` if it is an integer ``>= 0``."""
    return check_positive_int(name, value, minimum=0)


def check_float(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Return ``value`` as a finite ``float`` inside the given bounds.

    Examples
    --------
    >>> check_float("tol", 1e-4, low=0.0)
    0.0001
    >>> check_float("decay", 1.5, low=0.0, high=1.0, low_inclusive=False)
    Traceback (most recent call last):
    ...
    ValueError: decay must be in (0.0, 1.0]; got 1.5
    """
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{name} must be a real number; got {value!r} of type {type(value).__name__}"
        )
    v = float(value)
    lo_b = "[" if low_inclusive else "("
    hi_b = "]" if high_inclusive else ")"
    lo_s = "-inf" if low is None else repr(float(low))
    hi_s = "inf" if high is None else repr(float(high))
    bad = not np.isfinite(v)
    if low is not None:
        bad = bad or (v < low if low_inclusive else v <= low)
    if high is not None:
        bad = bad or (v > high if high_inclusive else v >= high)
    if bad:
        raise ValueError(f"{name} must be in {lo_b}{lo_s}, {hi_s}{hi_b}; got {value}")
    return v


def check_in(name: str, value: Any, options: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``options``.

    Examples
    --------
    >>> check_in("method", "bic", ("silhouette", "elbow", "bic"))
    'bic'
    >>> check_in("method", "gap", ("silhouette", "elbow", "bic"))
    Traceback (most recent call last):
    ...
    ValueError: method must be one of ('silhouette', 'elbow', 'bic'); got 'gap'
    """
    options = tuple(options)
    try:
        ok = value in options
    except TypeError:  # unhashable/uncomparable
        ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {options}; got {value!r}")
    return value


def check_random_state(seed: Any) -> np.random.Generator:
    """Turn ``seed`` into a :class:`numpy.random.Generator`.

    ``None`` gives fresh OS entropy, a non-negative integer or a
    :class:`numpy.random.SeedSequence` seeds ``np.random.default_rng``, and a
    ``Generator`` is returned as is (shared, not copied).

    Examples
    --------
    >>> int(check_random_state(0).integers(10)) == int(check_random_state(0).integers(10))
    True
    """
    if seed is None or isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    if isinstance(seed, np.random.Generator):
        return seed
    if _is_int(seed):
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {seed}")
        return np.random.default_rng(int(seed))
    raise TypeError(
        "seed must be None, a non-negative int, a SeedSequence or a "
        f"numpy Generator; got {seed!r} of type {type(seed).__name__}"
    )


#: Alias of :func:`check_random_state`.
check_seed = check_random_state


def check_n_clusters(n_clusters: Any, n_samples: int | None = None) -> int:
    """Validate ``n_clusters`` (integer >= 1, and <= n_samples when given)."""
    k = check_positive_int("n_clusters", n_clusters)
    if n_samples is not None and k > n_samples:
        raise ValueError(
            f"n_clusters={k} must be <= n_samples={n_samples}"
        )
    return k

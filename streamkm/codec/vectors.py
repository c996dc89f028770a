"""Entry point of the vectors pipeline: :func:`decode_vectors` over JSON, binary or auto.

It tries the vectorized binary path (:mod:`streamkm.codec.binary`), then the
batched JSON path (:mod:`streamkm.codec.json_vectors`), then the per-record
decoder here; all three give identical results.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from streamkm.codec._validation import _check_common, _load_json, _non_finite_error, _precheck
from streamkm.codec.batches import VectorBatch
from streamkm.codec.binary import MAGIC, _binary_record, _fast_binary
from streamkm.codec.errors import DecodeError, _Bad
from streamkm.codec.json_vectors import _fast_json, _json_vectors, _loads_json

__all__ = ["decode_vectors"]


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
    >>> from streamkm.codec import encode_binary
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
                    uniform = len(set(map(len, values))) == 1  # type: ignore[arg-type]  # TypeError on None
                except TypeError:
                    uniform = False
                if uniform and set(map(type, values)) == {bytes}:
                    res = _fast_binary(cast("Sequence[bytes]", values), L, dim, fmt, max_record_bytes,
                                       _decode_vectors_generic)
                    if res is not None:
                        return VectorBatch(*res)
    if n and fmt != "binary":
        return _fast_json(values, fmt, dim, max_record_bytes, _decode_json_exact)
    return _decode_vectors_generic(values, fmt, dim, max_record_bytes)


def _decode_json_exact(values: Sequence[bytes | None], fmt: str, dim: int | None,
                       max_record_bytes: int) -> VectorBatch:
    """The json.loads path: one batched ``np.array`` if every record is ``{"x": [...]}``, else per record."""
    res = _loads_json(values, dim, max_record_bytes, fmt == "auto")
    if isinstance(res, VectorBatch):
        return res
    return _decode_vectors_generic(values, fmt, dim, max_record_bytes, res)


def _decode_vectors_generic(values: Sequence[bytes | None], fmt: str, dim: int | None, max_record_bytes: int,
                            parsed: list[Any] | None = None) -> VectorBatch:
    """Per-record decoder (any mix of formats and errors); the reference the fast paths must match."""
    chunks: list[NDArray[Any]] = []
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

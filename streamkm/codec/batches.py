"""Decoder results: :class:`VectorBatch` (vectors pipeline) and :class:`EventBatch` (events)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from streamkm.codec.errors import DecodeError

__all__ = ["VectorBatch", "EventBatch"]


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
    max_abs : float or None
        ``max(abs(X))`` when the decoder had it for free (its finiteness check of a
        uniform binary batch); None when unknown. Lets
        :func:`streamkm.pipeline.guards.drop_overflowing` skip a pass over X.
    """

    X: NDArray[np.float32]
    record_index: NDArray[np.int64]
    errors: list[tuple[int, DecodeError]] = field(default_factory=list)
    max_abs: float | None = None

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
    ts: NDArray[np.float64]
    X: NDArray[np.float32]
    record_index: NDArray[np.int64]
    errors: list[tuple[int, DecodeError]] = field(default_factory=list)

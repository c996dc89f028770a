"""Checks between decoding and the model: values the model would reject become dead letters.

A record that reaches ``partial_fit`` and makes it raise would be a poison pill for the
consume loop (every replay fails again), so anything the model refuses is refused here
first, per record, like a decode error.
"""

from __future__ import annotations

import numpy as np

from streamkm.cluster import MAX_ABS_VALUE
from streamkm.codec import DecodeError, EventBatch, VectorBatch

__all__ = ["drop_overflowing"]


def drop_overflowing(batch: VectorBatch | EventBatch) -> None:
    """Move records with a value above :data:`streamkm.cluster.MAX_ABS_VALUE` into ``batch.errors``.

    Such values are finite (they pass decoding) but their squared distances overflow
    float32, and ``StreamingKMeans`` rejects them. A record is rejected whole; on an
    ``EventBatch`` its per-row keys and timestamps are filtered alongside. Modifies
    *batch* in place.
    """
    X = batch.X
    bound = getattr(batch, "max_abs", None)  # the decoder's, if it had it (VectorBatch only)
    if bound is None:
        bound = max(-float(X.min()), float(X.max()))
    if bound <= MAX_ABS_VALUE:
        return
    absmax = np.abs(X).max(axis=1)
    ri = batch.record_index
    new: dict[int, DecodeError] = {}
    for row in np.flatnonzero(absmax > MAX_ABS_VALUE).tolist():  # bad rows only
        rec = int(ri[row])
        if rec not in new:
            in_rec = row - int(np.searchsorted(ri, rec))
            new[rec] = DecodeError(
                reason="non_finite", exc_type="ValueError",
                message=f"row {in_rec} has a value of magnitude {float(absmax[row]):.3g} > "
                        f"{MAX_ABS_VALUE:.0e} (too large for float32 distances)")
    keep = ~np.isin(ri, np.fromiter(new, dtype=np.int64, count=len(new)))
    batch.X = X[keep]
    batch.record_index = ri[keep]
    if isinstance(batch, VectorBatch):
        batch.max_abs = None
    if isinstance(batch, EventBatch):
        batch.keys = [k for k, ok in zip(batch.keys, keep.tolist(), strict=True) if ok]
        batch.ts = batch.ts[keep]
    batch.errors = sorted([*batch.errors, *new.items()], key=lambda t: t[0])

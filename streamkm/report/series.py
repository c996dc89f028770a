"""The series a report plots, computed from a RUN_DIR's per-chunk log and reservoir (NumPy only).

:func:`chunk_series` turns ``chunks.jsonl`` into arrays (null becomes NaN, so plotted
lines break there; an id absent from a chunk's weights has weight 0 in it), and
:func:`pca_2d` projects the reservoir on its first two principal axes (SVD of the
centred points). The page embeds :meth:`Series.to_json`, and the figures are drawn
from exactly these arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Series", "chunk_series", "Projection", "pca_2d"]


@dataclass(frozen=True)
class Series:
    """Per-chunk series, one entry per line of ``chunks.jsonl``.

    Attributes
    ----------
    x_kind : {"record_time", "chunk"}
        ``"record_time"`` when every chunk has a ``record_time_ms``; otherwise the x axis
        is the chunk index (1-based) for the whole run.
    x : ndarray of shape (n,)
        ``datetime64[ms]`` (UTC) record times, or int64 chunk indices.
    version, rows : ndarray of shape (n,), int64
    record_time_ms : list of int or None
    objective, ewma, center_shift : ndarray of shape (n,), float64
        NaN where the log holds null.
    cluster_ids : ndarray of shape (c,), int64
        Every stable id seen in any chunk's weights, ascending.
    weights : ndarray of shape (n, c), float64
        Weight of each id after each chunk (0 where the id is absent).
    drift, reseed : ndarray of int64
        Positions (0-based) of chunks with a drift event, and with a reseed (a ``reseed``
        event, or a drift event whose reseed was accepted).
    events : list of (int, dict)
        ``(position, event)`` for every event, in log order.
    """

    x_kind: str
    x: NDArray[Any]
    version: NDArray[np.int64]
    rows: NDArray[np.int64]
    record_time_ms: list[int | None]
    objective: NDArray[np.float64]
    ewma: NDArray[np.float64]
    center_shift: NDArray[np.float64]
    cluster_ids: NDArray[np.int64]
    weights: NDArray[np.float64]
    drift: NDArray[np.int64]
    reseed: NDArray[np.int64]
    events: list[tuple[int, dict[str, Any]]]

    @property
    def n_chunks(self) -> int:
        return int(self.version.shape[0])

    def to_json(self) -> dict[str, Any]:
        """The series as JSON values (NaN as null): what the page embeds."""

        def floats(a: NDArray[np.float64]) -> list[float | None]:
            return [None if np.isnan(v) else float(v) for v in a.tolist()]

        return {"x_kind": self.x_kind, "version": self.version.tolist(), "rows": self.rows.tolist(),
                "record_time_ms": list(self.record_time_ms), "objective": floats(self.objective),
                "ewma": floats(self.ewma), "center_shift": floats(self.center_shift),
                "weights": {str(cid): self.weights[:, j].tolist() for j, cid in enumerate(self.cluster_ids.tolist())},
                "drift": self.drift.tolist(), "reseed": self.reseed.tolist()}


def _floats(chunks: list[dict[str, Any]], key: str) -> NDArray[np.float64]:
    return np.array([np.nan if c.get(key) is None else float(c[key]) for c in chunks], dtype=np.float64)


def chunk_series(chunks: list[dict[str, Any]]) -> Series:
    """The series of validated chunk records (:func:`streamkm.report.load_run_dir`'s ``chunks``)."""
    n = len(chunks)
    times = [c.get("record_time_ms") for c in chunks]
    if n and all(t is not None for t in times):
        x: NDArray[Any] = np.array(times, dtype=np.int64).astype("datetime64[ms]")
        x_kind = "record_time"
    else:
        x, x_kind = np.arange(1, n + 1, dtype=np.int64), "chunk"
    ids = np.array(sorted({int(cid) for c in chunks for cid in c.get("weights", {})}), dtype=np.int64)
    col = {int(cid): j for j, cid in enumerate(ids.tolist())}
    weights = np.zeros((n, ids.shape[0]), dtype=np.float64)
    for i, c in enumerate(chunks):
        for cid, w in c.get("weights", {}).items():
            weights[i, col[int(cid)]] = float(w)
    events = [(i, e) for i, c in enumerate(chunks) for e in c.get("events", [])]
    drift = sorted({i for i, e in events if e["event"] == "drift"})
    reseed = sorted({i for i, e in events
                     if e["event"] == "reseed" or (e["event"] == "drift" and e.get("reseed_accepted") is True)})
    return Series(x_kind=x_kind, x=x, version=np.array([c["version"] for c in chunks], dtype=np.int64),
                  rows=np.array([c["rows"] for c in chunks], dtype=np.int64), record_time_ms=times,
                  objective=_floats(chunks, "objective"), ewma=_floats(chunks, "ewma"),
                  center_shift=_floats(chunks, "center_shift"), cluster_ids=ids, weights=weights,
                  drift=np.array(drift, dtype=np.int64), reseed=np.array(reseed, dtype=np.int64), events=events)


@dataclass(frozen=True)
class Projection:
    """A 2-D PCA of the reservoir.

    Attributes
    ----------
    mean : ndarray of shape (d,), float64
    components : ndarray of shape (2, d), float64
        The first two principal axes (rows; the second is zero when d = 1 or the points
        are collinear).
    explained : ndarray of shape (2,), float64
        Fraction of the total variance along each axis (0 when there is none).
    points : ndarray of shape (m, 2), float64
    """

    mean: NDArray[np.float64]
    components: NDArray[np.float64]
    explained: NDArray[np.float64]
    points: NDArray[np.float64]

    def project(self, X: Any) -> NDArray[np.float64]:
        """Coordinates of the rows of *X* (n, d) on the two axes, shape (n, 2)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.mean.shape[0]:
            raise ValueError(f"expected an array of shape (n, {self.mean.shape[0]}), got {X.shape}")
        out: NDArray[np.float64] = (X - self.mean) @ self.components.T
        return out


def pca_2d(X: Any) -> Projection:
    """Project *X* of shape (m, d), m >= 2, on its first two principal axes (NumPy SVD).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 0.0, 1.0], [2.0, 0.0, 1.0], [4.0, 0.1, 1.0], [6.0, -0.1, 1.0]])
    >>> p = pca_2d(X)
    >>> p.points.shape, bool(p.explained[0] > 0.99)
    ((4, 2), True)
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 2:
        raise ValueError(f"expected at least 2 points of shape (m, d), got shape {X.shape}")
    mean = X.mean(axis=0)
    Xc = X - mean
    # Economy SVD: (m, d) with m up to the reservoir size, d small; Vt rows are the axes.
    _, s, vt = np.linalg.svd(Xc, full_matrices=False)
    comps = np.zeros((2, X.shape[1]), dtype=np.float64)
    r = min(2, vt.shape[0])
    comps[:r] = vt[:r]
    # Fix the sign so that the projection is a function of the data, not of LAPACK's choice.
    for j in range(r):
        pivot = int(np.argmax(np.abs(comps[j])))
        if comps[j, pivot] < 0:
            comps[j] = -comps[j]
    var = s**2
    total = float(var.sum())
    explained = np.zeros(2, dtype=np.float64)
    if total > 0:
        explained[:r] = var[:r] / total
    return Projection(mean=mean, components=comps, explained=explained, points=Xc @ comps.T)

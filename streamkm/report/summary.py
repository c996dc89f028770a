"""The report's numbers: the summary table, the final model against a batch k-means, select_k's curves.

Objectives are mean squared distances to the nearest centre (the unit of the per-chunk
``objective``), both computed by :func:`streamkm.cluster.summarize` in the model's dtype,
so the final model and the batch :class:`~streamkm.cluster.KMeans` are scored alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from streamkm.cluster import KMeans, SelectKResult, select_k, summarize

if TYPE_CHECKING:
    from streamkm.group.export import ExportedModel
    from streamkm.report.rundir import RunDir

__all__ = ["BatchComparison", "compare_to_batch", "select_k_curves", "summary_rows", "SELECT_K_METHODS"]

#: The select_k methods the report plots, in panel order.
SELECT_K_METHODS = ("silhouette", "elbow", "bic")


@dataclass(frozen=True)
class BatchComparison:
    """The final model's objective on the reservoir against a batch k-means fitted on it.

    Attributes
    ----------
    n_points : int
        Reservoir points scored.
    final_objective, batch_objective : float
        Mean squared distance to the nearest centre.
    ratio : float or None
        ``final_objective / batch_objective`` (None when the batch objective is 0).
    batch_centers : ndarray of shape (k, d), float64
    seed : int
    """

    n_points: int
    final_objective: float
    batch_objective: float
    ratio: float | None
    batch_centers: NDArray[np.float64]
    seed: int


def _mean_objective(X: NDArray[np.float32], centers: Any, dtype: Any) -> float:
    s = summarize(X, centers, dtype=dtype)
    return float(s.sq_dist_sums.sum(dtype=np.float64)) / X.shape[0]


def compare_to_batch(model: ExportedModel, reservoir: NDArray[np.float32], *, seed: int = 0,
                     n_init: int = 3) -> BatchComparison:
    """Score *model* and a batch ``KMeans(k, n_init, seed)`` fitted on *reservoir* (m, d), m >= k."""
    k = int(model.cluster_centers_.shape[0])
    m = int(reservoir.shape[0])
    if m < k:
        raise ValueError(f"a batch k-means with k = {k} needs at least {k} reservoir points, got {m}")
    dtype = np.dtype(model.metadata_.get("dtype", "float32"))
    final = _mean_objective(reservoir, model.cluster_centers_, dtype)
    km = KMeans(k, n_init=n_init, seed=seed).fit(reservoir)
    centers = np.asarray(km.cluster_centers_, dtype=np.float64)
    batch = _mean_objective(reservoir, centers, dtype)
    return BatchComparison(n_points=m, final_objective=final, batch_objective=batch,
                           ratio=final / batch if batch > 0 else None, batch_centers=centers, seed=seed)


def select_k_curves(reservoir: NDArray[np.float32], k_min: int, k_max: int, *,
                    seed: int = 0) -> tuple[dict[str, SelectKResult], list[str]]:
    """:func:`streamkm.cluster.select_k` on *reservoir* for ``k_min..k_max`` with each method.

    Returns the results by method and notes for the methods that cannot run on this range
    (silhouette needs k >= 2, the elbow three values of k). ValueError if no k of the range
    can be fitted (``k_max`` must be below the number of points).
    """
    m = int(reservoir.shape[0])
    if not 1 <= k_min <= k_max:
        raise ValueError(f"--select-k: expected 1 <= KMIN <= KMAX, got {k_min}:{k_max}")
    if k_max > m - 1:
        raise ValueError(f"--select-k: select_k up to k = {k_max} needs at least {k_max + 1} reservoir points, got {m}")
    out: dict[str, SelectKResult] = {}
    notes: list[str] = []
    for method in SELECT_K_METHODS:
        lo = max(k_min, 2) if method == "silhouette" else k_min
        ks = list(range(lo, k_max + 1))
        if method == "silhouette" and not ks:
            notes.append(f"select_k: no silhouette curve (it needs k >= 2; the range is {k_min}:{k_max})")
            continue
        if method == "elbow" and len(ks) < 3:
            notes.append(f"select_k: no elbow curve (it needs at least 3 values of k; the range is {k_min}:{k_max})")
            continue
        out[method] = select_k(reservoir, ks, method=method, seed=seed)
    return out, notes


def _fmt(v: float | None, spec: str = ".6g") -> str:
    return "n/a" if v is None else format(v, spec)


def summary_rows(rd: RunDir, comparison: BatchComparison | None) -> list[tuple[str, str]]:
    """``(label, value)`` rows of the summary table, as text."""
    run = rd.run
    k_model = "" if rd.model is None else f" (final model: {rd.model.cluster_centers_.shape[0]})"
    dlq: dict[str, int] = run.get("dead_letters", {})
    n_dlq = sum(dlq.values())
    dlq_text = ", ".join(f"{reason} {n:,}" for reason, n in sorted(dlq.items())) or "none"
    rows = [("pipeline", str(run.get("pipeline", ""))), ("source", str(run.get("source", ""))),
            ("config hash", str(run.get("config_hash", "")) or "-"),
            ("k (n_clusters)", f"{run['n_clusters']}{k_model}"), ("features", str(run["n_features"])),
            ("records", f"{run['records']:,}"), ("valid rows", f"{run['valid_rows']:,}"),
            ("dead letters", f"{n_dlq:,} ({dlq_text})"),
            ("chunks", f"{run['chunks']:,}"), ("final version", str(run["final_version"]))]
    span = run.get("record_time_ms")
    if span is not None:
        a, b = (np.datetime64(int(t), "ms") for t in span)
        rows.append(("record time", f"{a} .. {b} UTC"))
    if comparison is not None:
        rows += [(f"final model objective on the reservoir ({comparison.n_points:,} points)",
                  _fmt(comparison.final_objective)),
                 (f"batch KMeans objective on the reservoir (same k, seed {comparison.seed})",
                  _fmt(comparison.batch_objective)),
                 ("ratio final / batch", _fmt(comparison.ratio, ".4f"))]
    return rows

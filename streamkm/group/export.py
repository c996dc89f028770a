"""A published model version as files, and back as an estimator a downstream service can score with.

``export_version(v, path)`` writes ``PATH.npz`` (``centers`` (k, d) float64, ``weights`` (k,),
``ids`` (k,) int64; no pickle) and ``PATH.json`` (version, stats offset, per-partition offsets,
next id, points seen, dtype, config hash, pipeline). :func:`load_model` reads them back as an
:class:`ExportedModel` whose ``predict`` returns the stable cluster ids the daemon emits.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from streamkm.atomic import atomic_write
from streamkm.cluster import summarize
from streamkm.group.messages import ModelVersion, snapshot_state
from streamkm.group.wire import WireError

if TYPE_CHECKING:
    from streamkm.group.fold import GroupModel

__all__ = ["ExportedModel", "export_version", "load_model", "version_from_snapshot"]

EXPORT_FORMAT = "streamkm.model_export"


def version_from_snapshot(data: bytes, model: GroupModel) -> ModelVersion:
    """The version a reducer snapshot (bytes from ``streamkm model snapshot``) holds.

    *model* is a fresh fold built from the same settings (``GroupWorker.new_group_model``); it
    is loaded with the snapshot's state. ValueError naming the problem if *data* is not a
    snapshot of ``model.pipeline`` or does not fit the settings (the model is then unchanged).
    """
    got = snapshot_state(data, model.pipeline)
    if isinstance(got, WireError):
        raise ValueError(f"not a usable reducer snapshot: {got}")
    made_with = got.get("config_hash") or ""
    if made_with and model.config_hash and made_with != model.config_hash:
        raise ValueError(f"made with other model settings (config hash {made_with}, these settings "
                         f"{model.config_hash}); use the --config the daemon ran with")
    model.load_state_dict(got["state"])
    return model.version()


def export_version(v: ModelVersion, path: str | Path) -> tuple[Path, Path]:
    """Write ``PATH.npz`` and ``PATH.json`` (atomically); returns both paths."""
    if not v.is_initialized:
        raise ValueError(f"version {v.version} of {v.pipeline!r} has no centres yet (model not initialized)")
    base = Path(path)
    base = base.with_suffix("") if base.suffix in (".npz", ".json") else base
    npz, meta = base.with_suffix(".npz"), base.with_suffix(".json")
    buf = io.BytesIO()
    np.savez(buf, centers=v.centers, weights=v.weights, ids=v.ids)
    atomic_write(npz, buf.getvalue())
    doc = {"format": EXPORT_FORMAT, "version": 1, "pipeline": v.pipeline, "model_version": v.version,
           "stats_offset": v.stats_offset, "offsets": v.offsets, "next_id": v.next_id, "n_seen": v.n_seen,
           "dtype": v.dtype, "config_hash": v.config_hash, "n_clusters": int(v.centers.shape[0]),
           "n_features": int(v.centers.shape[1]), "published_at": v.published_at}
    atomic_write(meta, (json.dumps(doc, indent=2) + "\n").encode())
    return npz, meta


class ExportedModel:
    """A fitted, read-only k-means model from an export: the daemon's exact centres and ids.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (k, d), float64
    cluster_ids_ : ndarray of shape (k,), int64
        Stable id of each centre.
    weights_ : ndarray of shape (k,), float64
    model_version_ : int
    metadata_ : dict
        The export's JSON document.
    """

    def __init__(self, centers: NDArray[np.float64], ids: NDArray[np.int64], weights: NDArray[np.float64],
                 metadata: dict[str, Any]):
        self.cluster_centers_ = centers
        self.cluster_ids_ = ids
        self.weights_ = weights
        self.metadata_ = metadata
        self.model_version_ = int(metadata.get("model_version", 0))
        self.n_features_in_ = int(centers.shape[1])
        self._dtype = np.dtype(metadata.get("dtype", "float32"))

    def assign(self, X: Any) -> tuple[NDArray[np.int64], NDArray[Any]]:
        """Stable cluster id and squared distance for every row of *X* (n, d), as the daemon computes them."""
        s = summarize(X, self.cluster_centers_, dtype=self._dtype)
        return self.cluster_ids_[s.labels], s.sq_dist

    def predict(self, X: Any) -> NDArray[np.int64]:
        """Stable cluster id of the nearest centre, shape (n_samples,)."""
        return self.assign(X)[0]


def load_model(path: str | Path) -> ExportedModel:
    """Read ``PATH.npz`` + ``PATH.json`` written by :func:`export_version` (ValueError naming the problem)."""
    base = Path(path)
    base = base.with_suffix("") if base.suffix in (".npz", ".json") else base
    npz, meta = base.with_suffix(".npz"), base.with_suffix(".json")
    try:
        doc = json.loads(meta.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{meta}: cannot read the export's metadata ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{meta}: not a streamkm model export")
    try:
        with np.load(npz, allow_pickle=False) as z:
            centers, weights, ids = (np.asarray(z[k]) for k in ("centers", "weights", "ids"))
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{npz}: cannot read the export's arrays ({exc})") from None
    k = centers.shape[0] if centers.ndim == 2 else -1
    if k < 1 or weights.shape != (k,) or ids.shape != (k,) or not np.isfinite(centers).all():
        raise ValueError(f"{npz}: inconsistent arrays (centers {centers.shape}, weights {weights.shape}, "
                         f"ids {ids.shape})")
    return ExportedModel(centers.astype(np.float64), ids.astype(np.int64), weights.astype(np.float64), doc)

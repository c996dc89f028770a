"""streamkm: keep a k-means model current over an unbounded Kafka stream.

The numerical core lives in :mod:`streamkm.cluster` (batch and streaming
k-means, pure NumPy) and :mod:`streamkm.sequence` (NumPy LSTM encoder and
event windows); records flow kafka -> codec -> pipeline -> service, with
checkpoint, ops and config beside them (docs/architecture.md).
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from typing import Any

try:
    __version__ = _version("streamkm")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

# The estimators are loaded on first use (PEP 562), so that ``import streamkm.cli``
# stays light: the CLI installs its signal handling before NumPy is imported.
_CLUSTER_NAMES = (
    "MAX_ABS_VALUE", "KMeans", "ReseedResult", "SelectKResult", "StreamingKMeans", "TimeBiasedReservoir",
    "UniformReservoir", "compute_reseed", "kmeans_plusplus", "select_k", "TRANSITIONS", "Matching", "Transition",
    "default_threshold", "match_clusters", "ChunkSummary", "summarize", "NotFittedError",
)

__all__ = ["__version__", *_CLUSTER_NAMES]


def __getattr__(name: str) -> Any:
    if name in _CLUSTER_NAMES:
        from streamkm import cluster

        return getattr(cluster, name)
    raise AttributeError(f"module 'streamkm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_CLUSTER_NAMES])

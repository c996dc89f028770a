"""Batch and streaming k-means in pure NumPy.

Batch: :func:`kmeans_plusplus` seeding, :class:`KMeans` (Lloyd) and
:func:`select_k`. Streaming: :class:`StreamingKMeans` (mini-batch updates with
decay and reservoir reseeding).
"""

from streamkm.cluster.kmeans import KMeans
from streamkm.cluster.kmeans_plusplus import kmeans_plusplus
from streamkm.cluster.select_k import SelectKResult, select_k

__all__: list[str] = ["kmeans_plusplus", "KMeans", "select_k", "SelectKResult"]

# --- batch k-means (H1) -------------------------------------------------------

# --- streaming k-means (H2) ---------------------------------------------------
from streamkm.cluster.reservoir import TimeBiasedReservoir, UniformReservoir  # noqa: E402
from streamkm.cluster.streaming_kmeans import (  # noqa: E402
    ReseedResult,
    StreamingKMeans,
    compute_reseed,
)

__all__ += [
    "StreamingKMeans",
    "compute_reseed",
    "ReseedResult",
    "UniformReservoir",
    "TimeBiasedReservoir",
]

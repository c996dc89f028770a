"""Batch and streaming k-means in pure NumPy.

Batch: :func:`kmeans_plusplus` seeding, :class:`KMeans` (Lloyd) and
:func:`select_k`. Streaming: :class:`StreamingKMeans` (mini-batch updates with
decay and reservoir reseeding, :func:`compute_reseed`) and the reservoir
samplers it uses. ``MAX_ABS_VALUE`` is the largest feature magnitude accepted.
"""

from streamkm.cluster._reseed import ReseedResult, compute_reseed
from streamkm.cluster._validation import MAX_ABS_VALUE
from streamkm.cluster.kmeans import KMeans
from streamkm.cluster.kmeans_plusplus import kmeans_plusplus
from streamkm.cluster.reservoir import TimeBiasedReservoir, UniformReservoir
from streamkm.cluster.select_k import SelectKResult, select_k
from streamkm.cluster.streaming_kmeans import StreamingKMeans

__all__ = [
    "MAX_ABS_VALUE",
    "KMeans",
    "ReseedResult",
    "SelectKResult",
    "StreamingKMeans",
    "TimeBiasedReservoir",
    "UniformReservoir",
    "compute_reseed",
    "kmeans_plusplus",
    "select_k",
]

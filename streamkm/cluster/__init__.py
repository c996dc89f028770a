"""Batch and streaming k-means in NumPy (SciPy for the assignment problem of cluster identity).

Batch: :func:`kmeans_plusplus` seeding, :class:`KMeans` (Lloyd) and
:func:`select_k`. Streaming: :class:`StreamingKMeans` (mini-batch updates with
decay and reservoir reseeding, :func:`compute_reseed`) and the reservoir
samplers it uses. Identity: :func:`match_clusters` keeps cluster ids stable
across centre replacements and reports MONIC-style transitions (:class:`Transition`).
Distributed updates: :func:`summarize` (a chunk's sufficient statistics) and
:meth:`StreamingKMeans.partial_fit_stats` (folding them). ``MAX_ABS_VALUE`` is the largest feature magnitude accepted.
The estimators follow scikit-learn's estimator protocol without importing it
(``get_params``/``set_params``, tags; :class:`NotFittedError` before fitting).
"""

from streamkm.cluster._params import NotFittedError
from streamkm.cluster._reseed import ReseedResult, compute_reseed
from streamkm.cluster._validation import MAX_ABS_VALUE
from streamkm.cluster.identity import TRANSITIONS, Matching, Transition, default_threshold, match_clusters
from streamkm.cluster.kmeans import KMeans
from streamkm.cluster.kmeans_plusplus import kmeans_plusplus
from streamkm.cluster.reservoir import TimeBiasedReservoir, UniformReservoir
from streamkm.cluster.select_k import SelectKResult, select_k
from streamkm.cluster.stats import ChunkSummary, summarize
from streamkm.cluster.streaming_kmeans import StreamingKMeans

__all__ = [
    "MAX_ABS_VALUE",
    "TRANSITIONS",
    "ChunkSummary",
    "KMeans",
    "Matching",
    "NotFittedError",
    "ReseedResult",
    "SelectKResult",
    "StreamingKMeans",
    "TimeBiasedReservoir",
    "Transition",
    "UniformReservoir",
    "compute_reseed",
    "default_threshold",
    "kmeans_plusplus",
    "match_clusters",
    "select_k",
    "summarize",
]

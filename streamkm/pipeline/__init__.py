"""Records in, model updates out: the deterministic, synchronous core of the daemon.

Nothing here does I/O: a pipeline's results depend only on the records fed to it, in
order, so it is unit-testable and a replay gives the model a live run gives.
"""

from streamkm.pipeline.base import (
    STATE_VERSION,
    BatchResult,
    DeadLetter,
    OutputRecord,
    Pipeline,
    RecordLike,
)
from streamkm.pipeline.registry import REGISTRY, PipelineSpec, build_pipelines, enabled_topics
from streamkm.pipeline.sequence import SequencePipeline
from streamkm.pipeline.vectors import VectorPipeline

__all__ = [
    "Pipeline",
    "RecordLike",
    "DeadLetter",
    "OutputRecord",
    "BatchResult",
    "VectorPipeline",
    "SequencePipeline",
    "PipelineSpec",
    "REGISTRY",
    "build_pipelines",
    "enabled_topics",
    "STATE_VERSION",
]

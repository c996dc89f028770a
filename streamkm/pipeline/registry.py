"""The pipeline registry: which pipelines exist, which the settings enable, and how to build them.

This is the only place that maps settings sections to concrete pipeline classes; the
service and the CLI iterate over what it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamkm.pipeline.base import Pipeline

if TYPE_CHECKING:
    from streamkm.config import Settings

__all__ = ["PipelineSpec", "REGISTRY", "build_pipelines", "enabled_topics"]


@dataclass(frozen=True, slots=True)
class PipelineSpec:
    """How one kind of pipeline is configured and built.

    Attributes
    ----------
    name : str
        Registry name (metric label, checkpoint key).
    input_kind : {"vectors", "events"}
        What its input topic carries (the demo producer picks its source by it).
    topic : callable
        ``topic(settings) -> str | None``: the input topic, None when disabled.
    build : callable
        ``build(settings, topic, batch_rows) -> Pipeline``; ``batch_rows`` None means the default.
    """

    name: str
    input_kind: str
    topic: Callable[[Settings], str | None]
    build: Callable[[Settings, str, int | None], Pipeline]


def _vectors_topic(settings: Settings) -> str | None:
    return settings.kafka.vectors_topic if settings.input.vectors_enabled and settings.kafka.vectors_topic else None


def _events_topic(settings: Settings) -> str | None:
    return settings.kafka.events_topic if settings.sequence.enabled and settings.kafka.events_topic else None


def _build_vectors(settings: Settings, topic: str, batch_rows: int | None) -> Pipeline:
    from streamkm.pipeline.vectors import VectorPipeline

    rows = int(batch_rows if batch_rows is not None else settings.kafka.max_records)
    drift = settings.drift.monitor_kwargs() if settings.drift.enabled else None
    return VectorPipeline(
        model_kwargs=settings.model.estimator_kwargs(), topic=topic, fmt=settings.input.format,
        dim=settings.input.dimension, max_record_bytes=settings.input.max_record_bytes,
        batch_rows=rows, drift_kwargs=drift, reseed_on_drift=settings.drift.reseed_on_drift,
        emit_outputs=settings.output.topic is not None, output_format=settings.output.format)


def _build_sequence(settings: Settings, topic: str, batch_rows: int | None) -> Pipeline:
    from streamkm.pipeline.sequence import SEQUENCE_BATCH_ROWS, SequencePipeline
    from streamkm.sequence import LSTMEncoder

    seq = settings.sequence
    if seq.lstm_path is None:  # the settings validator requires it when the pipeline is enabled
        raise ValueError("sequence.lstm_path: required when sequence.enabled is true")
    rows = min(settings.kafka.max_records, SEQUENCE_BATCH_ROWS) if batch_rows is None else int(batch_rows)
    drift = settings.drift.monitor_kwargs() if settings.drift.enabled else None
    return SequencePipeline(
        encoder=LSTMEncoder.load(seq.lstm_path), topic=topic, windower_kwargs=seq.windower_kwargs(),
        model_kwargs=seq.model.estimator_kwargs(), n_features=seq.n_features,
        pooling=seq.pooling, normalize=seq.normalize, max_record_bytes=settings.input.max_record_bytes,
        batch_rows=rows, drift_kwargs=drift, reseed_on_drift=settings.drift.reseed_on_drift,
        emit_outputs=settings.output.topic is not None, output_format=settings.output.format)


#: Every pipeline kind, in processing order.
REGISTRY: tuple[PipelineSpec, ...] = (
    PipelineSpec("vectors", "vectors", _vectors_topic, _build_vectors),
    PipelineSpec("sequence", "events", _events_topic, _build_sequence),
)


def enabled_topics(settings: Settings) -> dict[str, str]:
    """``{pipeline name: input topic}`` for the pipelines *settings* enable, in registry order."""
    out: dict[str, str] = {}
    for spec in REGISTRY:
        topic = spec.topic(settings)
        if topic:
            out[spec.name] = topic
    return out


def build_pipelines(settings: Settings, *, batch_rows: int | None = None) -> dict[str, Pipeline]:
    """``{name: pipeline}`` for the pipelines enabled in *settings*, in registry order.

    ``batch_rows`` (rows per model update) defaults to ``settings.kafka.max_records``
    (at most 256 for the sequence pipeline, whose rows are window embeddings).
    """
    out: dict[str, Pipeline] = {}
    for spec in REGISTRY:
        topic = spec.topic(settings)
        if topic:
            out[spec.name] = spec.build(settings, topic, batch_rows)
    return out

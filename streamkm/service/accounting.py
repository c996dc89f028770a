"""Batch accounting: a pipeline's :class:`~streamkm.pipeline.BatchResult` into metrics and logs."""

from __future__ import annotations

import logging

from streamkm.ops.metrics import Metrics
from streamkm.pipeline import BatchResult, Pipeline

__all__ = ["account"]

log = logging.getLogger("streamkm.worker")


def account(metrics: Metrics, pipeline: Pipeline, res: BatchResult) -> None:
    """Count one process/flush result and log its model events, then publish the model's state."""
    name = pipeline.name
    if res.n_records:
        metrics.records_consumed.labels(pipeline=name, topic=pipeline.topic).inc(res.n_records)
    if res.n_valid_records:
        metrics.records_clustered.labels(pipeline=name).inc(res.n_valid_records)
    if res.n_clustered:
        metrics.vectors_clustered.labels(pipeline=name).inc(res.n_clustered)
    for dl in res.dead_letters:
        metrics.records_dead_lettered.labels(pipeline=name, reason=dl.error.reason).inc()
    if res.n_windows:
        metrics.lstm_embed.observe(res.embed_seconds)
    for ev in res.events:
        kind = ev.get("event")
        if kind == "drift":
            metrics.drift_detections.labels(pipeline=name).inc()
            log.info("drift detected in %s (objective %.6g, batch %d)%s", name, ev["objective"], ev["n_batches"],
                     "" if "reseed_accepted" not in ev else
                     f"; reseed {'accepted' if ev['reseed_accepted'] else 'rejected'}",
                     extra={"pipeline": name, **ev})
        elif kind == "reseed":
            log.info("reseed in %s (interval), total reseeds %d", name, ev["n_reseeds"],
                     extra={"pipeline": name, **ev})
        elif kind == "initialized":
            log.info("%s model initialized after %d points", name, ev["n_seen"], extra={"pipeline": name, **ev})
    pipeline.observe(metrics)

"""Delivery of a batch's side effects: dead letters and output records, acknowledged.

The model has already absorbed the batch when these are sent, so every record must be
acknowledged (acks=all) before the batch's offsets may be checkpointed: failures are
retried with backoff until they succeed or the worker stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from aiokafka.errors import MessageSizeTooLargeError

from streamkm.ops.metrics import Metrics
from streamkm.pipeline import BatchResult
from streamkm.service.dead_letter import VALUE_DROPPED_HEADER, dlq_headers

__all__ = ["OutboundRecord", "DeliveryAborted", "outbound_records", "deliver"]

log = logging.getLogger("streamkm.worker")


@dataclass(frozen=True, slots=True)
class OutboundRecord:
    """One record to produce: a dead letter or an assignment output.

    Attributes
    ----------
    kind : {"dlq", "output"}
    pipeline : str
        The pipeline whose batch made it (metric label).
    topic : str
    key, value : bytes or None
    headers : list of (str, bytes)
    """

    kind: Literal["dlq", "output"]
    pipeline: str
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    def without_value(self) -> OutboundRecord:
        """This dead letter without its value, its size in :data:`VALUE_DROPPED_HEADER`."""
        size = len(self.value or b"")
        return replace(self, value=None, headers=[*self.headers, (VALUE_DROPPED_HEADER, str(size).encode())])


class DeliveryAborted(Exception):
    """Sends kept failing while the worker was stopping: the batch's effects are not durable."""


def outbound_records(result: BatchResult, *, pipeline: str, pipeline_class: str, dlq_topic: str | None,
                     output_topic: str | None, group_id: str, client_id: str) -> list[OutboundRecord]:
    """The dead letters (if a DLQ topic is set) and outputs (if an output topic is set) of a batch."""
    out: list[OutboundRecord] = []
    if result.dead_letters:
        reasons: dict[str, int] = {}
        for dl in result.dead_letters:
            reasons[dl.error.reason] = reasons.get(dl.error.reason, 0) + 1
        log.info("%d bad record(s) in %s -> %s: %s", len(result.dead_letters), pipeline,
                 dlq_topic or "dropped (no dlq.topic)", reasons,
                 extra={"event": "dead_letter", "pipeline": pipeline, "reasons": reasons})
    for dl in result.dead_letters:
        r = dl.record
        log.debug("dead-letter %s:%d@%d reason=%s", r.topic, r.partition, r.offset, dl.error.reason)
        if dlq_topic is not None:
            out.append(OutboundRecord("dlq", pipeline, dlq_topic, r.key, r.value, dlq_headers(
                r, dl.error, pipeline=pipeline, pipeline_class=pipeline_class, group_id=group_id,
                client_id=client_id)))
    if output_topic is not None:
        out.extend(OutboundRecord("output", pipeline, output_topic, o.key, o.value) for o in result.outputs)
    return out


def _shrunk_if_too_large(rec: OutboundRecord, exc: BaseException) -> OutboundRecord:
    """A dead letter rejected as too large (by the producer's ``max_request_size`` or the
    broker) can never succeed verbatim: resend it without its value. Else *rec*."""
    if not isinstance(exc, MessageSizeTooLargeError) or rec.value is None:
        return rec
    hdr = dict(rec.headers)
    r_topic = hdr.get("__connect.errors.topic", b"?").decode("utf-8", "replace")
    r_off = hdr.get("__connect.errors.offset", b"?").decode("utf-8", "replace")
    log.warning("dead-letter record for %s@%s is too large to send (%d bytes): sending it "
                "without its value", r_topic, r_off, len(rec.value), extra={"event": "dead_letter"})
    return rec.without_value()


async def deliver(producer: Any, records: Sequence[OutboundRecord], *, metrics: Metrics,
                  backoff_initial: float, backoff_max: float, stopping: Callable[[], bool]) -> None:
    """Send *records* and wait for every acknowledgement, retrying failures with backoff.

    Raises
    ------
    DeliveryAborted
        A retry round failed while ``stopping()`` is true.
    """
    backoff = backoff_initial
    todo = list(records)
    while todo:
        futures = []
        for rec in todo:
            try:
                fut = await producer.send(rec.topic, value=rec.value, key=rec.key, headers=rec.headers or None)
            except Exception as exc:  # buffer full / producer closed
                fut = asyncio.get_running_loop().create_future()
                fut.set_exception(exc)
            futures.append(fut)
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed: list[OutboundRecord] = []
        shrunk = 0
        for rec, r in zip(todo, results, strict=True):
            if not isinstance(r, BaseException):
                if rec.kind == "output":
                    metrics.output_records.labels(pipeline=rec.pipeline).inc()
                continue
            if rec.kind == "dlq":
                metrics.dlq_failures.labels(pipeline=rec.pipeline).inc()
                smaller = _shrunk_if_too_large(rec, r)
                if smaller is not rec:
                    shrunk += 1
                    rec = smaller
            failed.append(rec)
        if not failed:
            return
        if shrunk == len(failed):  # retrying verbatim could never succeed; resend at once
            todo = failed
            continue
        log.warning("%d dead-letter/output writes failed (%s); retrying in %.1fs", len(failed),
                    next(r for r in results if isinstance(r, BaseException)), backoff)
        if stopping():
            raise DeliveryAborted("dead-letter writes failing during shutdown")
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, backoff_max)
        todo = failed

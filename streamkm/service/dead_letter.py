"""The dead-letter record: original key, value and headers plus provenance headers.

Both common conventions are written, so Kafka Connect and Spring Kafka tooling read
them (the table is in docs/operations.md, "Dead-letter headers").
"""

from __future__ import annotations

import struct
from typing import Any

from streamkm.codec import DecodeError

__all__ = ["dlq_headers", "VALUE_DROPPED_HEADER"]

#: Added (with the value's size) when a dead letter was too large to send and went without its value.
VALUE_DROPPED_HEADER = "streamkm.dlq.value-dropped-bytes"


def _s(v: Any) -> bytes:
    return str(v).encode("utf-8", "replace")


def dlq_headers(record: Any, error: DecodeError, *, pipeline: str, pipeline_class: str, group_id: str,
                client_id: str) -> list[tuple[str, bytes]]:
    """Original headers + Kafka Connect and Spring provenance headers of one bad record.

    Parameters
    ----------
    record : ConsumerRecord
        The rejected record (topic, partition, offset, timestamp, timestamp_type, headers).
    error : DecodeError
    pipeline : str
        Pipeline name (``streamkm.pipeline`` header).
    pipeline_class : str
        The pipeline's class name (``__connect.errors.class.name`` is ``streamkm.pipeline.<it>``).
    group_id, client_id : str
    """
    ts_type = "LogAppendTime" if getattr(record, "timestamp_type", 0) == 1 else "CreateTime"
    ts = int(record.timestamp if record.timestamp is not None else -1)
    message = error.message[:2000]
    return [
        *list(record.headers or ()),
        ("__connect.errors.topic", _s(record.topic)),
        ("__connect.errors.partition", _s(record.partition)),
        ("__connect.errors.offset", _s(record.offset)),
        ("__connect.errors.connector.name", _s(group_id)),
        ("__connect.errors.task.id", _s(client_id)),
        ("__connect.errors.stage", b"VALUE_CONVERTER"),
        ("__connect.errors.class.name", _s(f"streamkm.pipeline.{pipeline_class}")),
        ("__connect.errors.exception.class.name", _s(error.exc_type)),
        ("__connect.errors.exception.message", _s(message)),
        ("__connect.errors.reason", _s(error.reason)),
        ("kafka_dlt-original-topic", _s(record.topic)),
        ("kafka_dlt-original-partition", struct.pack(">i", int(record.partition))),
        ("kafka_dlt-original-offset", struct.pack(">q", int(record.offset))),
        ("kafka_dlt-original-timestamp", struct.pack(">q", ts)),
        ("kafka_dlt-original-timestamp-type", _s(ts_type)),
        ("kafka_dlt-original-consumer-group", _s(group_id)),
        ("kafka_dlt-exception-fqcn", _s(error.exc_type)),
        ("kafka_dlt-exception-message", _s(message)),
        ("streamkm.pipeline", _s(pipeline)),
    ]

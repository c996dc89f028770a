"""Record formats: bytes from Kafka to validated float32 rows, or a typed DecodeError.

Modules: :mod:`~streamkm.codec.errors` (DecodeError, REASONS),
:mod:`~streamkm.codec.batches` (VectorBatch, EventBatch),
:mod:`~streamkm.codec.binary` (SKMV binary), :mod:`~streamkm.codec.json_vectors`
(JSON vectors), :mod:`~streamkm.codec.vectors` (``decode_vectors``) and
:mod:`~streamkm.codec.events` (JSON events). Layouts: ``docs/formats.md``.
"""

from streamkm.codec.batches import EventBatch, VectorBatch
from streamkm.codec.binary import HEADER_SIZE, MAGIC, VERSION, encode_binary, encode_binary_records
from streamkm.codec.errors import REASONS, DecodeError
from streamkm.codec.events import decode_events, encode_event_json
from streamkm.codec.json_vectors import encode_json, encode_json_batch
from streamkm.codec.vectors import decode_vectors

__all__ = [
    "REASONS",
    "MAGIC",
    "VERSION",
    "HEADER_SIZE",
    "DecodeError",
    "VectorBatch",
    "EventBatch",
    "decode_vectors",
    "decode_events",
    "encode_binary",
    "encode_binary_records",
    "encode_json",
    "encode_json_batch",
    "encode_event_json",
]

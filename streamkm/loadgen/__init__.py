"""Load generation: synthetic sources, the recording format, the producer.

Sources (:mod:`~streamkm.loadgen.sources`, :mod:`~streamkm.loadgen.synthetic`)
yield :class:`Record` tuples; :func:`produce` sends them to a topic,
:func:`record` dumps a topic into a ``.skmrec`` recording
(:mod:`~streamkm.loadgen.recording`) and :func:`file_records` replays it.
"""

from streamkm.loadgen.producer import ProduceStats, RecordsBar, produce, progress_bar, record
from streamkm.loadgen.recording import (
    RECORDING_MAGIC,
    RECORDING_VERSION,
    Record,
    RecordingWriter,
    file_records,
    read_positioned,
    read_recording,
)
from streamkm.loadgen.sources import blob_records, event_records, vector_records

__all__ = [
    "Record",
    "ProduceStats",
    "RecordingWriter",
    "read_recording",
    "read_positioned",
    "vector_records",
    "blob_records",
    "event_records",
    "file_records",
    "produce",
    "progress_bar",
    "RecordsBar",
    "record",
    "RECORDING_MAGIC",
    "RECORDING_VERSION",
]

"""Checkpoints: the durable store, its inspection, and the one-writer directory lock."""

from streamkm.checkpoint.inspect import inspect_summary
from streamkm.checkpoint.lock import DirectoryLock
from streamkm.checkpoint.store import (
    DEFAULT_MAX_FILE_BYTES,
    FAULT_POINTS,
    FORMAT_VERSION,
    CheckpointError,
    CheckpointInfo,
    CheckpointStore,
    has_checkpoints,
)

__all__ = ["CheckpointStore", "CheckpointInfo", "CheckpointError", "FORMAT_VERSION", "FAULT_POINTS",
           "DEFAULT_MAX_FILE_BYTES", "inspect_summary", "DirectoryLock", "has_checkpoints"]

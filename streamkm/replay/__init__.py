"""Offline replay: a recorded stream through the group model's pipeline and fold, into a run
directory (``streamkm replay``; docs/replay.md).

Imports ``pipeline``, ``group``, ``loadgen`` (recordings) and, for the pipeline and fold
builders, ``service.group``; never Kafka itself (a topic source is dumped by ``loadgen.record``).
"""

from streamkm.replay.rounds import ReplaySummary, RoundReplay
from streamkm.replay.rundir import RUN_FORMAT, ChunkLog, write_run
from streamkm.replay.sources import SUFFIXES, TOPIC_PREFIX, FileSource, ReplayRecord, open_source

__all__ = ["RoundReplay", "ReplaySummary", "ChunkLog", "write_run", "RUN_FORMAT", "FileSource", "ReplayRecord",
           "open_source", "SUFFIXES", "TOPIC_PREFIX"]

"""What ``streamkm replay`` reads: a recorded or exported stream, as per-partition record runs.

Every source gives, per source partition in offset order, records with the attributes the
pipelines read from a consumed Kafka record (:class:`streamkm.pipeline.base.RecordLike`), so
replay decodes, validates and dead-letters exactly as the daemon does:

- ``.skmrec`` (``streamkm record``): version 2 keeps each record's partition, offset and
  timestamp; a version-1 file is partition 0, offsets from 0;
- ``.npy`` (an (n, d) array) and ``.csv`` (one vector per line, an optional header line):
  each row becomes one binary record (SKMV), partition 0, offset = row;
- ``.npz``, ``.jsonl`` / ``.json`` / ``.ndjson``: as ``streamkm produce --file`` sends them;
- a topic (``kafka:TOPIC``) between two offsets or timestamps: dumped by the same code as
  ``streamkm record`` (no consumer group) into a temporary recording first.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamkm.loadgen.recording import Record, file_records, read_positioned
from streamkm.loadgen.sources import vector_records

__all__ = ["ReplayRecord", "FileSource", "open_source", "SUFFIXES", "TOPIC_PREFIX"]

#: File types ``open_source`` reads.
SUFFIXES = (".skmrec", ".npy", ".csv", ".npz", ".jsonl", ".json", ".ndjson")
#: ``kafka:TOPIC`` names a topic as the source.
TOPIC_PREFIX = "kafka:"


@dataclass(slots=True)
class ReplayRecord:
    """One source record, shaped like a consumed aiokafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]  # a recorded null header value is b"" here
    timestamp: int  # epoch ms; -1 if the source has none


class FileSource:
    """A replay file, read once to find its partitions and counts.

    Parameters
    ----------
    path : str or Path
    topic : str
        The topic name the records are given (the pipeline's input topic).
    fmt : str
        Vector encoding of ``.npz`` rows (``binary`` or ``json``).
    """

    def __init__(self, path: str | Path, *, topic: str, fmt: str = "binary"):
        self.path = Path(path)
        self.topic = topic
        self.fmt = fmt
        suffix = self.path.suffix.lower()
        if suffix not in SUFFIXES:
            raise ValueError(f"unsupported replay source {self.path.name!r}: expected a file ending in "
                             f"{', '.join(SUFFIXES)}, or {TOPIC_PREFIX}TOPIC")
        if not self.path.is_file():
            raise ValueError(f"replay source {self.path} does not exist or is not a file")
        self.suffix = suffix
        self._array: np.ndarray | None = None
        if suffix in (".npy", ".csv"):
            self._array = _load_array(self.path)
        counts: dict[int, int] = {}
        for p, _, _ in self._positioned():
            counts[p] = counts.get(p, 0) + 1
        #: Records per source partition.
        self.counts = dict(sorted(counts.items()))

    @property
    def description(self) -> str:
        return str(self.path)

    @property
    def total(self) -> int:
        """Records in the file."""
        return sum(self.counts.values())

    def partitions(self) -> list[int]:
        """The source partitions, ascending."""
        return list(self.counts)

    def records(self, partition: int) -> Iterator[ReplayRecord]:
        """The records of one partition, in file (offset) order."""
        last = -1
        for p, off, rec in self._positioned():
            if p != partition:
                continue
            if off <= last:
                raise ValueError(f"{self.path}: partition {p} offsets go backwards ({last} then {off})")
            last = off
            yield ReplayRecord(self.topic, p, off, rec.key, rec.value,
                               tuple((name, b"" if hv is None else hv) for name, hv in rec.headers),
                               -1 if rec.timestamp_ms is None else int(rec.timestamp_ms))

    def _positioned(self) -> Iterator[tuple[int, int, Record]]:
        if self.suffix == ".skmrec":
            yield from read_positioned(self.path)
        elif self._array is not None:
            for i, rec in enumerate(vector_records(self._array, fmt="binary")):
                yield 0, i, rec
        else:
            for i, rec in enumerate(file_records(self.path, fmt=self.fmt)):
                yield 0, i, rec


def _load_array(path: Path) -> np.ndarray:
    """An (n, d) float array from ``.npy`` (no pickle) or CSV (an optional header line)."""
    if path.suffix.lower() == ".npy":
        try:
            X = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ValueError(f"{path}: not a readable .npy array ({exc})") from None
    else:
        with open(path, encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
        skip = 0
        try:
            [float(t) for t in first.split(",") if t.strip()]
        except ValueError:
            skip = 1  # a header line
        try:
            X = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2, dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"{path}: not a CSV of numbers ({exc})") from None
    if X.ndim != 2 or X.shape[1] == 0:
        raise ValueError(f"{path}: expected an (n, d) array of vectors, got shape {X.shape}")
    if X.dtype.kind not in "fiu":
        raise ValueError(f"{path}: expected numbers, got dtype {X.dtype}")
    return X


def open_source(source: str, *, topic: str, fmt: str = "binary", **_: Any) -> FileSource:
    """The file source for *source* (a ``kafka:`` source is dumped to a file by the caller first)."""
    return FileSource(source, topic=topic, fmt=fmt)

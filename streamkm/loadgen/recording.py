"""Recorded record streams: the ``.skmrec`` format and replay of recorded files.

:class:`RecordingWriter` and :func:`read_recording` write and read ``.skmrec``
files (what ``streamkm record`` produces); :func:`file_records` replays a
``.skmrec``, ``.npz`` or JSON-lines file as a stream of :class:`Record`.

Recording format (``.skmrec``), all integers little-endian: a file header
``b"SKMREC"`` + ``uint16`` version (1 or 2), then per record::

    int64  timestamp_ms   (-1: none)
    int32  key_length     (-1: null key)
    int32  value_length   (-1: null value)
    uint16 header_count
    int32  partition      (version 2 only)
    int64  offset         (version 2 only)
    key bytes, value bytes
    header_count x (uint16 name_length, name utf-8, int32 value_length, value)

Records are stored in the order they were read (per partition in offset order,
partitions in ascending order), so a replay into a single-partition topic
reproduces one partition's stream exactly. Version 2 (what ``streamkm record``
writes) also keeps each record's source partition and offset, so ``streamkm
replay`` can take the partitions as the live daemon does; :func:`read_positioned`
reads them (a version-1 file is one partition, offsets counted from 0).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

__all__ = [
    "Record",
    "RecordingWriter",
    "read_recording",
    "read_positioned",
    "file_records",
    "RECORDING_MAGIC",
    "RECORDING_VERSION",
]

RECORDING_MAGIC = b"SKMREC"
RECORDING_VERSION = 2
_FILE_HEADER = struct.Struct("<6sH")
_REC_HEADER = struct.Struct("<qiiH")
_POSITION = struct.Struct("<iq")
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")


class Record(NamedTuple):
    """One Kafka record to send (or as read back from a recording)."""

    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()


class RecordingWriter:
    """Write :class:`Record` objects to a ``.skmrec`` file (see module docs).

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "demo.skmrec")
    >>> with RecordingWriter(path) as w:
    ...     w.write(Record(b"k", b"v", 1000, (("h", b"x"),)))
    ...     w.write(Record(None, b"w"))
    >>> list(read_recording(path))
    [Record(key=b'k', value=b'v', timestamp_ms=1000, headers=(('h', b'x'),)), Record(key=None, value=b'w', timestamp_ms=None, headers=())]
    """  # noqa: E501 -- a doctest's expected output is one line

    def __init__(self, path: str | Path, *, positions: bool = False) -> None:
        self.path = Path(path)
        self.positions = bool(positions)
        self._fh: BinaryIO | None = open(self.path, "wb")
        self._fh.write(_FILE_HEADER.pack(RECORDING_MAGIC, 2 if self.positions else 1))
        self.count = 0

    def write(self, rec: Record, *, partition: int | None = None, offset: int | None = None) -> None:
        """Append *rec*; a writer made with ``positions=True`` needs its *partition* and *offset*."""
        if self._fh is None:
            raise ValueError(f"recording {self.path} is closed")
        if self.positions and (partition is None or offset is None):
            raise ValueError("this recording keeps positions: pass the record's partition and offset")
        if self.positions and not (0 <= int(partition) < 2**31 and 0 <= int(offset) < 2**63):  # type: ignore[arg-type]
            raise ValueError(f"partition and offset must be non-negative, got {partition} and {offset}")
        key, value, ts, headers = rec
        for name, v in (("key", key), ("value", value)):
            if v is not None and not isinstance(v, (bytes, bytearray, memoryview)):
                raise TypeError(f"record {name} must be bytes or None, got {type(v).__name__}")
        if len(headers) > 0xFFFF:
            raise ValueError(f"at most 65535 headers per record, got {len(headers)}")
        parts = [_REC_HEADER.pack(-1 if ts is None else int(ts),
                                  -1 if key is None else len(key),
                                  -1 if value is None else len(value),
                                  len(headers))]
        if self.positions:
            parts.append(_POSITION.pack(int(partition), int(offset)))  # type: ignore[arg-type]
        if key is not None:
            parts.append(bytes(key))
        if value is not None:
            parts.append(bytes(value))
        for name, hv in headers:
            nb = name.encode("utf-8")
            parts += [_U16.pack(len(nb)), nb]
            parts += [_I32.pack(-1), b""] if hv is None else [_I32.pack(len(hv)), bytes(hv)]
        self._fh.write(b"".join(parts))
        self.count += 1

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.flush()
            fh.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_exact(fh: BinaryIO, n: int, path: Path, what: str) -> bytes:
    b = fh.read(n)
    if len(b) != n:
        raise ValueError(f"{path}: truncated recording while reading {what} "
                         f"(expected {n} bytes, got {len(b)})")
    return b


def read_recording(path: str | Path) -> Iterator[Record]:
    """Yield the records of a ``.skmrec`` file in order (version 1 or 2).

    Raises ValueError naming the file on a bad magic, an unsupported version or
    a truncated record.
    """
    for _, _, rec in read_positioned(path):
        yield rec


def read_positioned(path: str | Path) -> Iterator[tuple[int, int, Record]]:
    """Yield ``(partition, offset, record)`` of a ``.skmrec`` file in order.

    A version-1 file holds no positions: its records are partition 0 at offsets
    0, 1, 2, ... Raises ValueError naming the file on a bad magic, an unsupported
    version or a truncated record.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(_FILE_HEADER.size)
        if len(head) != _FILE_HEADER.size or head[:6] != RECORDING_MAGIC:
            raise ValueError(f"{path}: not a streamkm recording (bad magic {head[:6]!r}, "
                             f"expected {RECORDING_MAGIC!r})")
        _, version = _FILE_HEADER.unpack(head)
        if version not in (1, 2):
            raise ValueError(f"{path}: unsupported recording version {version}, "
                             f"expected 1 or {RECORDING_VERSION}")
        index = 0
        while True:
            rh = fh.read(_REC_HEADER.size)
            if not rh:
                return
            if len(rh) != _REC_HEADER.size:
                raise ValueError(f"{path}: truncated record header")
            ts, klen, vlen, nh = _REC_HEADER.unpack(rh)
            if version == 2:
                partition, offset = _POSITION.unpack(_read_exact(fh, _POSITION.size, path, "record position"))
                if partition < 0 or offset < 0:
                    raise ValueError(f"{path}: record {index} has a negative partition or offset "
                                     f"({partition}, {offset})")
            else:
                partition, offset = 0, index
            key = None if klen < 0 else _read_exact(fh, klen, path, "key")
            value = None if vlen < 0 else _read_exact(fh, vlen, path, "value")
            headers: list[tuple[str, bytes | None]] = []
            for _ in range(nh):
                (nlen,) = _U16.unpack(_read_exact(fh, 2, path, "header name length"))
                name = _read_exact(fh, nlen, path, "header name").decode("utf-8")
                (hlen,) = _I32.unpack(_read_exact(fh, 4, path, "header value length"))
                hv = None if hlen < 0 else _read_exact(fh, hlen, path, "header value")
                headers.append((name, hv))
            yield partition, offset, Record(key, value, None if ts < 0 else ts, tuple(headers))
            index += 1


def file_records(
    path: str | Path,
    *,
    fmt: str = "binary",
    rows_per_record: int = 1,
) -> Iterator[Record]:
    """Replay a recorded file (``.npz``, ``.jsonl``/``.json``, ``.skmrec``).

    - ``.npz`` (loaded with ``allow_pickle=False``): ``X`` (n, d) vectors encoded
      with ``fmt``/``rows_per_record``; if it also holds ``keys`` (n,) and
      ``ts`` (n,), rows are sent as JSON events keyed by ``keys`` instead.
    - JSON lines: each non-empty line is sent verbatim as a record value; the
      record key is the line's ``"key"`` field when it is a JSON object that
      has one.
    - ``.skmrec``: records (key, value, timestamp, headers) exactly as
      recorded by :func:`streamkm.loadgen.record`.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"replay file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".skmrec":
        yield from read_recording(path)
    elif suffix == ".npz":
        yield from _npz_records(path, fmt=fmt, rows_per_record=rows_per_record)
    elif suffix in (".jsonl", ".json", ".ndjson"):
        with open(path, "rb") as fh:
            for raw in fh:
                line = raw.strip()
                if not line:
                    continue
                key = None
                try:
                    obj = json.loads(line)
                except ValueError:
                    obj = None  # bad lines are replayed verbatim: the DLQ path is part of replay
                if isinstance(obj, dict) and "key" in obj and obj["key"] is not None:
                    key = str(obj["key"]).encode("utf-8")
                yield Record(key, line)
    else:
        raise ValueError(f"unsupported replay file type {suffix!r} for {path}; "
                         "expected .npz, .jsonl/.json/.ndjson or .skmrec")


def _npz_records(path: Path, *, fmt: str, rows_per_record: int) -> Iterator[Record]:
    from streamkm import codec
    from streamkm.loadgen.sources import vector_records  # sources imports Record from here

    with np.load(path, allow_pickle=False) as data:
        if "X" not in data.files:
            raise ValueError(f"{path}: .npz replay files need an 'X' array, found {data.files}")
        X = np.asarray(data["X"])
        keys = data["keys"] if "keys" in data.files else None
        ts = data["ts"] if "ts" in data.files else None
    if keys is None or ts is None:
        if keys is not None or ts is not None:
            raise ValueError(f"{path}: event replay needs both 'keys' and 'ts', found only one")
        yield from vector_records(X, fmt=fmt, rows_per_record=rows_per_record)
        return
    if not (len(keys) == len(ts) == len(X)):
        raise ValueError(f"{path}: keys, ts and X lengths differ: "
                         f"{len(keys)}, {len(ts)}, {len(X)}")
    X = np.asarray(X, dtype=np.float32)
    for i in range(len(X)):
        k = str(keys[i])
        yield Record(k.encode("utf-8"), codec.encode_event_json(k, float(ts[i]), X[i]))

"""Output records of the assignments topic (``output.topic``), as JSON or as binary rows.

Both pipelines build their output values here, in the format ``output.format`` names:

- ``"json"`` (the default): one compact JSON object per output, the shapes
  ``streamkm/schemas/output.schema.json`` defines;
- ``"binary"``: the 16-byte SKMV header of :mod:`streamkm.codec.binary` followed by
  float64 rows, one row per clustered input row, columns fixed by a layout code.

Binary is an extension of the SKMV vector format: the same header ``<4sBBHII``
(magic ``b"SKMV"``, version 1, dtype, flags, rows, dim), with dtype code 2 (float64,
where input records have 1 = float32) and the flags field, reserved in input
records, holding the layout: 1 = a vectors record segment (columns
:data:`VECTOR_COLUMNS`), 2 = a window (columns :data:`WINDOW_COLUMNS`). float64 holds
every integer column exactly (offsets, versions and ids below 2**53); a null
``sq_distance`` is NaN. The vectors input decoder rejects such a record as
``dtype``, so outputs fed back as input are dead-lettered, never misread. The JSON
form names the input topic; the binary form does not (it is ``kafka.vectors_topic``).
Layouts and examples: docs/formats.md ("Output records").

:func:`decode_output` reads either format back into the JSON form.

Examples
--------
>>> import numpy as np
>>> meta = {"partition": np.array([0, 0, 0]), "offset": np.array([7, 8, 8]), "row": np.array([0, 0, 1])}
>>> labels, sq = np.array([2, 0, 1]), np.array([0.5, 1.25, np.nan])
>>> outs = vector_outputs("json", "in", meta, [b"a", b"b", b"b"], labels, sq, 4)
>>> [o.value.decode() for o in outs]  # doctest: +NORMALIZE_WHITESPACE
['{"model_version":4,"topic":"in","partition":0,"offset":7,"cluster":2,"sq_distance":0.5}',
 '{"model_version":4,"topic":"in","partition":0,"offset":8,"row":0,"clusters":[0,1],"sq_distances":[1.25,null]}']
>>> binary = vector_outputs("binary", "in", meta, [b"a", b"b", b"b"], labels, sq, 4)
>>> len(binary[1].value), binary[1].value[:4]
(112, b'SKMV')
>>> decode_output(binary[1].value)
{'model_version': 4, 'partition': 0, 'offset': 8, 'row': 0, 'clusters': [0, 1], 'sq_distances': [1.25, None]}
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streamkm.codec import HEADER_SIZE, MAGIC, VERSION
from streamkm.pipeline.base import OutputRecord, finite_or_none, json_bytes

__all__ = [
    "OUTPUT_FORMATS",
    "DTYPE_FLOAT64",
    "LAYOUT_VECTORS",
    "LAYOUT_WINDOWS",
    "LAYOUTS",
    "VECTOR_COLUMNS",
    "WINDOW_COLUMNS",
    "check_output_format",
    "encode_rows",
    "vector_outputs",
    "window_outputs",
    "decode_output",
]

#: Values of ``output.format``.
OUTPUT_FORMATS = ("json", "binary")
#: SKMV dtype code of the binary outputs' payload (input records use 1 = float32).
DTYPE_FLOAT64 = 2
#: Layout codes (the SKMV flags field of a binary output).
LAYOUT_VECTORS = 1
LAYOUT_WINDOWS = 2
#: Columns of a vectors output row: one row per input row of the record segment.
VECTOR_COLUMNS = ("cluster", "sq_distance", "model_version", "partition", "offset", "row")
#: Columns of a window output row (one row per window).
WINDOW_COLUMNS = ("cluster", "sq_distance", "model_version", "window_end_ts", "length")
LAYOUTS = {LAYOUT_VECTORS: VECTOR_COLUMNS, LAYOUT_WINDOWS: WINDOW_COLUMNS}

# The SKMV header of streamkm.codec.binary: magic, version, dtype, flags, rows, dim.
_HEADER = struct.Struct("<4sBBHII")
assert _HEADER.size == HEADER_SIZE


def check_output_format(fmt: str) -> str:
    """*fmt* if it is one of :data:`OUTPUT_FORMATS`, else ValueError."""
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"output format must be 'json' or 'binary', got {fmt!r}")
    return fmt


def encode_rows(layout: int, rows: NDArray[Any]) -> bytes:
    """One binary output record: the SKMV header (dtype 2, flags = *layout*) and *rows* as float64.

    Parameters
    ----------
    layout : {1, 2}
        :data:`LAYOUT_VECTORS` or :data:`LAYOUT_WINDOWS`.
    rows : ndarray of shape (n, len(LAYOUTS[layout]))
        n >= 1.

    Returns
    -------
    bytes
        ``16 + 8*n*dim`` bytes.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown output layout {layout!r}")
    a = np.ascontiguousarray(rows, dtype="<f8")
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] != len(LAYOUTS[layout]):
        raise ValueError(f"layout {layout} needs rows of shape (n >= 1, {len(LAYOUTS[layout])}), got {a.shape}")
    return _HEADER.pack(MAGIC, VERSION, DTYPE_FLOAT64, layout, a.shape[0], a.shape[1]) + a.tobytes()


def _nan_if_not_finite(v: NDArray[Any]) -> NDArray[np.float64]:
    d = np.asarray(v, dtype=np.float64)
    return np.where(np.isfinite(d), d, np.nan)


def vector_outputs(fmt: str, topic: str | None, meta: Mapping[str, NDArray[Any]], keys: Sequence[bytes | None],
                   labels: NDArray[Any], min_sq: NDArray[Any], version: int) -> list[OutputRecord]:
    """The outputs of one chunk of the vectors pipeline: one per record *segment*.

    A segment is a run of consecutive rows of one (partition, offset) absorbed
    together; a record whose rows were all absorbed in one chunk is one segment.
    A one-row segment at row 0 is written with ``cluster``/``sq_distance``, any
    other with ``row`` (its first row index), ``clusters`` and ``sq_distances``.

    Parameters
    ----------
    fmt : {"json", "binary"}
    topic : str or None
        Input topic (named in the JSON form only).
    meta : dict
        ``partition``, ``offset`` and ``row`` columns, each (n,).
    keys : sequence of bytes or None
        Kafka key of each row's record (the output's key).
    labels : ndarray of shape (n,)
        Cluster of each row (-1: the model was not initialized).
    min_sq : ndarray of shape (n,)
        Squared distance to that cluster's centre (NaN: none).
    version : int
        Model version the rows were assigned with.
    """
    part, offs, row = meta["partition"], meta["offset"], meta["row"]
    n = int(part.shape[0])
    starts = np.flatnonzero(np.r_[True, (part[1:] != part[:-1]) | (offs[1:] != offs[:-1])])
    ends = np.r_[starts[1:], n]
    out: list[OutputRecord] = []
    if fmt == "binary":
        cols = np.column_stack([np.asarray(labels, dtype=np.float64), _nan_if_not_finite(min_sq),
                                np.full(n, float(version)), np.asarray(part, dtype=np.float64),
                                np.asarray(offs, dtype=np.float64), np.asarray(row, dtype=np.float64)])
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            out.append(OutputRecord(keys[s], encode_rows(LAYOUT_VECTORS, cols[s:e])))
        return out
    lab = np.asarray(labels).tolist()
    dist = [finite_or_none(v) for v in np.asarray(min_sq, dtype=np.float64).tolist()]
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        base: dict[str, Any] = {"model_version": version, "topic": topic,
                                "partition": int(part[s]), "offset": int(offs[s])}
        if e - s == 1 and row[s] == 0:
            base.update(cluster=int(lab[s]), sq_distance=dist[s])
        else:
            base.update(row=int(row[s]), clusters=[int(v) for v in lab[s:e]], sq_distances=dist[s:e])
        out.append(OutputRecord(keys[s], json_bytes(base)))
    return out


def window_outputs(fmt: str, meta: Mapping[str, NDArray[Any]], keys: Sequence[bytes | None],
                   labels: NDArray[Any], min_sq: NDArray[Any], version: int) -> list[OutputRecord]:
    """The outputs of one chunk of the sequence pipeline: one per window, keyed by its key.

    *meta* holds the ``window_end_ts`` and ``length`` columns; the rest as for
    :func:`vector_outputs`.
    """
    n = int(np.asarray(labels).shape[0])
    if fmt == "binary":
        cols = np.column_stack([np.asarray(labels, dtype=np.float64), _nan_if_not_finite(min_sq),
                                np.full(n, float(version)), np.asarray(meta["window_end_ts"], dtype=np.float64),
                                np.asarray(meta["length"], dtype=np.float64)])
        return [OutputRecord(keys[i], encode_rows(LAYOUT_WINDOWS, cols[i:i + 1])) for i in range(n)]
    lab = np.asarray(labels).tolist()
    dist = np.asarray(min_sq, dtype=np.float64).tolist()
    ends = np.asarray(meta["window_end_ts"]).tolist()
    lengths = np.asarray(meta["length"]).tolist()
    return [
        OutputRecord(keys[i], json_bytes({
            "cluster": int(lab[i]), "sq_distance": finite_or_none(dist[i]),
            "model_version": version, "window_end_ts": float(ends[i]),
            "length": int(lengths[i]),
        }))
        for i in range(n)
    ]


def _int_column(rows: NDArray[np.float64], j: int, name: str) -> list[int]:
    col = rows[:, j]
    if not (np.isfinite(col).all() and (col == np.round(col)).all()):
        raise ValueError(f"binary output column {name!r} holds non-integral values")
    return [int(v) for v in col.tolist()]


def decode_output(value: bytes) -> dict[str, Any]:
    """An output record's value, JSON or binary, in the JSON form.

    The binary form has no ``topic``; everything else is the same object the JSON
    format carries (NaN distances as None). ValueError names what is wrong.
    """
    v = bytes(value)
    if not v.startswith(MAGIC):
        try:
            obj = json.loads(v)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"neither a binary output (no {MAGIC!r} magic) nor JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"a JSON output is an object, got {type(obj).__name__}")
        return obj
    if len(v) < HEADER_SIZE:
        raise ValueError(f"binary output of {len(v)} bytes is shorter than the {HEADER_SIZE}-byte header")
    _, version, dtype, layout, n, d = _HEADER.unpack_from(v)
    if version != VERSION:
        raise ValueError(f"binary format version {version} is not supported (expected {VERSION})")
    if dtype != DTYPE_FLOAT64:
        raise ValueError(f"binary output dtype code {dtype} (expected {DTYPE_FLOAT64} = float64)")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown binary output layout {layout}")
    columns = LAYOUTS[layout]
    if d != len(columns) or n < 1:
        raise ValueError(f"layout {layout} has {len(columns)} columns and at least one row, got {n}x{d}")
    if len(v) != HEADER_SIZE + 8 * n * d:
        raise ValueError(f"header says {n}x{d} float64 ({HEADER_SIZE + 8 * n * d} bytes), record has {len(v)}")
    rows = np.frombuffer(v, dtype="<f8", offset=HEADER_SIZE).reshape(n, d).astype(np.float64)
    clusters = _int_column(rows, 0, "cluster")
    dist = [None if np.isnan(x) else float(x) for x in rows[:, 1].tolist()]
    versions = set(_int_column(rows, 2, "model_version"))
    if len(versions) != 1:
        raise ValueError(f"one output has one model version, got {sorted(versions)}")
    model_version = versions.pop()
    if layout == LAYOUT_WINDOWS:
        if n != 1:
            raise ValueError(f"a window output has one row, got {n}")
        return {"cluster": clusters[0], "sq_distance": dist[0], "model_version": model_version,
                "window_end_ts": float(rows[0, 3]), "length": _int_column(rows, 4, "length")[0]}
    part, offs, row = (_int_column(rows, j, name) for j, name in ((3, "partition"), (4, "offset"), (5, "row")))
    if len(set(part)) != 1 or len(set(offs)) != 1 or row != list(range(row[0], row[0] + n)):
        raise ValueError("a vectors output holds consecutive rows of one record")
    base: dict[str, Any] = {"model_version": model_version, "partition": part[0], "offset": offs[0]}
    if n == 1 and row[0] == 0:
        base.update(cluster=clusters[0], sq_distance=dist[0])
    else:
        base.update(row=row[0], clusters=clusters, sq_distances=dist)
    return base

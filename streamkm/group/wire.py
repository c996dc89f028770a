"""The byte format of the group model's messages: a kind, a JSON tree and raw arrays.

::

    b"SKMG" | u8 format version | u32 LE header length | u32 LE CRC-32 of header + payload
    | header (UTF-8 JSON: {"kind", "tree", "arrays": {name: {"dtype", "shape", "offset"}}})
    | payload (the arrays, C order, little-endian, back to back)

No pickle: arrays are numeric or boolean, everything else is JSON. Decoding never
raises on bad bytes; it returns a :class:`WireError` naming the problem.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamkm.statetree import StateTreeError, join_tree, split_tree

__all__ = ["MAGIC", "WIRE_VERSION", "WireError", "encode", "decode"]

MAGIC = b"SKMG"
WIRE_VERSION = 1
_HEAD = struct.Struct("<4sBII")


@dataclass(frozen=True, slots=True)
class WireError:
    """Why bytes are not a group message (a value, never raised)."""

    reason: str

    def __str__(self) -> str:
        return self.reason


def encode(kind: str, state: dict[str, Any]) -> bytes:
    """Serialise a state tree under *kind*.

    Raises TypeError for leaves that would need pickle (a programming error, not
    bad input).
    """
    arrays: dict[str, np.ndarray] = {}
    table: dict[str, dict[str, Any]] = {}
    tree = split_tree(state, "", arrays, table)
    # The arrays' own buffers, copied once, by the final join (a chunk's rows are most of a
    # stats message: four copies of them and a CRC over a concatenation cost 0.6 ms per 256 KiB).
    chunks: list[memoryview] = []
    offset = 0
    desc: dict[str, dict[str, Any]] = {}
    for name, arr in arrays.items():
        a = np.require(arr.astype(arr.dtype.newbyteorder("<"), copy=False), requirements="C")  # keeps 0-d
        data = memoryview(a.reshape(-1).view(np.uint8).data)
        desc[name] = {"dtype": a.dtype.str, "shape": list(a.shape), "offset": offset}
        chunks.append(data)
        offset += data.nbytes
    header = json.dumps({"kind": kind, "tree": tree, "arrays": desc}, separators=(",", ":"),
                        allow_nan=False).encode()
    crc = zlib.crc32(header)
    for data in chunks:
        crc = zlib.crc32(data, crc)
    return b"".join([_HEAD.pack(MAGIC, WIRE_VERSION, len(header), crc), header, *chunks])


def decode(data: bytes | None) -> tuple[str, dict[str, Any]] | WireError:
    """``(kind, state)`` from :func:`encode`'s bytes, or a :class:`WireError`."""
    if data is None:
        return WireError("no value")
    if len(data) < _HEAD.size:
        return WireError(f"{len(data)} bytes is shorter than the {_HEAD.size}-byte header")
    magic, version, hlen, crc = _HEAD.unpack_from(data)
    if magic != MAGIC:
        return WireError(f"bad magic {magic!r} (expected {MAGIC!r})")
    if version != WIRE_VERSION:
        return WireError(f"unsupported format version {version} (this build reads {WIRE_VERSION})")
    body = memoryview(data)[_HEAD.size:]
    if hlen > len(body):
        return WireError(f"header length {hlen} exceeds the {len(body)} bytes left")
    if zlib.crc32(body) != crc:
        return WireError("CRC-32 mismatch (corrupted message)")
    try:
        header = json.loads(bytes(body[:hlen]).decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return WireError(f"header is not JSON: {type(exc).__name__}")
    if not isinstance(header, dict) or not isinstance(header.get("kind"), str) \
            or not isinstance(header.get("arrays"), dict) or not isinstance(header.get("tree"), dict):
        return WireError("header lacks kind, tree or arrays")
    payload = body[hlen:]
    arrays: dict[str, np.ndarray] = {}
    for name, d in header["arrays"].items():
        got = _array(name, d, payload)
        if isinstance(got, WireError):
            return got
        arrays[name] = got
    try:
        state = join_tree(header["tree"], arrays)
    except (StateTreeError, RecursionError) as exc:
        return WireError(str(exc) if isinstance(exc, StateTreeError) else "tree nested too deeply")
    return header["kind"], state


def _array(name: str, d: Any, payload: memoryview) -> np.ndarray | WireError:
    """One array from its description, bounds-checked in Python integers (no overflow)."""
    if not isinstance(d, dict):
        return WireError(f"array {name!r}: bad description")
    shape_in, off = d.get("shape"), d.get("offset")
    if not isinstance(shape_in, list) or not all(type(n) is int for n in shape_in) or type(off) is not int:
        return WireError(f"array {name!r}: shape and offset must be integers")
    try:
        if not isinstance(d.get("dtype"), str):
            raise TypeError
        dt = np.dtype(d["dtype"])
    except (TypeError, ValueError):
        return WireError(f"array {name!r}: bad dtype {d.get('dtype')!r}")
    if dt.kind not in "biufc" or dt.hasobject or len(shape_in) > 32:
        return WireError(f"array {name!r}: dtype {dt} or rank {len(shape_in)} not allowed")
    if any(n < 0 for n in shape_in) or off < 0:
        return WireError(f"array {name!r}: negative shape or offset")
    count = 1
    for n in shape_in:
        count *= n
    nbytes = count * dt.itemsize
    if off + nbytes > len(payload):
        return WireError(f"array {name!r}: {nbytes} bytes at {off} exceed the {len(payload)}-byte payload")
    arr = np.frombuffer(payload, dtype=dt, count=count, offset=off) if count else np.empty(0, dtype=dt)
    return arr.reshape(tuple(shape_in)).astype(dt.newbyteorder("="), copy=True)

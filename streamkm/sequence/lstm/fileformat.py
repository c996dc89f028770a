"""The LSTM weights file: an ``.npz`` (no pickle) of torch-named parameters plus a JSON header.

Writes go through :func:`streamkm.atomic.atomic_write`, so a reader sees the old
file or the whole new one. The layout is documented in docs/lstm.md, section 6.

Since ``format_version`` 2 the archive is sealed: its zip comment (the last bytes of
the file, which zip readers, ``np.load`` included, ignore) is ``streamkm-sha256:``
followed by the hex sha256 of every byte before the digest. :func:`read_file`
refuses a file larger than :data:`MAX_FILE_BYTES` from its size, before reading it,
and checks the seal before ``np.load`` parses anything. A file without a seal is
parsed only if its header says ``format_version`` 1 (files written before the seal
existed, still verified by their content hash in ``LSTMEncoder.load``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streamkm.atomic import atomic_write
from streamkm.sequence.lstm.layout import param_names

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "HEADER_KEY", "MAX_FILE_BYTES", "content_hash", "encode_header",
           "seal", "write_file", "read_file", "read_limited"]

FORMAT_NAME = "streamkm.lstm"
#: 2: the file is sealed with a sha256 in its zip comment (1: no seal; still read).
FORMAT_VERSION = 2
#: Name of the uint8 array holding the UTF-8 JSON header.
HEADER_KEY = "__header__"
#: Largest weights file read (1 GiB); a larger one is refused before it is read.
MAX_FILE_BYTES = 1 << 30

_EOCD = b"PK\x05\x06"  # zip end-of-central-directory record: 22 bytes, then the comment
_EOCD_SIZE = 22
_SEAL_PREFIX = b"streamkm-sha256:"
_SEAL_SIZE = len(_SEAL_PREFIX) + 64


def content_hash(sizes: Mapping[str, Any], params: Mapping[str, NDArray[Any]]) -> str:
    """sha256 hex digest of the sizes and the parameter bytes in torch's order.

    Parameters
    ----------
    sizes : mapping
        ``input_size``, ``hidden_size``, ``num_layers``, ``bidirectional``;
        hashed first as ``json.dumps(sizes, sort_keys=True)``.
    params : mapping of torch name to ndarray
        Then, per parameter in :func:`~streamkm.sequence.lstm.layout.param_names`
        order: ``"\\n{name}:{dtype.str}:{list(shape)}\\n"`` and the little-endian
        C-order bytes.
    """
    h = hashlib.sha256()
    h.update(json.dumps(sizes, sort_keys=True).encode("utf-8"))
    for name in param_names(sizes["num_layers"], sizes["bidirectional"]):
        arr = np.asarray(params[name])
        le = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        h.update(f"\n{name}:{le.dtype.str}:{list(arr.shape)}\n".encode())
        h.update(np.ascontiguousarray(le).tobytes())
    return h.hexdigest()


def encode_header(header: Mapping[str, Any]) -> bytes:
    """The header as stored: sorted-key JSON, UTF-8 (TypeError/ValueError if not JSON-able)."""
    return json.dumps(header, sort_keys=True, allow_nan=False).encode("utf-8")


def seal(npz: bytes) -> bytes:
    """*npz* (an archive without a zip comment) with its seal as the comment.

    The comment length in the end record is set to the seal's first, so the digest covers
    every byte of the result before the 64 hex digits, the end record included.

    Raises
    ------
    ValueError
        If *npz* does not end with an end record without a comment.
    """
    if len(npz) < _EOCD_SIZE or npz[-_EOCD_SIZE:-_EOCD_SIZE + 4] != _EOCD or npz[-2:] != b"\x00\x00":
        raise ValueError("cannot seal: not a zip archive ending with an end record without a comment")
    head = npz[:-2] + _SEAL_SIZE.to_bytes(2, "little") + _SEAL_PREFIX
    return head + hashlib.sha256(head).hexdigest().encode("ascii")


def _check_seal(data: bytes, path: Path) -> bool:
    """True if *data* is sealed and the seal matches, False if it ends like an unsealed zip;
    ValueError for anything else (a mismatch, a damaged end: refused before parsing)."""
    end = len(data) - _EOCD_SIZE - _SEAL_SIZE
    if (end >= 0 and data[end:end + 4] == _EOCD
            and data[end + _EOCD_SIZE - 2:end + _EOCD_SIZE] == _SEAL_SIZE.to_bytes(2, "little")
            and data[end + _EOCD_SIZE:end + _EOCD_SIZE + len(_SEAL_PREFIX)] == _SEAL_PREFIX):
        recorded = data[-64:]
        actual = hashlib.sha256(data[:-64]).hexdigest().encode("ascii")
        if recorded != actual:
            raise ValueError(f"{path}: checksum mismatch: the file records sha256 "
                             f"{recorded[:12].decode('ascii', 'replace')}..., its bytes hash to "
                             f"{actual[:12].decode('ascii')}... (corrupted or edited?); not parsed")
        return True
    if len(data) >= _EOCD_SIZE and data[-_EOCD_SIZE:-_EOCD_SIZE + 4] == _EOCD and data[-2:] == b"\x00\x00":
        return False
    raise ValueError(f"{path}: corrupted, truncated or not an LSTM weights .npz file: it ends with "
                     "neither a streamkm seal nor a zip end record; not parsed")


def read_limited(path: str | os.PathLike[str], limit: int | None = None, *, what: str = "LSTM weights file"
                 ) -> bytes:
    """The bytes of *path*, refused by its size before reading if it exceeds *limit*
    (default :data:`MAX_FILE_BYTES`).

    Raises
    ------
    FileNotFoundError
        If *path* does not exist.
    ValueError
        If it is larger than *limit* (``"{path}: {size} bytes, more than the limit of
        {limit} bytes for {what}s: not read"``), grows while being read, or is unreadable;
        or if *limit* is not an int >= 1.
    """
    limit = MAX_FILE_BYTES if limit is None else limit
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an int >= 1, got {limit!r}")
    path = Path(path)
    try:
        with open(path, "rb") as f:  # buffered: read(n) loops over short reads up to n or EOF
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise ValueError(f"{path}: {size} bytes, more than the limit of {limit} bytes for "
                                 f"{what}s: not read")
            data = f.read(size + 1)  # not read(limit + 1): that allocates the whole limit
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a {what}") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    if len(data) > size:
        raise ValueError(f"{path}: grew while being read ({size} bytes, then more)")
    return data


def write_file(path: str | os.PathLike[str], header_bytes: bytes, params: Mapping[str, NDArray[Any]]) -> None:
    """Write ``params`` (in the given order) and the encoded header to ``path``, atomically and durably.

    The ``.npz`` is built in memory, sealed (:func:`seal`) and handed to
    :func:`streamkm.atomic.atomic_write`.

    Raises
    ------
    ValueError
        If the file would be larger than :data:`MAX_FILE_BYTES` (nothing is written:
        :func:`read_file` would refuse it).
    """
    arrays = dict(params)
    arrays[HEADER_KEY] = np.frombuffer(header_bytes, dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
    data = seal(buf.getvalue())
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"{path}: the weights would take {len(data)} bytes, more than the limit of "
                         f"{MAX_FILE_BYTES} bytes for LSTM weights files: not written")
    atomic_write(path, data)


def read_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    """(header, arrays) of a weights file, with clear errors for anything wrong.

    Parameters are not checked against the header here (see ``LSTMEncoder.load``).
    The file is refused before it is read if it exceeds :data:`MAX_FILE_BYTES`, and
    before it is parsed if its seal does not match its bytes.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If it is too large, its seal does not match (checksum mismatch), it is not a
        readable ``.npz`` (``allow_pickle=False``), lacks the header, or the header
        has the wrong format, an unsupported version or lacks a required key, or
        says version 2 or later without a seal.
    """
    path = Path(path)
    data = read_limited(path)
    sealed = _check_seal(data, path)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            arrays = {name: z[name] for name in z.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError) as exc:
        raise ValueError(f"{path}: corrupted, truncated or not an LSTM weights .npz file: "
                         f"{type(exc).__name__}: {exc}") from None
    raw = arrays.pop(HEADER_KEY, None)
    if raw is None:
        raise ValueError(f"{path}: missing {HEADER_KEY!r} (not a streamkm LSTM weights file?)")
    try:
        header = json.loads(np.asarray(raw, dtype=np.uint8).tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: corrupted header: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: not a {FORMAT_NAME} file (header format "
                         f"{header.get('format') if isinstance(header, dict) else header!r})")
    version = header.get("format_version")
    if not isinstance(version, int) or version < 1 or version > FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported format_version {version!r} "
                         f"(this streamkm reads 1..{FORMAT_VERSION})")
    if version >= 2 and not sealed:
        raise ValueError(f"{path}: format_version {version} but no streamkm seal (sha256 zip comment): "
                         "rewritten by another tool or damaged; save it again with LSTMEncoder.save")
    missing = [k for k in ("input_size", "hidden_size", "num_layers", "bidirectional", "content_hash")
               if k not in header]
    if missing:
        raise ValueError(f"{path}: header lacks {missing}")
    return header, arrays

"""The LSTM weights file: an ``.npz`` (no pickle) of torch-named parameters plus a JSON header.

Writes go through :func:`streamkm.atomic.atomic_write`, so a reader sees the old
file or the whole new one. The layout is documented in docs/lstm.md, section 6.
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

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "HEADER_KEY", "content_hash", "encode_header", "write_file",
           "read_file"]

FORMAT_NAME = "streamkm.lstm"
FORMAT_VERSION = 1
#: Name of the uint8 array holding the UTF-8 JSON header.
HEADER_KEY = "__header__"


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


def write_file(path: str | os.PathLike[str], header_bytes: bytes, params: Mapping[str, NDArray[Any]]) -> None:
    """Write ``params`` (in the given order) and the encoded header to ``path``, atomically and durably.

    The ``.npz`` is built in memory and handed to :func:`streamkm.atomic.atomic_write`.
    """
    arrays = dict(params)
    arrays[HEADER_KEY] = np.frombuffer(header_bytes, dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
    atomic_write(path, buf.getvalue())


def read_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    """(header, arrays) of a weights file, with clear errors for anything wrong.

    Parameters are not checked against the header here (see ``LSTMEncoder.load``).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If it is not a readable ``.npz`` (``allow_pickle=False``), lacks the
        header, or the header has the wrong format, an unsupported version or
        lacks a required key.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"LSTM weights file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
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
    missing = [k for k in ("input_size", "hidden_size", "num_layers", "bidirectional", "content_hash")
               if k not in header]
    if missing:
        raise ValueError(f"{path}: header lacks {missing}")
    return header, arrays

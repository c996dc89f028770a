"""The checkpoint store: durable, checksummed checkpoints of a state tree (no pickle).

A checkpoint is a pair of files sharing a sequence number ``N``::

    ckpt-000000000042.npz    every ndarray leaf of the state (np.savez, uncompressed)
    ckpt-000000000042.json   manifest: format_version, sequence, created_at,
                             sha256 and size of the .npz bytes, top-level keys,
                             the array table and the JSON part of the state tree,
                             caller metadata

Writing is atomic: both files are written to temp files in the same
directory (flush + fsync), the .npz is renamed into place, then the manifest
(its rename is the commit point), then the directory is fsynced. A checkpoint
exists iff its manifest exists, matches its own checksum (``manifest_sha256``,
over the rest of the manifest) *and* the .npz matches the manifest's checksum;
anything else (torn temp files, a .npz without manifest, a flipped byte) is
ignored by :meth:`CheckpointStore.load_latest`, which falls back to the
previous valid checkpoint with a warning. One writer per directory.

Both files are size-limited (``max_file_bytes``, default :data:`DEFAULT_MAX_FILE_BYTES`,
the setting ``checkpoint.max_file_bytes``): a file larger than the limit is refused from
its size on disk, before any of it is read, and :meth:`CheckpointStore.save` refuses to
write one it could not read back. The .npz bytes are checked against the manifest's size
and sha256 before ``np.load`` parses them (``allow_pickle=False``).

The worker's state layout inside a checkpoint is described in docs/architecture.md
("Checkpoint layout"). Any nested dict of str keys whose leaves are ndarrays
(numeric/bool dtypes), NumPy scalars, or JSON values (None, bool, int, float, str,
lists) is accepted.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamkm.atomic import TMP_PREFIX, fsync_dir, write_durable
from streamkm.statetree import StateTreeError, join_tree, split_tree

__all__ = ["CheckpointStore", "CheckpointInfo", "CheckpointError", "FORMAT_VERSION", "FAULT_POINTS",
           "DEFAULT_MAX_FILE_BYTES", "has_checkpoints"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: Default size limit of each checkpoint file (.npz and manifest): 2 GiB.
DEFAULT_MAX_FILE_BYTES = 2 << 30
#: Points at which ``fault_hook(point)`` is called during :meth:`CheckpointStore.save`.
FAULT_POINTS = ("before_temp_write", "after_temp_write", "after_data_rename", "after_rename")

_PREFIX = "ckpt-"
_NAME_RE = re.compile(r"^ckpt-(\d{12})\.(npz|json)$")
_TMP_PREFIX = TMP_PREFIX


def has_checkpoints(directory: str | os.PathLike) -> bool:
    """True if *directory* holds checkpoint files (without opening, locking or creating it)."""
    try:
        with os.scandir(os.fspath(directory)) as entries:
            return any(_NAME_RE.match(str(entry.name)) for entry in entries)
    except OSError:  # missing or unreadable: no checkpoints to speak of here
        return False


class CheckpointError(ValueError):
    """A checkpoint file is invalid (bad manifest, checksum mismatch, missing arrays)."""


@dataclass(frozen=True)
class CheckpointInfo:
    """Description of one checkpoint on disk.

    Attributes
    ----------
    sequence : int
        Monotonically increasing number (ordering of checkpoints).
    manifest_path, data_path : Path
    created_at : float
        Unix time the checkpoint was written.
    sha256 : str
        Hex digest of the .npz bytes.
    size_bytes : int
        Total size of .npz + manifest.
    keys : list of str
        Top-level keys of the state.
    metadata : dict
        Caller metadata passed to ``save``.
    """

    sequence: int
    manifest_path: Path
    data_path: Path
    created_at: float
    sha256: str
    size_bytes: int
    keys: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def _manifest_digest(man: dict[str, Any]) -> str:
    """sha256 of the manifest without its own checksum (canonical JSON: the offsets and
    scalar state live here, so they are covered like the .npz)."""
    body = {k: v for k, v in man.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=True).encode()).hexdigest()


# ------------------------------------------------------------------ fs helpers
def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _too_large(path: Path, size: int, limit: int) -> CheckpointError:
    return CheckpointError(f"{path.name}: {size} bytes, more than the limit of {limit} bytes "
                           "(checkpoint.max_file_bytes): not read")


def _read_limited(path: Path, limit: int) -> bytes:
    """The bytes of *path*, or CheckpointError if it holds more than *limit*: judged by its size
    before reading, and by reading at most one byte more than that size (a file that grows
    meanwhile is refused; ``read(limit + 1)`` itself would allocate the whole limit)."""
    try:
        with open(path, "rb") as f:  # buffered: read(n) loops over short reads up to n or EOF
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise _too_large(path, size, limit)
            data = f.read(size + 1)
    except OSError as e:
        raise CheckpointError(f"{path.name}: unreadable: {e}") from None
    if len(data) > size:
        raise CheckpointError(f"{path.name}: grew while being read ({size} bytes, then more)")
    return data


class CheckpointStore:
    """Atomic, checksummed checkpoints in one directory, keeping the newest ``keep``.

    Parameters
    ----------
    directory : str or Path
        Created if missing.
    keep : int
        Number of checkpoints retained after each save (>= 1).
    fault_hook : callable, optional
        ``fault_hook(point)`` is called at each of :data:`FAULT_POINTS` during
        :meth:`save` (tests kill the process there).
    create : bool
        Create ``directory`` if missing (else FileNotFoundError; use False for
        read-only inspection).
    max_file_bytes : int
        Size limit of each file of a checkpoint (.npz and manifest), default
        :data:`DEFAULT_MAX_FILE_BYTES`. Larger files are refused without being
        read, and :meth:`save` refuses to write them.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> d = tempfile.mkdtemp()
    >>> store = CheckpointStore(d, keep=2)
    >>> info = store.save({"offsets": {"t:0": 10}, "w": np.arange(3.0)})
    >>> state, loaded = store.load_latest()
    >>> state["offsets"], state["w"].tolist(), loaded.sequence == info.sequence
    ({'t:0': 10}, [0.0, 1.0, 2.0], True)
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3,
                 fault_hook: Callable[[str], None] | None = None, create: bool = True,
                 max_file_bytes: int = DEFAULT_MAX_FILE_BYTES):
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an int >= 1, got {keep!r}")
        if isinstance(max_file_bytes, bool) or not isinstance(max_file_bytes, int) or max_file_bytes < 1:
            raise ValueError(f"max_file_bytes must be an int >= 1, got {max_file_bytes!r}")
        if fault_hook is not None and not callable(fault_hook):
            raise TypeError(f"fault_hook must be callable, got {type(fault_hook).__name__}")
        self.directory = Path(directory)
        self.keep = keep
        self.fault_hook = fault_hook
        self.max_file_bytes = max_file_bytes
        #: Sequences :meth:`load_latest` skipped as invalid, newest first.
        self.skipped: list[int] = []
        #: Why each of :attr:`skipped` was refused (the CheckpointError's message).
        self.skip_reasons: dict[int, str] = {}
        if create:
            self.directory.mkdir(parents=True, exist_ok=True)
        elif not self.directory.is_dir():
            raise FileNotFoundError(f"checkpoint directory not found: {str(self.directory)!r}")

    # -------------------------------------------------------------- internals
    def _hook(self, point: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(point)

    def _paths(self, seq: int) -> tuple[Path, Path]:
        stem = f"{_PREFIX}{seq:012d}"
        return self.directory / f"{stem}.json", self.directory / f"{stem}.npz"

    def _sequences(self) -> dict[int, set[str]]:
        seqs: dict[int, set[str]] = {}
        for p in self.directory.iterdir():
            m = _NAME_RE.match(p.name)
            if m:
                seqs.setdefault(int(m.group(1)), set()).add(m.group(2))
        return seqs

    def _read_manifest(self, path: Path) -> dict[str, Any]:
        raw = _read_limited(path, self.max_file_bytes)
        try:
            man = json.loads(raw)
        except ValueError as e:
            raise CheckpointError(f"{path.name}: unreadable manifest: {e}") from None
        if not isinstance(man, dict):
            raise CheckpointError(f"{path.name}: manifest is not a JSON object")
        if man.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{path.name}: unsupported format_version {man.get('format_version')!r} "
                                  f"(expected {FORMAT_VERSION})")
        for k in ("sequence", "created_at", "npz_sha256", "npz_size", "data_file", "state", "arrays"):
            if k not in man:
                raise CheckpointError(f"{path.name}: manifest lacks {k!r}")
        if "manifest_sha256" in man:  # absent only in checkpoints written before it existed
            digest = _manifest_digest(man)
            if digest != man["manifest_sha256"]:
                raise CheckpointError(f"{path.name}: manifest checksum mismatch ({digest[:12]}... != "
                                      f"{str(man['manifest_sha256'])[:12]}...)")
        return man

    def _info(self, man: dict[str, Any], manifest_path: Path) -> CheckpointInfo:
        return CheckpointInfo(
            sequence=int(man["sequence"]),
            manifest_path=manifest_path,
            data_path=self.directory / man["data_file"],
            created_at=float(man["created_at"]),
            sha256=str(man["npz_sha256"]),
            size_bytes=int(man["npz_size"]) + _file_size(manifest_path),
            keys=list(man.get("keys", [])),
            metadata=dict(man.get("metadata", {})),
        )

    # ---------------------------------------------------------------- public
    def save(self, state: dict[str, Any], *, metadata: dict[str, Any] | None = None) -> CheckpointInfo:
        """Write ``state`` as a new checkpoint, durably, then prune to ``keep``.

        Parameters
        ----------
        state : dict
            Nested dict (str keys); ndarray leaves go into the .npz, the rest
            into the JSON manifest.
        metadata : dict, optional
            JSON-able caller metadata stored in the manifest.

        Returns
        -------
        CheckpointInfo

        Raises
        ------
        TypeError, ValueError
            State not serializable without pickle (object arrays, non-str keys,
            unsupported leaf types), before anything is written.
        CheckpointError
            The .npz or the manifest would exceed ``max_file_bytes`` (nothing is
            written: the store could not read it back).
        """
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        arrays: dict[str, np.ndarray] = {}
        table: dict[str, dict] = {}
        tree = split_tree(state, "", arrays, table)
        meta_arrays: dict[str, np.ndarray] = {}
        meta = split_tree(dict(metadata or {}), "metadata", meta_arrays, {})
        if meta_arrays:
            raise TypeError("metadata must be JSON-able (no arrays)")

        seqs = self._sequences()
        seq = (max(seqs) + 1) if seqs else 1
        manifest_path, data_path = self._paths(seq)

        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
        data = buf.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        man = {
            "format_version": FORMAT_VERSION,
            "sequence": seq,
            "created_at": time.time(),
            "data_file": data_path.name,
            "npz_sha256": digest,
            "npz_size": len(data),
            "keys": sorted(state),
            "arrays": table,
            "metadata": meta,
            "state": tree,
        }
        man["manifest_sha256"] = _manifest_digest(man)
        man_bytes = json.dumps(man, sort_keys=True, allow_nan=True).encode()
        for path, size in ((data_path, len(data)), (manifest_path, len(man_bytes))):
            if size > self.max_file_bytes:  # refused before anything on disk changes
                raise CheckpointError(f"{path.name} would be {size} bytes, more than the limit of "
                                      f"{self.max_file_bytes} bytes (checkpoint.max_file_bytes): not written")

        self._hook("before_temp_write")
        self.cleanup_temp()
        token = uuid.uuid4().hex[:12]
        tmp_data = self.directory / f"{_TMP_PREFIX}{seq:012d}-{token}.npz"
        tmp_man = self.directory / f"{_TMP_PREFIX}{seq:012d}-{token}.json"
        try:
            write_durable(tmp_data, data)
            write_durable(tmp_man, man_bytes)
            self._hook("after_temp_write")
            os.replace(tmp_data, data_path)
            self._hook("after_data_rename")
            os.replace(tmp_man, manifest_path)  # commit point
            fsync_dir(self.directory)
        except BaseException:
            for p in (tmp_data, tmp_man):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
            raise
        self._hook("after_rename")
        info = self._info(man, manifest_path)
        self.prune()
        return info

    def prune(self) -> list[int]:
        """Delete all but the newest ``keep`` checkpoints, and stale orphan .npz files.

        Returns
        -------
        list of int
            Sequence numbers removed.
        """
        seqs = self._sequences()
        committed = sorted(s for s, kinds in seqs.items() if "json" in kinds)
        keep = set(committed[-self.keep:])
        newest = committed[-1] if committed else None
        removed = []
        for s, kinds in seqs.items():
            if s in keep:
                continue
            if "json" not in kinds and (newest is None or s > newest):
                continue  # possibly being written right now: leave it
            man, data = self._paths(s)
            for p in (man, data):  # manifest first: the checkpoint disappears atomically
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
            removed.append(s)
        if removed:
            fsync_dir(self.directory)
        return sorted(removed)

    def cleanup_temp(self) -> int:
        """Remove torn temp files left by an interrupted save (single writer). Returns how many."""
        n = 0
        for p in self.directory.iterdir():
            if p.name.startswith(_TMP_PREFIX):
                try:
                    p.unlink()
                    n += 1
                except FileNotFoundError:
                    pass
        return n

    def list(self) -> list[CheckpointInfo]:
        """Checkpoints with a readable manifest, oldest first (checksums not verified)."""
        out = []
        for s, kinds in sorted(self._sequences().items()):
            if "json" not in kinds:
                continue
            manifest_path, _ = self._paths(s)
            try:
                out.append(self._info(self._read_manifest(manifest_path), manifest_path))
            except CheckpointError as e:
                log.warning("ignoring checkpoint %s: %s", manifest_path.name, e)
        return out

    def load(self, sequence: int) -> tuple[dict[str, Any], CheckpointInfo]:
        """Load and verify one checkpoint.

        Raises
        ------
        CheckpointError
            Missing files, a file over ``max_file_bytes`` (refused unread), checksum
            mismatch, bad manifest or .npz. The .npz is parsed only after its size and
            sha256 match the manifest.
        """
        manifest_path, _ = self._paths(int(sequence))
        if not manifest_path.exists():
            raise CheckpointError(f"checkpoint {sequence} has no manifest in {self.directory}")
        man = self._read_manifest(manifest_path)
        info = self._info(man, manifest_path)
        data = _read_limited(info.data_path, self.max_file_bytes)
        if len(data) != int(man["npz_size"]):
            raise CheckpointError(f"{info.data_path.name}: size {len(data)} != manifest {man['npz_size']}")
        digest = hashlib.sha256(data).hexdigest()
        if digest != info.sha256:
            raise CheckpointError(f"{info.data_path.name}: sha256 mismatch ({digest[:12]}... != "
                                  f"{info.sha256[:12]}...)")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError) as e:
            raise CheckpointError(f"{info.data_path.name}: bad npz: {e}") from None
        try:
            state = join_tree(man["state"], arrays)
        except StateTreeError as e:
            raise CheckpointError(f"{info.data_path.name}: {e}") from None
        return state, info

    def load_latest(self) -> tuple[dict[str, Any], CheckpointInfo] | None:
        """Newest valid checkpoint, skipping (with a warning) corrupted newer ones; None if none.

        The sequences skipped are left in :attr:`skipped` (newest first): a caller that fell
        back must not trust offsets committed after the checkpoint it got.
        """
        self.skipped = []
        self.skip_reasons = {}
        for s in sorted((s for s, k in self._sequences().items() if "json" in k), reverse=True):
            try:
                return self.load(s)
            except CheckpointError as e:
                self.skipped.append(s)
                self.skip_reasons[s] = str(e)
                log.warning("checkpoint %d in %s is invalid, falling back to the previous one: %s",
                            s, self.directory, e)
        return None

"""Reading and validating a RUN_DIR (what ``streamkm replay --out RUN_DIR`` writes).

``run.json`` and ``chunks.jsonl`` are required; the final model (``model.npz`` +
``model.json``) and ``reservoir.npy`` are optional: without them the report leaves
out what needs them and says so (:attr:`RunDir.notes`). Anything present but malformed
is a :class:`RunDirError` naming the file (and the line of ``chunks.jsonl``).
The layout is in docs/report.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from streamkm.cluster import MAX_ABS_VALUE

if TYPE_CHECKING:
    from streamkm.group.export import ExportedModel

__all__ = ["RUN_FORMAT", "RunDirError", "RunDir", "load_run_dir"]

RUN_FORMAT = "streamkm.run"
#: Default names of the files ``run.json``'s ``files`` may rename.
DEFAULT_FILES = {"model": "model", "snapshot": "model.snapshot", "chunks": "chunks.jsonl",
                 "reservoir": "reservoir.npy"}


class RunDirError(ValueError):
    """A RUN_DIR that cannot be reported on; the message names the file (and line)."""


@dataclass
class RunDir:
    """A validated RUN_DIR.

    Attributes
    ----------
    path : Path
    run : dict
        ``run.json`` as read (validated).
    chunks : list of dict
        One per line of ``chunks.jsonl``, in fold order (validated).
    model : ExportedModel or None
        The final model; None when its files are absent.
    reservoir : ndarray of shape (m, n_features), float32, or None
        None when ``reservoir.npy`` is absent.
    notes : list of str
        What is missing or inconsistent but does not stop the report.
    """

    path: Path
    run: dict[str, Any]
    chunks: list[dict[str, Any]]
    model: ExportedModel | None
    reservoir: NDArray[np.float32] | None
    notes: list[str] = field(default_factory=list)

    @property
    def n_clusters(self) -> int:
        return int(self.run["n_clusters"])

    @property
    def n_features(self) -> int:
        return int(self.run["n_features"])


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _count(doc: dict[str, Any], key: str, where: str, *, minimum: int = 0) -> int:
    v = doc.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise RunDirError(f"{where}: {key!r} must be an integer >= {minimum}, got {v!r}")
    return v


def _read_run_json(path: Path) -> dict[str, Any]:
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunDirError(f"{where}: not found (is {path.parent} a RUN_DIR written by 'streamkm replay --out'?)"
                          ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{where}: cannot read it ({exc})") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise RunDirError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != RUN_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise RunDirError(f"{where}: not a {RUN_FORMAT!r} document (format {got!r})")
    if doc.get("version") != 1:
        raise RunDirError(f"{where}: unsupported version {doc.get('version')!r} (this streamkm reads version 1)")
    _count(doc, "n_clusters", where, minimum=1)
    _count(doc, "n_features", where, minimum=0)  # 0: the run saw no valid row
    for key in ("records", "valid_rows", "chunks", "final_version"):
        _count(doc, key, where)
    for key in ("pipeline", "source", "config_hash"):
        if not isinstance(doc.get(key, ""), str):
            raise RunDirError(f"{where}: {key!r} must be a string, got {doc.get(key)!r}")
    dlq = doc.get("dead_letters", {})
    if not isinstance(dlq, dict) or not all(isinstance(k, str) and _is_int(v) and v >= 0 for k, v in dlq.items()):
        raise RunDirError(f"{where}: 'dead_letters' must map reasons to counts >= 0, got {dlq!r}")
    span = doc.get("record_time_ms")
    if span is not None and not (isinstance(span, list) and len(span) == 2 and all(_is_int(t) for t in span)):
        raise RunDirError(f"{where}: 'record_time_ms' must be null or [first, last] in epoch ms, got {span!r}")
    files = doc.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise RunDirError(f"{where}: 'files' must map names to file names, got {files!r}")
    for name, rel in files.items():
        if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise RunDirError(f"{where}: files.{name} must be a name inside the RUN_DIR, got {rel!r}")
    return doc


def _check_chunk(c: Any, where: str) -> dict[str, Any]:
    """One line of chunks.jsonl, validated (RunDirError naming the field)."""
    if not isinstance(c, dict):
        raise RunDirError(f"{where}: expected a JSON object, got {type(c).__name__}")
    for key in ("version", "partition", "first_offset", "end_offset", "rows"):
        _count(c, key, where)
    t = c.get("record_time_ms")
    if t is not None and not _is_int(t):
        raise RunDirError(f"{where}: 'record_time_ms' must be an integer (epoch ms) or null, got {t!r}")
    for key in ("objective", "ewma", "center_shift"):
        v = c.get(key)
        if v is not None and not _is_num(v):
            raise RunDirError(f"{where}: {key!r} must be a finite number or null, got {v!r}")
    w = c.get("weights", {})
    if not isinstance(w, dict):
        raise RunDirError(f"{where}: 'weights' must be an object of cluster id -> weight, got {w!r}")
    for cid, v in w.items():
        if not cid.isdigit() or not _is_num(v) or v < 0:
            raise RunDirError(f"{where}: weights[{cid!r}] = {v!r}: ids must be integers >= 0 and "
                              "weights finite numbers >= 0")
    ev = c.get("events", [])
    if not isinstance(ev, list) or not all(isinstance(e, dict) and isinstance(e.get("event"), str) for e in ev):
        raise RunDirError(f"{where}: 'events' must be a list of objects with an 'event' name, got {ev!r}")
    return c


def _read_chunks(path: Path) -> list[dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RunDirError(f"{path}: not found (the per-chunk log is required)") from None
    except OSError as exc:
        raise RunDirError(f"{path}: cannot read it ({exc})") from None
    chunks: list[dict[str, Any]] = []
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            c = json.loads(line)
        except ValueError as exc:  # UnicodeDecodeError is a ValueError too
            raise RunDirError(f"{where}: not valid JSON ({exc})") from None
        c = _check_chunk(c, where)
        if chunks and c["version"] <= chunks[-1]["version"]:
            raise RunDirError(f"{where}: version {c['version']} does not follow {chunks[-1]['version']} "
                              "(lines must be in fold order)")
        chunks.append(c)
    return chunks


def _read_reservoir(path: Path, d: int) -> NDArray[np.float32]:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.dtype.kind not in "fiu":
        raise RunDirError(f"{path}: expected a 2-D numeric array (m, {d}), got shape {np.shape(arr)} "
                          f"dtype {getattr(arr, 'dtype', '?')}")
    if arr.shape[1] != d:
        raise RunDirError(f"{path}: expected {d} features (run.json n_features), got {arr.shape[1]}")
    if not np.isfinite(arr).all():
        raise RunDirError(f"{path}: holds non-finite values")
    if arr.size and float(np.abs(arr).max()) > MAX_ABS_VALUE:
        raise RunDirError(f"{path}: holds values beyond {MAX_ABS_VALUE:g}, which no model accepts")
    return np.ascontiguousarray(arr, dtype=np.float32)


def load_run_dir(path: str | Path) -> RunDir:
    """Read and validate the RUN_DIR at *path*.

    Raises
    ------
    RunDirError
        A required file is missing, or a file is malformed (the message names it).
    """
    from streamkm.group.export import load_model

    root = Path(path)
    if not root.is_dir():
        raise RunDirError(f"{root}: not a directory")
    run = _read_run_json(root / "run.json")
    files = {**DEFAULT_FILES, **run.get("files", {})}
    d, k = int(run["n_features"]), int(run["n_clusters"])
    notes: list[str] = []
    chunks = _read_chunks(root / files["chunks"])
    if len(chunks) != run["chunks"]:
        notes.append(f"run.json counts {run['chunks']} chunks, {files['chunks']} holds {len(chunks)}")
    if chunks and chunks[-1]["version"] != run["final_version"]:
        notes.append(f"run.json says final version {run['final_version']}, the last chunk has version "
                     f"{chunks[-1]['version']}")

    model = None
    base = root / files["model"]
    npz, meta = base.with_suffix(".npz"), base.with_suffix(".json")
    if npz.exists() or meta.exists():
        try:
            model = load_model(base)
        except ValueError as exc:
            raise RunDirError(str(exc)) from None
        if model.n_features_in_ != d:
            raise RunDirError(f"{npz}: expected {d} features (run.json n_features), got {model.n_features_in_}")
        if model.cluster_centers_.shape[0] != k:
            notes.append(f"the final model has {model.cluster_centers_.shape[0]} clusters, run.json n_clusters {k}")
    else:
        notes.append(f"no final model ({npz.name} + {meta.name}): no centres in the PCA, no final objective")

    reservoir = None
    res_path = root / files["reservoir"]
    if res_path.exists():
        reservoir = _read_reservoir(res_path, d)
        if reservoir.shape[0] == 0:
            notes.append(f"{res_path.name} is empty (the model was not initialized): no PCA, no batch comparison")
    else:
        notes.append(f"no {res_path.name}: no PCA of the reservoir, no batch comparison")
    return RunDir(path=root, run=run, chunks=chunks, model=model, reservoir=reservoir, notes=notes)

"""RUN_DIR: what ``streamkm replay --out RUN_DIR`` leaves behind (docs/replay.md).

- ``run.json``: the summary (source, settings hash, records, valid rows, dead letters by
  reason, chunks, final version, record-time span, file names);
- ``chunks.jsonl``: one line per folded chunk (written as the replay goes);
- ``model.npz`` + ``model.json``: the final version, as ``streamkm model export`` writes it
  (:func:`streamkm.group.export.load_model` reads it back);
- ``reducer.snapshot``: the fold's state as a reducer snapshot (``streamkm model export
  --snapshot``);
- ``reservoir.npy``: the model's reservoir sample, (m, d) float32 (for reports).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from streamkm.atomic import atomic_write
from streamkm.group.export import export_version
from streamkm.group.messages import KIND_SNAPSHOT
from streamkm.group.wire import encode

if TYPE_CHECKING:
    from streamkm.group import GroupModel
    from streamkm.replay.rounds import ReplaySummary

__all__ = ["RUN_FORMAT", "ChunkLog", "write_run"]

RUN_FORMAT = "streamkm.run"
FILES = {"model": "model", "snapshot": "reducer.snapshot", "chunks": "chunks.jsonl", "reservoir": "reservoir.npy"}


class ChunkLog:
    """``chunks.jsonl``, one JSON line per folded chunk, written to a temporary name and
    renamed by :meth:`close` (a replay that fails leaves no half log under the final name)."""

    def __init__(self, out: Path):
        self.path = out / FILES["chunks"]
        self._tmp = out / (FILES["chunks"] + ".partial")
        self._fh: IO[str] | None = open(self._tmp, "w", encoding="utf-8")
        self.lines = 0

    def write(self, line: dict[str, Any]) -> None:
        assert self._fh is not None
        self._fh.write(json.dumps(line, allow_nan=False, separators=(",", ":")) + "\n")
        self.lines += 1

    def close(self, *, keep: bool = True) -> None:
        fh, self._fh = self._fh, None
        if fh is None:
            return
        fh.close()
        if keep:
            self._tmp.replace(self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def write_run(out: Path, model: GroupModel, summary: ReplaySummary, *, source: str, pipeline: str = "vectors"
              ) -> dict[str, Any]:
    """Write the final model, its snapshot, the reservoir and ``run.json``; returns the summary doc."""
    v = model.version()
    if v.is_initialized:
        export_version(v, out / FILES["model"])
    else:  # --force over an earlier run: no final model must not leave that run's
        for suffix in (".npz", ".json"):
            (out / (FILES["model"] + suffix)).unlink(missing_ok=True)
    state = {"pipeline": pipeline, "stats_offset": model.stats_offset_, "state": model.state_dict(),
             "config_hash": model.config_hash}
    atomic_write(out / FILES["snapshot"], encode(KIND_SNAPSHOT, state))
    res = model.model.reservoir_sample
    d = int(model.model.n_features_in_ or 0)
    sample = np.empty((0, d), dtype=np.float32) if res is None else np.asarray(res, dtype=np.float32)
    buf = io.BytesIO()
    np.save(buf, sample, allow_pickle=False)
    atomic_write(out / FILES["reservoir"], buf.getvalue())
    doc = {
        "format": RUN_FORMAT, "version": 1, "pipeline": pipeline, "source": source, "ordering": "rounds",
        "config_hash": model.config_hash, "n_clusters": int(model.model.n_clusters), "n_features": d,
        "records": summary.records, "valid_rows": summary.valid_rows,
        "dead_letters": dict(sorted(summary.dead_letters.items())), "chunks": summary.chunks,
        "rounds": summary.rounds, "outcomes": dict(sorted(summary.outcomes.items())),
        "final_version": int(v.version), "initialized": bool(v.is_initialized), "complete": not summary.stopped,
        "record_time_ms": summary.record_time_ms,
        "files": {k: f for k, f in FILES.items() if k != "model" or v.is_initialized},
    }
    atomic_write(out / "run.json", (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode())
    return doc

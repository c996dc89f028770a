"""Reading a RUN_DIR: a good one loads as written; a bad one is an error naming the file and line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamkm.report import RunDirError, load_run_dir
from tests.report.support import DEAD_LETTERS, read_chunks


def test_a_run_dir_loads_as_written(run_dir_template):
    rd = load_run_dir(run_dir_template)
    assert rd.chunks == read_chunks(run_dir_template)
    run = json.loads((run_dir_template / "run.json").read_text())
    assert rd.run == run and rd.n_clusters == 3 and rd.n_features == 4
    assert rd.run["dead_letters"] == DEAD_LETTERS
    np.testing.assert_array_equal(rd.reservoir, np.load(run_dir_template / "reservoir.npy"))
    assert rd.model is not None and rd.model.cluster_centers_.shape == (3, 4)
    assert rd.model.model_version_ == run["final_version"] == rd.chunks[-1]["version"]
    assert rd.notes == []


def _rewrite_line(path, lineno: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n")


def _edit_chunk(path, lineno: int, **changes) -> None:
    c = json.loads(path.read_text().splitlines()[lineno - 1])
    c.update(changes)
    _rewrite_line(path, lineno, json.dumps(c))


def _edit_run(run_dir, **changes) -> None:
    doc = json.loads((run_dir / "run.json").read_text())
    doc.update(changes)
    (run_dir / "run.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("case, expected", [
    ("no run.json", r"run\.json: not found"),
    ("run.json not JSON", r"run\.json: not valid JSON"),
    ("run.json other format", r"run\.json: not a 'streamkm.run' document \(format 'streamkm.worker'\)"),
    ("run.json version 2", r"run\.json: unsupported version 2"),
    ("run.json n_features", r"run\.json: 'n_features' must be an integer >= 0, got -1"),
    ("run.json files escape", r"run\.json: files\.reservoir must be a name inside the RUN_DIR"),
    ("no chunks.jsonl", r"chunks\.jsonl: not found"),
    ("corrupted line", r"chunks\.jsonl:7: not valid JSON"),
    ("objective not a number", r"chunks\.jsonl:5: 'objective' must be a finite number or null, got 'high'"),
    ("negative weight", r"chunks\.jsonl:9: weights\['1'\] = -2\.0"),
    ("events not objects", r"chunks\.jsonl:3: 'events' must be a list of objects"),
    ("versions out of order", r"chunks\.jsonl:4: version 2 does not follow 3"),
    ("reservoir too wide", r"reservoir\.npy: expected 4 features \(run\.json n_features\), got 5"),
    ("reservoir 1-D", r"reservoir\.npy: expected a 2-D numeric array"),
    ("reservoir not npy", r"reservoir\.npy: not a readable \.npy array"),
    ("reservoir not finite", r"reservoir\.npy: holds non-finite values"),
    ("reservoir huge", r"reservoir\.npy: holds values beyond"),
    ("model other width", r"model\.npz: expected 4 features"),
    ("model json broken", r"model\.json: cannot read the export's metadata"),
])
def test_a_bad_run_dir_is_an_error_naming_the_file(run_dir, case, expected):
    chunks = run_dir / "chunks.jsonl"
    if case == "no run.json":
        (run_dir / "run.json").unlink()
    elif case == "run.json not JSON":
        (run_dir / "run.json").write_text("{\"format\": ")
    elif case == "run.json other format":
        _edit_run(run_dir, format="streamkm.worker")
    elif case == "run.json version 2":
        _edit_run(run_dir, version=2)
    elif case == "run.json n_features":
        _edit_run(run_dir, n_features=-1)
    elif case == "run.json files escape":
        _edit_run(run_dir, files={"reservoir": "../elsewhere.npy"})
    elif case == "no chunks.jsonl":
        chunks.unlink()
    elif case == "corrupted line":
        _rewrite_line(chunks, 7, '{"version": 7, "rows": 15')
    elif case == "objective not a number":
        _edit_chunk(chunks, 5, objective="high")
    elif case == "negative weight":
        _edit_chunk(chunks, 9, weights={"0": 1.0, "1": -2.0})
    elif case == "events not objects":
        _edit_chunk(chunks, 3, events=["drift"])
    elif case == "versions out of order":
        _edit_chunk(chunks, 4, version=2)
    elif case == "reservoir too wide":
        np.save(run_dir / "reservoir.npy", np.zeros((10, 5), np.float32))
    elif case == "reservoir 1-D":
        np.save(run_dir / "reservoir.npy", np.zeros(10, np.float32))
    elif case in ("reservoir not finite", "reservoir huge"):
        bad = np.zeros((10, 4), np.float64)
        bad[3, 1] = np.nan if case == "reservoir not finite" else 1e300
        np.save(run_dir / "reservoir.npy", bad)
    elif case == "reservoir not npy":
        (run_dir / "reservoir.npy").write_bytes(b"not an array")
    elif case == "model other width":
        with np.load(run_dir / "model.npz") as z:
            arrays = {k: z[k] for k in z.files}
        arrays["centers"] = np.zeros((3, 2))
        np.savez(run_dir / "model.npz", **arrays)
    elif case == "model json broken":
        (run_dir / "model.json").write_text("{")
    with pytest.raises(RunDirError, match=expected) as info:
        load_run_dir(run_dir)
    assert str(run_dir) in str(info.value)  # the path, not just the file name
    assert "\n" not in str(info.value)


def test_a_run_dir_that_is_a_file_is_an_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirError, match="not a directory"):
        load_run_dir(tmp_path / "f")


@pytest.mark.parametrize("missing", ["reservoir.npy", "model"])
def test_a_missing_optional_file_is_a_note(run_dir, missing):
    if missing == "model":
        (run_dir / "model.npz").unlink()
        (run_dir / "model.json").unlink()
    else:
        (run_dir / missing).unlink()
    rd = load_run_dir(run_dir)
    assert len(rd.notes) == 1
    assert (rd.model is None) == (missing == "model") and (rd.reservoir is None) == (missing == "reservoir.npy")
    assert ("model.npz" if missing == "model" else "reservoir.npy") in rd.notes[0]


def test_counts_that_disagree_with_the_log_are_notes(run_dir):
    _edit_run(run_dir, chunks=99, final_version=77)
    rd = load_run_dir(run_dir)
    assert any("99 chunks" in n and "holds 40" in n for n in rd.notes)
    assert any("final version 77" in n for n in rd.notes)


def test_an_empty_reservoir_is_a_note(run_dir):
    np.save(run_dir / "reservoir.npy", np.zeros((0, 4), np.float32))
    rd = load_run_dir(run_dir)
    assert rd.reservoir is not None and rd.reservoir.shape == (0, 4)
    assert any("empty" in n for n in rd.notes)

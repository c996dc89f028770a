"""The series equal chunks.jsonl value for value; the PCA is the reservoir's."""

from __future__ import annotations

import numpy as np
import pytest

from streamkm.report import chunk_series, load_run_dir, pca_2d
from tests.report.support import make_run_dir, read_chunks


def _as_float(values):
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def test_the_series_equal_the_log(run_dir_template):
    log = read_chunks(run_dir_template)
    s = chunk_series(load_run_dir(run_dir_template).chunks)
    assert s.n_chunks == len(log) == 40 and s.x_kind == "record_time"
    np.testing.assert_array_equal(s.x.astype(np.int64), [c["record_time_ms"] for c in log])
    for key in ("objective", "ewma", "center_shift"):
        np.testing.assert_array_equal(getattr(s, key), _as_float([c[key] for c in log]), err_msg=key)
    assert np.isnan(s.objective[0])  # the first chunk was too small to initialize the model
    ids = sorted({int(i) for c in log for i in c["weights"]})
    assert s.cluster_ids.tolist() == ids and len(ids) > 3  # a reseed retired an id and added one
    for i, c in enumerate(log):
        expected = [c["weights"].get(str(cid), 0.0) for cid in ids]
        np.testing.assert_array_equal(s.weights[i], expected)
    assert s.drift.tolist() == [i for i, c in enumerate(log) if any(e["event"] == "drift" for e in c["events"])]
    assert s.reseed.tolist() == [i for i, c in enumerate(log) if any(e["event"] == "reseed" for e in c["events"])]
    assert s.drift.size and s.reseed.size
    assert [e for _, e in s.events] == [e for c in log for e in c["events"]]


def test_the_embedded_json_is_the_log(run_dir_template):
    log = read_chunks(run_dir_template)
    j = chunk_series(load_run_dir(run_dir_template).chunks).to_json()
    assert j["objective"] == [c["objective"] for c in log]
    assert j["center_shift"] == [c["center_shift"] for c in log]
    assert j["record_time_ms"] == [c["record_time_ms"] for c in log]
    assert j["version"] == [c["version"] for c in log]
    for cid, ws in j["weights"].items():
        assert ws == [c["weights"].get(cid, 0.0) for c in log]


def test_a_chunk_without_record_time_makes_the_axis_the_chunk_index(tmp_path):
    d = make_run_dir(tmp_path / "run", n_chunks=6, null_time_at=3, relocate_at=None)
    s = chunk_series(load_run_dir(d).chunks)
    assert s.x_kind == "chunk" and s.x.tolist() == [1, 2, 3, 4, 5, 6]
    assert s.record_time_ms[3] is None and s.record_time_ms[2] is not None


def test_a_drift_whose_reseed_was_accepted_is_a_reseed_mark():
    chunks = [{"version": 1, "rows": 1, "events": []},
              {"version": 2, "rows": 1, "events": [{"event": "drift", "reseed_accepted": True}]},
              {"version": 3, "rows": 1, "events": [{"event": "drift", "reseed_accepted": False}]}]
    s = chunk_series(chunks)
    assert s.drift.tolist() == [1, 2] and s.reseed.tolist() == [1]
    assert s.weights.shape == (3, 0) and np.isnan(s.objective).all()


def test_pca_matches_a_reference_pca():
    decomposition = pytest.importorskip("sklearn.decomposition")
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(500, 5)) * [5.0, 2.0, 1.0, 0.5, 0.1] @ np.linalg.qr(rng.normal(size=(5, 5)))[0]
         + 3.0).astype(np.float32)
    p = pca_2d(X)
    ref = decomposition.PCA(n_components=2, svd_solver="full").fit(X.astype(np.float64))
    np.testing.assert_allclose(p.explained, ref.explained_variance_ratio_, rtol=1e-6)
    ours, theirs = p.points, ref.transform(X.astype(np.float64))
    for j in range(2):  # each axis is defined up to its sign
        sign = np.sign(ours[:, j] @ theirs[:, j])
        np.testing.assert_allclose(ours[:, j], sign * theirs[:, j], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(p.project(X), p.points, atol=1e-9)


def test_pca_of_one_dimension_and_bad_input():
    p = pca_2d(np.array([[0.0], [1.0], [3.0]]))
    assert p.points[:, 1].tolist() == [0.0, 0.0, 0.0] and p.explained.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="at least 2 points"):
        pca_2d(np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"shape \(n, 1\), got \(2, 2\)"):
        p.project(np.zeros((2, 2)))

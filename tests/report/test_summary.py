"""The summary's numbers: the final model and a batch k-means scored alike on the reservoir, select_k."""

from __future__ import annotations

import numpy as np
import pytest

from streamkm.cluster import KMeans, select_k
from streamkm.report import compare_to_batch, load_run_dir, select_k_curves
from streamkm.report.summary import summary_rows


def _mean_sq_dist(X, C):
    X, C = np.asarray(X, np.float64), np.asarray(C, np.float64)
    return float(((X[:, None, :] - C[None]) ** 2).sum(axis=2).min(axis=1).mean())


def test_the_final_model_is_compared_with_a_batch_kmeans_on_the_reservoir(run_dir_template):
    rd = load_run_dir(run_dir_template)
    assert rd.model is not None and rd.reservoir is not None
    cmp = compare_to_batch(rd.model, rd.reservoir, seed=3)
    assert cmp.n_points == rd.reservoir.shape[0] and cmp.seed == 3
    np.testing.assert_allclose(cmp.final_objective, _mean_sq_dist(rd.reservoir, rd.model.cluster_centers_),
                               rtol=1e-4)
    km = KMeans(3, n_init=3, seed=3).fit(rd.reservoir)
    np.testing.assert_allclose(cmp.batch_centers, km.cluster_centers_)
    # Both scored in the model's float32 (GEMM distances): equal to the exact value to float32 accuracy.
    np.testing.assert_allclose(cmp.batch_objective, _mean_sq_dist(rd.reservoir, km.cluster_centers_), rtol=1e-4)
    np.testing.assert_allclose(cmp.batch_objective, km.inertia_ / rd.reservoir.shape[0], rtol=1e-4)
    assert cmp.ratio == pytest.approx(cmp.final_objective / cmp.batch_objective)
    assert cmp.ratio >= 0.999  # batch Lloyd on the very points it is scored on is (about) the best


def test_too_few_points_for_the_batch_kmeans(run_dir_template):
    rd = load_run_dir(run_dir_template)
    with pytest.raises(ValueError, match="needs at least 3 reservoir points, got 2"):
        compare_to_batch(rd.model, rd.reservoir[:2])


def test_the_summary_rows_name_every_count(run_dir_template):
    rd = load_run_dir(run_dir_template)
    rows = dict(summary_rows(rd, compare_to_batch(rd.model, rd.reservoir)))
    run = rd.run
    assert rows["records"] == f"{run['records']:,}" and rows["valid rows"] == f"{run['valid_rows']:,}"
    assert rows["dead letters"] == "10 (not_finite 7, wrong_dimension 3)"
    assert rows["chunks"] == "40" and rows["final version"] == "40"
    assert rows["k (n_clusters)"] == "3 (final model: 3)"
    assert float(rows["ratio final / batch"]) > 0.99
    assert not any("objective" in k for k in dict(summary_rows(rd, None)))


def test_select_k_curves_are_select_k(run_dir_template):
    res = load_run_dir(run_dir_template).reservoir
    got, notes = select_k_curves(res, 1, 5, seed=2)
    assert list(got) == ["silhouette", "elbow", "bic"] and notes == []
    assert sorted(got["silhouette"].scores) == [2, 3, 4, 5] and sorted(got["bic"].scores) == [1, 2, 3, 4, 5]
    ref = select_k(res, range(1, 6), method="bic", seed=2)
    assert got["bic"].scores == ref.scores and got["bic"].k == ref.k


def test_select_k_ranges_it_cannot_run(run_dir_template):
    res = load_run_dir(run_dir_template).reservoir
    got, notes = select_k_curves(res, 1, 2, seed=0)
    assert list(got) == ["silhouette", "bic"] and "elbow" in notes[0]
    got, notes = select_k_curves(res, 1, 1, seed=0)
    assert list(got) == ["bic"] and len(notes) == 2
    with pytest.raises(ValueError, match=r"up to k = 700 needs at least 701 reservoir points, got 600"):
        select_k_curves(res, 2, 700)
    with pytest.raises(ValueError, match="1 <= KMIN <= KMAX"):
        select_k_curves(res, 4, 3)

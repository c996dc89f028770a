"""Property test (hypothesis) for KMeans: monotone objective, exact inertia,
centers are the means of their clusters, for arbitrary small data sets."""

import numpy as np
import pytest

pytest.importorskip("hypothesis")

from hypothesis import given, settings  # noqa: E402 - after importorskip
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

from streamkm.cluster import KMeans  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(
    X=arrays(np.float64, st.tuples(st.integers(2, 40), st.integers(1, 4)),
             elements=st.floats(-100, 100, allow_nan=False, width=64)),
    k=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_monotone_objective_and_fixed_point(X, k, seed):
    k = min(k, len(X))
    km = KMeans(n_clusters=k, init="random", tol=0.0, max_iter=1000, seed=seed).fit(X)
    h = km.objective_history_
    assert np.all(np.isfinite(km.cluster_centers_))
    assert np.all(np.diff(h) <= 0)
    exact = float(((X - km.cluster_centers_[km.labels_]) ** 2).sum())
    assert km.inertia_ == pytest.approx(exact, rel=1e-7, abs=1e-7)
    # every non-empty cluster's center is the mean of its points
    for j in np.unique(km.labels_):
        np.testing.assert_allclose(
            km.cluster_centers_[j], X[km.labels_ == j].mean(0), rtol=1e-7, atol=1e-7
        )

import numpy as np
import pytest

from streamkm.cluster._distance import _assign, _chunk_rows, _sq_distances
from streamkm.cluster._validation import (
    check_array,
    check_float,
    check_in,
    check_n_clusters,
    check_positive_int,
    check_random_state,
    check_sample_weight,
)


# ---------------------------------------------------------------- check_array
def test_check_array_dtypes_and_no_copy():
    x32 = np.ones((3, 2), dtype=np.float32)
    assert check_array(x32) is x32  # already valid: no copy
    x64 = np.ones((3, 2))
    out = check_array(x64)
    assert out.dtype == np.float64 and out is x64
    assert check_array(np.ones((3, 2), dtype=np.int64)).dtype == np.float32
    assert check_array(np.ones((3, 2), dtype=np.float16)).dtype == np.float32
    assert check_array([[True, False]]).dtype == np.float32
    f = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(3, 2))
    c = check_array(f)
    assert c.flags.c_contiguous and np.array_equal(c, f)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_array_names_first_bad_row(bad):
    X = np.zeros((10, 3), dtype=np.float32)
    X[7, 1] = bad
    X[9, 0] = bad
    with pytest.raises(ValueError, match=r"row 7 \(first bad row of 10\)"):
        check_array(X)


def test_check_array_rejections():
    with pytest.raises(ValueError, match=r"must be 2-D.*1-D.*\(3,\)"):
        check_array(np.ones(3))
    with pytest.raises(ValueError, match=r"3-D"):
        check_array(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match=r"empty: got 0 samples"):
        check_array(np.ones((0, 4)))
    assert check_array(np.ones((0, 4)), allow_empty=True).shape == (0, 4)
    with pytest.raises(ValueError, match=r"0 features"):
        check_array(np.ones((4, 0)))
    with pytest.raises(ValueError, match=r"expected 5 features, got 4"):
        check_array(np.ones((2, 4)), n_features=5)
    with pytest.raises(TypeError, match=r"numeric.*<U1"):
        check_array([["a", "b"]])
    with pytest.raises(TypeError, match=r"numeric.*complex"):
        check_array(np.ones((2, 2), dtype=complex))
    with pytest.raises(TypeError, match=r"numeric.*object"):
        check_array(np.array([[1, None]], dtype=object))
    with pytest.raises(ValueError, match=r"Xb could not be converted|Xb must be"):
        check_array([[1.0, 2.0], [3.0]], name="Xb")


def test_check_sample_weight():
    assert np.array_equal(check_sample_weight(None, 4), np.ones(4))
    with pytest.raises(ValueError, match=r"shape \(3,\); got \(2,\)"):
        check_sample_weight([1, 2], 3)
    with pytest.raises(ValueError, match=r">= 0; got minimum -1"):
        check_sample_weight([1, -1, 2], 3)
    with pytest.raises(ValueError, match="NaN"):
        check_sample_weight([1, np.nan], 2)
    with pytest.raises(ValueError, match="all zero"):
        check_sample_weight([0, 0], 2)


# ----------------------------------------------------------- hyperparameters
def test_check_positive_int():
    assert check_positive_int("k", np.int32(4)) == 4
    assert type(check_positive_int("k", np.int64(4))) is int
    with pytest.raises(ValueError, match=r"k must be an integer >= 1; got 0"):
        check_positive_int("k", 0)
    with pytest.raises(TypeError, match=r"k must be an integer.*2.5.*float"):
        check_positive_int("k", 2.5)
    with pytest.raises(TypeError, match=r"True.*bool"):
        check_positive_int("k", True)
    assert check_positive_int("m", 0, minimum=0) == 0


def test_check_float_bounds():
    assert check_float("tol", 0, low=0.0) == 0.0
    with pytest.raises(ValueError, match=r"tol must be in \[0.0, inf\]; got -1"):
        check_float("tol", -1, low=0.0)
    with pytest.raises(ValueError, match=r"\(0.0, 1.0\]; got 0"):
        check_float("g", 0, low=0.0, high=1.0, low_inclusive=False)
    with pytest.raises(ValueError, match="nan"):
        check_float("g", float("nan"))
    with pytest.raises(TypeError, match="str"):
        check_float("g", "0.5")


def test_check_in_and_n_clusters():
    assert check_in("m", "a", ["a", "b"]) == "a"
    with pytest.raises(ValueError, match=r"m must be one of \('a', 'b'\); got 'c'"):
        check_in("m", "c", ["a", "b"])
    with pytest.raises(ValueError, match="one of"):
        check_in("m", [1], ["a"])
    with pytest.raises(ValueError, match=r"n_clusters=5 must be <= n_samples=4"):
        check_n_clusters(5, 4)


def test_check_random_state():
    a = check_random_state(3).random(5)
    b = check_random_state(3).random(5)
    assert np.array_equal(a, b)
    g = np.random.default_rng(1)
    assert check_random_state(g) is g
    assert isinstance(check_random_state(None), np.random.Generator)
    with pytest.raises(ValueError, match="non-negative"):
        check_random_state(-1)
    with pytest.raises(TypeError, match="seed must be"):
        check_random_state("x")


# ------------------------------------------------------------------ distances
def _brute(X, C):
    X = X.astype(np.float64)
    C = C.astype(np.float64)
    return ((X[:, None, :] - C[None, :, :]) ** 2).sum(-1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("budget", [1, 40, 10_000, 64 * 2**20])
def test_assign_matches_brute_force_for_any_chunking(dtype, budget):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(517, 7)).astype(dtype)
    C = rng.normal(size=(11, 7)).astype(dtype)
    labels, min_sq = _assign(X, C, memory_budget_bytes=budget)
    D = _brute(X, C)
    assert labels.dtype == np.int64 and min_sq.dtype == dtype
    # nearest center (ties within float tolerance allowed)
    picked = D[np.arange(len(X)), labels]
    assert np.all(picked <= D.min(1) + 1e-4)
    np.testing.assert_allclose(min_sq, D.min(1), rtol=1e-4, atol=1e-4)
    ref_labels, ref_sq = _assign(X, C, memory_budget_bytes=64 * 2**20)
    assert np.array_equal(labels, ref_labels)
    # BLAS may round differently for different block shapes: close, not equal
    np.testing.assert_allclose(min_sq, ref_sq, rtol=1e-5, atol=1e-5)


def test_assign_uses_precomputed_norms_and_clamps():
    X = np.full((5, 3), 1000.0, dtype=np.float32)
    C = X[:2].copy()
    labels, min_sq = _assign(X, C, x_sq=(X * X).sum(1), c_sq=(C * C).sum(1))
    assert np.all(min_sq >= 0) and np.all(min_sq < 1.0)
    assert np.all(labels == 0)  # tie -> lowest index


def test_sq_distances_and_chunk_rows():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20, 4)).astype(np.float32)
    C = rng.normal(size=(3, 4)).astype(np.float32)
    D = _sq_distances(X, C)
    assert D.shape == (20, 3) and D.dtype == np.float32 and D.min() >= 0
    np.testing.assert_allclose(D, _brute(X, C), rtol=1e-4, atol=1e-4)
    assert _chunk_rows(100, 10, 4, 1) == 1
    assert _chunk_rows(100, 10, 4, 400) == 10
    assert _chunk_rows(5, 10, 4, 10**9) == 5


def test_check_array_rejects_values_whose_squares_overflow_float32():
    from streamkm.cluster._validation import MAX_ABS_VALUE

    X = np.zeros((5, 3), dtype=np.float32)
    X[3, 1] = -3e19  # finite in float32, but its square is not
    with pytest.raises(ValueError, match=r"magnitude above 1e\+15 in row 3"):
        check_array(X)
    X[3, 1] = MAX_ABS_VALUE  # the limit itself is accepted
    assert check_array(X)[3, 1] == np.float32(MAX_ABS_VALUE)


def test_streaming_kmeans_rejects_huge_values_and_keeps_state():
    from streamkm import StreamingKMeans
    from tests.cluster.test_streaming_kmeans import assert_state_equal

    rng = np.random.default_rng(0)
    model = StreamingKMeans(n_clusters=2, seed=0).partial_fit(
        rng.normal(size=(20, 3)).astype(np.float32))
    before = model.state_dict()
    bad = rng.normal(size=(4, 3)).astype(np.float32)
    bad[2, 0] = 3e19
    with pytest.raises(ValueError, match="row 2"):
        model.partial_fit(bad)
    assert_state_equal(before, model.state_dict())
    assert np.isfinite(model.partial_fit(np.delete(bad, 2, axis=0)).ewm_objective_)

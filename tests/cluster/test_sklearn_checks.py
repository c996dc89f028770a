"""KMeans and StreamingKMeans against scikit-learn's own estimator checks and meta-estimators.

scikit-learn is a development dependency: the estimators implement its protocol
(streamkm/cluster/_params.py) without importing it, which
``test_cluster_package_does_not_import_sklearn`` holds them to.
"""

import copy
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError as SkNotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import (  # noqa: E402
    check_clustering,
    check_estimators_partial_fit_n_features,
    parametrize_with_checks,
)
from sklearn.utils.validation import check_is_fitted  # noqa: E402

from streamkm.cluster import KMeans, NotFittedError, StreamingKMeans  # noqa: E402
from streamkm.cluster._state import _PARAMS  # noqa: E402

# --------------------------------------------------------------------------
# scikit-learn's check suite
# --------------------------------------------------------------------------
# Checks that test scikit-learn's literal wording or conventions streamkm does not share. Each
# is xfail-strict (a check that starts passing fails the run, so the list cannot go stale), and
# the behaviour it is about is asserted in streamkm's terms by a test further down.
_BOTH = {
    # sklearn matches "X has 1 features, but <name> is expecting 4 features as input"; streamkm
    # raises ValueError "X: expected 4 features, got 1" (STYLE.md wording). test_wrong_input_errors.
    "check_n_features_in_after_fitting": "streamkm's wording of the n_features error",
    # sklearn matches "Reshape your data"; streamkm raises ValueError "X must be 2-D ...".
    "check_fit2d_predict1d": "streamkm's wording of the 1-D input error",
    # sklearn matches "0 feature(s) (shape=(12, 0)) while a minimum of 1 is required"; streamkm
    # raises ValueError "X has 0 features (shape (12, 0))".
    "check_estimators_empty_data_messages": "streamkm's wording of the 0-features error",
    # sklearn wants ValueError("Complex data not supported"); streamkm's check_array raises
    # TypeError for every non-numeric dtype (complex is the wrong type, not a bad value).
    "check_complex_data": "complex input is a TypeError in streamkm",
    # sklearn converts numeric object arrays; streamkm rejects object dtype (TypeError), since in
    # the service an object array is a decoding bug upstream, not data.
    "check_dtype_object": "object arrays are rejected, not converted",
}
_EXPECTED_FAILED = {
    "KMeans": {
        **_BOTH,
        # Weights change the k-means++ draws (n rows with weights vs the repeated rows), so
        # the seeded runs differ; scikit-learn lists this check as an expected failure of its
        # own KMeans for the same reason. With a fixed init the equivalence holds:
        # test_kmeans_sample_weight_equals_repetition_from_a_fixed_init.
        "check_sample_weight_equivalence_on_dense_data": "k-means++ draws depend on the weights",
    },
    "StreamingKMeans": {
        **_BOTH,
        # The live state (is_initialized_=False, n_seen_=0, n_features_in_=None, ...) exists from
        # construction because the pipelines and the group fold read it before the first batch;
        # "fitted" is is_initialized_ (__sklearn_is_fitted__), test_streaming_fitted_means_initialized.
        "check_no_attributes_set_in_init": "live state is public from construction",
        "check_n_features_in": "n_features_in_ is None (not absent) before data",
        # The constructor validates (a bad config fails at startup, not at the first record), and
        # set_params validates the same way: test_streaming_set_params_validates_like_the_constructor.
        "check_do_not_raise_errors_in_init_or_set_params": "validates at construction",
        # max_iter bounds the Lloyd runs of initialization and of each reseed; a stream has no
        # single iteration count to report as n_iter_.
        "check_transformer_n_iter": "no n_iter_ for a stream",
    },
}


def _expected_failed(estimator):
    return _EXPECTED_FAILED[type(estimator).__name__]


with warnings.catch_warnings():
    # Not inheriting sklearn's BaseEstimator is the point (no runtime dependency).
    warnings.filterwarnings("ignore", "Estimator .* does not inherit", UserWarning)
    _sklearn_checks = parametrize_with_checks(
        [KMeans(n_clusters=3, seed=0), StreamingKMeans(n_clusters=3, seed=0)],
        expected_failed_checks=_expected_failed,
        xfail_strict=True,
    )


@_sklearn_checks
# check_set_params accepts the ValueError/TypeError of StreamingKMeans.set_params on a bad value
# (validation at construction, by design) and warns about it.
@pytest.mark.filterwarnings("ignore:.*occurred during set_params of param:UserWarning")
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# sklearn yields its clustering checks only for subclasses of its ClusterMixin, which the
# estimators cannot inherit without importing sklearn; so they are run here by hand.
@pytest.mark.parametrize("readonly_memmap", [False, True])
def test_sklearn_check_clustering_kmeans(readonly_memmap):
    # StreamingKMeans keeps no labels_ of its training data (check_clustering reads them);
    # its fit_predict is tested in test_streaming_fit_predict_and_fit_transform.
    check_clustering("KMeans", KMeans(seed=0), readonly_memmap=readonly_memmap)


def test_sklearn_check_partial_fit_n_features_streaming():
    check_estimators_partial_fit_n_features("StreamingKMeans", StreamingKMeans(3, seed=0))


# --------------------------------------------------------------------------
# what the excluded checks are about, in streamkm's terms
# --------------------------------------------------------------------------
def _blobs(n_per=60, k=4, d=3, seed=0, scale=None):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 10, size=(k, d))
    y = np.repeat(np.arange(k), n_per)
    X = means[y] + rng.normal(0, 0.5, size=(k * n_per, d))
    if scale is not None:
        X = X * np.asarray(scale)
    perm = rng.permutation(len(y))
    return X[perm], y[perm]


@pytest.mark.parametrize("make", [lambda: KMeans(3, seed=0), lambda: StreamingKMeans(3, seed=0)])
def test_wrong_input_errors(make):
    X, _ = _blobs()
    est = make().fit(X)
    for method in (est.predict, est.transform, est.score):
        with pytest.raises(ValueError, match="expected 3 features, got 1"):
            method(X[:, :1])
        with pytest.raises(ValueError, match="must be 2-D"):
            method(X[0])
    with pytest.raises(ValueError, match="0 features"):
        make().fit(np.empty((12, 0)))
    with pytest.raises(TypeError, match="must be numeric"):
        make().fit(X.astype(np.complex128))
    with pytest.raises(TypeError, match="must be numeric"):
        make().fit(X.astype(object))


def test_kmeans_sample_weight_equals_repetition_from_a_fixed_init():
    X, _ = _blobs(n_per=20, k=3, d=2)
    w = np.random.default_rng(1).integers(0, 4, size=len(X))
    init = X[w > 0][:3]
    a = KMeans(3, init=init, tol=0.0).fit(X, sample_weight=w)
    b = KMeans(3, init=init, tol=0.0).fit(np.repeat(X, w, axis=0))
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-12)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert a.inertia_ == pytest.approx(b.inertia_, rel=1e-12)


def test_streaming_fitted_means_initialized():
    km = StreamingKMeans(3, init_size=30, seed=0)
    assert km.n_features_in_ is None and km.n_seen_ == 0
    with pytest.raises(SkNotFittedError):
        check_is_fitted(km)
    km.partial_fit(np.zeros((10, 2)) + np.arange(10)[:, None])  # buffered only
    with pytest.raises(SkNotFittedError):
        check_is_fitted(km)
    with pytest.raises(NotFittedError, match="10 of 30 points buffered"):
        km.predict([[0.0, 0.0]])
    km.partial_fit(np.arange(40, dtype=float).reshape(20, 2))
    check_is_fitted(km)
    assert km.n_features_in_ == 2


def test_streaming_set_params_validates_like_the_constructor():
    for bad in ({"decay": 1.5}, {"n_clusters": 0}, {"half_life": 3.0, "decay": 0.5}, {"seed": -1},
                {"reservoir": "time_biased"}):
        with pytest.raises((ValueError, TypeError)) as ctor:
            StreamingKMeans(**{"n_clusters": 3, **bad})
        km = StreamingKMeans(3, seed=0)
        before, gamma = km.get_params(), km.gamma
        with pytest.raises(type(ctor.value)) as setp:
            km.set_params(**bad)
        assert str(setp.value) == str(ctor.value)
        assert km.get_params() == before and km.gamma == gamma
    km = StreamingKMeans(3, seed=0).set_params(half_life=10.0, reservoir="time_biased")
    assert km.gamma == 0.5 ** (1 / 10) and km.reservoir == "time_biased"
    assert km.get_params() == StreamingKMeans(3, seed=0, half_life=10.0, reservoir="time_biased").get_params()


def test_streaming_set_params_refuses_to_change_a_model_with_data():
    X, _ = _blobs()
    km = StreamingKMeans(3, seed=0).fit(X)
    state = km.state_dict()
    with pytest.raises(ValueError, match=r"cannot set n_clusters on a StreamingKMeans that has seen 240"):
        km.set_params(n_clusters=5, decay=1.0)
    assert km.n_clusters == 3 and km.cluster_centers_.shape == (3, 3)
    km.set_params(n_clusters=3, decay=1.0)  # unchanged values: accepted
    assert km.state_dict()["params"] == state["params"]
    # fit() restarts, so the sklearn idiom clone(...).set_params(...).fit(...) works
    assert clone(km).set_params(n_clusters=5).fit(X).cluster_centers_.shape == (5, 3)


def test_kmeans_validates_in_fit_like_sklearn():
    km = KMeans(3).set_params(n_clusters=-1)
    assert km.n_clusters == -1
    with pytest.raises(ValueError, match="n_clusters must be an integer >= 1; got -1"):
        km.fit(np.ones((5, 2)))


# --------------------------------------------------------------------------
# get_params / set_params / clone
# --------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [KMeans, StreamingKMeans])
def test_get_params_are_the_constructor_parameters(cls):
    import inspect

    names = [n for n in inspect.signature(cls).parameters]
    est = cls(4, seed=7)
    assert list(est.get_params()) == names == list(est.get_params(deep=False))
    assert est.get_params()["n_clusters"] == 4 and est.get_params()["seed"] == 7
    if cls is StreamingKMeans:
        assert tuple(names) == _PARAMS  # the state_dict's params


@pytest.mark.parametrize("cls", [KMeans, StreamingKMeans])
def test_set_params_unknown_name_is_named_and_changes_nothing(cls):
    est = cls(3, seed=0)
    with pytest.raises(ValueError, match="invalid parameter 'n_cluster' for estimator"):
        est.set_params(max_iter=7, n_cluster=4)
    assert est.max_iter != 7 and est.n_clusters == 3
    assert est.set_params(max_iter=7) is est and est.max_iter == 7


@pytest.mark.parametrize("make", [lambda: KMeans(3, seed=0, max_iter=50),
                                  lambda: StreamingKMeans(3, seed=0, half_life=20.0)])
def test_clone_gives_equal_params_and_an_unfitted_copy(make):
    X, _ = _blobs()
    est = make().fit(X)
    copy = clone(est)
    assert type(copy) is type(est) and copy is not est
    assert copy.get_params() == est.get_params()
    with pytest.raises(SkNotFittedError):
        check_is_fitted(copy)
    with pytest.raises(NotFittedError):
        copy.predict(X)
    check_is_fitted(est)
    np.testing.assert_array_equal(copy.fit(X).predict(X), est.predict(X))  # same seed, same model


def test_not_fitted_error_is_sklearns_too():
    for est in (KMeans(3), StreamingKMeans(3)):
        with pytest.raises(NotFittedError) as info:
            est.transform([[0.0, 1.0]])
        assert isinstance(info.value, SkNotFittedError)
        assert isinstance(info.value, ValueError) and isinstance(info.value, AttributeError)
        # copy goes through __reduce__ as joblib's transport of a worker's exception does
        again = copy.deepcopy(info.value)
        assert type(again) is type(info.value) and str(again) == str(info.value)


def test_cluster_package_does_not_import_sklearn():
    code = textwrap.dedent("""
        import sys
        from streamkm.cluster import KMeans, NotFittedError, StreamingKMeans
        import streamkm.cluster
        assert not any(m == "sklearn" or m.startswith("sklearn.") for m in sys.modules), "sklearn imported"
        for est in (KMeans(2), StreamingKMeans(2)):
            try:
                est.predict([[0.0]])
            except NotFittedError as exc:
                assert isinstance(exc, ValueError) and "not" in str(exc)
            else:
                raise AssertionError("no error")
        assert KMeans(2).set_params(n_clusters=3).get_params()["n_clusters"] == 3
        assert "sklearn" not in sys.modules
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# --------------------------------------------------------------------------
# fit semantics, Pipeline, GridSearchCV
# --------------------------------------------------------------------------
def test_streaming_fit_restarts():
    X, _ = _blobs(seed=1)
    Z, _ = _blobs(seed=2, d=5)
    km = StreamingKMeans(3, seed=0).fit(Z)  # different width: fit restarts instead of rejecting
    km.fit(X)
    fresh = StreamingKMeans(3, seed=0).fit(X)
    assert km.n_seen_ == len(X) and km.n_features_in_ == 3
    np.testing.assert_array_equal(km.cluster_centers_, fresh.cluster_centers_)
    with pytest.raises(ValueError, match="batch_size"):
        km.fit(Z, batch_size=0)
    np.testing.assert_array_equal(km.cluster_centers_, fresh.cluster_centers_)  # rejected: unchanged


def test_streaming_fit_predict_and_fit_transform():
    X, y = _blobs(k=4)
    labels = StreamingKMeans(4, seed=0).fit_predict(X, batch_size=64)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(y, labels) > 0.95
    D = StreamingKMeans(4, seed=0).fit_transform(X, batch_size=64)
    np.testing.assert_array_equal(D.argmin(axis=1), labels)


@pytest.mark.parametrize("make", [lambda: KMeans(4, seed=0, n_init=3), lambda: StreamingKMeans(4, seed=0)])
def test_pipeline_with_standard_scaler(make):
    # Features in very different units: unscaled, the third one decides the clusters.
    X, y = _blobs(k=4, scale=[1.0, 1.0, 1000.0])
    pipe = make_pipeline(StandardScaler(), make()).fit(X)
    Xs = StandardScaler().fit_transform(X)
    direct = make().fit(Xs)
    np.testing.assert_array_equal(pipe.predict(X), direct.predict(Xs))
    assert pipe.transform(X).shape == (len(X), 4)
    assert pipe.score(X) == pytest.approx(direct.score(Xs))
    check_is_fitted(pipe)


@pytest.mark.parametrize("make", [lambda: KMeans(2, seed=0), lambda: StreamingKMeans(2, seed=0)])
def test_grid_search_picks_the_true_number_of_clusters(make):
    X, y = _blobs(n_per=50, k=4, seed=3)
    step = type(make()).__name__.lower()
    search = GridSearchCV(make_pipeline(StandardScaler(), make()),
                          {f"{step}__n_clusters": [2, 3, 4, 6]}, scoring="adjusted_rand_score", cv=3)
    search.fit(X, y)
    assert search.best_params_ == {f"{step}__n_clusters": 4}
    assert search.best_estimator_[-1].n_clusters == 4
    assert search.best_score_ > 0.9

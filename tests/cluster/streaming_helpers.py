"""Shared helpers for the StreamingKMeans tests (data, state comparison, a fitted model)."""

from __future__ import annotations

import json

import numpy as np

from streamkm.cluster import StreamingKMeans
from tests.helpers.data import mixture as blobs
from tests.helpers.data import separated_means

__all__ = ["assert_state_equal", "blobs", "fitted_model", "json_roundtrip", "separated_means"]


def json_roundtrip(state):
    """Send every non-array leaf through JSON, as a checkpoint would."""
    if isinstance(state, dict):
        return {key: json_roundtrip(v) for key, v in state.items()}
    if isinstance(state, np.ndarray):
        return state.copy()
    return json.loads(json.dumps(state))


def assert_state_equal(a, b, path="state"):
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for key in a:
            assert_state_equal(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), path
        assert a.dtype == b.dtype and a.shape == b.shape, path
        np.testing.assert_array_equal(a, b, err_msg=path)
    else:
        assert a == b and type(a) is type(b), (path, a, b)


def fitted_model(seed=0, k=4, d=3, n_batches=10, m=200, **kw):
    rng = np.random.default_rng(seed)
    means = separated_means(k, d, rng)
    model = StreamingKMeans(k, seed=seed, **kw)
    for _ in range(n_batches):
        model.partial_fit(blobs(means, m, rng)[0])
    return model, means, rng

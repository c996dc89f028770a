"""The one data factory of the test suite: Gaussian mixtures in a few reproducible shapes.

Every generator takes a seed or a ``numpy.random.Generator`` and draws in a fixed order,
so a test's data never depends on what ran before it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mixture", "separated_means", "blobs", "balanced_blobs", "uniform_blobs", "clusters_at"]


def mixture(means, n, rng, *, sigma=1.0, dtype=np.float32):
    """*n* points around *means* (k, d), each cluster drawn uniformly; returns (X, labels)."""
    means = np.asarray(means)
    labels = rng.integers(0, len(means), n)
    X = means[labels] + sigma * rng.normal(size=(n, means.shape[1]))
    return X.astype(dtype), labels


def separated_means(k, d, rng, scale=10.0):
    """*k* cluster means in *d* dimensions, N(0, scale²) per coordinate."""
    return rng.normal(scale=scale, size=(k, d))


def blobs(n, d=4, k=3, *, center_scale=6.0, seed=0):
    """Unit-variance mixture of *k* clusters with N(0, center_scale²) means; X only (float32)."""
    rng = np.random.default_rng(seed)
    return mixture(separated_means(k, d, rng, scale=center_scale), n, rng)[0]


def balanced_blobs(n_per=100, k=5, d=4, spread=10.0, scale=1.0, seed=0, dtype=np.float32):
    """*n_per* points per cluster, shuffled; means N(0, spread²); returns (X, labels)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * spread
    y = np.repeat(np.arange(k), n_per)
    X = centers[y] + scale * rng.normal(size=(len(y), d))
    perm = rng.permutation(len(y))
    return X[perm].astype(dtype), y[perm]


def uniform_blobs(k, d=4, n_per=80, spread=20.0, seed=0):
    """*n_per* points per cluster in cluster order; means uniform in [-spread, spread]^d."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-spread, spread, size=(k, d))
    y = np.repeat(np.arange(k), n_per)
    return (centers[y] + rng.normal(size=(len(y), d))).astype(np.float32), y


def clusters_at(n_per, centers, scale=0.1, seed=0, dtype=np.float32):
    """*n_per* points N(c, scale²) around each given centre, in cluster order; returns (X, labels)."""
    rng = np.random.default_rng(seed)
    centers = np.asarray(centers, dtype=np.float64)
    X = np.concatenate([c + scale * rng.normal(size=(n_per, centers.shape[1])) for c in centers])
    y = np.repeat(np.arange(len(centers)), n_per)
    return X.astype(dtype), y

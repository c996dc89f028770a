"""A river clusterer over :class:`~streamkm.cluster.StreamingKMeans`.

river feeds one point at a time as a dict of features; StreamingKMeans learns
from batches of rows. :class:`RiverStreamingKMeans` converts the dicts to rows
in a fixed feature order and hands every ``batch_size`` points to
:meth:`StreamingKMeans.partial_fit <streamkm.cluster.StreamingKMeans.partial_fit>`,
so the per-point cost is a dict lookup per feature and the model update stays
vectorized.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from river import base

from streamkm.cluster import MAX_ABS_VALUE, StreamingKMeans

__all__ = ["RiverStreamingKMeans"]


def _feature_order(key: Any) -> tuple[str, str]:
    # A total order on any hashable keys (river allows ints, strings, tuples ...).
    return type(key).__name__, str(key)


class RiverStreamingKMeans(base.Clusterer):
    """Streaming k-means as a river clusterer: ``learn_one`` / ``predict_one`` over dicts.

    Points are buffered and every ``batch_size`` of them go to
    ``StreamingKMeans.partial_fit`` as one batch, so decay (``half_life``,
    counted in batches) and the cost of an update are per batch, not per point.

    **Features.** The feature set is fixed by the first batch: the union of
    its points' keys, in a stable order (sorted by type name, then by
    ``str(key)``), so the order of a dict's keys never matters. Afterwards a
    missing feature counts as 0 (river's convention for sparse dicts) and a
    feature outside the set is ignored. A first batch in which no point has a
    feature is discarded (there is nothing to cluster on).

    **Before initialization.** StreamingKMeans initializes (k-means++ and
    Lloyd) once ``3 · n_clusters`` points have reached it, i.e. at the first
    full batch when ``batch_size >= 3 · n_clusters`` (with the defaults, at
    the 64th point). Until then :meth:`predict_one` returns 0 for
    every point. After that it predicts with the model as of the last full
    batch: the up to ``batch_size - 1`` pending points are not in it yet
    (:meth:`flush` sends them early).

    Parameters
    ----------
    n_clusters : int, default=5
        Number of clusters ``k``.
    batch_size : int, default=64
        Points per ``partial_fit`` call.
    half_life : float or None, default=None
        Half-life of a point's weight, in batches (``None``: no forgetting).
    reservoir_size : int, default=1000
        Points kept for reseeding and dying-cluster replacement (>= n_clusters).
    seed : int or None, default=None
        Seed of the StreamingKMeans generators.

    Attributes
    ----------
    kmeans : StreamingKMeans
        The wrapped model (centers in ``kmeans.cluster_centers_``, columns in
        the order of :attr:`features`).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> model = RiverStreamingKMeans(n_clusters=2, batch_size=20, seed=0)
    >>> model.predict_one({"a": 5.0, "b": 5.0})  # nothing learned yet
    0
    >>> for i in range(200):
    ...     c = 5.0 * (i % 2)
    ...     model.learn_one({"b": c + rng.normal(0, 0.1), "a": c + rng.normal(0, 0.1)})
    >>> model.features
    ('a', 'b')
    >>> model.predict_one({"a": 0.1, "b": 0.0}) != model.predict_one({"b": 4.9, "a": 5.1})
    True
    """

    kmeans: StreamingKMeans
    batch_size: int

    def __init__(
        self,
        n_clusters: int = 5,
        *,
        batch_size: int = 64,
        half_life: float | None = None,
        reservoir_size: int = 1000,
        seed: int | None = None,
    ) -> None:
        if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
        self.n_clusters = n_clusters
        self.batch_size = batch_size
        self.half_life = half_life
        self.reservoir_size = reservoir_size
        self.seed = seed
        # Validates the other hyperparameters (the constructor raises on a bad one).
        self.kmeans = StreamingKMeans(n_clusters, half_life=half_life,
                                      reservoir_size=reservoir_size, seed=seed)
        self._features: tuple[Any, ...] | None = None
        self._pending: list[dict[Any, float]] = []

    @property
    def features(self) -> tuple[Any, ...] | None:
        """Feature names in column order; None until the first batch fixed them."""
        return self._features

    @property
    def n_pending(self) -> int:
        """Points learned but not yet sent to the model."""
        return len(self._pending)

    @staticmethod
    def _values(x: dict[Any, Any]) -> dict[Any, float]:
        """``x`` as floats (a copy), or ValueError/TypeError naming the bad feature."""
        if not isinstance(x, dict):
            raise TypeError(f"x must be a dict of features; got {type(x).__name__}")
        out = {}
        for key, value in x.items():
            # float first: the isinstance check against the numbers ABC costs more than the rest.
            if type(value) is float:
                v = value
            elif isinstance(value, numbers.Real):
                v = float(value)
            else:
                raise TypeError(f"feature {key!r} must be a real number; got {value!r} "
                                f"of type {type(value).__name__}")
            if not -MAX_ABS_VALUE <= v <= MAX_ABS_VALUE:  # also False for NaN
                raise ValueError(f"feature {key!r} must be finite with magnitude at most "
                                 f"{MAX_ABS_VALUE:.0e}; got {value!r}")
            out[key] = v
        return out

    def _row(self, x: dict[Any, float]) -> list[float]:
        assert self._features is not None
        return [x.get(f, 0.0) for f in self._features]

    def learn_one(self, x: dict[Any, Any]) -> None:
        """Add one point; every ``batch_size``-th call updates the model.

        Parameters
        ----------
        x : dict of feature name to real number
            Finite values. ``x`` is copied, never kept or modified.

        Raises
        ------
        TypeError, ValueError
            A non-numeric or non-finite value (named); nothing is learned.
        """
        self._pending.append(self._values(x))
        if len(self._pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Send the pending points to the model now, as one (possibly short) batch."""
        if not self._pending:
            return
        if self._features is None:
            keys = {key for p in self._pending for key in p}
            if not keys:
                self._pending = []
                return
            self._features = tuple(sorted(keys, key=_feature_order))
        X = np.array([self._row(p) for p in self._pending], dtype=np.float64)
        self.kmeans.partial_fit(X)
        self._pending = []

    def predict_one(self, x: dict[Any, Any]) -> int:
        """Index of the nearest center; 0 while the model is not initialized.

        Parameters
        ----------
        x : dict of feature name to real number
            Missing features count as 0, unknown ones are ignored. Not modified.

        Returns
        -------
        int
            In ``range(n_clusters)``.
        """
        values = self._values(x)
        if not self.kmeans.is_initialized_:
            return 0
        return int(self.kmeans.predict(np.array([self._row(values)], dtype=np.float64))[0])

    @classmethod
    def _unit_test_params(cls) -> Any:
        yield {"n_clusters": 3, "batch_size": 16, "seed": 0}

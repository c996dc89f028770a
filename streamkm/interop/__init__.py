"""Adapters to other libraries' estimator APIs.

:mod:`streamkm.interop.river` wraps :class:`~streamkm.cluster.StreamingKMeans`
as a river clusterer (``learn_one`` / ``predict_one`` over dicts). The
scikit-learn protocol needs no adapter: the estimators of
:mod:`streamkm.cluster` implement it themselves without importing
scikit-learn. This package is imported by nothing in the service.
"""

__all__: list[str] = []

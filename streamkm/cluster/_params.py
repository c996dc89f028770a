"""The scikit-learn estimator protocol, without scikit-learn.

:class:`ParamsMixin` gives :class:`~streamkm.cluster.KMeans` and
:class:`~streamkm.cluster.StreamingKMeans` what scikit-learn's ``clone``,
``Pipeline``, ``GridSearchCV`` and ``check_estimator`` call on an estimator:
``get_params`` / ``set_params`` over the constructor's hyperparameters (stored
verbatim under their own names), ``__sklearn_tags__`` and
``__sklearn_is_fitted__``. scikit-learn is a development dependency only:
it is imported inside ``__sklearn_tags__`` (which only scikit-learn calls) and
looked up in ``sys.modules`` (never imported) when a "not fitted" error is
raised, so this module needs nothing beyond the standard library.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

__all__ = ["NotFittedError", "ParamsMixin", "not_fitted_error"]


class NotFittedError(ValueError, AttributeError):
    """An estimator was asked to predict, transform or score before it was fitted.

    A ``ValueError`` (what streamkm raised before this class existed) and an
    ``AttributeError`` (``hasattr``-style probing), like scikit-learn's own
    ``sklearn.exceptions.NotFittedError``. When scikit-learn is loaded in the
    process the raised exception is also an instance of scikit-learn's class
    (see :func:`not_fitted_error`), so code catching either one catches it.
    """

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # Rebuilt through not_fitted_error: the class made with sklearn's base is created at
        # run time, so it could not be found by name (joblib workers send exceptions back).
        return not_fitted_error, (str(self),)


_COMBINED: dict[type[Exception], type[NotFittedError]] = {}


def _with_sklearn_base(sk_not_fitted: type[Exception]) -> type[NotFittedError]:
    # One class per sklearn class (so the raised type is stable); both bases derive from
    # (ValueError, AttributeError), so the MRO is consistent.
    cls = _COMBINED.get(sk_not_fitted)
    if cls is None:
        cls = _COMBINED[sk_not_fitted] = type(
            "NotFittedError", (NotFittedError, sk_not_fitted), {"__module__": __name__})
    return cls


def not_fitted_error(message: str) -> NotFittedError:
    """A :class:`NotFittedError` carrying ``message``.

    If ``sklearn.exceptions`` is already imported (the caller uses
    scikit-learn), the exception also subclasses its ``NotFittedError``,
    which scikit-learn's checks and meta-estimators test for. scikit-learn is
    never imported here.

    Examples
    --------
    >>> err = not_fitted_error("not fitted yet")
    >>> isinstance(err, ValueError) and isinstance(err, AttributeError), str(err)
    (True, 'not fitted yet')
    """
    sk = sys.modules.get("sklearn.exceptions")
    sk_cls = getattr(sk, "NotFittedError", None)
    if isinstance(sk_cls, type) and issubclass(sk_cls, Exception):
        return _with_sklearn_base(sk_cls)(message)
    return NotFittedError(message)


class ParamsMixin:
    """``get_params`` / ``set_params`` / tags of a scikit-learn-compatible clusterer.

    The hyperparameters are the constructor's parameters (keyword-only after
    ``n_clusters``), each stored verbatim as an attribute of the same name.
    A subclass validates a ``set_params`` call in :meth:`_check_set_params`
    (run with the new values in place; raising restores the old ones) and
    says whether it is fitted in :meth:`__sklearn_is_fitted__`.
    """

    @classmethod
    def _param_names(cls) -> tuple[str, ...]:
        sig = inspect.signature(cls.__init__)
        return tuple(name for name, p in sig.parameters.items()
                     if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyperparameters as passed to the constructor.

        Parameters
        ----------
        deep : bool, default=True
            Accepted for scikit-learn; no hyperparameter is itself an
            estimator, so it changes nothing.

        Returns
        -------
        params : dict of str to object
            Name → value, in constructor order (the stored objects, not copies).
        """
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Any:
        """Set hyperparameters by name, validated as the constructor validates them.

        Parameters
        ----------
        **params
            New values of constructor parameters.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            An unknown parameter name (named in the message), or a value the
            estimator rejects; TypeError for a value of the wrong type. The
            estimator is then unchanged.
        """
        valid = self._param_names()
        for name in params:
            if name not in valid:
                raise ValueError(
                    f"invalid parameter {name!r} for estimator {type(self).__name__}; "
                    f"valid parameters are {sorted(valid)}"
                )
        old = {name: getattr(self, name) for name in params}
        for name, value in params.items():
            setattr(self, name, value)
        try:
            self._check_set_params(old)
        except BaseException:
            for name, value in old.items():
                setattr(self, name, value)
            raise
        return self

    def __repr__(self) -> str:
        """``Name(param=value, ...)`` with the hyperparameters that differ from their defaults."""
        defaults = inspect.signature(type(self).__init__).parameters
        parts = []
        for name, value in self.get_params().items():
            default = defaults[name].default
            if value is default or (type(value) is type(default) and not hasattr(value, "shape")
                                    and value == default):
                continue
            shape = getattr(value, "shape", None)
            text = f"<array of shape {shape}>" if shape is not None else repr(value)
            parts.append(f"{name}={text}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def _check_set_params(self, old: dict[str, Any]) -> None:
        """Validate the hyperparameters just set (``old`` holds the replaced values).

        Raise to reject them (:meth:`set_params` then restores ``old``). The
        default accepts everything, for estimators that validate in ``fit``.
        """

    def __sklearn_is_fitted__(self) -> bool:
        """Whether ``predict``/``transform``/``score`` may be called (for sklearn's ``check_is_fitted``)."""
        raise NotImplementedError

    def __sklearn_tags__(self) -> Any:
        """scikit-learn estimator tags: a clusterer over dense 2-D float input, y ignored.

        Only scikit-learn calls this, so importing it here adds no runtime
        dependency. ``transform`` keeps float64 as float64 and float32 as
        float32.
        """
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(
            estimator_type="clusterer",
            target_tags=TargetTags(required=False),
            transformer_tags=TransformerTags(preserves_dtype=["float64", "float32"])
            if hasattr(self, "transform") else None,
            input_tags=InputTags(two_d_array=True, sparse=False, allow_nan=False),
            requires_fit=True,
        )

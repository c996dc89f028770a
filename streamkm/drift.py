"""Drift detection on the per-batch objective with river's detectors, checkpointable without pickle.

:class:`DriftMonitor` wraps one of river's detectors (ADWIN [1]_ by default,
Page-Hinkley [2]_ or KSWIN [3]_) fed with a scalar series (the daemon feeds
each pipeline's prequential batch objective). river detectors cannot be
serialized without pickle, so the monitor keeps the invariant

    live detector  ==  fresh detector(params) fed with ``history_``

and its state is just ``history_`` (plus counters). Restoring builds a fresh
detector and replays the history, so a restored monitor continues
bit-identically. The invariant is maintained by:

- after a detection, a fresh detector and an empty history (the monitor
  resets; river's own post-drift behaviour is not used);
- when the history reaches ``max_history`` values, it is trimmed to its
  newest ``max_history // 2`` values and the detector rebuilt from them —
  the same deterministic operation a restore performs;
- KSWIN's random sampling uses a fixed ``seed`` (default 0) in every rebuild.

References
----------
.. [1] Bifet, A. and Gavaldà, R. (2007). Learning from time-changing data with
   adaptive windowing. SIAM International Conference on Data Mining.
.. [2] Page, E. S. (1954). Continuous inspection schemes. Biometrika 41(1/2).
.. [3] Raab, C., Heusinger, M. and Schleif, F.-M. (2020). Reactive soft
   prototype computing for concept drift streams. Neurocomputing 416.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["DriftMonitor", "DRIFT_METHOD_PARAMS", "METHODS"]

#: Detector names accepted by :class:`DriftMonitor`.
METHODS = ("adwin", "page_hinkley", "kswin")
#: Constructor parameters accepted per method (river's names).
DRIFT_METHOD_PARAMS: dict[str, frozenset[str]] = {
    "adwin": frozenset({"delta", "clock", "max_buckets", "min_window_length", "grace_period"}),
    "page_hinkley": frozenset({"min_instances", "delta", "threshold", "alpha", "mode"}),
    "kswin": frozenset({"alpha", "window_size", "stat_size", "seed"}),
}


def _make_detector(method: str, params: dict[str, Any]) -> Any:
    from river import drift

    classes: dict[str, Any] = {"adwin": drift.ADWIN, "page_hinkley": drift.PageHinkley, "kswin": drift.KSWIN}
    return classes[method](**params)


class DriftMonitor:
    """Deterministic, checkpointable drift detector over a scalar series.

    Parameters
    ----------
    method : {"adwin", "page_hinkley", "kswin"}
    max_history : int, default 10_000
        Values kept for replay; at the cap the history is trimmed to its
        newest half (deterministically, see module docstring).
    **params
        Detector parameters (river names, see :data:`DRIFT_METHOD_PARAMS`).
        For KSWIN, ``seed`` defaults to 0 so runs are reproducible.

    Attributes
    ----------
    detector_ : river drift detector
    history_ : list of float
        Values fed since the last reset (bounded by ``max_history``).
    n_updates_ : int
        Values fed over the monitor's life.
    n_detections_ : int
        Drifts detected over the monitor's life.
    last_detection_ : int or None
        ``n_updates_`` at the last detection.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> series = np.r_[rng.normal(1.0, 0.1, 200), rng.normal(3.0, 0.1, 200)]
    >>> mon = DriftMonitor("adwin")
    >>> hits = [i for i, v in enumerate(series) if mon.update(v)]
    >>> len(hits) >= 1 and 200 <= hits[0] < 260
    True
    """

    def __init__(self, method: str = "adwin", *, max_history: int = 10_000, **params: Any):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if isinstance(max_history, bool) or not isinstance(max_history, int) or max_history < 16:
            raise ValueError(f"max_history must be an int >= 16, got {max_history!r}")
        unknown = sorted(set(params) - DRIFT_METHOD_PARAMS[method])
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for drift method {method!r}; "
                             f"allowed: {sorted(DRIFT_METHOD_PARAMS[method])}")
        if method == "kswin":
            params.setdefault("seed", 0)
            if params["seed"] is None:
                raise ValueError("kswin needs a fixed seed for reproducible restores, got seed=None")
        for k, v in params.items():
            if not isinstance(v, (bool, int, float, str)):
                raise TypeError(f"drift parameter {k!r} must be a JSON scalar, got {type(v).__name__}")
        self.method = method
        self.max_history = max_history
        self.params = dict(params)
        try:
            self.detector_ = _make_detector(method, self.params)
        except (TypeError, ValueError) as e:
            raise ValueError(f"invalid parameters for drift method {method!r} {self.params}: {e}") from None
        self.history_: list[float] = []
        self.n_updates_ = 0
        self.n_detections_ = 0
        self.last_detection_: int | None = None

    # ------------------------------------------------------------------
    def _rebuild(self, values: list[float]) -> None:
        det = _make_detector(self.method, self.params)
        for v in values:
            det.update(v)
        self.detector_ = det
        self.history_ = list(values)

    def update(self, value: float) -> bool:
        """Feed one value; return True if drift was detected at this value.

        After a detection the monitor resets (fresh detector, empty history).

        Raises
        ------
        ValueError
            If ``value`` is not a finite number (the monitor is unchanged).
        """
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"value must be a number, got {type(value).__name__} {value!r}") from None
        if not math.isfinite(v):
            raise ValueError(f"value must be finite, got {v!r}")
        self.n_updates_ += 1
        self.detector_.update(v)
        if self.detector_.drift_detected:
            self.n_detections_ += 1
            self.last_detection_ = self.n_updates_
            self._rebuild([])
            return True
        self.history_.append(v)
        if len(self.history_) >= self.max_history:
            self._rebuild(self.history_[-(self.max_history // 2):])
        return False

    def reset(self) -> None:
        """Forget the history (fresh detector); counters are kept."""
        self._rebuild([])

    # ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Checkpointable state: config, counters and the history as a float64 array."""
        return {
            "method": self.method,
            "params": dict(self.params),
            "max_history": self.max_history,
            "values": np.asarray(self.history_, dtype=np.float64),
            "n_updates": self.n_updates_,
            "n_detections": self.n_detections_,
            "last_detection": self.last_detection_,
        }

    def load_state_dict(self, state: dict[str, Any], *, strict: bool = True) -> None:
        """Restore from :meth:`state_dict` by replaying the history into a fresh detector.

        Parameters
        ----------
        state : dict
        strict : bool
            If True, a state written with another method/params/max_history
            raises ValueError. If False, such a state restores the counters
            but starts from an empty history (the configuration changed).
        """
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        missing = {"method", "params", "max_history", "values", "n_updates", "n_detections"} - set(state)
        if missing:
            raise ValueError(f"drift state lacks {sorted(missing)}")
        values = np.asarray(state["values"], dtype=np.float64).ravel()
        if not np.isfinite(values).all():
            raise ValueError("drift state history contains non-finite values")
        same = (state["method"] == self.method and dict(state["params"]) == self.params
                and int(state["max_history"]) == self.max_history)
        if not same and strict:
            raise ValueError(
                f"drift state is for method={state['method']!r} params={dict(state['params'])} "
                f"max_history={state['max_history']}, this monitor has method={self.method!r} "
                f"params={self.params} max_history={self.max_history}")
        if values.size > self.max_history:
            raise ValueError(f"drift state has {values.size} values, more than max_history={self.max_history}")
        self._rebuild(values.tolist() if same else [])
        self.n_updates_ = int(state["n_updates"])
        self.n_detections_ = int(state["n_detections"])
        ld = state.get("last_detection")
        self.last_detection_ = None if ld is None else int(ld)

    def __repr__(self) -> str:
        return (f"DriftMonitor(method={self.method!r}, params={self.params}, n_updates={self.n_updates_}, "
                f"n_detections={self.n_detections_})")

"""Hyperparameter checks and the ``state_dict`` format of StreamingKMeans.

Private helpers of :class:`~streamkm.cluster.StreamingKMeans`: they validate
its constructor arguments, build its state as plain arrays and JSON-able
scalars, and check a state before it is loaded (so a rejected state leaves the
model unchanged).
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any

import numpy as np

from ._validation import check_float, check_in, check_positive_int
from .reservoir import reservoir_from_state

if TYPE_CHECKING:
    from .streaming_kmeans import StreamingKMeans

__all__ = ["_PARAMS", "_STATE_FORMAT", "_STATE_VERSION", "_check_params", "_state_dict", "_validated_state"]

_STATE_FORMAT = "streamkm.StreamingKMeans"
_STATE_VERSION = 1

#: Hyperparameters, in constructor order (also the ``params`` of a state_dict).
_PARAMS = (
    "n_clusters", "decay", "half_life", "time_unit", "reservoir_size", "reservoir",
    "reseed_interval", "reseed_min_gain", "dying_threshold", "init_size", "n_init", "max_iter",
    "ewm_alpha", "memory_budget_bytes", "seed",
)


def _check_params(model: StreamingKMeans) -> float:
    """Validate the hyperparameters of ``model``; return ``γ``. Raises ValueError/TypeError."""
    check_positive_int("n_clusters", model.n_clusters)
    gamma = check_float("decay", model.decay, low=0.0, high=1.0, low_inclusive=False)
    if model.half_life is not None:
        h = check_float("half_life", model.half_life, low=0.0, low_inclusive=False)
        if model.decay != 1.0:
            raise ValueError(
                "decay and half_life are mutually exclusive; got "
                f"decay={model.decay!r} and half_life={model.half_life!r}"
            )
        gamma = 0.5 ** (1.0 / h)
        if gamma == 0.0:
            raise ValueError(
                f"half_life={model.half_life!r} is too small: gamma = 0.5^(1/half_life) "
                "underflows to 0 (decay must be > 0)"
            )
    check_in("time_unit", model.time_unit, ("batches", "points"))
    check_positive_int("reservoir_size", model.reservoir_size)
    if model.reservoir_size < model.n_clusters:
        raise ValueError(
            f"reservoir_size={model.reservoir_size} must be >= n_clusters={model.n_clusters}"
        )
    check_in("reservoir", model.reservoir, ("uniform", "time_biased"))
    if model.reservoir == "time_biased" and gamma == 1.0:
        raise ValueError(
            "reservoir='time_biased' needs forgetting: set half_life or decay < 1 "
            f"(got decay={model.decay!r}, half_life={model.half_life!r})"
        )
    if model.reseed_interval is not None:
        check_positive_int("reseed_interval", model.reseed_interval)
    check_float("reseed_min_gain", model.reseed_min_gain, low=0.0, high=1.0,
                high_inclusive=False)
    check_float("dying_threshold", model.dying_threshold, low=0.0, high=1.0,
                high_inclusive=False)
    if model.init_size is not None:
        check_positive_int("init_size", model.init_size)
    check_positive_int("n_init", model.n_init)
    check_positive_int("max_iter", model.max_iter)
    check_float("ewm_alpha", model.ewm_alpha, low=0.0, high=1.0, low_inclusive=False)
    check_positive_int("memory_budget_bytes", model.memory_budget_bytes)
    if model.seed is not None and (
        not isinstance(model.seed, numbers.Integral) or isinstance(model.seed, bool)
        or model.seed < 0
    ):
        raise TypeError(f"seed must be None or a non-negative int; got {model.seed!r}")
    return float(gamma)


def _state_dict(model: StreamingKMeans) -> dict[str, Any]:
    """Complete state of ``model`` (see :meth:`StreamingKMeans.state_dict`); arrays are copies."""
    buf = None
    if model._buffer:
        buf = np.concatenate(model._buffer)
    return {
        "format": _STATE_FORMAT,
        "version": _STATE_VERSION,
        "params": model.get_params(),
        "rng": model._rng.bit_generator.state,
        "reservoir_rng": model._reservoir_rng.bit_generator.state,
        "is_initialized": model.is_initialized_,
        "n_features_in": model.n_features_in_,
        "dtype": None if model._dtype is None else model._dtype.name,
        "centers": None if model._centers is None else model._centers.copy(),
        "counts": None if model.counts_ is None else model.counts_.copy(),
        "init_buffer": buf,
        "reservoir": None if model._res is None else model._res.state_dict(),
        "n_seen": model.n_seen_,
        "n_batches": model.n_batches_,
        "last_batch_objective": model.last_batch_objective_,
        "ewm_objective": model.ewm_objective_,
        "last_center_shift": model.last_center_shift_,
        "n_reseeds": model.n_reseeds_,
        "n_reseeds_rejected": model.n_reseeds_rejected_,
        "n_dying_replaced": model.n_dying_replaced_,
    }


def _validated_state(model: StreamingKMeans, state: dict[str, Any]) -> dict[str, Any]:
    """Check ``state`` against ``model``; return the attributes to set on it.

    Raises ValueError/TypeError naming the problem; modifies nothing.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict; got {type(state).__name__}")
    expected = set(model.state_dict())
    missing, unknown = expected - set(state), set(state) - expected
    if missing or unknown:
        raise ValueError(
            f"state keys mismatch: missing {sorted(missing)}, unknown {sorted(unknown)}"
        )
    if state["format"] != _STATE_FORMAT or state["version"] != _STATE_VERSION:
        raise ValueError(
            f"state format {state['format']!r} version {state['version']!r} is not "
            f"{_STATE_FORMAT!r} version {_STATE_VERSION}"
        )
    params = state["params"]
    mine = model.get_params()
    if not isinstance(params, dict) or set(params) != set(mine):
        raise ValueError(f"state params must have keys {sorted(mine)}")
    # ``seed`` only matters at construction; the restored RNG state replaces
    # it, so it is adopted from the state rather than compared.
    diff = {key: (params[key], mine[key]) for key in mine
            if key != "seed" and params[key] != mine[key]}
    if diff:
        desc = ", ".join(f"{key}: state={a!r} vs model={b!r}" for key, (a, b) in diff.items())
        raise ValueError(f"hyperparameter mismatch between state and model: {desc}")

    rngs = {}
    for key in ("rng", "reservoir_rng"):
        gen = np.random.default_rng()
        try:
            gen.bit_generator.state = state[key]
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"state[{key!r}] is not a valid {type(gen.bit_generator).__name__} "
                             f"state: {exc}") from exc
        rngs[key] = gen

    counters = {}
    for key in ("n_seen", "n_batches", "n_reseeds", "n_reseeds_rejected", "n_dying_replaced"):
        v = state[key]
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 0:
            raise ValueError(f"state[{key!r}] must be an integer >= 0; got {v!r}")
        counters[key] = int(v)
    for key in ("last_batch_objective", "ewm_objective", "last_center_shift"):
        v = state[key]
        if v is not None and not (isinstance(v, numbers.Real) and math.isfinite(v)):
            raise ValueError(f"state[{key!r}] must be None or a finite number; got {v!r}")

    k = model.n_clusters
    d = state["n_features_in"]
    init = state["is_initialized"]
    if not isinstance(init, bool):
        raise ValueError(f"state['is_initialized'] must be a bool; got {init!r}")
    dtype_name = state["dtype"]
    if d is None:
        if init or dtype_name is not None or any(
            state[key] is not None for key in ("centers", "counts", "init_buffer", "reservoir")
        ) or counters["n_seen"]:
            raise ValueError("state without n_features_in must be a fresh, empty model")
        dtype = None
    else:
        if not isinstance(d, numbers.Integral) or isinstance(d, bool) or d < 1:
            raise ValueError(f"state['n_features_in'] must be an integer >= 1; got {d!r}")
        if dtype_name not in ("float32", "float64"):
            raise ValueError(f"state['dtype'] must be 'float32' or 'float64'; got {dtype_name!r}")
        dtype = np.dtype(dtype_name)

    centers = counts = None
    buffer: list[np.ndarray] = []
    if init:
        centers = np.asarray(state["centers"])
        counts = np.asarray(state["counts"])
        if centers.shape != (k, d) or centers.dtype != np.float64:
            raise ValueError(f"state['centers'] must be float64 of shape {(k, d)}; "
                             f"got {centers.dtype} {centers.shape}")
        if counts.shape != (k,) or counts.dtype != np.float64:
            raise ValueError(f"state['counts'] must be float64 of shape ({k},); "
                             f"got {counts.dtype} {counts.shape}")
        if not (np.isfinite(centers).all() and np.isfinite(counts).all()) or counts.min() < 0:
            raise ValueError("state['centers']/['counts'] must be finite with counts >= 0")
        if state["init_buffer"] is not None:
            raise ValueError("an initialized state must have init_buffer=None")
        centers, counts = centers.copy(), counts.copy()
    else:
        if state["centers"] is not None or state["counts"] is not None:
            raise ValueError("an uninitialized state must have centers=None and counts=None")
        buf = state["init_buffer"]
        if buf is not None:
            buf = np.asarray(buf)
            if buf.ndim != 2 or buf.shape[1] != d or buf.dtype != dtype or buf.shape[0] < 1:
                raise ValueError(f"state['init_buffer'] must be {dtype} of shape (n, {d}); "
                                 f"got {buf.dtype} {buf.shape}")
            if buf.shape[0] >= model.init_threshold:
                raise ValueError(f"state['init_buffer'] holds {buf.shape[0]} points, enough "
                                 f"to initialize ({model.init_threshold}); corrupted state")
            if not np.isfinite(buf).all():
                raise ValueError("state['init_buffer'] contains NaN or infinity")
            buffer = [buf.copy()]
        # Before initialization every point seen is still in the buffer.
        n_buf = 0 if buf is None else buf.shape[0]
        if n_buf != counters["n_seen"]:
            raise ValueError(f"state['init_buffer'] holds {n_buf} points but n_seen="
                             f"{counters['n_seen']}; an uninitialized model buffers "
                             "every point it saw")
    res = None
    if d is not None:
        rstate = state["reservoir"]
        if not isinstance(rstate, dict):
            raise ValueError("state['reservoir'] must be a dict once data was seen")
        res = reservoir_from_state(rstate)
        if (res.kind, res.capacity, res.n_features, res.dtype) != (
                model.reservoir, model.reservoir_size, d, dtype):
            raise ValueError(
                f"state['reservoir'] is {res.kind} capacity={res.capacity} "
                f"n_features={res.n_features} dtype={res.dtype}; expected {model.reservoir} "
                f"capacity={model.reservoir_size} n_features={d} dtype={dtype}"
            )
        # partial_fit_stats offers the reservoir only a sample of each batch, so it may
        # have seen fewer points than the model, never more.
        if res.n_seen > counters["n_seen"]:
            raise ValueError(f"state['reservoir'] saw {res.n_seen} points but n_seen="
                             f"{counters['n_seen']}")

    seed = params["seed"]
    if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)
                             or seed < 0):
        raise ValueError(f"state params seed must be None or an integer >= 0; got {seed!r}")
    return {
        "seed": seed,
        "_rng": rngs["rng"],
        "_reservoir_rng": rngs["reservoir_rng"],
        "is_initialized_": init,
        "n_features_in_": None if d is None else int(d),
        "_dtype": dtype,
        "_centers": centers,
        "counts_": counts,
        "_buffer": buffer,
        "_n_buffered": sum(b.shape[0] for b in buffer),
        "_res": res,
        "n_seen_": counters["n_seen"],
        "n_batches_": counters["n_batches"],
        "n_reseeds_": counters["n_reseeds"],
        "n_reseeds_rejected_": counters["n_reseeds_rejected"],
        "n_dying_replaced_": counters["n_dying_replaced"],
        "last_batch_objective_": state["last_batch_objective"],
        "ewm_objective_": state["ewm_objective"],
        "last_center_shift_": state["last_center_shift"],
    }

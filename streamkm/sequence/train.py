"""Self-supervised training of :class:`~streamkm.sequence.lstm.LSTMEncoder` in NumPy.

Backpropagation through time for the full encoder (any number of layers, one
or two directions, variable lengths), Adam, global gradient-norm clipping and
shuffled mini-batches, all seeded from one ``seed``.

Objectives
----------
``"next_event"``
    A linear head predicts the next event from the last layer's forward state,
    ``x_hat_{t+1} = W h_t + b`` with W of shape (F, H), for every step t whose
    successor is a valid (unpadded) step. Loss: mean squared error per feature.
    Only the forward direction may be used: with ``bidirectional=True`` the
    last layer's backward direction receives no gradient, and multi-layer
    bidirectional encoders are rejected because the lower layers' backward
    direction would let the predictor see x_{t+1}.
``"autoencoder"``
    A linear decoder reconstructs the whole window from the embedding
    ``e = [h_n forward, h_n backward]`` of the last layer (what
    ``LSTMEncoder.embed(pooling="last")`` returns): ``x_hat_t = W_t e + b_t`` with
    one (F, D*H) matrix per time step, stored as W of shape (T*F, D*H). Loss:
    mean squared error over the valid steps.

Layout: the kernels (:mod:`streamkm.sequence.lstm.kernels` forward,
:mod:`streamkm.sequence.lstm.backward` BPTT) work feature-major, arrays
(features, T, B); the public functions take batch-first (B, T, F).

References
----------
Werbos, P. J. (1990). Backpropagation through time: what it does and how to do
it. Proceedings of the IEEE 78(10), 1550-1560.
Kingma, D. P. and Ba, J. (2015). Adam: a method for stochastic optimization. ICLR.
Pascanu, R., Mikolov, T. and Bengio, Y. (2013). On the difficulty of training
recurrent neural networks. ICML (gradient-norm clipping).
Srivastava, N., Mansimov, E. and Salakhutdinov, R. (2015). Unsupervised learning
of video representations using LSTMs. ICML (sequence autoencoder, future predictor).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from streamkm.sequence._validation import as_float_array, check_finite, check_lengths
from streamkm.sequence.lstm.backward import encoder_backward
from streamkm.sequence.lstm.encoder import LSTMEncoder
from streamkm.sequence.lstm.kernels import Lengths, Workspace, forward_fm, prepare

__all__ = ["OBJECTIVES", "TrainResult", "init_head", "loss_and_gradients", "train_encoder"]

OBJECTIVES = ("next_event", "autoencoder")


@dataclass
class TrainResult:
    """What :func:`train_encoder` returns (the encoder itself is trained in place).

    Attributes
    ----------
    history : list of dict
        One record per epoch: ``epoch`` (1-based), ``loss`` (mean training loss
        over the epoch's batches, weighted by their number of targets),
        ``val_loss`` (float, or None without a validation split),
        ``windows_per_s`` (training windows per second of the epoch),
        ``seconds``, ``grad_norm`` (mean global gradient norm before clipping).
    head : dict of str to ndarray
        The objective's head: ``"weight"`` and ``"bias"``.
    objective : str
    encoder : LSTMEncoder
        The trained encoder (same object that was passed in).
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    head: dict[str, NDArray[Any]] = field(default_factory=dict)
    objective: str = "next_event"
    encoder: LSTMEncoder | None = None


# --------------------------------------------------------------------------- #
# objectives
# --------------------------------------------------------------------------- #
def init_head(encoder: LSTMEncoder, objective: str, seq_len: int, rng: Any) -> dict[str, NDArray[Any]]:
    """Initial head parameters, ~U(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights and zero bias.

    ``next_event``: weight (F, H), bias (F,). ``autoencoder``: weight (T*F, D*H),
    bias (T*F,).
    """
    _check_objective(objective)
    rng = np.random.default_rng(rng)
    dt = np.dtype(encoder.dtype)
    F, H = encoder.input_size, encoder.hidden_size
    shape: tuple[int, int]
    if objective == "next_event":
        shape = (F, H)
    else:
        shape = (seq_len * F, encoder.embedding_dim)
    bound = 1.0 / math.sqrt(shape[1])
    return {"weight": rng.uniform(-bound, bound, size=shape).astype(dt),
            "bias": np.zeros(shape[0], dtype=dt)}


def _check_objective(objective: object) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


def _objective(objective: str, head: Mapping[str, NDArray[Any]], x: NDArray[Any], out: NDArray[Any],
               h_n: NDArray[Any], lens: Lengths | None, lengths: NDArray[np.int64] | None,
               L: int, D: int, H: int, need_grad: bool
               ) -> tuple[float, float, dict[str, NDArray[Any]] | None, NDArray[Any] | None, NDArray[Any] | None]:
    """Loss, its number of targets, and (if ``need_grad``) head grads, dout, dh_n.

    ``x`` (F, T, B), ``out`` (D*H, T, B), ``h_n`` (L*D, H, B), all feature-major.
    """
    F, T, B = x.shape
    dtype = x.dtype
    W, b = head["weight"], head["bias"]
    if objective == "next_event":
        # steps 0..T-2 of the forward direction as an (H, (T-1)*B) view (rows T*B apart): no copy
        hf = out[:H].reshape(H, T * B)[:, : (T - 1) * B]
        pred = (W @ hf).reshape(F, T - 1, B)
        pred += b[:, None, None]
        diff = pred - x[:, 1:]
        if lengths is not None:
            m = (np.arange(1, T)[:, None] < lengths[None, :]).astype(dtype)
            diff *= m
            count = float(m.sum()) * F
        else:
            count = float((T - 1) * B * F)
        loss = float(np.einsum("ijk,ijk->", diff, diff)) / count if count else 0.0
        if not need_grad:
            return loss, count, None, None, None
        dpred = diff * (2.0 / count if count else 0.0)
        dp2 = dpred.reshape(F, (T - 1) * B)
        head_grads = {"weight": dp2 @ hf.T, "bias": dp2.sum(axis=1)}
        dout = np.empty_like(out)
        if out.shape[0] > H:
            dout[H:] = 0
        dout[:H, T - 1] = 0
        np.matmul(W.T, dp2, out=dout[:H].reshape(H, T * B)[:, : (T - 1) * B])
        return loss, count, head_grads, dout, None
    # autoencoder
    e = np.concatenate([h_n[(L - 1) * D + d] for d in range(D)], axis=0)   # (D*H, B)
    recon = W @ e
    recon += b[:, None]
    diff = recon.reshape(T, F, B) - x.transpose(1, 0, 2)
    if lens is not None:
        assert lengths is not None  # lens is built from lengths
        diff *= lens.mask[:, None, :]
        count = float(lengths.sum()) * F
    else:
        count = float(T * B * F)
    loss = float(np.einsum("ijk,ijk->", diff, diff)) / count
    if not need_grad:
        return loss, count, None, None, None
    dr = diff.reshape(T * F, B) * (2.0 / count)
    head_grads = {"weight": dr @ e.T, "bias": dr.sum(axis=1)}
    de = W.T @ dr
    dh_n = np.zeros_like(h_n)
    for d in range(D):
        dh_n[(L - 1) * D + d] = de[d * H:(d + 1) * H]
    return loss, count, head_grads, np.zeros_like(out), dh_n


def _batch_loss(encoder: LSTMEncoder, head: Mapping[str, NDArray[Any]], x_ftb: NDArray[Any],
                lengths: NDArray[np.int64] | None, objective: str, need_grad: bool,
                ws: Workspace | None = None) -> tuple[float, float, dict[str, NDArray[Any]] | None]:
    """(loss, count, grads or None) for one feature-major batch (F, T, B).

    With a workspace ``ws`` the large buffers are reused across calls (the
    returned gradients are always fresh arrays).
    """
    T = x_ftb.shape[1]
    dt = x_ftb.dtype
    H, L, D = encoder.hidden_size, encoder.num_layers, encoder.num_directions
    if lengths is not None and np.all(lengths == T):
        lengths = None
    lens = Lengths(lengths, T, dt) if lengths is not None else None
    prepared = prepare(encoder.params_, L, D, H, dt, for_training=need_grad)
    out, h_n, _, caches = forward_fm(x_ftb, prepared, H, lens, None, None, keep_cache=need_grad, ws=ws)
    loss, count, head_grads, dout, dh_n = _objective(objective, head, x_ftb, out, h_n, lens,
                                                     lengths, L, D, H, need_grad)
    if not need_grad:
        return loss, count, None
    assert head_grads is not None and dout is not None  # need_grad
    grads = encoder_backward(prepared, caches, H, lens, dout, dh_n, None, ws)
    grads.update({"head." + k: v for k, v in head_grads.items()})
    return loss, count, grads


def _validate_windows(encoder: LSTMEncoder, windows: ArrayLike, lengths_in: ArrayLike | None,
                      objective: str) -> tuple[NDArray[Any], NDArray[np.int64] | None]:
    if not isinstance(encoder, LSTMEncoder):
        raise TypeError(f"encoder must be an LSTMEncoder, got {type(encoder).__name__}")
    _check_objective(objective)
    X = as_float_array(windows, "windows", np.dtype(encoder.dtype))
    if X.ndim != 3:
        raise ValueError(f"windows must be 3-D (n_windows, seq_len, features), got shape {X.shape}")
    N, T, F = X.shape
    if F != encoder.input_size:
        raise ValueError(f"expected {encoder.input_size} features, got {F}")
    if N == 0 or T == 0:
        raise ValueError(f"windows must be non-empty, got shape {X.shape}")
    check_finite(X, "windows")
    lengths = None if lengths_in is None else check_lengths(lengths_in, N, T)
    if objective == "next_event":
        if encoder.bidirectional and encoder.num_layers > 1:
            raise ValueError("objective 'next_event' cannot train a multi-layer bidirectional encoder: "
                             "the lower layers' backward direction would see the predicted event; "
                             "use objective='autoencoder'")
        max_len = T if lengths is None else int(lengths.max())
        if max_len < 2:
            raise ValueError(f"objective 'next_event' needs windows with at least 2 valid steps, "
                             f"got seq_len {T} and max length {max_len}")
    return X, lengths


def loss_and_gradients(encoder: LSTMEncoder, head: Mapping[str, ArrayLike], windows: ArrayLike,
                       lengths: ArrayLike | None = None, *, objective: str = "next_event"
                       ) -> tuple[float, dict[str, NDArray[Any]]]:
    """Loss of one batch and the gradient of every parameter.

    Parameters
    ----------
    encoder : LSTMEncoder
    head : dict with "weight" and "bias" (see :func:`init_head`)
    windows : array_like of shape (B, T, F)
    lengths : array_like of int of shape (B,), optional

    Returns
    -------
    loss : float
    grads : dict of str to ndarray
        Encoder parameters under torch's names, head parameters as ``"head.weight"``
        and ``"head.bias"``; same shapes as the parameters.
    """
    X, lens = _validate_windows(encoder, windows, lengths, objective)
    checked = _check_head(encoder, head, objective, X.shape[1])
    x_ftb = np.ascontiguousarray(X.transpose(2, 1, 0))
    loss, _, grads = _batch_loss(encoder, checked, x_ftb, lens, objective, True)
    assert grads is not None  # need_grad=True
    return loss, grads


def _check_head(encoder: LSTMEncoder, head: Any, objective: str, T: int) -> dict[str, NDArray[Any]]:
    if not isinstance(head, Mapping) or set(head) != {"weight", "bias"}:
        raise ValueError(f"head must be a dict with keys 'weight' and 'bias', got "
                         f"{sorted(head) if isinstance(head, Mapping) else type(head).__name__}")
    F = encoder.input_size
    want = (F, encoder.hidden_size) if objective == "next_event" else (T * F, encoder.embedding_dim)
    dt = np.dtype(encoder.dtype)
    w = as_float_array(head["weight"], "head weight", dt)
    b = as_float_array(head["bias"], "head bias", dt)
    if w.shape != want or b.shape != (want[0],):
        raise ValueError(f"head for objective {objective!r} must have weight {want} and bias "
                         f"({want[0]},), got {w.shape} and {b.shape}")
    return {"weight": w, "bias": b}


# --------------------------------------------------------------------------- #
# training loop
# --------------------------------------------------------------------------- #
def _global_norm(grads: Mapping[str, NDArray[Any]]) -> float:
    return math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))


def _clip_(grads: dict[str, NDArray[Any]], clip_norm: float | None) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``clip_norm``; return the norm before."""
    norm = _global_norm(grads)
    if clip_norm is not None and norm > clip_norm:
        scale = clip_norm / (norm + 1e-12)
        for g in grads.values():
            g *= scale
    return norm


class _Adam:
    """Adam (Kingma & Ba 2015) over a dict of arrays, updated in place."""

    def __init__(self, params: dict[str, NDArray[Any]], lr: float, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8) -> None:
        self.params, self.lr, self.beta1, self.beta2, self.eps = params, lr, beta1, beta2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self._tmp = {k: (np.empty_like(v), np.empty_like(v)) for k, v in params.items()}  # scratch
        self.t = 0

    def step(self, grads: Mapping[str, NDArray[Any]]) -> None:
        """One Adam update of every parameter (in place) from ``grads`` (same keys and shapes)."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        step = self.lr * math.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        for k, p in self.params.items():
            g, m, v = grads[k], self.m[k], self.v[k]
            t1, t2 = self._tmp[k]
            # m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= step m / (sqrt(v) + eps), in place
            m *= b1
            np.multiply(g, 1 - b1, out=t1)
            m += t1
            v *= b2
            np.multiply(g, g, out=t1)
            t1 *= 1 - b2
            v += t1
            np.sqrt(v, out=t1)
            t1 += self.eps
            np.multiply(m, step, out=t2)
            t2 /= t1
            p -= t2


def train_encoder(encoder: LSTMEncoder, windows: ArrayLike, lengths: ArrayLike | None = None, *,
                  objective: str = "next_event", epochs: int = 10, batch_size: int = 64, lr: float = 1e-3,
                  clip_norm: float | None = 1.0, val_fraction: float = 0.1, seed: Any = None,
                  callback: Callable[[dict[str, Any]], object] | None = None,
                  on_batch: Callable[[dict[str, Any]], object] | None = None) -> TrainResult:
    """Train ``encoder`` in place on unlabeled windows with a self-supervised objective.

    Parameters
    ----------
    encoder : LSTMEncoder
        Trained in place; its ``training_metadata_`` is set at the end.
    windows : array_like of shape (N, T, F)
        Zero-padded windows (batch-first).
    lengths : array_like of int of shape (N,), optional
        Valid steps per window (default: all T).
    objective : {"next_event", "autoencoder"}
    epochs, batch_size : int
    lr : float
        Adam step size.
    clip_norm : float or None
        Global L2 norm the gradient (encoder + head) is clipped to per batch.
    val_fraction : float in [0, 1)
        Fraction of windows held out (chosen with ``seed``) for ``val_loss``.
    seed : int, Generator or None
        Seeds the head initialization, the split and the batch order.
    callback : callable(dict), optional
        Called after every epoch with that epoch's history record.
    on_batch : callable(dict), optional
        Called after every batch with ``epoch``, ``batch``, ``n_batches``,
        ``loss`` (running epoch mean) and ``windows_per_s``.

    Returns
    -------
    TrainResult

    Examples
    --------
    >>> import numpy as np
    >>> from streamkm.sequence import LSTMEncoder
    >>> X = np.sin(np.linspace(0, 20, 400)).reshape(40, 10, 1).astype(np.float32)
    >>> enc = LSTMEncoder(1, 8, seed=0)
    >>> res = train_encoder(enc, X, epochs=3, batch_size=8, lr=0.01, seed=0)
    >>> [r["epoch"] for r in res.history]
    [1, 2, 3]
    >>> res.history[-1]["loss"] < res.history[0]["loss"]
    True
    """
    X, lens = _validate_windows(encoder, windows, lengths, objective)
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if clip_norm is not None and not (isinstance(clip_norm, (int, float)) and clip_norm > 0):
        raise ValueError(f"clip_norm must be positive or None, got {clip_norm!r}")
    if not (isinstance(val_fraction, (int, float)) and 0 <= val_fraction < 1):
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    for name, fn in (("callback", callback), ("on_batch", on_batch)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    N, T, _ = X.shape
    n_val = int(round(N * val_fraction))
    if N - n_val < 1:
        raise ValueError(f"val_fraction={val_fraction} leaves no training windows out of {N}")

    rng = np.random.default_rng(seed)
    head = init_head(encoder, objective, T, rng)
    perm = rng.permutation(N)
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    params = dict(encoder.params_)
    params.update({"head." + k: v for k, v in head.items()})
    opt = _Adam(params, lr)
    ws = Workspace()
    Xc = np.ascontiguousarray(X)

    def batch(idx: NDArray[np.intp]) -> tuple[NDArray[Any], NDArray[np.int64] | None]:
        # gather whole windows (contiguous rows), then one transposing copy to (F, T, B):
        # measured 4x faster than gathering columns of a feature-major copy
        return (np.ascontiguousarray(Xc[idx].transpose(2, 1, 0)),
                None if lens is None else lens[idx])

    history: list[dict[str, Any]] = []
    n_train = len(train_idx)
    n_batches = -(-n_train // batch_size)
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        order = train_idx[rng.permutation(n_train)]
        total, count_sum = 0.0, 0.0
        norms: list[float] = []
        for j in range(n_batches):
            xb, lb = batch(order[j * batch_size:(j + 1) * batch_size])
            loss, count, grads = _batch_loss(encoder, head, xb, lb, objective, True, ws)
            assert grads is not None  # need_grad=True
            if not math.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss} at epoch {epoch}, batch {j}; "
                                         f"lower lr (now {lr}) or clip_norm")
            norms.append(_clip_(grads, clip_norm))
            opt.step(grads)
            total += loss * count
            count_sum += count
            if on_batch is not None:
                done = min((j + 1) * batch_size, n_train)
                on_batch({"epoch": epoch, "epochs": epochs, "batch": j + 1, "n_batches": n_batches,
                          "loss": total / count_sum if count_sum else 0.0,
                          "windows_per_s": done / max(time.perf_counter() - t0, 1e-9)})
        seconds = time.perf_counter() - t0
        val_loss = None
        if n_val:
            v_total, v_count = 0.0, 0.0
            for j in range(0, n_val, batch_size):
                xb, lb = batch(val_idx[j:j + batch_size])
                loss, count, _ = _batch_loss(encoder, head, xb, lb, objective, False, ws)
                v_total += loss * count
                v_count += count
            val_loss = v_total / v_count if v_count else None
        record = {"epoch": epoch, "loss": total / count_sum if count_sum else 0.0, "val_loss": val_loss,
                  "windows_per_s": n_train / seconds, "seconds": seconds,
                  "grad_norm": float(np.mean(norms))}
        history.append(record)
        if callback is not None:
            callback(dict(record))

    encoder.training_metadata_ = {
        "trainer": "streamkm.sequence.train", "objective": objective, "epochs": int(epochs),
        "batch_size": int(batch_size), "lr": float(lr),
        "clip_norm": None if clip_norm is None else float(clip_norm),
        "seed": int(seed) if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) else None,
        "n_train": int(n_train), "n_val": int(n_val), "seq_len": int(T),
        "final_loss": history[-1]["loss"] if history else None,
        "final_val_loss": history[-1]["val_loss"] if history else None,
    }
    return TrainResult(history=history, head=head, objective=objective, encoder=encoder)

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

Layout: the kernels work feature-major, arrays (features, T, B), like the
encoder's own kernel; the public functions take batch-first (B, T, F).

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

import numpy as np

from streamkm.sequence.lstm.encoder import (
    LSTMEncoder,
    _as_float_array,
    _check_finite,
    _check_lengths,
    _forward,
    _gate_perm,
    _LayerCache,
    _Lengths,
    _prepare,
    _Prepared,
    _Workspace,
)

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

    history: list[dict] = field(default_factory=list)
    head: dict[str, np.ndarray] = field(default_factory=dict)
    objective: str = "next_event"
    encoder: LSTMEncoder | None = None


# --------------------------------------------------------------------------- #
# backward kernel
# --------------------------------------------------------------------------- #
def _layer_backward(p: _Prepared, cache: _LayerCache, H: int, lens: _Lengths | None,
                    dout: np.ndarray, dh_n: np.ndarray | None, dc_n: np.ndarray | None,
                    need_dx: bool, ws: _Workspace | None = None, tag: str = ""):
    """Backpropagate one layer (all directions) through time.

    Parameters
    ----------
    dout : ndarray of shape (D*H, T, B)
        Gradient of the loss with respect to the layer's output (not modified).
    dh_n, dc_n : ndarray of shape (D, H, B) or None
        Gradient with respect to the layer's final states.
    ws, tag : optional workspace for the large scratch buffers.

    Returns
    -------
    grads : list over directions of (dW_ih (4H, F_in), dW_hh (4H, H), db (4H,)),
        rows in the internal gate order (i, f, o, g).
    dx : ndarray of shape (F_in, T, B) or None
        Gradient with respect to the layer input.
    """
    x = cache.x
    F_in, T, B = x.shape
    D = len(p.w_hh)
    dtype = x.dtype
    H2, H3 = 2 * H, 3 * H
    alloc = (lambda name, shape, dt: np.empty(shape, dtype=dt)) if ws is None else ws.empty
    # time-major copy of dout (T, D*H, B), padded outputs are constants (zero)
    dout_tm = alloc(tag + "dout", (T, D * H, B), dtype)
    np.copyto(dout_tm, dout.transpose(1, 0, 2))
    if lens is not None:
        dout_tm *= lens.mask[:, None, :]
    ends = lens.ends if lens is not None else None
    # time-major like the cache; every entry is written below
    dZ = alloc(tag + "dZ", (T, D, 4 * H, B), dtype)
    tmp = np.empty((H, B), dtype=dtype)
    # activation derivatives for all steps at once: a(1 - a) for the sigmoid
    # rows (i, f, o), 1 - g^2 for g; and 1 - tanh(c_t)^2
    dA = alloc(tag + "dA", cache.A.shape, dtype)
    np.subtract(1, cache.A, out=dA)
    dA *= cache.A
    np.multiply(cache.A[:, :, H3:], cache.A[:, :, H3:], out=dA[:, :, H3:])
    np.subtract(1, dA[:, :, H3:], out=dA[:, :, H3:])
    dTC = alloc(tag + "dTC", cache.TC.shape, dtype)
    np.multiply(cache.TC, cache.TC, out=dTC)
    np.subtract(1, dTC, out=dTC)
    for d in range(D):
        A, TC, Cp, dAd, dTCd = cache.A[:, d], cache.TC[:, d], cache.Cprev[:, d], dA[:, d], dTC[:, d]
        dZd = dZ[:, d]
        w_hh_t = p.w_hh[d].T
        dout_d = dout_tm[:, d * H:(d + 1) * H]
        dh = np.zeros((H, B), dtype=dtype)
        dc = np.zeros((H, B), dtype=dtype)
        if (d == 1 or lens is None) and dh_n is not None:
            dh[:] = dh_n[d]
        if (d == 1 or lens is None) and dc_n is not None:
            dc[:] = dc_n[d]
        steps = range(T - 1, -1, -1) if d == 0 else range(T)
        for t in steps:
            if d == 0 and ends is not None and t in ends:
                # the forward pass took these sequences' final state here; anything
                # accumulated from later (padded) steps is discarded
                rows = ends[t]
                dh[:, rows] = 0 if dh_n is None else dh_n[0][:, rows]
                dc[:, rows] = 0 if dc_n is None else dc_n[0][:, rows]
            dh += dout_d[t]
            a = A[t]
            i, f, o, g = a[:H], a[H:H2], a[H2:H3], a[H3:]
            dz = dZd[t]
            np.multiply(dh, TC[t], out=dz[H2:H3])      # dL/do
            np.multiply(dTCd[t], o, out=tmp)
            tmp *= dh
            dc += tmp                                 # dL/dc_t
            np.multiply(dc, g, out=dz[:H])            # dL/di
            np.multiply(dc, Cp[t], out=dz[H:H2])      # dL/df
            np.multiply(dc, i, out=dz[H3:])           # dL/dg
            dz *= dAd[t]                              # through the activations
            dc *= f                                   # dL/dc_{t-1}
            np.matmul(w_hh_t, dz, out=dh)             # dL/dh_{t-1}
    if lens is not None:
        dZ *= lens.mask[:, None, None, :]        # padded steps never happened
    x2 = x.reshape(F_in, T * B)
    grads = []
    dx = np.zeros((F_in, T * B), dtype=dtype) if need_dx else None
    for d in range(D):
        # feature-major (4H, T*B) and (H, T*B) for the weight gradients: one GEMM each
        dz2 = alloc(tag + "dz2", (4 * H, T, B), dtype)
        np.copyto(dz2, dZ[:, d].transpose(1, 0, 2))
        dz2 = dz2.reshape(4 * H, T * B)
        hp2 = alloc(tag + "hp2", (H, T, B), dtype)
        np.copyto(hp2, cache.Hprev[:, d].transpose(1, 0, 2))
        hp2 = hp2.reshape(H, T * B)
        grads.append((dz2 @ x2.T, dz2 @ hp2.T, dz2.sum(axis=1)))
        if need_dx:
            dx += p.w_ih[d].T @ dz2
    return grads, (dx.reshape(F_in, T, B) if need_dx else None)


def _encoder_backward(prepared: list[_Prepared], caches: list[_LayerCache], H: int,
                      lens: _Lengths | None, dout: np.ndarray, dh_n: np.ndarray | None,
                      dc_n: np.ndarray | None, ws: _Workspace | None = None) -> dict[str, np.ndarray]:
    """Gradients of every encoder parameter under torch's names.

    ``dout`` (D*H, T, B) is the gradient w.r.t. the last layer's output; ``dh_n``,
    ``dc_n`` (L*D, H, B) or None w.r.t. the final states.
    """
    L, D = len(prepared), len(prepared[0].w_hh)
    inv = np.argsort(_gate_perm(H))
    grads: dict[str, np.ndarray] = {}
    for k in range(L - 1, -1, -1):
        sl = slice(k * D, (k + 1) * D)
        layer_grads, dx = _layer_backward(
            prepared[k], caches[k], H, lens, dout,
            None if dh_n is None else dh_n[sl], None if dc_n is None else dc_n[sl], need_dx=k > 0,
            ws=ws, tag=f"l{k}.")
        for d, (dw_ih, dw_hh, db) in enumerate(layer_grads):
            sfx = "_reverse" if d else ""
            grads[f"weight_ih_l{k}{sfx}"] = dw_ih[inv]
            grads[f"weight_hh_l{k}{sfx}"] = dw_hh[inv]
            grads[f"bias_ih_l{k}{sfx}"] = db[inv]
            grads[f"bias_hh_l{k}{sfx}"] = db[inv].copy()
        dout = dx
    return grads


# --------------------------------------------------------------------------- #
# objectives
# --------------------------------------------------------------------------- #
def init_head(encoder: LSTMEncoder, objective: str, seq_len: int, rng) -> dict[str, np.ndarray]:
    """Initial head parameters, ~U(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights and zero bias.

    ``next_event``: weight (F, H), bias (F,). ``autoencoder``: weight (T*F, D*H),
    bias (T*F,).
    """
    _check_objective(objective)
    rng = np.random.default_rng(rng)
    dt = np.dtype(encoder.dtype)
    F, H = encoder.input_size, encoder.hidden_size
    if objective == "next_event":
        shape = (F, H)
    else:
        shape = (seq_len * F, encoder.embedding_dim)
    bound = 1.0 / math.sqrt(shape[1])
    return {"weight": rng.uniform(-bound, bound, size=shape).astype(dt),
            "bias": np.zeros(shape[0], dtype=dt)}


def _check_objective(objective) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


def _objective(objective: str, head: Mapping[str, np.ndarray], x: np.ndarray, out: np.ndarray,
               h_n: np.ndarray, lens: _Lengths | None, lengths: np.ndarray | None,
               L: int, D: int, H: int, need_grad: bool):
    """Loss, its number of targets, and (if ``need_grad``) head grads, dout, dh_n.

    ``x`` (F, T, B), ``out`` (D*H, T, B), ``h_n`` (L*D, H, B), all feature-major.
    """
    F, T, B = x.shape
    dtype = x.dtype
    W, b = head["weight"], head["bias"]
    if objective == "next_event":
        hf = np.ascontiguousarray(out[:H, : T - 1]).reshape(H, (T - 1) * B)
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
        dout = np.zeros_like(out)
        dout[:H, : T - 1] = (W.T @ dp2).reshape(H, T - 1, B)
        return loss, count, head_grads, dout, None
    # autoencoder
    e = np.concatenate([h_n[(L - 1) * D + d] for d in range(D)], axis=0)   # (D*H, B)
    recon = W @ e
    recon += b[:, None]
    diff = recon.reshape(T, F, B) - x.transpose(1, 0, 2)
    if lens is not None:
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


def _batch_loss(encoder: LSTMEncoder, head, x_ftb: np.ndarray, lengths: np.ndarray | None,
                objective: str, need_grad: bool, ws: _Workspace | None = None):
    """(loss, count, grads or None) for one feature-major batch (F, T, B).

    With a workspace ``ws`` the large buffers are reused across calls (the
    returned gradients are always fresh arrays).
    """
    T = x_ftb.shape[1]
    dt = x_ftb.dtype
    H, L, D = encoder.hidden_size, encoder.num_layers, encoder.num_directions
    if lengths is not None and np.all(lengths == T):
        lengths = None
    lens = _Lengths(lengths, T, dt) if lengths is not None else None
    prepared = _prepare(encoder.params_, L, D, H, dt)
    out, h_n, _, caches = _forward(x_ftb, prepared, H, lens, None, None, keep_cache=need_grad, ws=ws)
    loss, count, head_grads, dout, dh_n = _objective(objective, head, x_ftb, out, h_n, lens,
                                                     lengths, L, D, H, need_grad)
    if not need_grad:
        return loss, count, None
    grads = _encoder_backward(prepared, caches, H, lens, dout, dh_n, None, ws)
    grads.update({"head." + k: v for k, v in head_grads.items()})
    return loss, count, grads


def _validate_windows(encoder, windows, lengths, objective):
    if not isinstance(encoder, LSTMEncoder):
        raise TypeError(f"encoder must be an LSTMEncoder, got {type(encoder).__name__}")
    _check_objective(objective)
    X = _as_float_array(windows, "windows", np.dtype(encoder.dtype))
    if X.ndim != 3:
        raise ValueError(f"windows must be 3-D (n_windows, seq_len, features), got shape {X.shape}")
    N, T, F = X.shape
    if F != encoder.input_size:
        raise ValueError(f"expected {encoder.input_size} features, got {F}")
    if N == 0 or T == 0:
        raise ValueError(f"windows must be non-empty, got shape {X.shape}")
    _check_finite(X, "windows")
    if lengths is not None:
        lengths = _check_lengths(lengths, N, T)
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


def loss_and_gradients(encoder: LSTMEncoder, head: Mapping[str, np.ndarray], windows,
                       lengths=None, *, objective: str = "next_event"):
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
    X, lengths = _validate_windows(encoder, windows, lengths, objective)
    head = _check_head(encoder, head, objective, X.shape[1])
    x_ftb = np.ascontiguousarray(X.transpose(2, 1, 0))
    loss, _, grads = _batch_loss(encoder, head, x_ftb, lengths, objective, True)
    return loss, grads


def _check_head(encoder, head, objective, T):
    if not isinstance(head, Mapping) or set(head) != {"weight", "bias"}:
        raise ValueError(f"head must be a dict with keys 'weight' and 'bias', got "
                         f"{sorted(head) if isinstance(head, Mapping) else type(head).__name__}")
    F = encoder.input_size
    want = (F, encoder.hidden_size) if objective == "next_event" else (T * F, encoder.embedding_dim)
    dt = np.dtype(encoder.dtype)
    w = _as_float_array(head["weight"], "head weight", dt)
    b = _as_float_array(head["bias"], "head bias", dt)
    if w.shape != want or b.shape != (want[0],):
        raise ValueError(f"head for objective {objective!r} must have weight {want} and bias "
                         f"({want[0]},), got {w.shape} and {b.shape}")
    return {"weight": w, "bias": b}


# --------------------------------------------------------------------------- #
# training loop
# --------------------------------------------------------------------------- #
def _global_norm(grads: Mapping[str, np.ndarray]) -> float:
    return math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))


def _clip_(grads: dict[str, np.ndarray], clip_norm: float | None) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``clip_norm``; return the norm before."""
    norm = _global_norm(grads)
    if clip_norm is not None and norm > clip_norm:
        scale = clip_norm / (norm + 1e-12)
        for g in grads.values():
            g *= scale
    return norm


class _Adam:
    """Adam (Kingma & Ba 2015) over a dict of arrays, updated in place."""

    def __init__(self, params: dict[str, np.ndarray], lr: float, beta1=0.9, beta2=0.999, eps=1e-8):
        self.params, self.lr, self.beta1, self.beta2, self.eps = params, lr, beta1, beta2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        step = self.lr * math.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        for k, p in self.params.items():
            g, m, v = grads[k], self.m[k], self.v[k]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            p -= step * m / (np.sqrt(v) + self.eps)


def train_encoder(encoder: LSTMEncoder, windows, lengths=None, *, objective: str = "next_event",
                  epochs: int = 10, batch_size: int = 64, lr: float = 1e-3,
                  clip_norm: float | None = 1.0, val_fraction: float = 0.1, seed=None,
                  callback: Callable[[dict], object] | None = None,
                  on_batch: Callable[[dict], object] | None = None) -> TrainResult:
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
    X, lengths = _validate_windows(encoder, windows, lengths, objective)
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
    ws = _Workspace()
    # feature-major copy of the data once: batches are column gathers
    X_ftb = np.ascontiguousarray(X.transpose(2, 1, 0))

    def batch(idx):
        return (np.ascontiguousarray(X_ftb[:, :, idx]),
                None if lengths is None else lengths[idx])

    history: list[dict] = []
    n_train = len(train_idx)
    n_batches = -(-n_train // batch_size)
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        order = train_idx[rng.permutation(n_train)]
        total, count_sum, norms = 0.0, 0.0, []
        for j in range(n_batches):
            xb, lb = batch(order[j * batch_size:(j + 1) * batch_size])
            loss, count, grads = _batch_loss(encoder, head, xb, lb, objective, True, ws)
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

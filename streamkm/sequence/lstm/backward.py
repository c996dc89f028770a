"""Backpropagation through time for the LSTM kernel.

Gradients of :func:`streamkm.sequence.lstm.kernels.forward_fm` (run with
``keep_cache=True``) with respect to every parameter, for any number of layers,
one or two directions and variable lengths; used by :mod:`streamkm.sequence.train`.

References
----------
Werbos, P. J. (1990). Backpropagation through time: what it does and how to do
it. Proceedings of the IEEE 78(10), 1550-1560.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from streamkm.sequence.lstm.kernels import LayerCache, Lengths, PreparedLayer, Workspace, gate_perm

__all__ = ["layer_backward", "encoder_backward"]


Grads = list[tuple[NDArray[Any], NDArray[Any], NDArray[Any]]]


def _fresh(name: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> NDArray[Any]:
    return np.empty(shape, dtype=dtype)


def layer_backward(p: PreparedLayer, cache: LayerCache, H: int, lens: Lengths | None,
                   dout: NDArray[Any], dh_n: NDArray[Any] | None, dc_n: NDArray[Any] | None,
                   need_dx: bool, ws: Workspace | None = None, tag: str = ""
                   ) -> tuple[Grads, NDArray[Any] | None]:
    """Backpropagate one layer (both directions stepped together) through time.

    Parameters
    ----------
    p : PreparedLayer
        The layer's weights as used in the forward pass, built with
        ``for_training=True`` (``w_hh_t``, ``w_ih_t``).
    cache : LayerCache
        What the forward pass kept for this layer (not modified).
    H : int
    lens : Lengths or None
        The forward pass's length bookkeeping.
    dout : ndarray of shape (D*H, T, B)
        Gradient of the loss with respect to the layer's output, time order (not modified).
    dh_n, dc_n : ndarray of shape (D, H, B) or None
        Gradient with respect to the layer's final states (not modified).
    need_dx : bool
        Also return the gradient with respect to the layer input.
    ws, tag : Workspace or None, str
        Optional workspace for the large scratch buffers (names prefixed by ``tag``).

    Returns
    -------
    grads : list over directions of (dW_ih, dW_hh, db)
        Shapes (4H, F_in), (4H, H), (4H,), rows in the kernels' gate order
        (o, i, f, g); fresh arrays.
    dx : ndarray of shape (F_in, T, B) or None
        Gradient with respect to the layer input, time order (None unless ``need_dx``).

    Notes
    -----
    The cache is indexed by step (the backward direction's step s is time
    T-1-s), so one loop over the steps, last to first, handles both
    directions with one set of elementwise calls and ONE stacked product
    ``W_hh^T dz`` per step (per direction and gate block, then summed over the
    four blocks: measured faster than one (H, 4H) @ (4H, B) product). The weight gradients are then one GEMM per
    direction, ``dZ (4H, T*B) @ z^T (T*B, H + F_in + 1)``, which yields the
    recurrent, input and bias gradients together.
    """
    z, A, TC = cache.z, cache.A, cache.TC
    T1, D, K, B = z.shape
    T = T1 - 1
    F_in = K - H - 1
    dtype = z.dtype
    H2, H3, H4 = 2 * H, 3 * H, 4 * H
    alloc = _fresh if ws is None else ws.empty
    # step-ordered, masked gradient of the outputs: (T, D, H, B)
    dout_s = alloc(tag + "dout", (T, D, H, B), dtype)
    np.copyto(dout_s[:, 0], dout[:H].transpose(1, 0, 2))
    if D == 2:
        np.copyto(dout_s[:, 1], dout[H:2 * H, ::-1].transpose(1, 0, 2))
    mask_s = None
    if lens is not None:
        mask_s = np.empty((T, D, 1, B), dtype=dtype)
        mask_s[:, 0, 0] = lens.mask
        if D == 2:
            mask_s[:, 1, 0] = lens.mask[::-1]
        dout_s *= mask_s
    ends = lens.ends if lens is not None else None
    # activation derivatives, per step below (measured faster than precomputing them
    # for all steps: the per-step calls then read one cached step fewer from memory):
    # a(1 - a) for the sigmoid rows (o, i, f), 1 - g^2 for g, 1 - tanh(c_t)^2
    dA = np.empty((D, H4, B), dtype=dtype)
    dA_g = dA[:, H3:]
    dZ = alloc(tag + "dZ", (T, D, H4, B), dtype)   # every entry is written below
    dh = np.zeros((D, H, B), dtype=dtype)
    dc = np.zeros((D, H, B), dtype=dtype)
    for d in range(D):
        if (d == 1 or lens is None) and dh_n is not None:
            dh[d] = dh_n[d]
        if (d == 1 or lens is None) and dc_n is not None:
            dc[d] = dc_n[d]
    tmp = np.empty((D, H, B), dtype=dtype)
    dc4 = dc[:, None]                                    # (D, 1, H, B)
    Agc = A[:, :, H3:].reshape(T1, D, 2, H, B)           # [g, c_{s-1}] of step s
    dZif = dZ[:, :, H:H3].reshape(T, D, 2, H, B)         # [dL/di, dL/df]
    w_hh_t = p.w_hh_t                                   # (D, 4, H, H)
    dZ4 = dZ.reshape(T, D, 4, H, B)
    dh4 = np.empty((D, 4, H, B), dtype=dtype)
    matmul, multiply, subtract, add_reduce = np.matmul, np.multiply, np.subtract, np.add.reduce
    for s in range(T - 1, -1, -1):
        if ends is not None and s in ends:
            # the forward direction took these sequences' final state here; anything
            # accumulated from later (padded) steps is discarded
            rows = ends[s]
            dh[0][:, rows] = 0 if dh_n is None else dh_n[0][:, rows]
            dc[0][:, rows] = 0 if dc_n is None else dc_n[0][:, rows]
        dh += dout_s[s]
        a, dz, tc = A[s], dZ[s], TC[s]
        a4, ag = a[:, :H4], a[:, H3:H4]
        subtract(1, a4, out=dA)
        dA *= a4
        multiply(ag, ag, out=dA_g)
        subtract(1, dA_g, out=dA_g)
        multiply(dh, tc, out=dz[:, :H])                 # dL/do
        multiply(tc, tc, out=tmp)
        subtract(1, tmp, out=tmp)
        tmp *= a[:, :H]
        tmp *= dh
        dc += tmp                                       # dL/dc_s
        multiply(dc4, Agc[s], out=dZif[s])              # dL/di = dc g, dL/df = dc c_{s-1}
        multiply(dc, a[:, H:H2], out=dz[:, H3:])        # dL/dg = dc i
        dz *= dA                                        # through the activations
        dc *= a[:, H2:H3]                               # dL/dc_{s-1}
        matmul(w_hh_t, dZ4[s], out=dh4)
        add_reduce(dh4, axis=1, out=dh)                 # dL/dh_{s-1}
    if mask_s is not None:
        dZ *= mask_s                                    # padded steps never happened
    grads: Grads = []
    dx = np.zeros((F_in, T, B), dtype=dtype) if need_dx else None
    for d in range(D):
        # feature-major (4H, T*B) and (K, T*B): ONE GEMM for dW_hh, dW_ih and db
        dz2 = alloc(tag + "dz2", (H4, T, B), dtype)
        np.copyto(dz2, dZ[:, d].transpose(1, 0, 2))
        dz2 = dz2.reshape(H4, T * B)
        z2 = alloc(tag + "z2", (K, T, B), dtype)
        np.copyto(z2, z[:T, d].transpose(1, 0, 2))
        dw = dz2 @ z2.reshape(K, T * B).T                 # (4H, K): [W_hh | W_ih | b]
        grads.append((dw[:, H:K - 1].copy(), dw[:, :H].copy(), dw[:, K - 1].copy()))
        if dx is not None:
            dxd = (p.w_ih_t[d] @ dz2).reshape(F_in, T, B)
            dx += dxd if d == 0 else dxd[:, ::-1]       # the backward direction's steps run T-1 .. 0
    return grads, dx


def encoder_backward(prepared: list[PreparedLayer], caches: list[LayerCache], H: int,
                     lens: Lengths | None, dout: NDArray[Any], dh_n: NDArray[Any] | None,
                     dc_n: NDArray[Any] | None, ws: Workspace | None = None) -> dict[str, NDArray[Any]]:
    """Gradients of every encoder parameter under torch's names.

    Parameters
    ----------
    prepared, caches : list of PreparedLayer, list of LayerCache, length L
        The weights (``prepare(..., for_training=True)``) and caches of the
        forward pass (``forward_fm(..., keep_cache=True)``).
    H : int
    lens : Lengths or None
    dout : ndarray of shape (D*H, T, B)
        Gradient with respect to the last layer's output (not modified).
    dh_n, dc_n : ndarray of shape (L*D, H, B) or None
        Gradient with respect to the final states (not modified).
    ws : Workspace or None
        Optional workspace for the scratch buffers.

    Returns
    -------
    dict of str to ndarray
        One fresh array per parameter, same name and shape as the parameter
        (torch's gate order).
    """
    L, D = len(prepared), prepared[0].w_z.shape[0]
    inv = np.argsort(gate_perm(H))
    grads: dict[str, NDArray[Any]] = {}
    for k in range(L - 1, -1, -1):
        sl = slice(k * D, (k + 1) * D)
        layer_grads, dx = layer_backward(
            prepared[k], caches[k], H, lens, dout,
            None if dh_n is None else dh_n[sl], None if dc_n is None else dc_n[sl], need_dx=k > 0,
            ws=ws, tag=f"l{k}.")
        for d, (dw_ih, dw_hh, db) in enumerate(layer_grads):
            sfx = "_reverse" if d else ""
            grads[f"weight_ih_l{k}{sfx}"] = dw_ih[inv]
            grads[f"weight_hh_l{k}{sfx}"] = dw_hh[inv]
            grads[f"bias_ih_l{k}{sfx}"] = db[inv]
            grads[f"bias_hh_l{k}{sfx}"] = db[inv].copy()
        if dx is not None:  # None only below layer 0
            dout = dx
    return grads

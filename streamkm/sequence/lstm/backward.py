"""Backpropagation through time for the feature-major LSTM kernels.

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
    """Backpropagate one layer (all directions) through time.

    Parameters
    ----------
    p : PreparedLayer
        The layer's weights as used in the forward pass (``w_ih``, ``w_hh``).
    cache : LayerCache
        What the forward pass kept for this layer (not modified).
    H : int
    lens : Lengths or None
        The forward pass's length bookkeeping.
    dout : ndarray of shape (D*H, T, B)
        Gradient of the loss with respect to the layer's output (not modified).
    dh_n, dc_n : ndarray of shape (D, H, B) or None
        Gradient with respect to the layer's final states (not modified).
    need_dx : bool
        Also return the gradient with respect to the layer input.
    ws, tag : Workspace or None, str
        Optional workspace for the large scratch buffers (names prefixed by ``tag``).

    Returns
    -------
    grads : list over directions of (dW_ih, dW_hh, db)
        Shapes (4H, F_in), (4H, H), (4H,), rows in the internal gate order
        (i, f, o, g); fresh arrays.
    dx : ndarray of shape (F_in, T, B) or None
        Gradient with respect to the layer input (None unless ``need_dx``).
    """
    x = cache.x
    F_in, T, B = x.shape
    D = len(p.w_hh)
    dtype = x.dtype
    H2, H3 = 2 * H, 3 * H
    alloc = _fresh if ws is None else ws.empty
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
    grads: Grads = []
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
        if dx is not None:
            dx += p.w_ih[d].T @ dz2
    return grads, (None if dx is None else dx.reshape(F_in, T, B))


def encoder_backward(prepared: list[PreparedLayer], caches: list[LayerCache], H: int,
                     lens: Lengths | None, dout: NDArray[Any], dh_n: NDArray[Any] | None,
                     dc_n: NDArray[Any] | None, ws: Workspace | None = None) -> dict[str, NDArray[Any]]:
    """Gradients of every encoder parameter under torch's names.

    Parameters
    ----------
    prepared, caches : list of PreparedLayer, list of LayerCache, length L
        The weights and caches of the forward pass (``forward_fm(..., keep_cache=True)``).
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
    L, D = len(prepared), len(prepared[0].w_hh)
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

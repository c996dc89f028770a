"""Parameter layout: torch.nn.LSTM's names and shapes, and the kernels' own weight layout.

:func:`prepare` turns torch-layout parameters into :class:`PreparedLayer` objects
(gate rows reordered to (o, i, f, g), recurrent weights, input weights and bias
side by side in one matrix per gate, sigmoid rows scaled by 1/2) for
:mod:`streamkm.sequence.lstm.kernels`, which re-exports every name here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

__all__ = ["param_names", "param_shapes", "gate_perm", "PreparedLayer", "prepare"]


def param_names(num_layers: int, bidirectional: bool) -> list[str]:
    """torch.nn.LSTM parameter names in torch's own order.

    Per layer k and direction (suffix ``""``, then ``"_reverse"`` if
    bidirectional): ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
    ``bias_hh_l{k}``.
    """
    names = []
    for k in range(num_layers):
        for sfx in ("", "_reverse") if bidirectional else ("",):
            names += [f"weight_ih_l{k}{sfx}", f"weight_hh_l{k}{sfx}",
                      f"bias_ih_l{k}{sfx}", f"bias_hh_l{k}{sfx}"]
    return names


def param_shapes(input_size: int, hidden_size: int, num_layers: int,
                 bidirectional: bool) -> dict[str, tuple[int, ...]]:
    """Shape of every parameter under its torch name, in torch's order.

    ``weight_ih_l{k}`` (4H, F_in) with F_in = ``input_size`` for k = 0 and D*H
    above; ``weight_hh_l{k}`` (4H, H); ``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H,).
    """
    D = 2 if bidirectional else 1
    H = hidden_size
    shapes: dict[str, tuple[int, ...]] = {}
    for k in range(num_layers):
        f_in = input_size if k == 0 else D * H
        for sfx in ("", "_reverse") if bidirectional else ("",):
            shapes[f"weight_ih_l{k}{sfx}"] = (4 * H, f_in)
            shapes[f"weight_hh_l{k}{sfx}"] = (4 * H, H)
            shapes[f"bias_ih_l{k}{sfx}"] = (4 * H,)
            shapes[f"bias_hh_l{k}{sfx}"] = (4 * H,)
    return shapes


def gate_perm(H: int) -> NDArray[np.intp]:
    """Row order of the kernels' gate layout (o, i, f, g) in torch's (i, f, g, o): (4H,) indices.

    ``w[gate_perm(H)]`` reorders torch rows to the kernels' order;
    ``np.argsort(gate_perm(H))`` maps back. The order puts the three sigmoid
    gates first (one contiguous block for the sigmoid's affine step) and (i, f)
    right before g, so that the cell update multiplies (i, f) by the adjacent
    (g, c_{t-1}) in one call (see :func:`streamkm.sequence.lstm.kernels.layer_forward`).
    """
    return np.concatenate([np.arange(3 * H, 4 * H), np.arange(0, 3 * H)])


class PreparedLayer:
    """Weights of one layer in the kernels' layout (built by :func:`prepare`).

    Attributes
    ----------
    w_z : ndarray of shape (D, 4, H, H + F_in + 1)
        Per direction and gate block (o, i, f, g): ``[W_hh | W_ih | b]`` with
        ``b = bias_ih + bias_hh``, the sigmoid blocks (o, i, f) scaled by 1/2;
        C-contiguous. It multiplies a step's input column ``[h_{t-1}; x_t; 1]``.
    w_hh_t : ndarray of shape (D, 4, H, H)
        Per direction and gate block (o, i, f, g), the block's ``W_hh^T``,
        unscaled (only with ``for_training``: backpropagation uses the unscaled
        weights).
    w_ih_t : ndarray of shape (D, F_in, 4H)
        ``W_ih^T`` likewise (only with ``for_training``).
    """

    __slots__ = ("w_z", "w_hh_t", "w_ih_t")
    w_z: NDArray[Any]
    w_hh_t: NDArray[Any]
    w_ih_t: NDArray[Any]


def prepare(params: Mapping[str, NDArray[Any]], num_layers: int, D: int, H: int,
            dtype: DTypeLike, for_training: bool = False) -> list[PreparedLayer]:
    """Kernel-layout weights per layer (see :class:`PreparedLayer`).

    Parameters
    ----------
    params : mapping of torch parameter name to ndarray (see :func:`param_shapes`)
        Not modified; the result holds copies, never views of it.
    num_layers, D, H : int
        Layers L, directions (1 or 2), hidden size.
    dtype : float32 or float64
        Compute dtype of the result.
    for_training : bool
        Also build ``w_hh_t`` and ``w_ih_t`` for the backward pass.

    Returns
    -------
    list of PreparedLayer, length L
    """
    perm = gate_perm(H)
    scale = np.ones(4 * H, dtype=dtype)
    scale[: 3 * H] = 0.5                      # the sigmoid rows: sigmoid(z) = (1 + tanh(z/2)) / 2
    layers = []
    for k in range(num_layers):
        p = PreparedLayer()
        f_in = np.shape(params[f"weight_ih_l{k}"])[1]
        K = H + f_in + 1
        # written in place (one copy of each parameter): this runs on every call
        w_z = np.empty((D, 4 * H, K), dtype=dtype)
        if for_training:
            p.w_hh_t = np.empty((D, 4, H, H), dtype=dtype)
            p.w_ih_t = np.empty((D, f_in, 4 * H), dtype=dtype)
        for d in range(D):
            sfx = "_reverse" if d else ""
            w_hh = np.asarray(params[f"weight_hh_l{k}{sfx}"])[perm]
            w_ih = np.asarray(params[f"weight_ih_l{k}{sfx}"])[perm]
            w_z[d, :, :H] = w_hh
            w_z[d, :, H:K - 1] = w_ih
            np.add(np.asarray(params[f"bias_ih_l{k}{sfx}"])[perm], np.asarray(params[f"bias_hh_l{k}{sfx}"])[perm],
                   out=w_z[d, :, K - 1], dtype=dtype)
            if for_training:
                p.w_hh_t[d] = w_hh.reshape(4, H, H).transpose(0, 2, 1)
                p.w_ih_t[d] = w_ih.T
        w_z *= scale[:, None]
        p.w_z = w_z.reshape(D, 4, H, K)
        layers.append(p)
    return layers

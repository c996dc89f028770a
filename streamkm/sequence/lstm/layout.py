"""Parameter layout: torch.nn.LSTM's names and shapes, and the kernels' own weight layout.

:func:`prepare` turns torch-layout parameters into :class:`PreparedLayer` objects
(gate rows reordered to (i, f, o, g), sigmoid rows scaled by 1/2, bias folded into
the input weights) for :mod:`streamkm.sequence.lstm.kernels`, which re-exports
every name here.
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
    """Row order of the internal layout (i, f, o, g) in torch's (i, f, g, o): (4H,) indices.

    ``w[gate_perm(H)]`` reorders torch rows to the kernels' order;
    ``np.argsort(gate_perm(H))`` maps back.
    """
    return np.concatenate([np.arange(0, 2 * H), np.arange(3 * H, 4 * H),
                           np.arange(2 * H, 3 * H)])


class PreparedLayer:
    """Weights of one layer in the kernels' layout (built by :func:`prepare`).

    Attributes
    ----------
    w_ihb_s : ndarray of shape (D*4H, F_in + 1)
        Both directions' input weights stacked, rows in the internal gate order
        (i, f, o, g), sigmoid rows scaled by 1/2, with ``bias_ih + bias_hh``
        (scaled likewise) as the last column.
    w_hh_s : list over directions of ndarray of shape (4H, H)
        Recurrent weights, internal order, scaled like ``w_ihb_s``, C-contiguous.
    w_ih, w_hh : list over directions of ndarray of shape (4H, F_in), (4H, H)
        Unscaled, internal order (what backpropagation needs).
    w_ihb_t : ndarray of shape (F_in + 1, D*4H)
        ``w_ihb_s.T``, C-contiguous (only with ``batch_major``).
    w_hh4 : list over directions of ndarray of shape (4, H, H)
        Per gate block, ``w_hh_s[d]`` block transposed (only with ``batch_major``).
    """

    __slots__ = ("w_ihb_s", "w_hh_s", "w_ih", "w_hh", "w_ihb_t", "w_hh4")
    w_ihb_s: NDArray[Any]
    w_hh_s: list[NDArray[Any]]
    w_ih: list[NDArray[Any]]
    w_hh: list[NDArray[Any]]
    w_ihb_t: NDArray[Any]
    w_hh4: list[NDArray[Any]]


def prepare(params: Mapping[str, NDArray[Any]], num_layers: int, D: int, H: int,
            dtype: DTypeLike, batch_major: bool = False) -> list[PreparedLayer]:
    """Kernel-layout weights per layer (see :class:`PreparedLayer`).

    Parameters
    ----------
    params : mapping of torch parameter name to ndarray (see :func:`param_shapes`)
        Not modified; the result holds copies, never views of it.
    num_layers, D, H : int
        Layers L, directions (1 or 2), hidden size.
    dtype : float32 or float64
        Compute dtype of the result.
    batch_major : bool
        Also build ``w_ihb_t`` and ``w_hh4`` for :func:`forward_bm`.

    Returns
    -------
    list of PreparedLayer, length L
    """
    perm = gate_perm(H)
    scale = np.ones(4 * H, dtype=dtype)
    scale[: 3 * H] = 0.5
    layers = []
    for k in range(num_layers):
        p = PreparedLayer()
        w_ih_s: list[NDArray[Any]] = []
        w_hh_s: list[NDArray[Any]] = []
        b_s: list[NDArray[Any]] = []
        p.w_ih, p.w_hh = [], []
        for d in range(D):
            sfx = "_reverse" if d else ""
            w_ih = np.asarray(params[f"weight_ih_l{k}{sfx}"], dtype=dtype)[perm]
            w_hh = np.asarray(params[f"weight_hh_l{k}{sfx}"], dtype=dtype)[perm]
            b = (np.asarray(params[f"bias_ih_l{k}{sfx}"], dtype=dtype)
                 + np.asarray(params[f"bias_hh_l{k}{sfx}"], dtype=dtype))[perm]
            p.w_ih.append(w_ih)
            p.w_hh.append(w_hh)
            w_ih_s.append(w_ih * scale[:, None])
            w_hh_s.append(np.ascontiguousarray(w_hh * scale[:, None]))
            b_s.append(b * scale)
        p.w_ihb_s = np.concatenate([np.concatenate(w_ih_s, axis=0),
                                    np.concatenate(b_s)[:, None]], axis=1)
        p.w_hh_s = w_hh_s
        if batch_major:
            p.w_ihb_t = np.ascontiguousarray(p.w_ihb_s.T)
            p.w_hh4 = [np.ascontiguousarray(w.reshape(4, H, H).transpose(0, 2, 1)) for w in w_hh_s]
        layers.append(p)
    return layers

"""LSTM encoder in pure NumPy with torch.nn.LSTM semantics and parameter layout.

The encoder computes, for every layer ``k`` and direction, the gate equations of
``torch.nn.LSTM`` (gate order i, f, g, o)::

    i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)
    f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)
    g_t = tanh   (W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
    o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)
    c_t = f_t * c_{t-1} + i_t * g_t
    h_t = o_t * tanh(c_t)

with ``weight_ih_l{k}`` of shape (4H, F_in) holding ``[W_ii; W_if; W_ig; W_io]``,
``weight_hh_l{k}`` (4H, H), ``bias_ih_l{k}`` and ``bias_hh_l{k}`` (4H,), and the
suffix ``_reverse`` for the backward direction, so a ``state_dict`` moves
between this class and PyTorch unchanged.

Implementation (measured choices; see benchmarks/bench_lstm.py). In both
kernels the input projection ``W_ih X + b`` of one layer, for all time steps
and both directions, is ONE matrix product; the bias rides along as an extra
column of ``W_ih`` against a column (row) of ones appended to the layer input
(the copy of the input into that buffer is needed anyway, and it saves a
separate pass over the projections). The loop over time then does, per step and
direction, one product with W_hh into a preallocated buffer and in-place
elementwise operations on contiguous blocks of it; the two directions share
each elementwise call. Internally the gate rows are reordered to (i, f, o, g)
and the sigmoid rows pre-scaled by 1/2, so one ``tanh`` over all four gates
followed by ``0.5 * t + 0.5`` on the first three evaluates the numerically
stable ``sigmoid(z) = (1 + tanh(z / 2)) / 2`` (scaling by a power of two is
exact in floating point).

- Inference (``__call__``, ``embed``: :func:`_forward_bm`) works batch-major:
  layer input (B, T, F+1), projections (B, T, D*4H), output (B, T, D*H). Per step,
  ``h_{t-1} (B, H)`` times W_hh^T as a stack of four (H, H) gate blocks writes a
  (4, B, H) buffer whose gate blocks are each contiguous; the step's projections,
  viewed as (4, B, H), are rows of H contiguous values; h_t goes straight into
  the batch-first output. Compared with the feature-major kernel this removes
  the transposing copies of input and output and reads each step's projections
  in 2 KiB runs instead of 128-byte rows T*B apart (which measured about as
  costly as all elementwise work), for the same product cost.
- Training (:func:`_forward` with ``keep_cache``, used by ``train.py``) works
  feature-major, arrays (features, T, B), one (4H, H) @ (H, B) product per step,
  and keeps the per-step caches in the layout its backward pass is written for.
  The doctest of :func:`_forward_bm` checks that both kernels agree.

Variable lengths (``pack_padded_sequence`` semantics) cost no per-step indexing:
every column is updated at every step, the forward direction's final state of
sequence b is read at its own last step, the backward direction's state is
reset to (h0, c0) just before sequence b's last valid step (where its backward
pass starts), and padded outputs are zeroed. Sorting by length and updating
only the running prefix was measured too and was not faster: the per-step
product costs nearly the same for fewer columns.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["LSTMEncoder", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "streamkm.lstm"
FORMAT_VERSION = 1
_HEADER_KEY = "__header__"


# --------------------------------------------------------------------------- #
# layout helpers
# --------------------------------------------------------------------------- #
def _param_names(num_layers: int, bidirectional: bool) -> list[str]:
    """torch.nn.LSTM parameter names in torch's own order."""
    names = []
    for k in range(num_layers):
        for sfx in ("", "_reverse") if bidirectional else ("",):
            names += [f"weight_ih_l{k}{sfx}", f"weight_hh_l{k}{sfx}",
                      f"bias_ih_l{k}{sfx}", f"bias_hh_l{k}{sfx}"]
    return names


def _param_shapes(input_size: int, hidden_size: int, num_layers: int,
                  bidirectional: bool) -> dict[str, tuple[int, ...]]:
    D = 2 if bidirectional else 1
    H = hidden_size
    shapes = {}
    for k in range(num_layers):
        f_in = input_size if k == 0 else D * H
        for sfx in ("", "_reverse") if bidirectional else ("",):
            shapes[f"weight_ih_l{k}{sfx}"] = (4 * H, f_in)
            shapes[f"weight_hh_l{k}{sfx}"] = (4 * H, H)
            shapes[f"bias_ih_l{k}{sfx}"] = (4 * H,)
            shapes[f"bias_hh_l{k}{sfx}"] = (4 * H,)
    return shapes


def _gate_perm(H: int) -> np.ndarray:
    """Row order of the internal layout (i, f, o, g) in torch's (i, f, g, o)."""
    return np.concatenate([np.arange(0, 2 * H), np.arange(3 * H, 4 * H),
                           np.arange(2 * H, 3 * H)])


class _Prepared:
    """Weights of one layer in the kernel's layout.

    ``w_ihb_s`` (D*4H, F_in + 1): both directions' input weights stacked, rows in
    the internal gate order (i, f, o, g), sigmoid rows scaled by 1/2, with
    ``bias_ih + bias_hh`` (scaled likewise) as the last column; ``w_hh_s[d]`` (4H, H) scaled;
    ``w_ih[d]`` (4H, F_in) and ``w_hh[d]`` (4H, H) unscaled, internal order
    (what backpropagation needs). With ``batch_major``, also the batch-major
    kernel's copies: ``w_ihb_t`` = ``w_ihb_s.T`` (F_in + 1, D*4H) contiguous and
    ``w_hh4[d]`` (4, H, H) = per gate block, ``w_hh_s[d]`` block transposed.
    """

    __slots__ = ("w_ihb_s", "w_hh_s", "w_ih", "w_hh", "w_ihb_t", "w_hh4")


def _prepare(params: Mapping[str, np.ndarray], num_layers: int, D: int, H: int,
             dtype, batch_major: bool = False) -> list[_Prepared]:
    """Kernel-layout weights per layer (see :class:`_Prepared`); copies, never views of ``params``."""
    perm = _gate_perm(H)
    scale = np.ones(4 * H, dtype=dtype)
    scale[: 3 * H] = 0.5
    layers = []
    for k in range(num_layers):
        p = _Prepared()
        p.w_ih, p.w_hh, w_ih_s, w_hh_s, b_s = [], [], [], [], []
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


class _Lengths:
    """Per-step bookkeeping for variable lengths (built once per batch).

    ``ends[t]``: indices of the sequences whose last valid step is t;
    ``mask`` (T, B): 1 at valid steps, 0 at padding; ``last`` (B,): lengths - 1.
    """

    __slots__ = ("ends", "mask", "last")

    def __init__(self, lengths: np.ndarray, T: int, dtype):
        order = np.argsort(lengths, kind="stable")
        uniq, first = np.unique(lengths[order], return_index=True)
        self.ends = {int(u) - 1: grp for u, grp in zip(uniq, np.split(order, first[1:]))}
        self.mask = (np.arange(T)[:, None] < lengths[None, :]).astype(dtype)
        self.last = lengths - 1


class _Workspace:
    """Scratch arrays reused across calls, keyed by (name, shape, dtype).

    The trainer allocates the same large per-batch buffers (caches, gradients)
    over and over; fresh multi-megabyte allocations come from new pages and cost
    a page fault per 4 KiB on first touch, which measured about as long as the
    forward pass itself. Arrays handed out are overwritten by later calls with
    the same name: callers must not keep them beyond one batch.
    """

    def __init__(self):
        self._arrays: dict = {}

    def empty(self, name: str, shape: tuple, dtype) -> np.ndarray:
        key = (name, tuple(shape), np.dtype(dtype).str)
        arr = self._arrays.get(key)
        if arr is None:
            arr = self._arrays[key] = np.empty(shape, dtype=dtype)
        return arr


def _fresh(name: str, shape: tuple, dtype) -> np.ndarray:
    return np.empty(shape, dtype=dtype)


class _LayerCache:
    """What one layer keeps for backpropagation (see ``_layer_forward``).

    ``x`` (F_in, T, B) layer input (feature-major); time-major, so that each
    step writes and reads contiguous blocks: ``A`` (T, D, 4H, B) activated gates
    in the internal order (i, f, o, g); ``TC`` tanh(c_t), ``Hprev`` h_{t-1} and
    ``Cprev`` c_{t-1} (as seen by step t of each direction), all (T, D, H, B).
    Entries at padded steps are meaningless (the backward pass masks them out).
    """

    __slots__ = ("x", "A", "TC", "Hprev", "Cprev")


def _layer_forward(xa: np.ndarray, p: _Prepared, H: int, h0: np.ndarray, c0: np.ndarray,
                   lens: _Lengths | None, keep_cache: bool = False, ws: _Workspace | None = None,
                   tag: str = ""):
    """One layer, all directions, feature-major (the training kernel: see ``keep_cache``).

    Parameters
    ----------
    xa : ndarray of shape (F_in + 1, T, B), C-contiguous, compute dtype (not
        modified): the layer input, feature-major, with a last row of ones (so the
        bias rides along in the input projection).
    p : kernel weights of this layer.
    h0, c0 : ndarray of shape (D, H, B) (not modified).
    lens : per-step length bookkeeping, or None if every sequence has T steps.
    ws, tag : optional workspace for the large buffers (names prefixed by ``tag``).

    Returns
    -------
    out : ndarray of shape (D*H + 1, T, B): rows :D*H hold h_t of each direction
        (zero at padded steps), the last row is ones (ready to be the next layer's
        ``xa``).
    h_n, c_n : ndarray of shape (D, H, B), state after each sequence's own last
        step (forward: step lengths[b]-1; backward: step 0).
    cache : :class:`_LayerCache` or None.

    Notes
    -----
    All B columns are updated at every step, so the per-step work is a few
    whole-array operations with no per-sequence indexing. Columns past their
    sequence's end compute values that are never used: the forward direction's
    final state of sequence b is taken at step lengths[b]-1 (h from the output,
    c captured when it ends), and the backward direction's state of sequence b is
    reset to (h0, c0) just before its first step lengths[b]-1. Padded outputs are
    zeroed at the end, so the next layer and the caller see zeros there, as with
    ``pack_padded_sequence``/``pad_packed_sequence``.
    """
    F1, T, B = xa.shape
    D = len(p.w_hh_s)
    dtype = xa.dtype
    H2, H3, H4 = 2 * H, 3 * H, 4 * H
    alloc = _fresh if ws is None else ws.empty
    # input projection + bias of every time step and both directions: ONE matrix product
    xp = alloc(tag + "xp", (D * H4, T * B), dtype)
    np.matmul(p.w_ihb_s, xa.reshape(F1, T * B), out=xp)
    xp = xp.reshape(D, H4, T, B)
    out = alloc(tag + "out", (D * H + 1, T, B), dtype)
    out[D * H] = 1
    h_at = [[out[d * H:(d + 1) * H, t] for t in range(T)] for d in range(D)]
    c = np.array(c0, dtype=dtype)             # (D, H, B) cell state, updated in place
    c_n = np.empty((D, H, B), dtype=dtype)
    tmp = np.empty((D, H4, B), dtype=dtype)
    tc = np.empty((D, H, B), dtype=dtype)
    sig, i_g, f_g, o_g, g_g = tmp[:, :H3], tmp[:, :H], tmp[:, H:H2], tmp[:, H2:H3], tmp[:, H3:]
    whh = p.w_hh_s
    tmp_d = [tmp[d] for d in range(D)]
    # per-step views, built once: step s of direction d is time t (forward s, backward T-1-s)
    # and reads xp at t and h_{prev}, writes h_t
    steps = []
    for d in range(D):
        prev = np.array(h0[d], dtype=dtype)   # h_{-1} (a copy: the backward reset writes rows)
        lst = []
        for t in (range(T) if d == 0 else range(T - 1, -1, -1)):
            lst.append((t, xp[d, :, t], prev, h_at[d][t]))
            prev = h_at[d][t]
        steps.append(lst)
    ends = lens.ends if lens is not None else None
    cache = None
    if keep_cache:
        cache = _LayerCache()
        cache.x = xa[: F1 - 1]
        cache.A = alloc(tag + "A", (T, D, H4, B), dtype)
        cache.TC = alloc(tag + "TC", (T, D, H, B), dtype)
        cache.Hprev = alloc(tag + "Hprev", (T, D, H, B), dtype)
        cache.Cprev = alloc(tag + "Cprev", (T, D, H, B), dtype)
    matmul, multiply, add, tanh = np.matmul, np.multiply, np.add, np.tanh
    if D == 1 and not keep_cache:             # no per-step bookkeeping but the forward c_n
        w, t0, i0, f0, o0, g0, cc, tc0 = whh[0], tmp[0], i_g[0], f_g[0], o_g[0], g_g[0], c[0], tc[0]
        for t, xpt, hp, ht in steps[0]:
            matmul(w, hp, out=t0)
            add(t0, xpt, out=t0)
            tanh(t0, out=t0)
            sig *= 0.5
            sig += 0.5                        # sigmoid(z) = (1 + tanh(z/2)) / 2
            cc *= f0
            multiply(i0, g0, out=tc0)
            cc += tc0
            tanh(cc, out=tc0)
            multiply(o0, tc0, out=ht)
            if ends is not None and t in ends:  # these sequences end at t
                rows = ends[t]
                c_n[0][:, rows] = cc[:, rows]
    else:
        for s in range(T):
            for d in range(D):
                t, xpt, hp, _ = steps[d][s]
                if d == 1 and ends is not None and s > 0 and t in ends:  # sequence starts here: reset
                    rows = ends[t]
                    hp[:, rows] = h0[1][:, rows]
                    c[1][:, rows] = c0[1][:, rows]
                if keep_cache:
                    cache.Hprev[t, d] = hp
                    cache.Cprev[t, d] = c[d]
                matmul(whh[d], hp, out=tmp_d[d])
                add(tmp_d[d], xpt, out=tmp_d[d])
            tanh(tmp, out=tmp)
            sig *= 0.5
            sig += 0.5                            # sigmoid(z) = (1 + tanh(z/2)) / 2
            c *= f_g
            multiply(i_g, g_g, out=tc)
            c += tc
            tanh(c, out=tc)
            for d in range(D):
                t, _, _, ht = steps[d][s]
                multiply(o_g[d], tc[d], out=ht)
                if keep_cache:
                    cache.A[t, d] = tmp_d[d]
                    cache.TC[t, d] = tc[d]
            if ends is not None and s in ends:  # forward direction: these sequences end at s
                rows = ends[s]
                c_n[0][:, rows] = c[0][:, rows]
    h_n = np.empty((D, H, B), dtype=dtype)
    if lens is None:
        h_n[0] = h_at[0][T - 1]
        c_n[0] = c[0]
    else:
        h_n[0] = out[:H, lens.last, np.arange(B)]
        out[: D * H] *= lens.mask
    if D == 2:
        h_n[1] = h_at[1][0]
        c_n[1] = c[1]
    return out, h_n, c_n, cache


def _forward(x: np.ndarray, prepared: list[_Prepared], H: int, lens: _Lengths | None,
             h0: np.ndarray | None, c0: np.ndarray | None, keep_cache: bool = False,
             ws: _Workspace | None = None):
    """All layers, feature-major (the training kernel; inference uses :func:`_forward_bm`).

    Parameters
    ----------
    x : ndarray of shape (F, T, B), compute dtype (any strides: it is copied once,
        into a buffer with an extra row of ones).
    h0, c0 : ndarray of shape (L*D, H, B) or None (zeros).
    ws : optional workspace; then the output and caches live in it (valid until
        the next call with the same workspace).

    Returns
    -------
    output : ndarray of shape (D*H, T, B) (a view of a larger buffer); h_n, c_n : (L*D, H, B);
    caches : list of :class:`_LayerCache` (empty unless ``keep_cache``).
    """
    F, T, B = x.shape
    L, D = len(prepared), len(prepared[0].w_hh_s)
    dtype = x.dtype
    h_n = np.empty((L * D, H, B), dtype=dtype)
    c_n = np.empty((L * D, H, B), dtype=dtype)
    zeros = np.zeros((D, H, B), dtype=dtype) if h0 is None or c0 is None else None
    caches = []
    layer_in = (_fresh if ws is None else ws.empty)("x1", (F + 1, T, B), dtype)
    np.copyto(layer_in[:F], x)
    layer_in[F] = 1
    for k, p in enumerate(prepared):
        sl = slice(k * D, (k + 1) * D)
        out, h_n[sl], c_n[sl], cache = _layer_forward(
            layer_in, p, H, zeros if h0 is None else h0[sl], zeros if c0 is None else c0[sl],
            lens, keep_cache, ws, f"l{k}.")
        if keep_cache:
            caches.append(cache)
        layer_in = out
    return layer_in[: D * H], h_n, c_n, caches


def _layer_forward_bm(xa: np.ndarray, p: _Prepared, H: int, h0: np.ndarray, c0: np.ndarray,
                      lens: _Lengths | None, ones_col: bool):
    """One layer, all directions, batch-major (inference only: no caches).

    Parameters
    ----------
    xa : ndarray of shape (B, T, F_in + 1), C-contiguous, compute dtype (not
        modified): the layer input with a last column of ones (the bias rides
        along in the input projection).
    p : kernel weights of this layer (``w_ihb_t`` and ``w_hh4`` are used).
    h0, c0 : ndarray of shape (D, B, H) (not modified).
    lens : per-step length bookkeeping, or None if every sequence has T steps.
    ones_col : give the output a last column of ones (to be the next layer's ``xa``).

    Returns
    -------
    out : ndarray of shape (B, T, D*H) (or (B, T, D*H + 1) if ``ones_col``): h_t of
        each direction, zero at padded steps.
    h_n, c_n : ndarray of shape (D, B, H), state after each sequence's own last
        step (forward: step lengths[b]-1; backward: step 0).

    Notes
    -----
    The same recurrence as :func:`_layer_forward` (same variable-length
    bookkeeping), with every per-step array batch-major and each gate its own
    contiguous block: the projections of all steps come from ONE matrix product
    into a (B, T, D*4H) buffer, whose block for step t and direction d, viewed as
    (4, B, H), has rows of H contiguous values; the recurrent product is
    ``h_{t-1} (B, H) @ W_hh^T`` as a (4, H, H) stack, written straight into a
    (4, B, H) buffer (i, f, o, g blocks, each contiguous); h_t is written straight
    into the output, which is therefore batch-first without a transposing copy.
    """
    B, T, F1 = xa.shape
    D = len(p.w_hh4)
    dtype = xa.dtype
    xp = np.empty((B * T, D * 4 * H), dtype=dtype)
    np.matmul(xa.reshape(B * T, F1), p.w_ihb_t, out=xp)          # ONE product, bias included
    xp = xp.reshape(B, T, D, 4, H).transpose(1, 2, 3, 0, 4)      # view (T, D, 4, B, H)
    W = D * H + (1 if ones_col else 0)
    out = np.empty((B, T, W), dtype=dtype)
    if ones_col:
        out[:, :, D * H] = 1
    c = np.array(c0, dtype=dtype)             # (D, B, H) cell state, updated in place
    c_n = np.empty((D, B, H), dtype=dtype)
    hinit = np.array(h0, dtype=dtype)         # h_{-1} (a copy: the backward reset writes rows)
    tmp = np.empty((D, 4, B, H), dtype=dtype)
    tc = np.empty((D, B, H), dtype=dtype)
    sig, i_g, f_g, o_g, g_g = tmp[:, :3], tmp[:, 0], tmp[:, 1], tmp[:, 2], tmp[:, 3]
    # per-step views, built once: (time, projection block, h_{prev}, h_t) per direction
    steps = []
    for d in range(D):
        prev, lst = hinit[d], []
        for t in (range(T) if d == 0 else range(T - 1, -1, -1)):
            ht = out[:, t, d * H:(d + 1) * H]
            lst.append((t, xp[t, d], prev, ht))
            prev = ht
        steps.append(lst)
    ends = lens.ends if lens is not None else None
    matmul, multiply, add, tanh = np.matmul, np.multiply, np.add, np.tanh
    # the two directions share every elementwise call; locals and unrolled directions
    # because Python overhead per step is measurable next to ~25 us of arithmetic
    if D == 1:
        w0, t0, i0, f0, o0, g0, cc, tc0 = p.w_hh4[0], tmp[0], i_g[0], f_g[0], o_g[0], g_g[0], c[0], tc[0]
        for t, xpt, hp, ht in steps[0]:
            matmul(hp, w0, out=t0)
            add(t0, xpt, out=t0)
            tanh(t0, out=t0)
            sig *= 0.5
            sig += 0.5                        # sigmoid(z) = (1 + tanh(z/2)) / 2
            cc *= f0
            multiply(i0, g0, out=tc0)
            cc += tc0
            tanh(cc, out=tc0)
            multiply(o0, tc0, out=ht)
            if ends is not None and t in ends:  # these sequences end at t
                rows = ends[t]
                c_n[0][rows] = cc[rows]
    else:
        (w0, w1), (t0, t1), (o0, o1), (tc0, tc1) = p.w_hh4, tmp, o_g, tc
        for s, ((t, xp0, hp0, ht0), (tb, xp1, hp1, ht1)) in enumerate(zip(steps[0], steps[1])):
            if ends is not None and s > 0 and tb in ends:  # backward pass of these starts at tb
                rows = ends[tb]
                hp1[rows] = h0[1][rows]
                c[1][rows] = c0[1][rows]
            matmul(hp0, w0, out=t0)
            add(t0, xp0, out=t0)
            matmul(hp1, w1, out=t1)
            add(t1, xp1, out=t1)
            tanh(tmp, out=tmp)
            sig *= 0.5
            sig += 0.5                        # sigmoid(z) = (1 + tanh(z/2)) / 2
            c *= f_g
            multiply(i_g, g_g, out=tc)
            c += tc
            tanh(c, out=tc)
            multiply(o0, tc0, out=ht0)
            multiply(o1, tc1, out=ht1)
            if ends is not None and t in ends:  # forward direction: these sequences end at t
                rows = ends[t]
                c_n[0][rows] = c[0][rows]
    h_n = np.empty((D, B, H), dtype=dtype)
    if lens is None:
        h_n[0] = out[:, T - 1, :H]
        c_n[0] = c[0]
    else:
        h_n[0] = out[np.arange(B), lens.last, :H]
        out[:, :, : D * H] *= lens.mask.T[:, :, None]
    if D == 2:
        h_n[1] = out[:, 0, H:2 * H]
        c_n[1] = c[1]
    return out, h_n, c_n


def _forward_bm(x: np.ndarray, prepared: list[_Prepared], H: int, lens: _Lengths | None,
                h0: np.ndarray | None, c0: np.ndarray | None):
    """All layers, batch-major (inference: see :func:`_layer_forward_bm`).

    Parameters
    ----------
    x : ndarray of shape (B, T, F), compute dtype, any strides (copied once).
    h0, c0 : ndarray of shape (L*D, B, H) or None (zeros).

    Returns
    -------
    output : ndarray of shape (B, T, D*H); h_n, c_n : (L*D, B, H).

    Examples
    --------
    Same results as the feature-major training kernel :func:`_forward`:

    >>> enc = LSTMEncoder(3, 4, num_layers=2, bidirectional=True, seed=0)
    >>> x = np.random.default_rng(0).normal(size=(3, 6, 3)).astype(np.float32)
    >>> lens = _Lengths(np.array([6, 2, 4]), 6, np.float32)
    >>> prep = _prepare(enc.params_, 2, 2, 4, np.float32, batch_major=True)
    >>> h0 = np.random.default_rng(1).normal(size=(4, 3, 4)).astype(np.float32)
    >>> out, h_n, c_n = _forward_bm(x, prep, 4, lens, h0, -h0)
    >>> ref, ref_h, ref_c, _ = _forward(x.transpose(2, 1, 0), prep, 4, lens,
    ...                                 h0.transpose(0, 2, 1), -h0.transpose(0, 2, 1))
    >>> [float(np.abs(a - b).max()) < 1e-6 for a, b in
    ...  [(out, ref.transpose(2, 1, 0)), (h_n, ref_h.transpose(0, 2, 1)), (c_n, ref_c.transpose(0, 2, 1))]]
    [True, True, True]
    """
    B, T, F = x.shape
    L, D = len(prepared), len(prepared[0].w_hh4)
    dtype = x.dtype
    h_n = np.empty((L * D, B, H), dtype=dtype)
    c_n = np.empty((L * D, B, H), dtype=dtype)
    zeros = np.zeros((D, B, H), dtype=dtype) if h0 is None or c0 is None else None
    layer_in = np.empty((B, T, F + 1), dtype=dtype)
    layer_in[:, :, :F] = x
    layer_in[:, :, F] = 1
    for k, p in enumerate(prepared):
        sl = slice(k * D, (k + 1) * D)
        layer_in, h_n[sl], c_n[sl] = _layer_forward_bm(
            layer_in, p, H, zeros if h0 is None else h0[sl], zeros if c0 is None else c0[sl],
            lens, k < L - 1)
    return layer_in, h_n, c_n


# --------------------------------------------------------------------------- #
# validation helpers
# --------------------------------------------------------------------------- #
def _as_float_array(x, name: str, dtype) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, duck-typed
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating)
                                   or np.issubdtype(arr.dtype, np.integer)
                                   or arr.dtype == np.bool_):
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return arr.astype(dtype, copy=False)


def _check_finite(arr: np.ndarray, name: str) -> None:
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name} contains a non-finite value at index {tuple(int(i) for i in bad)}")


def _check_lengths(lengths, B: int, T: int) -> np.ndarray:
    if hasattr(lengths, "detach") and hasattr(lengths, "cpu"):
        lengths = lengths.detach().cpu().numpy()
    lengths = np.asarray(lengths)
    if lengths.dtype.kind not in "iu":
        if lengths.dtype.kind == "f" and np.all(np.isfinite(lengths)) and np.all(lengths == np.round(lengths)):
            lengths = lengths.astype(np.int64)
        else:
            raise TypeError(f"lengths must be integers, got dtype {lengths.dtype}")
    if lengths.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},) (one per sequence), got {lengths.shape}")
    lengths = lengths.astype(np.int64)
    if B and (lengths.min() < 1 or lengths.max() > T):
        bad = int(np.flatnonzero((lengths < 1) | (lengths > T))[0])
        raise ValueError(f"lengths must be in [1, {T}] (the sequence length), "
                         f"got lengths[{bad}] = {int(lengths[bad])}")
    return lengths


def _canonical_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


# --------------------------------------------------------------------------- #
# the estimator
# --------------------------------------------------------------------------- #
class LSTMEncoder:
    """Multi-layer (bidirectional) LSTM with torch.nn.LSTM semantics, in NumPy.

    Parameters
    ----------
    input_size : int
        Number of features F per time step.
    hidden_size : int
        Hidden state size H.
    num_layers : int, default=1
        Number of stacked layers L; layer k > 0 reads layer k-1's output (D*H features).
    bidirectional : bool, default=False
        Add a backward direction per layer (D = 2); outputs are concatenated
        [forward, backward] along the feature axis.
    batch_first : bool, default=True
        Layout of ``__call__``'s input/output: (B, T, F) if True, (T, B, F) if False.
        :meth:`embed` always takes (B, T, F).
    seed : int, numpy Generator or None
        Seed for the initialization, each parameter ~ U(-1/sqrt(H), 1/sqrt(H)) like torch.
    dtype : {"float32", "float64"}, default="float32"
        Compute and parameter dtype. float64 exists for gradient checks.

    Attributes
    ----------
    params_ : dict[str, ndarray]
        Parameters under torch's names (see :meth:`state_dict`).
    training_metadata_ : dict
        JSON-able description of how the weights were trained (set by
        :func:`streamkm.sequence.train.train_encoder` or read from a file).

    Examples
    --------
    >>> import numpy as np
    >>> enc = LSTMEncoder(3, 4, bidirectional=True, seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    >>> out, (h_n, c_n) = enc(x, lengths=[5, 3])
    >>> out.shape, h_n.shape
    ((2, 5, 8), (2, 2, 4))
    >>> bool(np.all(out[1, 3:] == 0))
    True
    >>> enc.embed(x, lengths=[5, 3]).shape
    (2, 8)

    References
    ----------
    Hochreiter, S. and Schmidhuber, J. (1997). Long short-term memory.
    Neural Computation 9(8), 1735-1780.
    Gers, F. A., Schmidhuber, J. and Cummins, F. (2000). Learning to forget:
    continual prediction with LSTM. Neural Computation 12(10), 2451-2471.
    """

    def __init__(self, input_size, hidden_size, *, num_layers=1, bidirectional=False,
                 batch_first=True, seed=None, dtype="float32"):
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.batch_first = batch_first
        self.seed = seed
        self.dtype = dtype
        _check_positive_int(input_size, "input_size")
        _check_positive_int(hidden_size, "hidden_size")
        _check_positive_int(num_layers, "num_layers")
        if not isinstance(bidirectional, (bool, np.bool_)):
            raise TypeError(f"bidirectional must be a bool, got {type(bidirectional).__name__}")
        if not isinstance(batch_first, (bool, np.bool_)):
            raise TypeError(f"batch_first must be a bool, got {type(batch_first).__name__}")
        dt = _canonical_dtype(dtype)
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(hidden_size)
        self.params_ = {name: rng.uniform(-bound, bound, size=shape).astype(dt)
                        for name, shape in self._shapes().items()}
        self.training_metadata_: dict = {}

    # ----------------------------------------------------------------- sizes
    @property
    def num_directions(self) -> int:
        """D = 2 if bidirectional else 1."""
        return 2 if self.bidirectional else 1

    @property
    def embedding_dim(self) -> int:
        """Size of :meth:`embed`'s output rows, D * H."""
        return self.num_directions * self.hidden_size

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        return _param_shapes(self.input_size, self.hidden_size, self.num_layers,
                             bool(self.bidirectional))

    def _sizes(self) -> dict:
        return {"input_size": int(self.input_size), "hidden_size": int(self.hidden_size),
                "num_layers": int(self.num_layers), "bidirectional": bool(self.bidirectional)}

    def __repr__(self) -> str:
        return (f"LSTMEncoder({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, batch_first={self.batch_first})")

    # --------------------------------------------------------------- forward
    def _validate_input(self, x, lengths, h0, c0, batch_first: bool):
        dt = np.dtype(self.dtype)
        x = _as_float_array(x, "x", dt)
        if x.ndim != 3:
            layout = "(batch, seq_len, features)" if batch_first else "(seq_len, batch, features)"
            raise ValueError(f"x must be 3-D {layout}, got shape {x.shape}")
        if x.shape[2] != self.input_size:
            raise ValueError(f"expected {self.input_size} features, got {x.shape[2]}")
        B, T = (x.shape[0], x.shape[1]) if batch_first else (x.shape[1], x.shape[0])
        if T == 0:
            raise ValueError(f"x must have at least one time step, got shape {x.shape}")
        _check_finite(x, "x")
        if lengths is not None:
            lengths = _check_lengths(lengths, B, T)
        states = []
        for name, s in (("h0", h0), ("c0", c0)):
            if s is not None:
                s = _as_float_array(s, name, dt)
                want = (self.num_layers * self.num_directions, B, self.hidden_size)
                if s.shape != want:
                    raise ValueError(f"{name} must have shape {want} "
                                     f"(num_layers * num_directions, batch, hidden_size), got {s.shape}")
                _check_finite(s, name)
            states.append(s)
        return x, lengths, states[0], states[1]

    def _run(self, x_btf, lengths, h0, c0):
        """Run the inference kernel on batch-first input (B, T, F) (any strides).

        States (L*D, B, H) or None; returns output (B, T, D*H) and h_n, c_n (L*D, B, H).
        """
        T = x_btf.shape[1]
        dt = np.dtype(self.dtype)
        lens = None
        if lengths is not None and not np.all(lengths == T):
            lens = _Lengths(lengths, T, dt)
        prepared = _prepare(self.params_, self.num_layers, self.num_directions, self.hidden_size, dt,
                            batch_major=True)
        return _forward_bm(x_btf, prepared, self.hidden_size, lens, h0, c0)

    def __call__(self, x, lengths=None, h0=None, c0=None):
        """Run the LSTM like ``torch.nn.LSTM.forward``.

        Parameters
        ----------
        x : array_like of shape (B, T, F) if ``batch_first`` else (T, B, F)
        lengths : array_like of int of shape (B,), optional
            Valid steps per sequence, 1 <= lengths[b] <= T (like
            ``pack_padded_sequence(..., enforce_sorted=False)``). Steps at and after
            ``lengths[b]`` are padding: they never change the state, the reverse
            direction starts at step ``lengths[b] - 1``, and their outputs are zero.
        h0, c0 : array_like of shape (L*D, B, H), optional
            Initial states (zeros if omitted); index ``k * D + d`` is layer k, direction d.

        Returns
        -------
        output : ndarray of shape (B, T, D*H) if ``batch_first`` else (T, B, D*H)
            Last layer's h_t, [forward, backward] concatenated; same T as the input
            (like ``pad_packed_sequence(..., total_length=T)``).
        (h_n, c_n) : tuple of ndarray of shape (L*D, B, H)
            State of every layer and direction after each sequence's own last step.

        Notes
        -----
        Like torch, a 2-D ``x`` of shape (T, F) is one unbatched sequence (whatever
        ``batch_first`` says): h0/c0 are then (L*D, H), the output (T, D*H) and
        h_n/c_n (L*D, H); ``lengths`` needs batched input.
        """
        if getattr(x, "ndim", None) == 2 or (not hasattr(x, "ndim") and np.ndim(x) == 2):
            if lengths is not None:
                raise ValueError("lengths needs batched 3-D input; got a 2-D (unbatched) x")
            states = []
            for name, st in (("h0", h0), ("c0", c0)):
                if st is not None:
                    st = _as_float_array(st, name, np.dtype(self.dtype))
                    want = (self.num_layers * self.num_directions, self.hidden_size)
                    if st.shape != want:
                        raise ValueError(f"{name} for unbatched input must have shape {want} "
                                         f"(num_layers * num_directions, hidden_size), got {st.shape}")
                    st = st[:, None, :]
                states.append(st)
            x = _as_float_array(x, "x", np.dtype(self.dtype))
            xb = x[None] if self.batch_first else x[:, None]
            out, (h_n, c_n) = self(xb, None, states[0], states[1])
            return (out[0] if self.batch_first else out[:, 0]), (h_n[:, 0], c_n[:, 0])
        bf = bool(self.batch_first)
        x, lengths, h0, c0 = self._validate_input(x, lengths, h0, c0, bf)
        D, H = self.num_directions, self.hidden_size
        B = x.shape[0] if bf else x.shape[1]
        if B == 0:
            T = x.shape[1] if bf else x.shape[0]
            out = np.zeros((0, T, D * H) if bf else (T, 0, D * H), dtype=x.dtype)
            empty = np.zeros((self.num_layers * D, 0, H), dtype=x.dtype)
            return out, (empty, empty.copy())
        out, h_n, c_n = self._run(x if bf else x.transpose(1, 0, 2), lengths, h0, c0)
        if not bf:
            out = np.ascontiguousarray(out.transpose(1, 0, 2))
        return out, (h_n, c_n)

    def embed(self, x, lengths=None, pooling="last", normalize=False, *,
              memory_budget_bytes=64 * 2**20) -> np.ndarray:
        """Fixed-size embedding of each sequence.

        Parameters
        ----------
        x : array_like of shape (B, T, F)
            Always batch-first, whatever ``batch_first`` says.
        lengths : array_like of int of shape (B,), optional
        pooling : {"last", "mean"}
            "last": the last layer's h_n, [forward (state at the last valid step),
            backward (state at step 0)]; "mean": the last layer's outputs averaged
            over the valid steps.
        normalize : bool
            Scale each row to unit L2 norm (rows of norm 0 stay 0).
        memory_budget_bytes : int
            Sequences are embedded in consecutive chunks whose per-layer buffers
            (input projections, outputs) stay within about this many bytes, so a
            large batch never allocates gigabytes. The chunk size depends only on
            the shapes, so the result is deterministic.

        Returns
        -------
        ndarray of shape (B, D*H), the encoder's dtype.
        """
        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be 'last' or 'mean', got {pooling!r}")
        if isinstance(memory_budget_bytes, bool) or not isinstance(memory_budget_bytes, (int, np.integer)) \
                or memory_budget_bytes < 1:
            raise ValueError(f"memory_budget_bytes must be a positive int, got {memory_budget_bytes!r}")
        x, lengths, _, _ = self._validate_input(x, lengths, None, None, True)
        B, T = x.shape[:2]
        D, H, L = self.num_directions, self.hidden_size, self.num_layers
        emb = np.empty((B, D * H), dtype=x.dtype)
        if B == 0:
            return emb
        # per sequence: gates (D*4H*T) + output (D*H*T) + input copy ((F+1)*T) values
        per_seq = (5 * D * H + self.input_size + 1) * T * x.dtype.itemsize
        chunk = int(max(1, min(B, memory_budget_bytes // per_seq)))
        for lo in range(0, B, chunk):
            hi = min(B, lo + chunk)
            ln = None if lengths is None else lengths[lo:hi]
            out, h_n, _ = self._run(x[lo:hi], ln, None, None)
            if pooling == "last":
                emb[lo:hi] = np.concatenate([h_n[(L - 1) * D + d] for d in range(D)], axis=1)
            else:
                n = np.full(hi - lo, T, dtype=np.int64) if ln is None else ln
                emb[lo:hi] = out.sum(axis=1) / n.astype(out.dtype)[:, None]
        if normalize:
            norms = np.sqrt(np.einsum("ij,ij->i", emb, emb))
            np.divide(emb, norms[:, None], out=emb, where=norms[:, None] > 0)
        return emb

    # ------------------------------------------------------------ state dict
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters under torch.nn.LSTM's names, in torch's order."""
        return {name: self.params_[name].copy() for name in self._shapes()}

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Replace the parameters; all keys and shapes are checked before anything changes.

        Accepts NumPy arrays or anything ``np.asarray`` understands (torch tensors
        too). Raises KeyError-free ValueErrors naming missing/unexpected keys and
        wrong shapes; TypeError for non-numeric values.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        shapes = self._shapes()
        missing = [k for k in shapes if k not in state_dict]
        unexpected = [k for k in state_dict if k not in shapes]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            raise ValueError(f"state_dict does not match {self!r}: " + "; ".join(parts))
        dt = np.dtype(self.dtype)
        new = {}
        for name, shape in shapes.items():
            arr = _as_float_array(state_dict[name], name, dt)
            if arr.shape != shape:
                raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
            _check_finite(arr, name)
            new[name] = np.array(arr, dtype=dt, order="C")
        self.params_ = new

    def astype(self, dtype) -> "LSTMEncoder":
        """A copy of this encoder computing in ``dtype`` (float32 or float64)."""
        dt = _canonical_dtype(dtype)
        enc = LSTMEncoder(self.input_size, self.hidden_size, num_layers=self.num_layers,
                          bidirectional=self.bidirectional, batch_first=self.batch_first,
                          seed=self.seed, dtype=dt.name)
        enc.params_ = {k: v.astype(dt) for k, v in self.params_.items()}
        enc.training_metadata_ = json.loads(json.dumps(self.training_metadata_))
        return enc

    @property
    def content_hash(self) -> str:
        """sha256 hex digest of the sizes and the parameter bytes in torch's order.

        Covers (input_size, hidden_size, num_layers, bidirectional) and, per
        parameter, its name, dtype, shape and little-endian C-order bytes; it does
        not cover ``batch_first`` or the training metadata, which do not change
        what the weights compute.
        """
        return _content_hash(self._sizes(), self.params_)

    # ------------------------------------------------------------ save / load
    def save(self, path) -> Path:
        """Write the weights to ``path`` (.npz, no pickle) with a JSON header; atomic replace.

        The header (stored as the uint8 array ``__header__``) holds format name and
        version, the sizes, ``batch_first``, dtype, ``training`` metadata and
        ``content_hash``.
        """
        path = Path(path)
        header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **self._sizes(),
                  "batch_first": bool(self.batch_first), "dtype": np.dtype(self.dtype).name,
                  "training": self.training_metadata_, "content_hash": self.content_hash}
        try:
            header_bytes = json.dumps(header, sort_keys=True, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"training_metadata_ is not JSON-serializable: {exc}") from None
        arrays = {name: self.params_[name] for name in self._shapes()}
        arrays[_HEADER_KEY] = np.frombuffer(header_bytes, dtype=np.uint8)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path

    @staticmethod
    def read_header(path) -> dict:
        """The JSON header of a weights file written by :meth:`save` (parameters are not checked)."""
        return _read_file(path)[0]

    @classmethod
    def load(cls, path) -> "LSTMEncoder":
        """Load an encoder written by :meth:`save`, verifying sizes, shapes and the content hash.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file is not a streamkm LSTM file, is corrupted or truncated,
            lacks a parameter, has a wrong shape, or its parameters do not match the
            recorded content hash.
        """
        header, arrays = _read_file(path)
        try:
            enc = cls(header["input_size"], header["hidden_size"], num_layers=header["num_layers"],
                      bidirectional=header["bidirectional"], batch_first=header.get("batch_first", True),
                      dtype=header.get("dtype", "float32"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: invalid sizes in header: {exc}") from None
        want = np.dtype(enc.dtype)
        for name, arr in arrays.items():
            if name in enc.params_ and arr.dtype != want:
                raise ValueError(f"{path}: {name} has dtype {arr.dtype}, but the header "
                                 f"records {want.name} (not written by save(), or edited)")
        try:
            enc.load_state_dict(arrays)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from None
        recorded = header.get("content_hash")
        actual = enc.content_hash
        if recorded != actual:
            raise ValueError(f"{path}: content hash mismatch: header records {recorded}, "
                             f"parameters hash to {actual} (file corrupted or edited?)")
        training = header.get("training", {})
        enc.training_metadata_ = training if isinstance(training, dict) else {}
        return enc

    @classmethod
    def from_torch(cls, source, *, batch_first=None, dtype="float32") -> "LSTMEncoder":
        """Build an encoder from PyTorch LSTM weights.

        Parameters
        ----------
        source : str, path, torch.nn.LSTM, or mapping of name -> tensor/array
            A ``torch.nn.LSTM`` module, its ``state_dict()`` (tensors or arrays), or
            a file written by ``torch.save(model.state_dict(), path)`` (read with
            ``weights_only=True``, so files holding pickled modules are refused).
            Keys may carry a module prefix such as ``"encoder.lstm."`` if exactly one
            LSTM is present. torch is imported only to read files.
        batch_first : bool, optional
            Layout for ``__call__``; default: the module's own, else True.

        Notes
        -----
        Sizes are inferred from the shapes: H from ``weight_hh_l0``, F from
        ``weight_ih_l0``, L from the highest layer index, D from ``_reverse`` keys.
        ``bias=False`` LSTMs get zero biases; ``proj_size > 0`` is not supported.
        """
        module_bf = None
        obj = source
        if isinstance(source, (str, os.PathLike)):
            import torch  # lazy: only needed to read torch's file format

            try:
                obj = torch.load(os.fspath(source), map_location="cpu", weights_only=True)
            except FileNotFoundError:
                raise
            except Exception as exc:
                raise ValueError(f"cannot read torch weights from {source}: {exc}") from None
        if hasattr(obj, "state_dict") and callable(obj.state_dict) and not isinstance(obj, Mapping):
            module_bf = getattr(obj, "batch_first", None)
            if getattr(obj, "proj_size", 0):
                raise ValueError(f"LSTM with proj_size={obj.proj_size} is not supported")
            obj = obj.state_dict()
        if not isinstance(obj, Mapping):
            raise TypeError(f"expected a torch LSTM, a state dict or a path, got {type(obj).__name__}")
        keys = [str(k) for k in obj]
        prefixes = sorted({k[: -len("weight_ih_l0")] for k in keys if k.endswith("weight_ih_l0")})
        if not prefixes:
            raise ValueError(f"no 'weight_ih_l0' key in the torch state dict (keys: {keys[:8]})")
        if len(prefixes) > 1:
            raise ValueError(f"several LSTMs in the state dict (prefixes {prefixes}); pass one")
        prefix = prefixes[0]
        sd = {}
        for k, v in obj.items():
            k = str(k)
            if not k.startswith(prefix):
                continue
            name = k[len(prefix):]
            if "weight_hr" in name:
                raise ValueError(f"projection weights ({k}) are not supported (proj_size > 0)")
            if hasattr(v, "detach"):
                v = v.detach().cpu().numpy()
            sd[name] = np.asarray(v)
        if "weight_hh_l0" not in sd:
            raise ValueError(f"missing key {prefix}weight_hh_l0 in the torch state dict")
        w_ih, w_hh = sd["weight_ih_l0"], sd["weight_hh_l0"]
        if w_hh.ndim != 2 or w_ih.ndim != 2:
            raise ValueError(f"weight_ih_l0/weight_hh_l0 must be 2-D, got {w_ih.shape} and {w_hh.shape}")
        H, F = w_hh.shape[1], w_ih.shape[1]
        layers = [int(n[len("weight_ih_l"):].split("_")[0]) for n in sd if n.startswith("weight_ih_l")]
        L = max(layers) + 1
        bi = any(n.endswith("_reverse") for n in sd)
        bf = batch_first if batch_first is not None else (module_bf if module_bf is not None else True)
        enc = cls(F, H, num_layers=L, bidirectional=bi, batch_first=bool(bf), dtype=dtype)
        if not any(n.startswith("bias_") for n in sd):  # torch.nn.LSTM(bias=False)
            for n, shape in enc._shapes().items():
                if n.startswith("bias_"):
                    sd[n] = np.zeros(shape, dtype=np.dtype(dtype))
        enc.load_state_dict(sd)
        enc.training_metadata_ = {"source": "torch"}
        return enc


# --------------------------------------------------------------------------- #
# file helpers
# --------------------------------------------------------------------------- #
def _content_hash(sizes: dict, params: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(sizes, sort_keys=True).encode("utf-8"))
    for name in _param_names(sizes["num_layers"], sizes["bidirectional"]):
        arr = np.asarray(params[name])
        le = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        h.update(f"\n{name}:{le.dtype.str}:{list(arr.shape)}\n".encode("utf-8"))
        h.update(np.ascontiguousarray(le).tobytes())
    return h.hexdigest()


def _read_file(path) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays) of a weights file, with clear errors for anything wrong."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"LSTM weights file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            arrays = {name: z[name] for name in z.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError) as exc:
        raise ValueError(f"{path}: corrupted, truncated or not an LSTM weights .npz file: "
                         f"{type(exc).__name__}: {exc}") from None
    raw = arrays.pop(_HEADER_KEY, None)
    if raw is None:
        raise ValueError(f"{path}: missing {_HEADER_KEY!r} (not a streamkm LSTM weights file?)")
    try:
        header = json.loads(np.asarray(raw, dtype=np.uint8).tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: corrupted header: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: not a {FORMAT_NAME} file (header format "
                         f"{header.get('format') if isinstance(header, dict) else header!r})")
    version = header.get("format_version")
    if not isinstance(version, int) or version < 1 or version > FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported format_version {version!r} "
                         f"(this streamkm reads 1..{FORMAT_VERSION})")
    missing = [k for k in ("input_size", "hidden_size", "num_layers", "bidirectional", "content_hash")
               if k not in header]
    if missing:
        raise ValueError(f"{path}: header lacks {missing}")
    return header, arrays

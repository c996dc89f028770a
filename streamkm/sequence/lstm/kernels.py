"""LSTM forward kernels in NumPy, their per-batch bookkeeping and scratch buffers.

Used by the encoder (:mod:`streamkm.sequence.lstm.encoder`) and the trainer
(:mod:`streamkm.sequence.train`); they assume valid input. ``*_fm`` kernels work
feature-major, arrays (features, T, B) (training: they keep the caches that
:mod:`streamkm.sequence.lstm.backward` needs); ``*_bm`` kernels batch-major,
(B, T, features) (inference). The weight layout (:func:`prepare` and friends) lives
in :mod:`streamkm.sequence.lstm.layout` and is re-exported here. Design and
measurements: docs/lstm.md, "Implementation of the kernels".
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from streamkm.sequence.lstm.layout import PreparedLayer, gate_perm, param_names, param_shapes, prepare

__all__ = [
    "param_names", "param_shapes", "gate_perm", "PreparedLayer", "prepare", "Lengths", "Workspace",
    "LayerCache", "layer_forward_fm", "forward_fm", "layer_forward_bm", "forward_bm",
]


# --------------------------------------------------------------------------- #
# per-batch bookkeeping and buffers
# --------------------------------------------------------------------------- #
class Lengths:
    """Per-step bookkeeping for variable lengths (built once per batch).

    Parameters
    ----------
    lengths : ndarray of shape (B,), int
        Valid steps per sequence, each in [1, T] (not checked; not modified).
    T : int
        Padded sequence length.
    dtype : float32 or float64
        dtype of ``mask``.

    Attributes
    ----------
    ends : dict of int to ndarray of int
        ``ends[t]``: indices of the sequences whose last valid step is t.
    mask : ndarray of shape (T, B)
        1 at valid steps, 0 at padding.
    last : ndarray of shape (B,)
        ``lengths - 1``.
    """

    __slots__ = ("ends", "mask", "last")

    def __init__(self, lengths: NDArray[np.integer[Any]], T: int, dtype: DTypeLike) -> None:
        order = np.argsort(lengths, kind="stable")
        uniq, first = np.unique(lengths[order], return_index=True)
        self.ends: dict[int, NDArray[np.intp]] = {
            int(u) - 1: grp for u, grp in zip(uniq, np.split(order, first[1:]), strict=True)}
        self.mask: NDArray[Any] = (np.arange(T)[:, None] < lengths[None, :]).astype(dtype)
        self.last: NDArray[np.integer[Any]] = lengths - 1


class Workspace:
    """Scratch arrays reused across calls, keyed by (name, shape, dtype).

    The trainer allocates the same large per-batch buffers (caches, gradients)
    over and over; fresh multi-megabyte allocations come from new pages and cost
    a page fault per 4 KiB on first touch, which measured about as long as the
    forward pass itself. Arrays handed out are overwritten by later calls with
    the same name: callers must not keep them beyond one batch.
    """

    def __init__(self) -> None:
        self._arrays: dict[tuple[str, tuple[int, ...], str], NDArray[Any]] = {}

    def empty(self, name: str, shape: tuple[int, ...], dtype: DTypeLike) -> NDArray[Any]:
        """An uninitialized array of ``shape`` and ``dtype``, the same one for the same key."""
        key = (name, tuple(shape), np.dtype(dtype).str)
        arr = self._arrays.get(key)
        if arr is None:
            arr = self._arrays[key] = np.empty(shape, dtype=dtype)
        return arr


def _fresh(name: str, shape: tuple[int, ...], dtype: DTypeLike) -> NDArray[Any]:
    return np.empty(shape, dtype=dtype)


class LayerCache:
    """What one layer keeps for backpropagation (filled by :func:`layer_forward_fm`).

    Time-major, so that each step writes and reads contiguous blocks. Entries
    at padded steps are meaningless (the backward pass masks them out).

    Attributes
    ----------
    x : ndarray of shape (F_in, T, B)
        Layer input, feature-major (a view of the forward pass's input buffer).
    A : ndarray of shape (T, D, 4H, B)
        Activated gates in the internal order (i, f, o, g).
    TC, Hprev, Cprev : ndarray of shape (T, D, H, B)
        tanh(c_t), h_{t-1} and c_{t-1} as seen by step t of each direction.
    """

    __slots__ = ("x", "A", "TC", "Hprev", "Cprev")
    x: NDArray[Any]
    A: NDArray[Any]
    TC: NDArray[Any]
    Hprev: NDArray[Any]
    Cprev: NDArray[Any]


# --------------------------------------------------------------------------- #
# feature-major forward (training)
# --------------------------------------------------------------------------- #
def layer_forward_fm(xa: NDArray[Any], p: PreparedLayer, H: int, h0: NDArray[Any], c0: NDArray[Any],
                     lens: Lengths | None, keep_cache: bool = False, ws: Workspace | None = None,
                     tag: str = "") -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], LayerCache | None]:
    """One layer, all directions, feature-major (the training kernel: see ``keep_cache``).

    Parameters
    ----------
    xa : ndarray of shape (F_in + 1, T, B)
        C-contiguous, compute dtype (not modified): the layer input with a last
        row of ones (so the bias rides along in the input projection).
    p : PreparedLayer
        Kernel weights of this layer (``w_ihb_s``, ``w_hh_s``).
    H : int
    h0, c0 : ndarray of shape (D, H, B)
        Initial states (not modified).
    lens : Lengths or None
        Per-step length bookkeeping; None if every sequence has T steps.
    keep_cache : bool
        Fill and return a :class:`LayerCache` for the backward pass.
    ws, tag : Workspace or None, str
        Optional workspace for the large buffers (names prefixed by ``tag``);
        then ``out`` and the cache live in it and are overwritten by the next
        call with the same names.

    Returns
    -------
    out : ndarray of shape (D*H + 1, T, B)
        Rows :D*H hold h_t of each direction (zero at padded steps), the last row
        is ones (ready to be the next layer's ``xa``).
    h_n, c_n : ndarray of shape (D, H, B)
        State after each sequence's own last step (forward: step lengths[b]-1;
        backward: step 0).
    cache : LayerCache or None

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
    cache = LayerCache() if keep_cache else None
    if cache is not None:
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
                if cache is not None:
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
                if cache is not None:
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


def forward_fm(x: NDArray[Any], prepared: list[PreparedLayer], H: int, lens: Lengths | None,
               h0: NDArray[Any] | None, c0: NDArray[Any] | None, keep_cache: bool = False,
               ws: Workspace | None = None
               ) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], list[LayerCache]]:
    """All layers, feature-major (the training kernel; inference uses :func:`forward_bm`).

    Parameters
    ----------
    x : ndarray of shape (F, T, B)
        Compute dtype, any strides (not modified: it is copied once, into a
        buffer with an extra row of ones).
    prepared : list of PreparedLayer, length L
        From :func:`prepare`.
    H : int
    lens : Lengths or None
    h0, c0 : ndarray of shape (L*D, H, B) or None
        Initial states (zeros if None; not modified).
    keep_cache : bool
        Return one :class:`LayerCache` per layer for the backward pass.
    ws : Workspace or None
        Then the output and caches live in it (valid until the next call with
        the same workspace).

    Returns
    -------
    output : ndarray of shape (D*H, T, B)
        The last layer's h_t (a view of a larger buffer).
    h_n, c_n : ndarray of shape (L*D, H, B)
    caches : list of LayerCache
        Empty unless ``keep_cache``.
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
        h0k = zeros if h0 is None else h0[sl]
        c0k = zeros if c0 is None else c0[sl]
        assert h0k is not None and c0k is not None  # zeros exists whenever a state is missing
        out, h_n[sl], c_n[sl], cache = layer_forward_fm(layer_in, p, H, h0k, c0k, lens, keep_cache, ws,
                                                        f"l{k}.")
        if cache is not None:
            caches.append(cache)
        layer_in = out
    return layer_in[: D * H], h_n, c_n, caches


# --------------------------------------------------------------------------- #
# batch-major forward (inference)
# --------------------------------------------------------------------------- #
def layer_forward_bm(xa: NDArray[Any], p: PreparedLayer, H: int, h0: NDArray[Any], c0: NDArray[Any],
                     lens: Lengths | None, ones_col: bool) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """One layer, all directions, batch-major (inference only: no caches).

    Parameters
    ----------
    xa : ndarray of shape (B, T, F_in + 1)
        C-contiguous, compute dtype (not modified): the layer input with a last
        column of ones (the bias rides along in the input projection).
    p : PreparedLayer
        Kernel weights of this layer, built with ``batch_major=True``
        (``w_ihb_t`` and ``w_hh4`` are used).
    H : int
    h0, c0 : ndarray of shape (D, B, H)
        Initial states (not modified).
    lens : Lengths or None
        Per-step length bookkeeping; None if every sequence has T steps.
    ones_col : bool
        Give the output a last column of ones (to be the next layer's ``xa``).

    Returns
    -------
    out : ndarray of shape (B, T, D*H), or (B, T, D*H + 1) if ``ones_col``
        h_t of each direction, zero at padded steps (a new array).
    h_n, c_n : ndarray of shape (D, B, H)
        State after each sequence's own last step (forward: step lengths[b]-1;
        backward: step 0).

    Notes
    -----
    The same recurrence as :func:`layer_forward_fm` (same variable-length
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
        for s, ((t, xp0, hp0, ht0), (tb, xp1, hp1, ht1)) in enumerate(zip(steps[0], steps[1], strict=True)):
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


def forward_bm(x: NDArray[Any], prepared: list[PreparedLayer], H: int, lens: Lengths | None,
               h0: NDArray[Any] | None, c0: NDArray[Any] | None
               ) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """All layers, batch-major (inference: see :func:`layer_forward_bm`).

    Parameters
    ----------
    x : ndarray of shape (B, T, F)
        Compute dtype, any strides (not modified: it is copied once).
    prepared : list of PreparedLayer, length L
        From :func:`prepare` with ``batch_major=True``.
    H : int
    lens : Lengths or None
    h0, c0 : ndarray of shape (L*D, B, H) or None
        Initial states (zeros if None; not modified).

    Returns
    -------
    output : ndarray of shape (B, T, D*H)
        The last layer's h_t (a new array).
    h_n, c_n : ndarray of shape (L*D, B, H)

    Examples
    --------
    Same results as the feature-major training kernel :func:`forward_fm`:

    >>> rng = np.random.default_rng(0)
    >>> params = {k: rng.uniform(-0.5, 0.5, s).astype(np.float32)
    ...           for k, s in param_shapes(3, 4, 2, True).items()}
    >>> x = rng.normal(size=(3, 6, 3)).astype(np.float32)
    >>> lens = Lengths(np.array([6, 2, 4]), 6, np.float32)
    >>> prep = prepare(params, 2, 2, 4, np.float32, batch_major=True)
    >>> h0 = rng.normal(size=(4, 3, 4)).astype(np.float32)
    >>> out, h_n, c_n = forward_bm(x, prep, 4, lens, h0, -h0)
    >>> ref, ref_h, ref_c, _ = forward_fm(x.transpose(2, 1, 0), prep, 4, lens,
    ...                                   h0.transpose(0, 2, 1), -h0.transpose(0, 2, 1))
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
        h0k = zeros if h0 is None else h0[sl]
        c0k = zeros if c0 is None else c0[sl]
        assert h0k is not None and c0k is not None  # zeros exists whenever a state is missing
        layer_in, h_n[sl], c_n[sl] = layer_forward_bm(layer_in, p, H, h0k, c0k, lens, k < L - 1)
    return layer_in, h_n, c_n

"""LSTM forward kernel in NumPy, its per-batch bookkeeping and scratch buffers.

One layer kernel, :func:`layer_forward`, serves the encoder
(:mod:`streamkm.sequence.lstm.encoder`, through :func:`forward_bm`: batch-first
input and output) and the trainer (:mod:`streamkm.sequence.train`, through
:func:`forward_fm`: feature-major (features, T, B), keeping the caches that
:mod:`streamkm.sequence.lstm.backward` needs). Kernels assume valid input. The
weight layout (:func:`prepare` and friends) lives in
:mod:`streamkm.sequence.lstm.layout` and is re-exported here. Design and
measurements: docs/lstm.md, "Implementation of the kernels".
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from streamkm.sequence.lstm.layout import PreparedLayer, gate_perm, param_names, param_shapes, prepare

__all__ = [
    "param_names", "param_shapes", "gate_perm", "PreparedLayer", "prepare", "Lengths", "Workspace",
    "LayerCache", "layer_forward", "forward_fm", "forward_bm",
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
    """What one layer keeps for backpropagation (filled by :func:`layer_forward`).

    Indexed by step s: direction 0's step s is time s, direction 1's is time
    T-1-s. Entries at padded steps are meaningless (the backward pass masks
    them out).

    Attributes
    ----------
    z : ndarray of shape (T+1, D, H + F_in + 1, B)
        Step inputs ``[h_{s-1}; x; 1]`` (see :func:`layer_forward`).
    A : ndarray of shape (T+1, D, 5H, B)
        Rows :4H of ``A[s]``: the activated gates (o, i, f, g) of step s; rows 4H:
        c_{s-1}, the cell state step s started from (so ``A[T, :, 4H:]`` is the
        final one).
    TC : ndarray of shape (T, D, H, B)
        tanh(c_s).
    """

    __slots__ = ("z", "A", "TC")
    z: NDArray[Any]
    A: NDArray[Any]
    TC: NDArray[Any]


#: Largest batch for which the per-step product runs as one GEMM per gate block.
_SPLIT_MAX_B = 32


def _starts(lens: Lengths | None, T: int, D: int) -> dict[int, NDArray[np.intp]]:
    """Steps at which the backward direction of some sequences starts: {step: rows}.

    Sequence b's backward pass starts at its last valid time lengths[b]-1, which
    is step T-lengths[b]; step 0 needs no reset (it starts from h0, c0 anyway).
    """
    if lens is None or D == 1:
        return {}
    return {T - 1 - t: rows for t, rows in lens.ends.items() if t < T - 1}


# --------------------------------------------------------------------------- #
# the layer kernel
# --------------------------------------------------------------------------- #
def layer_forward(z: NDArray[Any], p: PreparedLayer, H: int, h0: NDArray[Any], c0: NDArray[Any],
                  lens: Lengths | None, keep_cache: bool = False, ws: Workspace | None = None,
                  tag: str = "") -> tuple[NDArray[Any], NDArray[Any], LayerCache | None]:
    """One layer, both directions stepped together, feature-major blocks.

    Parameters
    ----------
    z : ndarray of shape (T+1, D, K, B), K = H + F_in + 1
        C-contiguous, compute dtype. On entry rows H:K-1 of ``z[s, 0]`` hold the
        layer input at time s, those of ``z[s, 1]`` the input at time T-1-s (the
        backward direction reads its input reversed), row K-1 is ones, for s < T;
        ``z[0, :, :H]`` must equal ``h0``. MODIFIED: the kernel writes h_s of
        each direction into ``z[s+1, :, :H]`` (so ``z[1:, :, :H]`` is the
        layer's output in step order) and, with variable lengths, h0 rows into
        padded steps where a backward pass starts.
    p : PreparedLayer
        Kernel weights of this layer (``w_z``).
    H : int
    h0, c0 : ndarray of shape (D, H, B)
        Initial states (not modified).
    lens : Lengths or None
        Per-step length bookkeeping; None if every sequence has T steps.
    keep_cache : bool
        Fill and return a :class:`LayerCache` (``z`` is then part of it).
    ws, tag : Workspace or None, str
        Optional workspace for the cache buffers (names prefixed by ``tag``).

    Returns
    -------
    h_n, c_n : ndarray of shape (D, H, B)
        State after each sequence's own last step (forward: time lengths[b]-1;
        backward: time 0).
    cache : LayerCache or None

    Notes
    -----
    Per time step the loop makes 8 NumPy calls whatever D is, each on blocks
    that are contiguous per direction:

    * ONE stacked product ``w_z (D, 4, H, K) @ z[s] (D, 1, K, B)`` gives the
      pre-activations of all four gates of both directions: the recurrent
      product, the input projection and the bias in one GEMM per direction and
      gate (measured faster than a separate input-projection GEMM over all
      steps plus a per-step add; for B > 32 one GEMM per direction);
    * ONE ``tanh`` serves all gates of both directions: the sigmoid rows of
      ``w_z`` were scaled by 1/2 so that ``sigmoid(z) = (1 + tanh(z/2)) / 2``
      then needs a multiply and an add on the first 3H rows (o, i, f);
    * ONE multiply ``[i, f] * [g, c_{t-1}]`` (the rows after (i, f) hold g and
      then c_{t-1}) forms both products of the cell update, one add gives c_t;
    * ``tanh(c_t)``, and ``h_t = o * tanh(c_t)`` written straight into the next
      step's input column ``z[s+1, :, :H]``.

    Variable lengths cost no per-step indexing but at the few steps where a
    sequence ends (forward direction: its c is kept) or starts (backward
    direction: its rows of h and c are reset to h0, c0 first). Every column is
    updated at every step; the values past a sequence's end are never used.
    """
    T1, D, K, B = z.shape
    T = T1 - 1
    dtype = z.dtype
    H3, H4 = 3 * H, 4 * H
    ends = lens.ends if lens is not None else None
    starts = _starts(lens, T, D)
    c_n = np.empty((D, H, B), dtype=dtype)
    # one GEMM per gate block for small batches (OpenBLAS's small-matrix path: measured
    # 1.4x faster at B = 32), one (4H, K) @ (K, B) GEMM per direction from B = 64 on
    # (about 8% faster there); both write the same (D, 4H, B) memory
    split = B <= _SPLIT_MAX_B
    w = p.w_z if split else p.w_z.reshape(D, H4, K)
    zin = z[:, :, None] if split else z        # zin[s] is step s's input, (D, 1, K, B) or (D, K, B)
    hout = z[1:, :, :H]                         # (T, D, H, B): hout[s] receives h_s
    matmul, multiply, add, tanh = np.matmul, np.multiply, np.add, np.tanh
    cache = None
    if not keep_cache:
        # one gate buffer, rows (o, i, f, g, c): c_{t-1} becomes c_t in place
        G = np.empty((D, 5 * H, B), dtype=dtype)
        np.copyto(G[:, H4:], c0)
        G4 = G[:, :H4]
        Gw = G4.reshape(D, 4, H, B) if split else G4
        S, o_g, ifg, gc, ig, c = G[:, :H3], G[:, :H], G[:, H:H3], G[:, H3:], G[:, H3:H4], G[:, H4:]
        tc = np.empty((D, H, B), dtype=dtype)
        for s in range(T):
            if s in starts:                     # backward pass of these sequences starts here
                rows = starts[s]
                z[s, 1, :H, rows] = h0[1][:, rows].T   # (the integer and array indices put rows first)
                c[1][:, rows] = c0[1][:, rows]
            matmul(w, zin[s], out=Gw)
            tanh(G4, out=G4)
            multiply(S, 0.5, out=S)
            add(S, 0.5, out=S)                  # sigmoid(z) = (1 + tanh(z/2)) / 2
            multiply(ifg, gc, out=gc)           # [i * g, f * c_{t-1}]
            add(ig, c, out=c)                   # c_t
            tanh(c, out=tc)
            multiply(o_g, tc, out=hout[s])      # h_t
            if ends is not None and s in ends:  # forward direction: these sequences end at s
                rows = ends[s]
                c_n[0][:, rows] = c[0][:, rows]
        c_fin = c
    else:
        alloc = _fresh if ws is None else ws.empty
        cache = LayerCache()
        cache.z = z
        A = cache.A = alloc(tag + "A", (T1, D, 5 * H, B), dtype)
        TC = cache.TC = alloc(tag + "TC", (T, D, H, B), dtype)
        np.copyto(A[0, :, H4:], c0)
        Aw = A[:, :, :H4].reshape(T1, D, 4, H, B) if split else A[:, :, :H4]
        P = np.empty((D, 2 * H, B), dtype=dtype)
        P1, P2 = P[:, :H], P[:, H:]
        for s in range(T):
            a = A[s]
            if s in starts:
                rows = starts[s]
                z[s, 1, :H, rows] = h0[1][:, rows].T   # (the integer and array indices put rows first)
                a[1, H4:, rows] = c0[1][:, rows].T
            matmul(w, zin[s], out=Aw[s])
            a4 = a[:, :H4]
            tanh(a4, out=a4)
            sg = a[:, :H3]
            multiply(sg, 0.5, out=sg)
            add(sg, 0.5, out=sg)
            multiply(a[:, H:H3], a[:, H3:], out=P)   # [i * g, f * c_{t-1}]; the cache keeps g
            cn = A[s + 1, :, H4:]
            add(P1, P2, out=cn)
            tanh(cn, out=TC[s])
            multiply(a[:, :H], TC[s], out=hout[s])
            if ends is not None and s in ends:
                rows = ends[s]
                c_n[0][:, rows] = cn[0][:, rows]
        c_fin = A[T, :, H4:]
    h_n = np.empty((D, H, B), dtype=dtype)
    if lens is None:
        h_n[0] = z[T, 0, :H]
        c_n[0] = c_fin[0]
    else:
        h_n[0] = z[lens.last + 1, 0, :H, np.arange(B)].T
    if D == 2:
        h_n[1] = z[T, 1, :H]
        c_n[1] = c_fin[1]
    return h_n, c_n, cache


def _reverse_input(z: NDArray[Any], lo: int, hi: int) -> None:
    """Fill the backward direction's input rows lo:hi of ``z`` from the forward direction's, reversed in time."""
    T = z.shape[0] - 1
    if z.shape[1] == 2:
        np.copyto(z[:T, 1, lo:hi], z[T - 1::-1, 0, lo:hi])


def _new_z(T: int, D: int, H: int, F: int, B: int, dtype: DTypeLike, h0: NDArray[Any],
           ws: Workspace | None, tag: str) -> NDArray[Any]:
    z = (_fresh if ws is None else ws.empty)(tag + "z", (T + 1, D, H + F + 1, B), dtype)
    np.copyto(z[0, :, :H], h0)
    z[:, :, H + F] = 1
    return z


def _next_z(zprev: NDArray[Any], H: int, h0: NDArray[Any], ws: Workspace | None, tag: str) -> NDArray[Any]:
    """Input of the next layer from the previous layer's ``z``: its outputs [forward, backward] in time order."""
    T1, D, _, B = zprev.shape
    T = T1 - 1
    z = _new_z(T, D, H, D * H, B, zprev.dtype, h0, ws, tag)
    np.copyto(z[:T, 0, H:2 * H], zprev[1:, 0, :H])
    if D == 2:
        np.copyto(z[:T, 0, 2 * H:3 * H], zprev[T:0:-1, 1, :H])   # backward step T-1-t is time t
        _reverse_input(z, H, 3 * H)
    return z


def _forward(z: NDArray[Any], prepared: list[PreparedLayer], H: int, lens: Lengths | None,
             h0: NDArray[Any] | None, c0: NDArray[Any] | None, keep_cache: bool, ws: Workspace | None
             ) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], list[LayerCache]]:
    """All layers from the first layer's filled ``z``; returns the last layer's z, h_n, c_n, caches."""
    T1, D, _, B = z.shape
    L = len(prepared)
    dtype = z.dtype
    h_n = np.empty((L * D, H, B), dtype=dtype)
    c_n = np.empty((L * D, H, B), dtype=dtype)
    zeros = np.zeros((D, H, B), dtype=dtype) if h0 is None or c0 is None else None
    caches = []
    for k, p in enumerate(prepared):
        sl = slice(k * D, (k + 1) * D)
        h0k = zeros if h0 is None else h0[sl]
        c0k = zeros if c0 is None else c0[sl]
        assert h0k is not None and c0k is not None  # zeros exists whenever a state is missing
        if k > 0:
            z = _next_z(z, H, h0k, ws, f"l{k}.")
        h_n[sl], c_n[sl], cache = layer_forward(z, p, H, h0k, c0k, lens, keep_cache, ws, f"l{k}.")
        if cache is not None:
            caches.append(cache)
    return z, h_n, c_n, caches


def forward_fm(x: NDArray[Any], prepared: list[PreparedLayer], H: int, lens: Lengths | None,
               h0: NDArray[Any] | None, c0: NDArray[Any] | None, keep_cache: bool = False,
               ws: Workspace | None = None
               ) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], list[LayerCache]]:
    """All layers, feature-major input and output (the trainer's entry point).

    Parameters
    ----------
    x : ndarray of shape (F, T, B)
        Compute dtype, any strides (not modified: it is copied once).
    prepared : list of PreparedLayer, length L
        From :func:`prepare` (``for_training=True`` if the caches go to the
        backward pass).
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
        The last layer's h_t, zero at padded steps.
    h_n, c_n : ndarray of shape (L*D, H, B)
    caches : list of LayerCache
        Empty unless ``keep_cache``.
    """
    F, T, B = x.shape
    D = prepared[0].w_z.shape[0]
    dtype = x.dtype
    zeros = np.zeros((D, H, B), dtype=dtype)
    z = _new_z(T, D, H, F, B, dtype, zeros if h0 is None else h0[:D], ws, "l0.")
    np.copyto(z[:T, 0, H:H + F], x.transpose(1, 0, 2))
    _reverse_input(z, H, H + F)
    z, h_n, c_n, caches = _forward(z, prepared, H, lens, h0, c0, keep_cache, ws)
    out = (_fresh if ws is None else ws.empty)("out", (D * H, T, B), dtype)
    np.copyto(out[:H], z[1:, 0, :H].transpose(1, 0, 2))
    if D == 2:
        np.copyto(out[H:], z[T:0:-1, 1, :H].transpose(1, 0, 2))
    if lens is not None:
        out *= lens.mask[None]
    return out, h_n, c_n, caches


def forward_bm(x: NDArray[Any], prepared: list[PreparedLayer], H: int, lens: Lengths | None,
               h0: NDArray[Any] | None, c0: NDArray[Any] | None, need_output: bool = True
               ) -> tuple[NDArray[Any] | None, NDArray[Any], NDArray[Any]]:
    """All layers, batch-first input and output (the encoder's entry point; inference only).

    Parameters
    ----------
    x : ndarray of shape (B, T, F)
        Compute dtype, any strides (not modified: it is copied once).
    prepared : list of PreparedLayer, length L
        From :func:`prepare`.
    H : int
    lens : Lengths or None
    h0, c0 : ndarray of shape (L*D, B, H) or None
        Initial states (zeros if None; not modified).
    need_output : bool
        Assemble the last layer's output; if False only the states are returned
        (what ``embed(pooling="last")`` needs) and ``output`` is None.

    Returns
    -------
    output : ndarray of shape (B, T, D*H) or None
        The last layer's h_t, zero at padded steps (a new array).
    h_n, c_n : ndarray of shape (L*D, B, H)

    Notes
    -----
    The kernel works on (features, B) blocks, so input and output are
    transposed once; the output one time step at a time (a per-step 2-D copy
    measured 2-3x faster than one strided copy of the whole array, which is
    as fast as the loop for the input).

    Examples
    --------
    Same results as :func:`forward_fm` on the transposed input:

    >>> rng = np.random.default_rng(0)
    >>> params = {k: rng.uniform(-0.5, 0.5, s).astype(np.float32)
    ...           for k, s in param_shapes(3, 4, 2, True).items()}
    >>> x = rng.normal(size=(3, 6, 3)).astype(np.float32)
    >>> lens = Lengths(np.array([6, 2, 4]), 6, np.float32)
    >>> prep = prepare(params, 2, 2, 4, np.float32)
    >>> h0 = rng.normal(size=(4, 3, 4)).astype(np.float32)
    >>> out, h_n, c_n = forward_bm(x, prep, 4, lens, h0, -h0)
    >>> ref, ref_h, ref_c, _ = forward_fm(x.transpose(2, 1, 0), prep, 4, lens,
    ...                                   h0.transpose(0, 2, 1), -h0.transpose(0, 2, 1))
    >>> [float(np.abs(a - b).max()) < 1e-6 for a, b in
    ...  [(out, ref.transpose(2, 1, 0)), (h_n, ref_h.transpose(0, 2, 1)), (c_n, ref_c.transpose(0, 2, 1))]]
    [True, True, True]
    """
    B, T, F = x.shape
    D = prepared[0].w_z.shape[0]
    dtype = x.dtype
    h0f = None if h0 is None else h0.transpose(0, 2, 1)
    c0f = None if c0 is None else c0.transpose(0, 2, 1)
    z = _new_z(T, D, H, F, B, dtype, np.zeros((D, H, B), dtype=dtype) if h0f is None else h0f[:D], None, "")
    np.copyto(z[:T, 0, H:H + F], x.transpose(1, 2, 0))
    _reverse_input(z, H, H + F)
    z, h_n, c_n, _ = _forward(z, prepared, H, lens, h0f, c0f, False, None)
    out = None
    if need_output:
        out = np.empty((B, T, D * H), dtype=dtype)
        for t in range(T):
            np.copyto(out[:, t, :H], z[t + 1, 0, :H].T)
            if D == 2:
                np.copyto(out[:, t, H:], z[T - t, 1, :H].T)
        if lens is not None:
            out *= lens.mask.T[:, :, None]
    return out, np.ascontiguousarray(h_n.transpose(0, 2, 1)), np.ascontiguousarray(c_n.transpose(0, 2, 1))

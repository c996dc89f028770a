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

Implementation: the input projection ``X W_ih^T + b`` of one layer and direction
for all time steps is ONE matrix product into a (T, B, 4H) buffer; the loop over
time then does one (B, H) @ (H, 4H) product per step and in-place elementwise
operations on views. Internally the gate rows are reordered to (i, f, o, g) and
the sigmoid rows pre-scaled by 1/2, so a single ``tanh`` over all 4H gate rows
followed by ``0.5 * t + 0.5`` on the first 3H rows evaluates the numerically
stable ``sigmoid(z) = (1 + tanh(z / 2)) / 2`` (scaling by a power of two is exact
in floating point). Variable lengths are handled like ``pack_padded_sequence``:
the batch is sorted by decreasing length so that the sequences still running at
step ``t`` are a prefix ``[:n_t]`` of the batch, and only that prefix is updated.
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


def _prepare(params: Mapping[str, np.ndarray], num_layers: int, D: int, H: int,
             dtype) -> list[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]]:
    """Per layer and direction ``(W_ih^T s, W_hh^T s, b s, W_ih_int, W_hh_int)``.

    ``*_int`` are the weights with rows in the internal gate order (i, f, o, g);
    the transposed, scaled copies multiply the sigmoid rows by 1/2 (see module
    docstring). The unscaled ``*_int`` are what backpropagation needs.
    """
    perm = _gate_perm(H)
    scale = np.ones(4 * H, dtype=dtype)
    scale[: 3 * H] = 0.5
    out = []
    for k in range(num_layers):
        row = []
        for d in range(D):
            sfx = "_reverse" if d else ""
            w_ih = np.asarray(params[f"weight_ih_l{k}{sfx}"], dtype=dtype)[perm]
            w_hh = np.asarray(params[f"weight_hh_l{k}{sfx}"], dtype=dtype)[perm]
            b = (np.asarray(params[f"bias_ih_l{k}{sfx}"], dtype=dtype)
                 + np.asarray(params[f"bias_hh_l{k}{sfx}"], dtype=dtype))[perm]
            row.append((np.ascontiguousarray((w_ih * scale[:, None]).T),
                        np.ascontiguousarray((w_hh * scale[:, None]).T),
                        b * scale, w_ih, w_hh))
        out.append(row)
    return out


def _active_counts(sorted_lengths: np.ndarray, T: int) -> np.ndarray:
    """``n_t`` = number of sequences (sorted by decreasing length) still running at step t."""
    ascending = sorted_lengths[::-1]
    return len(sorted_lengths) - np.searchsorted(ascending, np.arange(T), side="right")


# --------------------------------------------------------------------------- #
# kernels (no validation; arrays are time-major (T, B, ...), batch sorted by
# decreasing length whenever ``active`` is given)
# --------------------------------------------------------------------------- #
class _DirectionCache:
    """Activations one direction of one layer keeps for backpropagation.

    ``A`` (T, B, 4H) activated gates in the internal order (i, f, o, g);
    ``TC`` tanh(c_t), ``Hprev`` h_{t-1}, ``Cprev`` c_{t-1}, all (T, B, H); rows of
    sequences that are not running at step t are zero.
    """

    __slots__ = ("A", "TC", "Hprev", "Cprev")

    def __init__(self, A, TC, Hprev, Cprev):
        self.A, self.TC, self.Hprev, self.Cprev = A, TC, Hprev, Cprev


def _run_direction(gates: np.ndarray, w_hh_t: np.ndarray, h: np.ndarray, c: np.ndarray,
                   active: np.ndarray | None, reverse: bool, out: np.ndarray,
                   tmp: np.ndarray, tc: np.ndarray, cache: _DirectionCache | None) -> None:
    """Recurrence of one direction of one layer.

    Modifies in place: ``gates`` (T, B, 4H) (scaled input projections in, activated
    gates i, f, o, g out), ``h`` and ``c`` (B, H) (initial state in, final state
    out: each row holds the state after its own last step), ``out`` (T, B, H)
    (h_t written for running rows only), scratch ``tmp`` (B, 4H) and ``tc`` (B, H),
    and the arrays of ``cache`` if given.
    """
    T, B = gates.shape[:2]
    H = h.shape[1]
    H2, H3 = 2 * H, 3 * H
    steps = range(T - 1, -1, -1) if reverse else range(T)
    matmul, multiply, tanh = np.matmul, np.multiply, np.tanh
    for t in steps:
        n = B if active is None else int(active[t])
        if n == 0:
            continue
        g = gates[t, :n]
        hh = h[:n]
        cc = c[:n]
        tt = tc[:n]
        if cache is not None:
            cache.Hprev[t, :n] = hh
            cache.Cprev[t, :n] = cc
        tm = tmp[:n]
        matmul(hh, w_hh_t, out=tm)
        g += tm
        tanh(g, out=g)
        s = g[:, :H3]
        s *= 0.5
        s += 0.5
        cc *= g[:, H:H2]                       # f * c_{t-1}
        multiply(g[:, :H], g[:, H3:], out=tt)  # i * g
        cc += tt
        tanh(cc, out=tt)
        multiply(g[:, H2:H3], tt, out=hh)      # o * tanh(c_t)
        out[t, :n] = hh
        if cache is not None:
            cache.TC[t, :n] = tt


def _forward_sorted(x: np.ndarray, prepared, H: int, active: np.ndarray | None,
                    h0: np.ndarray | None, c0: np.ndarray | None, *, keep_cache: bool = False,
                    last_layer_output: bool = True):
    """Full multi-layer forward pass, time-major, batch sorted by decreasing length.

    Parameters
    ----------
    x : ndarray of shape (T, B, F), C-contiguous, the compute dtype.
    prepared : output of :func:`_prepare`.
    active : ndarray of shape (T,) or None (all sequences run all T steps).
    h0, c0 : ndarray of shape (L*D, B, H) or None (zeros).

    Returns
    -------
    output : ndarray of shape (T, B, D*H), zero at padded steps.
    h_n, c_n : ndarray of shape (L*D, B, H).
    caches : list over layers of (layer input (T, B, F_in), [cache per direction])
        when ``keep_cache``, else None.
    """
    T, B, _ = x.shape
    L, D = len(prepared), len(prepared[0])
    dtype = x.dtype
    h_n = np.zeros((L * D, B, H), dtype=dtype) if h0 is None else np.array(h0, dtype=dtype)
    c_n = np.zeros((L * D, B, H), dtype=dtype) if c0 is None else np.array(c0, dtype=dtype)
    tmp = np.empty((B, 4 * H), dtype=dtype)
    tc = np.empty((B, H), dtype=dtype)
    caches = [] if keep_cache else None
    layer_in = x
    for k in range(L):
        f_in = layer_in.shape[2]
        out = np.zeros((T, B, D * H), dtype=dtype)
        dir_caches = []
        for d in range(D):
            w_ih_t, w_hh_t, b, _, _ = prepared[k][d]
            gates = np.matmul(layer_in.reshape(T * B, f_in), w_ih_t).reshape(T, B, 4 * H)
            gates += b
            cache = None
            if keep_cache:
                cache = _DirectionCache(gates, np.zeros((T, B, H), dtype), np.zeros((T, B, H), dtype),
                                        np.zeros((T, B, H), dtype))
                dir_caches.append(cache)
            _run_direction(gates, w_hh_t, h_n[k * D + d], c_n[k * D + d], active, d == 1,
                           out[:, :, d * H:(d + 1) * H], tmp, tc, cache)
        if keep_cache:
            caches.append((layer_in, dir_caches))
        layer_in = out
    return layer_in, h_n, c_n, caches


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

    def _forward(self, x_tbf, lengths, h0, c0):
        """Sort by length, run the kernel, and return results in sorted order with the inverse permutation."""
        T, B, _ = x_tbf.shape
        order = inv = active = None
        if lengths is not None and not np.all(lengths == T):
            order = np.argsort(-lengths, kind="stable")
            inv = np.empty_like(order)
            inv[order] = np.arange(B)
            x_tbf = x_tbf[:, order]
            active = _active_counts(lengths[order], T)
            if h0 is not None:
                h0 = h0[:, order]
            if c0 is not None:
                c0 = c0[:, order]
        x_tbf = np.ascontiguousarray(x_tbf)
        prepared = _prepare(self.params_, self.num_layers, self.num_directions,
                            self.hidden_size, np.dtype(self.dtype))
        out, h_n, c_n, _ = _forward_sorted(x_tbf, prepared, self.hidden_size, active, h0, c0)
        return out, h_n, c_n, inv

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
        """
        bf = bool(self.batch_first)
        x, lengths, h0, c0 = self._validate_input(x, lengths, h0, c0, bf)
        x_tbf = x.transpose(1, 0, 2) if bf else x
        D, H = self.num_directions, self.hidden_size
        if x_tbf.shape[1] == 0:
            T = x_tbf.shape[0]
            out = np.zeros((0, T, D * H) if bf else (T, 0, D * H), dtype=x.dtype)
            empty = np.zeros((self.num_layers * D, 0, H), dtype=x.dtype)
            return out, (empty, empty.copy())
        out, h_n, c_n, inv = self._forward(x_tbf, lengths, h0, c0)
        if inv is not None:
            h_n, c_n = h_n[:, inv], c_n[:, inv]
            out = out.transpose(1, 0, 2)[inv] if bf else out[:, inv]
        elif bf:
            out = np.ascontiguousarray(out.transpose(1, 0, 2))
        return out, (h_n, c_n)

    def embed(self, x, lengths=None, pooling="last", normalize=False) -> np.ndarray:
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

        Returns
        -------
        ndarray of shape (B, D*H), the encoder's dtype.
        """
        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be 'last' or 'mean', got {pooling!r}")
        x, lengths, _, _ = self._validate_input(x, lengths, None, None, True)
        B, T = x.shape[:2]
        D, H = self.num_directions, self.hidden_size
        if B == 0:
            return np.zeros((0, D * H), dtype=x.dtype)
        out, h_n, _, inv = self._forward(x.transpose(1, 0, 2), lengths, None, None)
        if pooling == "last":
            L = self.num_layers
            emb = np.concatenate([h_n[(L - 1) * D + d] for d in range(D)], axis=1)
        else:
            emb = out.sum(axis=0)
            n = np.full(B, T, dtype=np.int64) if lengths is None else lengths
            if inv is not None:
                n = n[np.argsort(inv)]  # lengths in sorted order
            emb /= n[:, None].astype(emb.dtype)
        if inv is not None:
            emb = emb[inv]
        if normalize:
            norms = np.sqrt(np.einsum("ij,ij->i", emb, emb))
            np.divide(emb, norms[:, None], out=emb, where=norms[:, None] > 0)
        return np.ascontiguousarray(emb)

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
            A ``torch.nn.LSTM`` module, its ``state_dict()``, or a file written by
            ``torch.save`` holding either (loaded with ``weights_only=True``). Keys
            may carry a module prefix such as ``"encoder.lstm."`` if exactly one LSTM
            is present. torch is imported only to read files or modules.
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

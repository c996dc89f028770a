"""LSTM encoder in pure NumPy with torch.nn.LSTM semantics and parameter layout.

:class:`LSTMEncoder` validates input and owns the parameters (under torch's names,
so a ``state_dict`` moves between it and PyTorch unchanged); the arithmetic is in
:mod:`streamkm.sequence.lstm.kernels`, the file format in
:mod:`streamkm.sequence.lstm.fileformat`. Equations, shapes and the kernels'
design: docs/lstm.md.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from streamkm.sequence._validation import (
    as_float_array,
    canonical_dtype,
    check_finite,
    check_lengths,
    check_positive_int,
)
from streamkm.sequence.lstm.fileformat import (
    FORMAT_NAME,
    FORMAT_VERSION,
    content_hash,
    encode_header,
    read_file,
    read_limited,
    write_file,
)
from streamkm.sequence.lstm.kernels import Lengths, forward_bm, param_shapes, prepare

__all__ = ["LSTMEncoder", "FORMAT_NAME", "FORMAT_VERSION"]

#: What ``seed`` may be (anything ``np.random.default_rng`` accepts).
SeedLike = int | np.integer[Any] | np.random.SeedSequence | np.random.BitGenerator | np.random.Generator | None


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

    def __init__(self, input_size: int, hidden_size: int, *, num_layers: int = 1, bidirectional: bool = False,
                 batch_first: bool = True, seed: SeedLike = None, dtype: DTypeLike = "float32") -> None:
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.batch_first = batch_first
        self.seed = seed
        self.dtype = dtype
        check_positive_int(input_size, "input_size")
        check_positive_int(hidden_size, "hidden_size")
        check_positive_int(num_layers, "num_layers")
        if not isinstance(bidirectional, (bool, np.bool_)):
            raise TypeError(f"bidirectional must be a bool, got {type(bidirectional).__name__}")
        if not isinstance(batch_first, (bool, np.bool_)):
            raise TypeError(f"batch_first must be a bool, got {type(batch_first).__name__}")
        dt = canonical_dtype(dtype)
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(hidden_size)
        self.params_: dict[str, NDArray[Any]] = {name: rng.uniform(-bound, bound, size=shape).astype(dt)
                                                 for name, shape in self._shapes().items()}
        self.training_metadata_: dict[str, Any] = {}

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
        return param_shapes(self.input_size, self.hidden_size, self.num_layers,
                             bool(self.bidirectional))

    def _sizes(self) -> dict[str, Any]:
        return {"input_size": int(self.input_size), "hidden_size": int(self.hidden_size),
                "num_layers": int(self.num_layers), "bidirectional": bool(self.bidirectional)}

    def __repr__(self) -> str:
        return (f"LSTMEncoder({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, batch_first={self.batch_first})")

    # --------------------------------------------------------------- forward
    def _validate_input(self, x_in: ArrayLike, lengths_in: ArrayLike | None, h0: ArrayLike | None,
                        c0: ArrayLike | None, batch_first: bool
                        ) -> tuple[NDArray[Any], NDArray[np.int64] | None, NDArray[Any] | None, NDArray[Any] | None]:
        dt = np.dtype(self.dtype)
        x = as_float_array(x_in, "x", dt)
        if x.ndim != 3:
            layout = "(batch, seq_len, features)" if batch_first else "(seq_len, batch, features)"
            raise ValueError(f"x must be 3-D {layout}, got shape {x.shape}")
        if x.shape[2] != self.input_size:
            raise ValueError(f"expected {self.input_size} features, got {x.shape[2]}")
        B, T = (x.shape[0], x.shape[1]) if batch_first else (x.shape[1], x.shape[0])
        if T == 0:
            raise ValueError(f"x must have at least one time step, got shape {x.shape}")
        check_finite(x, "x")
        lengths = None if lengths_in is None else check_lengths(lengths_in, B, T)
        states: list[NDArray[Any] | None] = []
        for name, s_in in (("h0", h0), ("c0", c0)):
            s = None
            if s_in is not None:
                s = as_float_array(s_in, name, dt)
                want = (self.num_layers * self.num_directions, B, self.hidden_size)
                if s.shape != want:
                    raise ValueError(f"{name} must have shape {want} "
                                     f"(num_layers * num_directions, batch, hidden_size), got {s.shape}")
                check_finite(s, name)
            states.append(s)
        return x, lengths, states[0], states[1]

    def _run(self, x_btf: NDArray[Any], lengths: NDArray[np.int64] | None, h0: NDArray[Any] | None,
             c0: NDArray[Any] | None, need_output: bool = True
             ) -> tuple[NDArray[Any] | None, NDArray[Any], NDArray[Any]]:
        """Run the inference kernel on batch-first input (B, T, F) (any strides).

        States (L*D, B, H) or None; returns output (B, T, D*H) (None unless
        ``need_output``) and h_n, c_n (L*D, B, H).
        """
        T = x_btf.shape[1]
        dt = np.dtype(self.dtype)
        lens = None
        if lengths is not None and not np.all(lengths == T):
            lens = Lengths(lengths, T, dt)
        prepared = prepare(self.params_, self.num_layers, self.num_directions, self.hidden_size, dt)
        return forward_bm(x_btf, prepared, self.hidden_size, lens, h0, c0, need_output)

    def __call__(self, x: ArrayLike, lengths: ArrayLike | None = None, h0: ArrayLike | None = None,
                 c0: ArrayLike | None = None) -> tuple[NDArray[Any], tuple[NDArray[Any], NDArray[Any]]]:
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
            states: list[NDArray[Any] | None] = []
            for name, st_in in (("h0", h0), ("c0", c0)):
                st = None
                if st_in is not None:
                    st = as_float_array(st_in, name, np.dtype(self.dtype))
                    want = (self.num_layers * self.num_directions, self.hidden_size)
                    if st.shape != want:
                        raise ValueError(f"{name} for unbatched input must have shape {want} "
                                         f"(num_layers * num_directions, hidden_size), got {st.shape}")
                    st = st[:, None, :]
                states.append(st)
            x1 = as_float_array(x, "x", np.dtype(self.dtype))
            xb = x1[None] if self.batch_first else x1[:, None]
            out, (h_n, c_n) = self(xb, None, states[0], states[1])
            return (out[0] if self.batch_first else out[:, 0]), (h_n[:, 0], c_n[:, 0])
        bf = bool(self.batch_first)
        xv, lens, h0v, c0v = self._validate_input(x, lengths, h0, c0, bf)
        D, H = self.num_directions, self.hidden_size
        B = xv.shape[0] if bf else xv.shape[1]
        if B == 0:
            T = xv.shape[1] if bf else xv.shape[0]
            out = np.zeros((0, T, D * H) if bf else (T, 0, D * H), dtype=xv.dtype)
            empty = np.zeros((self.num_layers * D, 0, H), dtype=xv.dtype)
            return out, (empty, empty.copy())
        res, h_n, c_n = self._run(xv if bf else xv.transpose(1, 0, 2), lens, h0v, c0v)
        assert res is not None  # need_output
        if not bf:
            res = np.ascontiguousarray(res.transpose(1, 0, 2))
        return res, (h_n, c_n)

    def embed(self, x: ArrayLike, lengths: ArrayLike | None = None, pooling: str = "last",
              normalize: bool = False, *, memory_budget_bytes: int = 64 * 2**20) -> NDArray[Any]:
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
            (step inputs, outputs) stay within about this many bytes, so a
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
        xv, lens, _, _ = self._validate_input(x, lengths, None, None, True)
        B, T = xv.shape[:2]
        D, H, L = self.num_directions, self.hidden_size, self.num_layers
        emb = np.empty((B, D * H), dtype=xv.dtype)
        if B == 0:
            return emb
        # per sequence: two layers' step inputs z (D*(H + F_in + 1)*(T+1) values each, F_in up to
        # max(F, D*H)), plus the output (D*H*T) for mean pooling
        f_in = max(self.input_size, D * H if L > 1 else 0)
        per_seq = (2 * D * (H + f_in + 1) + (D * H if pooling == "mean" else 0)) * (T + 1) * xv.dtype.itemsize
        chunk = int(max(1, min(B, memory_budget_bytes // per_seq)))
        for lo in range(0, B, chunk):
            hi = min(B, lo + chunk)
            ln = None if lens is None else lens[lo:hi]
            out, h_n, _ = self._run(xv[lo:hi], ln, None, None, need_output=pooling == "mean")
            if pooling == "last":
                for d in range(D):
                    emb[lo:hi, d * H:(d + 1) * H] = h_n[(L - 1) * D + d]
            else:
                assert out is not None  # need_output
                n = np.full(hi - lo, T, dtype=np.int64) if ln is None else ln
                emb[lo:hi] = out.sum(axis=1) / n.astype(out.dtype)[:, None]
        if normalize:
            norms = np.sqrt(np.einsum("ij,ij->i", emb, emb))
            np.divide(emb, norms[:, None], out=emb, where=norms[:, None] > 0)
        return emb

    # ------------------------------------------------------------ state dict
    def state_dict(self) -> dict[str, NDArray[Any]]:
        """Copies of the parameters under torch.nn.LSTM's names, in torch's order."""
        return {name: self.params_[name].copy() for name in self._shapes()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
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
        new: dict[str, NDArray[Any]] = {}
        for name, shape in shapes.items():
            arr = as_float_array(state_dict[name], name, dt)
            if arr.shape != shape:
                raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
            check_finite(arr, name)
            new[name] = np.array(arr, dtype=dt, order="C")
        self.params_ = new

    def astype(self, dtype: DTypeLike) -> LSTMEncoder:
        """A copy of this encoder computing in ``dtype`` (float32 or float64)."""
        dt = canonical_dtype(dtype)
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
        return content_hash(self._sizes(), self.params_)

    # ------------------------------------------------------------ save / load
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the weights to ``path`` (.npz, no pickle) with a JSON header; atomic replace.

        The header (stored as the uint8 array ``__header__``) holds format name and
        version, the sizes, ``batch_first``, dtype, ``training`` metadata and
        ``content_hash``. The file is written by :func:`streamkm.atomic.atomic_write`
        (temporary file, fsync, rename, directory fsync).
        """
        path = Path(path)
        header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **self._sizes(),
                  "batch_first": bool(self.batch_first), "dtype": np.dtype(self.dtype).name,
                  "training": self.training_metadata_, "content_hash": self.content_hash}
        try:
            header_bytes = encode_header(header)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"training_metadata_ is not JSON-serializable: {exc}") from None
        write_file(path, header_bytes, {name: self.params_[name] for name in self._shapes()})
        return path

    @staticmethod
    def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
        """The JSON header of a weights file written by :meth:`save` (parameters are not checked)."""
        return read_file(path)[0]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LSTMEncoder:
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
        header, arrays = read_file(path)
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
    def from_torch(cls, source: Any, *, batch_first: bool | None = None,
                   dtype: DTypeLike = "float32") -> LSTMEncoder:
        """Build an encoder from PyTorch LSTM weights.

        Parameters
        ----------
        source : str, path, torch.nn.LSTM, or mapping of name -> tensor/array
            A ``torch.nn.LSTM`` module, its ``state_dict()`` (tensors or arrays), or
            a file written by ``torch.save(model.state_dict(), path)`` (at most
            ``fileformat.MAX_FILE_BYTES``, refused unread if larger; read with
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

            # size-limited like streamkm's own files, read before torch parses anything
            data = read_limited(source, what="PyTorch weights file")
            try:
                obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
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

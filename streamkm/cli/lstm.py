"""``streamkm lstm``: train NumPy LSTM encoders and inspect weights files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from streamkm.cli._common import add_progress_args

__all__ = ["register"]


DESCRIPTION = """\
Train NumPy LSTM sequence encoders and inspect their weights files.

  streamkm lstm train --data windows.npz --hidden 128 --epochs N --out weights.npz
  streamkm lstm info weights.npz"""

TRAIN_DESCRIPTION = """\
Train an LSTM encoder on windows read from an .npz file (no pickle): array X
of shape (n_windows, seq_len, features) and optionally lengths (n_windows,).
Writes the weights file the daemon loads (sequence.lstm_path). One line per
epoch goes to stderr (unless --quiet), and a progress bar (epoch, batch, loss,
windows/s) when stderr is a terminal or with --progress."""

INFO_DESCRIPTION = """\
Verify a weights file (shapes and content hash) and print its header:
architecture, parameter count and training metadata."""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``lstm`` command (``train``, ``info``) to a ``streamkm`` subparsers object."""
    from streamkm.sequence.train import OBJECTIVES

    fmt = argparse.RawDescriptionHelpFormatter
    lstm: argparse.ArgumentParser = subparsers.add_parser(
        "lstm", help="train and inspect NumPy LSTM sequence encoders",
        description=DESCRIPTION, formatter_class=fmt)
    sub = lstm.add_subparsers(dest="lstm_command", required=True, metavar="{train,info}")

    t = sub.add_parser("train", help="train an encoder on windows from an .npz file",
                       description=TRAIN_DESCRIPTION, formatter_class=fmt)
    t.add_argument("--data", required=True, type=Path,
                   help="npz with X (n_windows, seq_len, features) and optional lengths (n_windows,)")
    t.add_argument("--out", required=True, type=Path, help="weights file to write (.npz)")
    t.add_argument("--hidden", type=int, default=128, help="hidden size H (default 128)")
    t.add_argument("--layers", type=int, default=1, help="number of layers (default 1)")
    t.add_argument("--bidirectional", action="store_true", help="add a backward direction")
    t.add_argument("--objective", choices=OBJECTIVES, default="next_event",
                   help="self-supervised objective (default next_event)")
    t.add_argument("--epochs", type=int, default=10, help="epochs (default 10)")
    t.add_argument("--batch-size", type=int, default=64, help="mini-batch size (default 64)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam step size (default 1e-3)")
    t.add_argument("--clip-norm", type=float, default=1.0,
                   help="global gradient-norm clip, <= 0 disables (default 1.0)")
    t.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of windows held out for val_loss (default 0.1)")
    t.add_argument("--seed", type=int, default=0, help="seed for init, split and batch order (default 0)")
    add_progress_args(t)
    t.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    t.set_defaults(func=_cmd_train)

    i = sub.add_parser("info", help="verify a weights file and print its header",
                       description=INFO_DESCRIPTION, formatter_class=fmt)
    i.add_argument("weights", type=Path)
    i.add_argument("--json", action="store_true", help="print the header as JSON")
    i.set_defaults(func=_cmd_info)
    return lstm


def _fail(command: str, message: str) -> int:
    print(f"streamkm lstm {command}: error: {message}", file=sys.stderr)
    return 2


def _load_windows(path: Path) -> tuple[NDArray[Any], NDArray[Any] | None]:
    if not path.exists():
        raise ValueError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            files = set(z.files)
            if "X" not in files:
                raise ValueError(f"no array 'X' (n_windows, seq_len, features); arrays: {sorted(files)}")
            X = z["X"]
            lengths = z["lengths"] if "lengths" in files else None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    except Exception as exc:  # zipfile / OS errors of a damaged file
        raise ValueError(f"{path}: cannot read: {type(exc).__name__}: {exc}") from None
    if X.ndim != 3:
        raise ValueError(f"{path}: X must be 3-D (n_windows, seq_len, features), got shape {X.shape}")
    return X, lengths


class _Progress:
    """tqdm bar per epoch (batches, running loss, windows/s) if *bar*, then one finished line per epoch."""

    def __init__(self, stream: IO[str], width: int = 20, *, bar: bool = True) -> None:
        self.stream, self.width, self.show_bar = stream, width, bar
        self._bar: Any = None
        self._epoch: int | None = None

    def batch(self, info: dict[str, Any]) -> None:
        from tqdm import tqdm

        if not self.show_bar:
            return
        if self._bar is None or self._epoch != info["epoch"]:
            self.close()
            self._epoch = info["epoch"]
            self._bar = tqdm(total=info["n_batches"], desc=f"epoch {info['epoch']}/{info['epochs']}",
                             file=self.stream, leave=False, ascii="-#", dynamic_ncols=False,
                             bar_format=f"{{desc}} [{{bar:{self.width}}}] {{n_fmt}}/{{total_fmt}}{{postfix}}")
        self._bar.set_postfix_str(f"loss {info['loss']:.5g} {info['windows_per_s']:.0f} windows/s",
                                  refresh=False)
        self._bar.update(info["batch"] - self._bar.n)

    def epoch(self, record: dict[str, Any], epochs: int) -> None:
        self.close()
        val = "n/a" if record["val_loss"] is None else f"{record['val_loss']:.5g}"
        self.stream.write(f"epoch {record['epoch']}/{epochs} loss {record['loss']:.5g} "
                          f"val_loss {val} {record['windows_per_s']:.0f} windows/s "
                          f"({record['seconds']:.1f} s)\n")
        self.stream.flush()

    def close(self) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.close()


def _cmd_train(args: argparse.Namespace) -> int:
    from streamkm.sequence.lstm import LSTMEncoder
    from streamkm.sequence.train import train_encoder

    show = sys.stderr.isatty() if args.progress is None else args.progress
    progress = None if args.quiet else _Progress(sys.stderr, bar=show)
    try:
        X, lengths = _load_windows(args.data)
        encoder = LSTMEncoder(int(X.shape[2]), args.hidden, num_layers=args.layers,
                              bidirectional=args.bidirectional, seed=args.seed)
        result = train_encoder(
            encoder, X, lengths, objective=args.objective, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr,
            clip_norm=args.clip_norm if args.clip_norm > 0 else None,
            val_fraction=args.val_fraction, seed=args.seed,
            callback=None if progress is None else (lambda r: progress.epoch(r, args.epochs)),
            on_batch=None if progress is None else progress.batch)
    except (ValueError, TypeError, FloatingPointError) as exc:
        return _fail("train", str(exc))
    finally:
        if progress is not None:
            progress.close()
    encoder.training_metadata_["data"] = str(args.data)
    encoder.training_metadata_["history"] = [
        {k: r[k] for k in ("epoch", "loss", "val_loss", "windows_per_s")} for r in result.history]
    try:
        path = encoder.save(args.out)
    except OSError as exc:
        return _fail("train", f"cannot write {args.out}: {exc}")
    last = result.history[-1] if result.history else None
    summary = f"wrote {path} ({encoder!r}, content_hash {encoder.content_hash})"
    if last is not None:
        val = "n/a" if last["val_loss"] is None else f"{last['val_loss']:.6g}"
        summary += f"; final loss {last['loss']:.6g}, val_loss {val}"
    print(summary)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from streamkm.sequence.lstm import LSTMEncoder

    try:
        encoder = LSTMEncoder.load(args.weights)   # verifies shapes and the content hash
        header = LSTMEncoder.read_header(args.weights)
    except (FileNotFoundError, ValueError) as exc:
        return _fail("info", str(exc))
    if args.json:
        print(json.dumps(header, indent=2, sort_keys=True))
        return 0
    n_params = sum(v.size for v in encoder.params_.values())
    lines = [
        f"file           {args.weights}",
        f"format         {header['format']} v{header['format_version']}",
        f"input_size     {encoder.input_size}",
        f"hidden_size    {encoder.hidden_size}",
        f"num_layers     {encoder.num_layers}",
        f"bidirectional  {encoder.bidirectional}",
        f"batch_first    {encoder.batch_first}",
        f"dtype          {np.dtype(encoder.dtype).name}",
        f"embedding_dim  {encoder.embedding_dim}",
        f"parameters     {n_params}",
        f"content_hash   {encoder.content_hash} (verified)",
    ]
    training = dict(encoder.training_metadata_)
    history = training.pop("history", None)
    if training or history:
        lines.append("training")
        lines += [f"  {k:<15} {v}" for k, v in sorted(training.items())]
        if history:
            lines.append(f"  {'history':<15} {len(history)} epochs; last {history[-1]}")
    print("\n".join(lines))
    return 0

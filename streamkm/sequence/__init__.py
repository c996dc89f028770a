"""Sequence embedding: a NumPy LSTM encoder (PyTorch-compatible weights), its
self-supervised trainer, and per-key event windows."""

from streamkm.sequence.lstm import LSTMEncoder

__all__ = ["LSTMEncoder"]

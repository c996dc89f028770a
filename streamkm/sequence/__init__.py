"""Sequence embedding: a NumPy LSTM encoder (PyTorch-compatible weights), its
self-supervised trainer, and per-key event windows."""

from streamkm.sequence.lstm import LSTMEncoder
from streamkm.sequence.windows import EventWindower, WindowBatch

__all__ = ["LSTMEncoder", "EventWindower", "WindowBatch"]

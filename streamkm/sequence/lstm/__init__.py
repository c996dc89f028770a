"""NumPy LSTM encoder with PyTorch-compatible weights."""

from streamkm.sequence.lstm.encoder import FORMAT_NAME, FORMAT_VERSION, LSTMEncoder

__all__ = ["LSTMEncoder", "FORMAT_NAME", "FORMAT_VERSION"]

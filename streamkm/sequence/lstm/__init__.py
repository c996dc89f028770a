"""NumPy LSTM encoder with PyTorch-compatible weights.

:class:`LSTMEncoder` (``encoder``) is the public API; ``layout``, ``kernels`` and
``backward`` hold the arithmetic, ``fileformat`` the weights file.
"""

from streamkm.sequence.lstm.encoder import FORMAT_NAME, FORMAT_VERSION, LSTMEncoder

__all__ = ["LSTMEncoder", "FORMAT_NAME", "FORMAT_VERSION"]

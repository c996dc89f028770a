"""streamkm: keep a k-means model current over an unbounded Kafka stream.

The numerical core lives in :mod:`streamkm.cluster` (batch and streaming
k-means, pure NumPy) and :mod:`streamkm.sequence` (NumPy LSTM encoder and
event windows); records flow kafka -> codec -> pipeline -> service, with
checkpoint, ops and config beside them (docs/architecture.md).
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("streamkm")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

from streamkm.cluster import *  # noqa: E402,F401,F403
from streamkm.cluster import __all__ as _cluster_all  # noqa: E402

__all__ = ["__version__", *_cluster_all]

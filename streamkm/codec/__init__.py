"""Record formats: bytes from Kafka to validated float32 rows, or a typed DecodeError."""

from streamkm.codec.formats import *  # noqa: F401,F403
from streamkm.codec.formats import __all__  # noqa: F401

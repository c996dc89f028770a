"""Records in, model updates out: the deterministic, synchronous core of the daemon."""

from streamkm.pipeline.core import *  # noqa: F401,F403
from streamkm.pipeline.core import __all__  # noqa: F401

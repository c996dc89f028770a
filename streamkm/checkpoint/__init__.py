"""Durable, checksummed checkpoints of the daemon state (no pickle)."""

from streamkm.checkpoint.store import *  # noqa: F401,F403
from streamkm.checkpoint.store import __all__  # noqa: F401

"""The one settings model: TOML file + STREAMKM_* environment, validated."""

from streamkm.config.settings import *  # noqa: F401,F403
from streamkm.config.settings import __all__  # noqa: F401

"""Daemon configuration: one pydantic settings model, TOML file + environment.

The whole daemon is configured by :class:`Settings`, a tree of small section
models (``kafka``, ``input``, ``model``, ``sequence``, ``drift``, ``checkpoint``,
``metrics``, ``dlq``, ``output``, ``worker``; :mod:`.sections`). Values come
from, in increasing priority:

1. the defaults declared in the sections (``configs/default.toml`` mirrors them,
   with a comment on every key; :mod:`.toml_doc` renders it),
2. a TOML file (``load_settings(path)``, or the path in ``STREAMKM_CONFIG``),
3. environment variables ``STREAMKM_<SECTION>__<KEY>`` (``__`` nests, e.g.
   ``STREAMKM_MODEL__N_CLUSTERS=5``, ``STREAMKM_SEQUENCE__MODEL__SEED=3``).

Unknown keys and invalid values are errors: :func:`load_settings` raises
:class:`ConfigError`, whose message lists every problem as
``section.key: message``. Nothing is read at import time.

TOML has no null, so optional keys (``None`` by default) appear commented out
in ``configs/default.toml``; for optional strings and paths an empty string
also means "unset" (handy in the environment: ``STREAMKM_OUTPUT__TOPIC=``).
"""

from streamkm.config.sections import (
    CheckpointSettings,
    DLQSettings,
    DriftSettings,
    GroupSettings,
    InputSettings,
    KafkaSettings,
    MetricsSettings,
    ModelSettings,
    OutputSettings,
    SequenceSettings,
    WorkerSettings,
)
from streamkm.config.settings import CONFIG_ENV_VAR, ConfigError, Settings, format_validation_error, load_settings
from streamkm.config.toml_doc import default_toml
from streamkm.drift import DRIFT_METHOD_PARAMS

__all__ = [
    "ConfigError",
    "KafkaSettings",
    "InputSettings",
    "ModelSettings",
    "SequenceSettings",
    "DriftSettings",
    "CheckpointSettings",
    "MetricsSettings",
    "DLQSettings",
    "OutputSettings",
    "WorkerSettings",
    "GroupSettings",
    "Settings",
    "load_settings",
    "format_validation_error",
    "default_toml",
    "CONFIG_ENV_VAR",
    "DRIFT_METHOD_PARAMS",
]

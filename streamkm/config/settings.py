"""The :class:`Settings` model and :func:`load_settings`: defaults < TOML file < environment.

:func:`load_settings` composes pydantic-settings' own sources explicitly, per
call: a :class:`~pydantic_settings.TomlConfigSettingsSource` for the file and an
:class:`~pydantic_settings.EnvSettingsSource` for ``STREAMKM_*`` variables
(``os.environ`` or a given mapping), deep-merged with the environment on top,
then validated by :class:`Settings`. Every problem becomes one
:class:`ConfigError` listing ``section.key: message`` lines.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

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

__all__ = ["ConfigError", "Settings", "load_settings", "format_validation_error", "CONFIG_ENV_VAR"]

#: Environment variable naming the TOML file when ``load_settings(path=None)``.
CONFIG_ENV_VAR = "STREAMKM_CONFIG"


class ConfigError(ValueError):
    """Invalid configuration.

    Parameters
    ----------
    problems : list of (str, str)
        ``(dotted key, message)`` pairs, e.g. ``("model.n_clusters", "Input
        should be greater than or equal to 1")``.
    source : str, optional
        Where the configuration came from (a file path), used in the message.
    """

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"invalid configuration{where}:"]
        lines += [f"  {key}: {msg}" if key else f"  {msg}" for key, msg in self.problems]
        super().__init__("\n".join(lines))


class Settings(BaseSettings):
    """Everything the daemon needs; build it with :func:`load_settings`.

    ``Settings(**values)`` validates exactly the given values over the
    defaults; reading the environment and the TOML file is
    :func:`load_settings`' job (its sources are chosen per call).

    Examples
    --------
    >>> s = load_settings(env={"STREAMKM_MODEL__N_CLUSTERS": "5"})
    >>> s.model.n_clusters, s.kafka.embedded
    (5, True)
    """

    model_config = SettingsConfigDict(
        env_prefix="STREAMKM_",
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
        validate_assignment=True,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="Kafka connection and group.")
    input: InputSettings = Field(default_factory=InputSettings, description="Vector record decoding.")
    model: ModelSettings = Field(default_factory=ModelSettings, description="Vectors StreamingKMeans.")
    sequence: SequenceSettings = Field(default_factory=SequenceSettings, description="Sequence pipeline.")
    drift: DriftSettings = Field(default_factory=DriftSettings, description="Drift detection.")
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings, description="Checkpoints.")
    metrics: MetricsSettings = Field(default_factory=MetricsSettings, description="HTTP metrics server.")
    dlq: DLQSettings = Field(default_factory=DLQSettings, description="Dead-letter topic.")
    output: OutputSettings = Field(default_factory=OutputSettings, description="Assignments topic.")
    worker: WorkerSettings = Field(default_factory=WorkerSettings, description="Worker lifecycle.")
    group: GroupSettings = Field(default_factory=GroupSettings, description="One model per consumer group.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only the values given: load_settings() has already merged file and environment.
        return (init_settings,)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.input.vectors_enabled and self.kafka.vectors_topic is None:
            raise ValueError("kafka.vectors_topic: required when input.vectors_enabled is true")
        if self.sequence.enabled and self.kafka.events_topic is None:
            raise ValueError("kafka.events_topic: required when sequence.enabled is true")
        if not self.input.vectors_enabled and not self.sequence.enabled:
            raise ValueError("input.vectors_enabled: no pipeline enabled (enable vectors or sequence)")
        topics = [t for t in (self.kafka.vectors_topic if self.input.vectors_enabled else None,
                              self.kafka.events_topic if self.sequence.enabled else None) if t]
        for name, t in (("dlq.topic", self.dlq.topic), ("output.topic", self.output.topic)):
            if t is not None and t in topics:
                raise ValueError(f"{name}: must differ from the input topics, got {t!r}")
        if self.group.enabled:
            group_topics = {"group.stats_topic": self.group_stats_topic, "group.model_topic": self.group_model_topic}
            if len(set(group_topics.values())) < 2:
                raise ValueError("group.model_topic: must differ from group.stats_topic")
            for name, t in group_topics.items():
                if t in topics or t in (self.dlq.topic, self.output.topic):
                    raise ValueError(f"{name}: must differ from the input, dead-letter and output topics, got {t!r}")
        return self

    def run_problems(self) -> list[tuple[str, str]]:
        """What ``streamkm run`` (and ``config check``) refuse beyond validation, as
        ``(dotted key, message)`` pairs for :class:`ConfigError`.

        The group model needs ``input.dimension`` before the first record, except in the
        embedded demo (``run`` takes the demo producer's width, :meth:`demo_dimension`).
        Other commands (``produce``, ``record``, ``replay``, ``model``, ``broker``) run
        without it: a replay takes the recording's width.
        """
        if self._group_lacks_dimension and not self.demo_fed:
            return [("input.dimension", "required when group.enabled is true (every member must agree on it "
                     "before the first record; a record of another width is dead-lettered); or set "
                     "group.enabled = false for the per-worker model, or input.vectors_enabled = false if only "
                     "the sequence pipeline runs")]
        return []

    @property
    def _group_lacks_dimension(self) -> bool:
        """The group model runs the vectors pipeline and no ``input.dimension`` is given."""
        return self.group.enabled and self.input.vectors_enabled and self.input.dimension is None

    @property
    def demo_fed(self) -> bool:
        """True when ``streamkm run`` would feed the vectors topic itself: the embedded broker
        (no ``kafka.bootstrap_servers``) with ``worker.demo_producer``."""
        return self.kafka.embedded and self.worker.demo_producer

    def demo_dimension(self) -> int | None:
        """The width ``streamkm run`` gives the group model in the embedded demo.

        ``worker.demo_n_features`` when the group model runs the vectors pipeline there
        with no ``input.dimension``; None otherwise (a dimension given is kept, and the
        per-worker model takes its width from the first valid record).
        """
        if self._group_lacks_dimension and self.demo_fed:
            return self.worker.demo_n_features
        return None

    @property
    def group_stats_topic(self) -> str:
        """``group.stats_topic`` or ``<kafka.group_id>.stats``."""
        return self.group.stats_topic or f"{self.kafka.group_id}.stats"

    @property
    def group_model_topic(self) -> str:
        """``group.model_topic`` or ``<kafka.group_id>.model``."""
        return self.group.model_topic or f"{self.kafka.group_id}.model"

    # ------------------------------------------------------------------ helpers
    def redacted_dict(self) -> dict[str, Any]:
        """The effective configuration as JSON-able dict, secrets masked as ``"**********"``.

        The OAUTHBEARER token command shows its program only: its arguments may hold a
        client secret.
        """
        out = self.model_dump(mode="json")
        cmd = out.get("kafka", {}).get("sasl_oauth_token_command")
        if isinstance(cmd, str) and cmd.strip():
            out["kafka"]["sasl_oauth_token_command"] = cmd.split()[0] + " **********"
        return out


# ------------------------------------------------------------------------ errors
def _loc_to_key(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


_KEY_PREFIX = re.compile(r"^([A-Za-z_][\w.]*): (.*)$", re.S)


def format_validation_error(exc: ValidationError) -> list[tuple[str, str]]:
    """Turn a pydantic ValidationError into ``(dotted key, message)`` pairs.

    Cross-field checks raise ``ValueError("key: message")``; the key named
    there is appended to the error's location so the problem points at a key.
    """
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc", ()))
        msg = str(err.get("msg", ""))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        m = _KEY_PREFIX.match(msg)
        key = _loc_to_key(loc)
        if m:
            sub, msg = m.group(1), m.group(2)
            key = sub if (not key or "." in sub) else f"{key}.{sub}"
        if err.get("type") == "extra_forbidden":
            msg = "unknown key (not a setting; check the spelling)"
        elif "input" in err and err.get("type") not in ("missing",) and not isinstance(err["input"], dict):
            shown = err["input"]
            if "password" not in key and not isinstance(shown, SecretStr):
                msg = f"{msg} (got {shown!r})"
        out.append((key, msg))
    return out


# ------------------------------------------------------------------------ sources
class _MappingEnvSource(EnvSettingsSource):
    """The stock environment source (prefix, ``__`` nesting, JSON for complex values) over *env*.

    ``EnvSettingsSource`` reads ``os.environ`` into its public ``env_vars``
    attribute, which everything else consults; this replaces it by the given
    mapping, with the same key normalization (case folding, empty values,
    the none-string).
    """

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]):
        super().__init__(settings_cls)
        self.env_vars = {
            (k if self.case_sensitive else k.lower()): (None if v == self.env_parse_none_str else v)
            for k, v in env.items() if not (self.env_ignore_empty and v == "")
        }


def _file_source(path: Path) -> PydanticBaseSettingsSource:
    """The TOML file's values; ConfigError for a missing file or invalid TOML."""
    try:
        if path.is_file():
            # absolute(): the file as given, without the source's "~" expansion
            return TomlConfigSettingsSource(Settings, toml_file=path.absolute())
        with open(path, "rb") as f:  # a pipe or device (e.g. --config <(...)); directories raise here
            return InitSettingsSource(Settings, init_kwargs=tomllib.load(f))
    except FileNotFoundError:
        raise ConfigError([("", f"config file not found: {str(path)!r}")], source=str(path)) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([("", f"not valid TOML: {e}")], source=str(path)) from None


def _deep_merge(low: Mapping[str, Any], high: Mapping[str, Any]) -> dict[str, Any]:
    """*high* over *low*, recursing into tables (how pydantic-settings merges its sources)."""
    out = dict(low)
    for k, v in high.items():
        out[k] = _deep_merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def load_settings(path: str | Path | None = None, *, env: Mapping[str, str] | None = None) -> Settings:
    """Load and validate the configuration.

    Parameters
    ----------
    path : str or Path, optional
        TOML file. If None, the file named by ``STREAMKM_CONFIG`` (in ``env``)
        is used when set; otherwise only defaults and environment apply.
    env : mapping, optional
        Environment to read ``STREAMKM_*`` overrides from; default
        ``os.environ``. Pass ``{}`` to ignore the environment.

    Returns
    -------
    Settings

    Raises
    ------
    ConfigError
        Listing every problem as ``section.key: message`` (unknown keys,
        invalid values, cross-field conflicts, unreadable file).
    """
    environ = os.environ if env is None else env
    if path is None:
        cfg = {k.upper(): v for k, v in environ.items()}.get(CONFIG_ENV_VAR)
        path = cfg if cfg else None
    source = None if path is None else str(path)
    file_values = {} if path is None else _file_source(Path(path))()
    env_items = {k: v for k, v in environ.items() if k.upper() != CONFIG_ENV_VAR}
    try:
        # earlier wins in pydantic-settings' terms: environment > file > defaults
        env_values = _MappingEnvSource(Settings, env_items)()
        return Settings(**_deep_merge(file_values, env_values))
    except ValidationError as e:
        raise ConfigError(format_validation_error(e), source=source) from None

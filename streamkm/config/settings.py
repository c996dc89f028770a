"""Daemon configuration: one pydantic settings model, TOML file + environment.

The whole daemon is configured by :class:`Settings`, a tree of small section
models (``kafka``, ``input``, ``model``, ``sequence``, ``drift``, ``checkpoint``,
``metrics``, ``dlq``, ``output``, ``worker``). Values come from, in increasing
priority:

1. the defaults declared here (``configs/default.toml`` mirrors them, with a
   comment on every key),
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

from __future__ import annotations

import os
import re
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from streamkm.pipeline.drift import DRIFT_METHOD_PARAMS

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
    "Settings",
    "load_settings",
    "format_validation_error",
    "default_toml",
    "CONFIG_ENV_VAR",
    "DRIFT_METHOD_PARAMS",
]

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


def _blank_to_none(v: Any) -> Any:
    if isinstance(v, str) and v.strip() == "":
        return None
    return v


class _Section(BaseModel):
    """Base for config sections: unknown keys are errors, assignment validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- kafka
class KafkaSettings(_Section):
    """Kafka connection, consumer group and security (passed to aiokafka)."""

    bootstrap_servers: str | None = Field(
        None,
        description="Comma-separated host:port list. Unset or empty: start the embedded broker "
        "(Tansu, extra 'embedded') on 127.0.0.1.",
    )
    group_id: str = Field("streamkm", min_length=1, description="Consumer group id.")
    client_id: str = Field("streamkm", min_length=1, description="Client id sent to the broker.")
    vectors_topic: str | None = Field(
        "streamkm.vectors", description="Input topic of the vectors pipeline (unset: pipeline off)."
    )
    events_topic: str | None = Field(
        "streamkm.events", description="Input topic of the sequence (events) pipeline."
    )
    auto_offset_reset: Literal["earliest", "latest", "none"] = Field(
        "earliest",
        description="Where to start a partition that has neither a checkpointed nor a committed offset.",
    )
    max_records: int = Field(
        10_000, ge=1, description="Maximum records returned by one getmany() (micro-batch bound)."
    )
    fetch_timeout_ms: int = Field(
        500, ge=0, description="getmany() timeout: how long to wait for records before an empty batch."
    )
    max_partition_fetch_bytes: int = Field(
        4 * 2**20, ge=1024, description="Maximum bytes fetched per partition per request."
    )
    fetch_max_bytes: int = Field(
        50 * 2**20, ge=1024, description="Maximum bytes fetched per request over all partitions."
    )
    session_timeout_ms: int = Field(
        10_000, ge=1, description="Group session timeout; missed heartbeats for this long evict the member."
    )
    heartbeat_interval_ms: int = Field(
        3_000, ge=1, description="Heartbeat interval; must be below session_timeout_ms."
    )
    max_poll_interval_ms: int = Field(
        300_000, ge=1, description="Maximum time between getmany() calls before the member is evicted."
    )
    request_timeout_ms: int = Field(40_000, ge=1, description="Broker request timeout.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Transport security."
    )
    ssl_cafile: Path | None = Field(
        None, description="CA bundle (PEM) to verify the brokers (SSL, SASL_SSL); unset: system CAs."
    )
    ssl_certfile: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    ssl_keyfile: Path | None = Field(None, description="Client private key (PEM) for mutual TLS.")
    ssl_password: SecretStr | None = Field(None, description="Password of ssl_keyfile (secret).")
    ssl_check_hostname: bool = Field(True, description="Verify the broker host name against its certificate.")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism (SASL_PLAINTEXT, SASL_SSL)."
    )
    sasl_plain_username: str | None = Field(None, description="SASL user name.")
    sasl_plain_password: SecretStr | None = Field(None, description="SASL password (secret).")

    _blank = field_validator(
        "bootstrap_servers",
        "vectors_topic",
        "events_topic",
        "ssl_cafile",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "sasl_plain_username",
        "sasl_plain_password",
        mode="before",
    )(_blank_to_none)

    @model_validator(mode="after")
    def _check(self) -> "KafkaSettings":
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError(
                f"heartbeat_interval_ms: must be below session_timeout_ms "
                f"({self.heartbeat_interval_ms} >= {self.session_timeout_ms})"
            )
        if self.security_protocol in ("SSL", "SASL_SSL"):
            if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
                raise ValueError(
                    "ssl_keyfile: ssl_certfile and ssl_keyfile must be set together for mutual TLS"
                )
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                p = getattr(self, name)
                if p is not None and not Path(p).is_file():
                    raise ValueError(f"{name}: file not found: {str(p)!r}")
        if self.security_protocol.startswith("SASL_"):
            if not self.sasl_plain_username or self.sasl_plain_password is None:
                raise ValueError(
                    f"sasl_plain_username: sasl_plain_username and sasl_plain_password are required "
                    f"when security_protocol is {self.security_protocol}"
                )
        return self

    @property
    def embedded(self) -> bool:
        """True when no bootstrap servers are configured (use the embedded broker)."""
        return self.bootstrap_servers is None

    def ssl_context(self):
        """Build the :class:`ssl.SSLContext` for SSL/SASL_SSL, else None."""
        if self.security_protocol not in ("SSL", "SASL_SSL"):
            return None
        from aiokafka.helpers import create_ssl_context

        ctx = create_ssl_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
            certfile=str(self.ssl_certfile) if self.ssl_certfile else None,
            keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None,
            password=self.ssl_password.get_secret_value() if self.ssl_password else None,
        )
        ctx.check_hostname = self.ssl_check_hostname
        return ctx

    def client_kwargs(self, bootstrap_servers: str | None = None) -> dict[str, Any]:
        """Connection keyword arguments for aiokafka consumers, producers and admin clients.

        Parameters
        ----------
        bootstrap_servers : str, optional
            Override (e.g. the embedded broker's address when
            ``self.bootstrap_servers`` is unset).

        Returns
        -------
        dict
            ``bootstrap_servers``, ``client_id``, ``security_protocol``,
            ``request_timeout_ms``, plus ``ssl_context`` for SSL/SASL_SSL and
            ``sasl_mechanism``/``sasl_plain_username``/``sasl_plain_password``
            (revealed) for SASL. Never log this dict.
        """
        servers = bootstrap_servers or self.bootstrap_servers
        if servers is None:
            raise ValueError(
                "kafka.bootstrap_servers is unset (embedded mode): pass the embedded broker's address"
            )
        kw: dict[str, Any] = {
            "bootstrap_servers": servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            kw["ssl_context"] = self.ssl_context()
        if self.security_protocol.startswith("SASL_"):
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_plain_username
            kw["sasl_plain_password"] = self.sasl_plain_password.get_secret_value()
        return kw

    def consumer_kwargs(self, bootstrap_servers: str | None = None) -> dict[str, Any]:
        """:meth:`client_kwargs` plus the consumer-group settings (auto-commit off)."""
        kw = self.client_kwargs(bootstrap_servers)
        kw.update(
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset=self.auto_offset_reset,
            max_partition_fetch_bytes=self.max_partition_fetch_bytes,
            fetch_max_bytes=self.fetch_max_bytes,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            max_poll_interval_ms=self.max_poll_interval_ms,
        )
        return kw


# --------------------------------------------------------------------------- input
class InputSettings(_Section):
    """Decoding of the vectors pipeline's records (see docs/formats.md)."""

    vectors_enabled: bool = Field(True, description="Run the vectors pipeline (needs kafka.vectors_topic).")
    format: Literal["json", "binary", "auto"] = Field(
        "auto", description="Record value format; 'auto' sniffs the binary magic per record."
    )
    dimension: int | None = Field(
        None, ge=1, description="Expected vector dimension; unset: taken from the first valid record."
    )
    max_record_bytes: int = Field(
        8 * 2**20, ge=16, description="Records with a larger value are dead-lettered as 'oversized'."
    )


# --------------------------------------------------------------------------- model
class ModelSettings(_Section):
    """StreamingKMeans hyperparameters (passed verbatim, see :meth:`estimator_kwargs`)."""

    n_clusters: int = Field(8, ge=1, le=4096, description="Number of clusters k.")
    decay: float = Field(
        1.0, gt=0.0, le=1.0, description="Per-time-unit forgetting factor (1 = no forgetting)."
    )
    half_life: float | None = Field(
        None, gt=0.0, description="Half-life in time units (exclusive with decay != 1)."
    )
    time_unit: Literal["batches", "points"] = Field(
        "batches", description="What one time unit of decay is: a batch or a point."
    )
    reservoir_size: int = Field(10_000, ge=1, description="Points kept in the reservoir for reseeding.")
    reservoir: Literal["uniform", "time_biased"] = Field(
        "uniform", description="Reservoir kind: uniform sample or time-biased (favours recent points)."
    )
    reseed_interval: int | None = Field(
        None, ge=1, description="Attempt a reseed every this many points; unset: only on drift or on demand."
    )
    reseed_min_gain: float = Field(
        0.01, ge=0.0, lt=1.0, description="Minimum relative objective gain for a reseed to be accepted."
    )
    dying_threshold: float = Field(
        0.01, ge=0.0, lt=1.0, description="Relative weight below which a cluster is re-placed (0 = never)."
    )
    init_size: int | None = Field(
        None, ge=1, description="Points buffered before k-means++ init; unset: estimator default."
    )
    n_init: int = Field(
        3, ge=1, description="k-means++ + Lloyd runs at initialization and per reseed candidate (best kept)."
    )
    max_iter: int = Field(20, ge=1, description="Lloyd iterations of a reseed candidate on the reservoir.")
    ewm_alpha: float = Field(
        0.1, gt=0.0, le=1.0, description="Smoothing of the EWMA objective (weight of the newest batch)."
    )
    memory_budget_bytes: int = Field(
        64 * 2**20, ge=2**20, description="Scratch memory bound for chunked distance computations."
    )
    seed: int | None = Field(0, ge=0, description="RNG seed (fix it: replay determinism relies on it).")

    @model_validator(mode="after")
    def _check(self) -> "ModelSettings":
        if self.half_life is not None and self.decay != 1.0:
            raise ValueError(
                f"half_life: set either decay or half_life, not both (decay={self.decay}, "
                f"half_life={self.half_life})"
            )
        return self

    def estimator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``StreamingKMeans(**kwargs)``; unset optionals are omitted."""
        d = self.model_dump()
        for k in ("init_size",):
            if d[k] is None:
                del d[k]
        return d


# ------------------------------------------------------------------------ sequence
class SequenceSettings(_Section):
    """The sequence pipeline: events -> per-key windows -> LSTM embedding -> k-means."""

    enabled: bool = Field(False, description="Run the sequence pipeline (needs kafka.events_topic, lstm_path).")
    n_features: int | None = Field(
        None, ge=1, description="Event feature dimension; unset: the LSTM's input_size."
    )
    window_kind: Literal["tumbling", "sliding", "session"] = Field("tumbling", description="Window kind.")
    window_size: int = Field(
        32, ge=1, description="Events per window (tumbling, sliding); unused for sessions."
    )
    window_stride: int | None = Field(
        None, ge=1, description="Events between starts of consecutive sliding windows."
    )
    window_gap: float | None = Field(None, gt=0.0, description="Inactivity gap closing a session window.")
    max_keys: int = Field(10_000, ge=1, description="Open keys kept; least recently updated are evicted.")
    max_events_per_key: int = Field(1_024, ge=1, description="Events buffered per key before eviction.")
    on_evict: Literal["flush", "drop"] = Field(
        "flush", description="What happens to an evicted key's window: embed it (flush) or drop it."
    )
    allowed_lateness: float = Field(
        0.0, ge=0.0, description="How far (event time) an event may be older than its key's newest and "
        "still be accepted; older ones are dropped and counted."
    )
    lstm_path: Path | None = Field(None, description="LSTMEncoder weights (.npz from LSTMEncoder.save).")
    pooling: Literal["last", "mean"] = Field(
        "mean", description="How a window's hidden states are pooled (mean separated behaviours far better "
        "than last in tests/test_embedding_quality.py)."
    )
    normalize: bool = Field(True, description="L2-normalize embeddings before clustering.")
    model: ModelSettings = Field(
        default_factory=ModelSettings, description="StreamingKMeans over the embeddings."
    )

    _blank = field_validator("lstm_path", mode="before")(_blank_to_none)

    @model_validator(mode="after")
    def _check(self) -> "SequenceSettings":
        if self.window_kind == "sliding" and self.window_stride is None:
            raise ValueError("window_stride: required when window_kind is 'sliding'")
        if self.window_kind == "session" and self.window_gap is None:
            raise ValueError("window_gap: required when window_kind is 'session'")
        if self.window_kind != "session" and self.window_size > self.max_events_per_key:
            raise ValueError(
                f"window_size: must be <= max_events_per_key ({self.window_size} > {self.max_events_per_key})"
            )
        if self.enabled and self.lstm_path is None:
            raise ValueError("lstm_path: required when the sequence pipeline is enabled")
        return self

    def windower_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``EventWindower(n_features, **kwargs)``."""
        return {
            "kind": self.window_kind,
            "size": self.window_size,
            "stride": self.window_stride,
            "gap": self.window_gap,
            "max_keys": self.max_keys,
            "max_events_per_key": self.max_events_per_key,
            "on_evict": self.on_evict,
            "allowed_lateness": self.allowed_lateness,
        }


# --------------------------------------------------------------------------- drift
class DriftSettings(_Section):
    """Drift detection on each pipeline's per-batch objective (river detectors)."""

    enabled: bool = Field(True, description="Feed each batch objective to a drift detector.")
    method: Literal["adwin", "page_hinkley", "kswin"] = Field("adwin", description="Detector.")
    params: dict[str, float | int | bool | str] = Field(
        default_factory=dict, description="Detector constructor parameters (river names)."
    )
    seed: int = Field(0, ge=0, description="Seed for randomized detectors (KSWIN).")
    reseed_on_drift: bool = Field(True, description="Attempt a reservoir reseed when drift is detected.")
    max_history: int = Field(
        10_000, ge=16, description="Values kept for checkpoint replay; older ones are trimmed."
    )

    @model_validator(mode="after")
    def _check(self) -> "DriftSettings":
        allowed = DRIFT_METHOD_PARAMS[self.method]
        unknown = sorted(set(self.params) - allowed)
        if unknown:
            raise ValueError(
                f"params: unknown parameter(s) {unknown} for method {self.method!r}; "
                f"allowed: {sorted(allowed)}"
            )
        if "seed" in self.params:
            raise ValueError("params: set drift.seed, not params.seed")
        return self

    def monitor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``DriftMonitor(**kwargs)``."""
        kw: dict[str, Any] = {"method": self.method, "max_history": self.max_history, **self.params}
        if self.method == "kswin":
            kw["seed"] = self.seed
        return kw


# ----------------------------------------------------------------- small sections
class CheckpointSettings(_Section):
    """Checkpoint directory and cadence."""

    dir: Path = Field(Path("streamkm-checkpoints"), description="Checkpoint directory (created).")
    interval_seconds: float = Field(
        30.0, ge=0.0, description="Checkpoint at least this often (0 = no time trigger)."
    )
    interval_records: int = Field(
        100_000, ge=0, description="Checkpoint after this many records (0 = no count trigger)."
    )
    keep: int = Field(3, ge=1, description="Checkpoints kept on disk (older ones are pruned).")


class MetricsSettings(_Section):
    """The HTTP server for /metrics, /healthz and /readyz."""

    enabled: bool = Field(True, description="Serve /metrics, /healthz, /readyz.")
    host: str = Field("127.0.0.1", min_length=1, description="Listen address.")
    port: int = Field(9108, ge=0, le=65535, description="Listen port (0 = pick a free port).")


class DLQSettings(_Section):
    """Dead-letter topic for records that fail decoding/validation."""

    topic: str | None = Field(
        "streamkm.dlq", description="Dead-letter topic; unset: bad records are only counted and logged."
    )

    _blank = field_validator("topic", mode="before")(_blank_to_none)


class OutputSettings(_Section):
    """Optional assignments topic (one record per clustered input)."""

    topic: str | None = Field(None, description="Assignments topic; unset: no output.")

    _blank = field_validator("topic", mode="before")(_blank_to_none)


class WorkerSettings(_Section):
    """Worker lifecycle, retries, logging and the embedded demo producer."""

    shutdown_deadline_seconds: float = Field(
        30.0, gt=0.0, description="SIGTERM/SIGINT: finish, checkpoint, commit and exit within this."
    )
    retry_backoff_initial_seconds: float = Field(
        0.5, gt=0.0, description="First delay when the broker is unreachable."
    )
    retry_backoff_max_seconds: float = Field(30.0, gt=0.0, description="Maximum retry delay.")
    offload_min_rows: int = Field(
        4_096, ge=0, description="Batches with at least this many rows run in a worker thread (a "
        "record's value counts as one row per 64 bytes, so few large binary records qualify too); "
        "meanwhile the next fetch proceeds on the event loop."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_json: bool = Field(False, description="Emit logs as JSON lines.")
    demo_producer: bool = Field(
        True, description="In embedded mode, also run the demo producer so the loop is visible."
    )
    demo_rate: float = Field(1_000.0, gt=0.0, description="Demo producer records per second.")
    demo_format: Literal["json", "binary"] = Field("json", description="Demo producer value format.")
    demo_n_clusters: int = Field(4, ge=1, description="Gaussian clusters in the demo stream.")
    demo_n_features: int = Field(8, ge=1, description="Dimension of the demo vectors.")
    demo_drift_every: int | None = Field(
        50_000, ge=1, description="Demo cluster centres move every this many records (unset: never)."
    )
    demo_seed: int = Field(0, ge=0, description="Demo producer seed.")

    @model_validator(mode="after")
    def _check(self) -> "WorkerSettings":
        if self.retry_backoff_max_seconds < self.retry_backoff_initial_seconds:
            raise ValueError(
                f"retry_backoff_max_seconds: must be >= retry_backoff_initial_seconds "
                f"({self.retry_backoff_max_seconds} < {self.retry_backoff_initial_seconds})"
            )
        return self


# ------------------------------------------------------------------------ settings
# (file data, env mapping or None) for the settings sources, set by load_settings.
_LOAD_CTX: ContextVar[tuple[dict[str, Any], Mapping[str, str] | None] | None] = ContextVar(
    "streamkm_config_load", default=None
)


class _MappingEnvSource(EnvSettingsSource):
    """EnvSettingsSource reading a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]):
        self._mapping = dict(env)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        from pydantic_settings.sources.utils import parse_env_vars

        return parse_env_vars(self._mapping, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class Settings(BaseSettings):
    """Everything the daemon needs; build it with :func:`load_settings`.

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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        ctx = _LOAD_CTX.get()
        if ctx is None:
            return (init_settings, env_settings)
        file_data, env = ctx
        env_src = env_settings if env is None else _MappingEnvSource(settings_cls, env)
        # earlier wins: explicit kwargs > environment > file > defaults
        return (init_settings, env_src, InitSettingsSource(settings_cls, init_kwargs=file_data))

    @model_validator(mode="after")
    def _check(self) -> "Settings":
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
        return self

    # ------------------------------------------------------------------ helpers
    @property
    def pipelines(self) -> dict[str, str]:
        """Enabled pipelines: ``{"vectors": topic, "sequence": topic}`` (subset)."""
        out: dict[str, str] = {}
        if self.input.vectors_enabled and self.kafka.vectors_topic:
            out["vectors"] = self.kafka.vectors_topic
        if self.sequence.enabled and self.kafka.events_topic:
            out["sequence"] = self.kafka.events_topic
        return out

    def redacted_dict(self) -> dict[str, Any]:
        """The effective configuration as JSON-able dict, secrets masked as ``"**********"``."""
        return self.model_dump(mode="json")


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


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError([("", f"config file not found: {str(path)!r}")], source=str(path)) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([("", f"not valid TOML: {e}")], source=str(path)) from None


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
    file_data: dict[str, Any] = {}
    source = None
    if path is not None:
        source = str(path)
        file_data = _read_toml(Path(path))
    env_items = {k: v for k, v in environ.items() if k.upper() != CONFIG_ENV_VAR}
    token = _LOAD_CTX.set((file_data, env_items))
    try:
        return Settings()
    except ValidationError as e:
        raise ConfigError(format_validation_error(e), source=source) from None
    finally:
        _LOAD_CTX.reset(token)


# ------------------------------------------------------------------ default.toml
# Example values shown (commented out) for keys whose default is unset.
_EXAMPLES: dict[str, str] = {
    "bootstrap_servers": '"localhost:9092"',
    "ssl_cafile": '"/etc/streamkm/ca.pem"',
    "ssl_certfile": '"/etc/streamkm/client.pem"',
    "ssl_keyfile": '"/etc/streamkm/client.key"',
    "ssl_password": '"..."  # prefer STREAMKM_KAFKA__SSL_PASSWORD',
    "sasl_plain_username": '"streamkm"',
    "sasl_plain_password": '"..."  # prefer STREAMKM_KAFKA__SASL_PLAIN_PASSWORD',
    "dimension": "64",
    "half_life": "100.0",
    "reseed_interval": "50",
    "init_size": "1000",
    "seed": "0",
    "n_features": "8",
    "window_stride": "16",
    "window_gap": "30.0",
    "lstm_path": '"models/lstm.npz"',
    "topic": '"streamkm.assignments"',
    "demo_drift_every": "50000",
}

_TOML_HEADER = """\
# streamkm default configuration (generated from streamkm/config.py: default_toml()).
#
# Every key is listed with its default. Keys whose default is unset are shown
# commented out with an example value (TOML has no null). Override any key from
# the environment as STREAMKM_<SECTION>__<KEY>, e.g. STREAMKM_MODEL__N_CLUSTERS=5
# or STREAMKM_SEQUENCE__MODEL__SEED=3; the environment wins over this file.
# Check a file with: streamkm config check FILE
"""


def _toml_value(v: Any) -> str:
    import json as _json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (str, Path)):
        return _json.dumps(str(v))
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }" if v else "{}"
    raise TypeError(f"cannot render {v!r} as TOML")


def _toml_section(name: str, model: BaseModel) -> list[str]:
    import typing

    out = [f"[{name}]"]
    nested: list[tuple[str, BaseModel, str]] = []
    for fname, f in type(model).model_fields.items():
        v = getattr(model, fname)
        if isinstance(v, BaseModel):
            nested.append((f"{name}.{fname}", v, f.description or ""))
            continue
        ann = f.annotation
        lit = ann if typing.get_origin(ann) is Literal else next(
            (a for a in typing.get_args(ann) if typing.get_origin(a) is Literal), None)
        choices = f" One of: {', '.join(map(str, typing.get_args(lit)))}." if lit is not None else ""
        out.append(f"# {f.description}{choices}")
        if v is None:
            out.append(f"# {fname} = {_EXAMPLES.get(fname, '')}".rstrip())
        elif isinstance(v, SecretStr):  # pragma: no cover - secrets have no defaults
            out.append(f"# {fname} = ")
        else:
            out.append(f"{fname} = {_toml_value(v)}")
    out.append("")
    for n, m, d in nested:
        out.append(f"# {d}")
        out += _toml_section(n, m)
    return out


def default_toml() -> str:
    """Render the defaults as a commented TOML file (the content of ``configs/default.toml``).

    Returns
    -------
    str
    """
    s = load_settings(env={})
    lines = [_TOML_HEADER]
    for fname, f in Settings.model_fields.items():
        lines.append(f"# --- {f.description}")
        lines += _toml_section(fname, getattr(s, fname))
    return "\n".join(lines).rstrip() + "\n"

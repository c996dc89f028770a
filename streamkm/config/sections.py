"""The configuration sections: one small pydantic model per ``[table]`` of the TOML file.

Each field declares its default, bounds and a description (rendered into
``configs/default.toml``); cross-field checks are after-validators that raise
``ValueError("key: message")`` so the error names the key. Unknown keys are
errors (``extra="forbid"``).
"""

from __future__ import annotations

import shlex
import shutil
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from streamkm.drift import DRIFT_METHOD_PARAMS

__all__ = [
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
]


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
        default=None,
        description="Comma-separated host:port list. Unset or empty: start the embedded broker "
        "(Tansu, extra 'embedded') on 127.0.0.1.",
    )
    group_id: str = Field(default="streamkm", min_length=1, description="Consumer group id.")
    client_id: str = Field(default="streamkm", min_length=1, description="Client id sent to the broker.")
    vectors_topic: str | None = Field(
        default="streamkm.vectors", description="Input topic of the vectors pipeline (unset: pipeline off)."
    )
    events_topic: str | None = Field(
        default="streamkm.events", description="Input topic of the sequence (events) pipeline."
    )
    auto_offset_reset: Literal["earliest", "latest", "none"] = Field(
        default="earliest",
        description="Where to start a partition that has neither a checkpointed nor a committed offset.",
    )
    on_offsets_lost: Literal["fail", "skip"] = Field(
        default="fail", description="A partition whose next offset (from the checkpoint, the commit or the group "
        "model) is below the broker's log start: retention deleted records the model never saw. 'fail': stop "
        "with exit 4 naming the partition and the offsets; 'skip': log an error, count "
        "the records in streamkm_records_lost_total and resume at the log start.")
    max_records: int = Field(
        default=10_000, ge=1, description="Maximum records returned by one getmany() (micro-batch bound)."
    )
    fetch_timeout_ms: int = Field(
        default=500, ge=0, description="getmany() timeout: how long to wait for records before an empty batch."
    )
    max_partition_fetch_bytes: int = Field(
        default=4 * 2**20, ge=1024, description="Maximum bytes fetched per partition per request."
    )
    fetch_max_bytes: int = Field(
        default=50 * 2**20, ge=1024, description="Maximum bytes fetched per request over all partitions."
    )
    session_timeout_ms: int = Field(
        default=10_000, ge=1, description="Group session timeout; missed heartbeats for this long evict the member."
    )
    heartbeat_interval_ms: int = Field(
        default=3_000, ge=1, description="Heartbeat interval; must be below session_timeout_ms."
    )
    max_poll_interval_ms: int = Field(
        default=300_000, ge=1, description="Maximum time between getmany() calls before the member is evicted."
    )
    request_timeout_ms: int = Field(default=40_000, ge=1, description="Broker request timeout.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="Transport security."
    )
    ssl_cafile: Path | None = Field(
        default=None, description="CA bundle (PEM) to verify the brokers (SSL, SASL_SSL); unset: system CAs."
    )
    ssl_certfile: Path | None = Field(default=None, description="Client certificate (PEM) for mutual TLS.")
    ssl_keyfile: Path | None = Field(default=None, description="Client private key (PEM) for mutual TLS.")
    ssl_password: SecretStr | None = Field(default=None, description="Password of ssl_keyfile (secret).")
    ssl_check_hostname: bool = Field(default=True, description="Verify the broker host name against its certificate.")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] = Field(
        default="PLAIN", description="SASL mechanism (SASL_PLAINTEXT, SASL_SSL)."
    )
    sasl_plain_username: str | None = Field(default=None, description="SASL user name (PLAIN, SCRAM).")
    sasl_plain_password: SecretStr | None = Field(default=None, description="SASL password (PLAIN, SCRAM; secret).")
    sasl_oauth_token_file: Path | None = Field(
        default=None,
        description="OAUTHBEARER: file holding the bearer token, read again for every new broker connection "
        "(so a replaced file takes effect). Exactly one of this and sasl_oauth_token_command.",
    )
    sasl_oauth_token_command: str | None = Field(
        default=None,
        description="OAUTHBEARER: program printing the bearer token on stdout, split like a shell line but "
        "run without a shell, once for every new broker connection.",
    )
    sasl_oauth_token_timeout_seconds: float = Field(
        default=10.0, gt=0.0, le=300.0, description="OAUTHBEARER: kill sasl_oauth_token_command after this long."
    )

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
        "sasl_oauth_token_file",
        "sasl_oauth_token_command",
        mode="before",
    )(_blank_to_none)

    @model_validator(mode="after")
    def _check(self) -> KafkaSettings:
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
            if self.sasl_mechanism == "OAUTHBEARER":
                self._check_oauth()
            elif not self.sasl_plain_username or self.sasl_plain_password is None:
                raise ValueError(
                    f"sasl_plain_username: sasl_plain_username and sasl_plain_password are required "
                    f"when security_protocol is {self.security_protocol} with {self.sasl_mechanism}"
                )
        return self

    def _check_oauth(self) -> None:
        file, command = self.sasl_oauth_token_file, self.sasl_oauth_token_command
        if file is None and command is None:
            raise ValueError("sasl_oauth_token_file: OAUTHBEARER needs a token: set sasl_oauth_token_file "
                             "or sasl_oauth_token_command")
        if file is not None and command is not None:
            raise ValueError("sasl_oauth_token_command: set only one of sasl_oauth_token_file and "
                             "sasl_oauth_token_command")
        if file is not None and not Path(file).is_file():
            raise ValueError(f"sasl_oauth_token_file: file not found: {str(file)!r}")
        if command is not None:
            try:
                argv = shlex.split(command)
            except ValueError as exc:
                raise ValueError(f"sasl_oauth_token_command: cannot split {command!r}: {exc}") from None
            if not argv:
                raise ValueError("sasl_oauth_token_command: empty command")
            if shutil.which(argv[0]) is None:
                raise ValueError(f"sasl_oauth_token_command: program not found or not executable: {argv[0]!r}")

    @property
    def embedded(self) -> bool:
        """True when no bootstrap servers are configured (use the embedded broker)."""
        return self.bootstrap_servers is None

    def ssl_context(self) -> ssl.SSLContext | None:
        """Build the :class:`ssl.SSLContext` for SSL/SASL_SSL, else None."""
        if self.security_protocol not in ("SSL", "SASL_SSL"):
            return None
        from aiokafka.helpers import create_ssl_context

        ctx: ssl.SSLContext = create_ssl_context(
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
            ``sasl_mechanism`` for SASL, with ``sasl_plain_username``/``sasl_plain_password``
            (revealed) for PLAIN and SCRAM, or ``sasl_oauth_token_provider`` (a
            :mod:`streamkm.kafka.oauth` provider of the token file or command) for
            OAUTHBEARER. Never log this dict.
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
        if self.security_protocol.startswith("SASL_") and self.sasl_mechanism == "OAUTHBEARER":
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_oauth_token_provider"] = self.oauth_token_provider()
        elif self.security_protocol.startswith("SASL_"):
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_plain_username
            assert self.sasl_plain_password is not None  # required for SASL by _check
            kw["sasl_plain_password"] = self.sasl_plain_password.get_secret_value()
        return kw

    def oauth_token_provider(self) -> Any:
        """The :class:`aiokafka.abc.AbstractTokenProvider` for OAUTHBEARER, else None.

        A :class:`streamkm.kafka.oauth.FileTokenProvider` for ``sasl_oauth_token_file``
        or a :class:`streamkm.kafka.oauth.CommandTokenProvider` for
        ``sasl_oauth_token_command``; both fetch a fresh token on every request.
        """
        if not self.security_protocol.startswith("SASL_") or self.sasl_mechanism != "OAUTHBEARER":
            return None
        from streamkm.kafka.oauth import CommandTokenProvider, FileTokenProvider

        if self.sasl_oauth_token_file is not None:
            return FileTokenProvider(self.sasl_oauth_token_file)
        assert self.sasl_oauth_token_command is not None  # one of them is required by _check
        return CommandTokenProvider(self.sasl_oauth_token_command,
                                    timeout_seconds=self.sasl_oauth_token_timeout_seconds)

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

    vectors_enabled: bool = Field(default=True, description="Run the vectors pipeline (needs kafka.vectors_topic).")
    format: Literal["json", "binary", "auto"] = Field(
        default="auto", description="Record value format; 'auto' sniffs the binary magic per record."
    )
    dimension: int | None = Field(
        default=None, ge=1, description="Expected vector dimension; unset: taken from the first valid record "
        "(per-worker model, replay). Required on the group model, except in the embedded demo (worker.demo_n_features)."
    )
    max_record_bytes: int = Field(
        default=8 * 2**20, ge=16, description="Records with a larger value are dead-lettered as 'oversized'."
    )


# --------------------------------------------------------------------------- model
class ModelSettings(_Section):
    """StreamingKMeans hyperparameters (passed verbatim, see :meth:`estimator_kwargs`)."""

    n_clusters: int = Field(default=8, ge=1, le=4096, description="Number of clusters k.")
    decay: float = Field(
        default=1.0, gt=0.0, le=1.0, description="Per-time-unit forgetting factor (1 = no forgetting)."
    )
    half_life: float | None = Field(
        default=None, gt=0.0, description="Half-life in time units (exclusive with decay != 1)."
    )
    time_unit: Literal["batches", "points"] = Field(
        default="batches", description="What one time unit of decay is: a batch or a point."
    )
    reservoir_size: int = Field(default=10_000, ge=1, description="Points kept in the reservoir for reseeding.")
    reservoir: Literal["uniform", "time_biased"] = Field(
        default="uniform", description="Reservoir kind: uniform sample or time-biased (favours recent points)."
    )
    reseed_interval: int | None = Field(
        default=None, ge=1, description="Attempt a reseed every this many points; unset: only on drift or on demand."
    )
    reseed_min_gain: float = Field(
        default=0.01, ge=0.0, lt=1.0, description="Minimum relative objective gain for a reseed to be accepted."
    )
    dying_threshold: float = Field(
        default=0.01, ge=0.0, lt=1.0, description="Relative weight below which a cluster is re-placed (0 = never)."
    )
    init_size: int | None = Field(
        default=None, ge=1, description="Points buffered before k-means++ init; unset: estimator default."
    )
    n_init: int = Field(
        default=3, ge=1, description="k-means++ + Lloyd runs at initialization and per reseed candidate (best kept)."
    )
    max_iter: int = Field(default=20, ge=1, description="Lloyd iterations of a reseed candidate on the reservoir.")
    ewm_alpha: float = Field(
        default=0.1, gt=0.0, le=1.0, description="Smoothing of the EWMA objective (weight of the newest batch)."
    )
    memory_budget_bytes: int = Field(
        default=64 * 2**20, ge=2**20, description="Scratch memory bound for chunked distance computations."
    )
    seed: int | None = Field(default=0, ge=0, description="RNG seed (fix it: replay determinism relies on it).")

    @model_validator(mode="after")
    def _check(self) -> ModelSettings:
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

    enabled: bool = Field(default=False, description="Run the sequence pipeline (needs kafka.events_topic, lstm_path).")
    n_features: int | None = Field(
        default=None, ge=1, description="Event feature dimension; unset: the LSTM's input_size."
    )
    window_kind: Literal["tumbling", "sliding", "session"] = Field(default="tumbling", description="Window kind.")
    window_size: int = Field(
        default=32, ge=1, description="Events per window (tumbling, sliding); unused for sessions."
    )
    window_stride: int | None = Field(
        default=None, ge=1, description="Events between starts of consecutive sliding windows."
    )
    window_gap: float | None = Field(default=None, gt=0.0, description="Inactivity gap closing a session window.")
    max_keys: int = Field(default=10_000, ge=1, description="Open keys kept; least recently updated are evicted.")
    max_events_per_key: int = Field(default=1_024, ge=1, description="Events buffered per key before eviction.")
    on_evict: Literal["flush", "drop"] = Field(
        default="flush", description="What happens to an evicted key's window: embed it (flush) or drop it."
    )
    allowed_lateness: float = Field(
        default=0.0, ge=0.0, description="How far (event time) an event may be older than its key's newest and "
        "still be accepted; older ones are dropped and counted."
    )
    lstm_path: Path | None = Field(default=None, description="LSTMEncoder weights (.npz from LSTMEncoder.save).")
    pooling: Literal["last", "mean"] = Field(
        default="mean", description="How a window's hidden states are pooled (mean separated behaviours far better "
        "than last in tests/sequence/test_embedding_quality.py)."
    )
    normalize: bool = Field(default=True, description="L2-normalize embeddings before clustering.")
    model: ModelSettings = Field(
        default_factory=ModelSettings, description="StreamingKMeans over the embeddings."
    )

    _blank = field_validator("lstm_path", mode="before")(_blank_to_none)

    @model_validator(mode="after")
    def _check(self) -> SequenceSettings:
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

    enabled: bool = Field(default=True, description="Feed each batch objective to a drift detector.")
    method: Literal["adwin", "page_hinkley", "kswin"] = Field(default="adwin", description="Detector.")
    params: dict[str, float | int | bool | str] = Field(
        default_factory=dict, description="Detector constructor parameters (river names)."
    )
    seed: int = Field(default=0, ge=0, description="Seed for randomized detectors (KSWIN).")
    reseed_on_drift: bool = Field(default=True, description="Attempt a reservoir reseed when drift is detected.")
    max_history: int = Field(
        default=10_000, ge=16, description="Values kept for checkpoint replay; older ones are trimmed."
    )

    @model_validator(mode="after")
    def _check(self) -> DriftSettings:
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

    dir: Path = Field(default=Path("streamkm-checkpoints"), description="Checkpoint directory (created).")
    interval_seconds: float = Field(
        default=30.0, ge=0.0, description="Checkpoint at least this often (0 = no time trigger)."
    )
    interval_records: int = Field(
        default=100_000, ge=0, description="Checkpoint after this many records (0 = no count trigger)."
    )
    keep: int = Field(default=3, ge=1, description="Checkpoints kept on disk (older ones are pruned).")
    max_file_bytes: int = Field(
        default=2 << 30, ge=1 << 20,
        description="Size limit of each checkpoint file (.npz and manifest; default 2 GiB): a larger file "
                    "is refused before it is read (as an invalid checkpoint), and a state that would exceed "
                    "it is not written (a failed checkpoint). Open sequence windows take about max_keys x "
                    "max_events_per_key x (event dimension + 2) x 4 bytes.")
    on_fallback: Literal["reread", "committed"] = Field(
        default="reread",
        description="When the newest checkpoints are unreadable and an older one (or none) is restored: "
                    "re-read each partition from that checkpoint's offset, or from the log start if it has "
                    "none (reread), or resume at the committed offsets and leave the records between out "
                    "of the model (committed).")


class MetricsSettings(_Section):
    """The HTTP server for /metrics, /healthz and /readyz (optionally HTTPS with credentials)."""

    enabled: bool = Field(default=True, description="Serve /metrics, /healthz, /readyz.")
    host: str = Field(default="127.0.0.1", min_length=1, description="Listen address.")
    port: int = Field(default=9108, ge=0, le=65535, description="Listen port (0 = pick a free port).")
    tls_certfile: Path | None = Field(
        default=None,
        description="Server certificate (PEM, with its chain): serve HTTPS. Set together with tls_keyfile.",
    )
    tls_keyfile: Path | None = Field(
        default=None, description="Private key (PEM, unencrypted) of tls_certfile."
    )
    tls_client_cafile: Path | None = Field(
        default=None,
        description="CA bundle (PEM) for client certificates (mutual TLS, needs tls_certfile): "
        "protected paths answer 403 without a client certificate it signed.",
    )
    basic_auth_username: str | None = Field(
        default=None,
        description="Require HTTP basic auth on protected paths (401 otherwise); needs tls_certfile. "
        "Set together with basic_auth_password; no ':'.",
    )
    basic_auth_password: SecretStr | None = Field(
        default=None, description="Password for basic_auth_username (secret)."
    )
    protect_probes: bool = Field(
        default=False,
        description="Also require the credentials on /healthz and /readyz. By default only they stay open "
        "(Kubernetes httpGet probes send neither a password nor a client certificate); /metrics and "
        "every other path are protected.",
    )
    max_connections: int = Field(
        default=64, ge=1, le=10_000,
        description="Connections served at once (one thread each); a connection beyond them is answered "
        "503 (plain HTTP) or closed at once (HTTPS), so idle or slow clients cannot take every thread.",
    )
    request_timeout_seconds: float = Field(
        default=10.0, gt=0.0, le=3600.0,
        description="Deadline of a whole connection, from accept to the end of the reply (TLS handshake, "
        "request and reply included); then it is cut, however slowly it was still sending or reading.",
    )

    _blank = field_validator(
        "tls_certfile", "tls_keyfile", "tls_client_cafile", "basic_auth_username", "basic_auth_password",
        mode="before",
    )(_blank_to_none)

    @model_validator(mode="after")
    def _check(self) -> MetricsSettings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            missing = "tls_keyfile" if self.tls_keyfile is None else "tls_certfile"
            raise ValueError(f"{missing}: tls_certfile and tls_keyfile must be set together for HTTPS")
        for name in ("tls_certfile", "tls_keyfile", "tls_client_cafile"):
            p = getattr(self, name)
            if p is not None and not Path(p).is_file():
                raise ValueError(f"{name}: file not found: {str(p)!r}")
        tls = self.tls_certfile is not None
        if self.tls_client_cafile is not None and not tls:
            raise ValueError("tls_client_cafile: client certificates need HTTPS: set tls_certfile and tls_keyfile")
        if (self.basic_auth_username is None) != (self.basic_auth_password is None):
            missing = "basic_auth_password" if self.basic_auth_password is None else "basic_auth_username"
            raise ValueError(f"{missing}: basic_auth_username and basic_auth_password must be set together")
        if self.basic_auth_username is not None:
            if ":" in self.basic_auth_username:
                raise ValueError("basic_auth_username: must not contain ':' (HTTP basic auth separates "
                                 "the user name from the password with it)")
            if not tls:
                raise ValueError("basic_auth_username: basic auth needs HTTPS (set tls_certfile and "
                                 "tls_keyfile): without it the password crosses the network in clear text")
        if self.protect_probes and self.basic_auth_username is None and self.tls_client_cafile is None:
            raise ValueError("protect_probes: nothing to protect the probes with: set basic_auth_username "
                             "and basic_auth_password, or tls_client_cafile")
        return self

    def server_kwargs(self) -> dict[str, Any]:
        """The TLS and credential keyword arguments of ``streamkm.ops.http.HealthServer``.

        Returns
        -------
        dict
            ``tls_certfile``, ``tls_keyfile``, ``tls_client_cafile``,
            ``basic_auth`` (``(username, password)`` with the password revealed, or
            None), ``protect_probes``, ``max_connections`` and
            ``request_timeout_seconds``. Never log this dict.
        """
        auth = None
        if self.basic_auth_username is not None and self.basic_auth_password is not None:
            auth = (self.basic_auth_username, self.basic_auth_password.get_secret_value())
        return {
            "tls_certfile": self.tls_certfile,
            "tls_keyfile": self.tls_keyfile,
            "tls_client_cafile": self.tls_client_cafile,
            "basic_auth": auth,
            "protect_probes": self.protect_probes,
            "max_connections": self.max_connections,
            "request_timeout_seconds": self.request_timeout_seconds,
        }


class DLQSettings(_Section):
    """Dead-letter topic for records that fail decoding/validation."""

    topic: str | None = Field(
        default="streamkm.dlq", description="Dead-letter topic; unset: bad records are only counted and logged."
    )

    _blank = field_validator("topic", mode="before")(_blank_to_none)


class OutputSettings(_Section):
    """Optional assignments topic (one record per clustered input)."""

    topic: str | None = Field(default=None, description="Assignments topic; unset: no output.")
    format: Literal["json", "binary"] = Field(
        default="json", description="Output record format: JSON objects, or binary (the SKMV header with float64 "
        "rows); both in docs/formats.md.")

    _blank = field_validator("topic", mode="before")(_blank_to_none)


class GroupSettings(_Section):
    """One model per consumer group: chunk statistics, a reducer, a versioned model topic."""

    enabled: bool = Field(
        default=True, description="Run the group model: workers send chunk statistics, the member assigned the "
        "stats partition folds them and publishes versions (vectors and sequence pipelines; see docs/operations.md). "
        "false: the per-worker model, each member its own model of the partitions it holds, with local checkpoints.")
    stats_topic: str | None = Field(
        default=None, description="Statistics topic, one partition per pipeline; unset: '<kafka.group_id>.stats'.")
    model_topic: str | None = Field(
        default=None, description="Model versions topic (compacted, key = pipeline); unset: "
        "'<kafka.group_id>.model'.")
    events_topic: str | None = Field(
        default=None, description="Cluster identity transitions topic; unset: transitions are only counted and "
        "logged.")
    create_topics: bool = Field(default=True, description="Create the stats and model topics if missing (the "
                                "model topic compacted, both with max.message.bytes = max_message_bytes).")
    max_message_bytes: int = Field(
        default=64 * 2**20, ge=2**20, description="Largest stats, version or snapshot message (a snapshot holds "
        "the reservoir: reservoir_size x dimension x 4 bytes and more); producer max_request_size and fetch size.")
    chunk_rows: int = Field(
        default=1024, ge=1, description="Valid rows per chunk of one partition (a chunk ends at the first record "
        "boundary at or past it; partial chunks only when caught up).")
    ordering: Literal["rounds", "arrival"] = Field(
        default="rounds", description="'rounds': members send each chunk's rows and the reducer folds rounds (the "
        "next chunk of every partition, in partition order), so the model is a function of the records and "
        "'streamkm replay' reproduces it; 'arrival': members send summaries against the version they hold, folded "
        "in stats-log order (smaller messages, assignment work spread over the members, a model that depends on "
        "timing). See docs/replay.md.")
    idle_partition_seconds: float = Field(
        default=30.0, gt=0.0, description="Rounds ordering: a partition with no chunk while another's has waited "
        "this long is idle, and rounds go on without it until it sends again; members cut a partition's partial "
        "chunk after half of it without records (both depend on timing; counted in "
        "streamkm_group_idle_partitions_total and streamkm_group_partial_chunks_total). Keep it well above "
        "kafka.session_timeout_ms (a crashed member's partitions wait that long for a new owner) and above "
        "the time a partition takes to fill a chunk.")
    max_in_flight: int = Field(
        default=32, ge=1, description="S: statistics messages a worker may have sent and not yet seen folded; "
        "then it waits for the model (bounds staleness).")
    sample_rows: int = Field(default=64, ge=0, description="Rows of each chunk sent for the reducer's reservoir.")
    publish_interval_seconds: float = Field(
        default=0.05, ge=0.0, description="The reducer publishes at most one version per pipeline this often.")
    snapshot_every: int = Field(
        default=50, ge=1, description="The reducer publishes its full state every this many published versions "
        "(recovery replays the stats log from the last one).")
    sync_timeout_seconds: float = Field(
        default=30.0, gt=0.0, description="A newly assigned partition waits this long at most for the model to "
        "fold what its previous owner sent.")
    identity_threshold: float | None = Field(
        default=None, gt=0.0, description="Largest centre move that keeps a cluster id at a reseed; unset: half the "
        "smallest distance between the old centres.")

    _blank = field_validator("stats_topic", "model_topic", "events_topic", mode="before")(_blank_to_none)


class WorkerSettings(_Section):
    """Worker lifecycle, retries, logging and the embedded demo producer."""

    shutdown_deadline_seconds: float = Field(
        default=30.0, gt=0.0, description="SIGTERM/SIGINT: finish, checkpoint, commit and exit within this."
    )
    retry_backoff_initial_seconds: float = Field(
        default=0.5, gt=0.0, description="First delay when the broker is unreachable."
    )
    retry_backoff_max_seconds: float = Field(default=30.0, gt=0.0, description="Maximum retry delay.")
    offload_min_rows: int = Field(
        default=4_096, ge=0, description="Batches with at least this many rows run in a worker thread (a "
        "record's value counts as one row per 64 bytes, so few large binary records qualify too); "
        "meanwhile the next fetch proceeds on the event loop."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    log_json: bool = Field(default=False, description="Emit logs as JSON lines.")
    demo_producer: bool = Field(
        default=True, description="In embedded mode, also run the demo producer so the loop is visible."
    )
    demo_rate: float = Field(default=1_000.0, gt=0.0, description="Demo producer records per second.")
    demo_format: Literal["json", "binary"] = Field(default="json", description="Demo producer value format.")
    demo_n_clusters: int = Field(default=4, ge=1, description="Gaussian clusters in the demo stream.")
    demo_n_features: int = Field(default=8, ge=1, description="Dimension of the demo vectors.")
    demo_drift_every: int | None = Field(
        default=50_000, ge=1, description="Demo cluster centres move every this many records (unset: never)."
    )
    demo_seed: int = Field(default=0, ge=0, description="Demo producer seed.")

    @model_validator(mode="after")
    def _check(self) -> WorkerSettings:
        if self.retry_backoff_max_seconds < self.retry_backoff_initial_seconds:
            raise ValueError(
                f"retry_backoff_max_seconds: must be >= retry_backoff_initial_seconds "
                f"({self.retry_backoff_max_seconds} < {self.retry_backoff_initial_seconds})"
            )
        return self

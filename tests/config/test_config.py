"""Tests for streamkm.config: defaults, file/env precedence, errors naming keys, secrets."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from pydantic import BaseModel

from streamkm.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TOML = ROOT / "configs" / "default.toml"


def _leaf_keys(model: BaseModel, prefix: str = "") -> list[str]:
    keys = []
    for name in type(model).model_fields:
        v = getattr(model, name)
        if isinstance(v, BaseModel):
            keys += _leaf_keys(v, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_defaults_load_and_match_default_toml():
    defaults = load_settings(env={})
    from_file = load_settings(DEFAULT_TOML, env={})
    assert defaults.model_dump() == from_file.model_dump()
    assert defaults.kafka.embedded  # no bootstrap servers -> embedded broker
    assert defaults.worker.shutdown_deadline_seconds == 30.0
    from streamkm.pipeline import enabled_topics

    assert enabled_topics(defaults) == {"vectors": "streamkm.vectors"}


def test_default_toml_lists_every_key_with_a_comment():
    text = DEFAULT_TOML.read_text()
    # group lines by [table]
    table = ""
    present: set[str] = set()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^\[([\w.]+)\]$", line)
        if m:
            table = m.group(1)
            continue
        m = re.match(r"^(?:# )?([a-z_]+) = ", line)
        if m and table:
            present.add(f"{table}.{m.group(1)}")
            assert lines[i - 1].startswith("#"), f"key {table}.{m.group(1)} has no comment above it"
    expected = set(_leaf_keys(load_settings(env={})))
    assert expected - present == set(), f"keys missing from default.toml: {sorted(expected - present)}"
    assert present - expected == set(), f"keys in default.toml that are not settings: {sorted(present - expected)}"


def test_every_field_has_a_description():
    def walk(cls):
        for name, f in cls.model_fields.items():
            assert f.description, f"{cls.__name__}.{name} has no description"
            ann = f.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann)

    walk(Settings)


def test_file_then_env_override(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[model]\nn_clusters = 3\nseed = 7\n[kafka]\nbootstrap_servers = "h1:9092"\ngroup_id = "g-file"\n'
        "[sequence.model]\nn_clusters = 11\n"
    )
    s = load_settings(cfg, env={"STREAMKM_MODEL__N_CLUSTERS": "5", "STREAMKM_SEQUENCE__MODEL__SEED": "4"})
    assert s.model.n_clusters == 5  # env beats file
    assert s.model.seed == 7  # file beats default, env untouched key keeps file value
    assert s.kafka.group_id == "g-file"
    assert s.kafka.bootstrap_servers == "h1:9092" and not s.kafka.embedded
    assert s.sequence.model.n_clusters == 11 and s.sequence.model.seed == 4
    # STREAMKM_CONFIG picks the file when no path is given
    s2 = load_settings(env={"STREAMKM_CONFIG": str(cfg)})
    assert s2.model.n_clusters == 3


def test_os_environ_is_default_env(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMKM_MODEL__N_CLUSTERS", "6")
    assert load_settings().model.n_clusters == 6
    assert load_settings(env={}).model.n_clusters == 8


@pytest.mark.parametrize(
    "where, key",
    [
        ("env", "model.n_clusterz"),
        ("file", "model.n_clusterz"),
        ("file", "kafkaa"),
        ("file", "sequence.model.sed"),
    ],
)
def test_unknown_key_error_names_it(tmp_path, where, key):
    parts = key.split(".")
    if where == "env":
        env = {"STREAMKM_" + "__".join(p.upper() for p in parts): "5"}
        with pytest.raises(ConfigError) as ei:
            load_settings(env=env)
    else:
        cfg = tmp_path / "c.toml"
        if len(parts) == 1:
            cfg.write_text(f"[{parts[0]}]\nx = 1\n")
        else:
            cfg.write_text(f"[{'.'.join(parts[:-1])}]\n{parts[-1]} = 5\n")
        with pytest.raises(ConfigError) as ei:
            load_settings(cfg, env={})
    keys = [k for k, _ in ei.value.problems]
    assert key in keys
    assert f"{key}: unknown key" in str(ei.value)


@pytest.mark.parametrize(
    "env, key",
    [
        ({"STREAMKM_MODEL__N_CLUSTERS": "0"}, "model.n_clusters"),
        ({"STREAMKM_MODEL__N_CLUSTERS": "abc"}, "model.n_clusters"),
        ({"STREAMKM_INPUT__FORMAT": "xml"}, "input.format"),
        ({"STREAMKM_METRICS__PORT": "70000"}, "metrics.port"),
        ({"STREAMKM_KAFKA__SASL_MECHANISM": "GSSAPI"}, "kafka.sasl_mechanism"),
        ({"STREAMKM_MODEL__DECAY": "0.5", "STREAMKM_MODEL__HALF_LIFE": "10"}, "model.half_life"),
        ({"STREAMKM_SEQUENCE__ENABLED": "true"}, "sequence.lstm_path"),
        (
            {"STREAMKM_SEQUENCE__ENABLED": "true", "STREAMKM_SEQUENCE__LSTM_PATH": "w.npz",
             "STREAMKM_KAFKA__EVENTS_TOPIC": ""},
            "kafka.events_topic",
        ),
        ({"STREAMKM_KAFKA__VECTORS_TOPIC": ""}, "kafka.vectors_topic"),
        ({"STREAMKM_KAFKA__SECURITY_PROTOCOL": "SASL_SSL"}, "kafka.sasl_plain_username"),
        ({"STREAMKM_KAFKA__SECURITY_PROTOCOL": "SSL", "STREAMKM_KAFKA__SSL_CAFILE": "/nonexistent/ca.pem"},
         "kafka.ssl_cafile"),
        ({"STREAMKM_DRIFT__PARAMS": '{"nope": 1}'}, "drift.params"),
        ({"STREAMKM_SEQUENCE__WINDOW_KIND": "session"}, "sequence.window_gap"),
        ({"STREAMKM_DLQ__TOPIC": "streamkm.vectors"}, "dlq.topic"),
    ],
)
def test_invalid_value_error_names_key(env, key):
    with pytest.raises(ConfigError) as ei:
        load_settings(env=env)
    assert key in [k for k, _ in ei.value.problems], str(ei.value)
    assert str(ei.value).count(f"{key}: ") == 1


def test_all_problems_listed_and_file_named(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model]\nn_clusters = -1\nreservoir_size = 0\n")
    with pytest.raises(ConfigError) as ei:
        load_settings(cfg, env={})
    keys = {k for k, _ in ei.value.problems}
    assert {"model.n_clusters", "model.reservoir_size"} <= keys
    assert str(cfg) in str(ei.value)


def test_bad_toml_and_missing_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model\nn = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg, env={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml", env={})


def test_blank_means_unset():
    s = load_settings(env={"STREAMKM_OUTPUT__TOPIC": "", "STREAMKM_KAFKA__BOOTSTRAP_SERVERS": " "})
    assert s.output.topic is None and s.kafka.embedded
    s = load_settings(env={"STREAMKM_OUTPUT__TOPIC": "assign"})
    assert s.output.topic == "assign"


SASL_ENV = {
    "STREAMKM_KAFKA__BOOTSTRAP_SERVERS": "b1:9093,b2:9093",
    "STREAMKM_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "STREAMKM_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
    "STREAMKM_KAFKA__SASL_PLAIN_USERNAME": "alice",
    "STREAMKM_KAFKA__SASL_PLAIN_PASSWORD": "hunter2-secret",
}


def test_secrets_not_in_redacted_output_or_repr():
    s = load_settings(env=SASL_ENV)
    assert "hunter2-secret" not in repr(s)
    assert "hunter2-secret" not in str(s)
    red = s.redacted_dict()
    assert "hunter2-secret" not in repr(red)
    assert red["kafka"]["sasl_plain_password"] == "**********"
    assert red["kafka"]["sasl_plain_username"] == "alice"
    import json

    json.dumps(red)  # printable as JSON


def test_secret_not_echoed_in_errors():
    env = dict(SASL_ENV, STREAMKM_KAFKA__SASL_PLAIN_USERNAME="")
    with pytest.raises(ConfigError) as ei:
        load_settings(env=env)
    assert "hunter2-secret" not in str(ei.value)


def test_client_kwargs_sasl():
    s = load_settings(env=SASL_ENV)
    kw = s.kafka.client_kwargs()
    assert kw["bootstrap_servers"] == "b1:9093,b2:9093"
    assert kw["security_protocol"] == "SASL_PLAINTEXT"
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_username"] == "alice"
    assert kw["sasl_plain_password"] == "hunter2-secret"
    assert "ssl_context" not in kw
    ckw = s.kafka.consumer_kwargs()
    assert ckw["enable_auto_commit"] is False and ckw["group_id"] == "streamkm"
    # plaintext has no sasl/ssl kwargs
    plain = load_settings(env={"STREAMKM_KAFKA__BOOTSTRAP_SERVERS": "h:1"}).kafka.client_kwargs()
    assert not any(k.startswith(("sasl", "ssl")) for k in plain)


def test_client_kwargs_embedded_needs_address():
    s = load_settings(env={})
    with pytest.raises(ValueError, match="embedded"):
        s.kafka.client_kwargs()
    assert s.kafka.client_kwargs("127.0.0.1:1234")["bootstrap_servers"] == "127.0.0.1:1234"


@pytest.fixture(scope="module")
def pem_files(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("pki")
    key, cert = d / "client.key", d / "client.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=streamkm-test"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def test_client_kwargs_ssl_and_sasl_ssl(pem_files):
    cert, key = pem_files
    env = {
        "STREAMKM_KAFKA__BOOTSTRAP_SERVERS": "b:9093",
        "STREAMKM_KAFKA__SECURITY_PROTOCOL": "SSL",
        "STREAMKM_KAFKA__SSL_CAFILE": str(cert),
        "STREAMKM_KAFKA__SSL_CERTFILE": str(cert),
        "STREAMKM_KAFKA__SSL_KEYFILE": str(key),
    }
    kw = load_settings(env=env).kafka.client_kwargs()
    assert isinstance(kw["ssl_context"], ssl.SSLContext)
    assert kw["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert kw["security_protocol"] == "SSL" and "sasl_mechanism" not in kw
    # the CA we gave is loaded into the context
    assert any("streamkm-test" in str(c.get("subject")) for c in kw["ssl_context"].get_ca_certs())

    env2 = dict(env, STREAMKM_KAFKA__SECURITY_PROTOCOL="SASL_SSL",
                STREAMKM_KAFKA__SASL_MECHANISM="SCRAM-SHA-256",
                STREAMKM_KAFKA__SASL_PLAIN_USERNAME="bob", STREAMKM_KAFKA__SASL_PLAIN_PASSWORD="pw")
    kw2 = load_settings(env=env2).kafka.client_kwargs()
    assert isinstance(kw2["ssl_context"], ssl.SSLContext)
    assert kw2["sasl_mechanism"] == "SCRAM-SHA-256" and kw2["sasl_plain_password"] == "pw"


def test_ssl_cert_without_key_rejected(pem_files):
    cert, _ = pem_files
    env = {"STREAMKM_KAFKA__SECURITY_PROTOCOL": "SSL", "STREAMKM_KAFKA__SSL_CERTFILE": str(cert)}
    with pytest.raises(ConfigError) as ei:
        load_settings(env=env)
    assert "kafka.ssl_keyfile" in [k for k, _ in ei.value.problems]


def test_helper_kwargs():
    s = load_settings(env={"STREAMKM_MODEL__HALF_LIFE": "50", "STREAMKM_DRIFT__METHOD": "kswin",
                           "STREAMKM_DRIFT__PARAMS": '{"alpha": 0.001}', "STREAMKM_DRIFT__SEED": "9"})
    kw = s.model.estimator_kwargs()
    assert kw["half_life"] == 50.0 and kw["n_clusters"] == 8 and "init_size" not in kw
    assert s.drift.monitor_kwargs() == {"method": "kswin", "max_history": 10_000, "alpha": 0.001, "seed": 9}
    wk = s.sequence.windower_kwargs()
    assert wk["kind"] == "tumbling" and wk["size"] == s.sequence.window_size


def test_default_toml_is_generated_from_the_model():
    from streamkm.config import default_toml

    assert DEFAULT_TOML.read_text() == default_toml(), (
        "configs/default.toml is stale: regenerate with "
        "python -c 'from streamkm.config import default_toml; print(default_toml(), end=\"\")' > configs/default.toml")


def test_kwargs_construct_the_real_estimators():
    import numpy as np

    from streamkm.cluster.streaming_kmeans import StreamingKMeans
    from streamkm.drift import DriftMonitor
    from streamkm.sequence.windows import EventWindower

    s = load_settings(env={"STREAMKM_MODEL__N_CLUSTERS": "3", "STREAMKM_SEQUENCE__WINDOW_KIND": "sliding",
                           "STREAMKM_SEQUENCE__WINDOW_STRIDE": "4", "STREAMKM_DRIFT__METHOD": "kswin"})
    km = StreamingKMeans(**s.model.estimator_kwargs())
    assert km.n_clusters == 3 and km.seed == 0 and km.dying_threshold == s.model.dying_threshold
    km.partial_fit(np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32))
    w = EventWindower(2, **s.sequence.windower_kwargs())
    assert w.kind == "sliding" and w.stride == 4 and w.size == s.sequence.window_size
    mon = DriftMonitor(**s.drift.monitor_kwargs())
    assert mon.method == "kswin" and mon.params["seed"] == s.drift.seed


def test_group_model_in_the_embedded_demo_needs_no_input_dimension():
    """The embedded demo's only records are its producer's: validation lets it through, and
    ``streamkm run`` takes worker.demo_n_features (Settings.demo_dimension)."""
    s = load_settings(None, env={"STREAMKM_GROUP__ENABLED": "true", "STREAMKM_WORKER__DEMO_N_FEATURES": "5"})
    assert s.demo_fed and s.demo_dimension() == 5
    # Validation leaves it unset: an offline replay of this config takes the recording's width.
    assert s.input.dimension is None
    # A dimension given is kept, even in the demo (its records of another width are dead-lettered).
    s = load_settings(None, env={"STREAMKM_GROUP__ENABLED": "true", "STREAMKM_INPUT__DIMENSION": "3"})
    assert s.input.dimension == 3 and s.demo_dimension() is None
    # The per-worker model takes the width from the first valid record, in the demo too.
    assert load_settings(None, env={"STREAMKM_GROUP__ENABLED": "false"}).demo_dimension() is None


@pytest.mark.parametrize("env", [
    {"STREAMKM_KAFKA__BOOTSTRAP_SERVERS": "broker:9092"},  # records from anywhere
    {"STREAMKM_WORKER__DEMO_PRODUCER": "false"},  # embedded, but fed by someone else
])
def test_group_model_needs_input_dimension_outside_the_demo(env):
    """'run' and 'config check' refuse it (Settings.run_problems); loading alone does not, since
    produce, record, replay and model need no dimension."""
    s = load_settings(None, env={"STREAMKM_GROUP__ENABLED": "true", **env})
    assert [k for k, _ in s.run_problems()] == ["input.dimension"]
    assert "required when group.enabled" in s.run_problems()[0][1]
    assert not load_settings(None, env={"STREAMKM_GROUP__ENABLED": "false", **env}).run_problems()
    assert not load_settings(None, env={"STREAMKM_INPUT__DIMENSION": "4", **env}).run_problems()


@pytest.mark.parametrize("env, key", [
    ({"STREAMKM_OUTPUT__TOPIC": "streamkm.model"}, "group.model_topic"),  # <group_id>.model by default
    ({"STREAMKM_DLQ__TOPIC": "streamkm.stats"}, "group.stats_topic"),
    ({"STREAMKM_GROUP__MODEL_TOPIC": "s", "STREAMKM_GROUP__STATS_TOPIC": "s"}, "group.model_topic"),
    ({"STREAMKM_GROUP__STATS_TOPIC": "streamkm.vectors"}, "group.stats_topic"),
])
def test_the_group_topics_differ_from_every_other_topic(env, key):
    """The group model is the default, so its topics are checked for every configuration that
    does not say group.enabled = false."""
    with pytest.raises(ConfigError, match=f"{re.escape(key)}: must differ"):
        load_settings(None, env=env)
    load_settings(None, env={**env, "STREAMKM_GROUP__ENABLED": "false"})

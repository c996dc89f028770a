"""The security settings of ``[metrics]`` (HTTPS, client certificates, basic auth) and of
``[kafka]`` for SASL OAUTHBEARER: validation naming the key, masking, and the arguments they build."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from streamkm.config import ConfigError, load_settings
from streamkm.ops.http import HealthServer

PASSWORD = "metrics-hunter2"


@pytest.fixture(scope="module")
def pem(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("pem")
    key, cert = d / "server.key", d / "server.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True, timeout=60)
    return cert, key


def _metrics_env(pem, **extra: str) -> dict[str, str]:
    cert, key = pem
    return {"STREAMKM_METRICS__TLS_CERTFILE": str(cert), "STREAMKM_METRICS__TLS_KEYFILE": str(key), **extra}


def _problem_keys(env: dict[str, str]) -> tuple[list[str], str]:
    with pytest.raises(ConfigError) as ei:
        load_settings(env=env)
    return [k for k, _ in ei.value.problems], str(ei.value)


# ------------------------------------------------------------------ [metrics]
def test_defaults_serve_plain_http_without_credentials():
    m = load_settings(env={}).metrics
    assert m.tls_certfile is None and m.basic_auth_username is None and m.protect_probes is False
    assert m.server_kwargs() == {"tls_certfile": None, "tls_keyfile": None, "tls_client_cafile": None,
                                 "basic_auth": None, "protect_probes": False,
                                 "max_connections": 64, "request_timeout_seconds": 10.0}


def test_connection_bounds_are_settings_handed_to_the_server():
    s = load_settings(env={"STREAMKM_METRICS__MAX_CONNECTIONS": "5",
                           "STREAMKM_METRICS__REQUEST_TIMEOUT_SECONDS": "2.5"})
    srv = HealthServer(None, port=0, **s.metrics.server_kwargs())
    assert (srv.max_connections, srv.request_timeout_seconds) == (5, 2.5)
    for env, key in [({"STREAMKM_METRICS__MAX_CONNECTIONS": "0"}, "metrics.max_connections"),
                     ({"STREAMKM_METRICS__REQUEST_TIMEOUT_SECONDS": "0"}, "metrics.request_timeout_seconds")]:
        with pytest.raises(ConfigError) as ei:
            load_settings(env=env)
        assert [k for k, _ in ei.value.problems] == [key]


def test_https_with_basic_auth_builds_the_server_arguments(pem):
    cert, key = pem
    s = load_settings(env=_metrics_env(pem, STREAMKM_METRICS__TLS_CLIENT_CAFILE=str(cert),
                                       STREAMKM_METRICS__BASIC_AUTH_USERNAME="prom",
                                       STREAMKM_METRICS__BASIC_AUTH_PASSWORD=PASSWORD,
                                       STREAMKM_METRICS__PROTECT_PROBES="true"))
    kw = s.metrics.server_kwargs()
    assert kw == {"tls_certfile": cert, "tls_keyfile": key, "tls_client_cafile": cert,
                  "basic_auth": ("prom", PASSWORD), "protect_probes": True,
                  "max_connections": 64, "request_timeout_seconds": 10.0}
    srv = HealthServer(None, port=0, **kw)  # what `streamkm run` builds from them
    assert isinstance(srv.ssl_context, ssl.SSLContext) and srv.ssl_context.verify_mode == ssl.CERT_OPTIONAL
    assert srv.require_client_cert and srv.protect_probes


@pytest.mark.parametrize("extra, drop, key, words", [
    ({}, "STREAMKM_METRICS__TLS_KEYFILE", "metrics.tls_keyfile", "set together"),
    ({}, "STREAMKM_METRICS__TLS_CERTFILE", "metrics.tls_certfile", "set together"),
    ({"STREAMKM_METRICS__TLS_CERTFILE": "/nonexistent/metrics.pem"}, None, "metrics.tls_certfile", "file not found"),
    ({"STREAMKM_METRICS__TLS_CLIENT_CAFILE": "/nonexistent/ca.pem"}, None, "metrics.tls_client_cafile",
     "file not found"),
    ({"STREAMKM_METRICS__BASIC_AUTH_USERNAME": "prom"}, None, "metrics.basic_auth_password", "set together"),
    ({"STREAMKM_METRICS__BASIC_AUTH_PASSWORD": PASSWORD}, None, "metrics.basic_auth_username", "set together"),
    ({"STREAMKM_METRICS__BASIC_AUTH_USERNAME": "pr:om", "STREAMKM_METRICS__BASIC_AUTH_PASSWORD": PASSWORD}, None,
     "metrics.basic_auth_username", "must not contain ':'"),
    ({"STREAMKM_METRICS__PROTECT_PROBES": "true"}, None, "metrics.protect_probes", "nothing to protect"),
])
def test_metrics_security_errors_name_the_key(pem, extra, drop, key, words):
    env = _metrics_env(pem, **extra)
    if drop:
        del env[drop]
    keys, text = _problem_keys(env)
    assert key in keys, text
    assert words in text and PASSWORD not in text


@pytest.mark.parametrize("extra, key, words", [
    ({"STREAMKM_METRICS__BASIC_AUTH_USERNAME": "prom", "STREAMKM_METRICS__BASIC_AUTH_PASSWORD": PASSWORD},
     "metrics.basic_auth_username", "needs HTTPS"),
    ({"STREAMKM_METRICS__TLS_CLIENT_CAFILE": "{cert}"}, "metrics.tls_client_cafile", "need HTTPS"),
])
def test_credentials_without_https_are_refused(pem, extra, key, words):
    env = {k: v.format(cert=pem[0]) for k, v in extra.items()}
    keys, text = _problem_keys(env)
    assert key in keys and words in text and PASSWORD not in text


def test_blank_values_mean_unset(pem):
    s = load_settings(env={"STREAMKM_METRICS__TLS_CERTFILE": "", "STREAMKM_METRICS__BASIC_AUTH_PASSWORD": " "})
    assert s.metrics.tls_certfile is None and s.metrics.basic_auth_password is None


def test_config_check_masks_the_metrics_password(pem, tmp_path):
    cert, key = pem
    f = tmp_path / "c.toml"
    f.write_text(f'[metrics]\ntls_certfile = "{cert}"\ntls_keyfile = "{key}"\nbasic_auth_username = "prom"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}
    env["STREAMKM_METRICS__BASIC_AUTH_PASSWORD"] = PASSWORD
    out = subprocess.run([sys.executable, "-m", "streamkm", "config", "check", str(f)], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert PASSWORD not in out.stdout + out.stderr
    cfg = json.loads(out.stdout)["metrics"]
    assert cfg["basic_auth_password"] == "**********" and cfg["basic_auth_username"] == "prom"
    assert cfg["tls_certfile"] == str(cert)
    red = load_settings(f, env={"STREAMKM_METRICS__BASIC_AUTH_PASSWORD": PASSWORD})
    assert PASSWORD not in repr(red) and PASSWORD not in repr(red.redacted_dict())


# ------------------------------------------------------------------ [kafka] OAUTHBEARER
def _oauth(**extra: str) -> dict[str, str]:
    return {"STREAMKM_KAFKA__BOOTSTRAP_SERVERS": "b:9093", "STREAMKM_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "STREAMKM_KAFKA__SASL_MECHANISM": "OAUTHBEARER", **extra}


def test_oauthbearer_needs_no_username_or_password(tmp_path):
    f = tmp_path / "token"
    f.write_text("abc")
    s = load_settings(env=_oauth(STREAMKM_KAFKA__SASL_OAUTH_TOKEN_FILE=str(f)))
    assert s.kafka.sasl_plain_username is None and s.kafka.sasl_oauth_token_file == f
    assert s.redacted_dict()["kafka"]["sasl_oauth_token_file"] == str(f)


@pytest.mark.parametrize("extra, key, words", [
    ({}, "kafka.sasl_oauth_token_file", "needs a token"),
    ({"STREAMKM_KAFKA__SASL_OAUTH_TOKEN_FILE": "/nonexistent/token"}, "kafka.sasl_oauth_token_file",
     "file not found"),
    ({"STREAMKM_KAFKA__SASL_OAUTH_TOKEN_FILE": "{file}", "STREAMKM_KAFKA__SASL_OAUTH_TOKEN_COMMAND": "true"},
     "kafka.sasl_oauth_token_command", "only one"),
    ({"STREAMKM_KAFKA__SASL_OAUTH_TOKEN_COMMAND": "streamkm-no-such-token-helper --json"},
     "kafka.sasl_oauth_token_command", "program not found"),
    ({"STREAMKM_KAFKA__SASL_OAUTH_TOKEN_COMMAND": "get-token 'unbalanced"}, "kafka.sasl_oauth_token_command",
     "cannot split"),
    ({"STREAMKM_KAFKA__SASL_OAUTH_TOKEN_COMMAND": "true", "STREAMKM_KAFKA__SASL_OAUTH_TOKEN_TIMEOUT_SECONDS": "0"},
     "kafka.sasl_oauth_token_timeout_seconds", ""),
])
def test_oauthbearer_errors_name_the_key(tmp_path, extra, key, words):
    f = tmp_path / "token"
    f.write_text("abc")
    keys, text = _problem_keys(_oauth(**{k: v.format(file=f) for k, v in extra.items()}))
    assert key in keys, text
    assert words in text


def test_plain_and_scram_still_need_username_and_password():
    keys, text = _problem_keys(_oauth(STREAMKM_KAFKA__SASL_MECHANISM="SCRAM-SHA-256",
                                      STREAMKM_KAFKA__SASL_OAUTH_TOKEN_COMMAND="true"))
    assert "kafka.sasl_plain_username" in keys and "SCRAM-SHA-256" in text


def test_oauth_settings_are_ignored_without_sasl():
    kw = load_settings(env={"STREAMKM_KAFKA__BOOTSTRAP_SERVERS": "b:9092",
                            "STREAMKM_KAFKA__SASL_MECHANISM": "OAUTHBEARER"}).kafka.client_kwargs()
    assert not any(k.startswith("sasl") for k in kw)


def test_config_check_shows_the_token_commands_program_only(tmp_path):
    from streamkm.config import load_settings

    token = tmp_path / "helper"
    token.write_text("#!/bin/sh\necho t\n")
    token.chmod(0o755)
    s = load_settings(env={"STREAMKM_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9092",
                           "STREAMKM_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                           "STREAMKM_KAFKA__SASL_MECHANISM": "OAUTHBEARER",
                           "STREAMKM_KAFKA__SASL_OAUTH_TOKEN_COMMAND": f"{token} --client-secret hunter2"})
    shown = s.redacted_dict()["kafka"]["sasl_oauth_token_command"]
    assert shown == f"{token} **********" and "hunter2" not in repr(s.redacted_dict())

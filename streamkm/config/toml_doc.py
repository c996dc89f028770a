"""Render ``configs/default.toml`` from the settings model: every key, its default, its description.

``python -c 'from streamkm.config import default_toml; print(default_toml(), end="")' > configs/default.toml``
regenerates the file; a test checks that it is current.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, SecretStr

from streamkm.config.settings import Settings, load_settings

__all__ = ["default_toml"]

# Example values shown (commented out) for keys whose default is unset.
_EXAMPLES: dict[str, str] = {
    "bootstrap_servers": '"localhost:9092"',
    "ssl_cafile": '"/etc/streamkm/ca.pem"',
    "ssl_certfile": '"/etc/streamkm/client.pem"',
    "ssl_keyfile": '"/etc/streamkm/client.key"',
    "ssl_password": '"..."  # prefer STREAMKM_KAFKA__SSL_PASSWORD',
    "sasl_plain_username": '"streamkm"',
    "sasl_plain_password": '"..."  # prefer STREAMKM_KAFKA__SASL_PLAIN_PASSWORD',
    "sasl_oauth_token_file": '"/var/run/secrets/kafka/token"',
    "sasl_oauth_token_command": '"/usr/local/bin/kafka-token --audience kafka"',
    "tls_certfile": '"/etc/streamkm/metrics.pem"',
    "tls_keyfile": '"/etc/streamkm/metrics.key"',
    "tls_client_cafile": '"/etc/streamkm/scraper-ca.pem"',
    "basic_auth_username": '"prometheus"',
    "basic_auth_password": '"..."  # prefer STREAMKM_METRICS__BASIC_AUTH_PASSWORD',
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
    "stats_topic": '"streamkm.stats"',
    "model_topic": '"streamkm.model"',
    "events_topic": '"streamkm.cluster-events"',
    "identity_threshold": "1.0",
}

_TOML_HEADER = """\
# streamkm default configuration (generated from streamkm/config/toml_doc.py: default_toml()).
#
# Every key is listed with its default. Keys whose default is unset are shown
# commented out with an example value (TOML has no null). Override any key from
# the environment as STREAMKM_<SECTION>__<KEY>, e.g. STREAMKM_MODEL__N_CLUSTERS=5
# or STREAMKM_SEQUENCE__MODEL__SEED=3; the environment wins over this file.
# Check a file with: streamkm config check FILE
"""


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (str, Path)):
        return json.dumps(str(v))
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }" if v else "{}"
    raise TypeError(f"cannot render {v!r} as TOML")


def _toml_section(name: str, model: BaseModel) -> list[str]:
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

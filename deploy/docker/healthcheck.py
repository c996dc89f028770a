"""HEALTHCHECK of the streamkm image: ``GET /healthz`` on the worker's metrics address.

Exit status 0 when ``/healthz`` answers 200, 1 otherwise (Docker's "healthy" and
"unhealthy"). ``/healthz`` is liveness only: a worker waiting for its broker is
still healthy (``/readyz`` says whether it consumes).

The address is the one the worker binds, resolved the way ``streamkm.config`` does
for these keys, highest priority first:

1. ``STREAMKM_METRICS__PORT`` / ``STREAMKM_METRICS__HOST`` / ``STREAMKM_METRICS__ENABLED``
   (names are case-insensitive, as in the settings loader);
2. ``[metrics]`` ``port`` / ``host`` / ``enabled`` in the TOML file named by
   ``STREAMKM_CONFIG``;
3. the defaults, ``127.0.0.1:9108``.

With ``tls_certfile`` set the check speaks HTTPS (the worker's own certificate is
not verified: the check talks to its own container, whose certificate need not name
loopback), and with ``protect_probes`` it sends ``basic_auth_username`` /
``basic_auth_password`` (a probe protected by client certificates alone cannot be
checked this way). A wildcard host (``0.0.0.0``, ``::``) is checked on loopback; a whole section given
as JSON (``STREAMKM_METRICS='{"port": 9200}'``) is not followed. Standard library only:
the check runs every few seconds and must not pay for importing the daemon's stack
(about half a CPU second). tests/deploy/test_artifacts.py checks this resolution
against the real settings loader.
"""

from __future__ import annotations

import base64
import os
import ssl
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9108
TIMEOUT_SECONDS = 4.0
_FALSE = {"0", "false", "f", "no", "n", "off"}
_WILDCARD = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def _env(environ: Mapping[str, str], name: str) -> str | None:
    for key, value in environ.items():
        if key.upper() == name:
            return value
    return None


def metrics_address(environ: Mapping[str, str]) -> tuple[str, int, bool]:
    """``(host to connect to, port, enabled)`` of the worker's metrics server."""
    section = _metrics_section(environ)
    host = str(_env(environ, "STREAMKM_METRICS__HOST") or section.get("host", DEFAULT_HOST))
    port = int(_env(environ, "STREAMKM_METRICS__PORT") or section.get("port", DEFAULT_PORT))
    enabled_env = _env(environ, "STREAMKM_METRICS__ENABLED")
    enabled = enabled_env.strip().lower() not in _FALSE if enabled_env else bool(section.get("enabled", True))
    return _WILDCARD.get(host, host), port, enabled


def _metrics_section(environ: Mapping[str, str]) -> dict[str, Any]:
    path = _env(environ, "STREAMKM_CONFIG")
    if not path:
        return {}
    with open(path, "rb") as f:
        return dict(tomllib.load(f).get("metrics", {}))


def probe_security(environ: Mapping[str, str]) -> tuple[bool, tuple[str, str] | None]:
    """``(HTTPS?, basic-auth credentials to send or None)``, resolved like :func:`metrics_address`."""
    section = _metrics_section(environ)

    def value(key: str) -> Any:
        got = _env(environ, f"STREAMKM_METRICS__{key.upper()}")
        return got if got is not None else section.get(key)

    https = bool(value("tls_certfile"))
    protect = value("protect_probes")
    protect = protect.strip().lower() not in _FALSE if isinstance(protect, str) else bool(protect)
    user, password = value("basic_auth_username"), value("basic_auth_password")
    return https, (str(user), str(password)) if protect and user and password is not None else None


def main() -> int:
    try:
        host, port, enabled = metrics_address(os.environ)
        https, credentials = probe_security(os.environ)
    except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
        print(f"healthcheck: cannot read the metrics address: {exc}", file=sys.stderr)
        return 1
    if not enabled:
        print("healthcheck: metrics.enabled = false, so there is no /healthz to check", file=sys.stderr)
        return 1
    url = f"{'https' if https else 'http'}://{f'[{host}]' if ':' in host else host}:{port}/healthz"
    request = urllib.request.Request(url)
    if credentials is not None:
        token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    context = None
    if https:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS, context=context) as response:
            ok = response.status == 200
    except (OSError, urllib.error.URLError) as exc:  # HTTPError (503) is a URLError
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

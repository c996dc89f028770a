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

A wildcard host (``0.0.0.0``, ``::``) is checked on loopback; a whole section given
as JSON (``STREAMKM_METRICS='{"port": 9200}'``) is not followed. Standard library only:
the check runs every few seconds and must not pay for importing the daemon's stack
(about half a CPU second). tests/deploy/test_artifacts.py checks this resolution
against the real settings loader.
"""

from __future__ import annotations

import os
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
    section: dict[str, Any] = {}
    path = _env(environ, "STREAMKM_CONFIG")
    if path:
        with open(path, "rb") as f:
            section = tomllib.load(f).get("metrics", {})
    host = str(_env(environ, "STREAMKM_METRICS__HOST") or section.get("host", DEFAULT_HOST))
    port = int(_env(environ, "STREAMKM_METRICS__PORT") or section.get("port", DEFAULT_PORT))
    enabled_env = _env(environ, "STREAMKM_METRICS__ENABLED")
    enabled = enabled_env.strip().lower() not in _FALSE if enabled_env else bool(section.get("enabled", True))
    return _WILDCARD.get(host, host), port, enabled


def main() -> int:
    try:
        host, port, enabled = metrics_address(os.environ)
    except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
        print(f"healthcheck: cannot read the metrics address: {exc}", file=sys.stderr)
        return 1
    if not enabled:
        print("healthcheck: metrics.enabled = false, so there is no /healthz to check", file=sys.stderr)
        return 1
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            ok = response.status == 200
    except (OSError, urllib.error.URLError) as exc:  # HTTPError (503) is a URLError
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

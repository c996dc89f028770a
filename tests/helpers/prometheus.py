"""A real Prometheus server for tests: the Debian ``prometheus`` binary on a free
127.0.0.1 port with its own temporary data directory and a generated config.

Missing binaries fail the test when ``$CI`` is set and skip it otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

__all__ = ["require_prometheus_binary", "PrometheusServer"]


def require_prometheus_binary(name: str) -> str:
    """Path of ``name`` (prometheus/promtool); fail under $CI, else skip."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if path is None:
        msg = f"{name} not found (Debian package 'prometheus')"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


class PrometheusServer:
    """A running Prometheus: ``url``, ``query(expr)``, ``wait_for_scrapes()``, ``stop()``."""

    def __init__(self, binary: str, workdir: Path, targets: list[str], rule_files=(),
                 scrape_interval: str = "1s", scrape_configs: list[dict] | None = None) -> None:
        """``scrape_configs`` (Prometheus' own schema) replaces the one ``streamkm`` job over *targets*."""
        self.workdir = workdir
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval,
                       "scrape_timeout": scrape_interval},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": scrape_configs if scrape_configs is not None else
            [{"job_name": "streamkm", "static_configs": [{"targets": list(targets)}]}],
        }
        cfg = workdir / "prometheus.yml"
        cfg.write_text(json.dumps(config))  # JSON is valid YAML
        self.log_path = workdir / "prometheus.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
             "--storage.tsdb.retention.time=1h"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        self._wait_ready(30.0)

    def _get(self, path: str, params: dict | None = None, timeout: float = 10.0):
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.request.HTTPError as e:  # 4xx/5xx carry a JSON error body
            return e.code, e.read()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if self._get("/-/ready", timeout=1.0)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus did not become ready: {self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def api(self, path: str, **params) -> dict:
        status, body = self._get("/api/v1/" + path, params)
        out = json.loads(body)
        out["http_status"] = status
        return out

    def query(self, expr: str) -> dict:
        """``/api/v1/query`` result dict (``status``, ``data``/``error``)."""
        return self.api("query", query=expr)

    def wait_for_scrapes(self, n: int = 3, timeout: float = 30.0) -> None:
        """Block until every target is up and has been scraped ``n`` times."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.query("min(count_over_time(up[5m])) and min(up) == 1")
            res = r.get("data", {}).get("result", [])
            if res and float(res[0]["value"][1]) >= n:
                return
            time.sleep(0.3)
        raise TimeoutError(f"targets not scraped {n} times: {self.api('targets')}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()

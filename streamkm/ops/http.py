"""HTTP endpoints for operators: ``/metrics``, ``/healthz`` and ``/readyz``.

A small WSGI app served by a threaded :mod:`wsgiref` server in a daemon thread
(the way :func:`prometheus_client.start_wsgi_server` does it), so a scrape never
waits for the event loop and a busy loop never delays a scrape.

- ``/metrics`` — :func:`prometheus_client.make_wsgi_app` for the registry:
  text format 0.0.4 or OpenMetrics negotiated from ``Accept``, gzip when the
  scraper accepts it, ``name[]`` filters.
- ``/healthz`` — liveness. :meth:`HealthServer.start` runs a heartbeat task on
  the event loop that records a monotonic timestamp every 0.5 s; ``/healthz``
  answers 503 when the loop has not ticked for ``liveness_timeout_seconds``
  (a blocked or dead loop) or when the optional ``live`` callable is false,
  else 200. It never depends on the broker.
- ``/readyz`` — readiness: ``ready()`` (the worker's ``is_ready()``: partitions
  assigned, model restored, fetching). 200 when true, 503 otherwise.

``ready`` and ``live`` are called on the server's threads: they must be cheap,
read-only checks.

HTTPS and credentials (all optional, see docs/security.md):

- ``tls_certfile`` + ``tls_keyfile`` serve HTTPS (TLS 1.2 or later). The
  handshake runs on the connection's own thread with the read timeout, not in
  the accept loop, so a client that connects and stays silent cannot hold up
  other scrapes or probes (prometheus-client's ``start_http_server(certfile=...)``
  handshakes in the accept loop, serves only the registry and has no basic auth,
  hence this server). A plain-HTTP request to the HTTPS port gets a plain
  ``400`` saying so.
- ``tls_client_cafile``: a client certificate is verified against this CA
  bundle when one is presented (``CERT_OPTIONAL``), and the protected paths
  answer ``403`` without a verified one.
- ``basic_auth=(username, password)``: the protected paths answer ``401`` with
  a ``WWW-Authenticate: Basic`` challenge unless the request carries these
  credentials. Only SHA-256 digests of them are kept, compared in constant time
  (:func:`hmac.compare_digest`).
- Protected are every path except ``/healthz`` and ``/readyz``, which stay open
  for Kubernetes probes (an ``httpGet`` probe sends neither a password nor a
  client certificate); ``protect_probes=True`` protects them too.

Bounds (so that slow or idle clients cannot take the server down):

- ``max_connections`` connections are served at once, one thread each; the accept
  loop answers one more with a plain ``503`` (HTTP) or closes it (HTTPS) at once,
  without a thread.
- ``request_timeout_seconds`` is the deadline of a whole connection, from accept to
  the end of the reply: a reaper thread shuts the socket down when it passes, which
  ends the connection's thread whatever it was waiting for (a TLS handshake, a
  request trickled a byte at a time, a client that does not read the reply). Each
  read also times out after 10 s without data.

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
import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import os
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

__all__ = ["HealthServer"]

log = logging.getLogger(__name__)

_READ_TIMEOUT_S = 10.0
_REAP_INTERVAL_S = 0.1  # how late past its deadline a connection may be cut
_TICK_SECONDS = 0.5
_TEXT = "text/plain; charset=utf-8"
_STATUS = {
    200: "200 OK",
    401: "401 Unauthorized",
    403: "403 Forbidden",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}

_StartResponse = Callable[..., Any]
_OPEN_PROBES = frozenset({"/healthz", "/readyz"})
_CLIENT_CERT = "streamkm.client_cert"  # WSGI environ key: a verified client certificate was presented
_PLAIN_HTTP_REPLY = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     b"Content-Length: 48\r\nConnection: close\r\n\r\n"
                     b"Client sent an HTTP request to an HTTPS server.\n")
_BUSY_BODY = b"too many connections, retry later\n"
_BUSY_REPLY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
               b"Content-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\nRetry-After: 1\r\n"
               b"Connection: close\r\n\r\n" + _BUSY_BODY)


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
        return source  # type: ignore[no-any-return]
    raise TypeError(
        "expected a prometheus_client CollectorRegistry or an object with a "
        f"'registry' attribute (e.g. streamkm.ops.metrics.Metrics), got {type(source).__name__}"
    )


class _QuietHandler(WSGIRequestHandler):
    """One request per connection, no per-request log lines, a read timeout for idle clients."""

    timeout = _READ_TIMEOUT_S
    # Malformed request lines get a full "HTTP/1.1 400" status line (the stdlib
    # default treats them as HTTP/0.9 and sends the error page without one).
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def get_environ(self) -> dict[str, Any]:
        env: dict[str, Any] = super().get_environ()
        if isinstance(self.connection, ssl.SSLSocket):
            env["HTTPS"] = "on"
            # CERT_OPTIONAL: a presented certificate was verified in the handshake
            env[_CLIENT_CERT] = bool(self.connection.getpeercert())
        return env


class _Conn:
    """One served connection: its socket (the TLS one once wrapped) and its deadline."""

    __slots__ = ("sock", "deadline", "done", "expired", "_lock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.done = False
        self.expired = False
        self._lock = threading.Lock()

    def swap(self, sock: socket.socket) -> None:
        """The connection now uses *sock* (wrapped in TLS: the old object has lost its descriptor)."""
        with self._lock:
            self.sock = sock
            if self.expired:  # the deadline passed while the old object was being detached
                _shut(sock)

    def expire(self) -> bool:
        """Cut the connection (its thread's blocked read or write ends); False if it had ended."""
        with self._lock:
            if self.done or self.expired:
                return False
            self.expired = True
            _shut(self.sock)
            return True

    def finish(self) -> None:
        with self._lock:
            self.done = True


def _shut(sock: socket.socket) -> None:
    # socket.socket's own shutdown, also for an SSLSocket: it acts on the descriptor without
    # touching the TLS state another thread is using (a closed object has none: EBADF)
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    """A thread per connection, at most ``max_connections`` at once, each cut at its deadline;
    the threads never block interpreter exit."""

    daemon_threads = True
    # the listen backlog (socketserver's default is 5): a burst of connections waits for the
    # accept loop instead of having its SYNs dropped and retried a second or more later
    request_queue_size = 128
    ssl_context: ssl.SSLContext | None = None
    max_connections = 64
    request_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._conns: dict[socket.socket, _Conn] = {}
        self._conns_lock = threading.Lock()
        self._at_cap = False
        self.n_refused = 0
        self.n_expired = 0
        self._reaper_stop = threading.Event()
        self._reaper: threading.Thread | None = None
        super().__init__(*args, **kwargs)

    @property
    def n_open(self) -> int:
        """Connections being served now."""
        with self._conns_lock:
            return len(self._conns)

    def start_reaper(self) -> None:
        self._reaper = threading.Thread(target=self._reap, name="streamkm-http-deadlines", daemon=True)
        self._reaper.start()

    def stop_reaper(self) -> None:
        """Stop the reaper and cut every open connection (the server is shutting down)."""
        self._reaper_stop.set()
        if self._reaper is not None:
            self._reaper.join(5.0)
        with self._conns_lock:
            conns = list(self._conns.values())
        for conn in conns:
            conn.expire()

    def _reap(self) -> None:
        while not self._reaper_stop.wait(_REAP_INTERVAL_S):
            now = time.monotonic()
            with self._conns_lock:
                late = [c for c in self._conns.values() if c.deadline <= now]
            for conn in late:
                if conn.expire():
                    self.n_expired += 1
                    log.debug("health server: a connection passed its %.1f s deadline: cut", self.request_timeout)

    def process_request(self, request: Any, client_address: Any) -> None:
        # on the accept loop: refusing is a non-blocking send and a close, never a thread
        conn = _Conn(request, time.monotonic() + self.request_timeout)
        with self._conns_lock:
            busy = len(self._conns) >= self.max_connections
            first = busy and not self._at_cap
            if busy:
                self._at_cap = True
                self.n_refused += 1
            else:
                self._conns[request] = conn
        if busy:
            if first:  # once per episode at the cap, not once per refused connection
                log.warning("health server: %d connections open (metrics.max_connections): refusing new "
                            "ones until one ends", self.max_connections)
            self._refuse_busy(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def _refuse_busy(self, request: socket.socket) -> None:
        with contextlib.suppress(OSError):
            request.setblocking(False)
            if self.ssl_context is None:  # an HTTPS client could not read a plain reply
                request.send(_BUSY_REPLY)
        self.shutdown_request(request)

    def _forget(self, request: socket.socket) -> None:
        with self._conns_lock:
            conn = self._conns.pop(request, None)
            if len(self._conns) < self.max_connections:
                self._at_cap = False
        if conn is not None:
            conn.finish()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        key = request
        with self._conns_lock:
            conn = self._conns.get(key)
        try:
            # TLS: handshake here, on the connection's thread and with a timeout; the
            # accept loop never waits for a client.
            if self.ssl_context is not None:
                try:
                    request = self._wrap(request, conn)
                except OSError as exc:
                    log.debug("health server: TLS handshake with %s failed: %s", client_address, exc)
                    with contextlib.suppress(OSError):
                        request.close()
                    return
                if request is None:
                    return
            super().process_request_thread(request, client_address)
        finally:
            self._forget(key)

    def _wrap(self, sock: socket.socket, conn: _Conn | None) -> ssl.SSLSocket | None:
        assert self.ssl_context is not None
        sock.settimeout(_READ_TIMEOUT_S)
        first = sock.recv(1, socket.MSG_PEEK)
        if first and first != b"\x16":  # not a TLS handshake record: plain HTTP (or garbage)
            with contextlib.suppress(OSError):
                sock.sendall(_PLAIN_HTTP_REPLY)
                sock.shutdown(socket.SHUT_WR)
            sock.close()
            return None
        # handshake after the swap, so that the deadline can cut a handshake trickled slowly
        tls = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        if conn is not None:
            conn.swap(tls)
        try:
            tls.do_handshake()
        except BaseException:
            tls.close()
            raise
        return tls

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves socket.getfqdn(host), a DNS lookup
        # that can take seconds; SERVER_NAME only needs the address.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # idle clients timing out, resets: not worth a traceback on stderr
        log.debug("health server: error while answering %s", client_address, exc_info=True)


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
        Extra liveness check for ``/healthz``; without one, a ticking event
        loop means live.
    liveness_timeout_seconds : float, default 10.0
        ``/healthz`` answers 503 when the event loop's heartbeat is older.
    tls_certfile, tls_keyfile : str or path, optional
        Server certificate (PEM, with its chain) and private key: serve HTTPS.
        Both or neither.
    tls_client_cafile : str or path, optional
        CA bundle (PEM) for client certificates (mutual TLS); needs
        ``tls_certfile``. Protected paths then answer 403 without a verified
        client certificate.
    basic_auth : (username, password), optional
        Require HTTP basic auth on the protected paths (401 otherwise); needs
        ``tls_certfile``, so the password never crosses the network in clear.
        The username must not contain ``:``.
    protect_probes : bool, default False
        Also protect ``/healthz`` and ``/readyz`` (by default they stay open for
        probes that cannot authenticate). Needs ``basic_auth`` or
        ``tls_client_cafile``.
    max_connections : int, default 64
        Connections served at once; one more is answered ``503`` (HTTP) or closed
        (HTTPS) by the accept loop at once.
    request_timeout_seconds : float, default 10.0
        Deadline of a whole connection from accept to the end of the reply; a
        connection still open then is cut (within 0.1 s).

    Notes
    -----
    ``start()`` binds (an occupied port raises :class:`OSError`) and starts the
    server thread and the heartbeat task on the running loop; ``stop()`` is
    safe to call twice, and ``async with`` delegates to them. Exceptions raised
    by the ``ready``/``live`` callables are logged and reported as 503.
    """

    def __init__(
        self,
        registry: Any = None,
        *,
        host: str = "127.0.0.1",
        port: int = 9108,
        ready: Callable[[], bool] | None = None,
        live: Callable[[], bool] | None = None,
        liveness_timeout_seconds: float = 10.0,
        tls_certfile: str | os.PathLike[str] | None = None,
        tls_keyfile: str | os.PathLike[str] | None = None,
        tls_client_cafile: str | os.PathLike[str] | None = None,
        basic_auth: tuple[str, str] | None = None,
        protect_probes: bool = False,
        max_connections: int = 64,
        request_timeout_seconds: float = 10.0,
    ) -> None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer in [0, 65535], got {port!r}")
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty string, got {host!r}")
        for name, fn in (("ready", ready), ("live", live)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        if not liveness_timeout_seconds > 0:
            raise ValueError(f"liveness_timeout_seconds must be > 0, got {liveness_timeout_seconds!r}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ValueError(f"max_connections must be an integer >= 1, got {max_connections!r}")
        if (isinstance(request_timeout_seconds, bool) or not isinstance(request_timeout_seconds, (int, float))
                or not 0 < request_timeout_seconds < float("inf")):
            raise ValueError(f"request_timeout_seconds must be a finite number > 0, got {request_timeout_seconds!r}")
        if (tls_certfile is None) != (tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile must be given together, got "
                             f"tls_certfile={tls_certfile!r}, tls_keyfile={tls_keyfile!r}")
        tls = tls_certfile is not None
        if tls_client_cafile is not None and not tls:
            raise ValueError("tls_client_cafile needs tls_certfile and tls_keyfile (mutual TLS is part of HTTPS)")
        if basic_auth is not None:
            if (not isinstance(basic_auth, tuple) or len(basic_auth) != 2
                    or not all(isinstance(x, str) for x in basic_auth)):
                raise TypeError("basic_auth must be a (username, password) tuple of strings")
            if not basic_auth[0] or ":" in basic_auth[0]:
                raise ValueError("basic_auth: the username must be non-empty and contain no ':'")
            if not basic_auth[1]:
                raise ValueError("basic_auth: the password must be non-empty")
            if not tls:
                raise ValueError("basic_auth needs tls_certfile and tls_keyfile: without HTTPS the "
                                 "password would cross the network in clear text")
        if protect_probes and basic_auth is None and tls_client_cafile is None:
            raise ValueError("protect_probes needs basic_auth or tls_client_cafile: there is nothing "
                             "to protect the probes with")
        self.ssl_context = (_server_ssl_context(tls_certfile, tls_keyfile, tls_client_cafile)
                            if tls_certfile is not None and tls_keyfile is not None else None)
        self.require_client_cert = tls_client_cafile is not None
        # only digests are kept: the password is in no attribute, repr or log line
        self._auth_digests = (None if basic_auth is None
                              else (_digest(basic_auth[0].encode()), _digest(basic_auth[1].encode())))
        self.protect_probes = bool(protect_probes)
        self.registry = _resolve_registry(registry)
        self.host = host
        self.requested_port = port
        self.ready = ready
        self.live = live
        self.liveness_timeout_seconds = float(liveness_timeout_seconds)
        self.max_connections = max_connections
        self.request_timeout_seconds = float(request_timeout_seconds)
        self._metrics_app = make_wsgi_app(self.registry)
        self._server: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._port: int | None = None
        self._last_tick = time.monotonic()

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        """The bound port (meaningful after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("HealthServer is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9108`` (``https://`` with TLS)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def started(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._server is not None

    @property
    def connections(self) -> dict[str, int]:
        """``open`` (served now), ``refused`` (over ``max_connections``) and ``expired`` (cut at
        the deadline) connections since :meth:`start`; zeros when not started."""
        server = self._server
        if server is None:
            return {"open": 0, "refused": 0, "expired": 0}
        return {"open": server.n_open, "refused": server.n_refused, "expired": server.n_expired}

    async def start(self) -> None:
        """Bind, start the server thread and the loop heartbeat (idempotent).

        Raises
        ------
        OSError
            The address cannot be bound (port in use, unknown host, ...).
        """
        if self._server is not None:
            return
        server = await asyncio.to_thread(self._bind)
        port = int(server.server_address[1])
        thread = threading.Thread(target=server.serve_forever, name=f"streamkm-http-{port}", daemon=True)
        try:
            self._last_tick = time.monotonic()
            self._heartbeat = asyncio.get_running_loop().create_task(self._tick(), name="health-heartbeat")
            server.start_reaper()
            thread.start()
        except BaseException:
            if self._heartbeat is not None:
                self._heartbeat.cancel()
                self._heartbeat = None
            server.stop_reaper()
            server.server_close()
            raise
        self._server, self._thread, self._port = server, thread, port
        log.info("health server listening on %s (/metrics /healthz /readyz%s)", self.url, self._describe_auth())

    async def stop(self) -> None:
        """Stop listening and the heartbeat (safe to call twice)."""
        server, self._server = self._server, None
        if server is None:
            return
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        thread, self._thread = self._thread, None
        await asyncio.to_thread(server.shutdown)  # returns once serve_forever has
        await asyncio.to_thread(server.stop_reaper)  # and cuts the connections still open
        server.server_close()
        if thread is not None:
            await asyncio.to_thread(thread.join, 5.0)

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _bind(self) -> _ThreadingServer:
        infos = socket.getaddrinfo(self.host, self.requested_port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]

        class Server(_ThreadingServer):
            address_family = family
            ssl_context = self.ssl_context
            max_connections = self.max_connections
            request_timeout = self.request_timeout_seconds

        return make_server(str(sockaddr[0]), self.requested_port, self._app, Server,
                           handler_class=_QuietHandler)

    async def _tick(self) -> None:
        while True:
            self._last_tick = time.monotonic()
            await asyncio.sleep(_TICK_SECONDS)

    # ------------------------------------------------------------------ requests
    def _check(self, name: str, fn: Callable[[], bool] | None) -> bool:
        if fn is None:
            return True
        try:
            return bool(fn())
        except Exception:
            log.exception("health server: %s check raised", name)
            return False

    def _is_live(self) -> bool:
        stalled = time.monotonic() - self._last_tick
        if stalled > self.liveness_timeout_seconds:
            log.warning("health server: event loop has not ticked for %.1f s (limit %.1f s)",
                        stalled, self.liveness_timeout_seconds)
            return False
        return self._check("live", self.live)

    def _app(self, environ: dict[str, Any], start_response: _StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "")
        if self.protect_probes or path not in _OPEN_PROBES:
            refused = self._refuse(environ, start_response, method == "HEAD")
            if refused is not None:
                return refused
        if method not in ("GET", "HEAD"):
            return _reply(start_response, 405, b"method not allowed\n", head=False,
                          extra=[("Allow", "GET, HEAD")])
        head = method == "HEAD"
        if path == "/metrics":
            return self._metrics(environ, start_response, head)
        if path == "/healthz":
            if self._is_live():
                return _reply(start_response, 200, b"ok\n", head)
            return _reply(start_response, 503, b"not live\n", head)
        if path == "/readyz":
            if self._check("ready", self.ready):
                return _reply(start_response, 200, b"ready\n", head)
            return _reply(start_response, 503, b"not ready\n", head)
        if path == "/":
            return _reply(start_response, 200, b"streamkm: /metrics /healthz /readyz\n", head)
        return _reply(start_response, 404, b"not found\n", head)

    def _describe_auth(self) -> str:
        what = [w for w, on in (("client certificate", self.require_client_cert),
                                ("basic auth", self._auth_digests is not None)) if on]
        if not what:
            return ""
        scope = "every path" if self.protect_probes else "every path but /healthz and /readyz"
        return f"; {' and '.join(what)} required on {scope}"

    def _refuse(self, environ: dict[str, Any], start_response: _StartResponse, head: bool) -> list[bytes] | None:
        """The 403/401 reply when the request lacks the configured credentials, else None."""
        if self.require_client_cert and not environ.get(_CLIENT_CERT):
            return _reply(start_response, 403, b"client certificate required\n", head)
        if self._auth_digests is not None and not _basic_auth_ok(environ.get("HTTP_AUTHORIZATION"),
                                                                 self._auth_digests):
            log.debug("health server: unauthorized request for %s from %s",
                      environ.get("PATH_INFO", ""), environ.get("REMOTE_ADDR"))
            return _reply(start_response, 401, b"unauthorized\n", head,
                          extra=[("WWW-Authenticate", 'Basic realm="streamkm", charset="UTF-8"')])
        return None

    def _metrics(self, environ: dict[str, Any], start_response: _StartResponse, head: bool) -> Iterable[bytes]:
        captured: list[tuple[str, list[tuple[str, str]]]] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            captured.append((status, headers))

        try:
            # the library answers GET only; HEAD is a GET without the body
            body = b"".join(self._metrics_app({**environ, "REQUEST_METHOD": "GET"}, capture))
        except Exception:
            log.exception("health server: metrics collection failed")
            return _reply(start_response, 500, b"metrics collection failed\n", head)
        status, headers = captured[0]
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [b"" if head else body]


def _reply(start_response: _StartResponse, code: int, body: bytes, head: bool, *,
           extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    start_response(_STATUS[code], [("Content-Type", _TEXT), ("Content-Length", str(len(body))), *(extra or [])])
    return [b"" if head else body]


def _digest(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def _basic_auth_ok(header: str | None, digests: tuple[bytes, bytes]) -> bool:
    """True if *header* is ``Basic base64(user:password)`` with the expected credentials.

    Digests of equal length are compared with :func:`hmac.compare_digest`, the
    username and the password both, so the time taken tells nothing about
    which one, or how much of it, was wrong.
    """
    if not header:
        return False
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, sep, password = decoded.partition(b":")
    if not sep:
        return False
    user_ok = hmac.compare_digest(_digest(user), digests[0])
    password_ok = hmac.compare_digest(_digest(password), digests[1])
    return user_ok & password_ok


def _server_ssl_context(certfile: str | os.PathLike[str], keyfile: str | os.PathLike[str],
                        client_cafile: str | os.PathLike[str] | None) -> ssl.SSLContext:
    """A TLS 1.2+ server context; ValueError naming the file that cannot be loaded."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # a password callback keeps OpenSSL from prompting on the terminal for an encrypted key
        ctx.load_cert_chain(certfile=os.fspath(certfile), keyfile=os.fspath(keyfile), password=_no_password)
    except (OSError, ssl.SSLError, _EncryptedKey) as exc:
        raise ValueError(f"cannot load the TLS certificate {os.fspath(certfile)!r} with the key "
                         f"{os.fspath(keyfile)!r}: {_ssl_reason(exc)}") from None
    if client_cafile is not None:
        try:
            ctx.load_verify_locations(cafile=os.fspath(client_cafile))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load the client CA bundle {os.fspath(client_cafile)!r}: "
                             f"{_ssl_reason(exc)}") from None
        ctx.verify_mode = ssl.CERT_OPTIONAL  # verified when presented; paths decide if required
    return ctx


class _EncryptedKey(Exception):
    pass


def _no_password() -> bytes:
    raise _EncryptedKey("the key is encrypted: give an unencrypted key (readable by this user only)")


_SSL_REASONS = {
    "KEY_VALUES_MISMATCH": "the key does not belong to the certificate",
    "NO_CERTIFICATE_OR_CRL_FOUND": "no PEM certificate found in it",
}


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, _EncryptedKey):
        return str(exc)
    if isinstance(exc, ssl.SSLError):
        if exc.reason in _SSL_REASONS:
            return _SSL_REASONS[exc.reason]
        if "PEM lib" in str(exc):
            return "not a PEM certificate and its key"
        return str(exc.reason or exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)

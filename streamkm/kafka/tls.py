"""Why a TLS connection to the broker failed, in words an operator can act on.

aiokafka reports a rejected TLS handshake as "Unable to bootstrap" or "Connection ...
closed": with TLS 1.3 the broker's verdict on the client certificate arrives as an alert
after the client's side of the handshake has completed, so the client only sees the socket
close. :func:`probe_tls` repeats the handshake with the same :class:`ssl.SSLContext`, reads
that alert, and names the cause.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

from aiokafka.errors import KafkaConnectionError

__all__ = ["probe_tls", "explain_connection_error"]

_ALERTS = (
    ("CERTIFICATE_REQUIRED", "the broker requires a client certificate: set kafka.ssl_certfile and "
                             "kafka.ssl_keyfile (mutual TLS)"),
    ("CERTIFICATE_EXPIRED", "the broker rejected the client certificate (kafka.ssl_certfile): it has expired"),
    ("UNKNOWN_CA", "the broker does not trust the client certificate's issuer (kafka.ssl_certfile)"),
    ("BAD_CERTIFICATE", "the broker rejected the client certificate (kafka.ssl_certfile)"),
    ("CERTIFICATE_REVOKED", "the broker rejected the client certificate (kafka.ssl_certfile): it is revoked"),
    ("WRONG_VERSION_NUMBER", "the broker does not speak TLS on this port (check kafka.security_protocol "
                             "and the port)"),
    ("HANDSHAKE_FAILURE", "the broker and streamkm share no TLS version or cipher"),
)


def _first_server(bootstrap_servers: str) -> tuple[str, int]:
    """``(host, port)`` of the first of ``host[:port][,...]`` (IPv6 as ``[::1]:9092``; port 9092
    when none is given, as aiokafka does)."""
    first = bootstrap_servers.split(",")[0].strip()
    if first.startswith("["):  # [v6]:port or [v6]
        host, _, rest = first[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif first.count(":") == 1:
        host, _, port = first.partition(":")
    else:  # a bare name, or a bare IPv6 address
        host, port = first, ""
    return host or "localhost", int(port) if port.isdigit() else 9092


def probe_tls(bootstrap_servers: str, context: ssl.SSLContext, timeout: float = 5.0) -> str | None:
    """Handshake with the first bootstrap server as streamkm's clients would.

    Parameters
    ----------
    bootstrap_servers : str
        ``host:port[,host:port...]``; only the first is tried.
    context : ssl.SSLContext
        The clients' context (``KafkaSettings.ssl_context()``).
    timeout : float
        Seconds for the connection, the handshake and the wait for a late alert.

    Returns
    -------
    str or None
        A one-line cause, or None if the handshake succeeded and the broker kept the
        connection open (the failure lies elsewhere).
    """
    host, port = _first_server(bootstrap_servers)
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return f"cannot reach {host}:{port} ({exc.strerror or exc})"
    try:
        with context.wrap_socket(raw, server_hostname=host if context.check_hostname else None) as tls:
            tls.settimeout(min(timeout, 1.0))
            try:
                # A Kafka broker answers nothing unasked: a rejection shows up as an alert or a close.
                if tls.recv(1) == b"":
                    return "the broker closed the TLS connection right after the handshake " \
                           "(it may require a client certificate it did not get, or reject it)"
            except TimeoutError:
                return None
    except ssl.SSLCertVerificationError as exc:
        what = exc.verify_message or str(exc)
        if "hostname" in what.lower() or "ip address mismatch" in what.lower():
            return (f"the broker's certificate does not name {host} ({what}); fix the certificate or set "
                    "kafka.ssl_check_hostname = false")
        if "expired" in what.lower():
            return f"the broker's certificate has expired ({what})"
        return f"the broker's certificate is not trusted by kafka.ssl_cafile ({what})"
    except ssl.SSLError as exc:
        text = str(exc)
        for marker, message in _ALERTS:
            if marker in text.upper():
                return f"{message} [{exc.reason or marker}]"
        return f"TLS handshake failed ({text})"
    except (ConnectionError, OSError) as exc:
        return ("the broker closed the connection during the TLS handshake (it may require a client "
                f"certificate it did not get, or reject it) ({exc})")
    return None


async def explain_connection_error(exc: BaseException, client_kwargs: dict[str, Any], timeout: float = 5.0) -> str:
    """``"Type: message"`` of *exc*, or, for a TLS connection, what the handshake says went wrong.

    The probe runs in a thread: it blocks on sockets.
    """
    plain = f"{type(exc).__name__}: {exc}"
    ctx = client_kwargs.get("ssl_context")
    servers = client_kwargs.get("bootstrap_servers")
    # Only a failure to connect can be a refused handshake (not, say, a timed-out fetch).
    connect_error = isinstance(exc, (OSError, KafkaConnectionError)) or "bootstrap" in str(exc).lower()
    if not isinstance(ctx, ssl.SSLContext) or not isinstance(servers, str) or not connect_error:
        return plain
    try:
        cause = await asyncio.to_thread(probe_tls, servers, ctx, timeout)
    except Exception:  # the explanation must never replace the error it explains
        return plain
    return plain if cause is None else f"TLS: {cause}"

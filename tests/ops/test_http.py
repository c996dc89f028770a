"""Tests for streamkm.ops.http: the /metrics /healthz /readyz server."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.parser import text_string_to_metric_families

from streamkm.ops.http import HealthServer


def _get(url: str, headers: dict[str, str] | None = None, method: str = "GET"):
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _raw(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def _registry():
    reg = CollectorRegistry()
    c = Counter("streamkm_test_records", "Records.", ["pipeline"], registry=reg)
    c.labels(pipeline="vectors").inc(7)
    Gauge("streamkm_test_objective", "Objective.", registry=reg).set(1.25)
    return reg


def test_metrics_endpoint_serves_registry_values():
    reg = _registry()

    async def main():
        async with HealthServer(reg, port=0) as srv:
            return await asyncio.to_thread(_get, srv.url + "/metrics")

    status, headers, body = run(main())
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    sample = families["streamkm_test_records"].samples[0]
    assert sample.labels == {"pipeline": "vectors"} and sample.value == 7.0
    assert families["streamkm_test_objective"].samples[0].value == 1.25


def test_metrics_openmetrics_negotiation():
    reg = _registry()

    async def main():
        async with HealthServer(reg, port=0) as srv:
            return await asyncio.to_thread(
                _get, srv.url + "/metrics",
                {"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"})

    status, headers, body = run(main())
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_metrics_accepts_object_with_registry_attribute():
    reg = _registry()

    class Holder:
        registry = reg

    srv = HealthServer(Holder(), port=0)
    assert srv.registry is reg


def test_readyz_follows_ready_callable_and_healthz_is_independent():
    state = {"ready": False}

    async def main():
        async with HealthServer(CollectorRegistry(), port=0, ready=lambda: state["ready"]) as srv:
            out = [await asyncio.to_thread(_get, srv.url + "/readyz"),
                   await asyncio.to_thread(_get, srv.url + "/healthz")]
            state["ready"] = True
            out.append(await asyncio.to_thread(_get, srv.url + "/readyz"))
            return out

    not_ready, healthz, ready = run(main())
    assert not_ready[0] == 503 and healthz[0] == 200 and ready[0] == 200
    assert healthz[2] == b"ok\n"


def test_raising_checks_report_503_not_crash():
    def boom():
        raise RuntimeError("broken")

    async def main():
        async with HealthServer(CollectorRegistry(), port=0, ready=boom, live=boom) as srv:
            r = await asyncio.to_thread(_get, srv.url + "/readyz")
            h = await asyncio.to_thread(_get, srv.url + "/healthz")
            ok = await asyncio.to_thread(_get, srv.url + "/metrics")
            return r, h, ok

    r, h, ok = run(main())
    assert (r[0], h[0], ok[0]) == (503, 503, 200)


def test_unknown_path_method_and_garbage():
    async def main():
        async with HealthServer(CollectorRegistry(), port=0) as srv:
            nf = await asyncio.to_thread(_get, srv.url + "/nope")
            post = await asyncio.to_thread(_get, srv.url + "/metrics", None, "POST")
            head = await asyncio.to_thread(_get, srv.url + "/healthz", None, "HEAD")
            garbage = await asyncio.to_thread(_raw, srv.port, b"\x00\x01 not http\r\n\r\n")
            query = await asyncio.to_thread(_get, srv.url + "/healthz?verbose=1")
            return nf, post, head, garbage, query

    nf, post, head, garbage, query = run(main())
    assert nf[0] == 404
    assert post[0] == 405
    assert head[0] == 200 and head[2] == b"" and head[1]["Content-Length"] == "3"
    assert garbage.startswith(b"HTTP/1.1 400")
    assert query[0] == 200


def test_healthz_answers_while_a_slow_client_holds_a_connection():
    async def main():
        async with HealthServer(CollectorRegistry(), port=0) as srv:
            # a client that connects and never sends a request must not block others
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            t0 = time.monotonic()
            status = (await asyncio.to_thread(_get, srv.url + "/healthz"))[0]
            elapsed = time.monotonic() - t0
            writer.close()
            return status, elapsed

    status, elapsed = run(main())
    assert status == 200 and elapsed < 5


def test_stop_is_idempotent_and_releases_port():
    async def main():
        srv = HealthServer(CollectorRegistry(), port=0)
        await srv.start()
        port = srv.port
        await srv.stop()
        await srv.stop()
        # the port is free again: we can bind it ourselves
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.close()
        return srv.started

    assert run(main()) is False


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"port": -1}, ValueError, "port"),
    ({"port": 70000}, ValueError, "70000"),
    ({"host": ""}, ValueError, "host"),
    ({"ready": 3}, TypeError, "ready"),
    ({"liveness_timeout_seconds": 0}, ValueError, "liveness_timeout_seconds"),
    ({"max_connections": 0}, ValueError, "max_connections must be an integer >= 1, got 0"),
    ({"max_connections": True}, ValueError, "max_connections"),
    ({"request_timeout_seconds": 0}, ValueError, "request_timeout_seconds must be a finite number > 0, got 0"),
    ({"request_timeout_seconds": float("inf")}, ValueError, "request_timeout_seconds"),
])
def test_invalid_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        HealthServer(CollectorRegistry(), **kwargs)


def test_invalid_registry_type():
    with pytest.raises(TypeError, match="CollectorRegistry"):
        HealthServer(registry=42)


def test_port_before_start_raises():
    with pytest.raises(RuntimeError, match="not started"):
        _ = HealthServer(CollectorRegistry(), port=0).port


def test_occupied_port_raises_oserror_from_start():
    async def main():
        async with HealthServer(CollectorRegistry(), port=0) as first:
            second = HealthServer(CollectorRegistry(), port=first.port)
            with pytest.raises(OSError):
                await second.start()
            assert not second.started
            await second.stop()  # nothing to stop: no error
            return (await asyncio.to_thread(_get, first.url + "/healthz"))[0]

    assert run(main()) == 200


def test_head_and_gzip_metrics():
    reg = _registry()

    async def main():
        async with HealthServer(reg, port=0) as srv:
            get = await asyncio.to_thread(_get, srv.url + "/metrics")
            head = await asyncio.to_thread(_get, srv.url + "/metrics", None, "HEAD")
            gz = await asyncio.to_thread(_get, srv.url + "/metrics", {"Accept-Encoding": "gzip"})
            return get, head, gz

    get, head, gz = run(main())
    assert head[0] == 200 and head[2] == b"" and head[1]["Content-Length"] == str(len(get[2]))
    assert gz[0] == 200 and gz[1]["Content-Encoding"] == "gzip"
    assert gzip.decompress(gz[2]) == get[2]


def test_healthz_fails_while_the_event_loop_is_blocked_and_metrics_still_answer():
    async def main():
        async with HealthServer(_registry(), port=0, liveness_timeout_seconds=0.3) as srv:
            before = await asyncio.to_thread(_get, srv.url + "/healthz")
            out: dict[str, tuple] = {}

            def probe():
                time.sleep(0.8)  # the loop is blocked by now, for longer than the timeout
                out["healthz"] = _get(srv.url + "/healthz")
                out["readyz"] = _get(srv.url + "/readyz")
                out["metrics"] = _get(srv.url + "/metrics")

            t = threading.Thread(target=probe)
            t.start()
            time.sleep(1.5)  # block the event loop (no await)
            t.join(10)
            await asyncio.sleep(0.6)  # the heartbeat ticks again
            after = await asyncio.to_thread(_get, srv.url + "/healthz")
            return before, out, after

    before, out, after = run(main())
    assert before[0] == 200
    assert out["healthz"][0] == 503 and out["healthz"][2] == b"not live\n"
    assert out["readyz"][0] == 200 and out["metrics"][0] == 200  # served from the server thread
    assert after[0] == 200


def test_live_callable_false_is_503():
    async def main():
        async with HealthServer(CollectorRegistry(), port=0, live=lambda: False) as srv:
            return await asyncio.to_thread(_get, srv.url + "/healthz")

    status, _, body = run(main())
    assert status == 503 and body == b"not live\n"


# ------------------------------------------------------------------ connection cap and deadline
def _closed_after(sock: socket.socket, timeout: float) -> tuple[float | None, bytes]:
    """Seconds until the server closes *sock* (None if it did not within *timeout*) and what it sent."""
    import select

    t0 = time.monotonic()
    got = b""
    while time.monotonic() - t0 < timeout:
        r, _, _ = select.select([sock], [], [], 0.05)
        if r:
            try:
                b = sock.recv(65536)
            except ConnectionResetError:
                return time.monotonic() - t0, got
            if not b:
                return time.monotonic() - t0, got
            got += b
    return None, got


def _slowloris(port: int, period: float, out: dict, stop: threading.Event) -> None:
    """Send a request one byte per *period*; note when the server cut the connection."""
    import select

    payload = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 100 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        t0 = time.monotonic()
        for i, byte in enumerate(payload):
            if stop.is_set():
                break
            try:
                s.send(bytes([byte]))
            except OSError:
                out.update(cut=time.monotonic() - t0, sent=i)
                return
            r, _, _ = select.select([s], [], [], period)  # wakes at once if the server closes
            if r:
                try:
                    data = s.recv(65536)
                except ConnectionResetError:
                    data = b""
                out.update(cut=time.monotonic() - t0, sent=i + 1, reply=data)
                return
        out.update(cut=None, sent=len(payload))


def test_a_slowloris_client_is_cut_at_the_deadline_while_others_are_served():
    reg = _registry()
    deadline = 2.5

    async def main():
        async with HealthServer(reg, port=0, request_timeout_seconds=deadline) as srv:
            out: dict = {}
            stop = threading.Event()
            # one header byte per second: every read is well within the 10 s read timeout
            t = threading.Thread(target=_slowloris, args=(srv.port, 1.0, out, stop), daemon=True)
            t.start()
            try:
                await asyncio.sleep(1.0)
                t0 = time.monotonic()
                status, _, body = await asyncio.to_thread(_get, srv.url + "/metrics")
                served_in = time.monotonic() - t0
                await asyncio.to_thread(t.join, deadline + 6)
                # The reaper cuts the socket and the connection's thread forgets it just after,
                # so the client can see the cut first (a CI run once read open == 1 here).
                t_end = time.monotonic() + 2.0
                while srv.connections["open"] and time.monotonic() < t_end:
                    await asyncio.sleep(0.01)
            finally:
                stop.set()
            return out, status, body, served_in, srv.connections

    out, status, body, served_in, conns = run(main())
    assert status == 200 and b"streamkm_test_records_total" in body and served_in < 2  # meanwhile
    assert out.get("cut") is not None, f"the slow client was never cut: {out}"
    assert deadline - 0.2 <= out["cut"] <= deadline + 1.0
    assert out["sent"] < 20 and out.get("reply", b"") == b""  # cut mid-request, no reply
    assert conns["expired"] == 1 and conns["open"] == 0


def test_connections_beyond_the_cap_are_refused_at_once_and_freed_at_the_deadline():
    reg = _registry()
    deadline = 2.0

    async def main():
        srv = HealthServer(reg, port=0, request_timeout_seconds=deadline)  # the default cap: 64
        assert srv.max_connections == 64
        async with srv:
            held = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(64)]
            extra: list[socket.socket] = []
            try:
                t_end = time.monotonic() + 5
                while srv.connections["open"] < 64 and time.monotonic() < t_end:
                    await asyncio.sleep(0.02)
                assert srv.connections["open"] == 64
                refused = []
                for _ in range(36):  # connections 65 to 100
                    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
                    extra.append(s)
                    refused.append(await asyncio.to_thread(_closed_after, s, 2.0))
                counts = dict(srv.connections)
                # the idle holders never close; the deadline frees their slots for a scrape
                await asyncio.sleep(deadline + 0.5)
                status, _, body = await asyncio.to_thread(_get, srv.url + "/metrics")
                held_cut = [(await asyncio.to_thread(_closed_after, s, 1.0))[0] for s in held]
                return refused, counts, status, body, held_cut, dict(srv.connections)
            finally:
                for s in held + extra:
                    s.close()

    refused, counts, status, body, held_cut, after = run(main())
    assert all(t is not None and t < 1.0 for t, _ in refused), refused
    assert all(reply.startswith(b"HTTP/1.1 503 Service Unavailable") for _, reply in refused)
    assert counts == {"open": 64, "refused": 36, "expired": 0}
    assert status == 200 and b"streamkm_test_records_total" in body
    assert all(t is not None for t in held_cut)
    assert after["expired"] == 64 and after["open"] == 0


def test_stop_cuts_the_connections_still_open():
    async def main():
        srv = HealthServer(CollectorRegistry(), port=0, request_timeout_seconds=60)
        await srv.start()
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        try:
            t_end = time.monotonic() + 5
            while srv.connections["open"] < 1 and time.monotonic() < t_end:
                await asyncio.sleep(0.02)
            t0 = time.monotonic()
            await srv.stop()
            stopped_in = time.monotonic() - t0
            return stopped_in, await asyncio.to_thread(_closed_after, s, 2.0)
        finally:
            s.close()

    stopped_in, (cut, reply) = run(main())
    assert stopped_in < 2 and cut is not None and reply == b""

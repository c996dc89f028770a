"""HTTPS, basic auth and client certificates on the /metrics /healthz /readyz server.

Unit tests talk to :class:`streamkm.ops.http.HealthServer` with the standard library's
HTTPS client; ``test_real_prometheus_*`` have a real Prometheus (Debian's ``prometheus``)
scrape it over HTTPS, with basic auth and a CA file, and read the result back through its
HTTP API: the in-process server first, then ``streamkm run`` configured from
``metrics.*`` settings. The PKI is made with ``openssl`` (``tests/helpers/tls.py``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from streamkm.ops.http import HealthServer
from streamkm.ops.metrics import Metrics
from tests.helpers.prometheus import PrometheusServer, require_prometheus_binary
from tests.helpers.tls import Pki, free_port, make_pki

USER, PASSWORD = "prom", "s3cret-metrics-pw"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    if shutil.which("openssl") is None:
        if os.environ.get("CI"):
            pytest.fail("openssl is required under CI=true")
        pytest.skip("openssl not installed")
    return make_pki(tmp_path_factory.mktemp("pki"))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


def _client_ctx(pki: Pki, *, cert: bool = False, ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca or pki.ca))
    if cert:
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return ctx


def _auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _get(url: str, ctx: ssl.SSLContext | None, headers: dict[str, str] | None = None, method: str = "GET"):
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("streamkm_test_records", "Records.", registry=reg).inc(7)
    return reg


def _server(pki: Pki, **kw) -> HealthServer:
    kw.setdefault("basic_auth", (USER, PASSWORD))
    return HealthServer(_registry(), port=0, tls_certfile=pki.server_cert, tls_keyfile=pki.server_key, **kw)


# ------------------------------------------------------------------ basic auth over HTTPS
def test_basic_auth_protects_metrics_and_leaves_the_probes_open(pki):
    ctx = _client_ctx(pki)

    async def main():
        async with _server(pki, ready=lambda: True) as srv:
            assert srv.url.startswith("https://127.0.0.1:")

            def get(path, headers=None, method="GET"):
                return _get(srv.url + path, ctx, headers, method)

            return {
                "ok": await asyncio.to_thread(get, "/metrics", _auth(USER, PASSWORD)),
                "none": await asyncio.to_thread(get, "/metrics"),
                "wrong_pw": await asyncio.to_thread(get, "/metrics", _auth(USER, PASSWORD + "x")),
                "wrong_user": await asyncio.to_thread(get, "/metrics", _auth("other", PASSWORD)),
                "prefix_pw": await asyncio.to_thread(get, "/metrics", _auth(USER, PASSWORD[:-1])),
                "head_none": await asyncio.to_thread(get, "/metrics", None, "HEAD"),
                "index_none": await asyncio.to_thread(get, "/"),
                "unknown_none": await asyncio.to_thread(get, "/nope"),
                "post_none": await asyncio.to_thread(get, "/metrics", None, "POST"),
                "healthz": await asyncio.to_thread(get, "/healthz"),
                "readyz": await asyncio.to_thread(get, "/readyz"),
            }

    r = run(main())
    status, _, body = r["ok"]
    assert status == 200 and b"streamkm_test_records_total 7.0" in body
    for name in ("none", "wrong_pw", "wrong_user", "prefix_pw", "head_none", "index_none", "unknown_none",
                 "post_none"):
        status, headers, body = r[name]
        assert status == 401, (name, status)
        assert headers["WWW-Authenticate"] == 'Basic realm="streamkm", charset="UTF-8"', name
        assert b"streamkm_test_records" not in body
    assert r["healthz"][:1] == (200,) and r["healthz"][2] == b"ok\n"
    assert r["readyz"][:1] == (200,) and r["readyz"][2] == b"ready\n"


@pytest.mark.parametrize("header", [
    "Bearer abc",
    "Basic",
    "Basic !!!not-base64!!!",
    "Basic " + base64.b64encode(b"no-colon-here").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:\x00").decode(),
    "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() + "extra",
])
def test_malformed_authorization_headers_are_401_not_500(pki, header):
    ctx = _client_ctx(pki)

    async def main():
        async with _server(pki) as srv:
            return await asyncio.to_thread(_get, srv.url + "/metrics", ctx, {"Authorization": header})

    assert run(main())[0] == 401


def test_basic_auth_scheme_is_case_insensitive_and_the_password_may_hold_colons(pki):
    ctx = _client_ctx(pki)

    async def main():
        async with _server(pki, basic_auth=("u", "a:b:c")) as srv:
            token = base64.b64encode(b"u:a:b:c").decode()
            return await asyncio.to_thread(_get, srv.url + "/metrics", ctx, {"Authorization": f"basic {token}"})

    assert run(main())[0] == 200


def test_protect_probes_puts_healthz_and_readyz_behind_the_password(pki):
    ctx = _client_ctx(pki)

    async def main():
        async with _server(pki, protect_probes=True) as srv:
            out = {}
            for path in ("/healthz", "/readyz"):
                out[path] = (await asyncio.to_thread(_get, srv.url + path, ctx))[0]
                out[path + " auth"] = (await asyncio.to_thread(_get, srv.url + path, ctx,
                                                               _auth(USER, PASSWORD)))[0]
            return out

    assert run(main()) == {"/healthz": 401, "/healthz auth": 200, "/readyz": 401, "/readyz auth": 200}


def test_the_password_is_neither_kept_nor_logged(pki, caplog):
    caplog.set_level(logging.DEBUG, logger="streamkm.ops.http")
    ctx = _client_ctx(pki)

    async def main():
        async with _server(pki) as srv:
            await asyncio.to_thread(_get, srv.url + "/metrics", ctx, _auth(USER, "guess"))
            await asyncio.to_thread(_get, srv.url + "/metrics", ctx, _auth(USER, PASSWORD))
            return srv

    srv = run(main())
    assert PASSWORD not in repr(vars(srv)) and PASSWORD not in caplog.text
    assert "basic auth required on every path but /healthz and /readyz" in caplog.text


# ------------------------------------------------------------------ the TLS listener
def test_plain_http_to_the_https_port_is_refused_with_a_plain_400(pki):
    async def main():
        async with _server(pki) as srv:
            plain = await asyncio.to_thread(_get, f"http://127.0.0.1:{srv.port}/healthz", None)
            after = await asyncio.to_thread(_get, srv.url + "/healthz", _client_ctx(pki))
            return plain, after

    plain, after = run(main())
    assert plain[0] == 400 and plain[2] == b"Client sent an HTTP request to an HTTPS server.\n"
    assert after[0] == 200  # and the server goes on serving TLS


def test_an_untrusted_server_certificate_fails_the_client_handshake(pki):
    async def main():
        async with _server(pki) as srv:
            with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
                await asyncio.to_thread(_get, srv.url + "/healthz", _client_ctx(pki, ca=pki.other_ca))
            return (await asyncio.to_thread(_get, srv.url + "/healthz", _client_ctx(pki)))[0]

    assert run(main()) == 200


def test_a_silent_client_does_not_hold_up_tls_handshakes_of_others(pki):
    """prometheus-client's start_http_server(certfile=...) handshakes in its accept loop, where a
    client that connects and sends nothing blocks every other scrape; this server must not."""
    async def main():
        async with _server(pki) as srv:
            silent = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(3)]
            try:
                await asyncio.sleep(0.2)
                t0 = time.monotonic()
                status = (await asyncio.to_thread(_get, srv.url + "/healthz", _client_ctx(pki)))[0]
                return status, time.monotonic() - t0
            finally:
                for s in silent:
                    s.close()

    status, elapsed = run(main())
    assert status == 200 and elapsed < 3


def _closed_within(sock: socket.socket, timeout: float) -> tuple[float | None, bytes]:
    import select

    t0 = time.monotonic()
    got = b""
    while time.monotonic() - t0 < timeout:
        if select.select([sock], [], [], 0.05)[0]:
            try:
                b = sock.recv(65536)
            except ConnectionResetError:
                b = b""
            if not b:
                return time.monotonic() - t0, got
            got += b
    return None, got


def test_a_handshake_trickled_byte_by_byte_is_cut_at_the_deadline(pki):
    """Each byte comes well within the 10 s read timeout; the whole-connection deadline cuts it."""
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40  # the start of a ClientHello

    def trickle(port: int) -> tuple[float | None, int]:
        import select

        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            t0 = time.monotonic()
            for i, byte in enumerate(hello):
                try:
                    s.send(bytes([byte]))
                except OSError:
                    return time.monotonic() - t0, i
                if select.select([s], [], [], 0.5)[0]:
                    return time.monotonic() - t0, i + 1
            return None, len(hello)

    async def main():
        async with _server(pki, request_timeout_seconds=2.0) as srv:
            task = asyncio.ensure_future(asyncio.to_thread(trickle, srv.port))
            await asyncio.sleep(0.5)
            status = (await asyncio.to_thread(_get, srv.url + "/healthz", _client_ctx(pki)))[0]
            cut, sent = await task
            return status, cut, sent, srv.connections

    status, cut, sent, conns = run(main())
    assert status == 200  # served meanwhile
    assert cut is not None and 1.8 <= cut <= 3.0 and sent < len(hello)
    assert conns["expired"] == 1


def test_an_https_connection_beyond_the_cap_is_closed_without_a_plain_reply(pki):
    async def main():
        async with _server(pki, max_connections=2) as srv:
            held = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(2)]
            try:
                t_end = time.monotonic() + 5
                while srv.connections["open"] < 2 and time.monotonic() < t_end:
                    await asyncio.sleep(0.02)
                extra = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
                with extra:
                    closed = await asyncio.to_thread(_closed_within, extra, 2.0)
            finally:
                for s in held:
                    s.close()
            return closed, srv.connections

    (cut, reply), conns = run(main())
    assert cut is not None and cut < 1.0 and reply == b""
    assert conns["refused"] == 1


# ------------------------------------------------------------------ client certificates
def _rogue_client_cert(pki: Pki) -> tuple[Path, Path]:
    """A client certificate signed by ``other_ca``, which the server does not trust."""
    d = pki.dir
    if not (d / "rogue.pem").exists():
        for args in (["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key", "-out", "rogue.csr",
                      "-subj", "/CN=rogue"],
                     ["x509", "-req", "-in", "rogue.csr", "-CA", "other-ca.pem", "-CAkey", "other-ca.key",
                      "-CAcreateserial", "-out", "rogue.pem", "-days", "1"]):
            subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)
    return d / "rogue.pem", d / "rogue.key"


def test_client_certificate_required_on_metrics_but_not_on_probes(pki):
    rogue = _rogue_client_cert(pki)

    async def main():
        async with _server(pki, basic_auth=None, tls_client_cafile=pki.ca) as srv:
            with_cert = _client_ctx(pki, cert=True)
            without = _client_ctx(pki)
            out = {
                "cert": await asyncio.to_thread(_get, srv.url + "/metrics", with_cert),
                "no cert": await asyncio.to_thread(_get, srv.url + "/metrics", without),
                "no cert healthz": await asyncio.to_thread(_get, srv.url + "/healthz", without),
            }
            # an expired certificate, and one the CA did not sign, fail the handshake (even for /healthz)
            for name, (cert, key) in {"expired cert": (pki.expired_cert, pki.expired_key),
                                      "rogue cert": rogue}.items():
                ctx = ssl.create_default_context(cafile=str(pki.ca))
                ctx.load_cert_chain(str(cert), str(key))
                # TLS 1.2: the server's alert ends the client's own handshake (with 1.3 it may
                # arrive after the client has sent its request, as a reset instead)
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
                try:
                    out[name] = await asyncio.to_thread(_get, srv.url + "/healthz", ctx)
                except (urllib.error.URLError, ssl.SSLError, ConnectionError) as exc:
                    out[name] = exc
            return out

    out = run(main())
    assert out["cert"][0] == 200 and b"streamkm_test_records_total 7.0" in out["cert"][2]
    assert out["no cert"][0] == 403 and out["no cert"][2] == b"client certificate required\n"
    assert out["no cert healthz"][0] == 200
    assert "CERTIFICATE_EXPIRED" in str(out["expired cert"]), out["expired cert"]
    assert "UNKNOWN_CA" in str(out["rogue cert"]), out["rogue cert"]


def test_client_certificate_and_basic_auth_together(pki):
    async def main():
        async with _server(pki, tls_client_cafile=pki.ca) as srv:
            cert = _client_ctx(pki, cert=True)
            return [
                (await asyncio.to_thread(_get, srv.url + "/metrics", cert, _auth(USER, PASSWORD)))[0],
                (await asyncio.to_thread(_get, srv.url + "/metrics", cert))[0],
                (await asyncio.to_thread(_get, srv.url + "/metrics", _client_ctx(pki), _auth(USER, PASSWORD)))[0],
            ]

    assert run(main()) == [200, 401, 403]


# ------------------------------------------------------------------ argument checks
@pytest.mark.parametrize("kwargs, match", [
    ({"tls_certfile": "x.pem"}, "tls_certfile and tls_keyfile must be given together"),
    ({"tls_client_cafile": "ca.pem"}, "tls_client_cafile needs tls_certfile"),
    ({"basic_auth": ("u", "p")}, "basic_auth needs tls_certfile"),
    ({"protect_probes": True}, "protect_probes needs basic_auth or tls_client_cafile"),
])
def test_invalid_tls_and_auth_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HealthServer(CollectorRegistry(), port=0, **kwargs)


@pytest.mark.parametrize("auth, exc, match", [
    (("a:b", "p"), ValueError, "contain no ':'"),
    (("", "p"), ValueError, "non-empty"),
    (("u", ""), ValueError, "password must be non-empty"),
    (["u", "p"], TypeError, "tuple"),
])
def test_invalid_basic_auth(pki, auth, exc, match):
    with pytest.raises(exc, match=match):
        _server(pki, basic_auth=auth)


def test_unloadable_certificate_files_name_the_file_and_the_reason(pki, tmp_path):
    enc = tmp_path / "enc.key"
    subprocess.run(["openssl", "rsa", "-in", str(pki.server_key), "-aes256", "-passout", "pass:x", "-out",
                    str(enc)], check=True, capture_output=True, timeout=30)
    cases = [
        (pki.server_cert, pki.client_key, None, "the key does not belong to the certificate"),
        (pki.dir / "ca.cnf", pki.server_key, None, "not a PEM certificate"),
        (pki.server_cert, enc, None, "the key is encrypted"),
        (pki.server_cert, pki.server_key, pki.dir / "ca.cnf", "no PEM certificate found"),
    ]
    for cert, key, ca, reason in cases:
        with pytest.raises(ValueError, match=reason) as ei:
            HealthServer(CollectorRegistry(), port=0, tls_certfile=cert, tls_keyfile=key, tls_client_cafile=ca)
        assert str(ca or cert) in str(ei.value)


# ------------------------------------------------------------------ a real Prometheus
def _job(name: str, target: str, **extra) -> dict:
    return {"job_name": name, "static_configs": [{"targets": [target]}], **extra}


def _wait_for_jobs(prom: PrometheusServer, jobs: list[str], scrapes: int = 2, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = prom.query("count_over_time(up[5m])")["data"]["result"]
        seen = {s["metric"]["job"]: float(s["value"][1]) for s in res}
        if all(seen.get(j, 0) >= scrapes for j in jobs):
            return
        time.sleep(0.3)
    raise TimeoutError(f"jobs not scraped {scrapes} times: {prom.api('targets')}\n{prom.log_tail()}")


def _targets(prom: PrometheusServer) -> dict[str, dict]:
    return {t["labels"]["job"]: t for t in prom.api("targets")["data"]["activeTargets"]}


def _up(prom: PrometheusServer) -> dict[str, float]:
    """Per job, 1 if any scrape of the last 30 s succeeded, else 0: one slow scrape on a loaded
    machine (timeout 1 s) must not turn the good job down, and a refused job never succeeds."""
    res = prom.query("max_over_time(up[30s])")["data"]["result"]
    return {s["metric"]["job"]: float(s["value"][1]) for s in res}


def test_real_prometheus_scrapes_over_https_with_basic_auth(pki, tmp_path):
    """Prometheus with the right password and CA: target up, a streamkm_ metric queryable. With a
    wrong or no password (401), plain HTTP (400) or another CA (x509): target down, no series."""
    binary = require_prometheus_binary("prometheus")
    pw_file = tmp_path / "scrape-password"
    pw_file.write_text(PASSWORD)
    tls = {"ca_file": str(pki.ca)}

    async def main():
        metrics = Metrics()
        async with HealthServer(metrics, port=0, tls_certfile=pki.server_cert, tls_keyfile=pki.server_key,
                                basic_auth=(USER, PASSWORD)) as srv:
            target = f"127.0.0.1:{srv.port}"
            jobs = [
                _job("good", target, scheme="https", tls_config=tls,
                     basic_auth={"username": USER, "password_file": str(pw_file)}),
                _job("wrong_password", target, scheme="https", tls_config=tls,
                     basic_auth={"username": USER, "password": "not-it"}),
                _job("no_auth", target, scheme="https", tls_config=tls),
                _job("plain_http", target, scheme="http",
                     basic_auth={"username": USER, "password": PASSWORD}),
                _job("other_ca", target, scheme="https", tls_config={"ca_file": str(pki.other_ca)},
                     basic_auth={"username": USER, "password": PASSWORD}),
            ]
            prom = await asyncio.to_thread(PrometheusServer, binary, tmp_path / "prom", [], (), "1s", jobs)
            try:
                await asyncio.to_thread(_wait_for_jobs, prom, [j["job_name"] for j in jobs])
                return (await asyncio.to_thread(_up, prom), await asyncio.to_thread(_targets, prom),
                        await asyncio.to_thread(prom.query, "streamkm_build_info"),
                        await asyncio.to_thread(prom.query, "streamkm_ready"))
            finally:
                await asyncio.to_thread(prom.stop)

    (tmp_path / "prom").mkdir()
    up, targets, build_info, ready = run(main())
    assert up == {"good": 1.0, "wrong_password": 0.0, "no_auth": 0.0, "plain_http": 0.0, "other_ca": 0.0}
    assert targets["good"]["health"] == "up" and targets["good"]["scrapeUrl"].startswith("https://")
    assert "401" in targets["wrong_password"]["lastError"], targets["wrong_password"]
    assert "401" in targets["no_auth"]["lastError"], targets["no_auth"]
    assert "400" in targets["plain_http"]["lastError"], targets["plain_http"]
    assert "certificate" in targets["other_ca"]["lastError"], targets["other_ca"]
    # only the authenticated job stored streamkm series
    assert {s["metric"]["job"] for s in build_info["data"]["result"]} == {"good"}
    assert build_info["data"]["result"][0]["metric"]["version"]
    assert [s["metric"]["job"] for s in ready["data"]["result"]] == ["good"]


@pytest.mark.broker
def test_real_prometheus_scrapes_streamkm_run_over_mutual_tls_with_basic_auth(pki, tmp_path):
    """`streamkm run` (embedded broker, demo producer) with metrics.tls_* and metrics.basic_auth_*:
    Prometheus with the password and a client certificate sees records consumed; without the
    certificate (403) or with a wrong password (401) the target is down; /healthz stays open."""
    binary = require_prometheus_binary("prometheus")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}
    env.update(STREAMKM_METRICS__PORT=str(port), STREAMKM_METRICS__TLS_CERTFILE=str(pki.server_cert),
               STREAMKM_METRICS__TLS_KEYFILE=str(pki.server_key), STREAMKM_METRICS__TLS_CLIENT_CAFILE=str(pki.ca),
               STREAMKM_METRICS__BASIC_AUTH_USERNAME=USER, STREAMKM_METRICS__BASIC_AUTH_PASSWORD=PASSWORD,
               STREAMKM_CHECKPOINT__DIR=str(tmp_path / "ckpt"), STREAMKM_WORKER__DEMO_RATE="500")
    log = tmp_path / "run.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "streamkm", "run", "--duration", "120"], stdout=fh,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    prom = None
    try:
        target = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the daemon serves /healthz without credentials
            assert proc.poll() is None, log.read_text()
            try:
                if _get(f"https://{target}/healthz", _client_ctx(pki))[0] == 200:
                    break
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        else:
            raise AssertionError(f"no /healthz within 60s:\n{log.read_text()[-3000:]}")
        tls = {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
        auth = {"username": USER, "password": PASSWORD}
        jobs = [_job("good", target, scheme="https", tls_config=tls, basic_auth=auth),
                _job("no_client_cert", target, scheme="https", tls_config={"ca_file": str(pki.ca)}, basic_auth=auth),
                _job("wrong_password", target, scheme="https", tls_config=tls,
                     basic_auth={"username": USER, "password": "nope"})]
        (tmp_path / "prom").mkdir()
        prom = PrometheusServer(binary, tmp_path / "prom", [], (), "1s", jobs)
        _wait_for_jobs(prom, ["good", "no_client_cert", "wrong_password"])
        deadline = time.monotonic() + 40
        consumed: list = []
        while time.monotonic() < deadline and not consumed:
            res = prom.query('sum(streamkm_records_consumed_total{job="good"}) > 0')["data"]["result"]
            consumed = res
            time.sleep(0.5)
        assert consumed, f"no records consumed seen by Prometheus:\n{log.read_text()[-3000:]}"
        assert _up(prom) == {"good": 1.0, "no_client_cert": 0.0, "wrong_password": 0.0}
        targets = _targets(prom)
        assert "403" in targets["no_client_cert"]["lastError"], targets["no_client_cert"]
        assert "401" in targets["wrong_password"]["lastError"], targets["wrong_password"]
    finally:
        if prom is not None:
            prom.stop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            raise
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert f"metrics at https://127.0.0.1:{port}/metrics" in text
    assert PASSWORD not in text and "Traceback" not in text


def test_streamkm_run_refuses_an_unloadable_metrics_certificate(pki, tmp_path):
    """A key that does not match the certificate is a usage error (exit 2) with one line, no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}
    env.update(STREAMKM_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:1", STREAMKM_INPUT__DIMENSION="8",
               STREAMKM_METRICS__PORT="0",
               STREAMKM_METRICS__TLS_CERTFILE=str(pki.server_cert), STREAMKM_METRICS__TLS_KEYFILE=str(pki.client_key),
               STREAMKM_CHECKPOINT__DIR=str(tmp_path / "ckpt"))
    out = subprocess.run([sys.executable, "-m", "streamkm", "run", "--duration", "5"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "cannot serve metrics over HTTPS" in out.stderr and "the key does not belong" in out.stderr
    assert "Traceback" not in out.stderr


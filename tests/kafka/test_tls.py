"""TLS and mutual TLS to the broker, end to end: Debian's ``stunnel4`` terminates TLS in front
of the embedded broker (Tansu has no working TLS), which advertises stunnel's port.

Checked with streamkm's own commands: records go through TLS both ways (``produce``,
``record``, and the daemon's consumer group in ``run``), and a wrong CA, a missing client
certificate and an expired client certificate are each refused with a message naming the
cause, exit code 1 and no traceback. Without stunnel these tests skip locally and fail
under ``CI=true`` (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streamkm.kafka.embedded import EmbeddedBroker
from streamkm.loadgen import read_recording
from tests.helpers.tls import Pki, Stunnel, free_port, make_pki, stunnel_binary

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    """``(pki, "127.0.0.1:TLS_PORT")``: stunnel (client certificates required) before a broker."""
    if stunnel_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("stunnel4 is required under CI=true (Debian package stunnel4)")
        pytest.skip("stunnel4 not installed (Debian package stunnel4)")
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    port = free_port()
    broker = EmbeddedBroker(advertised=f"127.0.0.1:{port}", startup_timeout=30.0)
    broker.start()
    try:
        with Stunnel(pki, broker.bootstrap_servers, port=port) as tunnel:
            yield pki, tunnel.address
    finally:
        broker.stop()
        broker.cleanup_log()


def _config(path: Path, address: str, ca: Path, cert: Path | None = None, key: Path | None = None, *,
            kafka: tuple[str, ...] = (), **extra: list[str]) -> Path:
    lines = ["[kafka]", f'bootstrap_servers = "{address}"', 'security_protocol = "SSL"', f'ssl_cafile = "{ca}"',
             "request_timeout_ms = 10000", *kafka]
    if cert is not None:
        lines += [f'ssl_certfile = "{cert}"', f'ssl_keyfile = "{key}"']
    for section, body in extra.items():
        lines += [f"[{section}]", *body]
    path.write_text("\n".join(lines) + "\n")
    return path


def _streamkm(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}
    return subprocess.run([sys.executable, "-m", "streamkm", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_records_go_through_mutual_tls_both_ways(tls_broker, tmp_path):
    pki, address = tls_broker
    cfg = _config(tmp_path / "good.toml", address, pki.ca, pki.client_cert, pki.client_key)
    sent = _streamkm("produce", "--config", str(cfg), "--topic", "tls-in", "--count", "300", "--format", "binary",
                     "--features", "4", "--no-progress", "--seed", "3")
    assert sent.returncode == 0, sent.stderr
    out = tmp_path / "dump.skmrec"
    got = _streamkm("record", "--config", str(cfg), "--topic", "tls-in", "--out", str(out), "--no-progress")
    assert got.returncode == 0, got.stderr
    assert len(list(read_recording(out))) == 300

    # the daemon's consumer group, commits and checkpoints over TLS
    run_cfg = _config(tmp_path / "run.toml", address, pki.ca, pki.client_cert, pki.client_key,
                      kafka=('vectors_topic = "tls-in"', 'group_id = "tls-g"', "session_timeout_ms = 6000",
                             "heartbeat_interval_ms = 500"),
                      input=['format = "binary"'], checkpoint=[f'dir = "{tmp_path / "ckpt"}"'],
                      metrics=["enabled = false"], dlq=['topic = ""'], output=['topic = ""'],
                      worker=["demo_producer = false"], group=["enabled = false"])  # per-worker: checkpoints
    run = _streamkm("run", "--config", str(run_cfg), "--duration", "12", "--status-interval", "0", timeout=120)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "Traceback" not in run.stderr
    inspect = _streamkm("checkpoint", "inspect", str(tmp_path / "ckpt"))
    assert inspect.returncode == 0, inspect.stderr
    m = re.search(r"tls-in:0: next offset (\d+)", inspect.stdout)
    assert m and int(m.group(1)) == 300, inspect.stdout


CASES = {
    "wrong CA": (lambda p: (p.other_ca, p.client_cert, p.client_key),
                 "the broker's certificate is not trusted by kafka.ssl_cafile"),
    "no client certificate": (lambda p: (p.ca, None, None), "the broker requires a client certificate"),
    "expired client certificate": (lambda p: (p.ca, p.expired_cert, p.expired_key),
                                   "rejected the client certificate (kafka.ssl_certfile): it has expired"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", ["produce", "record"])
def test_a_refused_handshake_names_its_cause(tls_broker, tmp_path, case, command):
    pki, address = tls_broker
    files, expected = CASES[case]
    ca, cert, key = files(pki)
    cfg = _config(tmp_path / "c.toml", address, ca, cert, key)
    args = ["--topic", "tls-refused", "--no-progress"]
    args += ["--count", "5"] if command == "produce" else ["--out", str(tmp_path / "x.skmrec")]
    proc = _streamkm(command, "--config", str(cfg), *args)
    assert proc.returncode == 1, proc.stderr
    assert f"streamkm {command}: TLS: " in proc.stderr and expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Unclosed" not in proc.stderr, proc.stderr  # a failed start closes its client


def test_probe_reports_a_healthy_handshake_as_no_cause(tls_broker):
    from streamkm.config import load_settings
    from streamkm.kafka.tls import probe_tls

    pki: Pki = tls_broker[0]
    s = load_settings(env={"STREAMKM_KAFKA__BOOTSTRAP_SERVERS": tls_broker[1],
                           "STREAMKM_KAFKA__SECURITY_PROTOCOL": "SSL", "STREAMKM_KAFKA__SSL_CAFILE": str(pki.ca),
                           "STREAMKM_KAFKA__SSL_CERTFILE": str(pki.client_cert),
                           "STREAMKM_KAFKA__SSL_KEYFILE": str(pki.client_key)})
    ctx = s.kafka.ssl_context()
    assert ctx is not None
    assert probe_tls(tls_broker[1], ctx, timeout=3) is None
    assert "cannot reach" in (probe_tls(f"127.0.0.1:{free_port()}", ctx, timeout=3) or "")


@pytest.mark.parametrize("group", ["true", "false"])
def test_the_daemon_names_a_refused_handshake_while_it_retries(tls_broker, tmp_path, group):
    """`streamkm run` keeps retrying (a certificate rotation fixes it) but says why it cannot connect,
    on the group model and on the per-worker model (each has its own connect loop)."""
    import signal
    import time

    pki, address = tls_broker
    cfg = _config(tmp_path / "run.toml", address, pki.other_ca, pki.client_cert, pki.client_key,
                  kafka=('vectors_topic = "tls-daemon"', 'group_id = "tls-d"'),
                  checkpoint=[f'dir = "{tmp_path / "ckpt"}"'], metrics=["enabled = false"],
                  input=["dimension = 4"], group=[f"enabled = {group}"],
                  worker=["demo_producer = false", "retry_backoff_initial_seconds = 0.2",
                          "retry_backoff_max_seconds = 1"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}
    log = tmp_path / "run.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "streamkm", "run", "--config", str(cfg), "--status-interval",
                                 "0"], stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while "not trusted by kafka.ssl_cafile" not in log.read_text(errors="replace"):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(40)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    text = log.read_text(errors="replace")
    assert rc == 0, text[-3000:]
    assert "broker unreachable or failing (TLS: the broker's certificate is not trusted" in text
    assert "Traceback" not in text, text[-3000:]


@pytest.mark.parametrize("servers, expected", [
    ("broker", ("broker", 9092)), ("broker:19092", ("broker", 19092)), ("[::1]:9093", ("::1", 9093)),
    ("::1", ("::1", 9092)), ("[::1]", ("::1", 9092)), ("a:1,b:2", ("a", 1)), (" h:7 , x", ("h", 7)),
])
def test_bootstrap_addresses_parse_as_aiokafka_reads_them(servers, expected):
    from streamkm.kafka.tls import _first_server

    assert _first_server(servers) == expected

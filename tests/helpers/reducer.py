"""A rounds reducer of a stand-in member (metrics and a transition sink, no broker), for fold tests."""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from streamkm.group import GroupModel
from streamkm.group.rounds import RoundFold
from streamkm.ops.metrics import Metrics
from streamkm.service.group import _Reducer


def stand_in_reducer(pipeline: str, topic: str, keys: Iterable[str], model_kwargs: dict[str, Any]) -> _Reducer:
    """A ``_Reducer`` folding *pipeline* in rounds that wait for *keys* (``"topic:partition"``)."""
    metrics = Metrics()
    metrics.init_pipeline(pipeline, topic)
    metrics.init_group(pipeline, outcomes=("accepted", "duplicate", "overlap", "gap", "invalid"), transitions=())
    r = _Reducer(SimpleNamespace(metrics=metrics, queue_transition=lambda *a: None, client_id="m"),  # type: ignore[arg-type]
                 pipeline, None)  # type: ignore[arg-type]
    r.model = GroupModel(pipeline=pipeline, model_kwargs=model_kwargs)
    r.rounds = RoundFold(r.model)
    r.rounds.expect(keys)
    return r

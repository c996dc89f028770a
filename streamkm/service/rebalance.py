"""The consumer-group rebalance listener: aiokafka's callbacks, delegated to the worker."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiokafka import ConsumerRebalanceListener, TopicPartition

__all__ = ["RebalanceListener"]

log = logging.getLogger("streamkm.worker")

Handler = Callable[[set[TopicPartition]], Awaitable[None]]


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Calls ``on_revoked(partitions)`` / ``on_assigned(partitions)``.

    aiokafka swallows exceptions raised in these callbacks; they are logged here so a
    failed revocation (its checkpoint or commit) is visible.
    """

    def __init__(self, on_revoked: Handler, on_assigned: Handler) -> None:
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        try:
            await self._on_revoked(set(revoked))
        except Exception:
            log.exception("partition revocation handling failed")

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        try:
            await self._on_assigned(set(assigned))
        except Exception:
            log.exception("partition assignment handling failed")

"""Checkpoint, then commit: the durability half of the worker, with its bookkeeping.

Offsets are committed only after the checkpoint holding them (and the model state
they describe) is durable, so a crash between the two re-reads nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition

from streamkm.checkpoint import CheckpointInfo, CheckpointStore
from streamkm.kafka.client import really_cancelled
from streamkm.ops.metrics import Metrics

__all__ = ["Durability"]

log = logging.getLogger("streamkm.worker")


class Durability:
    """Writes checkpoints and commits offsets; tracks what is not yet durable.

    Attributes
    ----------
    last_checkpoint : CheckpointInfo or None
    n_checkpoints : int
        Checkpoints written by this process.
    last_at : float
        Monotonic time of the last checkpoint (process start if none).
    records_since : int
        Records absorbed since the last checkpoint.
    dirty : bool
        Absorbed progress not yet checkpointed.
    """

    def __init__(self, store: CheckpointStore, metrics: Metrics, *, commit_timeout: float,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.metrics = metrics
        self.commit_timeout = commit_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._clock = clock
        self.last_checkpoint: CheckpointInfo | None = None
        self.n_checkpoints = 0
        self.last_at = clock()
        self.records_since = 0
        self.dirty = False
        # Failing checkpoints: retried with backoff, logged once per change of state.
        self.failing_since: float | None = None
        self.n_failed_attempts = 0
        self._retry_at = 0.0
        self._backoff = backoff_initial
        self.commit_failing = False

    @property
    def blocked(self) -> bool:
        """True while progress cannot be made durable (checkpoints or commits failing)."""
        return self.failing_since is not None or self.commit_failing

    def in_backoff(self) -> bool:
        """True while a failed checkpoint waits for its next retry."""
        return self.failing_since is not None and self._clock() < self._retry_at

    def absorbed(self, n_records: int) -> None:
        """Note *n_records* absorbed into the model (not yet durable)."""
        self.records_since += n_records
        self.dirty = True

    async def checkpoint(self, state: dict[str, Any], reason: str) -> CheckpointInfo | None:
        """Save *state* durably (in a thread); None if the write failed.

        Every failed attempt counts in ``streamkm_checkpoint_failures_total``; only the
        first failure after a success is logged (as an error), and the recovery once.
        """
        t0 = time.perf_counter()
        try:
            info = await asyncio.to_thread(self.store.save, state)
        except Exception as exc:
            self._failed(exc, reason)
            return None
        dt = time.perf_counter() - t0
        if self.failing_since is not None:
            log.warning("checkpoints recovered after %d failed attempt(s) over %.1fs", self.n_failed_attempts,
                        self._clock() - self.failing_since, extra={"event": "checkpoint_recovered"})
            self.failing_since = None
            self.n_failed_attempts = 0
            self._backoff = self.backoff_initial
        self.metrics.checkpoint_written(dt, info.size_bytes)
        self.last_checkpoint = info
        self.n_checkpoints += 1
        self.last_at = time.monotonic()
        self.records_since = 0
        self.dirty = False
        log.info("checkpoint %d written (%s) in %.3fs, %d bytes, offsets %s", info.sequence, reason, dt,
                 info.size_bytes, state["offsets"],
                 extra={"event": "checkpoint", "reason": reason, "sequence": info.sequence,
                        "seconds": dt, "bytes": info.size_bytes})
        return info

    def _failed(self, exc: BaseException, reason: str) -> None:
        self.metrics.checkpoint_failures.inc()
        self.n_failed_attempts += 1
        now = self._clock()
        if self.failing_since is None:
            self.failing_since = now
            # A disk error explains itself; anything else is a bug worth a traceback.
            log.error("checkpoint failed (%s): %s: %s; offsets are not committed until a checkpoint "
                      "succeeds; retrying with backoff (further failures are only counted in "
                      "streamkm_checkpoint_failures_total)", reason, type(exc).__name__, exc,
                      exc_info=not isinstance(exc, OSError), extra={"event": "checkpoint_failed"})
        else:
            log.debug("checkpoint failed again (%s): %s: %s", reason, type(exc).__name__, exc)
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, self.backoff_max)

    async def commit(self, consumer: Any, offsets: dict[TopicPartition, int], reason: str, *,
                     coordinator_known: Callable[[], bool]) -> bool:
        """Commit *offsets* (already in a durable checkpoint); False if skipped or failed."""
        if consumer is None or not offsets:
            return False
        if not coordinator_known():  # broker gone: don't block; the checkpoint has them
            self.commit_failing = True
            self.metrics.commit_failures.inc()
            log.warning("offset commit skipped (%s): group coordinator unavailable", reason,
                        extra={"event": "commit_failed"})
            return False
        try:
            await asyncio.wait_for(consumer.commit(offsets), self.commit_timeout)
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and really_cancelled():
                raise
            self.commit_failing = True
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed (%s): %s: %s", reason, type(exc).__name__, exc,
                        extra={"event": "commit_failed"})
            return False
        self.commit_failing = False
        self.metrics.commits.inc()
        return True

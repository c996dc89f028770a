"""``streamkm run``: the daemon, plus an embedded broker and demo producers when unconfigured.

Starts the health/metrics server and the worker, prints a periodic status
line from the metrics registry, and shuts down gracefully on SIGTERM/SIGINT or
after ``--duration`` seconds (see docs/operations.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamkm.cli._common import (
    EXIT_CHECKPOINT,
    EXIT_FAILURE,
    EXIT_OFFSETS_LOST,
    EXIT_OK,
    EXIT_USAGE,
    eprint,
    load_settings_or_exit,
    setup_logging,
    stop_on_signals,
)

if TYPE_CHECKING:
    from threadpoolctl import threadpool_limits

    from streamkm.config import Settings
    from streamkm.kafka.embedded import EmbeddedBroker
    from streamkm.loadgen import ProduceStats

__all__ = ["register", "cmd_run"]

log = logging.getLogger("streamkm")

DESCRIPTION = """\
Run the streaming k-means daemon: consume the configured topics, cluster the
records into one model per consumer group (group.enabled, the default: members
send chunk statistics, one of them folds them and publishes versions on the
model topic) or, with group.enabled = false, one model per worker checkpointed
with its Kafka offsets; serve /metrics, /healthz and /readyz.

Without kafka.bootstrap_servers it first starts an embedded Kafka-compatible
broker on 127.0.0.1 (in memory) and a demo producer, so the whole loop runs
with one command. SIGTERM or SIGINT (Ctrl-C) shut down gracefully within
worker.shutdown_deadline_seconds; the exit code is then 0."""

_BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``run`` to a ``streamkm`` subparsers object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "run", help="run the daemon (embedded broker + demo when unconfigured)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="TOML config file (default: $STREAMKM_CONFIG or built-ins)")
    p.add_argument("--duration", type=float, default=None,
                   help="stop gracefully after this many seconds (demos, tests)")
    p.add_argument("--status-interval", type=float, default=5.0,
                   help="seconds between one-line status reports on stderr (0: off)")
    p.set_defaults(func=cmd_run)
    return p


# ---------------------------------------------------------------- BLAS threads
def _limit_blas_threads(n: int) -> threadpool_limits | None:
    """Limit every loaded BLAS library (OpenBLAS, MKL, BLIS) to ``n`` threads.

    Returns the active limit (``restore_original_limits()`` undoes it), or
    None when no BLAS library is loaded. The daemon's GEMMs are small (a chunk
    of rows times k centres, LSTM gates), so BLAS threads buy nothing there,
    while on a busy host their spin-waiting makes such calls 10-80x slower
    (see docs/benchmarks.md). The thread count of these libraries is
    process-wide, so the limit also holds in the ``asyncio.to_thread`` workers.
    """
    import numpy  # noqa: F401 -- loads NumPy's BLAS, so that it is found and limited
    from threadpoolctl import threadpool_limits

    limiter = threadpool_limits(n, user_api="blas")
    if limiter.get_original_num_threads().get("blas") is None:
        return None
    return limiter


# ----------------------------------------------------------------- status line
def _metric_sum(registry: Any, name: str, **labels: str) -> float | None:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    total, found = 0.0, False
    for family in registry.collect():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
                found = True
    return total if found else None


def _label_values(registry: Any, name: str, label: str) -> list[str]:
    """Values of ``label`` on the samples called ``name``, in registry order, once each."""
    seen: dict[str, None] = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name == name and label in s.labels:
                seen.setdefault(s.labels[label], None)
    return list(seen)


class _Status:
    """Periodic one-line status from the metrics registry."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self.last_t = time.monotonic()
        self.last_n = _metric_sum(registry, "streamkm_records_consumed_total") or 0.0

    def line(self) -> str:
        r = self.registry
        now = time.monotonic()
        n = _metric_sum(r, "streamkm_records_consumed_total") or 0.0
        rate = (n - self.last_n) / max(now - self.last_t, 1e-9)
        self.last_n, self.last_t = n, now
        parts = [f"{rate:,.0f} records/s", f"{n:,.0f} consumed"]
        clustered = _metric_sum(r, "streamkm_records_clustered_total")
        if clustered is not None:
            parts.append(f"{clustered:,.0f} clustered")
        dlq = _metric_sum(r, "streamkm_records_dead_lettered_total")
        if dlq:
            parts.append(f"{dlq:,.0f} dead-lettered")
        for pipeline in _label_values(r, "streamkm_objective_ewma", "pipeline"):
            obj = _metric_sum(r, "streamkm_objective_ewma", pipeline=pipeline)
            if obj is not None:
                parts.append(f"{pipeline} objective(EWMA) {obj:.4g}")
        reseeds = _metric_sum(r, "streamkm_reseeds_accepted_total")
        if reseeds is not None:
            rejected = _metric_sum(r, "streamkm_reseeds_rejected_total") or 0.0
            parts.append(f"reseeds {reseeds:.0f} (+{rejected:.0f} rejected)")
        drift = _metric_sum(r, "streamkm_drift_detections_total")
        if drift:
            parts.append(f"drifts {drift:.0f}")
        group_versions = _label_values(r, "streamkm_group_reducer", "pipeline")
        if group_versions:  # the group model: no local checkpoints
            for pipeline in group_versions:
                version = _metric_sum(r, "streamkm_model_version", pipeline=pipeline)
                reducer = " (reducer)" if _metric_sum(r, "streamkm_group_reducer", pipeline=pipeline) else ""
                parts.append(f"{pipeline} group model version {0 if version is None else version:.0f}{reducer}")
        elif _metric_sum(r, "streamkm_last_checkpoint_timestamp_seconds"):
            age = _metric_sum(r, "streamkm_last_checkpoint_age_seconds") or 0.0
            parts.append(f"checkpoint age {age:.0f}s")
        else:
            parts.append("no checkpoint yet")
        return " | ".join(parts)


async def _status_loop(registry: Any, interval: float) -> None:
    if interval <= 0:
        return
    status = _Status(registry)
    while True:
        await asyncio.sleep(interval)
        eprint(f"streamkm: {status.line()}")


# ----------------------------------------------------------- embedded broker, demo
async def _start_embedded(settings: Settings) -> EmbeddedBroker:
    from streamkm.kafka.embedded import EmbeddedBroker, create_topics

    eprint("streamkm: no kafka.bootstrap_servers configured -> starting the embedded broker "
           "(Tansu, in memory) on 127.0.0.1")
    broker = EmbeddedBroker()
    await broker.astart()
    from streamkm.pipeline import enabled_topics

    topics = list(enabled_topics(settings).values())
    topics += [t for t in (settings.dlq.topic, settings.output.topic) if t]
    try:
        await create_topics(broker.bootstrap_servers, topics)
    except BaseException:
        await broker.astop()
        broker.cleanup_log()
        raise
    eprint(f"streamkm: embedded broker at {broker.bootstrap_servers}; topics: {', '.join(topics)}")
    return broker


def _start_demo_producers(settings: Settings, bootstrap: str,
                          stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """One demo producer per enabled pipeline, chosen by what its topic carries."""
    from streamkm import loadgen
    from streamkm.pipeline import REGISTRY

    w = settings.worker
    kwargs = settings.kafka.client_kwargs(bootstrap)
    tasks = []
    for spec in REGISTRY:
        topic = spec.topic(settings)
        if not topic:
            continue
        if spec.input_kind == "vectors":
            source = loadgen.blob_records(None, fmt=w.demo_format, n_clusters=w.demo_n_clusters,
                                          n_features=w.demo_n_features, drift_every=w.demo_drift_every,
                                          seed=w.demo_seed)
            eprint(f"streamkm: demo producer -> {topic!r}: {w.demo_n_clusters} drifting Gaussian "
                   f"clusters in {w.demo_n_features}-d, {w.demo_rate:g} records/s ({w.demo_format}); "
                   f"centres move every {w.demo_drift_every} records")
        else:  # "events"
            n_features = settings.sequence.n_features
            if n_features is None and settings.sequence.lstm_path is not None:
                from streamkm.sequence.lstm import LSTMEncoder

                n_features = LSTMEncoder.load(settings.sequence.lstm_path).input_size
            source = loadgen.event_records(None, n_features=int(n_features or 8), seed=w.demo_seed)
            eprint(f"streamkm: demo producer -> {topic!r}: behaviour event streams of 64 keys, "
                   f"{n_features}-d events, {w.demo_rate:g} events/s")
        tasks.append(asyncio.create_task(
            _demo(loadgen.produce(source, topic=topic, client_kwargs=kwargs, rate=w.demo_rate,
                                  progress=False, stop_event=stop)), name=f"demo-{spec.input_kind}"))
    return tasks


async def _demo(coro: Awaitable[ProduceStats]) -> None:
    try:
        stats = await coro
        log.info("demo producer stopped after %d records", stats.records)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("demo producer failed")


# ------------------------------------------------------------------------- run
async def _run(settings: Settings, *, duration: float | None, status_interval: float) -> int:
    from streamkm.ops.http import HealthServer
    from streamkm.ops.metrics import Metrics
    from streamkm.pipeline import enabled_topics
    from streamkm.service.faults import fault_hook_from_env
    from streamkm.service.worker import Worker

    stop, early = stop_on_signals()
    if early is not None:
        eprint(f"streamkm: stopped by {early} before it started")
        return EXIT_OK

    broker = None
    tmp_ckpt: str | None = None
    tasks: list[asyncio.Task[None]] = []
    demo_stop = asyncio.Event()
    health = None
    worker: Any = None
    status_task: asyncio.Task[None] | None = None
    code = EXIT_OK
    try:
        bootstrap = settings.kafka.bootstrap_servers
        if settings.kafka.embedded:
            from streamkm.kafka.embedded import EmbeddedBrokerError

            try:
                broker = await _start_embedded(settings)
            except EmbeddedBrokerError as exc:
                eprint(f"streamkm: cannot start the embedded broker: {exc}")
                return EXIT_FAILURE
            bootstrap = broker.bootstrap_servers
            if "dir" not in settings.checkpoint.model_fields_set:
                # The embedded broker keeps topics in memory: offsets stored by an
                # earlier run would point into a stream that no longer exists.
                import tempfile

                tmp_ckpt = tempfile.mkdtemp(prefix="streamkm-demo-checkpoints-")
                settings.checkpoint.dir = Path(tmp_ckpt)
        if broker is not None and (dim := settings.demo_dimension()) is not None:
            # Its only records are the demo producer's, so every member knows the width.
            settings.input.dimension = dim
            eprint(f"streamkm: input.dimension = {dim} (the demo producer's worker.demo_n_features)")
        if settings.group.enabled:
            eprint(f"streamkm: group model: statistics -> {settings.group_stats_topic!r}, versions -> "
                   f"{settings.group_model_topic!r} (no local checkpoints; progress lives in the model)")
        else:
            eprint(f"streamkm: checkpoints in {settings.checkpoint.dir} "
                   f"(every {settings.checkpoint.interval_seconds:g}s or "
                   f"{settings.checkpoint.interval_records} records, keep {settings.checkpoint.keep})"
                   + (" - temporary, removed at exit" if tmp_ckpt else ""))
        metrics = Metrics()
        try:
            # User errors (unreadable LSTM weights, a checkpoint made with another
            # configuration, a checkpoint directory in use) end here with one line.
            hook = fault_hook_from_env(os.environ.get("STREAMKM_FAULT"))
            if settings.group.enabled:
                from streamkm.service.group import GroupWorker

                worker = GroupWorker(settings, metrics=metrics, bootstrap_servers=bootstrap, fault_hook=hook)
            else:
                worker = Worker(settings, metrics=metrics, bootstrap_servers=bootstrap, fault_hook=hook)
            await worker.start()
        except (ValueError, OSError, RuntimeError) as exc:
            eprint(f"streamkm: cannot start the worker: {exc}")
            return EXIT_USAGE
        if settings.metrics.enabled:
            try:
                health = HealthServer(metrics, host=settings.metrics.host, port=settings.metrics.port,
                                      ready=worker.is_ready, live=worker.is_live,
                                      **settings.metrics.server_kwargs())
            except ValueError as exc:  # an unreadable certificate, key or CA (the files exist: config checked)
                eprint(f"streamkm: cannot serve metrics over HTTPS: {exc} (check metrics.tls_certfile, "
                       "metrics.tls_keyfile, metrics.tls_client_cafile)")
                return EXIT_USAGE
            try:
                await health.start()
            except OSError as exc:
                eprint(f"streamkm: cannot serve metrics on {settings.metrics.host}:"
                       f"{settings.metrics.port} ({exc.strerror or exc}); set metrics.port "
                       "(STREAMKM_METRICS__PORT, 0 = any free port) or metrics.enabled = false")
                health = None
                return EXIT_USAGE
            eprint(f"streamkm: metrics at {health.url}/metrics, liveness {health.url}/healthz, "
                   f"readiness {health.url}/readyz")
        else:
            eprint("streamkm: metrics server disabled (metrics.enabled = false)")
        pipelines = ", ".join(f"{name} <- {topic!r}" for name, topic in enabled_topics(settings).items())
        eprint(f"streamkm: consuming as group {settings.kafka.group_id!r} from {bootstrap}: "
               f"{pipelines}; dead letters -> {settings.dlq.topic!r}; "
               f"assignments -> {settings.output.topic!r}")
        if broker is not None and settings.worker.demo_producer:
            tasks += _start_demo_producers(settings, broker.bootstrap_servers, demo_stop)
        worker_task = asyncio.create_task(worker.run(), name="streamkm-worker")
        status_task = asyncio.create_task(_status_loop(metrics.registry, status_interval), name="streamkm-status")
        tasks.append(status_task)
        eprint("streamkm: running; Ctrl-C (SIGINT) or SIGTERM stops gracefully"
               + (f", or after {duration:g}s" if duration else ""))
        stop_task = asyncio.create_task(stop.wait())
        waiters: set[asyncio.Task[Any]] = {worker_task, stop_task}
        if duration is not None:
            waiters.add(asyncio.create_task(asyncio.sleep(duration)))
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for t in waiters - {worker_task}:
            t.cancel()
        if worker_task in done:
            error = worker_task.exception()
            code = EXIT_FAILURE
            from streamkm.service.group import GroupConfigError
            from streamkm.service.offsets import OffsetsLostError

            if isinstance(error, GroupConfigError):  # a user error: one line, exit 2
                eprint(f"streamkm: {error}")
                code = EXIT_USAGE
            elif isinstance(error, OffsetsLostError):  # retention deleted what the model needs: exit 4
                eprint(f"streamkm: {error}")
                code = EXIT_OFFSETS_LOST
            elif error is not None:
                log.error("worker stopped with an error", exc_info=error)
            else:
                log.error("worker stopped unexpectedly")
        else:
            reason = "signal" if stop.is_set() else f"--duration {duration:g}s elapsed"
            status_task.cancel()  # no status line after the shutdown's own lines
            deadline = settings.worker.shutdown_deadline_seconds
            eprint(f"streamkm: shutting down ({reason}): finishing the batch, "
                   + ("sending its statistics" if settings.group.enabled else "checkpointing and committing")
                   + f" within {deadline:g}s")
            demo_stop.set()
            ok = await worker.shutdown(deadline)
            if not ok:
                log.error("shutdown did not complete within %.1fs", deadline)
                code = EXIT_FAILURE
            elif not worker.final_checkpoint_ok:
                last = getattr(worker.last_checkpoint, "sequence", None)
                eprint(f"streamkm: the final checkpoint could not be written; a restart resumes from "
                       f"checkpoint {last} and replays what came after it")
                code = EXIT_CHECKPOINT
            elif settings.group.enabled:
                v = getattr(worker, "version", None)
                eprint(f"streamkm: stopped cleanly; group model version {getattr(v, 'version', None)}")
            else:
                eprint(f"streamkm: stopped cleanly; last checkpoint: "
                       f"{getattr(worker.last_checkpoint, 'sequence', None)}")
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(worker_task, timeout=5.0)
    finally:
        demo_stop.set()
        if status_task is not None:
            status_task.cancel()  # it never ends by itself: no grace period for it
        for t in tasks:
            if not t.done():
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(t), timeout=3.0)
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if worker is not None:
            with contextlib.suppress(Exception):
                await worker.stop()
        if health is not None:
            await health.stop()
        if broker is not None:
            await broker.astop()
            broker.cleanup_log()
        if tmp_ckpt is not None:
            import shutil

            shutil.rmtree(tmp_ckpt, ignore_errors=True)
    return code


def _upgraded_past_checkpoints(settings: Settings) -> bool:
    """A per-worker deployment from before the group model became the default: checkpoints of
    its own, a broker of its own (the embedded one has no history) and no word on group.enabled."""
    from streamkm.checkpoint import has_checkpoints

    return (settings.group.enabled and "enabled" not in settings.group.model_fields_set
            and not settings.kafka.embedded and has_checkpoints(settings.checkpoint.dir))


def cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings_or_exit(args.config, run=True)
    setup_logging(settings.worker.log_level, settings.worker.log_json)
    blas_limit = None
    if not any(os.environ.get(v) for v in _BLAS_ENV):
        # kept in force for the whole run; the BLAS thread count is process-wide
        blas_limit = _limit_blas_threads(1)
        if blas_limit is not None:
            log.info("BLAS limited to 1 thread (set OPENBLAS_NUM_THREADS to override)")
    if args.duration is not None and args.duration <= 0:
        eprint(f"streamkm run: --duration must be > 0 seconds, got {args.duration}")
        return EXIT_USAGE
    if _upgraded_past_checkpoints(settings):
        eprint(f"streamkm run: {settings.checkpoint.dir} holds per-worker checkpoints, but group.enabled is "
               "not set and the group model is now the default: it would ignore them and start a new model at "
               "the committed offsets. Set group.enabled = false to resume the per-worker model, or "
               "group.enabled = true to start the group model")
        return EXIT_USAGE
    try:
        return asyncio.run(_run(settings, duration=args.duration,
                                status_interval=args.status_interval))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return EXIT_FAILURE
    finally:
        if blas_limit is not None:
            blas_limit.restore_original_limits()

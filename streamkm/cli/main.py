"""The ``streamkm`` command line.

Subcommands
-----------
``streamkm run [--config FILE] [--duration S]``
    Run the daemon. Without ``kafka.bootstrap_servers`` it starts an embedded
    Kafka-compatible broker on 127.0.0.1 and a demo producer first, so the
    whole loop runs with one command. SIGTERM/SIGINT shut down gracefully
    within ``worker.shutdown_deadline_seconds``; the exit code is then 0.
``streamkm config check FILE``
    Validate a config file (plus ``STREAMKM_*`` environment overrides) and
    print the effective configuration with secrets masked. Exit 2 on errors,
    each naming its key.
``streamkm checkpoint inspect DIR``
    Summarize the checkpoints in a directory.
``streamkm produce``
    Load generator: drifting Gaussian clusters, behaviour event streams or a
    recorded file, to a topic, at a rate or as fast as possible.
``streamkm record``
    Dump a topic into a ``.skmrec`` recording for later replay.
``streamkm lstm ...``
    LSTM training/import tools (registered by :mod:`streamkm.cli.lstm`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser"]

log = logging.getLogger("streamkm")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


# --------------------------------------------------------------------- helpers
def _eprint(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


_LOGRECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message + the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _LOGRECORD_ATTRS and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _setup_logging(level: str = "INFO", as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(max(logging.getLevelName(level), logging.WARNING))


_BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
_OPENBLAS_PREFIXES = ("", "scipy_")
_OPENBLAS_SUFFIXES = ("", "64_")


def _openblas_libraries() -> list[str]:
    """Paths of the OpenBLAS builds loaded in this process (Linux; else empty)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    return sorted({ln.split()[-1] for ln in maps.splitlines()
                   if "openblas" in ln.lower() and ln.split()[-1].startswith("/")})


def _limit_blas_threads(n: int) -> dict[str, int]:
    """Set the thread count of every loaded OpenBLAS to ``n``.

    Returns ``{library path: threads now}``. The daemon's GEMMs are small
    (a chunk of rows times k centres, LSTM gates), so BLAS threads buy nothing
    there, while on a busy host their spin-waiting makes such calls 10-80x
    slower (measured: ``_assign`` of 10 000 x 64 rows against 8 centres 36 ms
    with 2 threads under load vs 0.5 ms with 1; see docs/benchmarks.md).
    Best effort: libraries without the OpenBLAS entry points are left alone.
    """
    import ctypes

    out: dict[str, int] = {}
    for path in _openblas_libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for pre in _OPENBLAS_PREFIXES:
            for suf in _OPENBLAS_SUFFIXES:
                setter = getattr(lib, f"{pre}openblas_set_num_threads{suf}", None)
                getter = getattr(lib, f"{pre}openblas_get_num_threads{suf}", None)
                if setter is None or getter is None:
                    continue
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                setter(int(n))
                out[path] = int(getter())
    return out


def _load_settings_or_exit(path: str | None):
    from streamkm.config import ConfigError, load_settings

    try:
        return load_settings(path)
    except ConfigError as exc:
        _eprint(f"streamkm: {exc}")
        raise SystemExit(EXIT_USAGE) from None


# ------------------------------------------------------------------ config check
def cmd_config_check(args: argparse.Namespace) -> int:
    settings = _load_settings_or_exit(args.file)
    print(json.dumps(settings.redacted_dict(), indent=2, sort_keys=False))
    pipelines = ", ".join(f"{p} <- {t}" for p, t in settings.pipelines.items())
    broker = settings.kafka.bootstrap_servers or "embedded broker on 127.0.0.1"
    _eprint(f"config OK: {args.file} (pipelines: {pipelines}; kafka: {broker})")
    return EXIT_OK


# ------------------------------------------------------------- checkpoint inspect
def cmd_checkpoint_inspect(args: argparse.Namespace) -> int:
    from streamkm.checkpoint import inspect_summary

    directory = Path(args.dir)
    if not directory.is_dir():
        _eprint(f"streamkm: checkpoint directory {str(directory)!r} does not exist")
        return EXIT_USAGE
    print(inspect_summary(directory))
    return EXIT_OK


# ----------------------------------------------------------------- produce/record
def _connection(args: argparse.Namespace) -> dict:
    """aiokafka connection kwargs from --config (security) and --bootstrap."""
    if args.config:
        settings = _load_settings_or_exit(args.config)
        if args.bootstrap or settings.kafka.bootstrap_servers:
            return settings.kafka.client_kwargs(args.bootstrap)
    if not args.bootstrap:
        _eprint("streamkm: --bootstrap HOST:PORT is required (or kafka.bootstrap_servers in --config)")
        raise SystemExit(EXIT_USAGE)
    return {"bootstrap_servers": args.bootstrap}


def cmd_produce(args: argparse.Namespace) -> int:
    from streamkm.loadgen import producer as P

    kwargs = _connection(args)
    if args.file:
        source = P.file_records(args.file, fmt=args.format, rows_per_record=args.rows_per_record)
        what = f"replay of {args.file}"
    elif args.source == "events":
        source = P.event_records(args.count, n_keys=args.keys, n_features=args.features,
                                 n_processes=args.processes, seed=args.seed)
        what = f"behaviour events ({args.keys} keys, {args.features} features)"
    else:
        source = P.blob_records(args.count, fmt=args.format, rows_per_record=args.rows_per_record,
                                n_clusters=args.clusters, n_features=args.features,
                                drift_every=args.drift_every or None, seed=args.seed)
        what = (f"drifting blobs ({args.clusters} clusters, {args.features}-d, "
                f"{args.rows_per_record} rows/record, {args.format})")
    rate = f"{args.rate:g} records/s" if args.rate else "as fast as possible"
    _eprint(f"producing {what} to {args.topic!r} at {kwargs['bootstrap_servers']}, "
            f"{args.count if args.count else 'unbounded'} records, {rate}")

    async def go() -> "P.ProduceStats":
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        return await P.produce(source, topic=args.topic, client_kwargs=kwargs, count=args.count,
                               rate=args.rate, partition=args.partition,
                               progress=args.progress, stop_event=stop)

    try:
        stats = asyncio.run(go())
    except ValueError as exc:
        _eprint(f"streamkm produce: {exc}")
        return EXIT_USAGE
    _eprint(f"sent {stats.records} records ({stats.bytes / 1e6:.1f} MB) in {stats.seconds:.2f}s "
            f"= {stats.records_per_second:,.0f} records/s")
    return EXIT_OK


def cmd_record(args: argparse.Namespace) -> int:
    from streamkm.loadgen import producer as P

    kwargs = _connection(args)
    try:
        n = asyncio.run(P.record(topic=args.topic, out=args.out, client_kwargs=kwargs,
                                 count=args.count, timeout_s=args.timeout, progress=args.progress))
    except (ValueError, TimeoutError) as exc:
        _eprint(f"streamkm record: {exc}")
        return EXIT_FAILURE
    _eprint(f"recorded {n} records of {args.topic!r} to {args.out}")
    return EXIT_OK


# --------------------------------------------------------------------------- run
def _metric_sum(registry: Any, name: str, **labels: str) -> float | None:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    total, found = 0.0, False
    for family in registry.collect():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
                found = True
    return total if found else None


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
        for pipeline in ("vectors", "sequence"):
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
        if _metric_sum(r, "streamkm_last_checkpoint_timestamp_seconds"):
            age = _metric_sum(r, "streamkm_last_checkpoint_age_seconds") or 0.0
            parts.append(f"checkpoint age {age:.0f}s")
        else:
            parts.append("no checkpoint yet")
        return " | ".join(parts)


async def _run(settings: Any, *, duration: float | None, status_interval: float) -> int:
    from streamkm.ops.http import HealthServer
    from streamkm.ops.metrics import Metrics
    from streamkm.service.worker import Worker, _fault_hook_from_env

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    broker = None
    tmp_ckpt: str | None = None
    tasks: list[asyncio.Task] = []
    demo_stop = asyncio.Event()
    health = None
    worker = None
    code = EXIT_OK
    try:
        bootstrap = settings.kafka.bootstrap_servers
        if settings.kafka.embedded:
            from streamkm.kafka.embedded import EmbeddedBrokerError

            try:
                broker = await _start_embedded(settings)
            except EmbeddedBrokerError as exc:
                _eprint(f"streamkm: cannot start the embedded broker: {exc}")
                return EXIT_FAILURE
            bootstrap = broker.bootstrap_servers
            if "dir" not in settings.checkpoint.model_fields_set:
                # The embedded broker keeps topics in memory: offsets stored by an
                # earlier run would point into a stream that no longer exists.
                import tempfile

                tmp_ckpt = tempfile.mkdtemp(prefix="streamkm-demo-checkpoints-")
                settings.checkpoint.dir = Path(tmp_ckpt)
        _eprint(f"streamkm: checkpoints in {settings.checkpoint.dir} "
                f"(every {settings.checkpoint.interval_seconds:g}s or "
                f"{settings.checkpoint.interval_records} records, keep {settings.checkpoint.keep})"
                + (" - temporary, removed at exit" if tmp_ckpt else ""))
        metrics = Metrics()
        worker = Worker(settings, metrics=metrics, bootstrap_servers=bootstrap,
                        fault_hook=_fault_hook_from_env(os.environ.get("STREAMKM_FAULT")))
        if settings.metrics.enabled:
            health = HealthServer(metrics, host=settings.metrics.host, port=settings.metrics.port,
                                  ready=worker.is_ready, live=worker.is_live)
            try:
                await health.start()
            except OSError as exc:
                _eprint(f"streamkm: cannot serve metrics on {settings.metrics.host}:"
                        f"{settings.metrics.port} ({exc.strerror or exc}); set metrics.port "
                        "(STREAMKM_METRICS__PORT, 0 = any free port) or metrics.enabled = false")
                health = None
                return EXIT_USAGE
            _eprint(f"streamkm: metrics at {health.url}/metrics, liveness {health.url}/healthz, "
                    f"readiness {health.url}/readyz")
        else:
            _eprint("streamkm: metrics server disabled (metrics.enabled = false)")
        pipelines = ", ".join(f"{name} <- {topic!r}" for name, topic in settings.pipelines.items())
        _eprint(f"streamkm: consuming as group {settings.kafka.group_id!r} from {bootstrap}: "
                f"{pipelines}; dead letters -> {settings.dlq.topic!r}; "
                f"assignments -> {settings.output.topic!r}")
        if broker is not None and settings.worker.demo_producer:
            tasks += _start_demo_producers(settings, bootstrap, demo_stop)
        worker_task = asyncio.create_task(worker.run(), name="streamkm-worker")
        tasks.append(asyncio.create_task(_status_loop(metrics.registry, status_interval),
                                         name="streamkm-status"))
        _eprint("streamkm: running; Ctrl-C (SIGINT) or SIGTERM stops gracefully"
                + (f", or after {duration:g}s" if duration else ""))
        stop_task = asyncio.create_task(stop.wait())
        waiters = {worker_task, stop_task}
        if duration is not None:
            waiters.add(asyncio.create_task(asyncio.sleep(duration)))
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for t in waiters - {worker_task}:
            t.cancel()
        if worker_task in done:
            exc = worker_task.exception()
            if exc is not None:
                log.error("worker stopped with an error", exc_info=exc)
            else:
                log.error("worker stopped unexpectedly")
            code = EXIT_FAILURE
        else:
            reason = "signal" if stop.is_set() else f"--duration {duration:g}s elapsed"
            deadline = settings.worker.shutdown_deadline_seconds
            _eprint(f"streamkm: shutting down ({reason}): finishing the batch, checkpointing and "
                    f"committing within {deadline:g}s")
            demo_stop.set()
            ok = await worker.shutdown(deadline)
            if ok:
                _eprint(f"streamkm: stopped cleanly; last checkpoint: "
                        f"{getattr(worker.last_checkpoint, 'sequence', None)}")
            else:
                log.error("shutdown did not complete within %.1fs", deadline)
                code = EXIT_FAILURE
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(worker_task, timeout=5.0)
    finally:
        demo_stop.set()
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


async def _start_embedded(settings: Any):
    from streamkm.kafka.embedded import EmbeddedBroker, create_topics

    _eprint("streamkm: no kafka.bootstrap_servers configured -> starting the embedded broker "
            "(Tansu, in memory) on 127.0.0.1")
    broker = EmbeddedBroker()
    await broker.astart()
    topics = list(settings.pipelines.values())
    topics += [t for t in (settings.dlq.topic, settings.output.topic) if t]
    try:
        await create_topics(broker.bootstrap_servers, topics)
    except BaseException:
        await broker.astop()
        broker.cleanup_log()
        raise
    _eprint(f"streamkm: embedded broker at {broker.bootstrap_servers}; topics: {', '.join(topics)}")
    return broker


def _start_demo_producers(settings: Any, bootstrap: str, stop: asyncio.Event) -> list[asyncio.Task]:
    from streamkm.loadgen import producer as P

    w = settings.worker
    kwargs = settings.kafka.client_kwargs(bootstrap)
    tasks = []
    if "vectors" in settings.pipelines:
        source = P.blob_records(None, fmt=w.demo_format, n_clusters=w.demo_n_clusters,
                                n_features=w.demo_n_features, drift_every=w.demo_drift_every,
                                seed=w.demo_seed)
        topic = settings.pipelines["vectors"]
        _eprint(f"streamkm: demo producer -> {topic!r}: {w.demo_n_clusters} drifting Gaussian "
                f"clusters in {w.demo_n_features}-d, {w.demo_rate:g} records/s ({w.demo_format}); "
                f"centres move every {w.demo_drift_every} records")
        tasks.append(asyncio.create_task(
            _demo(P.produce(source, topic=topic, client_kwargs=kwargs, rate=w.demo_rate,
                            progress=False, stop_event=stop)), name="demo-vectors"))
    if "sequence" in settings.pipelines:
        n_features = settings.sequence.n_features
        if n_features is None and settings.sequence.lstm_path is not None:
            from streamkm.sequence.lstm import LSTMEncoder

            n_features = LSTMEncoder.load(settings.sequence.lstm_path).input_size
        topic = settings.pipelines["sequence"]
        source = P.event_records(None, n_features=int(n_features or 8), seed=w.demo_seed)
        _eprint(f"streamkm: demo producer -> {topic!r}: behaviour event streams of 64 keys, "
                f"{n_features}-d events, {w.demo_rate:g} events/s")
        tasks.append(asyncio.create_task(
            _demo(P.produce(source, topic=topic, client_kwargs=kwargs, rate=w.demo_rate,
                            progress=False, stop_event=stop)), name="demo-events"))
    return tasks


async def _demo(coro) -> None:
    try:
        stats = await coro
        log.info("demo producer stopped after %d records", stats.records)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("demo producer failed")


async def _status_loop(registry: Any, interval: float) -> None:
    if interval <= 0:
        return
    status = _Status(registry)
    while True:
        await asyncio.sleep(interval)
        _eprint(f"streamkm: {status.line()}")


def cmd_run(args: argparse.Namespace) -> int:
    settings = _load_settings_or_exit(args.config)
    _setup_logging(settings.worker.log_level, settings.worker.log_json)
    if not any(os.environ.get(v) for v in _BLAS_ENV):
        limited = _limit_blas_threads(1)
        if limited:
            log.info("BLAS limited to 1 thread (set OPENBLAS_NUM_THREADS to override)")
    if args.duration is not None and args.duration <= 0:
        _eprint(f"streamkm run: --duration must be > 0 seconds, got {args.duration}")
        return EXIT_USAGE
    try:
        return asyncio.run(_run(settings, duration=args.duration,
                                status_interval=args.status_interval))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return EXIT_FAILURE


# ------------------------------------------------------------------------ parser
def _add_connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", help="Kafka bootstrap servers host:port[,host:port]")
    p.add_argument("--config", help="TOML config for the connection (security settings); "
                   "--bootstrap overrides its kafka.bootstrap_servers")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def build_parser() -> argparse.ArgumentParser:
    from streamkm import __version__

    parser = argparse.ArgumentParser(prog="streamkm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"streamkm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the daemon (embedded broker + demo when unconfigured)")
    p.add_argument("--config", help="TOML config file (default: $STREAMKM_CONFIG or built-ins)")
    p.add_argument("--duration", type=float, default=None,
                   help="stop gracefully after this many seconds (demos, tests)")
    p.add_argument("--status-interval", type=float, default=5.0,
                   help="seconds between one-line status reports on stderr (0: off)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True)
    c = csub.add_parser("check", help="validate a config file and print the effective config")
    c.add_argument("file")
    c.set_defaults(func=cmd_config_check)

    p = sub.add_parser("checkpoint", help="checkpoint tools")
    csub = p.add_subparsers(dest="checkpoint_command", required=True)
    c = csub.add_parser("inspect", help="summarize the checkpoints in DIR")
    c.add_argument("dir")
    c.set_defaults(func=cmd_checkpoint_inspect)

    p = sub.add_parser("produce", help="load generator / replay to a topic")
    _add_connection_args(p)
    p.add_argument("--topic", default="streamkm.vectors", help="destination topic")
    p.add_argument("--source", choices=("blobs", "events"), default="blobs",
                   help="synthetic source: drifting Gaussian clusters or behaviour event streams")
    p.add_argument("--file", help="replay a recorded file (.npz, .jsonl, .skmrec) instead")
    p.add_argument("--count", type=int, default=None, help="records to send (default: unbounded "
                   "for synthetic sources, the whole file for replay)")
    p.add_argument("--rate", type=float, default=None, help="records per second (default: max)")
    p.add_argument("--format", choices=("json", "binary"), default="json",
                   help="vector record format")
    p.add_argument("--rows-per-record", type=int, default=1, help="vectors per record")
    p.add_argument("--clusters", type=int, default=5, help="blobs: Gaussian clusters")
    p.add_argument("--features", type=int, default=8, help="vector / event feature dimension")
    p.add_argument("--drift-every", type=int, default=20_000,
                   help="blobs: centres move every this many vectors (0: never)")
    p.add_argument("--keys", type=int, default=64, help="events: number of entity keys")
    p.add_argument("--processes", type=int, default=4, help="events: behaviour processes")
    p.add_argument("--partition", type=int, default=None, help="send everything to one partition")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("record", help="dump a topic into a .skmrec file for replay")
    _add_connection_args(p)
    p.add_argument("--topic", required=True)
    p.add_argument("--out", required=True, help="output .skmrec file")
    p.add_argument("--count", type=int, default=None, help="stop after this many records")
    p.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds")
    p.set_defaults(func=cmd_record)

    try:
        from streamkm.cli.lstm import register as register_sequence
    except ImportError:  # sequence package not built yet
        register_sequence = None
    if register_sequence is not None:
        register_sequence(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())

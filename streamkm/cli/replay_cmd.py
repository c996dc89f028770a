"""``streamkm replay SOURCE --config FILE --out RUN_DIR``: the group model's pipeline and fold
over a recording, without a broker (a ``kafka:TOPIC`` source is read without joining a group)."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from streamkm.cli._common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, add_progress_args, eprint, load_settings_or_exit

__all__ = ["register"]

DESCRIPTION = """\
Run the vectors (or, --pipeline sequence, the sequence) pipeline on the group
model (decode, validate, dead-letter, chunk, summarise, fold: the daemon's own
code) over a recorded stream, and write RUN_DIR:

  run.json        the summary (records, valid rows, dead letters by reason,
                  chunks, final version, record-time span)
  chunks.jsonl    one line per folded chunk: record time, rows, objective,
                  EWMA, weight per stable cluster id, centre shift, drift,
                  reseed and identity events
  model.npz/.json the final model, as 'streamkm model export' writes it
  reducer.snapshot  the fold's state ('streamkm model export --snapshot')
  reservoir.npy   the model's reservoir sample (for 'streamkm report')

The model is a deterministic function of the records (per partition, in
offset order) and the configuration: chunks hold group.chunk_rows valid rows
of one partition, and the reducer's own RoundFold folds round after round the
next chunk of every partition, in partition order. A live group with
group.ordering = "rounds" (the default) builds the same model, bit for bit,
unless a partition went idle mid-stream (docs/replay.md).

SOURCE: a .skmrec recording ('streamkm record' keeps partitions and offsets),
.npy or .csv vectors, .npz or JSON lines (as 'produce --file' sends them), or
kafka:TOPIC with --bootstrap and an optional offset or time range.

--speed X paces the replay of either pipeline by the records' timestamps
(X = 10: ten times as fast as recorded; the model is the unpaced one's) and
serves /metrics, /healthz and /readyz like the daemon (metrics.* settings), so
dashboards and alerts can be tried on a recording.
SIGTERM or Ctrl-C stops it: RUN_DIR then holds what was folded so far
("complete": false in run.json) and the exit code is 1.

exit codes: 0 done; 1 the topic cannot be read, RUN_DIR cannot be written, or
a paced replay was stopped; 2 usage or configuration error, or an unreadable
source."""


def register(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "replay", help="replay a recording through the group model offline, into a run directory",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="SOURCE", help="a .skmrec/.npy/.csv/.npz/.jsonl file, or kafka:TOPIC")
    p.add_argument("--config", help="TOML configuration (as for streamkm run; default: $STREAMKM_CONFIG or "
                   "the built-in defaults)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write (created; must be "
                   "empty or not exist unless --force)")
    p.add_argument("--force", action="store_true", help="overwrite the files of an existing RUN_DIR")
    p.add_argument("--pipeline", choices=("vectors", "sequence"),
                   help="the pipeline the records are for (default: vectors if input.vectors_enabled, else "
                        "sequence); sequence: events, windows per partition, LSTM embeddings (a .skmrec or "
                        "kafka:TOPIC source; embeddings agree with a live group's to float32 rounding)")
    p.add_argument("--speed", type=float, metavar="X",
                   help="pace the replay by record time, X times as fast as it was recorded, while serving "
                   "/metrics on metrics.host:metrics.port (dashboards and alerts on a recording)")
    p.add_argument("--metrics-port", type=int, metavar="N", help="with --speed: serve /metrics on port N instead")
    t = p.add_argument_group("kafka:TOPIC sources")
    t.add_argument("--bootstrap", help="bootstrap servers (default: kafka.bootstrap_servers)")
    t.add_argument("--start-offset", type=int, help="first offset of every partition")
    t.add_argument("--end-offset", type=int, help="end offset (exclusive) of every partition")
    t.add_argument("--start-time", help="first record time (epoch ms or ISO 8601)")
    t.add_argument("--end-time", help="end record time, exclusive (epoch ms or ISO 8601)")
    t.add_argument("--timeout", type=float, default=120.0, help="seconds to read the topic (default 120)")
    add_progress_args(p)
    p.set_defaults(func=_cmd)
    return p


def _time_ms(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    if text.strip().lstrip("-").isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected epoch milliseconds or an ISO 8601 time") from None
    if dt.tzinfo is None:
        raise ValueError(f"{flag} {text!r}: give a time zone (e.g. 2026-12-01T10:00:00+00:00)")
    return int(dt.timestamp() * 1000)


def _dump_topic(args: argparse.Namespace, settings: Any, topic: str, path: Path) -> None:
    from streamkm import loadgen

    bootstrap = args.bootstrap or settings.kafka.bootstrap_servers
    if not bootstrap:
        raise ValueError("a kafka: source needs --bootstrap (or kafka.bootstrap_servers in --config)")
    kwargs = settings.kafka.client_kwargs(bootstrap)
    asyncio.run(loadgen.record(topic=topic, out=path, client_kwargs=kwargs, timeout_s=args.timeout,
                               progress=False, start_offset=args.start_offset, end_offset=args.end_offset,
                               start_time_ms=_time_ms(args.start_time, "--start-time"),
                               end_time_ms=_time_ms(args.end_time, "--end-time")))


def _cmd(args: argparse.Namespace) -> int:
    from streamkm.replay import TOPIC_PREFIX, open_source

    settings = load_settings_or_exit(args.config)
    pipeline = args.pipeline or ("vectors" if settings.input.vectors_enabled else "sequence")
    if pipeline == "vectors" and not settings.input.vectors_enabled:
        eprint("streamkm replay: --pipeline vectors, but input.vectors_enabled is false")
        return EXIT_USAGE
    if pipeline == "sequence":
        if not settings.sequence.enabled or settings.sequence.lstm_path is None:
            eprint("streamkm replay: --pipeline sequence needs sequence.enabled and sequence.lstm_path")
            return EXIT_USAGE
    args.pipeline = pipeline
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        eprint(f"streamkm replay: --out {out} exists and is not a directory")
        return EXIT_USAGE
    if out.is_dir() and any(out.iterdir()) and not args.force:
        eprint(f"streamkm replay: --out {out} is not empty (use --force to overwrite its files)")
        return EXIT_USAGE
    if args.speed is not None and not args.speed > 0:
        eprint(f"streamkm replay: --speed must be > 0, got {args.speed:g}")
        return EXIT_USAGE
    if args.metrics_port is not None and args.speed is None:
        eprint("streamkm replay: --metrics-port needs --speed (only a paced replay serves /metrics)")
        return EXIT_USAGE
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        eprint(f"streamkm replay: --metrics-port must be in [0, 65535], got {args.metrics_port}")
        return EXIT_USAGE
    is_topic = args.source.startswith(TOPIC_PREFIX)
    if not is_topic and any(v is not None for v in (args.start_offset, args.end_offset, args.start_time,
                                                    args.end_time)):
        eprint("streamkm replay: offset and time ranges apply to kafka:TOPIC sources only")
        return EXIT_USAGE
    topic = (settings.kafka.vectors_topic or "streamkm.vectors") if pipeline == "vectors" \
        else (settings.kafka.events_topic or "streamkm.events")
    tmp: Path | None = None
    try:
        if is_topic:
            name = args.source[len(TOPIC_PREFIX):]
            if not name:
                eprint("streamkm replay: kafka: needs a topic name (kafka:TOPIC)")
                return EXIT_USAGE
            tmp = Path(tempfile.mkdtemp(prefix="streamkm-replay-"))
            path = tmp / "topic.skmrec"
            try:
                _dump_topic(args, settings, name, path)
            except ValueError as exc:
                eprint(f"streamkm replay: {exc}")
                return EXIT_USAGE
            except Exception as exc:  # KafkaError, OSError, TimeoutError: the topic cannot be read
                from streamkm.kafka.tls import explain_connection_error

                kwargs = settings.kafka.client_kwargs(args.bootstrap or settings.kafka.bootstrap_servers)
                eprint(f"streamkm replay: reading {args.source}: "
                       f"{asyncio.run(explain_connection_error(exc, kwargs))}")
                return EXIT_FAILURE
            description = args.source
        else:
            path, description = Path(args.source), args.source
        try:
            source = open_source(str(path), topic=topic, fmt=settings.input.format
                                 if settings.input.format in ("binary", "json") else "binary")
        except ValueError as exc:
            eprint(f"streamkm replay: {exc}")
            return EXIT_USAGE
        return _replay(settings, source, description, out, args)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _replay(settings: Any, source: Any, description: str, out: Path, args: argparse.Namespace) -> int:
    from streamkm.loadgen.producer import progress_bar
    from streamkm.replay import ChunkLog, RoundReplay, write_run

    try:
        out.mkdir(parents=True, exist_ok=True)
        log = ChunkLog(out)
    except OSError as exc:
        eprint(f"streamkm replay: cannot write {out}: {exc.strerror or exc}")
        return EXIT_FAILURE
    bar = progress_bar(source.total, enabled=args.progress)

    def advance(n: int) -> None:
        bar.update(n, 0)

    paced = _Paced(settings, args) if args.speed is not None else None
    try:
        replay = RoundReplay(settings, pipeline=args.pipeline, on_chunk=log.write, on_records=advance,
                             before_block=None if paced is None else paced.wait,
                             after_block=None if paced is None else paced.account,
                             # small blocks pace more smoothly; sequence keeps its default, so
                             # that a paced run embeds the unpaced one's batches (same bits)
                             block_records=256 if paced is not None and args.pipeline == "vectors" else None)
    except (ValueError, OSError) as exc:  # unreadable LSTM weights, say
        log.close(keep=False)
        eprint(f"streamkm replay: {exc}")
        return EXIT_USAGE
    ok = False
    try:
        try:
            if paced is None:
                summary = replay.run(source)
            else:
                paced.replay = replay
                summary = paced.run(source)
        except ValueError as exc:  # a truncated or inconsistent recording
            eprint(f"\nstreamkm replay: {exc}")
            return EXIT_USAGE
        except _MetricsPortError as exc:  # the metrics port is taken
            eprint(f"\nstreamkm replay: cannot serve /metrics: {exc}")
            return EXIT_USAGE
        except OSError as exc:  # the source became unreadable while it was replayed
            eprint(f"\nstreamkm replay: cannot read {description}: {exc.strerror or exc}")
            return EXIT_USAGE
        finally:
            bar.close()
        try:
            log.close()
            doc = write_run(out, replay.model, summary, source=description, pipeline=args.pipeline)
        except OSError as exc:
            eprint(f"streamkm replay: cannot write {out}: {exc.strerror or exc}")
            return EXIT_FAILURE
        ok = True
    finally:
        if not ok:
            log.close(keep=False)
    dl = sum(doc["dead_letters"].values())
    rate = summary.records / summary.seconds if summary.seconds > 0 else 0.0
    eprint(f"{'stopped after replaying' if summary.stopped else 'replayed'} {summary.records:,} records "
           f"({summary.valid_rows:,} valid rows, {dl:,} dead letters) "
           f"from {description} in {summary.seconds:.2f}s ({rate:,.0f} records/s): {summary.chunks} chunks "
           f"in {summary.rounds} rounds, model version {doc['final_version']}"
           + ("" if doc["initialized"] else " (not initialized: too few valid rows)")
           + f"; wrote {out}")
    return EXIT_FAILURE if summary.stopped else EXIT_OK


class _MetricsPortError(Exception):
    """``--speed``: the metrics server could not bind."""


class _Paced:
    """``--speed``: sleep so record time advances X times as fast as wall time, and serve /metrics."""

    def __init__(self, settings: Any, args: argparse.Namespace):
        import threading

        from streamkm.ops.metrics import Metrics

        self.settings = settings
        self.speed = float(args.speed)
        self.port = settings.metrics.port if args.metrics_port is None else int(args.metrics_port)
        self.metrics = Metrics()
        self.metrics.set_consumer_group(settings.kafka.group_id)
        self.replay: Any = None
        self._t0: tuple[int, float] | None = None  # (first record time, its wall time)
        self._stopped = threading.Event()

    def wait(self, block: list[Any]) -> None:
        times = [r.timestamp for r in block if r.timestamp >= 0]
        if not times:
            return  # no record time: nothing to pace by
        import time

        if self._t0 is None:  # record time starts at the first record, not at its block's newest
            self._t0 = (min(times), time.monotonic())
        due = self._t0[1] + (max(times) - self._t0[0]) / 1000.0 / self.speed
        left = due - time.monotonic()
        if left > 0:
            self._stopped.wait(left)

    def account(self, res: Any) -> None:
        from streamkm.service.accounting import account

        account(self.metrics, self.replay.pipeline, res)

    def run(self, source: Any) -> Any:
        from streamkm.cli._common import stop_on_signals
        from streamkm.ops.http import HealthServer

        async def go() -> Any:
            stop, _ = stop_on_signals()
            health = HealthServer(self.metrics, host=self.settings.metrics.host, port=self.port,
                                  **self.settings.metrics.server_kwargs())
            try:
                await health.start()
            except OSError as exc:
                raise _MetricsPortError(f"{self.settings.metrics.host}:{self.port}: {exc.strerror or exc}") from None
            eprint(f"serving /metrics on {health.url} while replaying at {self.speed:g}x record time")
            self.replay.pipeline.init_metrics(self.metrics)
            self.metrics.set_ready(True)
            task = asyncio.ensure_future(asyncio.to_thread(self.replay.run, source))
            waiter = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if not task.done():
                    self.replay.stop()
                    self._stopped.set()
                return await task
            finally:
                waiter.cancel()
                await health.stop()

        return asyncio.run(go())

"""``streamkm produce`` (load generator and replay) and ``streamkm record`` (topic dump)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from streamkm.cli._common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    add_connection_args,
    connection_kwargs,
    eprint,
    stop_on_signals,
)
from streamkm.kafka.tls import explain_connection_error

__all__ = ["register", "cmd_produce", "cmd_record"]

PRODUCE_DESCRIPTION = """\
Send load to a Kafka topic: drifting Gaussian clusters (vectors, JSON or
binary), behaviour event streams keyed by entity, or a recorded file
(.skmrec from 'streamkm record', .npz, or JSON lines) replayed as it is.
Sends at --rate records/s or as fast as the broker accepts, until --count
records are sent, the file ends, or Ctrl-C."""

RECORD_DESCRIPTION = """\
Dump a topic, from the beginning up to its current end, into a .skmrec file
that keeps each record's key, value, timestamp and headers. Partitions are
written one after another in offset order; 'streamkm produce --file' replays
the file byte for byte."""

def register(subparsers: Any) -> None:
    """Add ``produce`` and ``record`` to a ``streamkm`` subparsers object."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("produce", help="load generator / replay to a topic",
                              description=PRODUCE_DESCRIPTION, formatter_class=fmt)
    add_connection_args(p)
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

    p = subparsers.add_parser("record", help="dump a topic into a .skmrec file for replay",
                              description=RECORD_DESCRIPTION, formatter_class=fmt)
    add_connection_args(p)
    p.add_argument("--topic", required=True)
    p.add_argument("--out", required=True, help="output .skmrec file")
    p.add_argument("--count", type=int, default=None, help="stop after this many records")
    p.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds")
    p.set_defaults(func=cmd_record)


def cmd_produce(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from streamkm import loadgen

    kwargs = connection_kwargs(args)
    if args.file and not Path(args.file).exists():
        eprint(f"streamkm produce: replay file {args.file} does not exist")
        return EXIT_USAGE
    if args.file:
        source = loadgen.file_records(args.file, fmt=args.format, rows_per_record=args.rows_per_record)
        what = f"replay of {args.file}"
    elif args.source == "events":
        source = loadgen.event_records(args.count, n_keys=args.keys, n_features=args.features,
                                       n_processes=args.processes, seed=args.seed)
        what = f"behaviour events ({args.keys} keys, {args.features} features)"
    else:
        source = loadgen.blob_records(args.count, fmt=args.format, rows_per_record=args.rows_per_record,
                                      n_clusters=args.clusters, n_features=args.features,
                                      drift_every=args.drift_every or None, seed=args.seed)
        what = (f"drifting blobs ({args.clusters} clusters, {args.features}-d, "
                f"{args.rows_per_record} rows/record, {args.format})")
    rate = f"{args.rate:g} records/s" if args.rate else "as fast as possible"
    eprint(f"producing {what} to {args.topic!r} at {kwargs['bootstrap_servers']}, "
           f"{args.count if args.count else 'unbounded'} records, {rate}")

    async def go() -> loadgen.ProduceStats:
        stop, _ = stop_on_signals()  # a signal during start-up stops it at once
        return await loadgen.produce(source, topic=args.topic, client_kwargs=kwargs, count=args.count,
                                     rate=args.rate, partition=args.partition,
                                     progress=args.progress, stop_event=stop)

    try:
        stats = asyncio.run(go())
    except ValueError as exc:
        eprint(f"streamkm produce: {exc}")
        return EXIT_USAGE
    except (KafkaError, OSError) as exc:  # e.g. an unreachable --bootstrap, a rejected TLS handshake
        eprint(f"streamkm produce: {asyncio.run(explain_connection_error(exc, kwargs))}")
        return EXIT_FAILURE
    eprint(f"sent {stats.records} records ({stats.bytes / 1e6:.1f} MB) in {stats.seconds:.2f}s "
           f"= {stats.records_per_second:,.0f} records/s")
    return EXIT_OK


def cmd_record(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from streamkm import loadgen

    kwargs = connection_kwargs(args)
    try:
        n = asyncio.run(loadgen.record(topic=args.topic, out=args.out, client_kwargs=kwargs,
                                       count=args.count, timeout_s=args.timeout, progress=args.progress))
    except (ValueError, TimeoutError) as exc:
        eprint(f"streamkm record: {exc}")
        return EXIT_FAILURE
    except (KafkaError, OSError) as exc:  # e.g. an unreachable --bootstrap, a rejected TLS handshake
        eprint(f"streamkm record: {asyncio.run(explain_connection_error(exc, kwargs))}")
        return EXIT_FAILURE
    eprint(f"recorded {n} records of {args.topic!r} to {args.out}")
    return EXIT_OK

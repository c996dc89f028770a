"""``streamkm model show``, ``export`` and ``snapshot``: the group model from its topic, or
from a reducer snapshot saved to a file."""

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
cluster ids the daemon emits.

'model snapshot --out FILE' saves the reducer's newest snapshot (its whole
state: model, reservoir, ids, offsets) to FILE, a backup that needs no broker
to read; 'model export --snapshot FILE --out PATH' exports the version it
holds, offline, with the same --config the daemon ran with.

exit codes: 0 done; 1 the topic cannot be read, holds no version (or no
snapshot) of the pipeline, or a file cannot be written; 2 usage or
configuration error, or a snapshot file that is unreadable or was made with
other settings."""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``model show`` and ``model export`` to a ``streamkm`` subparsers object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "model", help="show or export the group model", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    msub = p.add_subparsers(dest="model_command", required=True, metavar="{show,export,snapshot}")
    for name, helptext in (("show", "print the newest model version"),
                           ("export", "write the newest model version as PATH.npz + PATH.json"),
                           ("snapshot", "save the reducer's newest snapshot to a file")):
        c = msub.add_parser(name, help=helptext, description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        c.add_argument("--config", help="TOML configuration (as for streamkm run)")
        c.add_argument("--bootstrap", help="bootstrap servers (default: kafka.bootstrap_servers)")
        c.add_argument("--pipeline", default="vectors", help="pipeline (default: vectors)")
        c.add_argument("--timeout", type=float, default=30.0, help="seconds to read the topic (default 30)")
        if name == "export":
            c.add_argument("--out", required=True, help="output path (PATH.npz and PATH.json are written)")
            c.add_argument("--snapshot", metavar="FILE",
                           help="export from a snapshot file (from 'model snapshot') instead of the topic")
        if name == "snapshot":
            c.add_argument("--out", required=True, help="the file to write")
        c.set_defaults(func=_cmd)
    return p


async def _read_latest(bootstrap: str, settings: Any, pipeline: str, timeout: float) -> tuple[Any, Any]:
    """The newest version of *pipeline* and its newest snapshot (``{"offset", "value"}``), read
    the way every member reads them (:class:`ModelFollower`)."""
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
        return follower.latest.get(pipeline), follower.snapshots.get(pipeline)
    finally:
        await follower.stop()
        await stop_quietly(consumer, "model reader stop")


def _export_snapshot(settings: Any, args: argparse.Namespace) -> int:
    """``model export --snapshot FILE``: no broker; the fold is rebuilt from the file and the settings."""
    from pathlib import Path

    from streamkm.group.export import version_from_snapshot
    from streamkm.service.group import new_group_model

    if not settings.group.enabled:
        eprint("streamkm model export: --snapshot needs the group settings the daemon ran with "
               "(group.enabled = true in --config)")
        return EXIT_USAGE
    path = Path(args.snapshot)
    limit = settings.group.max_message_bytes  # a snapshot is one model-topic message
    try:
        size = path.stat().st_size
        if size > limit:
            eprint(f"streamkm model export: {path} holds {size:,} bytes, more than a snapshot can "
                   f"(group.max_message_bytes = {limit:,})")
            return EXIT_USAGE
        data = path.read_bytes()
    except OSError as exc:
        eprint(f"streamkm model export: cannot read {path}: {exc.strerror or exc}")
        return EXIT_USAGE
    try:
        v = version_from_snapshot(data, new_group_model(settings, args.pipeline))
    except ValueError as exc:
        eprint(f"streamkm model export: {args.snapshot}: {exc}")
        return EXIT_USAGE
    return _export(v, args.out, f", from {args.snapshot}")


def _export(v: Any, out: str, note: str = "") -> int:
    """Write *v* as ``out.npz`` + ``out.json``; the exit code."""
    from streamkm.group.export import export_version

    try:
        npz, meta = export_version(v, out)
    except (ValueError, OSError) as exc:
        eprint(f"streamkm model export: {exc}")
        return EXIT_FAILURE
    print(f"wrote {npz} and {meta} (version {v.version}, {v.centers.shape[0]} clusters{note})")
    return EXIT_OK


def _cmd(args: argparse.Namespace) -> int:
    settings = load_settings_or_exit(args.config)
    if args.model_command == "export" and args.snapshot:
        return _export_snapshot(settings, args)
    bootstrap = args.bootstrap or settings.kafka.bootstrap_servers
    if not bootstrap:
        eprint("streamkm model: no broker: pass --bootstrap HOST:PORT or set kafka.bootstrap_servers")
        return EXIT_USAGE
    try:
        v, snap = asyncio.run(_read_latest(bootstrap, settings, args.pipeline, args.timeout))
    except (LookupError, TimeoutError, OSError) as exc:
        eprint(f"streamkm model: {exc}")
        return EXIT_FAILURE
    except Exception as exc:  # aiokafka connection errors
        eprint(f"streamkm model: cannot read {settings.group_model_topic!r} from {bootstrap}: "
               f"{type(exc).__name__}: {exc}")
        return EXIT_FAILURE
    if args.model_command == "snapshot":
        if snap is None:
            eprint(f"streamkm model snapshot: no snapshot of pipeline {args.pipeline!r} in "
                   f"{settings.group_model_topic!r} (a reducer writes one every group.snapshot_every versions "
                   "and at each handover)")
            return EXIT_FAILURE
        from streamkm.atomic import atomic_write

        try:
            atomic_write(args.out, snap["value"])
        except OSError as exc:
            eprint(f"streamkm model snapshot: cannot write {args.out}: {exc.strerror or exc}")
            return EXIT_FAILURE
        print(f"wrote {args.out} ({len(snap['value']):,} bytes, the snapshot at model-topic offset {snap['offset']})")
        return EXIT_OK
    if v is None:
        eprint(f"streamkm model: no version of pipeline {args.pipeline!r} in {settings.group_model_topic!r}")
        return EXIT_FAILURE
    if args.model_command == "export":
        return _export(v, args.out)
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

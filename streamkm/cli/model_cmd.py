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

'model seed --snapshot FILE' starts a new group from a model: it writes the
snapshot (e.g. RUN_DIR/reducer.snapshot from 'streamkm replay') and its
version to an empty model topic, so that 'streamkm run' goes live from it: the
reducer restores it and folds the (empty) stats log from its start, and each
partition resumes where the snapshot's model ended (for a replay of that
topic: after the replayed records).

exit codes: 0 done; 1 the topic cannot be read or written, holds no version
(or no snapshot) of the pipeline, already holds one (seed), or a file cannot
be written; 2 usage or configuration error, or a snapshot file that is
unreadable or was made with other settings."""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``model show`` and ``model export`` to a ``streamkm`` subparsers object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "model", help="show or export the group model", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    msub = p.add_subparsers(dest="model_command", required=True, metavar="{show,export,snapshot,seed}")
    for name, helptext in (("show", "print the newest model version"),
                           ("export", "write the newest model version as PATH.npz + PATH.json"),
                           ("snapshot", "save the reducer's newest snapshot to a file"),
                           ("seed", "start an empty group model from a snapshot file (go live from a replay)")):
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
        if name == "seed":
            c.add_argument("--snapshot", metavar="FILE", required=True,
                           help="the snapshot to start from (RUN_DIR/reducer.snapshot, or 'model snapshot --out')")
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


def _model_from_snapshot(settings: Any, args: argparse.Namespace, cmd: str) -> Any:
    """The fold restored from ``--snapshot FILE`` under *settings*; an exit code on a user error."""
    from pathlib import Path

    from streamkm.group.export import version_from_snapshot
    from streamkm.service.group import new_group_model

    if not settings.group.enabled:
        eprint(f"streamkm model {cmd}: --snapshot needs the group settings the daemon runs with "
               "(group.enabled = true in --config)")
        return EXIT_USAGE
    path = Path(args.snapshot)
    limit = settings.group.max_message_bytes  # a snapshot is one model-topic message
    try:
        size = path.stat().st_size
        if size > limit:
            eprint(f"streamkm model {cmd}: {path} holds {size:,} bytes, more than a snapshot can "
                   f"(group.max_message_bytes = {limit:,})")
            return EXIT_USAGE
        data = path.read_bytes()
    except OSError as exc:
        eprint(f"streamkm model {cmd}: cannot read {path}: {exc.strerror or exc}")
        return EXIT_USAGE
    model = new_group_model(settings, args.pipeline)
    try:
        version_from_snapshot(data, model)
    except ValueError as exc:
        eprint(f"streamkm model {cmd}: {args.snapshot}: {exc}")
        return EXIT_USAGE
    return model


def _export_snapshot(settings: Any, args: argparse.Namespace) -> int:
    """``model export --snapshot FILE``: no broker; the fold is rebuilt from the file and the settings."""
    model = _model_from_snapshot(settings, args, "export")
    if isinstance(model, int):
        return model
    return _export(model.version(), args.out, f", from {args.snapshot}")


async def _seed(bootstrap: str, settings: Any, model: Any, pipeline: str, timeout: float) -> int:
    """Write *model* as the first snapshot and version of an empty model topic; the exit code."""
    import time

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from streamkm.group.messages import KIND_SNAPSHOT
    from streamkm.group.wire import encode
    from streamkm.kafka.client import start_client, stop_quietly
    from streamkm.kafka.embedded import create_topics
    from streamkm.service.group import group_topics, snapshot_key

    conn = {k: v for k, v in settings.kafka.client_kwargs(bootstrap).items() if k != "bootstrap_servers"}
    if settings.group.create_topics:
        for topic, partitions, configs in group_topics(settings):
            await create_topics(bootstrap, {topic: partitions}, configs=configs, **conn)
    v, _ = await _read_latest(bootstrap, settings, pipeline, timeout)
    if v is not None:
        eprint(f"streamkm model seed: {settings.group_model_topic!r} already holds version {v.version} of "
               f"{pipeline!r}; a seed starts a new group (use another kafka.group_id or group.model_topic)")
        return EXIT_FAILURE
    consumer = AIOKafkaConsumer(**settings.kafka.client_kwargs(bootstrap), group_id=None, enable_auto_commit=False)
    await start_client(consumer, timeout)
    try:
        stats = TopicPartition(settings.group_stats_topic, 0)
        ends = await asyncio.wait_for(consumer.end_offsets([stats]), timeout)
    finally:
        await stop_quietly(consumer, "seed check stop")
    if ends.get(stats, 0) > 0:
        eprint(f"streamkm model seed: {settings.group_stats_topic!r} already holds statistics; a seed starts "
               "a new group (use another kafka.group_id or group.stats_topic)")
        return EXIT_FAILURE
    model.stats_offset_ = -1  # the new group's stats log starts empty: fold it from offset 0
    state = {"pipeline": pipeline, "stats_offset": -1, "state": model.state_dict(), "config_hash": model.config_hash}
    producer = AIOKafkaProducer(**settings.kafka.client_kwargs(bootstrap), acks="all",
                                max_request_size=settings.group.max_message_bytes)
    await start_client(producer, timeout)
    try:
        await producer.send_and_wait(settings.group_model_topic, encode(KIND_SNAPSHOT, state),
                                     key=snapshot_key(pipeline))
        v = model.version(published_at=time.time())
        await producer.send_and_wait(settings.group_model_topic, v.to_bytes(), key=pipeline.encode())
    finally:
        await stop_quietly(producer, "seed producer stop")
    print(f"seeded {settings.group_model_topic!r} with version {v.version} of {pipeline!r} ({v.n_seen:,} points, "
          f"{v.centers.shape[0]} clusters); partitions resume at {dict(sorted(v.offsets.items()))}")
    return EXIT_OK


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
    if args.model_command == "seed":
        model = _model_from_snapshot(settings, args, "seed")
        if isinstance(model, int):
            return model
    try:
        if args.model_command == "seed":
            return asyncio.run(_seed(bootstrap, settings, model, args.pipeline, args.timeout))
        v, snap = asyncio.run(_read_latest(bootstrap, settings, args.pipeline, args.timeout))
    except (LookupError, TimeoutError, OSError) as exc:
        eprint(f"streamkm model {args.model_command}: {exc}")
        return EXIT_FAILURE
    except Exception as exc:  # aiokafka connection errors
        eprint(f"streamkm model {args.model_command}: cannot use {settings.group_model_topic!r} at {bootstrap}: "
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

"""``streamkm checkpoint inspect``: summarize the checkpoints in a directory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from streamkm.cli._common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, eprint

__all__ = ["register", "cmd_checkpoint_inspect"]

DESCRIPTION = """\
Summarize the newest valid checkpoint in a checkpoint directory: sequence
number, age, size, model version, the Kafka offsets it covers and, per
pipeline, k, dimension, cluster weights and points seen. Invalid checkpoints
that were skipped are listed too."""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``checkpoint inspect DIR`` to a ``streamkm`` subparsers object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "checkpoint", help="checkpoint tools", description="Checkpoint tools.")
    csub = p.add_subparsers(dest="checkpoint_command", required=True, metavar="{inspect}")
    c = csub.add_parser("inspect", help="summarize the checkpoints in DIR",
                        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("dir", help="checkpoint directory (checkpoint.dir)")
    c.add_argument("--max-file-bytes", type=int, default=None, metavar="N",
                   help="size limit of each checkpoint file, larger ones are reported invalid unread "
                        "(checkpoint.max_file_bytes; default 2 GiB)")
    c.set_defaults(func=cmd_checkpoint_inspect)
    return p


def cmd_checkpoint_inspect(args: argparse.Namespace) -> int:
    from streamkm.checkpoint import DEFAULT_MAX_FILE_BYTES, inspect_summary

    directory = Path(args.dir)
    if not directory.is_dir():
        eprint(f"streamkm: checkpoint directory {str(directory)!r} does not exist")
        return EXIT_USAGE
    limit = DEFAULT_MAX_FILE_BYTES if args.max_file_bytes is None else args.max_file_bytes
    if limit < 1:
        eprint(f"streamkm: --max-file-bytes must be >= 1, got {limit}")
        return EXIT_USAGE
    try:
        summary = inspect_summary(directory, max_file_bytes=limit)
    except OSError as exc:
        eprint(f"streamkm: cannot read checkpoint directory {str(directory)!r}: {exc}")
        return EXIT_FAILURE
    print(summary)
    return EXIT_OK

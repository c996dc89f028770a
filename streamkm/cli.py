"""The ``streamkm`` command line."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from streamkm import __version__

    parser = argparse.ArgumentParser(prog="streamkm", description=__doc__)
    parser.add_argument("--version", action="version", version=f"streamkm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    try:
        from streamkm.sequence.cli import register as register_sequence
    except ImportError:  # sequence package not built yet
        register_sequence = None
    if register_sequence is not None:
        register_sequence(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""The ``streamkm`` command line."""

from streamkm.cli.main import build_parser, main

__all__ = ["main", "build_parser"]

"""The ``streamkm`` command line (``streamkm`` console script and ``python -m streamkm``)."""

from streamkm.cli.main import build_parser, main

__all__ = ["main", "build_parser"]

"""``streamkm config check``: validate a config file and print the effective configuration."""

from __future__ import annotations

import argparse
import json
from typing import Any

from streamkm.cli._common import EXIT_OK, eprint, load_settings_or_exit

__all__ = ["register", "cmd_config_check"]

DESCRIPTION = """\
Validate a TOML config file together with the STREAMKM_* environment overrides
and print the effective configuration as JSON on stdout, with secrets masked.
Errors name the offending key and exit with code 2."""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``config check FILE`` to a ``streamkm`` subparsers object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "config", help="configuration tools", description="Configuration tools.")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="{check}")
    c = csub.add_parser("check", help="validate a config file and print the effective config",
                        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("file", help="TOML config file")
    c.set_defaults(func=cmd_config_check)
    return p


def cmd_config_check(args: argparse.Namespace) -> int:
    settings = load_settings_or_exit(args.file, run=True)
    print(json.dumps(settings.redacted_dict(), indent=2, sort_keys=False))
    from streamkm.pipeline import enabled_topics

    pipelines = ", ".join(f"{p} <- {t}" for p, t in enabled_topics(settings).items())
    broker = settings.kafka.bootstrap_servers or "embedded broker on 127.0.0.1"
    eprint(f"config OK: {args.file} (pipelines: {pipelines}; kafka: {broker})")
    return EXIT_OK

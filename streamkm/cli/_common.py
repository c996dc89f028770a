"""Helpers shared by the ``streamkm`` subcommands: exit codes, stderr output,
settings loading, Kafka connection arguments and logging set-up."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from streamkm.config import Settings

__all__ = [
    "EXIT_OK",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "EXIT_CHECKPOINT",
    "EXIT_OFFSETS_LOST",
    "eprint",
    "early_signal",
    "stop_on_signals",
    "note_early_signal",
    "fail",
    "load_settings_or_exit",
    "add_connection_args",
    "add_progress_args",
    "connection_kwargs",
    "JsonFormatter",
    "setup_logging",
]

EXIT_OK = 0
"""The command did what it was asked."""
EXIT_FAILURE = 1
"""It ran but failed (broker unreachable, shutdown deadline missed, ...)."""
EXIT_USAGE = 2
"""Bad command line or configuration; nothing was done."""
EXIT_CHECKPOINT = 3
"""``run`` stopped, but its final checkpoint could not be written (a restart replays from the last one)."""
EXIT_OFFSETS_LOST = 4
"""``run`` stopped: the broker no longer holds offsets the model needs (``kafka.on_offsets_lost``)."""


_early_signal: list[str] = []


def note_early_signal(name: str | None) -> None:
    """Record that *name* (``"SIGTERM"``) arrived before a command's own handling; None clears it."""
    _early_signal[:] = [] if name is None else [name]


def early_signal() -> str | None:
    """The signal that arrived during start-up, if any.

    A command checks it right after its event loop takes the signals over: the start-up
    handler's exception can be lost (raised inside a finalizer or a ctypes callback), its
    record cannot.
    """
    return _early_signal[0] if _early_signal else None


def stop_on_signals() -> tuple[asyncio.Event, str | None]:
    """An event that SIGINT and SIGTERM set from now on (the running loop's handlers), and the
    signal that arrived during start-up, if one did: then the command should stop at once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    early = early_signal()
    if early is not None:
        stop.set()
    return stop, early


def eprint(*args: Any) -> None:
    """``print`` to stderr, flushed (progress and status go there; stdout is for results)."""
    print(*args, file=sys.stderr, flush=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``streamkm: message`` to stderr and exit with ``code`` (no traceback)."""
    eprint(f"streamkm: {message}")
    raise SystemExit(code)


def load_settings_or_exit(path: str | None, *, run: bool = False) -> Settings:
    """The settings from ``path`` (+ ``STREAMKM_*`` variables); exit 2 naming the bad key.

    *run*: also what the daemon refuses (:meth:`Settings.run_problems`), for ``run`` and
    ``config check``.
    """
    from streamkm.config import ConfigError, load_settings

    try:
        settings = load_settings(path)
        if run and (problems := settings.run_problems()):
            raise ConfigError(problems, source=path)
        return settings
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


def add_progress_args(p: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress`` into ``args.progress`` (None: only on a terminal)."""
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="show a progress bar on stderr (default: only when stderr is a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="never show a progress bar")


def add_connection_args(p: argparse.ArgumentParser) -> None:
    """``--bootstrap``, ``--config`` and the progress flags of ``produce`` / ``record``."""
    p.add_argument("--bootstrap", help="Kafka bootstrap servers host:port[,host:port]")
    p.add_argument("--config", help="TOML config for the connection (security settings); "
                   "--bootstrap overrides its kafka.bootstrap_servers")
    add_progress_args(p)


def connection_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """aiokafka connection kwargs from ``--config`` (security) and ``--bootstrap``."""
    if args.config:
        settings = load_settings_or_exit(args.config)
        if args.bootstrap or settings.kafka.bootstrap_servers:
            kwargs: dict[str, Any] = settings.kafka.client_kwargs(args.bootstrap)
            return kwargs
    if not args.bootstrap:
        fail("--bootstrap HOST:PORT is required (or kafka.bootstrap_servers in --config)", EXIT_USAGE)
    return {"bootstrap_servers": args.bootstrap}


_LOGRECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message + the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _LOGRECORD_ATTRS and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str = "INFO", as_json: bool = False) -> None:
    """Send all logging to stderr, as text or as JSON lines; aiokafka at WARNING or above."""
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(max(logging.getLevelName(level), logging.WARNING))

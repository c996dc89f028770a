"""The ``streamkm`` command: argument parser, subcommand dispatch and exit codes.

Each subcommand lives in its own module (run, broker_cmd, config_cmd,
checkpoint_cmd, model_cmd, produce, report_cmd, lstm) and adds itself to the
parser with ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading

from streamkm.cli import (
    _common,
    broker_cmd,
    checkpoint_cmd,
    config_cmd,
    model_cmd,
    produce,
    replay_cmd,
    report_cmd,
    run,
)
from streamkm.cli._common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, eprint

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE"]

DESCRIPTION = """\
streamkm: streaming k-means clustering of Kafka record streams, with LSTM
sequence embeddings, checkpoints and Prometheus metrics.

Run 'streamkm run' with no configuration for a self-contained demo (embedded
broker and demo producer); 'streamkm COMMAND --help' describes each command."""

EPILOG = """\
exit codes:
  0  success (including a graceful shutdown of run or broker on SIGTERM/SIGINT)
  1  failure (the broker is unreachable, the worker failed, the shutdown
     deadline passed, interrupted; a one-shot command stopped by SIGTERM)
  2  usage or configuration error (also: a checkpoint made with another
     configuration, unreadable LSTM weights); nothing was done
  3  run: stopped, but the final checkpoint could not be written (a restart
     resumes from the last checkpoint and replays what came after it)

configuration: a TOML file (--config or $STREAMKM_CONFIG) plus STREAMKM_*
environment variables, e.g. STREAMKM_MODEL__N_CLUSTERS=8; check it with
'streamkm config check FILE'. Documentation: docs/operations.md."""


def build_parser() -> argparse.ArgumentParser:
    """The ``streamkm`` argument parser with all subcommands."""
    from streamkm import __version__

    parser = argparse.ArgumentParser(prog="streamkm", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"streamkm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run.register(sub)
    config_cmd.register(sub)
    checkpoint_cmd.register(sub)
    model_cmd.register(sub)
    produce.register(sub)
    replay_cmd.register(sub)
    broker_cmd.register(sub)
    report_cmd.register(sub)
    try:
        from streamkm.cli import lstm
    except ImportError:  # sequence package not built yet
        pass
    else:
        lstm.register(sub)
    return parser


class _Stopped(BaseException):
    """SIGTERM arrived before a command installed its own handling (the event loop's).

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way swallows it.
    """


def _raise_stopped(signum: int, frame: object) -> None:
    # Recorded before raising: an exception raised inside a finalizer or a ctypes callback
    # (threadpoolctl's library scan) is printed and dropped, and the command must still stop.
    name = signal.Signals(signum).name
    _common.note_early_signal(name)
    raise _Stopped(name)


#: Commands that serve until told to stop: SIGTERM is their normal end, at any moment.
_DAEMONS = frozenset({"run", "broker"})


def _stopped(signame: str, argv: list[str] | None) -> int:
    """Exit code of a command stopped by *signame* before its own handling: 0 for a daemon,
    1 for a one-shot command (it did not do its work; a script must not carry on)."""
    words = sys.argv[1:] if argv is None else argv
    command = next((w for w in words if not w.startswith("-")), None)
    if command in _DAEMONS:
        eprint(f"streamkm: stopped by {signame} before it started")
        return EXIT_OK
    eprint(f"streamkm: stopped by {signame} before it finished")
    return EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    """Run the ``streamkm`` command line; return the exit code.

    With *argv* None (the process entry point) SIGTERM is ignored once the command has
    finished, so that a signal during interpreter shutdown cannot turn its exit code into -15.
    """
    # Until a command's event loop takes SIGTERM over, it ends start-up cleanly (exit 0)
    # instead of killing the process half way, its default action.
    previous = None
    _common.note_early_signal(None)
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        try:
            code = int(args.func(args) or 0)
        except SystemExit as exc:
            code = int(exc.code or 0) if isinstance(exc.code, int) else EXIT_FAILURE
        except KeyboardInterrupt:
            eprint("streamkm: interrupted")
            code = EXIT_FAILURE
    except BrokenPipeError:
        # The reader of stdout went away (`streamkm model show | head`): nothing left to say.
        # Point stdout at /dev/null so that the interpreter's final flush cannot fail again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_OK
    except _Stopped as exc:
        code = _stopped(str(exc), argv)
    except Exception:
        # Raised inside a C extension, _Stopped can come out wrapped (pydantic-core turns it
        # into a SchemaError while building a model class): the record says what it was.
        if (early := _common.early_signal()) is None:
            raise
        code = _stopped(early, argv)
    finally:
        if previous is not None:
            exiting = argv is None and previous == signal.SIG_DFL
            signal.signal(signal.SIGTERM, signal.SIG_IGN if exiting else previous)
    return code


if __name__ == "__main__":
    sys.exit(main())

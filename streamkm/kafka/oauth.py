"""SASL OAUTHBEARER tokens for aiokafka: read from a file or printed by a command.

aiokafka asks its ``sasl_oauth_token_provider`` (an
:class:`aiokafka.abc.AbstractTokenProvider`) for a token every time it opens a broker
connection; the token goes into the SASL ``auth=Bearer <token>`` message. Both
providers here fetch a fresh token on every request, so a rotated token is used by
the next connection:

- :class:`FileTokenProvider` reads the file again each time (a sidecar or a mounted
  Kubernetes secret replaces it; surrounding whitespace is stripped).
- :class:`CommandTokenProvider` runs a program (no shell) with a timeout; its
  standard output, stripped, is the token. It runs once per new connection: a few
  times at start-up, then on reconnects, so it should be quick or cache by itself.
  At most :data:`MAX_COMMAND_OUTPUT_BYTES` of its standard output and the last
  :data:`STDERR_TAIL_BYTES` of its standard error are held in memory: a program
  that prints more on standard output is killed and refused as it goes over.

A token must be a non-empty RFC 6750 ``b64token`` (letters, digits, ``-._~+/``,
trailing ``=``), which also keeps a stray line of output or a control character
out of the SASL message. Every failure raises :class:`TokenError`, whose message
names the file or command and never contains the token. It is a
:class:`aiokafka.errors.KafkaError`: aiokafka logs it as the reason the connection
failed, and the worker retries with backoff as for any broker error.

Example
-------
>>> import asyncio, pathlib, tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     path = pathlib.Path(d) / "token"
...     _ = path.write_text("eyJhbGciOiJub25lIn0.e30.\\n")
...     asyncio.run(FileTokenProvider(path).token())
'eyJhbGciOiJub25lIn0.e30.'
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from aiokafka.abc import AbstractTokenProvider
from aiokafka.errors import KafkaError

__all__ = ["TokenError", "FileTokenProvider", "CommandTokenProvider", "check_token", "split_command",
           "MAX_COMMAND_OUTPUT_BYTES", "STDERR_TAIL_BYTES"]

# RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_MAX_TOKEN_BYTES = 64 * 1024
_STDERR_SHOWN = 300
#: Standard output a token command may print (a token plus slack for whitespace); more is refused.
MAX_COMMAND_OUTPUT_BYTES = _MAX_TOKEN_BYTES + 1024
#: Bytes of a token command's standard error kept (its end: the last line goes into the error).
STDERR_TAIL_BYTES = 4096
_READ_CHUNK = 16 * 1024


class TokenError(KafkaError):
    """No usable OAUTHBEARER token: the message says why and names the source, never the token."""

    retriable = True


def check_token(token: str, source: str) -> str:
    """Return *token* stripped of surrounding whitespace if it is a valid bearer token.

    Parameters
    ----------
    token : str
        What the file or command produced.
    source : str
        Where it came from, for the error message (``"token file '/run/token'"``).

    Raises
    ------
    TokenError
        The token is empty, too long, or not an RFC 6750 ``b64token``.
    """
    t = token.strip()
    if not t:
        raise TokenError(f"SASL OAUTHBEARER: {source} gave an empty token")
    if len(t) > _MAX_TOKEN_BYTES:
        raise TokenError(f"SASL OAUTHBEARER: {source} gave {len(t)} characters, more than the "
                         f"{_MAX_TOKEN_BYTES} a token may have")
    if _B64TOKEN.fullmatch(t) is None:
        raise TokenError(f"SASL OAUTHBEARER: {source} did not give one bearer token ({len(t)} characters, "
                         "not only letters, digits, -._~+/ and trailing =; more than one line?)")
    return t


def split_command(command: str | Sequence[str]) -> list[str]:
    """The argument vector of *command*: a string is split like a shell line (:func:`shlex.split`).

    Raises
    ------
    ValueError
        The command is empty or its quoting is unbalanced.
    """
    if isinstance(command, str):
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise ValueError(f"cannot split the token command {command!r}: {exc}") from None
    else:
        argv = [str(a) for a in command]
    if not argv or not argv[0]:
        raise ValueError("the token command is empty")
    return argv


class FileTokenProvider(AbstractTokenProvider):
    """A token read from *path* on every request (so a replaced file takes effect).

    Parameters
    ----------
    path : str or path
        The token file: one token, surrounding whitespace ignored.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"FileTokenProvider({str(self.path)!r})"

    async def token(self) -> str:
        """The file's token (read in a thread: it may be on a slow volume)."""
        return await asyncio.to_thread(self._read)

    def _read(self) -> str:
        source = f"token file {str(self.path)!r}"
        try:
            with open(self.path, "rb") as f:
                raw = f.read(_MAX_TOKEN_BYTES + 1024)
        except OSError as exc:
            raise TokenError(f"SASL OAUTHBEARER: cannot read the {source}: {exc.strerror or exc}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise TokenError(f"SASL OAUTHBEARER: the {source} is not UTF-8 text") from None
        return check_token(text, f"the {source}")


class CommandTokenProvider(AbstractTokenProvider):
    """A token printed by a program, run (without a shell) on every request.

    Parameters
    ----------
    command : str or sequence of str
        The program and its arguments; a string is split with :func:`shlex.split`.
    timeout_seconds : float, default 10.0
        The program (its whole process group) is killed after this long.

    Notes
    -----
    The program gets no standard input and the daemon's environment. It must exit
    0 and print the token on standard output; a non-zero exit, a timeout, more than
    :data:`MAX_COMMAND_OUTPUT_BYTES` on standard output or a bad token raises
    :class:`TokenError` (with the last line of its standard error for a non-zero exit).
    The output is read as it comes, never more than the cap (only the last
    :data:`STDERR_TAIL_BYTES` of standard error are kept), and on any failure the
    program's process group is killed.
    """

    def __init__(self, command: str | Sequence[str], *, timeout_seconds: float = 10.0) -> None:
        self.argv = split_command(command)
        if not timeout_seconds > 0:
            raise ValueError(f"timeout_seconds must be > 0, got {timeout_seconds!r}")
        self.timeout_seconds = float(timeout_seconds)

    def __repr__(self) -> str:
        # The program only: its arguments may hold a client secret.
        return f"CommandTokenProvider({self.argv[0]!r} ..., timeout_seconds={self.timeout_seconds:g})"

    async def token(self) -> str:
        """Run the command and return its stripped standard output."""
        name = f"token command {self.argv[0]!r}"  # never its arguments (they may hold a secret)
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True)  # its own process group: a timeout kills its children too
        except OSError as exc:
            raise TokenError(f"SASL OAUTHBEARER: cannot run the {name}: {exc.strerror or exc}") from None
        try:
            out, err = await asyncio.wait_for(_communicate(proc), self.timeout_seconds)
        except TimeoutError:
            await _kill_group(proc)
            raise TokenError(f"SASL OAUTHBEARER: the {name} did not finish within "
                             f"{self.timeout_seconds:g}s (killed)") from None
        except _OutputTooLarge:
            await _kill_group(proc)
            raise TokenError(f"SASL OAUTHBEARER: the {name} printed more than {MAX_COMMAND_OUTPUT_BYTES} "
                             "bytes on standard output, more than a token may have (killed)") from None
        except BaseException:  # cancelled: do not leave the program running
            await _kill_group(proc)
            raise
        if proc.returncode != 0:
            raise TokenError(f"SASL OAUTHBEARER: the {name} failed with exit code {proc.returncode}"
                             + _last_line(err))
        try:
            text = out.decode("utf-8")
        except UnicodeDecodeError:
            raise TokenError(f"SASL OAUTHBEARER: the {name} printed something that is not UTF-8") from None
        return check_token(text, f"the {name}")


class _OutputTooLarge(Exception):
    pass


async def _communicate(proc: asyncio.subprocess.Process) -> tuple[bytes, bytes]:
    """(stdout, tail of stderr) once the program has exited; :class:`_OutputTooLarge` as soon as
    stdout exceeds :data:`MAX_COMMAND_OUTPUT_BYTES` (``communicate()`` would buffer all of it)."""
    assert proc.stdout is not None and proc.stderr is not None
    err_task = asyncio.ensure_future(_read_tail(proc.stderr, STDERR_TAIL_BYTES))
    try:
        out = await _read_capped(proc.stdout, MAX_COMMAND_OUTPUT_BYTES)
        err = await err_task
        await proc.wait()
    finally:
        if not err_task.done():
            err_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await err_task
    return out, err


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Everything *stream* gives until EOF, or :class:`_OutputTooLarge` once it exceeds *limit*."""
    buf = bytearray()
    while chunk := await stream.read(_READ_CHUNK):
        buf += chunk
        if len(buf) > limit:
            raise _OutputTooLarge
    return bytes(buf)


async def _read_tail(stream: asyncio.StreamReader, keep: int) -> bytes:
    """The last *keep* bytes *stream* gives until EOF (the rest is read and dropped)."""
    tail = b""
    while chunk := await stream.read(_READ_CHUNK):
        tail = (tail + chunk)[-keep:]
    return tail


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    if not lines:
        return ""
    line = lines[-1].strip()
    if len(line) > _STDERR_SHOWN:
        line = line[:_STDERR_SHOWN] + "..."
    return f": {line}"


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the command's process group (it leads it: start_new_session), read its pipes to
    the end and reap it.

    asyncio closes a subprocess transport only once the process has exited *and* both pipes
    reached EOF. A reader that stopped early (output over the cap leaves the stdout reader
    paused with a full buffer) never sees EOF, so the transport stayed open and was closed by
    the garbage collector after its event loop had closed ("Event loop is closed"). The group
    is dead, so what is left in the pipes is bounded by their buffers.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.gather(_drain(proc.stdout), _drain(proc.stderr), proc.wait()), 5.0)


async def _drain(stream: asyncio.StreamReader | None) -> None:
    """Read *stream* to EOF, dropping what it gives."""
    if stream is not None:
        while await stream.read(_READ_CHUNK):
            pass

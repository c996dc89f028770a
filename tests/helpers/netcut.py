"""A loopback TCP proxy that can cut one process off the network and heal it.

Every client reaches the broker through the proxy (the broker advertises the proxy's
address). :meth:`CutProxy.cut` stops forwarding, in both directions, on every
connection that belongs to a process, and on every new one it opens, without closing
anything: like a network partition, requests hang and time out; the bytes already
sent wait in the socket buffers. :meth:`CutProxy.heal` lets them flow again, so the
streams stay intact. A connection is attributed to a process by its client port,
looked up in ``/proc/<pid>/fd`` and ``/proc/net/tcp`` (Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from dataclasses import dataclass, field

__all__ = ["CutProxy", "tcp_ports_of"]


def tcp_ports_of(pid: int) -> set[int]:
    """Local TCP ports of the sockets process *pid* holds open."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            next(fh)
            for line in fh:
                cols = line.split()
                if len(cols) > 9 and cols[9] in inodes:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


@dataclass
class _Conn:
    peer_port: int
    gate: asyncio.Event
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class CutProxy:
    """Forward ``127.0.0.1:listen_port`` to ``127.0.0.1:target_port`` in a background thread."""

    def __init__(self, listen_port: int, target_port: int, host: str = "127.0.0.1"):
        self.host, self.listen_port, self.target_port = host, listen_port, target_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cut-proxy", daemon=True)
        self._conns: list[_Conn] = []
        self._victims: set[int] = set()
        self._server: asyncio.AbstractServer | None = None
        self.n_connections = 0
        self.n_cut = 0

    def start(self) -> CutProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.listen_port)

    def stop(self) -> None:
        async def _stop() -> None:
            if self._server is not None:
                self._server.close()
            for c in self._conns:
                for t in c.tasks:
                    t.cancel()
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def cut(self, pid: int) -> int:
        """Stop forwarding for process *pid*; returns how many open connections were cut."""
        async def _cut() -> int:
            self._victims.add(pid)
            ports = tcp_ports_of(pid)
            n = 0
            for c in self._conns:
                if c.peer_port in ports:
                    c.gate.clear()
                    n += 1
            self.n_cut += n
            return n
        return asyncio.run_coroutine_threadsafe(_cut(), self._loop).result(10)

    def heal(self, pid: int) -> None:
        """Forward again everything of process *pid* (cut connections resume where they stopped)."""
        async def _heal() -> None:
            self._victims.discard(pid)
            for c in self._conns:
                c.gate.set()
        asyncio.run_coroutine_threadsafe(_heal(), self._loop).result(10)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.n_connections += 1
        peer_port = writer.get_extra_info("peername")[1]
        gate = asyncio.Event()
        if not any(peer_port in tcp_ports_of(pid) for pid in self._victims):
            gate.set()
        try:
            up_r, up_w = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.close()
            return
        conn = _Conn(peer_port, gate)
        conn.tasks = [asyncio.ensure_future(self._pump(reader, up_w, gate)),
                      asyncio.ensure_future(self._pump(up_r, writer, gate))]
        self._conns.append(conn)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, gate: asyncio.Event) -> None:
        try:
            while True:
                await gate.wait()
                data = await src.read(65536)
                if not data:
                    break
                await gate.wait()  # bytes read just before a cut wait for the heal
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()

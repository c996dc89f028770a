"""A throw-away PKI (Debian's ``openssl``) and ``stunnel4`` terminating TLS in front of a broker.

The embedded broker (Tansu) has no working TLS; stunnel is the TLS listener, the broker
behind it advertises stunnel's port, and clients speak TLS to stunnel.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Pki", "make_pki", "Stunnel", "free_port", "stunnel_binary"]


def stunnel_binary() -> str | None:
    return shutil.which("stunnel4") or shutil.which("stunnel")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr[-2000:]}")


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files: two CAs, a server certificate for 127.0.0.1 signed by ``ca``,
    and client certificates signed by ``ca``: a valid one and one that expired in 2020."""

    dir: Path
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    expired_cert: Path
    expired_key: Path


_CA_CONF = """\
[ca]
default_ca = test_ca
[test_ca]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/issued
serial = {dir}/serial
default_md = sha256
policy = anything
copy_extensions = copy
unique_subject = no
[anything]
commonName = supplied
"""


def make_pki(d: Path) -> Pki:
    """Create the PKI under *d* (RSA 2048, a few hundred milliseconds)."""
    d.mkdir(parents=True, exist_ok=True)
    for name in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
                 "-days", "2", "-subj", f"/CN=streamkm test {name}", cwd=d)

    def leaf(name: str, cn: str, san: str | None) -> None:
        args = ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={cn}"]
        if san:
            args += ["-addext", f"subjectAltName={san}"]
        _openssl(*args, cwd=d)

    leaf("server", "127.0.0.1", "IP:127.0.0.1,DNS:localhost")
    leaf("client", "streamkm-client", None)
    leaf("expired", "streamkm-expired", None)
    for name in ("server", "client"):
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-copy_extensions", "copyall", cwd=d)
    # `openssl ca` is the one that can backdate a certificate
    (d / "issued").mkdir(exist_ok=True)
    (d / "index.txt").write_text("")
    (d / "serial").write_text("1000\n")
    (d / "ca.cnf").write_text(_CA_CONF.format(dir=d))
    _openssl("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key", "-in", "expired.csr",
             "-out", "expired.pem", "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-notext", cwd=d)
    return Pki(dir=d, ca=d / "ca.pem", other_ca=d / "other-ca.pem", server_cert=d / "server.pem",
               server_key=d / "server.key", client_cert=d / "client.pem", client_key=d / "client.key",
               expired_cert=d / "expired.pem", expired_key=d / "expired.key")


class Stunnel:
    """``stunnel`` accepting TLS on 127.0.0.1:*port* and forwarding plain TCP to *target*.

    With ``require_client_cert`` it verifies client certificates against *pki.ca* (mutual
    TLS). Stopped by PID (SIGTERM, then SIGKILL) on :meth:`stop` and on leaving a ``with``.
    """

    def __init__(self, pki: Pki, target: str, *, port: int | None = None, require_client_cert: bool = True):
        self.pki = pki
        self.target = target
        self.port = port or free_port()
        self.require_client_cert = require_client_cert
        self.proc: subprocess.Popen | None = None
        self.log = pki.dir / f"stunnel-{self.port}.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Stunnel:
        binary = stunnel_binary()
        if binary is None:
            raise RuntimeError("stunnel4 is not installed (Debian package stunnel4)")
        verify = f"verifyChain = yes\nrequireCert = yes\nCAfile = {self.pki.ca}\n" if self.require_client_cert else ""
        conf = self.pki.dir / f"stunnel-{self.port}.conf"
        conf.write_text(f"foreground = yes\npid =\noutput = {self.log}\ndebug = 5\n\n[kafka]\n"
                        f"accept = 127.0.0.1:{self.port}\nconnect = {self.target}\n"
                        f"cert = {self.pki.server_cert}\nkey = {self.pki.server_key}\n{verify}")
        self.proc = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"stunnel exited with {self.proc.returncode}: {self._log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"stunnel did not listen on {self.port} within 15s: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def __enter__(self) -> Stunnel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

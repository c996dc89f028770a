"""Load a page in headless Chromium (Debian's ``chromium``) and report what went wrong in it.

The browser is driven over the DevTools protocol on ``--remote-debugging-pipe`` (JSON messages
ending in a NUL byte on fds 3 and 4), so that console errors, uncaught exceptions and failed
loads are read as typed events, not grepped from a log. :func:`load_page` returns them with the
state of every ``<img>`` and a PNG screenshot. The browser runs in its own process group with a
private profile; it is killed by that group's id when the deadline passes.

A missing ``chromium`` skips the test locally and fails it when ``$CI`` is set (``.ci/run``
installs it).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = ["require_chromium", "load_page", "PageLoad", "ChromiumTimeout"]

# Make the pipe ends fds 3 and 4 of the browser, then exec it (subprocess cannot place fds).
_EXEC = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
         "os.execv(sys.argv[3], sys.argv[3:])")


def require_chromium() -> str:
    """Path of ``chromium``; fail under $CI, else skip."""
    path = shutil.which("chromium")
    if path is None:
        msg = "chromium not found (Debian package 'chromium'; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


class ChromiumTimeout(AssertionError):
    """The browser did not answer in time; it was killed (``pid``: its process id, reaped)."""

    pid: int = 0


@dataclass
class PageLoad:
    """What loading a page showed.

    Attributes
    ----------
    errors : list of str
        ``console.error``/``console.assert`` calls, uncaught exceptions and error log entries
        (failed resource loads among them).
    images : list of dict
        ``{"src": first 60 chars, "complete": bool, "width": naturalWidth}`` per ``<img>``.
    screenshot : bytes
        PNG of the whole page.
    title : str
    """

    errors: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    screenshot: bytes = b""
    title: str = ""


class _Pipe:
    def __init__(self, wfd: int, rfd: int, deadline: float) -> None:
        self.wfd, self.rfd, self.deadline = wfd, rfd, deadline
        self.buf = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self) -> dict[str, Any]:
        while b"\0" not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise ChromiumTimeout("chromium did not answer before the deadline")
            ready, _, _ = select.select([self.rfd], [], [], left)
            if ready:
                chunk = os.read(self.rfd, 1 << 16)
                if not chunk:
                    raise AssertionError("chromium closed its DevTools pipe (it exited)")
                self.buf += chunk
        raw, _, self.buf = self.buf.partition(b"\0")
        msg: dict[str, Any] = json.loads(raw)
        return msg

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.wfd, json.dumps(msg).encode() + b"\0")
        while True:
            got = self._read_message()
            if got.get("id") == self.next_id:
                if "error" in got:
                    raise AssertionError(f"DevTools {method} failed: {got['error']}")
                result: dict[str, Any] = got.get("result", {})
                return result
            if "method" in got:
                self.events.append(got)

    def wait_event(self, method: str, session: str) -> None:
        if any(e["method"] == method and e.get("sessionId") == session for e in self.events):
            return
        while True:
            got = self._read_message()
            if "method" in got:
                self.events.append(got)
                if got["method"] == method and got.get("sessionId") == session:
                    return


def _high_fd(fd: int) -> int:
    """A copy of *fd* numbered 10 or more (so the child's dup2 to 3 and 4 cannot clobber it)."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


def _errors(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        p = e.get("params", {})
        if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            out.append(f"console.{p['type']}: {text}")
        elif e["method"] == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            entry = p["entry"]
            out.append(f"log {entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".rstrip())
    return out


_IMAGES_JS = ("JSON.stringify(Array.from(document.images).map(i => "
              "({src: i.getAttribute('src').slice(0, 60), complete: i.complete, width: i.naturalWidth})))")


def load_page(path: Path, *, width: int = 1200, height: int = 2000, timeout: float = 90.0) -> PageLoad:
    """Open ``file://path`` in headless Chromium; console errors, images and a screenshot."""
    binary = require_chromium()
    cmd_r, cmd_w = (_high_fd(f) for f in os.pipe())
    evt_r, evt_w = (_high_fd(f) for f in os.pipe())
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    log = open(Path(profile).parent / f"{Path(profile).name}.log", "wb")  # noqa: SIM115 (closed below)
    args = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
            f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
            "--disable-background-networking", f"--window-size={width},{height}", "about:blank"]
    proc = subprocess.Popen([sys.executable, "-c", _EXEC, str(cmd_r), str(evt_w), *args],
                            pass_fds=(cmd_r, evt_w), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True)
    os.close(cmd_r)
    os.close(evt_w)
    pipe = _Pipe(cmd_w, evt_r, time.monotonic() + timeout)
    closed = False
    try:
        target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for method in ("Runtime.enable", "Log.enable", "Page.enable"):
            pipe.call(method, session=session)
        pipe.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session)
        pipe.call("Page.navigate", {"url": path.resolve().as_uri()}, session)
        pipe.wait_event("Page.loadEventFired", session)
        images = json.loads(pipe.call("Runtime.evaluate", {"expression": _IMAGES_JS, "returnByValue": True},
                                      session)["result"]["value"])
        title = pipe.call("Runtime.evaluate", {"expression": "document.title", "returnByValue": True},
                          session)["result"]["value"]
        shot = pipe.call("Page.captureScreenshot", {"format": "png"}, session)["data"]
        with contextlib.suppress(AssertionError, OSError):
            pipe.call("Browser.close")
            closed = True
        return PageLoad(errors=_errors(pipe.events), images=images, screenshot=base64.b64decode(shot), title=title)
    except ChromiumTimeout as exc:
        exc.pid = proc.pid
        raise
    finally:
        try:
            proc.wait(timeout=10 if closed else 0)  # not closed: a timeout or an error, kill it now
        except subprocess.TimeoutExpired:
            pass
        # Always its own group (the browser's helpers outlive a closed browser for a moment).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        for fd in (cmd_w, evt_r):
            os.close(fd)
        log.close()
        shutil.rmtree(profile, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(log.name)

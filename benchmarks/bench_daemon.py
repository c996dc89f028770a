"""End-to-end daemon throughput, checkpoint cost and memory over a long run.

Run from the repository root::

    python benchmarks/bench_daemon.py                    # everything, 10-minute soak
    python benchmarks/bench_daemon.py --soak-seconds 120 # shorter soak
    python benchmarks/bench_daemon.py --skip-soak --no-write
    python benchmarks/bench_daemon.py --keep-soak        # keep the recorded soak result
    python benchmarks/bench_daemon.py --skip-throughput --skip-checkpoint --keep-soak --stages --no-write
                                                         # CPU time per pipeline stage, offline

What is measured (all against the embedded Tansu broker on 127.0.0.1):

1. **Throughput.** The same topic is consumed, in the same run and alternating
   ``--repeats`` times, by (i) a bare aiokafka loop that only calls
   ``getmany`` and counts records (the client's ceiling) and (ii) the real
   :class:`streamkm.service.worker.Worker` (decode, validate, StreamingKMeans updates,
   interval checkpoints and commits). Both use the same consumer settings and a
   fresh consumer group each time; the topic is completely produced (its last
   record fetched back) before either is timed. Rates exclude the first batch
   (and so the group join): the bare loop from its first ``getmany`` return to
   the last, the daemon from the end of its first processed batch to the end
   of the last. Cases:
   (a) one 64-d vector per record, JSON and binary; (b) binary records of 256
   64-d vectors. Each pair of runs (bare, then daemon) gives one ratio; the
   reported ratio is the median of those per-pair ratios (the two loops meet the
   same machine load), with their range. Targets (issue 12): (a) binary >= 90%
   of the bare loop's records/s, JSON >= 60%; (b) >= 90% of the bare loop's
   vectors/s. The load average before and after is printed.
2. **Checkpoint time vs state size.** ``CheckpointStore.save`` of a worker-like
   state whose StreamingKMeans reservoir size is swept (median of repeats).
3. **RSS over a long run.** ``streamkm run`` (embedded broker, binary demo
   producer at ``--soak-rate`` records/s) in a subprocess; its resident set
   size is sampled every few seconds; growth is measured after a warm-up
   (first 20% of the run, at least 30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._report import machine_description, markdown_table, update_section  # noqa: E402

DIM = 64


def _settings(bootstrap: str, topic: str, fmt: str, ckpt_dir: str, group: str):
    from streamkm.config import load_settings

    env = {
        "STREAMKM_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "STREAMKM_KAFKA__VECTORS_TOPIC": topic,
        "STREAMKM_KAFKA__GROUP_ID": group,
        "STREAMKM_INPUT__FORMAT": fmt,
        "STREAMKM_INPUT__DIMENSION": str(DIM),
        "STREAMKM_GROUP__ENABLED": "false",  # the per-worker daemon (bench_group measures the group model)
        "STREAMKM_CHECKPOINT__DIR": ckpt_dir,
        "STREAMKM_METRICS__ENABLED": "false",
        "STREAMKM_WORKER__LOG_LEVEL": "WARNING",
    }
    return load_settings(env=env)


async def _bare(bootstrap: str, topic: str, n: int, settings) -> float:
    """records/s of a loop that only consumes (same consumer settings as the worker)."""
    from aiokafka import AIOKafkaConsumer

    kw = settings.kafka.consumer_kwargs(bootstrap)
    kw["group_id"] = f"bare-{uuid.uuid4().hex[:8]}"
    consumer = AIOKafkaConsumer(topic, **kw)
    await consumer.start()
    try:
        got = 0
        t_first = None
        n_first = 0
        deadline = time.monotonic() + 600
        while got < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=settings.kafka.fetch_timeout_ms,
                                           max_records=settings.kafka.max_records)
            k = sum(len(v) for v in batch.values())
            got += k
            if k and t_first is None:
                t_first, n_first = time.perf_counter(), got
        t_end = time.perf_counter()
        if got < n:
            raise RuntimeError(f"bare loop consumed {got} of {n} records")
        return (got - n_first) / (t_end - t_first)
    finally:
        await consumer.stop()


async def _daemon(bootstrap: str, topic: str, n: int, fmt: str) -> tuple[float, dict]:
    """records/s through the real Worker, plus a few facts about the run."""
    from streamkm.ops.metrics import Metrics
    from streamkm.service.worker import Worker

    ckpt = tempfile.mkdtemp(prefix="bench-daemon-ckpt-")
    try:
        settings = _settings(bootstrap, topic, fmt, ckpt, f"daemon-{uuid.uuid4().hex[:8]}")
        metrics = Metrics()
        worker = Worker(settings, metrics=metrics, bootstrap_servers=bootstrap)
        # Exact timestamps, like the bare loop's: the end of each processed batch
        # (wrapping Worker._process) and the records it absorbed.
        marks: list[tuple[float, int]] = []
        process = worker._process

        async def timed_process(batch, **kw):
            await process(batch, **kw)
            marks.append((time.perf_counter(), int(sum(worker.offsets.values()))))

        worker._process = timed_process
        task = asyncio.create_task(worker.run())
        deadline = time.monotonic() + 600
        try:
            while time.monotonic() < deadline:
                if marks and marks[-1][1] >= n:
                    break
                if task.done():
                    task.result()
                    raise RuntimeError("worker stopped early")
                await asyncio.sleep(0.02)
            c = marks[-1][1] if marks else 0
            if c < n:
                raise RuntimeError(f"daemon consumed {c} of {n} records")
        finally:
            await worker.shutdown(60)
            await asyncio.gather(task, return_exceptions=True)
        # first processed batch excluded (as the bare loop excludes its first fetch)
        (t_first, n_first), (t_end, c) = marks[0], marks[-1]
        facts = {
            "consumed": metrics.registry.get_sample_value(
                "streamkm_records_consumed_total", {"pipeline": "vectors", "topic": topic}),
            "clustered": metrics.registry.get_sample_value(
                "streamkm_vectors_clustered_total", {"pipeline": "vectors"}),
            "dead": sum((metrics.registry.get_sample_value(
                "streamkm_records_dead_lettered_total", {"pipeline": "vectors", "reason": r}) or 0)
                for r in ("not_json", "schema", "dimension", "non_finite", "dtype", "truncated")),
            "checkpoints": metrics.registry.get_sample_value("streamkm_checkpoints_total"),
        }
        return (c - n_first) / (t_end - t_first), facts
    finally:
        shutil.rmtree(ckpt, ignore_errors=True)


async def _fill(bootstrap: str, topic: str, n_records: int, fmt: str, rows: int) -> float:
    from streamkm.kafka.embedded import create_topics
    from streamkm.loadgen import blob_records, produce

    await create_topics(bootstrap, [topic])
    stats = await produce(blob_records(n_records, fmt=fmt, rows_per_record=rows, n_clusters=8,
                                       n_features=DIM, drift_every=None, seed=0),
                          topic=topic, bootstrap_servers=bootstrap, progress=False)
    # Only consumption is timed: the whole topic must be readable before either loop
    # starts. produce() returns once every batch is acknowledged; check that the last
    # record can be fetched. (Tansu's ListOffsets "latest" answered the base offset of
    # the last batch, e.g. 198,657 for 200,000 records, so end_offsets() cannot tell.)
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tp = TopicPartition(topic, 0)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await probe.start()
    try:
        probe.assign([tp])
        deadline = time.monotonic() + 60
        last = None
        while last is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"record {n_records - 1} of {topic} not readable after producing")
            probe.seek(tp, n_records - 1)
            got = (await probe.getmany(tp, timeout_ms=1000)).get(tp, [])
            last = next((r for r in got if r.offset == n_records - 1), None)
        if probe.highwater(tp) != n_records:
            raise RuntimeError(f"{topic} ends at offset {probe.highwater(tp)}, expected {n_records}")
    finally:
        await probe.stop()
    return stats.records_per_second


async def throughput(args) -> list[dict]:
    from streamkm.kafka.embedded import EmbeddedBroker

    cases = [
        ("(a) 1 x 64-d / record, JSON", "json", 1, args.json_records),
        ("(a) 1 x 64-d / record, binary", "binary", 1, args.records),
        ("(b) 256 x 64-d / record, binary", "binary", 256, args.big_records),
    ]
    cases = [c for c, name in zip(cases, _CASES, strict=True) if name in args.cases]
    rows = []
    async with EmbeddedBroker(startup_timeout=60) as broker:
        bs = broker.bootstrap_servers
        for label, fmt, per, n in cases:
            topic = f"bench-{fmt}-{per}-{uuid.uuid4().hex[:6]}"
            prod = await _fill(bs, topic, n, fmt, per)
            settings = _settings(bs, topic, fmt, "/tmp/unused", "x")
            bare, daemon = [], []
            facts = {}
            for _ in range(args.repeats):
                bare.append(await _bare(bs, topic, n, settings))
                d, facts = await _daemon(bs, topic, n, fmt)
                daemon.append(d)
            b, d = statistics.median(bare), statistics.median(daemon)
            ratios = [y / x for x, y in zip(bare, daemon, strict=True)]
            row = {"case": label, "records": n, "rows": per, "produce": prod, "bare": b,
                   "daemon": d, "ratio": statistics.median(ratios), "ratios": ratios,
                   "vectors_per_s": d * per, "bare_all": bare, "daemon_all": daemon, "facts": facts}
            print(f"{label}: bare {b:,.0f} rec/s, daemon {d:,.0f} rec/s, median of per-pair ratios "
                  f"{row['ratio']:.0%} (range {min(ratios):.0%}-{max(ratios):.0%}), {d * per:,.0f} vectors/s; "
                  f"runs bare={[round(x) for x in bare]} daemon={[round(x) for x in daemon]}; {facts}",
                  flush=True)
            rows.append(row)
            if per > 1 and args.compare_blas:
                # The same case with OpenBLAS at its default (one thread per core).
                ncpu = os.cpu_count() or 1
                _limit_blas_threads(ncpu)
                try:
                    multi = [(await _daemon(bs, topic, n, fmt))[0] for _ in range(args.repeats)]
                finally:
                    _limit_blas_threads(args.blas_threads or 1)
                m = statistics.median(multi)
                print(f"{label} with {ncpu} BLAS threads: daemon {m:,.0f} rec/s, "
                      f"{m * per:,.0f} vectors/s; runs={[round(x) for x in multi]}", flush=True)
                rows.append({"case": f"{label}, OpenBLAS {ncpu} threads", "records": n, "rows": per,
                             "produce": prod, "bare": b, "daemon": m, "ratio": m / b, "ratios": [m / b],
                             "vectors_per_s": m * per, "bare_all": bare, "daemon_all": multi,
                             "facts": {}, "no_target": True})
    return rows


async def fetch_sweep(args) -> list[dict]:
    """Bare-loop records/s and records per getmany for several max_partition_fetch_bytes."""
    from aiokafka import AIOKafkaConsumer

    from streamkm.kafka.embedded import EmbeddedBroker

    out = []
    async with EmbeddedBroker(startup_timeout=60) as broker:
        bs = broker.bootstrap_servers
        for label, per, n in (("(a) binary 1 x 64-d", 1, args.records),
                              ("(b) binary 256 x 64-d", 256, args.big_records)):
            topic = f"bench-fetch-{per}-{uuid.uuid4().hex[:6]}"
            await _fill(bs, topic, n, "binary", per)
            for mib in args.fetch_mib:
                settings = _settings(bs, topic, "binary", "/tmp/unused", "x")
                kafka = settings.kafka.model_copy(update={
                    "max_partition_fetch_bytes": mib * 2**20,
                    "fetch_max_bytes": max(mib * 2**20, settings.kafka.fetch_max_bytes)})
                settings = settings.model_copy(update={"kafka": kafka})
                rates, sizes = [], []
                for _ in range(args.repeats):
                    kw = settings.kafka.consumer_kwargs(bs)
                    kw["group_id"] = f"fetch-{uuid.uuid4().hex[:8]}"
                    consumer = AIOKafkaConsumer(topic, **kw)
                    await consumer.start()
                    try:
                        got, t_first, n_first, sizes = 0, None, 0, []
                        while got < n:
                            batch = await consumer.getmany(timeout_ms=settings.kafka.fetch_timeout_ms,
                                                           max_records=settings.kafka.max_records)
                            k = sum(len(v) for v in batch.values())
                            got += k
                            if k:
                                sizes.append(k)
                            if k and t_first is None:
                                t_first, n_first = time.perf_counter(), got
                        rates.append((got - n_first) / (time.perf_counter() - t_first))
                    finally:
                        await consumer.stop()
                row = {"case": label, "mib": mib, "rate": statistics.median(rates),
                       "per_getmany": statistics.median(sizes), "rows": per}
                print(f"fetch sweep {label}, max_partition_fetch_bytes {mib} MiB: bare "
                      f"{row['rate']:,.0f} rec/s (runs {[round(x) for x in rates]}), median "
                      f"{row['per_getmany']:,.0f} records per getmany", flush=True)
                out.append(row)
    return out


def stage_times(args) -> list[dict]:
    """CPU time per batch of each stage of ``VectorPipeline.process``, offline (no broker).

    Batches shaped like the daemon's fetches here: 10,000 binary 1 x 64-d records, 90
    records of 256 x 64-d, 3,600 JSON records. The real ``process`` runs; its decoder,
    overflow guard and ``partial_fit`` are wrapped with ``time.thread_time`` timers, and
    "rest" is what remains of ``process`` (reading the records, row metadata, the queue).
    Means over the batches after the model's first update (which also initializes it).
    """
    from aiokafka.structs import ConsumerRecord

    import streamkm.pipeline.vectors as vectors_mod
    from streamkm.loadgen import blob_records
    from streamkm.ops.metrics import Metrics
    from streamkm.pipeline import build_pipelines
    from streamkm.service.accounting import account

    clock = time.thread_time
    spent: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t0 = clock()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] = spent.get(name, 0.0) + clock() - t0
        return wrapper

    out = []
    saved = vectors_mod.decode_vectors, vectors_mod.drop_overflowing
    vectors_mod.decode_vectors = timed("decode", vectors_mod.decode_vectors)
    vectors_mod.drop_overflowing = timed("guard", vectors_mod.drop_overflowing)
    try:
        for label, fmt, per_rec, per_batch, n_batches in (
                ("(a) binary 1 x 64-d", "binary", 1, 10_000, 8), ("(b) binary 256 x 64-d", "binary", 256, 90, 8),
                ("(a) JSON 1 x 64-d", "json", 1, 3_600, 12)):
            gen = blob_records(per_batch * n_batches, fmt=fmt, rows_per_record=per_rec, n_clusters=8,
                               n_features=DIM, drift_every=None, seed=0)
            recs = [ConsumerRecord("t", 0, i, 0, 0, r.key, r.value, None, 0, len(r.value), ())
                    for i, r in enumerate(gen)]
            pipe = build_pipelines(_settings("127.0.0.1:9", "t", fmt, "/tmp/unused", "g"))["vectors"]
            pipe.model.partial_fit = timed("partial_fit", pipe.model.partial_fit)
            metrics = Metrics()
            pipe.init_metrics(metrics)
            acc: dict[str, list[float]] = {k: [] for k in ("decode", "guard", "partial_fit", "rest", "metrics")}
            for b in range(n_batches):
                warm = not pipe.model.is_initialized_
                spent.clear()
                t0 = clock()
                res = pipe.process(recs[b * per_batch:(b + 1) * per_batch])
                t1 = clock()
                account(metrics, pipe, res)
                t2 = clock()
                if not warm:
                    for k in ("decode", "guard", "partial_fit"):
                        acc[k].append(spent.get(k, 0.0))
                    acc["rest"].append(t1 - t0 - sum(spent.values()))
                    acc["metrics"].append(t2 - t1)
            row = {"case": label, "records": per_batch, **{k: statistics.mean(v) for k, v in acc.items()}}
            row["total"] = sum(row[k] for k in acc)
            print(f"stages {label}, {per_batch:,} records per batch: total {row['total'] * 1e3:.2f} ms; "
                  + ", ".join(f"{k} {row[k] * 1e3:.2f} ms" for k in acc), flush=True)
            out.append(row)
    finally:
        vectors_mod.decode_vectors, vectors_mod.drop_overflowing = saved
    return out


_BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def _limit_blas_threads(n: int) -> dict[str, int]:
    """Set every loaded BLAS to *n* threads (threadpoolctl, as `streamkm run` does); {library: threads}."""
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(n, user_api="blas")
    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def blas_micro(args) -> list[dict]:
    """Median time of the nearest-centre search (10 000 x 64 rows, k = 8) per BLAS thread count."""
    from streamkm.cluster._distance import _assign

    X = np.random.default_rng(0).normal(size=(10_000, DIM)).astype(np.float32)
    C = X[:8].copy()
    out = []
    for threads in sorted({os.cpu_count() or 1, 1}, reverse=True):
        _limit_blas_threads(threads)
        _assign(X, C)
        ts = []
        for _ in range(30):
            t0 = time.perf_counter()
            _assign(X, C)
            ts.append(time.perf_counter() - t0)
        out.append({"threads": threads, "ms": statistics.median(ts) * 1e3})
        print(f"_assign 10000x64, k=8, OpenBLAS {threads} thread(s): {out[-1]['ms']:.2f} ms", flush=True)
    _limit_blas_threads(args.blas_threads or 1)
    return out


def checkpoint_sweep(args) -> list[dict]:
    from streamkm.checkpoint import CheckpointStore
    from streamkm.cluster.streaming_kmeans import StreamingKMeans
    from streamkm.loadgen.synthetic import drifting_blobs

    out = []
    for R in args.reservoir_sizes:
        X, _ = drifting_blobs(max(2 * R, 20_000), n_clusters=8, n_features=DIM, seed=0)
        model = StreamingKMeans(n_clusters=8, reservoir_size=R, seed=0)
        for chunk in np.array_split(X, 10):
            model.partial_fit(chunk)
        state = {"format": "streamkm.worker", "version": 1, "offsets": {"t:0": len(X)},
                 "pipelines": {"vectors": {"model": model.state_dict()}}}
        d = tempfile.mkdtemp(prefix="bench-ckpt-")
        try:
            store = CheckpointStore(d, keep=3)
            times, size = [], 0
            for _ in range(args.ckpt_repeats):
                t0 = time.perf_counter()
                info = store.save(state)
                times.append(time.perf_counter() - t0)
                size = info.size_bytes
            t_load0 = time.perf_counter()
            store.load_latest()
            t_load = time.perf_counter() - t_load0
        finally:
            shutil.rmtree(d, ignore_errors=True)
        row = {"reservoir": R, "bytes": size, "save": statistics.median(times), "load": t_load}
        print(f"checkpoint reservoir={R}: {size / 1e6:.2f} MB, save {row['save'] * 1e3:.1f} ms, "
              f"load {t_load * 1e3:.1f} ms", flush=True)
        out.append(row)
    return out


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def soak(args) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}
    ckpt = tempfile.mkdtemp(prefix="bench-soak-ckpt-")
    env.update({
        "STREAMKM_METRICS__PORT": "0",
        "STREAMKM_GROUP__ENABLED": "false",  # the per-worker daemon, as docs/benchmarks.md labels it
        "STREAMKM_CHECKPOINT__DIR": ckpt,
        "STREAMKM_WORKER__DEMO_RATE": str(args.soak_rate),
        "STREAMKM_WORKER__DEMO_FORMAT": "binary",
        "STREAMKM_WORKER__DEMO_N_FEATURES": str(DIM),
        "STREAMKM_WORKER__DEMO_DRIFT_EVERY": "200000",
        "STREAMKM_WORKER__LOG_LEVEL": "WARNING",
        "STREAMKM_MODEL__RESEED_INTERVAL": "50",
    })
    proc = subprocess.Popen([sys.executable, "-m", "streamkm", "run", "--duration",
                             str(args.soak_seconds), "--status-interval", "30"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()
    last_status = ""
    try:
        os.set_blocking(proc.stderr.fileno(), False)
        while proc.poll() is None:
            r = _rss_kib(proc.pid)
            if r is not None:
                samples.append((time.monotonic() - t0, r))
            try:
                chunk = proc.stderr.read()
            except (OSError, TypeError):
                chunk = None
            if chunk:
                lines = [ln for ln in chunk.splitlines() if "records/s" in ln]
                if lines:
                    last_status = lines[-1]
                    print(f"[{time.monotonic() - t0:5.0f}s] RSS {r / 1024:.1f} MiB | {last_status}",
                          flush=True)
            time.sleep(args.soak_sample_seconds)
        rc = proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
        shutil.rmtree(ckpt, ignore_errors=True)
    ran = time.monotonic() - t0
    warm = max(30.0, 0.2 * ran)
    after = [(t, r) for t, r in samples if t >= warm]
    if len(after) < 2:
        raise RuntimeError(f"soak too short for a warm-up of {warm:.0f}s ({len(samples)} samples)")
    base = statistics.median([r for t, r in after[: max(3, len(after) // 10)]])
    end = statistics.median([r for t, r in after[-max(3, len(after) // 10):]])
    peak = max(r for _, r in after)
    m = re.search(r"([\d,]+) consumed", last_status)
    consumed = int(m.group(1).replace(",", "")) if m else None
    res = {"seconds": ran, "warmup": warm, "rss_base": base, "rss_end": end, "rss_peak": peak,
           "growth": (end - base) / base, "rc": rc, "consumed": consumed, "rate": args.soak_rate}
    print(f"soak: ran {ran:.0f}s (rc={rc}), RSS after warm-up {base / 1024:.1f} MiB -> "
          f"{end / 1024:.1f} MiB at the end ({res['growth']:+.1%}), peak {peak / 1024:.1f} MiB",
          flush=True)
    return res


def report(args, tp, ck, sk, bl=None, fs=None, st=None) -> str:
    lines = [
        "## bench_daemon: end-to-end daemon throughput, checkpoints, memory",
        "",
        f"Command: `python benchmarks/bench_daemon.py {' '.join(args.argv)}`".rstrip() + "  ",
        f"Machine: {machine_description()} (shared with other jobs; the broker, the producer "
        f"and the consumer share the same 2 cores). BLAS: {args.blas} (the daemon and "
        "`streamkm run` limit OpenBLAS to one thread unless `OPENBLAS_NUM_THREADS` is set).",
        "",
    ]
    if tp:
        lines += [
            "Throughput: the same topic (embedded Tansu broker, one partition) consumed by a bare "
            "aiokafka `getmany` loop and by the real `Worker` (decode, validate, StreamingKMeans "
            "k=8 updates, interval checkpoints and commits), alternating, "
            f"median of {args.repeats} runs each. Both use the same consumer settings (the "
            "daemon's shipped `kafka.*` defaults: `max_records` 10,000 per `getmany`, "
            "`max_partition_fetch_bytes` 4 MiB, `fetch_max_bytes` 50 MiB, aiokafka's "
            "`fetch_min_bytes`/`fetch_max_wait_ms`) and a fresh group. The topic is produced "
            "completely (its last record fetched back) before either is timed, so only "
            "consumption is measured. Rates exclude the first batch: the bare loop from the "
            "return of its first `getmany` to the last; the daemon from the end of its first "
            "processed batch to the end of the last (timestamps taken in `Worker._process`).",
            "",
            markdown_table(
                ["case", "records", "bare loop rec/s", "daemon rec/s", "daemon / bare (range)",
                 "daemon vectors/s", "target", "met"],
                [[r["case"], f"{r['records']:,}", f"{r['bare']:,.0f}", f"{r['daemon']:,.0f}",
                  f"{r['ratio']:.0%} ({min(r['ratios']):.0%}–{max(r['ratios']):.0%})",
                  f"{r['vectors_per_s']:,.0f}", t, m]
                 for r, (t, m) in zip(tp, _targets(tp), strict=True)]),
            "",
            f"daemon / bare is the median of the {args.repeats} per-pair ratios (each daemon run over "
            f"the bare run just before it), with their range. JSON parser: {args.json_parser}. Load "
            f"average (1 min) before / after the throughput runs: {args.load_before:.2f} / "
            f"{args.load_after:.2f}.",
            "",
        ]
    if fs:
        lines += [
            "Fetch size: the bare loop alone with other `max_partition_fetch_bytes` (and "
            f"`fetch_max_bytes` at least as large), median of {args.repeats} runs:",
            "",
            markdown_table(["case", "max_partition_fetch_bytes", "bare loop rec/s",
                            "median records per getmany"],
                           [[r["case"], f"{r['mib']} MiB", f"{r['rate']:,.0f}",
                             f"{r['per_getmany']:,.0f}"] for r in fs]),
            "",
        ]
    if bl:
        lines += [
            "BLAS threads: median time of the nearest-centre search `_assign` for 10,000 x 64 "
            "float32 rows against 8 centres, in this process: "
            + ", ".join(f"{r['threads']} OpenBLAS thread(s) {r['ms']:.2f} ms" for r in bl) + ".",
            "",
        ]
    if st:
        stages = ["decode", "guard", "partial_fit", "rest", "metrics"]
        lines += [
            "Where a batch's time goes (`--stages`): CPU time (`time.thread_time`) of each stage of "
            "`VectorPipeline.process` per batch, offline on batches shaped like one `getmany` here, "
            "mean over the batches after the model's first update (rest: the remainder of `process`, "
            "i.e. reading the records, row metadata and the queue; metrics: the worker's accounting):",
            "",
            markdown_table(["case", "records per batch", *stages, "total"],
                           [[r["case"], f"{r['records']:,}", *(f"{r[k] * 1e3:.2f} ms" for k in stages),
                             f"{r['total'] * 1e3:.2f} ms"] for r in st]),
            "",
        ]
    if ck:
        lines += [
            "Checkpoint time vs state size (`CheckpointStore.save`: .npz + JSON manifest, temp "
            f"file, fsync, rename, fsync dir; k=8, d={DIM}; median of {args.ckpt_repeats}):",
            "",
            markdown_table(["reservoir size", "checkpoint size", "save", "load (verify checksum)"],
                           [[f"{r['reservoir']:,}", f"{r['bytes'] / 1e6:.2f} MB",
                             f"{r['save'] * 1e3:.1f} ms", f"{r['load'] * 1e3:.1f} ms"] for r in ck]),
            "",
        ]
    if sk:
        ok = "met" if sk["growth"] < 0.05 else "NOT met"
        lines += [
            f"Memory over a long run: `streamkm run --duration {args.soak_seconds}` (embedded broker, "
            f"binary demo producer at {sk['rate']:g} records/s of 64-d vectors, reseed every 50 "
            f"batches) ran **{sk['seconds']:.0f} s** (exit code {sk['rc']}"
            + (f", {sk['consumed']:,} records consumed" if sk["consumed"] else "") + "). "
            f"RSS of the daemon process after a {sk['warmup']:.0f} s warm-up: "
            f"{sk['rss_base'] / 1024:.1f} MiB, at the end {sk['rss_end'] / 1024:.1f} MiB "
            f"(growth {sk['growth']:+.1%}; target < 5%: {ok}), peak {sk['rss_peak'] / 1024:.1f} MiB.",
            "",
        ]
    if getattr(args, "recorded_soak", None):
        lines += ["(Not re-run by this command; recorded by an earlier run of this script:) "
                  + args.recorded_soak.removeprefix("(Not re-run by this command; recorded by an "
                                                    "earlier run of this script:) "), ""]
    return "\n".join(lines)


def _recorded_soak() -> str | None:
    """The soak paragraph of the bench_daemon section currently in docs/benchmarks.md."""
    from benchmarks._report import DOC

    try:
        text = DOC.read_text()
    except OSError:
        return None
    m = re.search(r"<!-- BEGIN bench_daemon -->(.*?)<!-- END bench_daemon -->", text, re.S)
    if m is None:
        return None
    for para in m.group(1).split("\n\n"):
        if "Memory over a long run:" in para:
            return para.strip()
    return None


_CASES = ("json", "binary", "big")  # the throughput cases, in order: (a) JSON, (a) binary, (b)


def _targets(tp):
    out = []
    for r in tp:
        if r.get("no_target"):
            out.append(("—", "—"))
        elif "binary" in r["case"]:  # (a) records/s and (b) vectors/s: the same ratio
            out.append(("≥ 90% of bare", "yes" if r["ratio"] >= 0.9 else "**no**"))
        else:
            out.append(("≥ 60% of bare", "yes" if r["ratio"] >= 0.6 else "**no**"))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=200_000, help="(a) binary records")
    p.add_argument("--json-records", type=int, default=100_000, help="(a) JSON records")
    p.add_argument("--big-records", type=int, default=4_000, help="(b) records of 256 vectors")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cases", nargs="+", choices=_CASES, default=list(_CASES),
                   help="throughput cases to run: (a) JSON, (a) binary, (b) 256 x 64-d binary (default: all)")
    p.add_argument("--reservoir-sizes", type=int, nargs="+",
                   default=[1_000, 10_000, 100_000, 1_000_000])
    p.add_argument("--ckpt-repeats", type=int, default=5)
    p.add_argument("--soak-seconds", type=float, default=600.0)
    p.add_argument("--soak-rate", type=float, default=5_000.0, help="demo records/s in the soak")
    p.add_argument("--soak-sample-seconds", type=float, default=2.0)
    p.add_argument("--blas-threads", type=int, default=None,
                   help="OpenBLAS threads in this process (default 1, as `streamkm run` sets)")
    p.add_argument("--no-compare-blas", dest="compare_blas", action="store_false",
                   help="skip case (b) with OpenBLAS at one thread per core")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--fetch-mib", type=int, nargs="*", default=[],
                   help="also run the bare loop with these max_partition_fetch_bytes (MiB)")
    p.add_argument("--skip-checkpoint", action="store_true")
    p.add_argument("--stages", action="store_true",
                   help="also time each stage of the vectors pipeline per batch, offline (CPU time)")
    p.add_argument("--skip-soak", action="store_true")
    p.add_argument("--keep-soak", action="store_true",
                   help="skip the soak but keep the soak result recorded in docs/benchmarks.md")
    p.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    # Same BLAS threading as `streamkm run` (one thread unless the environment says otherwise).
    if args.blas_threads is not None or not any(os.environ.get(v) for v in _BLAS_ENV):
        threads = _limit_blas_threads(args.blas_threads or 1)
        args.blas = ", ".join(f"{Path(k).name}: {v} thread(s)" for k, v in threads.items()) or "unknown"
    else:
        args.blas = ", ".join(f"{v}={os.environ[v]}" for v in _BLAS_ENV if os.environ.get(v))
    print(f"BLAS: {args.blas}", flush=True)

    args.json_parser = ("streamkm.codec's vectorized number reader for strict {\"x\": [...]} records, "
                        "json (standard library) for the others")
    print(f"JSON parser: {args.json_parser}", flush=True)
    bl = blas_micro(args)
    args.load_before = os.getloadavg()[0]
    tp = None if args.skip_throughput else asyncio.run(throughput(args))
    args.load_after = os.getloadavg()[0]
    print(f"load average (1 min) before / after the throughput runs: {args.load_before:.2f} / "
          f"{args.load_after:.2f}", flush=True)
    fs = asyncio.run(fetch_sweep(args)) if args.fetch_mib else None
    st = stage_times(args) if args.stages else None
    ck = None if args.skip_checkpoint else checkpoint_sweep(args)
    sk = None if (args.skip_soak or args.keep_soak) else soak(args)
    args.recorded_soak = _recorded_soak() if args.keep_soak and sk is None else None
    text = report(args, tp, ck, sk, bl, fs, st)
    print(text)
    if not args.no_write and set(args.cases) != set(_CASES):
        print("not writing docs/benchmarks.md: --cases ran only part of the throughput table", flush=True)
    elif not args.no_write:
        update_section("bench_daemon", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

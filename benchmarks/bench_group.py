"""The group model: single-worker cost, 1-3 workers, staleness, and the reducer's capacity.

Run from the repository root::

    python benchmarks/bench_group.py             # everything, writes docs/benchmarks.md
    python benchmarks/bench_group.py --no-write  # print only

What is measured (embedded Tansu broker on 127.0.0.1, one BLAS thread):

1. **Single worker.** The same 6-partition topic of binary 1 x 64-d records is consumed,
   alternating ``--repeats`` times, by the per-worker :class:`streamkm.service.worker.Worker`
   and by a one-member :class:`streamkm.service.group.GroupWorker` (its own reducer). A
   run is timed from the end of the first processed batch to the moment the model
   reflects every record, and the rate is taken between the moments 10% and 90% of the
   records were reflected (steady state: no group join, no final flush): the worker's
   offsets for the per-worker model (records absorbed or queued for its next update), the
   newest version's ``n_seen`` seen by the worker for the group model (records folded by
   the reducer and published). Target: group >= 90% of per-worker.
2. **1, 2 and 3 workers** (``python -m streamkm run`` processes, group model) on the same
   topic: total records/s until the model topic shows every record, the staleness of
   every accepted chunk in versions (fold version - base version, from an offline refold of
   the stats log) and in seconds (stats record timestamp to the first model version that
   folded it, from the topics' timestamps).
3. **The reducer's capacity.** Offline: statistics messages (64-row samples) folded per
   second by :class:`streamkm.group.GroupModel` for growing k x d, decoded from bytes as
   the reducer does; the largest k x d that sustains 100 chunks/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
PARTITIONS = 6

ANALYSIS = """
What these numbers say, and what they do not. The single-worker gap is the group model's
fixed cost per chunk (summarise, encode, one produce round trip, fold, publish) paid by one
process that is also the reducer and the follower; per-worker updates once per fetch of
10,000 rows. Fewer, larger chunks close most of it (`group.chunk_rows`), at the price of
coarser updates and staler chunks. On these 2 cores the broker and up to three members share
two CPUs, so more members do not add throughput here (per-worker efficiency falls as 1/n);
the reducer is not the limit (its fold handles thousands of small chunks per second).
Linear scaling needs a core per member plus the broker's, and the reducer's capacity bounds
the group at about (reducer messages/s) x `chunk_rows` records/s for a given k x d.
"""


def _env(bootstrap: str, topic: str, group: str, *, enabled: bool, ckpt: str) -> dict[str, str]:
    return {
        "STREAMKM_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "STREAMKM_KAFKA__VECTORS_TOPIC": topic,
        "STREAMKM_KAFKA__GROUP_ID": group, "STREAMKM_INPUT__FORMAT": "binary",
        "STREAMKM_INPUT__DIMENSION": str(DIM), "STREAMKM_CHECKPOINT__DIR": ckpt,
        "STREAMKM_METRICS__ENABLED": "false", "STREAMKM_WORKER__LOG_LEVEL": "WARNING",
        "STREAMKM_WORKER__DEMO_PRODUCER": "false", "STREAMKM_DLQ__TOPIC": "",
        "STREAMKM_KAFKA__SESSION_TIMEOUT_MS": "6000", "STREAMKM_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
        "STREAMKM_GROUP__ENABLED": "true" if enabled else "false",
        **({"STREAMKM_GROUP__MAX_IN_FLIGHT": os.environ["BENCH_S"]} if "BENCH_S" in os.environ else {}),
    }


async def _fill(bootstrap: str, topic: str, n: int) -> None:
    from streamkm.kafka.embedded import create_topics
    from streamkm.loadgen import blob_records, produce

    await create_topics(bootstrap, {topic: PARTITIONS})
    await produce(blob_records(n, fmt="binary", rows_per_record=1, n_clusters=8, n_features=DIM,
                               drift_every=None, seed=0),
                  topic=topic, bootstrap_servers=bootstrap, progress=False)


async def _per_worker(bootstrap: str, topic: str, n: int) -> float:
    from streamkm.config import load_settings
    from streamkm.service.worker import Worker

    ckpt = tempfile.mkdtemp(prefix="bench-group-ckpt-")
    settings = load_settings(env=_env(bootstrap, topic, f"pw-{uuid.uuid4().hex[:8]}", enabled=False, ckpt=ckpt))
    worker = Worker(settings, bootstrap_servers=bootstrap)
    marks: list[tuple[float, int]] = []
    process = worker._process

    async def timed(batch, **kw):
        await process(batch, **kw)
        marks.append((time.perf_counter(), int(sum(worker.offsets.values()))))

    worker._process = timed
    task = asyncio.create_task(worker.run())
    try:
        while not marks or marks[-1][1] < n:
            if task.done():
                task.result()
                raise RuntimeError("worker stopped early")
            await asyncio.sleep(0.01)
    finally:
        await worker.shutdown(60)
        await asyncio.gather(task, return_exceptions=True)
    return _steady_rate(marks, n)


def _steady_rate(marks: list[tuple[float, int]], n: int) -> float:
    """Records/s between the moments 10% and 90% of the records were reflected (no start-up, no tail)."""
    t = np.array([m[0] for m in marks])
    c = np.array([m[1] for m in marks])
    i, j = int(np.searchsorted(c, 0.1 * n)), int(np.searchsorted(c, 0.9 * n))
    return float((c[j] - c[i]) / (t[j] - t[i]))


async def _group_worker(bootstrap: str, topic: str, n: int, chunk_rows: int = 1024) -> float:
    from streamkm.config import load_settings
    from streamkm.service.group import GroupWorker

    env = _env(bootstrap, topic, f"gw-{uuid.uuid4().hex[:8]}", enabled=True, ckpt="/tmp")
    env["STREAMKM_GROUP__CHUNK_ROWS"] = str(chunk_rows)
    settings = load_settings(env=env)
    worker = GroupWorker(settings, bootstrap_servers=bootstrap)
    marks: list[tuple[float, int]] = []
    task = asyncio.create_task(worker.run())
    try:
        while True:
            v = worker.follower.latest.get("vectors") if worker.follower is not None else None
            if v is not None and (not marks or v.n_seen > marks[-1][1]):
                marks.append((time.perf_counter(), v.n_seen))
            if v is not None and v.n_seen >= n:
                break
            if task.done():
                task.result()
                raise RuntimeError("group worker stopped early")
            await asyncio.sleep(0.002)
    finally:
        await worker.shutdown(60)
        await asyncio.gather(task, return_exceptions=True)
    return _steady_rate(marks, n)


async def single(args) -> dict:
    from streamkm.kafka.embedded import EmbeddedBroker

    async with EmbeddedBroker(startup_timeout=60) as broker:
        bs = broker.bootstrap_servers
        topic = f"bench-group-{uuid.uuid4().hex[:6]}"
        await _fill(bs, topic, args.records)
        pw: list[float] = []
        gw: dict[int, list[float]] = {c: [] for c in args.chunk_rows}
        for _ in range(args.repeats):
            pw.append(await _per_worker(bs, topic, args.records))
            for c in args.chunk_rows:
                gw[c].append(await _group_worker(bs, topic, args.records, c))
            print(f"single worker: per-worker {pw[-1]:,.0f} rec/s, group "
                  + ", ".join(f"{gw[c][-1]:,.0f} (chunk_rows {c})" for c in args.chunk_rows), flush=True)
    return {"per_worker": pw, "group": gw}


async def _topic_records(bootstrap: str, topic: str) -> list:
    from tests.helpers.e2e import consume_all

    return await consume_all(bootstrap, topic, timeout=60)


def scaling(args) -> list[dict]:
    from streamkm.config import load_settings
    from streamkm.group import ChunkStats, ModelVersion, WireError
    from streamkm.group.messages import KIND_VERSION
    from streamkm.group.wire import decode
    from streamkm.kafka.embedded import EmbeddedBroker
    from streamkm.service.group import GroupWorker

    rows = []
    with EmbeddedBroker(startup_timeout=60) as broker:
        bs = broker.bootstrap_servers
        topic = f"bench-scale-{uuid.uuid4().hex[:6]}"
        asyncio.run(_fill(bs, topic, args.records))
        for n_workers in (1, 2, 3):
            group = f"sc{n_workers}-{uuid.uuid4().hex[:6]}"
            env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}
            env.update(_env(bs, topic, group, enabled=True, ckpt="/tmp"))
            env["OPENBLAS_NUM_THREADS"] = "1"
            settings = load_settings(env=_env(bs, topic, group, enabled=True, ckpt="/tmp"))
            t_start = time.time()
            procs = [subprocess.Popen([sys.executable, "-m", "streamkm", "run"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True) for _ in range(n_workers)]
            try:
                t_done = None
                deadline = time.time() + 600
                while time.time() < deadline and t_done is None:
                    time.sleep(0.5)
                    for rec in asyncio.run(_topic_records(bs, settings.group_model_topic))[::-1]:
                        got = decode(rec.value)
                        if not isinstance(got, WireError) and got[0] == KIND_VERSION:
                            v = ModelVersion.from_bytes(rec.value)
                            if isinstance(v, ModelVersion) and v.n_seen >= args.records:
                                t_done = rec.timestamp / 1000
                            break
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    p.wait(60)
            stats = asyncio.run(_topic_records(bs, settings.group_stats_topic))
            models = [r for r in asyncio.run(_topic_records(bs, settings.group_model_topic))
                      if not isinstance(decode(r.value), WireError) and decode(r.value)[0] == KIND_VERSION]
            t_first = min(r.timestamp for r in stats) / 1000
            # staleness: refold offline; seconds from a stats record to the first version folding it
            g = GroupWorker(settings, bootstrap_servers=bs).new_group_model("vectors")
            v_offsets = np.array([ModelVersion.from_bytes(r.value).stats_offset for r in models])
            v_times = np.array([r.timestamp / 1000 for r in models])
            order = np.argsort(v_offsets, kind="stable")
            v_offsets, v_times = np.maximum.accumulate(v_offsets[order]), v_times[order]
            versions, seconds = [], []
            for rec in stats:
                msg = ChunkStats.from_bytes(rec.value)
                before = g.version_
                if g.fold(msg, rec.offset).status == "accepted":
                    if msg.base_version:
                        versions.append(before - msg.base_version)
                    i = int(np.searchsorted(v_offsets, rec.offset, side="left"))
                    if i < len(v_times):
                        seconds.append(float(v_times[i:].min()) - rec.timestamp / 1000)
            rate = args.records / ((t_done or time.time()) - t_first)
            row = {"workers": n_workers, "rate": rate, "per_worker": rate / n_workers,
                   "stale_v": np.percentile(versions, [50, 90, 99, 100]) if versions else [0] * 4,
                   "stale_s": np.percentile(seconds, [50, 90, 99]) if seconds else [0] * 3,
                   "chunks": len(stats), "startup": t_first - t_start}
            print(f"{n_workers} workers: {rate:,.0f} rec/s ({rate / n_workers:,.0f} per worker); staleness "
                  f"versions p50/p90/p99/max {row['stale_v']}, seconds p50/p90/p99 {row['stale_s']}", flush=True)
            rows.append(row)
    return rows


def reducer_capacity(args) -> list[dict]:
    from streamkm.group import ChunkStats, GroupModel

    rows = []
    for k, d in [(8, 8), (16, 64), (64, 64), (256, 64), (256, 256), (1024, 256), (2048, 512)]:
        rng = np.random.default_rng(0)
        g = GroupModel(pipeline="vectors", model_kwargs={"n_clusters": k, "seed": 0, "dying_threshold": 0.0})
        init = rng.normal(size=(max(3 * k, 1024), d)).astype(np.float32)
        e = np.empty(0, dtype=np.int64)
        g.fold(ChunkStats("vectors", "t", 0, 0, 1, 0, 1, e, e, np.empty((0, d)), np.empty(0),
                          np.empty((0, d), np.float32), init), 0)
        msgs = []
        n_msgs = args.fold_messages
        for i in range(n_msgs):
            counts = rng.integers(0, 4, size=k)
            msgs.append(ChunkStats("vectors", "t", 0, i + 1, i + 2, 1, 1, g.ids_.copy(), counts,
                                   rng.normal(size=(k, d)) * counts[:, None], np.abs(rng.normal(size=k)),
                                   rng.normal(size=(64, d)).astype(np.float32), np.empty((0, d), np.float32)
                                   ).to_bytes())
        t0 = time.perf_counter()
        for i, b in enumerate(msgs):
            m = ChunkStats.from_bytes(b)
            assert g.fold(m, i + 1).status == "accepted"
        dt = time.perf_counter() - t0
        rate = n_msgs / dt
        rows.append({"k": k, "d": d, "rate": rate, "bytes": len(msgs[0])})
        print(f"reducer k={k} d={d}: {rate:,.0f} stats messages/s ({len(msgs[0]):,} bytes each)", flush=True)
    return rows


def blas_description() -> str:
    try:
        from threadpoolctl import threadpool_info

        return ", ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)"
                         for i in threadpool_info() if i.get("user_api") == "blas")
    except Exception:  # pragma: no cover
        return "unknown"


def report(sg, sc, rc, blas: str) -> str:
    pw = statistics.median(sg["per_worker"])
    load = os.getloadavg()
    out = [
        "## The group model (`benchmarks/bench_group.py`)",
        "",
        f"Measured with `python benchmarks/bench_group.py` on {machine_description()}; BLAS {blas}; "
        f"load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.",
        "",
        f"**Single worker**, {PARTITIONS} partitions of binary 1 x {DIM}-d records, alternating runs, medians "
        f"(target: group >= 90% of per-worker):",
        "",
        markdown_table(["model", "records/s (median)", "of per-worker", "runs"], [
            ["per-worker (checkpoints)", f"{pw:,.0f}", "100%", ", ".join(f"{x:,.0f}" for x in sg["per_worker"])],
            *[[f"group, own reducer, chunk_rows {c}", f"{statistics.median(v):,.0f}",
               f"{statistics.median(v) / pw:.0%}", ", ".join(f"{x:,.0f}" for x in v)]
              for c, v in sg["group"].items()]]),
        "",
        "**1, 2 and 3 worker processes** (group model) on the same topic, until the model topic shows every "
        "record; staleness of each accepted chunk:",
        "",
        markdown_table(["workers", "records/s", "per worker", "versions p50 / p90 / p99 / max",
                        "seconds p50 / p90 / p99", "chunks sent"], [
            [r["workers"], f"{r['rate']:,.0f}", f"{r['per_worker']:,.0f}",
             " / ".join(f"{x:.0f}" for x in r["stale_v"]), " / ".join(f"{x:.3f}" for x in r["stale_s"]),
             r["chunks"]] for r in sc]),
        "",
        "**The reducer's capacity** (offline fold, decode included, 64-row samples, reservoir 10,000):",
        "",
        markdown_table(["k", "d", "k x d", "stats messages/s", "message bytes"], [
            [r["k"], r["d"], f"{r['k'] * r['d']:,}", f"{r['rate']:,.0f}", f"{r['bytes']:,}"] for r in rc]),
        "",
    ]
    ok = [r for r in rc if r["rate"] >= 100]
    if ok:
        best = max(ok, key=lambda r: r["k"] * r["d"])
        out.append(f"The largest k x d measured that sustains 100 chunks/s: {best['k']} x {best['d']} "
                   f"= {best['k'] * best['d']:,} ({best['rate']:,.0f}/s).")
    out.append(ANALYSIS)
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk-rows", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--fold-messages", type=int, default=300)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        blas = blas_description()
        rc = reducer_capacity(args)
        sg = asyncio.run(single(args))
        sc = scaling(args)
    text = report(sg, sc, rc, blas)
    print(text)
    if not args.no_write:
        update_section("bench_group", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

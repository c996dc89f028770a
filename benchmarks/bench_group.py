"""The group model: single-worker cost, 1-3 workers, staleness, and the reducer's capacity.

Run from the repository root::

    python benchmarks/bench_group.py             # everything, writes docs/benchmarks.md
    python benchmarks/bench_group.py --no-write  # print only
    python benchmarks/bench_group.py --only single --repeats 5  # the single-worker part, printed
    python benchmarks/bench_group.py --only scaling --workers 1 --records 20000  # a small part 2, printed

What is measured (embedded Tansu broker on 127.0.0.1, one BLAS thread):

1. **Single worker.** The same 6-partition topic of binary 1 x 64-d records is consumed,
   alternating ``--repeats`` times, by the per-worker :class:`streamkm.service.worker.Worker`
   and by a one-member :class:`streamkm.service.group.GroupWorker` (its own reducer). A
   run is timed from the end of the first processed batch to the moment the model
   reflects every record, and the rate is taken between the moments 10% and 90% of the
   records were reflected (steady state: no group join, no final flush): the worker's
   offsets for the per-worker model (records absorbed or queued for its next update), the
   newest version's ``n_seen`` seen by the worker for the group model (records folded by
   the reducer and published). Also the rate from the start of the first processed batch
   to the 90% moment (with rounds the members read ahead of the reducer, and the 10%-90%
   window alone can time the reducer catching up). Both group orderings (``--ordering``);
   the rounds runs use ``group.idle_partition_seconds = 5`` so that the last partial chunks
   do not hold each run for 30 s. Target: group >= 90% of per-worker.
2. **1, 2 and 3 workers** (``python -m streamkm run`` processes, group model; ``--workers``
   picks the counts, ``--scaling-ordering`` the ``group.ordering``, rounds by default) on the
   same topic: total records/s until the model topic shows every record, the staleness of
   every accepted chunk in versions (the version it was folded into - the version the member
   held when it cut it) and in seconds (stats record timestamp to the first published
   version that includes it). Both come from an offline refold of the stats log in the
   run's ordering (:func:`streamkm.group.refold.refold_stats_log`: the reducer's own
   ``RoundFold`` for rounds, so the chunks get the version numbers the live reducer gave them).
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
What these numbers say, and what they do not. Read the single-worker table by its "from the first
batch" columns: with rounds the members read ahead of the reducer (up to `group.max_in_flight`
chunks per partition), and on this pre-filled topic the 10%-90% window can time the reducer
catching up, which is faster than reading. Runs of one configuration spread by +-20% on this
shared 2-core machine (the table lists every run); compare ratios within one run. The before/after
history of these ratios is in the subsection after this one (hand-written, with its commands).

Where the time goes (py-spy on the single-worker runs, event-loop thread): aiokafka's per-record
decoding is the largest cost of both models (40-55% of the loop); the per-worker model pays it and
runs `partial_fit` in a thread. The group model also encodes every chunk and produces it to the
stats topic, folds in a thread that competes for the GIL with the loop, and publishes and follows
versions. With `ordering = "rounds"` (the default) a chunk carries its rows, so the member writes
the input's volume a second time, through a broker that shares the two cores: building and writing
those produce requests was about a sixth of the loop, which is what keeps rounds below arrival.
With `ordering = "arrival"` a chunk is a k x d summary and what is left is a fixed cost per chunk
(assignment, encoding, the fold, its share of a version), so larger chunks (`chunk_rows` 4096)
come closest to the per-worker model. A member that did not decode records in Python would speed
up both models and lower the ratio; a producer on a thread of its own did not help (the request
building holds the GIL; measured, not merged).

The 1-3 worker rows are timed to the version that folded 90% of the records (the last partial
chunks wait for the idle rule, 5 s here, which is what the seconds p90/p99 show). Their versions
column refolds the stats log in the run's ordering (rounds, the default, with the reducer's own
`RoundFold`): it counts the versions between the one a member held when it cut a chunk (what its
output records were assigned against) and the one the chunk was folded into. In rounds the reducer
assigns a chunk's rows against the version they go into, so the model itself is never stale; the
column measures how far the members' view (their outputs) lagged. More members do not add
throughput on these 2 cores: the broker and up to three members share two CPUs, so the total falls
with each member added (the per-worker column). Linear scaling needs a core per member plus the
broker's; the reducer's capacity (table above) bounds the group at about (reducer messages/s) x
`chunk_rows` records/s for a given k x d.
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
    started: list[float] = []
    process = worker._process

    async def timed(batch, **kw):
        started.append(time.perf_counter())
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
    return _steady_rate(marks, n), _from_start_rate(marks, n, started[0])


def _steady_rate(marks: list[tuple[float, int]], n: int) -> float:
    """Records/s between the moments 10% and 90% of the records were reflected (no start-up, no tail)."""
    t = np.array([m[0] for m in marks])
    c = np.array([m[1] for m in marks])
    i, j = int(np.searchsorted(c, 0.1 * n)), int(np.searchsorted(c, 0.9 * n))
    return float((c[j] - c[i]) / (t[j] - t[i]))


def _from_start_rate(marks: list[tuple[float, int]], n: int, t_start: float) -> float:
    """Records/s from the start of the first processed batch to the moment 90% were reflected.

    The 10%-90% rate alone flatters a run whose model lags its reading: with rounds the
    members read ahead (up to group.max_in_flight chunks per partition) while the reducer
    waits for complete rounds, and the 10%-90% window then times the reducer catching up.
    """
    c = np.array([m[1] for m in marks])
    j = int(np.searchsorted(c, 0.9 * n))
    return float(c[j] / (marks[j][0] - t_start))


async def _group_worker(bootstrap: str, topic: str, n: int, chunk_rows: int = 1024,
                        ordering: str = "rounds") -> float:
    from streamkm.config import load_settings
    from streamkm.service.group import GroupWorker

    env = _env(bootstrap, topic, f"gw-{uuid.uuid4().hex[:8]}", enabled=True, ckpt="/tmp")
    env["STREAMKM_GROUP__CHUNK_ROWS"] = str(chunk_rows)
    env["STREAMKM_GROUP__ORDERING"] = ordering
    # Rounds: the last partial chunks wait for idleness; 5 s instead of 30 ends each run sooner
    # (a timing rule only, outside the measured 10%-90% window and the configuration hash).
    env["STREAMKM_GROUP__IDLE_PARTITION_SECONDS"] = "5"
    settings = load_settings(env=env)
    worker = GroupWorker(settings, bootstrap_servers=bootstrap)
    marks: list[tuple[float, int]] = []
    started: list[float] = []
    process = worker._process

    async def timed(batch, *args):
        started.append(time.perf_counter())
        await process(batch, *args)

    worker._process = timed
    await run_until_folded(worker, n, marks)
    return _steady_rate(marks, n), _from_start_rate(marks, n, started[0])


async def run_until_folded(worker, n: int, marks: list[tuple[float, int]]) -> None:
    """Run the group *worker* until the vectors model it follows has folded *n* records, then
    shut it down; appends (moment, n_seen) to *marks* each time that model grows."""
    task = asyncio.create_task(worker.run())
    try:
        while True:
            v = worker.follower.latest.get("vectors") if worker.follower is not None else None
            if v is not None and (not marks or v.n_seen > marks[-1][1]):
                marks.append((time.perf_counter(), v.n_seen))
            if v is not None and v.n_seen >= n:
                return
            if task.done():
                task.result()
                raise RuntimeError("group worker stopped early")
            await asyncio.sleep(0.002)
    finally:
        await worker.shutdown(60)
        await asyncio.gather(task, return_exceptions=True)


async def single(args) -> dict:
    from streamkm.kafka.embedded import EmbeddedBroker

    async with EmbeddedBroker(startup_timeout=60) as broker:
        bs = broker.bootstrap_servers
        topic = f"bench-group-{uuid.uuid4().hex[:6]}"
        await _fill(bs, topic, args.records)
        pw: list[float] = []
        pw_s: list[float] = []
        runs = [(o, c) for o in args.ordering for c in args.chunk_rows]
        gw: dict[tuple[str, int], list[float]] = {r: [] for r in runs}
        gw_s: dict[tuple[str, int], list[float]] = {r: [] for r in runs}
        loads: list[float] = []
        for _ in range(args.repeats):
            steady, from_start = await _per_worker(bs, topic, args.records)
            pw.append(steady)
            pw_s.append(from_start)
            for o, c in runs:
                steady, from_start = await _group_worker(bs, topic, args.records, c, o)
                gw[o, c].append(steady)
                gw_s[o, c].append(from_start)
            loads.append(os.getloadavg()[0])
            print(f"single worker: per-worker {pw[-1]:,.0f} rec/s, group "
                  + ", ".join(f"{gw[r][-1]:,.0f} ({r[0]}, chunk_rows {r[1]})" for r in runs)
                  + "; from the first batch: per-worker " + f"{pw_s[-1]:,.0f}, group "
                  + ", ".join(f"{gw_s[r][-1]:,.0f}" for r in runs) + f"; load {loads[-1]:.2f}", flush=True)
    return {"per_worker": pw, "group": gw, "per_worker_from_start": pw_s, "group_from_start": gw_s,
            "loads": loads, "records": args.records}


async def _topic_records(bootstrap: str, topic: str) -> list:
    from tests.helpers.e2e import consume_all

    return await consume_all(bootstrap, topic, timeout=60)


def chunk_staleness(offered: list, version_times: dict[int, float]) -> tuple[list[int], list[float]]:
    """The staleness of every accepted chunk of a refold.

    Parameters
    ----------
    offered : list of (Offered, float)
        What :func:`streamkm.group.refold.refold_stats_log` returned, each with the time (s)
        of its stats record.
    version_times : dict of int to float
        Published version number -> its earliest publication time (s).

    Returns
    -------
    versions : list of int
        Per chunk with a ``base_version`` (the version its member held when it cut it; 0: a
        member without a model yet, left out), the version it was folded into minus that one.
    seconds : list of float
        Per chunk, from its stats record to the first published version that includes it
        (version numbers count accepted chunks in fold order); chunks no version includes
        yet are left out.
    """
    versions: list[int] = []
    seconds: list[float] = []
    published = np.array(sorted(version_times), dtype=np.int64)
    # Earliest publication of any version >= n (a version is published after those before it).
    first_from = np.minimum.accumulate(np.array([version_times[int(v)] for v in published])[::-1])[::-1] \
        if published.size else np.empty(0)
    for o, stamp in offered:
        if o.status != "accepted":
            continue
        made = int(o.outcome.version)  # the chunk was folded into version made - 1
        if o.msg.base_version:
            versions.append(made - 1 - int(o.msg.base_version))
        i = int(np.searchsorted(published, made, side="left"))
        if i < published.size:
            seconds.append(float(first_from[i]) - stamp)
    return versions, seconds


def scaling(args) -> list[dict]:
    from streamkm.config import load_settings
    from streamkm.group import ModelVersion, WireError, partition_key
    from streamkm.group.messages import KIND_VERSION
    from streamkm.group.refold import refold_stats_log
    from streamkm.group.wire import decode
    from streamkm.kafka.embedded import EmbeddedBroker
    from streamkm.service.group import GROUP_PIPELINES, GroupWorker

    rows = []
    with EmbeddedBroker(startup_timeout=60) as broker:
        bs = broker.bootstrap_servers
        topic = f"bench-scale-{uuid.uuid4().hex[:6]}"
        asyncio.run(_fill(bs, topic, args.records))
        for n_workers in args.workers:
            group = f"sc{n_workers}-{uuid.uuid4().hex[:6]}"
            env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}
            run_env = _env(bs, topic, group, enabled=True, ckpt="/tmp")
            # As in the single-worker part: rounds cut the last partial chunks after the idle rule;
            # 5 s instead of 30 ends each run sooner (the rate is taken at the 90% moment).
            run_env["STREAMKM_GROUP__IDLE_PARTITION_SECONDS"] = "5"
            run_env["STREAMKM_GROUP__ORDERING"] = args.scaling_ordering
            env.update(run_env)
            env["OPENBLAS_NUM_THREADS"] = "1"
            settings = load_settings(env=run_env)  # what the members run with (the refold's ordering)
            t_start = time.time()
            procs = [subprocess.Popen([sys.executable, "-m", "streamkm", "run"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True) for _ in range(n_workers)]
            try:
                t_done = t90 = None
                deadline = time.time() + 600
                while time.time() < deadline and t_done is None:
                    time.sleep(0.5)
                    for rec in asyncio.run(_topic_records(bs, settings.group_model_topic)):
                        got = decode(rec.value)
                        if not isinstance(got, WireError) and got[0] == KIND_VERSION:
                            v = ModelVersion.from_bytes(rec.value)
                            if not isinstance(v, ModelVersion):
                                continue
                            if t90 is None and v.n_seen >= 0.9 * args.records:
                                t90 = rec.timestamp / 1000
                            if v.n_seen >= args.records:
                                t_done = rec.timestamp / 1000
                                break
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    p.wait(60)
            stats_partition = GROUP_PIPELINES.index("vectors")
            stats = sorted((r for r in asyncio.run(_topic_records(bs, settings.group_stats_topic))
                            if r.partition == stats_partition), key=lambda r: r.offset)
            version_times: dict[int, float] = {}
            for r in asyncio.run(_topic_records(bs, settings.group_model_topic)):
                got = decode(r.value)
                if isinstance(got, WireError) or got[0] != KIND_VERSION:
                    continue
                v = ModelVersion.from_bytes(r.value)
                if isinstance(v, ModelVersion) and v.pipeline == "vectors":
                    version_times[v.version] = min(version_times.get(v.version, np.inf), r.timestamp / 1000)
            t_first = min(r.timestamp for r in stats) / 1000
            # Staleness: refold the log as the run's reducer folded it (rounds: in rounds, over
            # every partition of the input topic, with the idle markers the log holds).
            stamps = {r.offset: r.timestamp / 1000 for r in stats}
            offered = refold_stats_log(GroupWorker(settings, bootstrap_servers=bs).new_group_model("vectors"),
                                       ((r.offset, r.value) for r in stats), ordering=settings.group.ordering,
                                       expect=[partition_key(topic, p) for p in range(PARTITIONS)])
            versions, seconds = chunk_staleness([(o, stamps[o.offset]) for o in offered], version_times)
            # Records/s to the moment 90% of the records were folded (as the single-worker part):
            # the last partial chunks wait for the idle rule and would time that instead.
            rate = 0.9 * args.records / ((t90 or time.time()) - t_first)
            row = {"workers": n_workers, "ordering": settings.group.ordering, "rate": rate,
                   "per_worker": rate / n_workers,
                   "stale_v": np.percentile(versions, [50, 90, 99, 100]) if versions else [0] * 4,
                   "stale_s": np.percentile(seconds, [50, 90, 99]) if seconds else [0] * 3,
                   "chunks": len(stats), "startup": t_first - t_start}
            print(f"{n_workers} workers ({settings.group.ordering}): {rate:,.0f} rec/s "
                  f"({rate / n_workers:,.0f} per worker); staleness "
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
    pws = statistics.median(sg["per_worker_from_start"])
    load = os.getloadavg()
    out = [
        "## The group model (`benchmarks/bench_group.py`)",
        "",
        f"Measured with `{' '.join(['python benchmarks/bench_group.py', *sys.argv[1:]])}` on "
        f"{machine_description()}; BLAS {blas}; "
        f"load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.",
        "",
        f"**Single worker**, {sg['records']:,} binary 1 x {DIM}-d records on {PARTITIONS} partitions, alternating "
        "runs, medians "
        f"(target: group >= 90% of per-worker):",
        "",
        markdown_table(["model", "records/s (median)", "of per-worker", "runs", "from the first batch (median)",
                        "of per-worker", "runs"], [
            ["per-worker (checkpoints)", f"{pw:,.0f}", "100%", ", ".join(f"{x:,.0f}" for x in sg["per_worker"]),
             f"{pws:,.0f}", "100%", ", ".join(f"{x:,.0f}" for x in sg["per_worker_from_start"])],
            *[[f"group ({o}), own reducer, chunk_rows {c}", f"{statistics.median(v):,.0f}",
               f"{statistics.median(v) / pw:.0%}", ", ".join(f"{x:,.0f}" for x in v),
               f"{statistics.median(vs):,.0f}", f"{statistics.median(vs) / pws:.0%}",
               ", ".join(f"{x:,.0f}" for x in vs)]
              for ((o, c), v), vs in zip(sg["group"].items(), sg["group_from_start"].values(), strict=True)]]),
        "",
        f"Load average (1 min) after each repeat: {', '.join(f'{x:.2f}' for x in sg['loads'])}. "
        "Records/s: between the moments 10% and 90% of the records were reflected; from the first batch: "
        "90% of the records over the time from the start of the first processed batch.",
        "",
        f"**Groups of {', '.join(str(r['workers']) for r in sc)} worker processes** (group model, `streamkm run` "
        f"processes, `group.ordering = \"{sc[0]['ordering'] if sc else ''}\"`) on the same topic: records/s "
        "from the first chunk sent to the first version that folded 90% of the records; staleness of each "
        "accepted chunk, from a refold of the stats log in that ordering (versions: from the version its "
        "member held to the one it was folded into; seconds: from its stats record to the first published "
        "version that includes it; the last partial chunks wait for the idle rule, 5 s here):",
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
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk-rows", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--ordering", nargs="+", choices=["rounds", "arrival"], default=["rounds", "arrival"],
                   help="group.ordering of the single-worker group runs")
    p.add_argument("--only", choices=["single", "scaling"],
                   help="run only this part (single: part 1; scaling: part 2, the 1-3 worker processes) and print "
                   "its results (implies --no-write)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3],
                   help="part 2: the numbers of worker processes to run (default 1 2 3)")
    p.add_argument("--scaling-ordering", choices=["rounds", "arrival"], default="rounds",
                   help="part 2: group.ordering of the worker processes (the staleness refold follows it)")
    p.add_argument("--fold-messages", type=int, default=300)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if any(n < 1 for n in args.workers):
        p.error(f"--workers: every count must be >= 1, got {args.workers}")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        blas = blas_description()
        if args.only == "single":
            sg = asyncio.run(single(args))
            pw = statistics.median(sg["per_worker"])
            pws = statistics.median(sg["per_worker_from_start"])
            for (o, c), v in sg["group"].items():
                vs = sg["group_from_start"][o, c]
                print(f"median: group ({o}, chunk_rows {c}) {statistics.median(v):,.0f} rec/s = "
                      f"{statistics.median(v) / pw:.0%} of per-worker {pw:,.0f}; from the first batch "
                      f"{statistics.median(vs):,.0f} = {statistics.median(vs) / pws:.0%} of {pws:,.0f}")
            return 0
        if args.only == "scaling":
            scaling(args)
            return 0
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

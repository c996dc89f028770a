"""Where a lone group worker's records wait: reading against the model, per source partition.

A diagnostic for ``bench_group.py``'s single-worker gap (issue 8), not a benchmark table: it
fills a topic, runs one :class:`~streamkm.service.group.GroupWorker` (its own reducer) and
prints when the member had read, and when the model it follows had folded, 10%, 50% and 90% of
the records, and when each source partition's first chunk was cut. With
``group.ordering = "rounds"`` a round needs a chunk of every partition, so the model can only
advance as fast as the partition read last.

Usage: ``python benchmarks/group_timeline.py [--records N] [--chunk-rows R] [--ordering O]``;
``STREAMKM_*`` variables in the environment override the worker's settings (for example
``STREAMKM_KAFKA__MAX_PARTITION_FETCH_BYTES``). ``--fetch-order BYTES...`` instead prints, for a
bare aiokafka consumer with each ``max_partition_fetch_bytes``, what its first ``getmany`` calls
returned per partition: the order the broker hands partitions out in.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_group import _env, _fill, run_until_folded  # noqa: E402


async def _run(n: int, chunk_rows: int, ordering: str, repeats: int) -> None:
    from streamkm.config import load_settings
    from streamkm.kafka.embedded import EmbeddedBroker
    from streamkm.service.group import GroupWorker

    async with EmbeddedBroker(startup_timeout=60) as broker:
        bs = broker.bootstrap_servers
        topic = f"timeline-{uuid.uuid4().hex[:6]}"
        await _fill(bs, topic, n)
        for rep in range(repeats):
            env = _env(bs, topic, f"tl-{uuid.uuid4().hex[:8]}", enabled=True, ckpt="/tmp")
            env["STREAMKM_GROUP__CHUNK_ROWS"] = str(chunk_rows)
            env["STREAMKM_GROUP__ORDERING"] = ordering
            env["STREAMKM_GROUP__IDLE_PARTITION_SECONDS"] = "5"
            env.update({k: v for k, v in os.environ.items() if k.startswith("STREAMKM_")})
            worker = GroupWorker(load_settings(env=env), bootstrap_servers=bs)
            read: list[tuple[float, int]] = []  # (end of a processed batch, records in it)
            first_chunk: dict[int, float] = {}
            marks: list[tuple[float, int]] = []  # (moment the follower held it, n_seen)
            process, send = worker._process, worker._send

            async def timed(batch, *args, process=process, read=read):
                await process(batch, *args)
                read.append((time.perf_counter(), sum(len(v) for v in batch.values())))

            async def sent(lane, res, send=send, first_chunk=first_chunk):
                for st in res.stats or ():
                    first_chunk.setdefault(st.partition, time.perf_counter())
                await send(lane, res)

            worker._process, worker._send = timed, sent
            t_start = time.perf_counter()
            await run_until_folded(worker, n, marks)
            t0 = min(first_chunk.values(), default=t_start)
            cum = np.cumsum([r[1] for r in read])
            seen = np.array([m[1] for m in marks])
            print(f"repeat {rep}: {ordering}, chunk_rows {chunk_rows}, {n:,} records; seconds from the first chunk")
            for frac in (0.1, 0.5, 0.9):
                i = int(np.searchsorted(cum, frac * n))
                j = int(np.searchsorted(seen, frac * n))
                print(f"  {frac:.0%}: read at {read[i][0] - t0:.2f}, folded into the model at {marks[j][0] - t0:.2f}")
            print("  first chunk of each partition: " + ", ".join(
                f"p{p} {t - t0:.2f}" for p, t in sorted(first_chunk.items())), flush=True)


async def _fetch_order(n: int, limits: list[int], calls: int = 14) -> None:
    from aiokafka import AIOKafkaConsumer

    from streamkm.kafka.embedded import EmbeddedBroker

    async with EmbeddedBroker(startup_timeout=60) as broker:
        bs = broker.bootstrap_servers
        topic = f"fetch-order-{uuid.uuid4().hex[:6]}"
        await _fill(bs, topic, n)
        for limit in limits:
            consumer = AIOKafkaConsumer(topic, bootstrap_servers=bs, group_id=f"fo-{uuid.uuid4().hex[:8]}",
                                        auto_offset_reset="earliest", max_partition_fetch_bytes=limit)
            await consumer.start()
            try:
                t0, seen = time.perf_counter(), []
                for _ in range(calls):
                    got = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                    seen.append(f"{time.perf_counter() - t0:.2f}s " + " ".join(
                        f"p{tp.partition}:{len(v)}" for tp, v in sorted(got.items())))
            finally:
                await consumer.stop()
            print(f"max_partition_fetch_bytes {limit:,}: " + "; ".join(seen), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--chunk-rows", type=int, default=1024)
    ap.add_argument("--ordering", choices=["rounds", "arrival"], default="rounds")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--fetch-order", type=int, nargs="+", metavar="BYTES",
                    help="print the first getmany results of a bare consumer with each max_partition_fetch_bytes")
    a = ap.parse_args(argv)
    if a.fetch_order:
        asyncio.run(_fetch_order(a.records, a.fetch_order))
    else:
        asyncio.run(_run(a.records, a.chunk_rows, a.ordering, a.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Before/after of the clustering kernels: this checkout vs a git revision, interleaved.

Loads ``streamkm/cluster`` of ``--rev`` (default ``main``) from ``git archive``
as a separate package and times it against the working tree's in one process,
alternating (old new, new old, ...), with one BLAS/OpenMP thread:

* ``StreamingKMeans.partial_fit`` on the shapes of ``bench_cluster.py`` (a)
  (defaults, 100 batches after an untimed initialization, as there);
* ``KMeans.fit`` (Lloyd, tol=0, 20 iterations from the same random rows) on
  the shapes of ``bench_cluster.py`` (b), time per iteration.

It prints the medians, the ratio old / new of the medians with the range of
the paired per-repeat ratios, and whether both versions ended with the same
bits (centers, weights, reservoir, objectives; Lloyd centers and labels). The
BLAS kernel and the load average are printed too. Nothing is written.

Usage::

    python benchmarks/bench_cluster_ab.py --rev main --repeats 15
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._report import markdown_table  # noqa: E402
from benchmarks.bench_cluster import (  # noqa: E402
    LLOYD_SHAPES,
    STREAM_SHAPES,
    batches,
    blas_description,
    blobs,
    load_average,
    settle,
)

BASELINE = "_baseline_cluster"


def load_baseline(rev: str, into: Path):
    """``streamkm.cluster`` of ``rev`` as the package ``_baseline_cluster`` (imported)."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "streamkm/cluster"],
                          check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    pkg = into / BASELINE
    (into / "streamkm" / "cluster").rename(pkg)
    for f in pkg.glob("*.py"):  # its absolute self-imports must not reach the working tree
        f.write_text(f.read_text().replace("streamkm.cluster.", f"{BASELINE}."))
    sys.path.insert(0, str(into))
    return importlib.import_module(f"{BASELINE}.streaming_kmeans"), importlib.import_module(f"{BASELINE}.kmeans")


def paired_ratio(old: list[float], new: list[float]) -> str:
    r = [a / b for a, b in zip(old, new, strict=True)]
    return f"**{statistics.median(old) / statistics.median(new):.3f}** ({min(r):.2f}–{max(r):.2f})"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--rev", default="main", help="git revision of the baseline (default main)")
    p.add_argument("--repeats", type=int, default=15, help="repeats of partial_fit (Lloyd: about half)")
    args = p.parse_args(argv)

    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    from streamkm.cluster import KMeans
    from streamkm.cluster.streaming_kmeans import StreamingKMeans

    tmp = tempfile.TemporaryDirectory()
    old_skm, old_km = load_baseline(args.rev, Path(tmp.name))
    print(f"BLAS: {blas_description()}\nbaseline: {args.rev}\nload average at start: {load_average()}",
          flush=True)
    rows = []
    for d, k, b in STREAM_SHAPES:
        X = blobs(101 * b, d, k, seed=d * 1000 + k)
        first, bs = X[:b], batches(X[b:], b)
        times: dict[str, list[float]] = {"old": [], "new": []}
        same = True
        for r in range(args.repeats):
            models = {}
            for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
                cls = old_skm.StreamingKMeans if name == "old" else StreamingKMeans
                settle()
                m = cls(n_clusters=k, seed=r)
                m.partial_fit(first)
                t0 = time.perf_counter()
                for x in bs:
                    m.partial_fit(x)
                times[name].append((time.perf_counter() - t0) / len(bs))
                models[name] = m
            a, c = models["old"], models["new"]
            same &= bool(np.array_equal(a.cluster_centers_, c.cluster_centers_)
                         and np.array_equal(a.counts_, c.counts_)
                         and np.array_equal(a.reservoir_sample, c.reservoir_sample)
                         and a.ewm_objective_ == c.ewm_objective_
                         and a.n_dying_replaced_ == c.n_dying_replaced_)
        rows.append([f"partial_fit d={d}, k={k}, batch {b}", f"{statistics.median(times['old']) * 1e6:,.0f} µs",
                     f"{statistics.median(times['new']) * 1e6:,.0f} µs", paired_ratio(times["old"], times["new"]),
                     "yes" if same else "**no**"])
        print(rows[-1], flush=True)
    for n, d, k in LLOYD_SHAPES:
        X = blobs(n, d, k, seed=n + d)
        C0 = X[np.random.default_rng(123).choice(n, size=k, replace=False)].copy()
        times = {"old": [], "new": []}
        fits = {}
        for r in range(max(3, args.repeats // 2 + 1)):
            for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
                cls = old_km.KMeans if name == "old" else KMeans
                settle()
                t0 = time.perf_counter()
                fits[name] = cls(n_clusters=k, init=C0, max_iter=20, tol=0.0).fit(X)
                times[name].append((time.perf_counter() - t0) / fits[name].n_iter_)
        same = bool(np.array_equal(fits["old"].cluster_centers_, fits["new"].cluster_centers_)
                    and np.array_equal(fits["old"].labels_, fits["new"].labels_))
        rows.append([f"KMeans.fit n={n:,}, d={d}, k={k}", f"{statistics.median(times['old']) * 1e3:.2f} ms/it",
                     f"{statistics.median(times['new']) * 1e3:.2f} ms/it", paired_ratio(times["old"], times["new"]),
                     "yes" if same else "**no**"])
        print(rows[-1], flush=True)
    print(markdown_table(["case", f"before ({args.rev})", "after", "before / after (paired range)",
                          "same bits"], rows))
    print(f"load average at the end: {load_average()}")


if __name__ == "__main__":
    main()

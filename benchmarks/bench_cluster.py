"""Clustering benchmarks: streamkm vs scikit-learn (and river), side by side.

One run measures every case, prints a table and rewrites the ``bench_cluster``
section of ``docs/benchmarks.md``:

(a) ``StreamingKMeans.partial_fit`` vs ``MiniBatchKMeans.partial_fit``:
    points/s over one pass of 200k float32 blob points, d=64, k=64, batches
    of 1024; final objective (mean squared distance of all points to the
    final centers) of both.
(b) ``KMeans.fit`` vs ``sklearn.cluster.KMeans(algorithm="lloyd")`` from the
    same initial centers (random rows), tol=0: fit time / iterations, and the
    final inertia.
(c) single-pass ``StreamingKMeans`` objective vs batch ``KMeans`` objective on
    the same data.
(d) peak memory of ``KMeans.fit`` at n=1M, d=64, k=256 (float32), in a fresh
    subprocess: NumPy allocations traced by ``tracemalloc`` and the
    ``ru_maxrss`` growth during ``fit``; scikit-learn alongside for the record.
(e) throughput of ``StreamingKMeans.partial_fit`` vs river's
    ``cluster.KMeans.learn_one`` (river on a subsample: it is per-point Python).

Usage::

    python benchmarks/bench_cluster.py            # full sizes, writes docs
    python benchmarks/bench_cluster.py --quick    # small sizes, smoke test
    python benchmarks/bench_cluster.py --no-write # print only
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import machine_description, markdown_table, update_section  # noqa: E402


# --------------------------------------------------------------------- data
def blobs(n: int, d: int, k: int, *, seed: int = 0, center_scale: float = 2.0) -> np.ndarray:
    """Shuffled isotropic Gaussian blobs, float32, generated in chunks (no
    float64 copy of the whole array)."""
    rng = np.random.default_rng(seed)
    centers = (rng.standard_normal((k, d)) * center_scale).astype(np.float32)
    X = np.empty((n, d), dtype=np.float32)
    step = 65536
    for a in range(0, n, step):
        b = min(a + step, n)
        X[a:b] = rng.standard_normal((b - a, d), dtype=np.float32)
        X[a:b] += centers[rng.integers(k, size=b - a)]
    return X


def mean_sq_dist(X: np.ndarray, centers: np.ndarray) -> float:
    from streamkm.cluster._distance import _assign

    _, d2 = _assign(X, np.asarray(centers, dtype=X.dtype))
    return float(d2.sum(dtype=np.float64) / len(X))


def settle() -> None:
    """Let idle BLAS/OpenMP worker threads of the previous run stop spinning,
    so one library's spin-waiting threads do not slow the other's timing."""
    gc.collect()
    time.sleep(0.3)


def batches(X: np.ndarray, size: int):
    return [X[a:a + size] for a in range(0, len(X), size)]


# -------------------------------------------------------------------- cases
def case_streaming(X, k, batch, repeats):
    """(a) points/s and final objective of one pass, ours vs MiniBatchKMeans."""
    from sklearn.cluster import MiniBatchKMeans

    from streamkm.cluster.streaming_kmeans import StreamingKMeans

    bs = batches(X, batch)
    ours_t, sk_t, ours_obj, sk_obj = [], [], [], []
    for r in range(repeats):
        model = StreamingKMeans(n_clusters=k, seed=r)
        settle()
        t0 = time.perf_counter()
        for b in bs:
            model.partial_fit(b)
        ours_t.append(time.perf_counter() - t0)
        ours_obj.append(mean_sq_dist(X, model.cluster_centers_))

        ref = MiniBatchKMeans(n_clusters=k, batch_size=batch, random_state=r, n_init=1)
        settle()
        t0 = time.perf_counter()
        for b in bs:
            ref.partial_fit(b)
        sk_t.append(time.perf_counter() - t0)
        sk_obj.append(mean_sq_dist(X, ref.cluster_centers_))
    return {
        "ours_pps": len(X) / statistics.median(ours_t),
        "sk_pps": len(X) / statistics.median(sk_t),
        "ours_best": len(X) / min(ours_t),
        "sk_best": len(X) / min(sk_t),
        "ours_obj": statistics.median(ours_obj),
        "sk_obj": statistics.median(sk_obj),
        "last_model": model,
    }


def case_lloyd(X, k, max_iter, repeats):
    """(b) time per Lloyd iteration from the same init, ours vs sklearn."""
    from sklearn.cluster import KMeans as SKKMeans

    from streamkm.cluster import KMeans

    rng = np.random.default_rng(123)
    C0 = X[rng.choice(len(X), size=k, replace=False)].copy()
    ours, ref, elkan = [], [], []
    for _ in range(repeats):
        settle()
        m = KMeans(n_clusters=k, init=C0, max_iter=max_iter, tol=0.0)
        t0 = time.perf_counter()
        m.fit(X)
        ours.append((time.perf_counter() - t0) / m.n_iter_)
        s = SKKMeans(n_clusters=k, init=C0, n_init=1, max_iter=max_iter, tol=0.0,
                     algorithm="lloyd")
        settle()
        t0 = time.perf_counter()
        s.fit(X)
        ref.append((time.perf_counter() - t0) / s.n_iter_)
        e = SKKMeans(n_clusters=k, init=C0, n_init=1, max_iter=max_iter, tol=0.0,
                     algorithm="elkan")
        settle()
        t0 = time.perf_counter()
        e.fit(X)
        elkan.append((time.perf_counter() - t0) / e.n_iter_)
    return {
        "elkan_s": statistics.median(elkan), "elkan_iter": int(e.n_iter_),
        "ours_s": statistics.median(ours), "sk_s": statistics.median(ref),
        "ours_best": min(ours), "sk_best": min(ref),
        "ours_iter": m.n_iter_, "sk_iter": int(s.n_iter_),
        "ours_inertia": m.inertia_, "sk_inertia": float(s.inertia_),
    }


def case_single_pass(X, k, batch, stream_model):
    """(c) objective of one streaming pass vs batch k-means on the same data."""
    from streamkm.cluster import KMeans

    t0 = time.perf_counter()
    # n_init=3 like StreamingKMeans' initialisation: a fair batch baseline
    km = KMeans(n_clusters=k, n_init=3, seed=0).fit(X)
    batch_s = time.perf_counter() - t0
    return {
        "stream_obj": mean_sq_dist(X, stream_model.cluster_centers_),
        "batch_obj": km.inertia_ / len(X),
        "batch_s": batch_s,
        "batch_iter": km.n_iter_,
    }


def case_river(X, k, batch, n_river):
    """(e) points/s: river learn_one on a subsample vs our partial_fit."""
    from river import cluster

    from streamkm.cluster.streaming_kmeans import StreamingKMeans

    sub = X[:n_river]
    rows = [dict(enumerate(map(float, x))) for x in sub]  # conversion not timed
    model = cluster.KMeans(n_clusters=k, seed=0)
    settle()
    t0 = time.perf_counter()
    for x in rows:
        model.learn_one(x)
    river_pps = n_river / (time.perf_counter() - t0)
    ours = StreamingKMeans(n_clusters=k, seed=0)
    settle()
    t0 = time.perf_counter()
    for b in batches(X, batch):
        ours.partial_fit(b)
    ours_pps = len(X) / (time.perf_counter() - t0)
    return {"river_pps": river_pps, "ours_pps": ours_pps}


# ------------------------------------------------------- (d) memory, child
def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM), Linux >= 4.0."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_child(which: str, n: int, d: int, k: int, max_iter: int) -> None:
    import tracemalloc

    X = blobs(n, d, k, seed=7)
    gc.collect()
    if which == "ours":
        from streamkm.cluster import KMeans

        model = KMeans(n_clusters=k, seed=0, max_iter=max_iter)
    else:
        from sklearn.cluster import KMeans as SKKMeans

        model = SKKMeans(n_clusters=k, random_state=0, n_init=1, max_iter=max_iter,
                         algorithm="lloyd")
    rss0 = _status_bytes("VmRSS")
    hwm_reset = _reset_peak_rss()
    maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    t0 = time.perf_counter()
    model.fit(X)
    secs = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if hwm_reset:
        growth = _status_bytes("VmHWM") - rss0
    else:  # ru_maxrss cannot be reset: growth above the earlier high-water mark
        growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - max(rss0, maxrss0)
    print(json.dumps({
        "input_bytes": X.nbytes, "traced_peak": peak, "rss_growth": max(0, growth),
        "hwm_reset": hwm_reset, "seconds": secs,
    }))


def case_memory(n, d, k, max_iter):
    out = {}
    for which in ("ours", "sklearn"):
        proc = subprocess.run(
            [sys.executable, __file__, "--memory-child", which, str(n), str(d), str(k),
             str(max_iter)],
            capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )
        out[which] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# --------------------------------------------------------------------- main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    p.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    p.add_argument("--memory-child", nargs=5, metavar=("WHICH", "N", "D", "K", "ITERS"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        which, n, d, k, it = args.memory_child
        memory_child(which, int(n), int(d), int(k), int(it))
        return

    if args.quick:
        n, d, k, batch, reps, lloyd_iter = 20_000, 64, 16, 1024, 2, 10
        mem_n, mem_k, mem_iter, n_river = 50_000, 32, 3, 500
    else:
        n, d, k, batch, reps, lloyd_iter = 200_000, 64, 64, 1024, 7, 30
        mem_n, mem_k, mem_iter, n_river = 1_000_000, 256, 5, 5_000

    X = blobs(n, d, k, seed=0)
    print(f"data: {n} x {d} float32 blobs, k={k}", flush=True)
    a = case_streaming(X, k, batch, 2 * reps + 1)  # a pass is short: more repeats
    print("a", {key: v for key, v in a.items() if key != "last_model"}, flush=True)
    b = case_lloyd(X, k, lloyd_iter, reps)
    print("b", b, flush=True)
    c = case_single_pass(X, k, batch, a["last_model"])
    print("c", c, flush=True)
    e = case_river(X, k, batch, n_river)
    print("e", e, flush=True)
    m = case_memory(mem_n, d, mem_k, mem_iter)
    print("d", m, flush=True)

    def yes(ok):
        return "yes" if ok else "**no**"

    ra = a["ours_pps"] / a["sk_pps"]
    ra_best = a["ours_best"] / a["sk_best"]
    rb_best = b["ours_best"] / b["sk_best"]
    oa = a["ours_obj"] / a["sk_obj"]
    rb = b["ours_s"] / b["sk_s"]
    ob = b["ours_inertia"] / b["sk_inertia"]
    rc = c["stream_obj"] / c["batch_obj"]
    mo, ms = m["ours"], m["sklearn"]
    rd_traced = (mo["input_bytes"] + mo["traced_peak"]) / mo["input_bytes"]
    rd_rss = (mo["input_bytes"] + mo["rss_growth"]) / mo["input_bytes"]
    rs_rss = (ms["input_bytes"] + ms["rss_growth"]) / ms["input_bytes"]
    re_ = e["ours_pps"] / e["river_pps"]
    mib = 2**20
    rows = [
        [f"(a) streaming points/s (partial_fit, batches of {batch})",
         f"{a['ours_pps']:,.0f} (best {a['ours_best']:,.0f})",
         f"{a['sk_pps']:,.0f} (best {a['sk_best']:,.0f}, MiniBatchKMeans)",
         f"{ra:.2f}x (best-vs-best {ra_best:.2f}x)",
         ">= 1.5x", yes(ra >= 1.5)],
        ["(a) final objective (mean sq. distance)", f"{a['ours_obj']:.4f}",
         f"{a['sk_obj']:.4f}", f"{oa:.4f}", "within 2%", yes(abs(oa - 1) <= 0.02 or oa < 1)],
        [f"(b) Lloyd time / iteration (same init, tol=0, ≤{lloyd_iter} it.)",
         f"{b['ours_s'] * 1e3:.1f} ms (best {b['ours_best'] * 1e3:.1f}; {b['ours_iter']} it.)",
         f"{b['sk_s'] * 1e3:.1f} ms (best {b['sk_best'] * 1e3:.1f}; {b['sk_iter']} it.)",
         f"{rb:.2f}x (best-vs-best {rb_best:.2f}x)", "<= 1.2x",
         yes(rb <= 1.2)],
        ["(b) for the record: vs sklearn KMeans(algorithm=\"elkan\") (also pruned)",
         f"{b['ours_s'] * 1e3:.1f} ms", f"{b['elkan_s'] * 1e3:.1f} ms ({b['elkan_iter']} it.)",
         f"{b['ours_s'] / b['elkan_s']:.2f}x", "-", "-"],
        ["(b) final inertia", f"{b['ours_inertia']:.6g}", f"{b['sk_inertia']:.6g}",
         f"{ob:.5f}", "within 0.5%", yes(abs(ob - 1) <= 0.005)],
        ["(c) one streaming pass vs batch KMeans objective",
         f"{c['stream_obj']:.4f} (stream)", f"{c['batch_obj']:.4f} (batch, {c['batch_iter']} it.)",
         f"{rc:.4f}", "<= 1.05x", yes(rc <= 1.05)],
        [f"(d) KMeans.fit peak memory, n={mem_n:,} d={d} k={mem_k} "
         f"(input {mo['input_bytes'] / mib:.0f} MiB)",
         f"+{mo['traced_peak'] / mib:.0f} MiB traced, +{mo['rss_growth'] / mib:.0f} MiB RSS",
         f"+{ms['rss_growth'] / mib:.0f} MiB RSS (sklearn KMeans)",
         f"{rd_traced:.2f}x / {rd_rss:.2f}x input (sklearn {rs_rss:.2f}x)", "<= 2x input",
         yes(max(rd_traced, rd_rss) <= 2)],
        [f"(e) points/s vs river KMeans.learn_one (river on first {n_river:,} points)",
         f"{e['ours_pps']:,.0f}", f"{e['river_pps']:,.0f} (river)", f"{re_:.0f}x",
         "for the record", "-"],
    ]
    table = markdown_table(["case", "streamkm", "reference", "ratio", "target", "met"], rows)
    cmd = "python benchmarks/bench_cluster.py" + (" --quick" if args.quick else "")
    import river
    import sklearn

    body = "\n".join([
        "## Clustering (`benchmarks/bench_cluster.py`)",
        "",
        f"Command: `{cmd}` (one run; medians over {reps} repeats for (a) and (b), "
        "best-of-repeats in parentheses; targets are judged on the medians).",
        f"Machine: {machine_description()}; scikit-learn {sklearn.__version__}, "
        f"river {river.__version__}. The machine is shared with other jobs, so "
        "absolute times are noisy; ours and the reference run interleaved in "
        "the same process so ratios are comparable.",
        "",
        f"Data: {n:,} x {d} float32 Gaussian blobs, k={k} (center scale 2, unit noise).",
        "(a)/(c)/(e) use `StreamingKMeans(n_clusters=k, seed=r)` with default "
        "settings and `MiniBatchKMeans(batch_size=1024, n_init=1)`; objectives are "
        "the mean squared distance of all points to the final centers. streamkm's "
        "Lloyd skips points whose label cannot change (Hamerly bounds; same "
        "iterates as plain Lloyd), so sklearn's pruned `elkan` is shown too. The batch "
        "baseline of (c) is `KMeans(k, n_init=3, seed=0)` (the streaming model "
        "also initialises with 3 k-means++ + Lloyd runs). (b) starts "
        "both from the same random rows of X and divides fit time by the "
        "iterations run. (d) runs `KMeans(k, seed=0, "
        f"max_iter={mem_iter}).fit` (k-means++ included) in a fresh subprocess; "
        "'traced' is the tracemalloc peak of NumPy allocations during fit, 'RSS' "
        "the peak resident set during fit (VmHWM, reset just before fit via "
        "/proc/self/clear_refs) minus the resident set before it; the ratio "
        "counts input + extra. (a) uses %d repeats (one pass takes ~0.1 s). " % (2 * reps + 1) +
        "Timed runs of the two libraries alternate, with a 0.3 s pause before "
        "each so idle BLAS/OpenMP threads of the other library stop spinning. "
        "(e) converts river's input to dicts outside the timed loop.",
        "",
        table,
    ])
    print()
    print(table)
    if not args.no_write:
        update_section("bench_cluster", body)
        print("\nupdated docs/benchmarks.md section bench_cluster")


if __name__ == "__main__":
    main()

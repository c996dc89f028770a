"""Clustering benchmarks: streamkm vs scikit-learn (and river), side by side.

One command measures every clustering number of ``docs/benchmarks.md``, prints
the tables and rewrites the ``bench_cluster`` section of that file:

(a) ``StreamingKMeans.partial_fit`` vs ``MiniBatchKMeans.partial_fit``, time
    per batch on four shapes (d, k, batch): (64, 64, 1024), (16, 16, 4096),
    (128, 256, 1024), (8, 8, 256); and the final objective (mean squared
    distance of the points of the pass to the final centers) of both.
(f) the same ``partial_fit`` passes against the assignment-GEMM floor: the
    time of ``X @ C.T`` alone for the same batches and centers.
(b) ``KMeans.fit`` vs ``sklearn.cluster.KMeans(algorithm="lloyd")`` from the
    same initial centers (random rows), tol=0, at most 20 iterations: fit time
    per iteration at n=100k, d=k=32 and n=200k, d=k=64; the iterates are
    compared (centers, labels, inertia after 1, 3 and 20 iterations).
(c) single-pass ``StreamingKMeans`` objective vs batch ``KMeans`` objective on
    the same data.
(d) peak memory of ``KMeans.fit`` at n=1M, d=64, k=256 (float32), in a fresh
    subprocess: NumPy allocations traced by ``tracemalloc`` and the resident
    set growth during ``fit``; scikit-learn alongside for the record.
(e) throughput of ``StreamingKMeans.partial_fit`` vs river's
    ``cluster.KMeans.learn_one`` (river on a subsample: it is per-point Python).

Every timing runs with one BLAS/OpenMP thread (``threadpool_limits(1)``); the
candidates of a case alternate in one process (A B C, C B A, ...), and the
tables give medians with the range over repeats. The BLAS library and kernel
in use (threadpoolctl), ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` and the load
average are printed and recorded.

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
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import machine_description, markdown_table, update_section  # noqa: E402

#: (n_features, n_clusters, batch) of case (a)/(f), as in issue 12.
STREAM_SHAPES = ((64, 64, 1024), (16, 16, 4096), (128, 256, 1024), (8, 8, 256))
#: For the record: a shape again with dying-cluster replacement off (see the notes).
STREAM_EXTRA = ((128, 256, 1024, {"dying_threshold": 0.0}),)
#: (n_samples, n_features, n_clusters) of case (b).
LLOYD_SHAPES = ((100_000, 32, 32), (200_000, 64, 64))


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
    """Mean squared distance to the nearest center, in float64 (independent of both libraries)."""
    C = np.asarray(centers, dtype=np.float64)
    c_sq = np.einsum("ij,ij->i", C, C)
    total = 0.0
    for a in range(0, len(X), 8192):
        x = X[a:a + 8192].astype(np.float64)
        d2 = np.einsum("ij,ij->i", x, x)[:, None] - 2.0 * (x @ C.T) + c_sq
        total += float(np.maximum(d2.min(axis=1), 0.0).sum())
    return total / len(X)


def settle() -> None:
    """Collect garbage and pause briefly between timed runs."""
    gc.collect()
    time.sleep(0.05)


def batches(X: np.ndarray, size: int) -> list[np.ndarray]:
    return [X[a:a + size] for a in range(0, len(X), size)]


def interleaved(candidates: dict[str, Callable[[int], float]], repeats: int) -> dict[str, list[float]]:
    """Run every candidate ``repeats`` times, alternating the order (A B C, C B A, ...).

    Each candidate is called with the repeat index and returns its own timing.
    """
    names = list(candidates)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            settle()
            out[name].append(candidates[name](r))
    return out


def spread(values: list[float], scale: float = 1.0, fmt: str = "{:,.0f}") -> str:
    """``median (min–max)`` of ``values`` times ``scale``."""
    med = statistics.median(values) * scale
    return f"{fmt.format(med)} ({fmt.format(min(values) * scale)}–{fmt.format(max(values) * scale)})"


def paired(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True)]


def blas_description() -> str:
    from threadpoolctl import threadpool_info

    parts = []
    for lib in threadpool_info():
        if lib.get("user_api") != "blas":
            continue
        name = Path(lib.get("filepath", "")).name.split("-")[0]
        owner = "NumPy" if "numpy" in lib.get("filepath", "") else (
            "SciPy" if "scipy" in lib.get("filepath", "") else name)
        parts.append(f"{owner}: {lib.get('internal_api')} {lib.get('version')}, "
                     f"{lib.get('architecture')} kernel, {lib.get('num_threads')} thread(s)")
    env = ", ".join(f"{v}={os.environ[v]}" if v in os.environ else f"{v} unset"
                    for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    return "; ".join(parts) + f" ({env})"


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


# -------------------------------------------------------------------- cases
def case_streaming(d: int, k: int, batch: int, n_batches: int, repeats: int,
                   params: dict | None = None) -> dict:
    """(a) + (f): time per batch of ours, MiniBatchKMeans and the X @ C.T floor."""
    from sklearn.cluster import MiniBatchKMeans

    from streamkm.cluster.streaming_kmeans import StreamingKMeans

    X = blobs((n_batches + 1) * batch, d, k, seed=d * 1000 + k)
    first, bs = X[:batch], batches(X[batch:], batch)
    Xpass = X[batch:]
    models: dict[str, object] = {}
    objectives: dict[str, list[float]] = {"ours": [], "sklearn": []}
    dying: list[int] = []

    def ours(r: int) -> float:
        model = StreamingKMeans(n_clusters=k, seed=r, **(params or {}))
        model.partial_fit(first)  # initialization (k-means++ + Lloyd), not timed
        t0 = time.perf_counter()
        for b in bs:
            model.partial_fit(b)
        t = (time.perf_counter() - t0) / len(bs)
        models["ours"] = model
        objectives["ours"].append(mean_sq_dist(Xpass, model.cluster_centers_))
        dying.append(model.n_dying_replaced_)
        return t

    def sklearn(r: int) -> float:
        ref = MiniBatchKMeans(n_clusters=k, batch_size=batch, random_state=r, n_init=1)
        ref.partial_fit(first)  # initialization (k-means++), not timed
        t0 = time.perf_counter()
        for b in bs:
            ref.partial_fit(b)
        t = (time.perf_counter() - t0) / len(bs)
        objectives["sklearn"].append(mean_sq_dist(Xpass, ref.cluster_centers_))
        return t

    def floor(r: int) -> float:
        model = models.get("ours")
        C = (np.ascontiguousarray(model.cluster_centers_) if model is not None  # type: ignore[attr-defined]
             else X[:k].copy())
        t0 = time.perf_counter()
        for b in bs:
            b @ C.T
        return (time.perf_counter() - t0) / len(bs)

    times = interleaved({"ours": ours, "sklearn": sklearn, "floor": floor}, repeats)
    return {"d": d, "k": k, "batch": batch, "n_batches": len(bs), "times": times,
            "objectives": objectives, "last_model": models["ours"], "X": Xpass,
            "params": params or {}, "dying": statistics.median(dying)}


def case_lloyd(n: int, d: int, k: int, max_iter: int, repeats: int) -> dict:
    """(b) time per Lloyd iteration from the same init, ours vs sklearn; iterates compared."""
    from sklearn.cluster import KMeans as SKKMeans

    from streamkm.cluster import KMeans

    X = blobs(n, d, k, seed=n + d)
    rng = np.random.default_rng(123)
    C0 = X[rng.choice(n, size=k, replace=False)].copy()
    fitted: dict[str, object] = {}

    def ours(r: int) -> float:
        m = KMeans(n_clusters=k, init=C0, max_iter=max_iter, tol=0.0)
        t0 = time.perf_counter()
        m.fit(X)
        fitted["ours"] = m
        return (time.perf_counter() - t0) / m.n_iter_

    def sk(algorithm: str) -> Callable[[int], float]:
        def run(r: int) -> float:
            s = SKKMeans(n_clusters=k, init=C0, n_init=1, max_iter=max_iter, tol=0.0,
                         algorithm=algorithm)
            t0 = time.perf_counter()
            s.fit(X)
            fitted[algorithm] = s
            return (time.perf_counter() - t0) / s.n_iter_
        return run

    times = interleaved({"ours": ours, "lloyd": sk("lloyd"), "elkan": sk("elkan")}, repeats)
    # Same iterates: fit both for 1, 3 and max_iter iterations from C0 and compare, on the
    # timed float32 data and on a float64 copy (where near-ties cannot blur the comparison).
    checks: dict[str, list[dict]] = {"float32": [], "float64": []}
    for name, Xd in (("float32", X), ("float64", X.astype(np.float64))):
        Cd = C0.astype(Xd.dtype)
        for it in sorted({1, 3, max_iter}):
            a = KMeans(n_clusters=k, init=Cd, max_iter=it, tol=0.0).fit(Xd)
            b = SKKMeans(n_clusters=k, init=Cd, n_init=1, max_iter=it, tol=0.0, algorithm="lloyd").fit(Xd)
            scale = float(np.abs(b.cluster_centers_).max())
            checks[name].append({
                "max_iter": it, "n_iter": (a.n_iter_, int(b.n_iter_)),
                "center_diff": float(np.abs(a.cluster_centers_ - b.cluster_centers_).max()) / scale,
                "labels_equal": float(np.mean(a.labels_ == b.labels_)),
                "inertia_ratio": a.inertia_ / float(b.inertia_),
            })
        del Xd
    return {"n": n, "d": d, "k": k, "times": times, "checks": checks,
            "n_iter": (fitted["ours"].n_iter_, int(fitted["lloyd"].n_iter_),  # type: ignore[attr-defined]
                       int(fitted["elkan"].n_iter_))}  # type: ignore[attr-defined]


def case_single_pass(X: np.ndarray, k: int, stream_model) -> dict:
    """(c) objective of one streaming pass vs batch k-means on the same data."""
    from streamkm.cluster import KMeans

    t0 = time.perf_counter()
    # n_init=3 like StreamingKMeans' initialisation: a fair batch baseline
    km = KMeans(n_clusters=k, n_init=3, seed=0).fit(X)
    batch_s = time.perf_counter() - t0
    return {
        "stream_obj": mean_sq_dist(X, stream_model.cluster_centers_),
        "batch_obj": mean_sq_dist(X, km.cluster_centers_),
        "batch_s": batch_s,
        "batch_iter": km.n_iter_,
    }


def case_river(X: np.ndarray, k: int, batch: int, n_river: int) -> dict:
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

    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    X = blobs(n, d, k, seed=7)
    model: object
    if which == "ours":
        import scipy.sparse  # noqa: F401 - imported once per process (~10 MiB), not fit's working memory

        from streamkm.cluster import KMeans

        model = KMeans(n_clusters=k, seed=0, max_iter=max_iter)
    else:
        from sklearn.cluster import KMeans as SKKMeans

        model = SKKMeans(n_clusters=k, random_state=0, n_init=1, max_iter=max_iter,
                         algorithm="lloyd")
    gc.collect()
    rss0 = _status_bytes("VmRSS")
    hwm_reset = _reset_peak_rss()
    maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    t0 = time.perf_counter()
    model.fit(X)  # type: ignore[attr-defined]
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


def case_memory(n: int, d: int, k: int, max_iter: int) -> dict:
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
def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    p.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    p.add_argument("--repeats", type=int, default=None,
                   help="repeats of (a)/(f) (default 11; (b) uses about half)")
    p.add_argument("--memory-child", nargs=5, metavar=("WHICH", "N", "D", "K", "ITERS"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        which, n, d, k, it = args.memory_child
        memory_child(which, int(n), int(d), int(k), int(it))
        return

    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # BLAS and OpenMP (scikit-learn's Cython loops): one thread each
    if args.quick:
        reps, n_batches, lloyd_scale, lloyd_iter = 3, 10, 10, 20
        mem_n, mem_k, mem_iter, n_river = 50_000, 32, 3, 500
    else:
        reps, n_batches, lloyd_scale, lloyd_iter = 11, 100, 1, 20
        mem_n, mem_k, mem_iter, n_river = 1_000_000, 256, 5, 5_000
    if args.repeats is not None:
        reps = args.repeats
    lloyd_reps = max(3, reps // 2 + 1)
    load_start = load_average()
    blas = blas_description()
    print(f"BLAS: {blas}\nload average at start: {load_start}", flush=True)

    stream = []
    for d, k, b, params in [(*shape, None) for shape in STREAM_SHAPES] + list(STREAM_EXTRA):
        res = case_streaming(d, k, b, n_batches, reps, params)
        t = res["times"]
        print(f"(a/f) d={d} k={k} batch={b}: " + ", ".join(
            f"{name} {statistics.median(v) * 1e6:.1f} us" for name, v in t.items()), flush=True)
        stream.append(res)
    lloyd = []
    for n, d, k in LLOYD_SHAPES:
        res = case_lloyd(n // lloyd_scale, d, k, lloyd_iter, lloyd_reps)
        print(f"(b) n={res['n']} d={d} k={k}: " + ", ".join(
            f"{name} {statistics.median(v) * 1e3:.2f} ms/it" for name, v in res["times"].items())
            + f"; checks {res['checks']}", flush=True)
        lloyd.append(res)
    main_stream = stream[0]
    c = case_single_pass(main_stream["X"], main_stream["k"], main_stream["last_model"])
    print("(c)", c, flush=True)
    e = case_river(main_stream["X"], main_stream["k"], main_stream["batch"], n_river)
    print("(e)", e, flush=True)
    m = case_memory(mem_n, 64, mem_k, mem_iter)
    print("(d)", m, flush=True)
    load_end = load_average()

    # ---- (a) and (f)
    rows_a = []
    for res in stream:
        t, obj = res["times"], res["objectives"]
        speed = statistics.median(t["sklearn"]) / statistics.median(t["ours"])
        pr = paired(t["sklearn"], t["ours"])
        over = statistics.median(t["ours"]) / statistics.median(t["floor"])
        pf = paired(t["ours"], t["floor"])
        dk = res["d"] * res["k"]
        o = statistics.median(obj["ours"]) / statistics.median(obj["sklearn"])
        extra = "".join(f", {key}={val}" for key, val in res["params"].items())
        rows_a.append([
            f"d={res['d']}, k={res['k']}, batch {res['batch']}{extra}" + (" (for the record)" if extra else ""),
            spread(t["ours"], 1e6), spread(t["sklearn"], 1e6),
            f"**{speed:.2f}x** ({min(pr):.2f}–{max(pr):.2f})", _yes(speed >= 2.0),
            spread(t["floor"], 1e6),
            f"**{over:.2f}x** ({min(pf):.2f}–{max(pf):.2f})",
            _yes(over <= 2.0) if dk >= 4096 else "- (d·k < 4096)",
            f"{o:.4f}", f"{res['dying']:.0f}",
        ])
    table_a = markdown_table(
        ["shape", "streamkm µs/batch", "MiniBatchKMeans µs/batch", "speed-up (paired range)",
         ">= 2x", "X @ C.T µs/batch", "streamkm / floor (paired range)", "<= 2x floor",
         "objective ours / sklearn", "dying clusters re-placed"], rows_a)

    # ---- (b)
    rows_b = []
    for res in lloyd:
        t = res["times"]
        ratio = statistics.median(t["ours"]) / statistics.median(t["lloyd"])
        pr = paired(t["ours"], t["lloyd"])
        c32, c64 = res["checks"]["float32"], res["checks"]["float64"]
        same64 = all(ch["n_iter"][0] == ch["n_iter"][1] and ch["labels_equal"] == 1.0
                     and ch["center_diff"] <= 1e-9 for ch in c64)
        inert32 = max(abs(ch["inertia_ratio"] - 1.0) for ch in c32)
        rows_b.append([
            f"n={res['n']:,}, d={res['d']}, k={res['k']}",
            spread(t["ours"], 1e3, "{:.2f}"), spread(t["lloyd"], 1e3, "{:.2f}"),
            f"**{ratio:.2f}x** ({min(pr):.2f}–{max(pr):.2f})", _yes(ratio <= 1.0),
            spread(t["elkan"], 1e3, "{:.2f}"),
            " / ".join(str(i) for i in res["n_iter"]),
            f"{max(ch['center_diff'] for ch in c64):.1e}, labels {min(ch['labels_equal'] for ch in c64):.6f}",
            f"{max(ch['center_diff'] for ch in c32):.1e}, labels {min(ch['labels_equal'] for ch in c32):.5f}, "
            f"inertia {inert32:.1e}",
            _yes(same64 and inert32 <= 1e-3),
        ])
    table_b = markdown_table(
        ["shape", "streamkm ms/iter", "sklearn lloyd ms/iter", "ratio (paired range)", "<= 1.0x",
         "sklearn elkan ms/iter", "iterations ours / lloyd / elkan",
         "float64: max rel. center diff, labels equal", "float32: same, and max |inertia ratio - 1|",
         "same iterates"], rows_b)

    # ---- (c), (d), (e)
    mo, ms = m["ours"], m["sklearn"]
    rd_traced = (mo["input_bytes"] + mo["traced_peak"]) / mo["input_bytes"]
    rd_rss = (mo["input_bytes"] + mo["rss_growth"]) / mo["input_bytes"]
    rs_rss = (ms["input_bytes"] + ms["rss_growth"]) / ms["input_bytes"]
    rc = c["stream_obj"] / c["batch_obj"]
    re_ = e["ours_pps"] / e["river_pps"]
    mib = 2**20
    ms0 = stream[0]
    rows_o = [
        [f"(c) one streaming pass (d={ms0['d']}, k={ms0['k']}, {len(ms0['X']):,} points) vs batch "
         "KMeans(n_init=3) objective",
         f"{c['stream_obj']:.4f} (stream)", f"{c['batch_obj']:.4f} (batch, {c['batch_iter']} it.)",
         f"{rc:.4f}", "<= 1.05x", _yes(rc <= 1.05)],
        [f"(d) KMeans.fit peak memory, n={mem_n:,} d=64 k={mem_k} "
         f"(input {mo['input_bytes'] / mib:.0f} MiB)",
         f"+{mo['traced_peak'] / mib:.0f} MiB traced, +{mo['rss_growth'] / mib:.0f} MiB RSS",
         f"+{ms['rss_growth'] / mib:.0f} MiB RSS (sklearn KMeans)",
         f"{rd_traced:.2f}x / {rd_rss:.2f}x input (sklearn {rs_rss:.2f}x)", "<= 1.5x input",
         _yes(max(rd_traced, rd_rss) <= 1.5)],
        [f"(e) points/s vs river KMeans.learn_one (river on first {n_river:,} points)",
         f"{e['ours_pps']:,.0f}", f"{e['river_pps']:,.0f} (river)", f"{re_:.0f}x",
         "for the record", "-"],
    ]
    table_o = markdown_table(["case", "streamkm", "reference", "ratio", "target", "met"], rows_o)

    cmd = "python benchmarks/bench_cluster.py" + (" --quick" if args.quick else "") + (
        f" --repeats {args.repeats}" if args.repeats is not None else "")
    import river
    import sklearn

    body = "\n".join([
        "## Clustering (`benchmarks/bench_cluster.py`)",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {machine_description()}; scikit-learn {sklearn.__version__}, "
        f"river {river.__version__}  ",
        f"BLAS: {blas}; every library limited to one thread (`threadpool_limits(1)`)  ",
        f"Load average (1 / 5 / 15 min) at the start: {load_start}; at the end: {load_end}",
        "",
        "The machine is shared, so absolute times are noisy. The candidates of each case "
        "alternate in one process (A B C, then C B A, ...); tables give medians with the "
        "range over repeats in parentheses, and each ratio is the ratio of the medians "
        "with the range of the per-repeat (paired) ratios.",
        "",
        f"**(a) `partial_fit` vs `MiniBatchKMeans.partial_fit`, and (f) vs the assignment "
        f"GEMM floor.** Float32 Gaussian blobs (k true clusters, center scale 2, unit noise); "
        f"each repeat makes a fresh model of each library (`StreamingKMeans(n_clusters=k, "
        f"seed=r)` with default settings, `MiniBatchKMeans(n_clusters=k, batch_size=batch, "
        f"n_init=1, random_state=r)`), initializes it with a first batch (not timed) and "
        f"times {ms0['n_batches']} more batches; the floor is `X @ C.T` alone for the same "
        f"batches and the model's final centers. {reps} repeats. Targets: >= 2x "
        f"MiniBatchKMeans on every shape; <= 2x the floor where d·k >= 4096. The objective "
        f"is the mean squared distance of the pass's points to the final centers "
        f"(float64).",
        "",
        table_a,
        "",
        "Where a batch's time goes beyond the GEMM (profiled; see docs/kmeans.md, section 5): "
        "the argmin over the distance block (NumPy's row-wise argmin costs 60-70 ns per row, so "
        "for k <= 64 the block is transposed and the minimum taken column-wise; the transposed "
        "GEMM itself is slower than `X @ C.T`), adding ‖μ‖² to the block, the squared row norms "
        "(they double as the validation), the one-hot product for the sums, the small k × d "
        "float64 updates, and the reservoir: in these passes of 100 batches right after "
        "initialization it accepts hundreds of rows per batch (capacity / points seen) and "
        "copies each into its 10,000-row sample. The last column counts the dying clusters "
        "re-placed during the pass. With k = 256 initialized from 1,024 points (4 per cluster) "
        "in 128-D, a re-placed center sits on a data point that attracts no points in the next "
        "batch and is re-placed again, about every other batch. Each re-placement D²-samples "
        "the 10,000-row reservoir: computing every D² weight is a GEMM of 10,000 rows against "
        "the k centers (about 7 ms here, ten batches' worth of GEMM), which is what made this "
        "shape slower than MiniBatchKMeans before; the draws are now made by rejection from "
        "cheap upper bounds of D² (the reservoir keeps its rows' squared norms), exactly D²-"
        "distributed, at about 0.3 ms per re-placement (docs/kmeans.md, section 5). The row "
        "with `dying_threshold=0` shows the update without re-placements.",
        "",
        f"**(b) `KMeans` (Lloyd) time per iteration vs `sklearn.cluster.KMeans(algorithm="
        f"\"lloyd\")`**, both from the same random rows of X, tol=0, max_iter={lloyd_iter}: "
        f"fit time / iterations run, {lloyd_reps} repeats; sklearn's `elkan` for the record "
        f"(streamkm prunes with Hamerly bounds, elkan with Elkan's). Same iterates: both "
        f"are fitted for 1, 3 and {lloyd_iter} iterations and compared (largest center "
        f"difference relative to the largest |center|, fraction of equal labels, inertia "
        f"ratio), on the timed float32 data and on a float64 copy. In float32 the overlapping "
        f"blobs have points at near-ties that the two libraries round differently (sklearn "
        f"sums in float32, streamkm in float64), and a few such flips grow over the "
        f"iterations; in float64 the iterates agree to rounding. 'Same iterates' means: "
        f"float64 labels all equal, centers within 1e-9 relative, and float32 inertia "
        f"within 0.1%. `tests/cluster/test_lloyd_iterates.py` checks the same on smaller data. "
        f"Target: <= 1.0x sklearn lloyd at both shapes.",
        "",
        table_b,
        "",
        f"**(c), (d), (e).** (c) is the one-pass model of the first shape of (a) against "
        f"`KMeans(k, n_init=3, seed=0)` on the same points. (d) runs `KMeans(k, seed=0, "
        f"max_iter={mem_iter}).fit` (k-means++ included) in a fresh subprocess; 'traced' is "
        f"the tracemalloc peak of NumPy allocations during fit, 'RSS' the peak resident set "
        f"during fit (VmHWM, reset just before fit via /proc/self/clear_refs) minus the "
        f"resident set before it; the ratio counts input + extra; `scipy.sparse` (which the "
        f"sums use) is imported before the baseline, as in any process that has fitted once. "
        f"(e) converts river's input "
        f"to dicts outside the timed loop.",
        "",
        table_o,
    ])
    print()
    print(table_a)
    print()
    print(table_b)
    print()
    print(table_o)
    print(f"\nload average at the end: {load_end}")
    if not args.no_write:
        update_section("bench_cluster", body)
        print("\nupdated docs/benchmarks.md section bench_cluster")


if __name__ == "__main__":
    main()

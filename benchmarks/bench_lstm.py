"""Benchmark the NumPy LSTMEncoder against torch.nn.LSTM (CPU) in the same run.

Measures, with the same number of threads for NumPy's BLAS and torch:

- forward time for input (32, 100, 64), H = 128, unidirectional and
  bidirectional (and with variable lengths vs. torch's packed sequences);
- embeddings/s at batch 256, T = 50 (``LSTMEncoder.embed`` vs. torch forward + h_n);
- training windows/s (next-event objective, batch 32; torch with autograd + Adam
  on the same model): one epoch of ``train_encoder`` and one torch epoch
  alternate (the torch epoch runs in ``train_encoder``'s per-epoch callback).

Calls are interleaved (ours, torch, ours, torch, ...) so both see the same
machine load; each ratio is the median of the per-repeat ratios (ours / torch
time), with their range. Each configuration (thread count, OpenBLAS kernel set)
runs in its own child process. Writes section ``bench_lstm`` of
docs/benchmarks.md unless ``--no-write``.

    python benchmarks/bench_lstm.py [--threads N ...] [--openblas-coretype env SkylakeX]
                                    [--repeats R] [--no-write] [--note TEXT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._report import machine_description, markdown_table, update_section  # noqa: E402


def blas_threads() -> tuple[int, str]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        n = int(os.environ.get("OPENBLAS_NUM_THREADS", os.cpu_count() or 1))
        return n, "OPENBLAS_NUM_THREADS/cpu_count (threadpoolctl not installed)"
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    if not blas:
        return os.cpu_count() or 1, "cpu_count"
    arch = blas[0].get("architecture")
    return int(blas[0]["num_threads"]), (f"{blas[0]['internal_api']} {blas[0].get('version', '')}".strip()
                                         + (f", {arch} kernels" if arch else ""))


def interleaved(fns: dict, repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per call of each function over ``repeats`` rounds, calls interleaved round-robin."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def paired(ours: list[float], ref: list[float]) -> tuple[float, float, float]:
    """Median and range of the per-repeat time ratios ours / ref."""
    r = [a / b for a, b in zip(ours, ref, strict=True)]
    return statistics.median(r), min(r), max(r)


#: targets from issue 12, as time ratios ours / torch (oneDNN): forward, embeddings
#: (>= 0.9x torch's throughput), training step
TARGETS = {"forward": 1.2, "embed": 1 / 0.9, "train": 1.0}


def run(threads: int | None, repeats: int
        ) -> tuple[list[list[object]], dict[str, float], dict[str, str], str, list[list[object]]]:
    """Measure every case with ``threads`` BLAS/torch threads; rows, ratios, thread description."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence

    from streamkm.sequence import LSTMEncoder
    from streamkm.sequence.train import train_encoder

    warnings.filterwarnings("ignore", message=".*TF32.*")  # torch's note about Intel GPUs
    if threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    n_threads, blas_name = blas_threads()
    kernels = blas_name.rsplit(", ", 1)[-1].replace(" kernels", "") if "kernels" in blas_name else "?"
    torch.set_num_threads(n_threads)
    desc = (f"NumPy BLAS ({blas_name}) = {n_threads} threads; torch {torch.__version__}: "
            f"torch.set_num_threads({n_threads})")
    print(desc, file=sys.stderr)

    rng = np.random.default_rng(0)
    rows: list[list[object]] = []
    ratios: dict[str, float] = {}
    kinds: dict[str, str] = {}

    def aten(fn):
        """Run ``fn`` with oneDNN disabled: torch's native ATen LSTM kernel."""
        def wrapped():
            with torch.backends.mkldnn.flags(enabled=False):
                return fn()
        return wrapped

    def row(label, kind, t_ours, t_ref, t_aten, fmt, note=""):
        med = statistics.median
        ours, ref, ref_aten = med(t_ours), med(t_ref), med(t_aten)
        r, lo, hi = paired(t_ours, t_ref)
        ra = paired(t_ours, t_aten)[0]
        ratios[label] = r
        kinds[label] = kind
        if fmt == "ms":
            cells = [f"{ours * 1e3:.2f} ms", f"{ref * 1e3:.2f} ms", f"{ref_aten * 1e3:.2f} ms"]
        else:  # items per second from seconds per item-batch of size fmt
            cells = [f"{fmt / ours:,.0f}/s", f"{fmt / ref:,.0f}/s", f"{fmt / ref_aten:,.0f}/s"]
        target = TARGETS.get(kind)
        verdict = "-" if target is None else ("yes" if r <= target else "**no**")
        rows.append([n_threads, kernels, label, cells[0], cells[1], f"**{r:.2f}** ({lo:.2f}–{hi:.2f})",
                     "-" if target is None else f"≤ {target:.2f}", verdict, cells[2], f"{ra:.2f}", note])

    # ------------------------------------------------------------ forward
    B, T, F, H = 32, 100, 64, 128
    x = rng.normal(size=(B, T, F)).astype(np.float32)
    xt = torch.from_numpy(x)
    lengths = rng.integers(T // 4, T + 1, size=B)
    lengths[0] = T
    for bi in (False, True):
        torch.manual_seed(0)
        ref = torch.nn.LSTM(F, H, batch_first=True, bidirectional=bi).eval()
        enc = LSTMEncoder.from_torch(ref)
        out, _ = enc(x)
        with torch.no_grad():
            ref_out, _ = ref(xt)
        err = float(np.abs(out - ref_out.numpy()).max())

        def torch_fwd(ref=ref):
            with torch.no_grad():
                ref(xt)

        def torch_packed(ref=ref):
            with torch.no_grad():
                ref(pack_padded_sequence(xt, torch.from_numpy(lengths), batch_first=True,
                                         enforce_sorted=False))

        tm = interleaved({"ours": lambda enc=enc: enc(x), "torch": torch_fwd, "aten": aten(torch_fwd),
                          "ours_len": lambda enc=enc: enc(x, lengths), "torch_len": torch_packed,
                          "aten_len": aten(torch_packed)}, repeats)
        name = "bidirectional" if bi else "unidirectional"
        row(f"forward {name} (32,100,64) H=128", "forward", tm["ours"], tm["torch"], tm["aten"], "ms",
            f"max abs diff {err:.1e}")
        row(f"forward {name}, variable lengths {T // 4}..{T}", "lengths", tm["ours_len"], tm["torch_len"],
            tm["aten_len"], "ms", "torch: packed")

    # ------------------------------------------------------------ embeddings/s
    Be, Te = 256, 50
    xe = rng.normal(size=(Be, Te, F)).astype(np.float32)
    xet = torch.from_numpy(xe)
    for bi in (False, True):
        torch.manual_seed(0)
        ref = torch.nn.LSTM(F, H, batch_first=True, bidirectional=bi).eval()
        enc = LSTMEncoder.from_torch(ref)

        def torch_embed(ref=ref, bi=bi):
            with torch.no_grad():
                _, (h_n, _) = ref(xet)
                return torch.cat(list(h_n[-(2 if bi else 1):]), dim=1)

        tm = interleaved({"ours": lambda enc=enc: enc.embed(xe), "torch": torch_embed,
                          "aten": aten(torch_embed)}, max(5, repeats // 2))
        name = "bidirectional" if bi else "unidirectional"
        row(f"embed {name}, batch 256, T=50 (embeddings/s)", "embed", tm["ours"], tm["torch"], tm["aten"], Be)

    # ------------------------------------------------------------ training windows/s
    Nt, Bt, Tt = 256, 32, 50
    xtr = rng.normal(size=(Nt, Tt, F)).astype(np.float32)
    torch.manual_seed(0)
    model = torch.nn.LSTM(F, H, batch_first=True)
    head = torch.nn.Linear(H, F)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    xtr_t = torch.from_numpy(xtr)

    def torch_epoch():
        perm = torch.randperm(Nt)
        for j in range(0, Nt, Bt):
            xb = xtr_t[perm[j:j + Bt]]
            out, _ = model(xb)
            loss = ((head(out[:, :-1]) - xb[:, 1:]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()

    t_torch: list[float] = []
    t_aten: list[float] = []

    def after_our_epoch(_record):  # ours, torch, ATen, ours, ...: same load for all three
        for fn, acc in ((torch_epoch, t_torch), (aten(torch_epoch), t_aten)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)

    torch_epoch()
    aten(torch_epoch)()
    n_ep = max(3, repeats // 3)
    enc = LSTMEncoder(F, H, seed=0)
    res = train_encoder(enc, xtr, epochs=n_ep + 1, batch_size=Bt, lr=1e-3, val_fraction=0.0, seed=0,
                        callback=after_our_epoch)
    t_ours = [r["seconds"] for r in res.history][1:]   # the first epoch warms the workspace up
    row(f"train next-event, batch {Bt}, T={Tt}, F={F}, H={H} (windows/s)", "train", t_ours, t_torch[1:],
        t_aten[1:], Nt, f"torch: autograd + Adam; {n_ep} epochs of {Nt} windows")
    breakdown = time_breakdown(repeats)
    return rows, ratios, kinds, desc, breakdown


def time_breakdown(repeats: int) -> list[list[object]]:
    """Where the time goes: the kernel's phases timed separately (medians, ms per call).

    Forward (32, 100, 64), H=128: the whole ``__call__``, the layer kernel's
    time loop, the per-step stacked GEMMs alone, and the difference (the
    elementwise calls and the loop). Training step (batch 32, T=50): forward
    with caches, objective, backward (and within it the per-step GEMMs and the
    weight-gradient GEMM), clipping + Adam.
    """
    from streamkm.sequence import LSTMEncoder
    from streamkm.sequence.lstm import kernels as K
    from streamkm.sequence.lstm.backward import encoder_backward
    from streamkm.sequence.train import _Adam, _clip_, _objective, init_head

    rng = np.random.default_rng(1)
    med = statistics.median
    out_rows: list[list[object]] = []

    def ms(fn, n=repeats):
        fn()
        t = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        return med(t) * 1e3

    B, T, F, H = 32, 100, 64, 128
    x = rng.normal(size=(B, T, F)).astype(np.float32)
    for bi in (False, True):
        D = 2 if bi else 1
        enc = LSTMEncoder(F, H, bidirectional=bi, seed=0)
        prep = K.prepare(enc.params_, 1, D, H, np.float32)
        zeros = np.zeros((D, H, B), np.float32)
        z = K._new_z(T, D, H, F, B, np.float32, zeros, None, "")
        np.copyto(z[:T, 0, H:H + F], x.transpose(1, 2, 0))
        K._reverse_input(z, H, H + F)
        g = np.empty((D, 4, H, B), np.float32)
        w, zin = prep[0].w_z, z[:, :, None]
        total = ms(lambda enc=enc: enc(x))
        layer = ms(lambda z=z, prep=prep, zeros=zeros: K.layer_forward(z, prep[0], H, zeros, zeros, None))
        gemm = ms(lambda w=w, zin=zin, g=g: [np.matmul(w, zin[s], out=g) for s in range(T)])
        name = "bidirectional" if bi else "unidirectional"
        out_rows.append([f"forward {name} (32,100,64)", f"{total:.2f}", f"time loop {layer:.2f} = per-step GEMMs "
                         f"{gemm:.2f} ({gemm / T * 1e3:.1f} µs/step) + elementwise and loop {layer - gemm:.2f} "
                         f"({(layer - gemm) / T * 1e3:.1f} µs/step); outside the loop (validation, weights, "
                         f"input/output transposes) {total - layer:.2f}"])

    Bt, Tt = 32, 50
    enc = LSTMEncoder(F, H, seed=0)
    xb = np.ascontiguousarray(rng.normal(size=(F, Tt, Bt)).astype(np.float32))
    head = init_head(enc, "next_event", Tt, 0)
    ws = K.Workspace()
    prep = K.prepare(enc.params_, 1, 1, H, np.float32, for_training=True)
    state = {}

    def fwd():
        state["f"] = K.forward_fm(xb, prep, H, None, None, None, keep_cache=True, ws=ws)

    def obj():
        out, h_n, _, _ = state["f"]
        state["o"] = _objective("next_event", head, xb, out, h_n, None, None, 1, 1, H, True)

    def bwd():
        _, _, _, caches = state["f"]
        state["g"] = encoder_backward(prep, caches, H, None, state["o"][3], None, None, ws)

    params = dict(enc.params_)
    params.update({"head." + k: v for k, v in head.items()})
    opt = _Adam(params, 1e-3)

    def adam():
        grads = dict(state["g"])
        grads.update({"head." + k: v for k, v in state["o"][2].items()})
        _clip_(grads, 1.0)
        opt.step(grads)

    t_prep = ms(lambda: K.prepare(enc.params_, 1, 1, H, np.float32, for_training=True))
    t_f, t_o, t_b, t_a = ms(fwd), ms(obj), ms(bwd), ms(adam)
    dz = rng.normal(size=(1, 4, H, Bt)).astype(np.float32)
    dh4 = np.empty((1, 4, H, Bt), np.float32)
    t_bg = ms(lambda: [np.matmul(prep[0].w_hh_t, dz, out=dh4) for _ in range(Tt)])
    dz2 = rng.normal(size=(4 * H, Tt * Bt)).astype(np.float32)
    z2 = rng.normal(size=(H + F + 1, Tt * Bt)).astype(np.float32)
    t_dw = ms(lambda: dz2 @ z2.T)
    out_rows.append([f"training step, next-event, batch {Bt}, T={Tt}",
                     f"{t_prep + t_f + t_o + t_b + t_a:.2f}",
                     f"weights {t_prep:.2f}; forward with caches {t_f:.2f}; objective {t_o:.2f}; backward {t_b:.2f} "
                     f"(per-step W_hh^T dz GEMMs {t_bg:.2f}, weight-gradient GEMM (4H, T*B) @ (T*B, H+F+1) "
                     f"{t_dw:.2f}, the rest elementwise); clip + Adam {t_a:.2f}"])
    return out_rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="thread counts to run, each used for both NumPy's BLAS and torch "
                         "(default: NumPy's current BLAS threads)")
    ap.add_argument("--openblas-coretype", nargs="+", default=["env"], metavar="CORE",
                    help="OpenBLAS kernel sets to run NumPy with, each in a child process with "
                         "OPENBLAS_CORETYPE=CORE ('env': the environment as it is; default)")
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    ap.add_argument("--note", default="", help="sentence added to the docs section (e.g. about the machine)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:  # one configuration, results as JSON on stdout
        threads = args.threads[0] if args.threads else None
        rows, ratios, kinds, desc, breakdown = run(threads, args.repeats)
        print(json.dumps({"rows": rows, "ratios": ratios, "kinds": kinds, "desc": desc, "breakdown": breakdown}))
        return 0

    all_rows, verdicts, descs, bd_rows = [], [], [], []
    load_start = os.getloadavg()
    print(f"load average at start: {load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f}",
          file=sys.stderr)
    for core in args.openblas_coretype:
        env = dict(os.environ)
        if core != "env":
            env["OPENBLAS_CORETYPE"] = core
        for threads in args.threads or [None]:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--repeats", str(args.repeats)]
            if threads is not None:
                cmd += ["--threads", str(threads)]
            proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            rows, ratios, kinds = result["rows"], result["ratios"], result["kinds"]
            all_rows += rows
            bd_rows += [[rows[0][0], rows[0][1], *r] for r in result["breakdown"]]
            core_note = f" (OPENBLAS_CORETYPE={core})" if core != "env" else ""
            descs.append(result["desc"] + core_note)
            checked = [k for k in ratios if kinds[k] in TARGETS]
            verdicts.append(f"{rows[0][0]} thread(s), {rows[0][1]} kernels{core_note}: "
                            + ", ".join(f"{k.split(' (')[0]} {ratios[k]:.2f}x "
                                        f"({'met' if ratios[k] <= TARGETS[kinds[k]] else 'NOT met'})"
                                        for k in checked))
    load_end = os.getloadavg()
    load = (f"{load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f} at the start, "
            f"{load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f} at the end")
    header = ["threads", "OpenBLAS kernels", "case", "streamkm (NumPy)", "torch (default, oneDNN)",
              "ratio ours/torch (time), median (range)", "target", "met", "torch ATen (oneDNN off)",
              "ratio ours/ATen", "note"]
    table = markdown_table(header, all_rows)
    print(table)
    bd_table = markdown_table(["threads", "OpenBLAS kernels", "case", "ms per call (median)",
                               "where the time goes (ms)"], bd_rows)
    print(bd_table)
    verdict = "; ".join(verdicts)
    print(f"\ntime ratios vs torch (targets: forward <= 1.2x, embeddings >= 0.9x torch's throughput, "
          f"training <= 1.0x): {verdict}\nload average (1/5/15 min): {load}", file=sys.stderr)

    if not args.no_write:
        cmd = "python benchmarks/bench_lstm.py" \
            + (" --threads " + " ".join(map(str, args.threads)) if args.threads else "") \
            + (" --openblas-coretype " + " ".join(args.openblas_coretype)
               if args.openblas_coretype != ["env"] else "") \
            + (f" --repeats {args.repeats}" if args.repeats != 21 else "")
        body = "\n".join([
            "## LSTM encoder (`benchmarks/bench_lstm.py`)",
            "",
            f"Command: `{cmd}`  ",
            f"Machine: {machine_description()}  ",
            "Configurations: " + " | ".join(descs) + ".  ",
            f"Load average (1 / 5 / 15 min): {load}.",
            "",
            f"{args.repeats} interleaved repeats (embeddings: {max(5, args.repeats // 2)}; training: "
            f"{max(3, args.repeats // 3)} epochs of 256 windows, each followed by one torch epoch and one "
            "ATen epoch). Ratios are time ratios (ours / torch), the median of the per-repeat ratios with "
            "their range: below 1 means streamkm is faster. \"torch (default)\" is `torch.nn.LSTM` as "
            "shipped, which runs oneDNN's fused LSTM kernel on CPU; \"ATen\" is the same call with "
            "`torch.backends.mkldnn.flags(enabled=False)` (torch's own per-step GEMM kernel). Targets "
            "(issue 12): forward ≤ 1.2× torch's time, embeddings ≥ 0.9× torch's throughput (time "
            "ratio ≤ 1.11), training step ≤ 1.0×.",
            "",
            table,
            "",
            f"Verdicts: {verdict}.",
            "",
            "Where the time goes (same command; each piece timed on its own, medians over "
            f"{args.repeats} calls, ms):",
            "",
            bd_table,
        ] + (["", args.note] if args.note else []))
        update_section("bench_lstm", body)
        print("updated section bench_lstm of docs/benchmarks.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

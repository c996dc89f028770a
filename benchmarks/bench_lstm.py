"""Benchmark the NumPy LSTMEncoder against torch.nn.LSTM (CPU) in the same run.

Measures, with the same number of threads for NumPy's BLAS and torch:

- forward time for input (32, 100, 64), H = 128, unidirectional and
  bidirectional (and with variable lengths vs. torch's packed sequences);
- embeddings/s at batch 256, T = 50 (``LSTMEncoder.embed`` vs. torch forward + h_n);
- training windows/s (next-event objective, batch 32; torch with autograd + Adam
  on the same model for reference).

Timings are medians over interleaved repeats (ours, torch, ours, torch, ...) so
both see the same machine load. Each configuration (thread count, OpenBLAS
kernel set) runs in its own child process. Writes section ``bench_lstm`` of
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


def interleaved(fns: dict, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved round-robin."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def run(threads: int | None, repeats: int) -> tuple[list[list[object]], dict[str, float], str]:
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

    def aten(fn):
        """Run ``fn`` with oneDNN disabled: torch's native ATen LSTM kernel."""
        def wrapped():
            with torch.backends.mkldnn.flags(enabled=False):
                return fn()
        return wrapped

    def row(label, ours, ref, ref_aten, fmt, note=""):
        ratios[label] = ours / ref
        if fmt == "ms":
            cells = [f"{ours * 1e3:.2f} ms", f"{ref * 1e3:.2f} ms", f"{ref_aten * 1e3:.2f} ms"]
        else:  # items per second from seconds per item-batch of size fmt
            cells = [f"{fmt / ours:,.0f}/s", f"{fmt / ref:,.0f}/s", f"{fmt / ref_aten:,.0f}/s"]
        rows.append([n_threads, kernels, label, cells[0], cells[1], f"**{ours / ref:.2f}**", cells[2],
                     f"{ours / ref_aten:.2f}", note])

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

        med = interleaved({"ours": lambda enc=enc: enc(x), "torch": torch_fwd, "aten": aten(torch_fwd),
                           "ours_len": lambda enc=enc: enc(x, lengths), "torch_len": torch_packed,
                           "aten_len": aten(torch_packed)}, repeats)
        name = "bidirectional" if bi else "unidirectional"
        row(f"forward {name} (32,100,64) H=128", med["ours"], med["torch"], med["aten"], "ms",
            f"max abs diff {err:.1e}")
        row(f"forward {name}, variable lengths {T // 4}..{T}", med["ours_len"], med["torch_len"],
            med["aten_len"], "ms", "torch: packed")

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

        med = interleaved({"ours": lambda enc=enc: enc.embed(xe), "torch": torch_embed,
                           "aten": aten(torch_embed)}, max(5, repeats // 2))
        name = "bidirectional" if bi else "unidirectional"
        row(f"embed {name}, batch 256, T=50 (embeddings/s)", med["ours"], med["torch"], med["aten"], Be)

    # ------------------------------------------------------------ training windows/s
    Nt, Bt, Tt = 256, 32, 50
    xtr = rng.normal(size=(Nt, Tt, F)).astype(np.float32)
    enc = LSTMEncoder(F, H, seed=0)
    res = train_encoder(enc, xtr, epochs=3, batch_size=Bt, lr=1e-3, val_fraction=0.0, seed=0)
    ours_epoch = statistics.median(r["seconds"] for r in res.history)

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

    med = interleaved({"torch": torch_epoch, "aten": aten(torch_epoch)}, 3, warmup=1)
    row(f"train next-event, batch {Bt}, T={Tt}, F={F}, H={H} (windows/s)", ours_epoch, med["torch"],
        med["aten"], Nt, "torch: autograd + Adam")
    return rows, ratios, desc


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
        rows, ratios, desc = run(threads, args.repeats)
        print(json.dumps({"rows": rows, "ratios": ratios, "desc": desc}))
        return 0

    all_rows, verdicts, descs = [], [], []
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
            rows, ratios = result["rows"], result["ratios"]
            all_rows += rows
            core_note = f" (OPENBLAS_CORETYPE={core})" if core != "env" else ""
            descs.append(result["desc"] + core_note)
            fwd = [k for k in ratios if k.startswith("forward") and "lengths" not in k]
            verdicts.append(f"{rows[0][0]} thread(s), {rows[0][1]} kernels: "
                            + ", ".join(f"{k.split(' (')[0].replace('forward ', '')} {ratios[k]:.2f}x "
                                        f"({'met' if ratios[k] <= 1.5 else 'NOT met'})" for k in fwd))
    header = ["threads", "OpenBLAS kernels", "case", "streamkm (NumPy)", "torch (default, oneDNN)",
              "ratio ours/torch (time)", "torch ATen (oneDNN off)", "ratio ours/ATen", "note"]
    table = markdown_table(header, all_rows)
    print(table)
    verdict = "; ".join(verdicts)
    print(f"\nforward time ratios vs torch (target <= 1.5x): {verdict}", file=sys.stderr)

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
            f"Medians of {args.repeats} interleaved repeats (embeddings: {max(5, args.repeats // 2)}; "
            "training: epochs of 256 windows, median of 3). Ratios are time ratios (ours / torch): "
            "below 1 means streamkm is faster. \"torch (default)\" is `torch.nn.LSTM` as shipped, which "
            "runs oneDNN's fused LSTM kernel on CPU; \"ATen\" is the same call with "
            "`torch.backends.mkldnn.flags(enabled=False)` (torch's own per-step GEMM kernel).",
            "",
            table,
            "",
            f"Forward target ≤ 1.5× torch's time: {verdict}.",
        ] + (["", args.note] if args.note else []))
        update_section("bench_lstm", body)
        print("updated section bench_lstm of docs/benchmarks.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``streamkm report RUN_DIR``: one self-contained HTML page (and its PNGs) of a replayed run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from streamkm.cli._common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, eprint

__all__ = ["register", "parse_k_range"]

DESCRIPTION = """\
Write the report of a RUN_DIR (what 'streamkm replay SOURCE --out RUN_DIR'
writes) as one self-contained HTML page, OUT/index.html, and the PNGs behind
it (default OUT: RUN_DIR/report). The page inlines every image and fetches
nothing from the network. It shows:

  - the objective and its EWMA over record time, with drift and reseed marks;
  - the weight of each stable cluster id over time, stacked;
  - the centre shift over time;
  - a 2-D PCA of the reservoir points coloured by the stable id the final
    model assigns, with the final centres;
  - with --select-k KMIN:KMAX, select_k's silhouette, elbow and BIC curves on
    the reservoir;
  - a summary: k, records, valid rows, dead letters by reason, chunks, final
    version, and the final model's objective on the reservoir against a batch
    k-means fitted on it (same k, --seed).

run.json and chunks.jsonl are required; without the model files or
reservoir.npy the page leaves out what needs them and says so.

Needs matplotlib: pip install 'streamkm[report]'. See docs/report.md."""

EPILOG = """\
exit codes:
  0  the report was written
  1  the report could not be written (OUT not writable)
  2  usage error, matplotlib missing, or RUN_DIR unreadable or invalid (the
     message names the file and line); nothing was written"""


def parse_k_range(text: str) -> tuple[int, int]:
    """``"KMIN:KMAX"`` as two ints with 1 <= KMIN <= KMAX (argparse type; ArgumentTypeError otherwise)."""
    lo, sep, hi = text.partition(":")
    try:
        k_min, k_max = int(lo), int(hi)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KMIN:KMAX (e.g. 2:12), got {text!r}") from None
    if not sep or not 1 <= k_min <= k_max:
        raise argparse.ArgumentTypeError(f"expected KMIN:KMAX with 1 <= KMIN <= KMAX, got {text!r}")
    return k_min, k_max


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``report`` to a ``streamkm`` subparsers object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "report", help="write the HTML report of a replay's RUN_DIR", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="the directory 'streamkm replay --out' wrote")
    p.add_argument("--out", metavar="DIR", help="where to write index.html and the PNGs (default RUN_DIR/report)")
    p.add_argument("--select-k", metavar="KMIN:KMAX", type=parse_k_range,
                   help="also run select_k on the reservoir for k in KMIN..KMAX and plot its scores")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the batch k-means and of select_k (default 0)")
    p.set_defaults(func=_cmd)
    return p


def _cmd(args: argparse.Namespace) -> int:
    from streamkm.report.render import MissingExtra, require_matplotlib

    try:
        require_matplotlib()
    except MissingExtra as exc:
        eprint(f"streamkm report: {exc}")
        return EXIT_USAGE
    from streamkm.report import RunDirError, load_run_dir, write_report

    try:
        rd = load_run_dir(args.run_dir)
    except RunDirError as exc:
        eprint(f"streamkm report: {exc}")
        return EXIT_USAGE
    out = Path(args.out) if args.out else Path(args.run_dir) / "report"
    try:
        report = write_report(rd, out, select_k=args.select_k, seed=args.seed)
    except ValueError as exc:  # --select-k beyond what the reservoir can fit
        eprint(f"streamkm report: {exc}")
        return EXIT_USAGE
    except OSError as exc:
        eprint(f"streamkm report: cannot write {out}: {exc.strerror or exc}")
        return EXIT_FAILURE
    for note in report.data.notes:
        eprint(f"streamkm report: note: {note}")
    print(f"wrote {report.index} ({len(report.pngs)} figures: {', '.join(report.pngs)})")
    return EXIT_OK

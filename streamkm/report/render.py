"""The report's figures (matplotlib, Agg canvas) and its one self-contained HTML page.

matplotlib is the optional ``report`` extra and is imported only here, on first use
(:func:`require_matplotlib`). Figures are plain :class:`matplotlib.figure.Figure`
objects on an Agg canvas (never pyplot: no display, no global figure registry); every
data artist carries a ``gid`` naming its series, so tests can read the plotted data
back. The page inlines each PNG as a ``data:`` URI, has its CSS inline and fetches
nothing; it also embeds the plotted series as JSON (``<script type="application/json"
id="streamkm-series">``).
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from streamkm.atomic import atomic_write
from streamkm.report.rundir import RunDir
from streamkm.report.series import Projection, Series, chunk_series, pca_2d
from streamkm.report.summary import BatchComparison, compare_to_batch, select_k_curves, summary_rows

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from streamkm.cluster import SelectKResult

__all__ = ["MissingExtra", "require_matplotlib", "ReportData", "build_report_data", "build_figures",
           "render_html", "write_report", "Report", "FIGURES", "MAX_EVENT_ROWS"]

#: Figure names (PNG file stems), in page order, with their headings.
FIGURES = {"objective": "Objective and its EWMA", "weights": "Weight of each cluster id",
           "center_shift": "Centre shift", "pca": "Reservoir, 2-D PCA", "select_k": "select_k score curves"}
#: Events listed on the page at most (all are in chunks.jsonl).
MAX_EVENT_ROWS = 500

INSTALL_HINT = "pip install 'streamkm[report]'"


class MissingExtra(ImportError):
    """matplotlib is not installed (the ``report`` extra)."""


def require_matplotlib() -> None:
    """Import matplotlib (MissingExtra with the install command if it is absent)."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError:
        raise MissingExtra(f"the report needs matplotlib, the 'report' extra: {INSTALL_HINT}") from None


@dataclass
class ReportData:
    """Everything the page shows, computed from a RUN_DIR (no matplotlib needed).

    Attributes
    ----------
    run : RunDir
    series : Series
    projection : Projection or None
        None without at least 2 reservoir points.
    labels : ndarray of shape (m,), int64, or None
        Stable id the final model predicts for each reservoir point (None without a model).
    centers_2d : ndarray of shape (k, 2), float64, or None
        The final model's centres projected on the PCA axes.
    comparison : BatchComparison or None
    select_k : dict of str to SelectKResult
        By method; empty without ``--select-k``.
    summary : list of (str, str)
    notes : list of str
    """

    run: RunDir
    series: Series
    projection: Projection | None
    labels: NDArray[np.int64] | None
    centers_2d: NDArray[np.float64] | None
    comparison: BatchComparison | None
    select_k: dict[str, SelectKResult]
    summary: list[tuple[str, str]]
    notes: list[str] = field(default_factory=list)


def build_report_data(rd: RunDir, *, select_k: tuple[int, int] | None = None, seed: int = 0) -> ReportData:
    """Compute the series, the PCA, the batch comparison and (with *select_k* = (kmin, kmax)) the
    select_k curves. ValueError if *select_k* cannot run on the reservoir."""
    notes = list(rd.notes)
    series = chunk_series(rd.chunks)
    if not rd.chunks:
        notes.append("chunks.jsonl is empty: no chunk was folded")
    elif series.x_kind == "chunk":
        notes.append("some chunks have no record time: the x axes are the chunk index")
    res = rd.reservoir
    projection = labels = centers_2d = None
    comparison = None
    if res is not None and res.shape[0] >= 2:
        projection = pca_2d(res)
        if rd.model is not None:
            labels = rd.model.predict(res)
            centers_2d = projection.project(rd.model.cluster_centers_)
    elif res is not None and res.shape[0] == 1:
        notes.append("the reservoir holds a single point: no PCA")
    if rd.model is not None and res is not None and res.shape[0]:
        k = rd.model.cluster_centers_.shape[0]
        if res.shape[0] >= k:
            comparison = compare_to_batch(rd.model, res, seed=seed)
        else:
            notes.append(f"the reservoir holds {res.shape[0]} points, fewer than k = {k}: no batch comparison")
    curves: dict[str, SelectKResult] = {}
    if select_k is not None:
        if res is None or res.shape[0] == 0:
            notes.append("--select-k: no reservoir points to run select_k on")
        else:
            curves, more = select_k_curves(res, *select_k, seed=seed)
            notes += more
    return ReportData(run=rd, series=series, projection=projection, labels=labels, centers_2d=centers_2d,
                      comparison=comparison, select_k=curves, summary=summary_rows(rd, comparison), notes=notes)


# ---------------------------------------------------------------------------- figures
def _id_color(cid: int) -> Any:
    import matplotlib

    # One colour per stable id, the same in the weights and the PCA figures: ids 0-9 get tab20's
    # dark shades (tab10's colours, easy to tell apart), 10-19 the light ones, then round again.
    c = int(cid) % 20
    return matplotlib.colormaps["tab20"](2 * (c % 10) + c // 10)


def _new_figure(height: float = 3.6) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas, explicitly: no display, no pyplot
    return fig


def _time_axis(ax: Any, s: Series) -> None:
    if s.x_kind == "record_time":
        import matplotlib.dates as mdates

        loc = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(loc)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
        ax.set_xlabel("record time (UTC)")
    else:
        ax.set_xlabel("chunk")
    ax.grid(True, alpha=0.3)


def _marks(ax: Any, s: Series) -> None:
    for name, where, style in (("drift", s.drift, dict(color="tab:red", ls="--")),
                               ("reseed", s.reseed, dict(color="tab:green", ls=":"))):
        for j, pos in enumerate(where.tolist()):
            ax.axvline(s.x[pos], lw=1.2, gid=name, label=name if j == 0 else None, **style)


def _fig_objective(s: Series) -> Figure:
    fig = _new_figure()
    ax = fig.add_subplot()
    ax.plot(s.x, s.objective, lw=1.0, color="tab:blue", alpha=0.7, marker=".", ms=3, gid="objective",
            label="objective (chunk mean squared distance)")
    ax.plot(s.x, s.ewma, lw=2.0, color="tab:orange", gid="ewma", label="EWMA")
    _marks(ax, s)
    ax.set_ylabel("mean squared distance")
    _time_axis(ax, s)
    ax.legend(loc="upper right", fontsize="small")
    return fig


def _fig_weights(s: Series) -> Figure:
    fig = _new_figure()
    ax = fig.add_subplot()
    if s.cluster_ids.shape[0]:
        ids = s.cluster_ids.tolist()
        polys = ax.stackplot(s.x, s.weights.T, colors=[_id_color(c) for c in ids], labels=[f"id {c}" for c in ids])
        for cid, poly in zip(ids, polys, strict=True):
            poly.set_gid(f"weight:{cid}")
        ax.legend(loc="upper left", fontsize="x-small", ncols=min(len(ids), 10))
    else:
        ax.text(0.5, 0.5, "no cluster weights in the log", ha="center", va="center", transform=ax.transAxes)
    _marks(ax, s)
    ax.set_ylabel("weight (decayed count)")
    _time_axis(ax, s)
    return fig


def _fig_center_shift(s: Series) -> Figure:
    fig = _new_figure(3.0)
    ax = fig.add_subplot()
    ax.plot(s.x, s.center_shift, lw=1.0, color="tab:purple", marker=".", ms=3, gid="center_shift",
            label="largest centre move")
    _marks(ax, s)
    ax.set_ylabel("distance")
    _time_axis(ax, s)
    ax.legend(loc="upper right", fontsize="small")
    return fig


def _fig_pca(d: ReportData) -> Figure:
    fig = _new_figure(6.0)
    ax = fig.add_subplot()
    p = d.projection
    assert p is not None
    if d.labels is None:
        ax.scatter(p.points[:, 0], p.points[:, 1], s=4, color="0.5", alpha=0.6, gid="points", label="reservoir")
    else:
        for cid in np.unique(d.labels).tolist():
            sel = d.labels == cid
            ax.scatter(p.points[sel, 0], p.points[sel, 1], s=4, color=_id_color(cid), alpha=0.6,
                       gid=f"points:{cid}", label=f"id {cid}")
    if d.centers_2d is not None and d.run.model is not None:
        ids = d.run.model.cluster_ids_.tolist()
        ax.scatter(d.centers_2d[:, 0], d.centers_2d[:, 1], s=160, marker="X", c=[_id_color(c) for c in ids],
                   edgecolors="black", linewidths=1.2, gid="centers", label="centres", zorder=3)
        for cid, (u, v) in zip(ids, d.centers_2d.tolist(), strict=True):
            ax.annotate(str(cid), (u, v), xytext=(6, 6), textcoords="offset points", fontsize="small")
    ax.set_xlabel(f"PC1 ({100 * p.explained[0]:.1f} % of the variance)")
    ax.set_ylabel(f"PC2 ({100 * p.explained[1]:.1f} %)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(True, alpha=0.3)
    leg = ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="x-small")
    for handle in leg.legend_handles:  # legend markers of one size, whatever the plotted sizes
        if handle is not None and hasattr(handle, "set_sizes"):
            handle.set_sizes([30.0])
    return fig


def _fig_select_k(d: ReportData) -> Figure:
    fig = _new_figure(3.4)
    axes = fig.subplots(1, len(d.select_k), squeeze=False)[0]
    titles = {"silhouette": "mean silhouette (highest wins)", "elbow": "J(k), elbow (knee wins)",
              "bic": "BIC (highest wins)"}
    for ax, (method, r) in zip(axes, d.select_k.items(), strict=True):
        ks = sorted(r.scores)
        ax.plot(ks, [r.scores[k] for k in ks], marker="o", gid=f"select_k:{method}")
        ax.axvline(r.k, color="tab:red", ls="--", gid=f"select_k:{method}:chosen", label=f"chosen k = {r.k}")
        ax.set_title(titles.get(method, method), fontsize="medium")
        ax.set_xlabel("k")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def build_figures(d: ReportData) -> dict[str, Figure]:
    """The page's figures by name (keys of :data:`FIGURES` whose data exist). Needs matplotlib."""
    require_matplotlib()
    figs: dict[str, Figure] = {}
    if d.series.n_chunks:
        figs["objective"] = _fig_objective(d.series)
        figs["weights"] = _fig_weights(d.series)
        figs["center_shift"] = _fig_center_shift(d.series)
    if d.projection is not None:
        figs["pca"] = _fig_pca(d)
    if d.select_k:
        figs["select_k"] = _fig_select_k(d)
    return figs


# ---------------------------------------------------------------------------- page
CAPTIONS = {
    "objective": "Mean squared distance of each chunk to its nearest centre, measured before the chunk "
                 "updated the model (blue), and its EWMA (orange). Dashed red: drift detected; dotted green: "
                 "reseed.",
    "weights": "Decayed weight of each stable cluster id after each chunk, stacked (an id absent from a chunk "
               "counts 0). Ids are never reused: a reseed can retire ids and add new ones.",
    "center_shift": "The largest distance a centre moved in the chunk's update (reseeds and dying-cluster "
                    "replacements not included).",
    "pca": "The final reservoir sample projected on its first two principal axes, coloured by the stable id "
           "the final model assigns; crosses: the final centres.",
    "select_k": "select_k on the reservoir for each candidate k; the dashed line is each method's choice.",
}

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1040px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f0f0f0; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { background: #fff6d6; border-left: 4px solid #e0b000; padding: 0.4em 0.8em; margin: 0.3em 0; }
figure { margin: 0; } img { max-width: 100%; height: auto; } figcaption { font-size: 0.9em; color: #555; }
code { font-size: 0.9em; }
"""


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _event_text(e: dict[str, Any]) -> str:
    rest = {k: v for k, v in e.items() if k != "event"}
    return json.dumps(rest, sort_keys=True) if rest else ""


def render_html(d: ReportData, pngs: dict[str, bytes]) -> str:
    """The page: summary, notes, the figures (*pngs* by name, inlined) and the events."""
    esc = html.escape
    run = d.run.run
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>streamkm report: {esc(str(run.get('source', '')))}</title>",
           '<link rel="icon" href="data:,">', f"<style>{_CSS}</style></head><body>",
           "<h1>streamkm report</h1>",
           f"<p>Run <code>{esc(d.run.path.name)}</code>: pipeline <code>{esc(str(run.get('pipeline', '')))}</code>, "
           f"source <code>{esc(str(run.get('source', '')))}</code>.</p>"]
    for note in d.notes:
        out.append(f'<p class="note">{esc(note)}</p>')
    out.append('<h2 id="summary">Summary</h2><table>')
    out += [f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in d.summary]
    out.append("</table>")
    for name, title in FIGURES.items():
        if name not in pngs:
            continue
        data = base64.b64encode(pngs[name]).decode("ascii")
        out.append(f'<h2 id="{name}">{esc(title)}</h2><figure><img src="data:image/png;base64,{data}" '
                   f'alt="{esc(title)}"><figcaption>{esc(CAPTIONS[name])}</figcaption></figure>')
    if d.select_k:
        out.append('<table><tr><th>method</th><th>chosen k</th><th>scores by k</th></tr>')
        for method, r in d.select_k.items():
            scores = ", ".join(f"{k}: {r.scores[k]:.4g}" for k in sorted(r.scores))
            out.append(f"<tr><td>{esc(method)}</td><td class=num>{r.k}</td><td>{esc(scores)}</td></tr>")
        out.append("</table>")
    s = d.series
    out.append(f'<h2 id="events">Events</h2><p>{len(s.events)} events in {s.n_chunks} chunks'
               + (f" (the first {MAX_EVENT_ROWS} listed)" if len(s.events) > MAX_EVENT_ROWS else "") + ".</p>")
    if s.events:
        out.append("<table><tr><th>version</th><th>record time (UTC)</th><th>event</th><th>details</th></tr>")
        for pos, e in s.events[:MAX_EVENT_ROWS]:
            t = s.record_time_ms[pos]
            when = "" if t is None else str(np.datetime64(int(t), "ms"))
            out.append(f"<tr><td class=num>{int(s.version[pos])}</td><td>{when}</td><td>{esc(e['event'])}</td>"
                       f"<td><code>{esc(_event_text(e))}</code></td></tr>")
        out.append("</table>")
    # The plotted series, for machines (a JSON data block is never executed). "</" is escaped so
    # that no value can close the script element.
    blob = json.dumps(s.to_json(), separators=(",", ":")).replace("</", "<\\/")
    out.append(f'<script type="application/json" id="streamkm-series">{blob}</script>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


@dataclass
class Report:
    """What :func:`write_report` wrote, and what it drew.

    Attributes
    ----------
    index : Path
        ``OUT/index.html``.
    pngs : dict of str to Path
        ``OUT/NAME.png`` by figure name.
    figures : dict of str to Figure
        The figures the PNGs were rendered from.
    data : ReportData
    """

    index: Path
    pngs: dict[str, Path]
    figures: dict[str, Figure]
    data: ReportData


def write_report(rd: RunDir, out: str | Path, *, select_k: tuple[int, int] | None = None, seed: int = 0) -> Report:
    """Render the report of *rd* into the directory *out* (created): ``index.html`` and one PNG per figure.

    Raises MissingExtra without matplotlib (before anything is computed or written), ValueError
    if *select_k* cannot run on the reservoir, OSError if *out* cannot be written.
    """
    require_matplotlib()
    data = build_report_data(rd, select_k=select_k, seed=seed)
    figs = build_figures(data)
    pngs = {name: _png(fig) for name, fig in figs.items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, png in pngs.items():
        paths[name] = out / f"{name}.png"
        atomic_write(paths[name], png)
    for name in FIGURES.keys() - pngs.keys():  # from an earlier report of this RUN_DIR
        (out / f"{name}.png").unlink(missing_ok=True)
    index = out / "index.html"
    atomic_write(index, render_html(data, pngs).encode("utf-8"))
    return Report(index=index, pngs=paths, figures=figs, data=data)

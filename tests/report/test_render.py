"""The figures are drawn from the log, and the page is one self-contained file that a real browser
(headless Chromium) shows without errors."""

from __future__ import annotations

import base64
import io
import json
import os
import re

import numpy as np
import pytest

from streamkm.report import load_run_dir, write_report
from streamkm.report.render import FIGURES, build_figures, build_report_data
from tests.helpers.chromium import ChromiumTimeout, load_page
from tests.report.support import read_chunks

matplotlib = pytest.importorskip("matplotlib", reason="the report needs the 'report' extra (matplotlib)")


@pytest.fixture(scope="module")
def report(run_dir_template, tmp_path_factory):
    """The report of the shared RUN_DIR, with select_k, written to a directory of its own."""
    return write_report(load_run_dir(run_dir_template), tmp_path_factory.mktemp("report"), select_k=(2, 5))


def _artists(fig, gid):
    return [a for ax in fig.axes for a in (*ax.lines, *ax.collections) if a.get_gid() == gid]


def _one(fig, gid):
    (artist,) = _artists(fig, gid)
    return artist


def _float(values):
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


# ---------------------------------------------------------------------------- figures
def test_the_plotted_lines_are_the_log(report, run_dir_template):
    log = read_chunks(run_dir_template)
    times = np.array([c["record_time_ms"] for c in log], dtype="datetime64[ms]")
    for fig_name, gid in (("objective", "objective"), ("objective", "ewma"), ("center_shift", "center_shift")):
        line = _one(report.figures[fig_name], gid)
        np.testing.assert_array_equal(np.asarray(line.get_xdata(), dtype="datetime64[ms]"), times)
        np.testing.assert_array_equal(np.asarray(line.get_ydata(), dtype=np.float64),
                                      _float([c[gid] for c in log]), err_msg=gid)
    for mark, name in (("drift", "drift"), ("reseed", "reseed")):
        expected = [times[i] for i, c in enumerate(log) if any(e["event"] == name for e in c["events"])]
        assert expected
        for fig_name in ("objective", "weights", "center_shift"):
            lines = _artists(report.figures[fig_name], mark)
            assert [list(line.get_xdata()) for line in lines] == [[t, t] for t in expected], (fig_name, mark)


def test_the_stacked_weights_are_the_log(report, run_dir_template):
    log = read_chunks(run_dir_template)
    ids = sorted({int(i) for c in log for i in c["weights"]})
    fig = report.figures["weights"]
    xs = matplotlib.dates.date2num(np.array([c["record_time_ms"] for c in log], dtype="datetime64[ms]"))
    top = np.zeros(len(log))
    for cid in ids:
        bottom = top.copy()
        top = top + [c["weights"].get(str(cid), 0.0) for c in log]
        verts = _one(fig, f"weight:{cid}").get_paths()[0].vertices
        # fill_between's polygon: the upper edge left to right, then the lower edge back
        for x, y_hi, y_lo in zip(xs, top, bottom, strict=True):
            at_x = verts[np.isclose(verts[:, 0], x, rtol=0, atol=1e-9), 1]
            assert np.isclose(at_x, y_hi).any() and np.isclose(at_x, y_lo).any(), cid


def test_the_pca_shows_the_reservoir_by_predicted_id_and_the_centres(report):
    d = report.data
    rd = d.run
    fig = report.figures["pca"]
    labels = rd.model.predict(rd.reservoir)
    np.testing.assert_array_equal(d.labels, labels)
    assert set(labels.tolist()) <= set(rd.model.cluster_ids_.tolist())
    for cid in np.unique(labels).tolist():
        np.testing.assert_allclose(_one(fig, f"points:{cid}").get_offsets(), d.projection.points[labels == cid])
    centres = (rd.model.cluster_centers_ - rd.reservoir.astype(np.float64).mean(axis=0)) @ d.projection.components.T
    np.testing.assert_allclose(_one(fig, "centers").get_offsets(), centres, atol=1e-6)


def test_the_select_k_curves_are_its_scores(report):
    fig = report.figures["select_k"]
    for method, r in report.data.select_k.items():
        line = _one(fig, f"select_k:{method}")
        assert list(line.get_xdata()) == sorted(r.scores)
        assert list(line.get_ydata()) == [r.scores[k] for k in sorted(r.scores)]
        assert list(_one(fig, f"select_k:{method}:chosen").get_xdata()) == [r.k, r.k]


# ---------------------------------------------------------------------------- page
def test_the_page_inlines_its_pngs_and_the_series(report, run_dir_template):
    page = report.index.read_text(encoding="utf-8")
    assert set(report.pngs) == set(FIGURES)
    inlined = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [base64.b64decode(b) for b in inlined] == [report.pngs[n].read_bytes() for n in FIGURES]
    blob = re.search(r'<script type="application/json" id="streamkm-series">(.*?)</script>', page, re.S).group(1)
    series = json.loads(blob)
    log = read_chunks(run_dir_template)
    assert series["objective"] == [c["objective"] for c in log] and series["ewma"] == [c["ewma"] for c in log]
    for row in ("records", "valid rows", "not_finite 7", "wrong_dimension 3", "ratio final / batch"):
        assert row in page


def test_the_page_references_nothing_external(report):
    page = report.index.read_text(encoding="utf-8")
    assert not re.search(r"https?://", page)
    refs = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page, re.I)
    assert refs and all(r.startswith("data:") for r in refs), refs
    assert not re.search(r"@import|url\(", page)


def test_a_missing_reservoir_leaves_out_the_pca_and_says_why(run_dir, tmp_path):
    out = tmp_path / "out"
    write_report(load_run_dir(run_dir), out, select_k=(2, 4))
    assert (out / "pca.png").exists()
    (run_dir / "reservoir.npy").unlink()
    r = write_report(load_run_dir(run_dir), out, select_k=(2, 4))
    assert set(r.pngs) == {"objective", "weights", "center_shift"}
    assert not (out / "pca.png").exists() and not (out / "select_k.png").exists()  # stale ones removed
    page = r.index.read_text()
    assert "no reservoir.npy" in page and "no reservoir points to run select_k on" in page
    assert "batch KMeans" not in page


def test_figures_are_agg_figures_without_pyplot(report):
    import sys

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    assert all(isinstance(f.canvas, FigureCanvasAgg) for f in report.figures.values())
    assert "matplotlib.pyplot" not in sys.modules or not __import__("matplotlib.pyplot").pyplot.get_fignums()


def test_an_empty_log_gives_a_page_with_a_note(run_dir, tmp_path):
    (run_dir / "chunks.jsonl").write_text("")
    d = build_report_data(load_run_dir(run_dir))
    assert "objective" not in build_figures(d)
    assert any("empty" in n for n in d.notes)


# ---------------------------------------------------------------------------- a real browser
def _distinct_colours(png: bytes) -> int:
    img = matplotlib.image.imread(io.BytesIO(png), format="png")
    return int(np.unique(img.reshape(-1, img.shape[-1]), axis=0).shape[0])


def test_the_page_loads_in_chromium_without_errors(report):
    got = load_page(report.index)
    assert got.errors == []
    assert got.title.startswith("streamkm report")
    assert len(got.images) == len(report.pngs)
    assert all(i["complete"] and i["width"] > 0 for i in got.images), got.images
    assert _distinct_colours(got.screenshot) > 200


def test_the_browser_check_catches_console_errors_broken_images_and_blank_pages(tmp_path):
    (tmp_path / "err.html").write_text('<!DOCTYPE html><html><body><p>x</p><script>console.error("boom")</script>'
                                       "</body></html>")
    (tmp_path / "img.html").write_text('<!DOCTYPE html><html><body><img src="gone.png"></body></html>')
    (tmp_path / "blank.html").write_text("<!DOCTYPE html><html><body></body></html>")
    err = load_page(tmp_path / "err.html", height=400)
    assert any("boom" in e for e in err.errors), err.errors
    img = load_page(tmp_path / "img.html", height=400)
    assert any("gone.png" in e for e in img.errors), img.errors
    assert img.images and img.images[0]["width"] == 0
    blank = load_page(tmp_path / "blank.html", height=400)
    assert blank.errors == [] and _distinct_colours(blank.screenshot) < 5


def test_a_browser_that_does_not_answer_in_time_is_killed(tmp_path):
    (tmp_path / "p.html").write_text("<!DOCTYPE html><html><body><p>x</p></body></html>")
    with pytest.raises(ChromiumTimeout) as info:
        load_page(tmp_path / "p.html", timeout=0.01)
    assert info.value.pid > 0
    with pytest.raises(ProcessLookupError):  # its whole process group is gone, not only the browser
        os.killpg(info.value.pid, 0)

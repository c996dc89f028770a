"""``streamkm report RUN_DIR``: one self-contained HTML page (and its PNGs) of a replayed run.

:func:`load_run_dir` reads and validates what ``streamkm replay --out RUN_DIR`` wrote
(:mod:`~streamkm.report.rundir`); :func:`chunk_series` and :func:`pca_2d` compute the
plotted series (:mod:`~streamkm.report.series`, NumPy only); :mod:`~streamkm.report.summary`
scores the final model against a batch k-means on the reservoir and runs ``select_k``;
:func:`write_report` draws the figures with matplotlib (the optional ``report`` extra,
imported lazily) and writes the page (:mod:`~streamkm.report.render`). See docs/report.md.
"""

from streamkm.report.render import MissingExtra, Report, ReportData, build_report_data, write_report
from streamkm.report.rundir import RunDir, RunDirError, load_run_dir
from streamkm.report.series import Projection, Series, chunk_series, pca_2d
from streamkm.report.summary import BatchComparison, compare_to_batch, select_k_curves

__all__ = [
    "BatchComparison",
    "MissingExtra",
    "Projection",
    "Report",
    "ReportData",
    "RunDir",
    "RunDirError",
    "Series",
    "build_report_data",
    "chunk_series",
    "compare_to_batch",
    "load_run_dir",
    "pca_2d",
    "select_k_curves",
    "write_report",
]

"""``streamkm report RUN_DIR``: writes the page; a bad RUN_DIR, option or a missing matplotlib is a
one-line error with exit 2 and nothing written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streamkm.cli.main import main
from tests.report.support import make_run_dir

pytest.importorskip("matplotlib", reason="the report needs the 'report' extra (matplotlib)")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return make_run_dir(tmp_path_factory.mktemp("run") / "run", n_chunks=12, relocate_at=6)


@pytest.fixture
def run_dir(template, tmp_path):
    import shutil

    return shutil.copytree(template, tmp_path / "run")


def _report(*args: str, block_matplotlib: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}
    code = "import sys; from streamkm.cli.main import main; sys.exit(main(sys.argv[1:]))"
    if block_matplotlib:  # as if the extra were not installed: importing it raises ImportError
        code = "import sys; sys.modules['matplotlib'] = None; " + code.removeprefix("import sys; ")
    return subprocess.run([sys.executable, "-c", code, "report", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_report_writes_the_page_and_the_pngs(run_dir, capsys):
    assert main(["report", str(run_dir), "--select-k", "2:4", "--seed", "1"]) == 0
    out = run_dir / "report"
    assert sorted(p.name for p in out.iterdir()) == ["center_shift.png", "index.html", "objective.png", "pca.png",
                                                     "select_k.png", "weights.png"]
    captured = capsys.readouterr()
    assert f"wrote {out / 'index.html'}" in captured.out and captured.err == ""
    page = (out / "index.html").read_text()
    assert "seed 1" in page and "select_k score curves" in page


def test_report_out_elsewhere_and_notes_on_stderr(run_dir, tmp_path, capsys):
    (run_dir / "model.npz").unlink()
    (run_dir / "model.json").unlink()
    assert main(["report", str(run_dir), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "index.html").exists() and not (run_dir / "report").exists()
    err = capsys.readouterr().err
    assert "streamkm report: note: no final model (model.npz + model.json)" in err


@pytest.mark.parametrize("case, expected", [
    ("no run.json", "run.json: not found"),
    ("bad line", "chunks.jsonl:3: not valid JSON"),
    ("wide reservoir", "reservoir.npy: expected 4 features (run.json n_features), got 6"),
    ("select-k too large", "--select-k: select_k up to k = 5000 needs at least 5001 reservoir points"),
])
def test_a_bad_run_dir_is_a_one_line_error(run_dir, case, expected):
    import numpy as np

    args = []
    if case == "no run.json":
        (run_dir / "run.json").unlink()
    elif case == "bad line":
        lines = (run_dir / "chunks.jsonl").read_text().splitlines()
        lines[2] = lines[2][:-5]
        (run_dir / "chunks.jsonl").write_text("\n".join(lines))
    elif case == "wide reservoir":
        np.save(run_dir / "reservoir.npy", np.zeros((4, 6), np.float32))
    else:
        args = ["--select-k", "2:5000"]
    got = _report(str(run_dir), *args)
    assert got.returncode == 2, got.stderr
    assert got.stderr.count("\n") == 1 and expected in got.stderr and got.stderr.startswith("streamkm report: ")
    assert "Traceback" not in got.stderr and not (run_dir / "report").exists()


@pytest.mark.parametrize("value", ["5:2", "0:3", "3", "a:b", "2:"])
def test_a_bad_select_k_range_is_a_usage_error(run_dir, value, capsys):
    with pytest.raises(SystemExit) as info:
        main(["report", str(run_dir), "--select-k", value])
    assert info.value.code == 2
    assert "KMIN:KMAX" in capsys.readouterr().err


def test_without_matplotlib_report_names_the_extra(run_dir):
    got = _report(str(run_dir), block_matplotlib=True)
    assert got.returncode == 2
    assert got.stderr == ("streamkm report: the report needs matplotlib, the 'report' extra: "
                          "pip install 'streamkm[report]'\n")
    assert not (run_dir / "report").exists()


def test_an_unwritable_out_is_exit_1(run_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["report", str(run_dir), "--out", str(tmp_path / "file" / "sub")]) == 1
    assert "cannot write" in capsys.readouterr().err


def test_the_pyproject_declares_the_extra():
    import tomllib
    from pathlib import Path

    doc = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    extras = doc["project"]["optional-dependencies"]
    assert extras["report"] == ["matplotlib>=3.8"]
    assert any(d.startswith("matplotlib") for d in extras["dev"])

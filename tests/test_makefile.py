"""The Makefile's two commands: bootstrap once per pyproject.toml content, then lint, types, tests.

Each test runs the real ``make`` on a copy of the Makefile and pyproject.toml, with
``PYTHON`` pointing at a stand-in interpreter that writes each call to a log: ``-m venv``
makes a venv of stand-ins (ruff, mypy and streamkm that log and exit), ``-m pip`` only logs
(nothing is installed), and everything else runs the real interpreter, so pytest is real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")

_FAKE_PYTHON = """#!/bin/sh
echo "python $*" >> "$FAKE_LOG"
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then exit 0; fi
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    mkdir -p "$3/bin" && cp "$FAKE_TOOLS"/* "$3/bin/" && exit 0
fi
exec "$REAL_PYTHON" "$@"
"""

_FAKE_TOOL = """#!/bin/sh
echo "{name} $*" >> "$FAKE_LOG"
exit ${{FAKE_RC_{name}:-0}}
"""

_OLD_PYTHON = """#!/bin/sh
echo "python $*" >> "$FAKE_LOG"
if [ "$1" = "-V" ]; then echo "Python 3.9.2"; exit 0; fi
exit 1
"""


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def project(tmp_path):
    """A directory with the Makefile, pyproject.toml, stand-ins and two tiny test files."""
    work = tmp_path / "proj"
    work.mkdir()
    shutil.copy(ROOT / "Makefile", work)
    shutil.copy(ROOT / "pyproject.toml", work)
    (work / "t_ok.py").write_text("def test_ok():\n    assert True\n")
    (work / "t_bad.py").write_text("def test_bad():\n    assert False\n")
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("ruff", "mypy", "streamkm"):
        _script(tools / name, _FAKE_TOOL.format(name=name))
    fake = _script(tmp_path / "python3", _FAKE_PYTHON)
    shutil.copy(fake, tools / "python")  # the venv's interpreter is a stand-in too
    return work, fake, tmp_path / "calls.log", tools


def _make(work: Path, python: Path, log: Path, tools: Path, *args: str,
          **env_extra: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    # nothing from an enclosing make (`make test` runs this) or the caller's overrides
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MAKE", "MFLAGS")) and k not in ("PYTHON", "VENV", "TORCH", "RUN_ARGS", "PYTEST_ARGS")}
    env.update(FAKE_LOG=str(log), FAKE_TOOLS=str(tools), REAL_PYTHON=sys.executable, **env_extra)
    log.write_text("")
    out = subprocess.run(["make", "--no-print-directory", f"PYTHON={python}", "VENV=venv", *args],
                         cwd=work, env=env, capture_output=True, text=True, timeout=120)
    calls = [line for line in log.read_text().splitlines()
             if not line.startswith("python -c")]  # the version checks
    return out, calls


def test_first_call_bootstraps_then_lint_types_tests_and_second_call_skips_install(project):
    work, python, log, tools = project
    out, calls = _make(work, python, log, tools, "test", "PYTEST_ARGS=t_ok.py")
    assert out.returncode == 0, out.stdout + out.stderr
    assert calls == [
        "python -m venv venv",
        "python -m pip install -q --upgrade pip",
        "python -m pip install -q torch==2.13.0",   # the reference wheel first
        'python -m pip install -q -e .[dev,embedded]',
        "ruff check .",
        "mypy ",
        "python -m pytest -q t_ok.py",
    ]
    assert "1 passed" in out.stdout

    out, calls = _make(work, python, log, tools, "test", "PYTEST_ARGS=t_ok.py")
    assert out.returncode == 0, out.stdout + out.stderr
    assert calls == ["ruff check .", "mypy ", "python -m pytest -q t_ok.py"]

    # the test install covers run's: nothing installed, the daemon started with RUN_ARGS
    out, calls = _make(work, python, log, tools, "run", "RUN_ARGS=--duration 5")
    assert out.returncode == 0, out.stdout + out.stderr
    assert calls == ["streamkm run --duration 5"]


def test_install_follows_pyproject_content_not_its_mtime(project):
    work, python, log, tools = project
    out, calls = _make(work, python, log, tools, "run")
    assert out.returncode == 0, out.stdout + out.stderr
    assert calls[1:] == ["python -m pip install -q --upgrade pip", "python -m pip install -q -e .[embedded]",
                         "streamkm run"]
    os.utime(work / "pyproject.toml")  # touched, same content: no install
    assert _make(work, python, log, tools, "run")[1] == ["streamkm run"]
    with open(work / "pyproject.toml", "a") as fh:
        fh.write("# a new dependency, say\n")
    out, calls = _make(work, python, log, tools, "run")
    assert out.returncode == 0 and "python -m pip install -q -e .[embedded]" in calls
    assert _make(work, python, log, tools, "run")[1] == ["streamkm run"]
    stamps = [p.name for p in (work / "venv").glob(".streamkm-*")]
    assert len(stamps) == 1 and stamps[0].startswith(".streamkm-run-"), stamps  # the old one is gone


def test_a_failing_step_fails_make_and_stops_what_follows(project):
    work, python, log, tools = project
    out, calls = _make(work, python, log, tools, "test", "PYTEST_ARGS=t_bad.py")
    assert out.returncode != 0
    assert "1 failed" in out.stdout and "Error 1" in out.stderr  # pytest's own code, as make reports it

    out, calls = _make(work, python, log, tools, "test", "PYTEST_ARGS=t_ok.py", FAKE_RC_ruff="1")
    assert out.returncode != 0
    assert calls == ["ruff check ."]  # no mypy, no pytest after a lint finding

    out, _ = _make(work, python, log, tools, "test", "PYTEST_ARGS=t_ok.py -k nothing")
    assert out.returncode != 0 and "Error 5" in out.stderr  # pytest ran no test: not a pass


def test_python_older_than_3_11_is_refused_with_a_clear_message(project, tmp_path):
    work, _, log, tools = project
    old = _script(tmp_path / "python3.9", _OLD_PYTHON)
    out, calls = _make(work, old, log, tools, "run")
    assert out.returncode != 0
    assert f"streamkm needs Python >= 3.11, but {old} is Python 3.9.2" in out.stderr
    assert not (work / "venv").exists() and not any("venv" in c or "pip" in c for c in calls)

    out, _ = _make(work, tmp_path / "no-such-python", log, tools, "run")
    assert out.returncode != 0 and "not found; streamkm needs Python >= 3.11" in out.stderr

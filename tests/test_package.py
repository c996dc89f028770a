"""The package's identity: one version everywhere, and the one module entry point."""

import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import streamkm

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_the_project_version():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert streamkm.__version__ == version("streamkm") == declared


def test_cli_version_runs():
    out = subprocess.run(
        [sys.executable, "-m", "streamkm", "--version"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"streamkm {streamkm.__version__}"


def test_the_old_worker_entry_point_is_gone():
    out = subprocess.run([sys.executable, "-m", "streamkm.worker", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0 and "No module named streamkm.worker" in out.stderr


def test_estimators_are_exported_lazily_and_completely():
    import streamkm.cluster

    assert sorted(streamkm._CLUSTER_NAMES) == sorted(streamkm.cluster.__all__)
    assert streamkm.StreamingKMeans is streamkm.cluster.StreamingKMeans
    # importing the package (and the CLI) does not import NumPy: SIGTERM handling starts early
    out = subprocess.run([sys.executable, "-c", "import sys, streamkm.cli; print('numpy' in sys.modules)"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr

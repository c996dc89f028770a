import subprocess
import sys

import streamkm


def test_version_is_installed_metadata():
    assert streamkm.__version__ != "0.0.0+unknown"


def test_cli_version_runs():
    out = subprocess.run(
        [sys.executable, "-m", "streamkm", "--version"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("streamkm ")

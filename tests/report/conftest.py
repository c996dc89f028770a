"""RUN_DIR fixtures: one real small run, written once per module and copied per test that edits it."""

from __future__ import annotations

import shutil

import pytest

from tests.report.support import make_run_dir


@pytest.fixture(scope="module")
def run_dir_template(tmp_path_factory):
    """A RUN_DIR (read-only: tests that change files use ``run_dir``)."""
    return make_run_dir(tmp_path_factory.mktemp("run") / "run", first_rows=5)


@pytest.fixture
def run_dir(run_dir_template, tmp_path):
    """A private copy of the RUN_DIR that a test may edit."""
    return shutil.copytree(run_dir_template, tmp_path / "run")

"""``streamkm model export --snapshot FILE``: offline, and every bad file is a one-line error, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from streamkm.group.export import load_model
from streamkm.group.messages import KIND_SNAPSHOT
from streamkm.group.wire import encode
from streamkm.service.group import new_group_model
from tests.group.support import PIPE, blobs, raw_stats


def _config(tmp_path, *, enabled: bool = True, k: int = 3):
    p = tmp_path / "c.toml"
    p.write_text(f"[input]\ndimension = 2\n[model]\nn_clusters = {k}\nseed = 0\ndying_threshold = 0.0\n"
                 f"[drift]\nenabled = false\n[group]\nenabled = {'true' if enabled else 'false'}\n"
                 "max_message_bytes = 1048576\n")
    return p


def _model(tmp_path, cmd: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}
    return subprocess.run([sys.executable, "-m", "streamkm", "model", cmd, *args], capture_output=True, text=True,
                          env=env, timeout=60, cwd=tmp_path)


def test_export_from_a_snapshot_file_needs_no_broker(tmp_path):
    from streamkm.config import load_settings

    cfg = _config(tmp_path)
    g = new_group_model(load_settings(cfg), PIPE)
    rng = np.random.default_rng(0)
    X = blobs(rng, np.array([[0.0, 0.0], [30.0, 0.0], [0.0, 30.0]]), 300)
    g.fold(raw_stats(0, X), 0)
    snap = tmp_path / "s.snapshot"
    snap.write_bytes(encode(KIND_SNAPSHOT, {"pipeline": PIPE, "stats_offset": 0, "state": g.state_dict()}))
    out = _model(tmp_path, "export", "--config", str(cfg), "--snapshot", str(snap), "--out", str(tmp_path / "m"))
    assert out.returncode == 0, out.stderr
    m = load_model(tmp_path / "m")
    np.testing.assert_array_equal(m.cluster_centers_, g.version().centers)
    assert m.model_version_ == g.version_ == 1


@pytest.mark.parametrize("case", ["missing", "garbage", "too large", "other settings", "other identity threshold",
                                  "group disabled"])
def test_a_bad_snapshot_file_is_a_one_line_error(tmp_path, case):
    from streamkm.config import load_settings

    snap = tmp_path / "s.snapshot"
    (tmp_path / "src").mkdir()
    cfg = _config(tmp_path, enabled=case != "group disabled")
    if case == "garbage":
        snap.write_bytes(b"SKMG not really")
    elif case == "too large":
        snap.write_bytes(b"\0" * (1048576 + 1))
    elif case in ("other settings", "other identity threshold", "group disabled"):
        g = new_group_model(load_settings(_config(tmp_path / "src", k=3)), PIPE)
        g.fold(raw_stats(0, blobs(np.random.default_rng(0), np.zeros((1, 2)), 50)), 0)
        snap.write_bytes(encode(KIND_SNAPSHOT, {"pipeline": PIPE, "stats_offset": 0, "state": g.state_dict(),
                                                "config_hash": g.config_hash}))
        if case == "other settings":
            cfg = _config(tmp_path, k=4)
        if case == "other identity threshold":  # not a model parameter: only the config hash tells
            cfg.write_text(cfg.read_text().replace("[group]\n", "[group]\nidentity_threshold = 7.5\n"))
    out = _model(tmp_path, "export", "--config", str(cfg), "--snapshot", str(snap), "--out", str(tmp_path / "m"))
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
    expected = {"missing": "cannot read", "garbage": "not a usable reducer snapshot",
                "too large": "group.max_message_bytes", "other settings": "s.snapshot",
                "other identity threshold": "made with other model settings",
                "group disabled": "group.enabled = true"}[case]
    assert expected in out.stderr, out.stderr
    assert not (tmp_path / "m.npz").exists()


def test_snapshot_without_a_broker_is_a_usage_error(tmp_path):
    out = _model(tmp_path, "snapshot", "--config", str(_config(tmp_path)), "--out", str(tmp_path / "s"))
    assert out.returncode == 2 and "no broker" in out.stderr, out.stderr

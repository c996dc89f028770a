"""Tests for ``streamkm lstm train`` / ``streamkm lstm info`` (run as subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from streamkm.sequence import LSTMEncoder


def _run(*args, timeout=120):
    r = subprocess.run([sys.executable, "-m", "streamkm", "lstm", *map(str, args)],
                       capture_output=True, timeout=timeout)
    # decode by hand: text=True would turn the progress bar's \r into \n
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode())


@pytest.fixture
def windows(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(12)
    X = np.sin(rng.uniform(0.8, 1.2, (120, 1)) * t + rng.uniform(0, 6.3, (120, 1)))[..., None]
    path = tmp_path / "windows.npz"
    np.savez(path, X=X.astype(np.float32), lengths=rng.integers(4, 13, size=120))
    return path


def test_train_then_info(tmp_path, windows):
    out = tmp_path / "weights.npz"
    r = _run("train", "--data", windows, "--hidden", 8, "--epochs", 3, "--out", out,
             "--batch-size", 32, "--lr", 0.01, "--seed", 1, "--val-fraction", 0.2, "--progress")
    assert r.returncode == 0, r.stderr
    # progress (forced into the pipe by --progress): \r-updated lines with epoch, loss and
    # windows/s, one finished line per epoch
    assert "\r" in r.stderr and "windows/s" in r.stderr
    finished = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if "val_loss" in ln]
    assert [ln.split()[1] for ln in finished] == ["1/3", "2/3", "3/3"]
    assert "wrote" in r.stdout and "content_hash" in r.stdout

    enc = LSTMEncoder.load(out)
    assert (enc.input_size, enc.hidden_size, enc.num_layers, enc.bidirectional) == (1, 8, 1, False)
    meta = enc.training_metadata_
    assert meta["objective"] == "next_event" and meta["epochs"] == 3 and meta["seed"] == 1
    assert meta["n_val"] == 24 and len(meta["history"]) == 3 and meta["data"] == str(windows)
    assert enc.content_hash in r.stdout

    info = _run("info", out)
    assert info.returncode == 0, info.stderr
    assert f"content_hash   {enc.content_hash} (verified)" in info.stdout
    assert "hidden_size    8" in info.stdout and "objective" in info.stdout
    as_json = _run("info", out, "--json")
    header = json.loads(as_json.stdout)
    assert header["content_hash"] == enc.content_hash and header["training"]["epochs"] == 3


def test_no_bar_into_a_pipe_without_the_flag(tmp_path, windows):
    out = tmp_path / "w.npz"
    r = _run("train", "--data", windows, "--hidden", 4, "--epochs", 2, "--out", out)
    assert r.returncode == 0, r.stderr
    # no bar into a pipe, but the per-epoch lines, as plain lines
    assert "\r" not in r.stderr
    assert [ln.split()[1] for ln in r.stderr.splitlines()] == ["1/2", "2/2"]
    assert "wrote" in r.stdout and "content_hash" in r.stdout
    r = _run("train", "--data", windows, "--hidden", 4, "--epochs", 1, "--out", out, "--no-progress")
    assert r.returncode == 0 and "\r" not in r.stderr and r.stderr.startswith("epoch 1/1 loss")


def test_train_options(tmp_path, windows):
    out = tmp_path / "bi.npz"
    r = _run("train", "--data", windows, "--hidden", 4, "--epochs", 1, "--out", out, "--layers", 2,
             "--bidirectional", "--objective", "autoencoder", "--quiet", "--clip-norm", 0)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    enc = LSTMEncoder.load(out)
    assert enc.num_layers == 2 and enc.bidirectional and enc.embedding_dim == 8
    assert enc.training_metadata_["objective"] == "autoencoder"
    assert enc.training_metadata_["clip_norm"] is None


def test_errors(tmp_path, windows):
    r = _run("train", "--data", tmp_path / "nope.npz", "--out", tmp_path / "w.npz")
    assert r.returncode == 2 and "data file not found" in r.stderr
    noX = tmp_path / "nox.npz"
    np.savez(noX, Y=np.zeros((2, 3, 1)))
    r = _run("train", "--data", noX, "--out", tmp_path / "w.npz")
    assert r.returncode == 2 and "no array 'X'" in r.stderr
    flat = tmp_path / "flat.npz"
    np.savez(flat, X=np.zeros((4, 3)))
    r = _run("train", "--data", flat, "--out", tmp_path / "w.npz")
    assert r.returncode == 2 and "X must be 3-D" in r.stderr
    r = _run("train", "--data", windows, "--out", tmp_path / "w.npz", "--layers", 2,
             "--bidirectional", "--objective", "next_event")
    assert r.returncode == 2 and "multi-layer bidirectional" in r.stderr
    assert not (tmp_path / "w.npz").exists()
    r = _run("train", "--data", windows, "--out", tmp_path / "w.npz", "--objective", "bogus")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = _run("info", tmp_path / "missing.npz")
    assert r.returncode == 2 and "not found" in r.stderr
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 truncated")
    r = _run("info", broken)
    assert r.returncode == 2 and "corrupted" in r.stderr
    r = _run()
    assert r.returncode == 2  # a subcommand is required

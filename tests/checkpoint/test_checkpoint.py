"""Tests for streamkm.checkpoint: roundtrip, retention, corruption fallback, crash safety, no pickle."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from streamkm.checkpoint import FAULT_POINTS, CheckpointError, CheckpointStore, inspect_summary
from streamkm.checkpoint.store import DEFAULT_MAX_FILE_BYTES
from tests.helpers.files import assert_every_flipped_byte_is_refused


def _state(i: int = 0) -> dict:
    rng = np.random.default_rng(i)
    return {
        "offsets": {"vec:0": 100 + i, "vec:1": 7},
        "model_version": i,
        "pipelines": {
            "vectors": {
                "model": {
                    "cluster_centers_": rng.normal(size=(3, 4)).astype(np.float32),
                    "counts_": np.array([1.0, 2.0, 3.5 + i]),
                    "n_seen_": 10 + i,
                    "rng": {"state": {"key": 2**100 + i, "pos": 3}, "bit_generator": "PCG64"},
                    "reservoir": {"sample": rng.normal(size=(5, 4)).astype(np.float32), "kind": "uniform"},
                    "is_initialized_": True,
                    "half_life": None,
                    "history": [1.5, float("nan"), np.float32(2.0), np.int64(4)],
                },
                "flags": np.array([True, False]),
            },
            "sequence": {"windows": {"keys": ["a", "b"], "buf": np.zeros((2, 0, 3), np.float32)},
                         "lstm_hash": "ab" * 32},
        },
        "lists_of_arrays": [np.arange(3, dtype=np.int64), {"x": np.uint8(7)}],
    }


def _assert_same(a, b, path="root"):
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), path
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and a != a:
        assert b != b, path
    else:
        assert a == b and type(b) in (type(a), int, float, bool), (path, a, b)


def test_roundtrip_nested(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    st = _state(1)
    info = store.save(st, metadata={"worker": "w1"})
    loaded, linfo = store.load_latest()
    _assert_same(st, loaded)
    assert loaded["pipelines"]["vectors"]["model"]["rng"]["state"]["key"] == 2**100 + 1  # big ints exact
    assert isinstance(loaded["pipelines"]["vectors"]["model"]["history"][2], float)
    assert linfo.sequence == info.sequence == 1
    assert linfo.metadata == {"worker": "w1"}
    assert linfo.keys == sorted(st)
    assert info.size_bytes == info.data_path.stat().st_size + info.manifest_path.stat().st_size
    man = json.loads(info.manifest_path.read_text())
    assert man["format_version"] == 1 and len(man["npz_sha256"]) == 64
    assert man["arrays"]["a0"]["path"] == "pipelines.vectors.model.cluster_centers_"


def test_keep_n_and_monotone_sequence(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    seqs = [store.save(_state(i)).sequence for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert [i.sequence for i in store.list()] == [4, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-000000000004.json", "ckpt-000000000004.npz", "ckpt-000000000005.json", "ckpt-000000000005.npz"]
    st, info = store.load_latest()
    assert info.sequence == 5 and st["model_version"] == 4
    # a fresh store over the same dir continues the sequence
    assert CheckpointStore(tmp_path, keep=2).save(_state(9)).sequence == 6


def _corrupt_flip(info):
    b = bytearray(info.data_path.read_bytes())
    b[len(b) // 2] ^= 0xFF
    info.data_path.write_bytes(bytes(b))


def _corrupt_truncate(info):
    b = info.data_path.read_bytes()
    info.data_path.write_bytes(b[: len(b) // 3])


def _corrupt_delete(info):
    info.data_path.unlink()


def _corrupt_manifest(info):
    info.manifest_path.write_text("{ not json")


@pytest.mark.faults
@pytest.mark.parametrize("corrupt", [_corrupt_flip, _corrupt_truncate, _corrupt_delete, _corrupt_manifest])
def test_corrupted_newest_falls_back(tmp_path, corrupt, caplog):
    store = CheckpointStore(tmp_path, keep=3)
    store.save(_state(0))
    good = store.save(_state(1))
    bad = store.save(_state(2))
    corrupt(bad)
    with caplog.at_level(logging.WARNING, logger="streamkm.checkpoint"):
        st, info = store.load_latest()
    assert info.sequence == good.sequence
    _assert_same(_state(1), st)
    assert any("falling back" in r.getMessage() or "ignoring" in r.getMessage() for r in caplog.records)
    if corrupt is not _corrupt_manifest:
        with pytest.raises(CheckpointError):
            store.load(bad.sequence)


def test_all_corrupted_returns_none_and_empty_dir(tmp_path):
    store = CheckpointStore(tmp_path)
    assert store.load_latest() is None and store.list() == []
    _corrupt_flip(store.save(_state(0)))
    assert store.load_latest() is None


def test_torn_temp_files_ignored_and_cleaned(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    store.save(_state(0))
    (tmp_path / ".tmp-000000000002-deadbeef.npz").write_bytes(b"PK\x03\x04 torn")
    (tmp_path / ".tmp-000000000002-deadbeef.json").write_bytes(b'{"format_')
    (tmp_path / "ckpt-000000000002.npz").write_bytes(b"orphan data without manifest")
    st, info = store.load_latest()
    assert info.sequence == 1
    assert [i.sequence for i in store.list()] == [1]
    info3 = store.save(_state(3))
    assert info3.sequence == 3  # never reuses a number seen on disk
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not any(n.startswith(".tmp-") for n in names)
    assert "ckpt-000000000002.npz" not in names  # orphan older than newest committed is pruned


def test_no_pickle(tmp_path):
    store = CheckpointStore(tmp_path)
    with pytest.raises(TypeError, match="object"):
        store.save({"x": np.array([{"a": 1}, None], dtype=object)})
    with pytest.raises(TypeError, match="keys must be str"):
        store.save({"x": {1: 2}})
    with pytest.raises(TypeError, match="unsupported type"):
        store.save({"x": {1, 2}})
    assert list(tmp_path.iterdir()) == []  # rejected before writing anything
    # a hand-crafted npz with a pickled object array is refused on load
    info = store.save({"x": np.arange(3)})
    import hashlib
    import io

    buf = io.BytesIO()
    np.savez(buf, a0=np.array([{"evil": 1}], dtype=object))
    data = buf.getvalue()
    info.data_path.write_bytes(data)
    man = json.loads(info.manifest_path.read_text())
    man["npz_sha256"], man["npz_size"] = hashlib.sha256(data).hexdigest(), len(data)
    from streamkm.checkpoint.store import _manifest_digest

    man["manifest_sha256"] = _manifest_digest(man)  # a crafted manifest carries a valid checksum
    info.manifest_path.write_text(json.dumps(man))
    with pytest.raises(CheckpointError, match="bad npz"):
        store.load(info.sequence)


def test_fault_hook_points_called_in_order(tmp_path):
    seen = []
    CheckpointStore(tmp_path, fault_hook=seen.append).save(_state(0))
    assert tuple(seen) == FAULT_POINTS


def test_exception_in_hook_leaves_previous(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(_state(0))

    def boom(point):
        if point == "after_temp_write":
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        CheckpointStore(tmp_path, fault_hook=boom).save(_state(1))
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())
    assert store.load_latest()[1].sequence == 1


_CHILD = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from streamkm.checkpoint import CheckpointStore
    point = sys.argv[2]
    def hook(p):
        if p == point:
            os.kill(os.getpid(), signal.SIGKILL)
    store = CheckpointStore(sys.argv[1], keep=2, fault_hook=hook)
    store.save({"model_version": 2, "w": np.full((200, 50), 2.0)})
""")


@pytest.mark.faults
@pytest.mark.parametrize("point", FAULT_POINTS)
def test_sigkill_inside_save_leaves_previous_loadable(tmp_path, point):
    CheckpointStore(tmp_path, keep=2).save({"model_version": 1, "w": np.full((200, 50), 1.0)})
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path), point], timeout=120,
                          capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    st, info = CheckpointStore(tmp_path, keep=2).load_latest()
    if point == "after_rename":  # committed before the kill
        assert st["model_version"] == 2 and info.sequence == 2
    else:
        assert st["model_version"] == 1 and info.sequence == 1
        assert np.all(st["w"] == 1.0)
    # the next save cleans up and continues
    info2 = CheckpointStore(tmp_path, keep=2).save({"model_version": 3})
    assert info2.sequence > info.sequence
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())
    assert CheckpointStore(tmp_path).load_latest()[0]["model_version"] == 3


def test_inspect_summary(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(_state(0))
    info = store.save(_state(1), metadata={"group": "g"})
    text = inspect_summary(tmp_path, now=info.created_at + 90)
    assert "sequence 2" in text and "age 90.0s" in text
    assert "vec:0: next offset 101" in text
    assert "pipeline vectors: k=3, dim=4, points seen=11" in text
    assert "weights (sum 7.5)" in text
    assert "model version: 1" in text
    assert "lstm hash: abababab" in text
    _corrupt_flip(info)
    text = inspect_summary(tmp_path)
    assert "sequence 1" in text and "skipped: [2]" in text
    with pytest.raises(FileNotFoundError):
        inspect_summary(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="keep"):
        CheckpointStore(tmp_path, keep=0)
    with pytest.raises(TypeError, match="fault_hook"):
        CheckpointStore(tmp_path, fault_hook=3)
    with pytest.raises(TypeError, match="dict"):
        CheckpointStore(tmp_path).save([1, 2])


def test_real_component_states_roundtrip_and_summary(tmp_path):
    from streamkm.cluster.streaming_kmeans import StreamingKMeans
    from streamkm.drift import DriftMonitor
    from streamkm.sequence.windows import EventWindower

    rng = np.random.default_rng(0)
    km = StreamingKMeans(4, seed=1, reservoir_size=50)
    for _ in range(3):
        km.partial_fit(rng.normal(size=(40, 3)).astype(np.float32))
    win = EventWindower(3, size=4)
    win.add(["a", "b", "a"], np.array([1.0, 2.0, 3.0]), rng.normal(size=(3, 3)).astype(np.float32))
    mon = DriftMonitor()
    for v in rng.normal(size=20):
        mon.update(v)
    state = {"offsets": {"v:0": 120}, "model_version": km.n_batches_,
             "pipelines": {"vectors": {"model": km.state_dict()},
                           "sequence": {"model": StreamingKMeans(2).state_dict(), "windows": win.state_dict()}},
             "drift": {"vectors": mon.state_dict()}}
    store = CheckpointStore(tmp_path)
    store.save(state)
    st, _ = store.load_latest()
    km2 = StreamingKMeans(4, seed=1, reservoir_size=50)
    km2.load_state_dict(st["pipelines"]["vectors"]["model"])
    X = rng.normal(size=(40, 3)).astype(np.float32)
    km.partial_fit(X)
    km2.partial_fit(X)
    assert np.array_equal(km.cluster_centers_, km2.cluster_centers_)  # bit-identical continuation
    win2 = EventWindower(3, size=4)
    win2.load_state_dict(st["pipelines"]["sequence"]["windows"])
    assert win2.n_open_keys == 2 and win2.n_open_events == 3
    text = inspect_summary(tmp_path)
    assert "pipeline vectors: k=4, dim=3, points seen=120, batches=3" in text
    assert "pipeline sequence: k=2, not initialized" in text
    assert "open windows: 2 keys, 3 buffered events" in text
    assert "v:0: next offset 120" in text


def test_manifest_corruption_that_stays_valid_json_is_detected(tmp_path):
    # The offsets live in the JSON manifest: a flipped digit there must not be loaded
    # silently (the restart would seek to a wrong offset: records lost or absorbed twice).
    store = CheckpointStore(tmp_path, keep=3)
    store.save(_state(1))
    info = store.save(_state(2))
    text = info.manifest_path.read_text()
    assert '"vec:0": 102' in text
    info.manifest_path.write_text(text.replace('"vec:0": 102', '"vec:0": 902'))
    with pytest.raises(CheckpointError, match="manifest checksum"):
        store.load(info.sequence)
    state, linfo = store.load_latest()  # falls back to the previous valid one
    assert linfo.sequence == info.sequence - 1 and state["offsets"]["vec:0"] == 101


def test_inspect_summary_reports_drift_from_the_state_the_worker_writes(tmp_path):
    # The drift section is read from the layout a real worker checkpoints: each pipeline's
    # own "drift" (DriftMonitor.state_dict()) and "n_drift_reseeds", built here by a real
    # VectorPipeline that saw an abrupt change.
    import collections

    from streamkm.codec import encode_json
    from streamkm.pipeline import VectorPipeline
    from streamkm.service.worker import STATE_FORMAT, STATE_VERSION

    Rec = collections.namedtuple("Rec", "topic partition offset key value headers timestamp")
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(size=(3000, 2)), rng.normal(loc=40.0, size=(3000, 2))]).astype(np.float32)
    pipe = VectorPipeline(model_kwargs={"n_clusters": 2, "seed": 0}, batch_rows=100,
                          drift_kwargs={"method": "page_hinkley"})
    pipe.process([Rec("v", 0, i, None, encode_json(x), (), 0) for i, x in enumerate(X)])
    n_det = pipe.core.drift.n_detections_
    assert n_det >= 1  # the scenario must exercise the section
    state = {"format": STATE_FORMAT, "version": STATE_VERSION, "offsets": {"v:0": len(X)},
             "model_version": int(pipe.model.n_batches_), "pipelines": {"vectors": pipe.state_dict()}}
    CheckpointStore(tmp_path).save(state)
    text = inspect_summary(tmp_path)
    assert f"drift: page_hinkley, {n_det} detections, {pipe.core.n_drift_reseeds_} reseeds accepted" in text
    assert f"points seen={len(X)}" in text


# ------------------------------------------------------------------ size limits and checksums
def _peak_bytes_while(fn):
    import tracemalloc

    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("limit", [1 << 20, DEFAULT_MAX_FILE_BYTES])
def test_an_npz_over_the_limit_is_refused_unread(tmp_path, limit):
    store = CheckpointStore(tmp_path, max_file_bytes=limit)
    good = store.save(_state(0))
    bad = store.save(_state(1))
    os.truncate(bad.data_path, 2 * limit)  # sparse: no disk used, but 2x the limit long
    with pytest.raises(CheckpointError) as ei:
        store.load(bad.sequence)
    assert str(ei.value) == (f"{bad.data_path.name}: {2 * limit} bytes, more than the limit of {limit} bytes "
                             "(checkpoint.max_file_bytes): not read")
    loaded, peak = _peak_bytes_while(store.load_latest)
    assert peak < (1 << 20)  # the 2x-limit file was never read into memory
    assert loaded is not None and loaded[1].sequence == good.sequence
    assert store.skipped == [bad.sequence] and "more than the limit" in store.skip_reasons[bad.sequence]


def test_a_manifest_over_the_limit_is_refused_unread(tmp_path):
    store = CheckpointStore(tmp_path, max_file_bytes=1 << 20)
    good = store.save(_state(0))
    bad = store.save(_state(1))
    os.truncate(bad.manifest_path, 2 << 20)
    loaded, peak = _peak_bytes_while(store.load_latest)
    assert peak < (1 << 20)
    assert loaded is not None and loaded[1].sequence == good.sequence
    assert store.skip_reasons[bad.sequence] == (f"{bad.manifest_path.name}: {2 << 20} bytes, more than the limit "
                                                f"of {1 << 20} bytes (checkpoint.max_file_bytes): not read")
    assert [i.sequence for i in store.list()] == [good.sequence]  # list() skips it too


def test_save_refuses_a_state_over_the_limit_and_changes_nothing(tmp_path):
    store = CheckpointStore(tmp_path, keep=1, max_file_bytes=1 << 20)
    good = store.save(_state(0))
    before = sorted(p.name for p in tmp_path.iterdir())
    points = []
    store.fault_hook = points.append
    big = {**_state(1), "big": np.zeros(300_000, np.float32)}  # 1.2 MB of .npz
    with pytest.raises(CheckpointError, match=r"ckpt-000000000002\.npz would be \d+ bytes, more than the limit "
                                              r"of 1048576 bytes \(checkpoint\.max_file_bytes\): not written"):
        store.save(big)
    assert points == []  # refused before the first write point
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    st, info = store.load_latest()
    assert info.sequence == good.sequence
    _assert_same(_state(0), st)
    with pytest.raises(ValueError, match="max_file_bytes"):
        CheckpointStore(tmp_path, max_file_bytes=0)


def test_every_flipped_byte_of_the_npz_is_refused_before_parsing(tmp_path):
    store = CheckpointStore(tmp_path)
    info = store.save({"w": np.arange(6.0), "offsets": {"t:0": 3}})
    assert_every_flipped_byte_is_refused(info.data_path, lambda _: store.load(info.sequence),
                                         CheckpointError, "sha256 mismatch")
    st, _ = store.load(info.sequence)
    assert st["w"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] and st["offsets"] == {"t:0": 3}


def test_inspect_names_why_a_checkpoint_was_skipped(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(_state(0))
    bad = store.save(_state(1))
    os.truncate(bad.data_path, 3 << 20)
    text = inspect_summary(tmp_path, max_file_bytes=1 << 20)
    assert "latest valid: sequence 1" in text and "skipped: [2]" in text
    assert f"  sequence 2: {bad.data_path.name}: {3 << 20} bytes, more than the limit of {1 << 20}" in text
    # the CLI: exit 0, the reason, no traceback
    r = subprocess.run([sys.executable, "-m", "streamkm", "checkpoint", "inspect", str(tmp_path),
                        "--max-file-bytes", str(1 << 20)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "more than the limit of 1048576 bytes" in r.stdout
    assert "Traceback" not in r.stderr + r.stdout
    r = subprocess.run([sys.executable, "-m", "streamkm", "checkpoint", "inspect", str(tmp_path),
                        "--max-file-bytes", "0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--max-file-bytes must be >= 1" in r.stderr


def test_the_setting_reaches_the_store(tmp_path):
    from streamkm.config import load_settings

    s = load_settings(env={"STREAMKM_CHECKPOINT__MAX_FILE_BYTES": str(5 << 20)})
    assert s.checkpoint.max_file_bytes == 5 << 20
    assert load_settings(env={}).checkpoint.max_file_bytes == DEFAULT_MAX_FILE_BYTES
    from streamkm.config import ConfigError

    with pytest.raises(ConfigError, match="max_file_bytes"):
        load_settings(env={"STREAMKM_CHECKPOINT__MAX_FILE_BYTES": "100"})

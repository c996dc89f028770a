"""``streamkm replay``: files and topics into a run directory; user errors exit 2 in one line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from streamkm.group.export import load_model
from tests.helpers.e2e import unique_name


def _cli(cwd, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}
    return subprocess.run([sys.executable, "-m", "streamkm", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=cwd)


def _config(tmp_path, extra: str = "") -> str:
    p = tmp_path / "c.toml"
    p.write_text("[input]\ndimension = 3\n[model]\nn_clusters = 4\nseed = 0\ndecay = 1.0\n[drift]\nenabled = false\n"
                 "[group]\nenabled = true\nchunk_rows = 128\n" + extra)
    return str(p)


def _blobs(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(4, 3)) * 15
    return (c[rng.integers(4, size=n)] + rng.normal(size=(n, 3))).astype(np.float32)


def test_replay_of_an_array_writes_a_consistent_run_directory(tmp_path):
    X = _blobs(1000)
    X[[5, 50]] = np.nan
    np.save(tmp_path / "x.npy", X)
    out = _cli(tmp_path, "replay", "x.npy", "--config", _config(tmp_path), "--out", "run")
    assert out.returncode == 0, out.stderr
    assert "replayed 1,000 records (998 valid rows, 2 dead letters)" in out.stderr
    run = tmp_path / "run"
    doc = json.loads((run / "run.json").read_text())
    assert doc["format"] == "streamkm.run" and doc["records"] == 1000 and doc["valid_rows"] == 998
    assert doc["dead_letters"] == {"non_finite": 2}
    lines = [json.loads(s) for s in (run / "chunks.jsonl").read_text().splitlines()]
    assert len(lines) == doc["chunks"] == doc["final_version"]
    assert sum(ln["rows"] for ln in lines) == 998
    m = load_model(run / "model")
    assert {str(i): float(w) for i, w in zip(m.cluster_ids_, m.weights_, strict=True)} == lines[-1]["weights"]
    assert float(m.weights_.sum()) == pytest.approx(998)  # decay = 1: every valid row once
    res = np.load(run / "reservoir.npy", allow_pickle=False)
    assert res.dtype == np.float32 and res.shape == (998, 3)  # every row (the reservoir holds 10,000)
    # The same source again: the same model, bit for bit; and the snapshot exports the same model.
    again = _cli(tmp_path, "replay", "x.npy", "--config", _config(tmp_path), "--out", "run2")
    assert again.returncode == 0, again.stderr
    m2 = load_model(tmp_path / "run2" / "model")
    np.testing.assert_array_equal(m.cluster_centers_, m2.cluster_centers_)
    exp = _cli(tmp_path, "model", "export", "--config", _config(tmp_path), "--snapshot", "run/reducer.snapshot",
               "--out", "snap")
    assert exp.returncode == 0, exp.stderr
    np.testing.assert_array_equal(load_model(tmp_path / "snap").cluster_centers_, m.cluster_centers_)


def test_csv_with_a_header_replays_like_the_same_array(tmp_path):
    X = _blobs(400, 1).astype(np.float64)
    np.save(tmp_path / "x.npy", X.astype(np.float32))
    np.savetxt(tmp_path / "x.csv", X.astype(np.float32), delimiter=",", header="a,b,c", comments="", fmt="%.9g")
    cfg = _config(tmp_path)
    for name in ("x.npy", "x.csv"):
        out = _cli(tmp_path, "replay", name, "--config", cfg, "--out", f"run-{name}")
        assert out.returncode == 0, out.stderr
    a, b = load_model(tmp_path / "run-x.npy" / "model"), load_model(tmp_path / "run-x.csv" / "model")
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


@pytest.mark.parametrize("case", ["missing", "unknown type", "not empty", "truncated", "range on a file",
                                  "no bootstrap", "bad time"])
def test_user_errors_are_one_line_and_exit_2(tmp_path, case):
    np.save(tmp_path / "x.npy", _blobs(10))
    args = ["replay", "x.npy", "--out", "run"]
    if case == "missing":
        args[1] = "nope.skmrec"
    elif case == "unknown type":
        (tmp_path / "x.parquet").write_bytes(b"PAR1")
        args[1] = "x.parquet"
    elif case == "not empty":
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "keep.txt").write_text("mine")
    elif case == "truncated":
        (tmp_path / "t.skmrec").write_bytes(b"SKMREC\x02\x00" + b"\x01" * 9)
        args[1] = "t.skmrec"
    elif case == "range on a file":
        args += ["--start-offset", "5"]
    elif case == "no bootstrap":
        args[1] = "kafka:some-topic"
    elif case == "bad time":
        args[1:2] = ["kafka:some-topic", "--bootstrap", "127.0.0.1:1", "--start-time", "yesterday"]
    out = _cli(tmp_path, *args, "--config", _config(tmp_path))
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("streamkm replay: ") and len(out.stderr.strip().splitlines()) == 1, out.stderr
    if case == "not empty":
        assert (tmp_path / "run" / "keep.txt").read_text() == "mine"


@pytest.mark.broker
def test_a_topic_replays_like_its_recording_and_a_range_replays_only_that_range(tmp_path, broker, make_topic):
    from aiokafka import AIOKafkaProducer

    from streamkm.codec import encode_binary

    topic = make_topic("replay", partitions=3)
    X = _blobs(1500, 2)

    async def produce() -> None:
        p = AIOKafkaProducer(bootstrap_servers=broker, acks="all", linger_ms=2)
        await p.start()
        try:
            futs = [await p.send(topic, encode_binary(x[None, :]), partition=i % 3, timestamp_ms=1_000_000 + i)
                    for i, x in enumerate(X)]
            await asyncio.gather(*futs)
        finally:
            await p.stop()

    asyncio.run(produce())
    cfg = _config(tmp_path)
    rec = _cli(tmp_path, "record", "--bootstrap", broker, "--topic", topic, "--out", "t.skmrec")
    assert rec.returncode == 0, rec.stderr
    a = _cli(tmp_path, "replay", f"kafka:{topic}", "--bootstrap", broker, "--config", cfg, "--out", "from-topic")
    b = _cli(tmp_path, "replay", "t.skmrec", "--config", cfg, "--out", "from-file")
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    ma, mb = load_model(tmp_path / "from-topic" / "model"), load_model(tmp_path / "from-file" / "model")
    np.testing.assert_array_equal(ma.cluster_centers_, mb.cluster_centers_)
    doc = json.loads((tmp_path / "from-topic" / "run.json").read_text())
    assert doc["records"] == 1500 and doc["record_time_ms"] == [1_000_000, 1_001_499]
    assert {int(k.rsplit(":", 1)[1]) for k in json.loads((tmp_path / "from-topic" / "model.json").read_text())
            ["offsets"]} == {0, 1, 2}
    part = _cli(tmp_path, "replay", f"kafka:{topic}", "--bootstrap", broker, "--config", cfg, "--out", "range",
                "--start-offset", "100", "--end-offset", "300")
    assert part.returncode == 0, part.stderr
    doc = json.loads((tmp_path / "range" / "run.json").read_text())
    assert doc["records"] == 3 * 200
    lines = [json.loads(s) for s in (tmp_path / "range" / "chunks.jsonl").read_text().splitlines()]
    assert {ln["first_offset"] for ln in lines if ln["first_offset"] < 228} == {100}
    assert max(ln["end_offset"] for ln in lines) == 300
    missing = _cli(tmp_path, "replay", f"kafka:{unique_name('absent')}", "--bootstrap", broker, "--config", cfg,
                   "--out", "absent", "--timeout", "10")
    assert missing.returncode == 2 and "not found" in missing.stderr, missing.stderr


def _timed_recording(path, n: int, span_ms: int) -> None:
    from streamkm.codec import encode_binary
    from streamkm.loadgen.recording import Record, RecordingWriter

    X = _blobs(n, 3)
    with RecordingWriter(path, positions=True) as w:
        for i, x in enumerate(X):
            w.write(Record(None, encode_binary(x[None, :]), 5_000_000 + i * span_ms // n, ()), partition=i % 2,
                    offset=i // 2)


def _timed_events(tmp_path, n: int, span_ms: int) -> str:
    """An events recording (2 partitions, 10 keys) and a sequence config; returns the config path.

    Windows of 2 events and chunks of 300 windows: a chunk takes more records than a paced
    block, and with a 32-wide LSTM a batch's embeddings round by its shape, so a paced replay
    that cut other blocks than the unpaced one would not give the same centres."""
    from streamkm.codec.events import encode_event_json
    from streamkm.loadgen.recording import Record, RecordingWriter
    from streamkm.sequence.lstm import LSTMEncoder

    LSTMEncoder(3, 32, seed=0).save(tmp_path / "lstm.npz")
    rng = np.random.default_rng(3)
    with RecordingWriter(tmp_path / "t.skmrec", positions=True) as w:
        for i in range(n):
            key = f"user{int(rng.integers(10))}"
            x = rng.normal(size=3) + (3.0 if key < "user5" else -3.0)
            w.write(Record(key.encode(), encode_event_json(key, float(i), x), 5_000_000 + i * span_ms // n, ()),
                    partition=i % 2, offset=i // 2)
    p = tmp_path / "c.toml"
    p.write_text("[input]\nvectors_enabled = false\n[drift]\nenabled = false\n[group]\nenabled = true\n"
                 "chunk_rows = 300\n[sequence]\nenabled = true\nlstm_path = \"lstm.npz\"\nwindow_size = 2\n"
                 "[sequence.model]\nn_clusters = 3\nseed = 0\n")
    return str(p)


def _scrape(port: int) -> str:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return r.read().decode()
    except OSError:
        return ""


def _sample(text: str, prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _consumed(text: str) -> float:
    return _sample(text, "streamkm_records_consumed_total{")


def _same_run(a, b) -> None:
    """Two run directories hold the same model (ids, weights, centres, offsets) and chunk log."""
    ma, mb = load_model(a / "model"), load_model(b / "model")
    np.testing.assert_array_equal(ma.cluster_ids_, mb.cluster_ids_)
    np.testing.assert_array_equal(ma.weights_, mb.weights_)
    np.testing.assert_array_equal(ma.cluster_centers_, mb.cluster_centers_)
    ja, jb = (json.loads((d / "model.json").read_text()) for d in (a, b))
    assert ja["offsets"] == jb["offsets"] and ja["model_version"] == jb["model_version"]
    assert (a / "chunks.jsonl").read_text() == (b / "chunks.jsonl").read_text()


@pytest.mark.parametrize("stop", [False, True], ids=["to the end", "SIGTERM"])
@pytest.mark.parametrize("pipeline", ["vectors", "sequence"])
def test_speed_paces_by_record_time_and_serves_metrics(tmp_path, stop, pipeline):
    import re
    import signal
    import time

    from tests.helpers.tls import free_port

    n, span_ms, speed = 2000, 6000, 2.0
    if pipeline == "vectors":
        _timed_recording(tmp_path / "t.skmrec", n, span_ms=span_ms)
        cfg = _config(tmp_path)
    else:
        cfg = _timed_events(tmp_path, n, span_ms=span_ms)
    span_s = (n - 1) * span_ms // n / 1000.0  # the first record's time to the last's
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "streamkm", "replay", "t.skmrec", "--config", cfg,
                             "--pipeline", pipeline, "--out", "run", "--speed", f"{speed:g}",
                             "--metrics-port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen: list[float] = []
        windows = 0.0
        while proc.poll() is None and time.monotonic() - t0 < 30:
            text = _scrape(port)
            n_seen = _consumed(text)
            if n_seen:
                seen.append(n_seen)
                windows = _sample(text, 'streamkm_windows_emitted_total{pipeline="sequence"}')
            if stop and n_seen:
                proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.1)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert "Traceback" not in err, err
    doc = json.loads((tmp_path / "run" / "run.json").read_text())
    assert doc["pipeline"] == pipeline
    if stop:
        assert proc.returncode == 1, err
        assert doc["complete"] is False and doc["records"] < n, doc
        assert "stopped after replaying" in err
        return
    assert proc.returncode == 0, err
    assert doc["complete"] is True and doc["records"] == n
    # The replay itself (its summary line) took the recorded span at 2x: record time starts at
    # the first record, and the last block waits for the last one.
    seconds = float(re.search(r" in ([0-9.]+)s \(", err).group(1))
    assert span_s / speed - 0.01 <= seconds < span_s / speed + 10, (seconds, err)
    # /metrics was served while records were being replayed, and counted them as they went.
    assert len(seen) >= 3 and seen[0] < n and seen == sorted(seen), seen
    if pipeline == "sequence":
        assert windows > 0  # the window series too
    # Pacing changes when records are decoded, never what the model becomes.
    again = _cli(tmp_path, "replay", "t.skmrec", "--config", cfg, "--pipeline", pipeline, "--out", "unpaced")
    assert again.returncode == 0, again.stderr
    _same_run(tmp_path / "run", tmp_path / "unpaced")


def test_a_replayed_run_gives_a_report_whose_series_are_its_chunk_log(tmp_path):
    """The whole path a user follows: record (here: written directly), replay, report."""
    pytest.importorskip("matplotlib", reason="needs the 'report' extra (matplotlib)")
    from streamkm.report import chunk_series, load_run_dir

    _timed_recording(tmp_path / "t.skmrec", 3000, span_ms=60_000)
    assert _cli(tmp_path, "replay", "t.skmrec", "--config", _config(tmp_path), "--out", "run").returncode == 0
    out = _cli(tmp_path, "report", "run")
    assert out.returncode == 0, out.stderr
    page = (tmp_path / "run" / "report" / "index.html").read_text()
    assert "<img" in page and "http://" not in page and "https://" not in page
    lines = [json.loads(s) for s in (tmp_path / "run" / "chunks.jsonl").read_text().splitlines()]
    s = chunk_series(load_run_dir(tmp_path / "run").chunks)
    np.testing.assert_array_equal(s.objective, [np.nan if ln["objective"] is None else ln["objective"]
                                                for ln in lines])
    assert s.x_kind == "record_time" and s.record_time_ms == [ln["record_time_ms"] for ln in lines]
    assert s.weights.sum(axis=1)[-1] == pytest.approx(sum(lines[-1]["weights"].values()))


@pytest.mark.broker
def test_a_group_goes_live_from_a_replayed_model(tmp_path, broker, make_topic):
    """replay -> model seed -> run: the live group starts at the replayed version and folds only
    the records after the recording, each once."""
    import time

    from aiokafka import AIOKafkaProducer

    from streamkm.codec import encode_binary
    from tests.helpers.e2e import load_config, worker_config
    from tests.helpers.group import Member, latest_version

    topic = make_topic("live", partitions=2)
    X = _blobs(1600, 4)

    async def produce(rows, start):
        p = AIOKafkaProducer(bootstrap_servers=broker, acks="all", linger_ms=2)
        await p.start()
        try:
            futs = [await p.send(topic, encode_binary(x[None, :]), partition=(start + i) % 2)
                    for i, x in enumerate(rows)]
            await asyncio.gather(*futs)
        finally:
            await p.stop()

    asyncio.run(produce(X[:1000], 0))
    cfg = worker_config(broker, tmp_path / "unused", group=unique_name("g"), vectors_topic=topic, n_clusters=4,
                        model={"decay": 1.0, "dying_threshold": 0.0}, drift={"enabled": False})
    cfg["group"] = {"enabled": True, "chunk_rows": 128, "idle_partition_seconds": 2.0}
    cfg["input"]["dimension"] = 3
    settings = load_config(cfg, tmp_path / "w.toml")
    conf = str(tmp_path / "w.toml")
    assert _cli(tmp_path, "record", "--bootstrap", broker, "--topic", topic, "--out", "t.skmrec").returncode == 0
    assert _cli(tmp_path, "replay", "t.skmrec", "--config", conf, "--out", "run").returncode == 0
    replayed = json.loads((tmp_path / "run" / "model.json").read_text())
    seed = _cli(tmp_path, "model", "seed", "--config", conf, "--snapshot", "run/reducer.snapshot")
    assert seed.returncode == 0, seed.stderr
    assert f"version {replayed['model_version']}" in seed.stdout
    again = _cli(tmp_path, "model", "seed", "--config", conf, "--snapshot", "run/reducer.snapshot")
    assert again.returncode == 1 and "already holds version" in again.stderr, again.stderr
    asyncio.run(produce(X[1000:], 1000))
    member = Member(tmp_path / "w.toml", tmp_path / "m.log")
    try:
        deadline = time.monotonic() + 60
        while (v := asyncio.run(latest_version(broker, settings.group_model_topic))) is None or v.n_seen < 1600:
            assert time.monotonic() < deadline, (v and v.n_seen, member.tail())
            time.sleep(1.0)
        assert member.term() == 0, member.tail()
    finally:
        member.kill()
    assert v.n_seen == 1600 and float(v.weights.sum()) == 1600.0  # decay 1: every record once
    assert v.version > replayed["model_version"]
    assert sum(v.offsets.values()) == 1600 and v.counters["gap"] == 0


def test_a_run_without_a_valid_row_still_reports(tmp_path):
    pytest.importorskip("matplotlib", reason="needs the 'report' extra (matplotlib)")
    (tmp_path / "bad.jsonl").write_text('{"x": [1, "a"]}\nnot json\n')
    out = _cli(tmp_path, "replay", "bad.jsonl", "--config", _config(tmp_path), "--out", "run")
    assert out.returncode == 0 and "0 valid rows, 2 dead letters" in out.stderr, out.stderr
    doc = json.loads((tmp_path / "run" / "run.json").read_text())
    assert doc["initialized"] is False and "model" not in doc["files"] and doc["n_features"] == 0
    rep = _cli(tmp_path, "report", "run")
    assert rep.returncode == 0 and "no final model" in rep.stderr, rep.stderr


def test_a_group_config_without_a_dimension_replays_at_the_recordings_width(tmp_path):
    """The embedded demo's exemption from input.dimension (its producer's width) is for 'run'
    only: a replay of the same config takes the recording's width, not worker.demo_n_features."""
    X = _blobs(600)
    np.save(tmp_path / "x.npy", X)
    cfg = tmp_path / "nodim.toml"
    cfg.write_text("[model]\nn_clusters = 4\nseed = 0\n[group]\nenabled = true\nchunk_rows = 128\n"
                   "[worker]\ndemo_n_features = 8\n")
    out = _cli(tmp_path, "replay", "x.npy", "--config", str(cfg), "--out", "run")
    assert out.returncode == 0, out.stderr
    assert "replayed 600 records (600 valid rows, 0 dead letters)" in out.stderr
    assert load_model(tmp_path / "run" / "model").cluster_centers_.shape == (4, 3)

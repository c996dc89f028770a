"""Tests for streamkm.ops.metrics: naming conventions, bounded labels, helpers, promtool lint."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streamkm.codec import REASONS
from streamkm.ops.metrics import ALLOWED_LABELS, Metrics, ModelStats, WindowStats

REQUIRED = {
    "streamkm_records_consumed_total", "streamkm_records_clustered_total", "streamkm_records_dead_lettered_total",
    "streamkm_batch_objective", "streamkm_objective_ewma", "streamkm_centroid_shift", "streamkm_cluster_weight",
    "streamkm_reseeds_accepted_total", "streamkm_reseeds_rejected_total", "streamkm_dying_clusters_replaced_total",
    "streamkm_drift_detections_total", "streamkm_consumer_lag_records", "streamkm_last_checkpoint_timestamp_seconds",
    "streamkm_last_checkpoint_age_seconds", "streamkm_checkpoint_duration_seconds", "streamkm_checkpoint_size_bytes",
    "streamkm_commit_failures_total", "streamkm_rebalances_total", "streamkm_batch_processing_seconds",
    "streamkm_lstm_embed_seconds", "streamkm_windows_open", "streamkm_windows_evicted_total",
    "streamkm_windows_emitted_total", "streamkm_late_events_dropped_total", "streamkm_model_version",
    "streamkm_ready", "streamkm_build_info",
}


class FakeModel(SimpleNamespace):
    pass


def _model(k=3, **kw):
    base = dict(is_initialized_=True, counts_=np.arange(1, k + 1, dtype=np.float32), n_seen_=100, n_batches_=4,
                last_batch_objective_=2.5, ewm_objective_=2.0, last_center_shift_=0.125, n_reseeds_=0,
                n_reseeds_rejected_=0, n_dying_replaced_=0, cluster_centers_=np.zeros((k, 2)))
    base.update(kw)
    return FakeModel(**base)


def _model_stats(model) -> ModelStats:
    """A ModelStats from a StreamingKMeans-like test double (what the pipelines build from a model).

    Missing or non-numeric optional attributes become None (gauge left unset),
    missing counts 0; ``counts_`` is copied only when ``is_initialized_``.
    """
    def opt(attr: str) -> float | None:
        v = getattr(model, attr, None)
        if v is None or isinstance(v, bool):
            return None
        try:
            return float(v)
        except (TypeError, ValueError):
            return None

    counts = getattr(model, "counts_", None) if getattr(model, "is_initialized_", True) else None
    return ModelStats(
        n_seen=int(getattr(model, "n_seen_", 0) or 0),
        n_batches=int(getattr(model, "n_batches_", 0) or 0),
        last_batch_objective=opt("last_batch_objective_"),
        ewm_objective=opt("ewm_objective_"),
        last_center_shift=opt("last_center_shift_"),
        weights=None if counts is None else np.array(counts, dtype=np.float64).ravel(),
        n_reseeds=int(getattr(model, "n_reseeds_", 0) or 0),
        n_reseeds_rejected=int(getattr(model, "n_reseeds_rejected_", 0) or 0),
        n_dying_replaced=int(getattr(model, "n_dying_replaced_", 0) or 0),
    )


def _window_stats(windower) -> WindowStats:
    """A WindowStats from an EventWindower-like object."""
    return WindowStats(n_open_keys=int(windower.n_open_keys), n_open_events=int(windower.n_open_events),
                       n_emitted=int(windower.n_emitted_), n_late_dropped=int(windower.n_late_dropped_),
                       n_evicted=dict(windower.n_evicted_ or {}))


def _populated() -> Metrics:
    m = Metrics()
    m.init_pipeline("vectors", "in.vectors")
    m.init_pipeline("sequence", "in.events", windows=True)
    m.records_consumed.labels(pipeline="vectors", topic="in.vectors").inc(10)
    m.records_dead_lettered.labels(pipeline="vectors", reason="not_json").inc()
    m.observe_model("vectors", _model_stats(_model()))
    m.observe_windows("sequence", _window_stats(SimpleNamespace(
        n_open_keys=3, n_open_events=7, n_evicted_={"max_keys": 1}, n_late_dropped_=2, n_emitted_=5)))
    m.set_lag("in.vectors", 0, 42)
    m.checkpoint_written(0.05, 1234, timestamp=1000.0)
    m.batch_processing.labels(pipeline="vectors").observe(0.01)
    m.lstm_embed.observe(0.002)
    m.commit_failures.inc()
    m.rebalances.inc()
    m.set_ready(True)
    return m


def _families(m: Metrics):
    return {f.name: f for f in text_string_to_metric_families(m.exposition().decode())}


def _value(m: Metrics, name: str, **labels) -> float:
    for fam in text_string_to_metric_families(m.exposition().decode()):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError((name, labels))


def test_required_series_present():
    text = _populated().exposition().decode()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    missing = {n for n in REQUIRED if n not in names and n + "_count" not in names}
    assert not missing, missing


def test_naming_conventions_and_help():
    m = _populated()
    for fam in _families(m).values():
        assert fam.name.startswith("streamkm_"), fam.name
        assert fam.documentation and len(fam.documentation) > 15, f"{fam.name} has no proper HELP"
        assert not re.search(r"_(milli|micro|kilo|mega)", fam.name), fam.name
        for s in fam.samples:
            if fam.type == "counter" and not s.name.endswith("_created"):
                assert s.name.endswith("_total"), s.name
            if fam.type in ("gauge", "histogram"):
                assert not s.name.endswith("_total"), s.name
        if fam.type == "histogram":  # a unit: time, or a count of model versions (staleness)
            assert fam.name.endswith(("_seconds", "_versions")), fam.name


def test_labels_bounded():
    m = _populated()
    for fam in _families(m).values():
        for s in fam.samples:
            labels = set(s.labels) - {"le"}
            if fam.name in ("streamkm_build", "streamkm_build_info"):
                assert labels <= {"version", "python"}
                continue
            assert labels <= ALLOWED_LABELS, (s.name, labels)
            if "reason" in s.labels and fam.name == "streamkm_records_dead_lettered":
                assert s.labels["reason"] in REASONS
            if "pipeline" in s.labels:
                assert s.labels["pipeline"] in ("vectors", "sequence")


def test_registries_isolated():
    a, b = Metrics(), Metrics()
    a.commit_failures.inc(3)
    assert _value(a, "streamkm_commit_failures_total") == 3
    assert _value(b, "streamkm_commit_failures_total") == 0
    reg = CollectorRegistry()
    c = Metrics(reg)
    assert c.registry is reg


def test_observe_model_gauges_and_counter_deltas():
    m = Metrics()
    m.init_pipeline("vectors", "in.vectors")
    mod = _model(k=3, n_reseeds_=5, n_reseeds_rejected_=2, n_dying_replaced_=1)
    m.observe_model("vectors", _model_stats(mod), baseline=True)  # restored model: history not re-counted
    assert _value(m, "streamkm_reseeds_accepted_total", pipeline="vectors") == 0
    assert _value(m, "streamkm_cluster_weight", pipeline="vectors", cluster="2") == 3.0
    assert _value(m, "streamkm_batch_objective", pipeline="vectors") == 2.5
    assert _value(m, "streamkm_objective_ewma", pipeline="vectors") == 2.0
    assert _value(m, "streamkm_centroid_shift", pipeline="vectors") == 0.125
    assert _value(m, "streamkm_model_version", pipeline="vectors") == 4
    mod.n_reseeds_, mod.n_reseeds_rejected_, mod.n_dying_replaced_ = 7, 2, 4
    mod.counts_ = np.array([9.0, 8.0, 7.0])
    m.observe_model("vectors", _model_stats(mod))
    assert _value(m, "streamkm_reseeds_accepted_total", pipeline="vectors") == 2
    assert _value(m, "streamkm_reseeds_rejected_total", pipeline="vectors") == 0
    assert _value(m, "streamkm_dying_clusters_replaced_total", pipeline="vectors") == 3
    assert _value(m, "streamkm_cluster_weight", pipeline="vectors", cluster="0") == 9.0
    # k shrinks -> stale cluster series removed
    m.observe_model("vectors", _model_stats(_model(k=2, n_reseeds_=7, n_dying_replaced_=4)))
    with pytest.raises(KeyError):
        _value(m, "streamkm_cluster_weight", pipeline="vectors", cluster="2")
    assert _value(m, "streamkm_clusters", pipeline="vectors") == 2


def test_observe_model_uninitialized_and_bad_pipeline():
    m = Metrics()
    m.init_pipeline("sequence", "in.events")
    m.observe_model("sequence", _model_stats(FakeModel(is_initialized_=False, counts_=None, n_seen_=3,
                                                       last_batch_objective_=None)))
    assert _value(m, "streamkm_model_points", pipeline="sequence") == 3
    with pytest.raises(KeyError):
        _value(m, "streamkm_batch_objective", pipeline="sequence")
    with pytest.raises(ValueError, match="pipeline"):
        m.observe_model("user-123", _model_stats(_model()))


def test_observe_windower_deltas():
    m = Metrics()
    m.init_pipeline("sequence", "in.events", windows=True)
    w = SimpleNamespace(n_open_keys=3, n_open_events=10, n_evicted_={"max_keys": 2}, n_late_dropped_=1,
                        n_emitted_=4)
    m.observe_windows("sequence", _window_stats(w))
    w.n_evicted_ = {"max_keys": 5, "max_events": 1}
    w.n_emitted_, w.n_open_keys = 9, 1
    m.observe_windows("sequence", _window_stats(w))
    assert _value(m, "streamkm_windows_evicted_total", pipeline="sequence", reason="max_keys") == 5
    assert _value(m, "streamkm_windows_evicted_total", pipeline="sequence", reason="max_events") == 1
    assert _value(m, "streamkm_windows_emitted_total", pipeline="sequence") == 9
    assert _value(m, "streamkm_late_events_dropped_total", pipeline="sequence") == 1
    assert _value(m, "streamkm_windows_open", pipeline="sequence") == 1


def test_checkpoint_age_computed_at_scrape_time():
    now = [1000.0]
    m = Metrics(clock=lambda: now[0])
    now[0] = 1010.0
    assert _value(m, "streamkm_last_checkpoint_age_seconds") == 10.0  # since start, none yet
    m.checkpoint_written(0.2, 2048)
    now[0] = 1025.5
    assert _value(m, "streamkm_last_checkpoint_age_seconds") == 15.5
    assert _value(m, "streamkm_last_checkpoint_timestamp_seconds") == 1010.0
    assert _value(m, "streamkm_checkpoint_size_bytes") == 2048
    assert _value(m, "streamkm_checkpoint_duration_seconds_count") == 1


def test_lag_and_partition_removal():
    m = Metrics()
    m.set_lag("t", 3, 17)
    m.set_lag("t", 4, -5)  # clamped
    assert _value(m, "streamkm_consumer_lag_records", topic="t", partition="3") == 17
    assert _value(m, "streamkm_consumer_lag_records", topic="t", partition="4") == 0
    m.remove_partition("t", 3)
    with pytest.raises(KeyError):
        _value(m, "streamkm_consumer_lag_records", topic="t", partition="3")


def test_build_info_version():
    from streamkm import __version__

    assert _value(_populated(), "streamkm_build_info", version=__version__) == 1.0


def test_promtool_check_metrics(tmp_path):
    promtool = shutil.which("promtool") or ("/usr/bin/promtool" if os.path.exists("/usr/bin/promtool") else None)
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool not installed but CI is set")
        pytest.skip("promtool not installed")
    text = _populated().exposition()
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
    # and promtool does flag a bad exposition (the check is real)
    bad = b"# HELP streamkm_foo x\n# TYPE streamkm_foo counter\nstreamkm_foo 1\n"
    r = subprocess.run([promtool, "check", "metrics"], input=bad, capture_output=True, timeout=60)
    assert r.returncode != 0


def test_observe_real_model_and_windower():
    from streamkm.cluster.streaming_kmeans import StreamingKMeans
    from streamkm.sequence.windows import EventWindower

    rng = np.random.default_rng(0)
    km = StreamingKMeans(3, seed=0, reservoir_size=100)
    m = Metrics()
    m.init_pipeline("vectors", "in.vectors")
    m.init_pipeline("sequence", "in.events", windows=True)
    m.observe_model("vectors", _model_stats(km), baseline=True)  # not initialized yet: no weights, no error
    for _ in range(4):
        km.partial_fit(rng.normal(size=(50, 2)).astype(np.float32))
    m.observe_model("vectors", _model_stats(km))
    assert _value(m, "streamkm_model_version", pipeline="vectors") == km.n_batches_
    assert _value(m, "streamkm_model_points", pipeline="vectors") == km.n_seen_ == 200
    total = sum(_value(m, "streamkm_cluster_weight", pipeline="vectors", cluster=str(j)) for j in range(3))
    assert total == pytest.approx(float(np.sum(km.counts_)))
    assert _value(m, "streamkm_objective_ewma", pipeline="vectors") == pytest.approx(km.ewm_objective_)
    w = EventWindower(2, size=2, max_keys=1)
    w.add(["a", "b", "c"], np.array([1.0, 2.0, 3.0]), np.zeros((3, 2), np.float32))
    m.observe_windows("sequence", _window_stats(w))
    assert _value(m, "streamkm_windows_evicted_total", pipeline="sequence", reason="max_keys") == \
        w.n_evicted_["max_keys"] > 0
    assert _value(m, "streamkm_windows_open", pipeline="sequence") == w.n_open_keys


def _stats(weights=None, **kw) -> ModelStats:
    base = dict(n_seen=100, n_batches=4, last_batch_objective=2.5, ewm_objective=2.0, last_center_shift=0.125,
                weights=weights, n_reseeds=0, n_reseeds_rejected=0, n_dying_replaced=0)
    base.update(kw)
    return ModelStats(**base)


def test_snapshot_api_exports_the_same_as_the_model_adapter():
    a, b = Metrics(clock=lambda: 5.0), Metrics(clock=lambda: 5.0)
    for m in (a, b):
        m.init_pipeline("vectors", "in.vectors")
        m.init_pipeline("sequence", "in.events", windows=True)
    mod = _model(k=5, n_reseeds_=2)
    w = SimpleNamespace(n_open_keys=3, n_open_events=7, n_evicted_={"max_keys": 1}, n_late_dropped_=2,
                        n_emitted_=5)
    a.observe_model("vectors", _model_stats(mod), baseline=True)
    a.observe_windows("sequence", _window_stats(w), baseline=True)
    b.observe_model("vectors", _stats(np.arange(1, 6, dtype=np.float64), n_reseeds=2), baseline=True)
    b.observe_windows("sequence", WindowStats(3, 7, 5, 2, {"max_keys": 1}), baseline=True)
    mod.n_reseeds_, w.n_emitted_, w.n_evicted_ = 4, 8, {"max_keys": 3}
    a.observe_model("vectors", _model_stats(mod))
    a.observe_windows("sequence", _window_stats(w))
    b.observe_model("vectors", _stats(np.arange(1, 6, dtype=np.float64), n_reseeds=4))
    b.observe_windows("sequence", WindowStats(3, 7, 8, 2, {"max_keys": 3}))

    def text(m):  # creation timestamps differ
        return re.sub(r"(?m)^.*_created.*\n", "", m.exposition().decode())

    assert text(a) == text(b)
    assert _value(b, "streamkm_reseeds_accepted_total", pipeline="vectors") == 2
    assert _value(b, "streamkm_windows_evicted_total", pipeline="sequence", reason="max_keys") == 2


def test_any_registered_pipeline_name_and_unknown_names_rejected():
    m = Metrics()
    m.init_pipeline("clicks", "in.clicks")
    m.observe_model("clicks", _stats(np.array([1.0, 2.0])))
    assert _value(m, "streamkm_clusters", pipeline="clicks") == 2
    with pytest.raises(ValueError, match="'clicks'") as ei:
        m.observe_model("vectors", _stats())
    assert "init_pipeline" in str(ei.value)
    with pytest.raises(ValueError, match="unknown pipeline"):
        m.observe_windows("sequence", WindowStats(0, 0, 0, 0, {}))


def test_init_pipeline_windows_flag_precreates_window_series():
    m = Metrics()
    m.init_pipeline("a", "ta")
    m.init_pipeline("b", "tb", windows=True, reasons=("bad",))
    assert _value(m, "streamkm_windows_open", pipeline="b") == 0
    assert _value(m, "streamkm_windows_emitted_total", pipeline="b") == 0
    with pytest.raises(KeyError):
        _value(m, "streamkm_windows_open", pipeline="a")
    assert _value(m, "streamkm_records_dead_lettered_total", pipeline="b", reason="bad") == 0
    with pytest.raises(KeyError):
        _value(m, "streamkm_records_dead_lettered_total", pipeline="b", reason="not_json")


def test_cluster_weights_are_read_at_scrape_time_from_the_last_snapshot():
    m = Metrics()
    m.init_pipeline("vectors", "in.vectors")
    w = np.linspace(0.0, 1.0, 4096)
    m.observe_model("vectors", _stats(w))
    fam = _families(m)["streamkm_cluster_weight"]
    assert [s.labels["cluster"] for s in fam.samples] == [str(j) for j in range(4096)]
    assert [s.value for s in fam.samples] == w.tolist()
    assert _value(m, "streamkm_clusters", pipeline="vectors") == 4096
    # an uninitialized snapshot keeps the last weights (as the old gauges did)
    m.observe_model("vectors", _stats(None, last_batch_objective=None))
    assert _value(m, "streamkm_clusters", pipeline="vectors") == 4096
    # HELP and TYPE are exported before any model has weights
    text = Metrics().exposition().decode()
    assert "# TYPE streamkm_cluster_weight gauge" in text and "# TYPE streamkm_clusters gauge" in text


def test_scrapes_from_another_thread_see_consistent_snapshots():
    m = Metrics()
    m.init_pipeline("vectors", "in.vectors")
    m.init_pipeline("sequence", "in.events")
    stop = threading.Event()
    problems: list[str] = []

    def scrape():
        while not stop.is_set():
            fams = _families(m)
            for p in ("vectors", "sequence"):
                n = sum(1 for s in fams["streamkm_cluster_weight"].samples if s.labels["pipeline"] == p)
                k = [s.value for s in fams["streamkm_clusters"].samples if s.labels["pipeline"] == p]
                if k and k[0] != n:
                    problems.append(f"{p}: k={k[0]} but {n} weights")

    t = threading.Thread(target=scrape)
    t.start()
    try:
        rng = np.random.default_rng(0)
        for i in range(300):
            k = int(rng.integers(1, 64))
            m.observe_model("vectors" if i % 2 else "sequence", _stats(rng.random(k)))
    finally:
        stop.set()
        t.join(30)
    assert not problems, problems[:3]

"""Tests for streamkm.ops.metrics: naming conventions, bounded labels, helpers, promtool lint."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streamkm.codec import REASONS
from streamkm.ops.metrics import ALLOWED_LABELS, Metrics

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


def _populated() -> Metrics:
    m = Metrics()
    m.init_pipeline("vectors", "in.vectors")
    m.init_pipeline("sequence", "in.events")
    m.records_consumed.labels(pipeline="vectors", topic="in.vectors").inc(10)
    m.records_dead_lettered.labels(pipeline="vectors", reason="not_json").inc()
    m.observe_model("vectors", _model())
    m.observe_windower("sequence", SimpleNamespace(n_open_keys=3, n_open_events=7, n_evicted_={"max_keys": 1},
                                                   n_late_dropped_=2, n_emitted_=5))
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
        if fam.type == "histogram":
            assert fam.name.endswith("_seconds"), fam.name


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
    mod = _model(k=3, n_reseeds_=5, n_reseeds_rejected_=2, n_dying_replaced_=1)
    m.observe_model("vectors", mod, baseline=True)  # restored model: history not re-counted
    assert _value(m, "streamkm_reseeds_accepted_total", pipeline="vectors") == 0
    assert _value(m, "streamkm_cluster_weight", pipeline="vectors", cluster="2") == 3.0
    assert _value(m, "streamkm_batch_objective", pipeline="vectors") == 2.5
    assert _value(m, "streamkm_objective_ewma", pipeline="vectors") == 2.0
    assert _value(m, "streamkm_centroid_shift", pipeline="vectors") == 0.125
    assert _value(m, "streamkm_model_version", pipeline="vectors") == 4
    mod.n_reseeds_, mod.n_reseeds_rejected_, mod.n_dying_replaced_ = 7, 2, 4
    mod.counts_ = np.array([9.0, 8.0, 7.0])
    m.observe_model("vectors", mod)
    assert _value(m, "streamkm_reseeds_accepted_total", pipeline="vectors") == 2
    assert _value(m, "streamkm_reseeds_rejected_total", pipeline="vectors") == 0
    assert _value(m, "streamkm_dying_clusters_replaced_total", pipeline="vectors") == 3
    assert _value(m, "streamkm_cluster_weight", pipeline="vectors", cluster="0") == 9.0
    # k shrinks -> stale cluster series removed
    m.observe_model("vectors", _model(k=2, n_reseeds_=7, n_dying_replaced_=4))
    with pytest.raises(KeyError):
        _value(m, "streamkm_cluster_weight", pipeline="vectors", cluster="2")
    assert _value(m, "streamkm_clusters", pipeline="vectors") == 2


def test_observe_model_uninitialized_and_bad_pipeline():
    m = Metrics()
    m.observe_model("sequence", FakeModel(is_initialized_=False, counts_=None, n_seen_=3,
                                          last_batch_objective_=None))
    assert _value(m, "streamkm_model_points", pipeline="sequence") == 3
    with pytest.raises(KeyError):
        _value(m, "streamkm_batch_objective", pipeline="sequence")
    with pytest.raises(ValueError, match="pipeline"):
        m.observe_model("user-123", _model())


def test_observe_windower_deltas():
    m = Metrics()
    w = SimpleNamespace(n_open_keys=3, n_open_events=10, n_evicted_={"max_keys": 2}, n_late_dropped_=1,
                        n_emitted_=4)
    m.observe_windower("sequence", w)
    w.n_evicted_ = {"max_keys": 5, "max_events": 1}
    w.n_emitted_, w.n_open_keys = 9, 1
    m.observe_windower("sequence", w)
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
    m.observe_model("vectors", km, baseline=True)  # not initialized yet: no weights, no error
    for _ in range(4):
        km.partial_fit(rng.normal(size=(50, 2)).astype(np.float32))
    m.observe_model("vectors", km)
    assert _value(m, "streamkm_model_version", pipeline="vectors") == km.n_batches_
    assert _value(m, "streamkm_model_points", pipeline="vectors") == km.n_seen_ == 200
    total = sum(_value(m, "streamkm_cluster_weight", pipeline="vectors", cluster=str(j)) for j in range(3))
    assert total == pytest.approx(float(np.sum(km.counts_)))
    assert _value(m, "streamkm_objective_ewma", pipeline="vectors") == pytest.approx(km.ewm_objective_)
    w = EventWindower(2, size=2, max_keys=1)
    w.add(["a", "b", "c"], np.array([1.0, 2.0, 3.0]), np.zeros((3, 2), np.float32))
    m.observe_windower("sequence", w)
    assert _value(m, "streamkm_windows_evicted_total", pipeline="sequence", reason="max_keys") == \
        w.n_evicted_["max_keys"] > 0
    assert _value(m, "streamkm_windows_open", pipeline="sequence") == w.n_open_keys

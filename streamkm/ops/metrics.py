"""Every Prometheus metric of the daemon, in one place.

:class:`Metrics` owns a :class:`prometheus_client.CollectorRegistry` (a fresh
one per instance unless one is passed, so tests and several workers in one
process stay isolated) and exposes each metric as an attribute. Conventions:
``streamkm_`` prefix, base units as suffix (``_seconds``, ``_bytes``), counters
end in ``_total``, and the only labels are ``pipeline`` (any name registered
with :meth:`Metrics.init_pipeline`), ``topic``, ``partition``, ``reason`` (a
bounded enum such as :data:`streamkm.codec.REASONS`), ``cluster``
(``0 .. k-1``) and ``consumergroup`` (the worker's one ``kafka.group_id``, named
as kafka_exporter names it, on the per-partition consumer series).

A pipeline publishes its model once per batch as an immutable snapshot,
:class:`ModelStats` (and :class:`WindowStats` for an event windower), with
:meth:`Metrics.observe_model` / :meth:`Metrics.observe_windows`. The estimators
keep *cumulative* counts in their state (restored from checkpoints); the
helpers turn them into counter increments by differencing. Call them once with
``baseline=True`` right after creating or restoring the estimator so events
that happened before this process are not counted again. The per-cluster
weights are not stored in labelled gauges: a custom collector yields them at
scrape time from the last snapshot (k can be thousands).

Examples
--------
>>> m = Metrics()
>>> m.init_pipeline("vectors", "in.vectors")
>>> m.records_consumed.labels(pipeline="vectors", topic="in.vectors").inc(3)
>>> m.observe_model("vectors", ModelStats(
...     n_seen=3, n_batches=1, last_batch_objective=0.5, ewm_objective=0.5, last_center_shift=0.0,
...     weights=np.array([2.0, 1.0]), n_reseeds=0, n_reseeds_rejected=0, n_dying_replaced=0))
>>> text = m.exposition().decode()
>>> 'streamkm_cluster_weight{cluster="1",pipeline="vectors"} 1.0' in text
True
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from streamkm.ops.stats import ModelStats, WindowStats

__all__ = ["Metrics", "ModelStats", "WindowStats", "ALLOWED_LABELS"]

#: The only label names any streamkm metric may use (besides build_info's).
ALLOWED_LABELS = frozenset({"pipeline", "topic", "partition", "reason", "cluster", "consumergroup"})

_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_CKPT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _ClusterCollector(Collector):
    """``streamkm_cluster_weight`` and ``streamkm_clusters``, yielded at scrape time.

    Holds, per pipeline, the weights array of its last initialized
    :class:`ModelStats`. The mapping is replaced (copy on write), never
    mutated, so a scrape on another thread reads one consistent snapshot.
    """

    WEIGHT = ("streamkm_cluster_weight", "Decayed weight (point count) of each cluster.")
    CLUSTERS = ("streamkm_clusters", "Number of clusters k of the model.")

    def __init__(self) -> None:
        self._weights: Mapping[str, np.ndarray] = {}

    def set_weights(self, pipeline: str, weights: np.ndarray) -> None:
        self._weights = {**self._weights, pipeline: weights}

    def describe(self) -> Iterator[Metric]:
        # names only, so the registry rejects duplicates without collecting
        yield GaugeMetricFamily(*self.WEIGHT, labels=("pipeline", "cluster"))
        yield GaugeMetricFamily(*self.CLUSTERS, labels=("pipeline",))

    def collect(self) -> Iterator[Metric]:
        snapshot = self._weights
        weight = GaugeMetricFamily(*self.WEIGHT, labels=("pipeline", "cluster"))
        clusters = GaugeMetricFamily(*self.CLUSTERS, labels=("pipeline",))
        for pipeline, w in snapshot.items():
            for j, wj in enumerate(w.tolist()):
                weight.add_metric((pipeline, str(j)), wj)
            clusters.add_metric((pipeline,), float(w.shape[0]))
        yield weight
        yield clusters


class Metrics:
    """All streamkm metrics, registered in one registry.

    Parameters
    ----------
    registry : prometheus_client.CollectorRegistry, optional
        Where to register; default a new, private registry (expose it with
        :meth:`exposition` or ``streamkm.ops.http.HealthServer(metrics)``).
    clock : callable, optional
        Wall clock (``time.time``) used for the checkpoint age; injectable for
        tests.
    consumer_group : str, optional
        The ``consumergroup`` label of the per-partition consumer series (default
        empty until :meth:`set_consumer_group`).

    Attributes
    ----------
    registry : CollectorRegistry
    records_consumed : Counter (pipeline, topic)
        Records fetched from Kafka, good or bad.
    records_clustered : Counter (pipeline)
        Records whose vectors (or events) were fed to the model.
    vectors_clustered : Counter (pipeline)
        Rows fed to the StreamingKMeans (vectors or window embeddings).
    records_dead_lettered : Counter (pipeline, reason)
    dlq_failures : Counter (pipeline)
    output_records : Counter (pipeline)
    batch_objective, objective_ewma, centroid_shift : Gauge (pipeline)
    cluster_stats : Collector
        Yields ``streamkm_cluster_weight`` (pipeline, cluster) and
        ``streamkm_clusters`` (pipeline) at scrape time from the last
        :class:`ModelStats` with weights.
    model_points : Gauge (pipeline)
    model_version : Gauge (pipeline)
    reseeds_accepted, reseeds_rejected, dying_clusters_replaced : Counter (pipeline)
    drift_detections : Counter (pipeline)
    consumer_lag : Gauge (consumergroup, topic, partition)
    offset_beyond_end : Gauge (consumergroup, topic, partition)
        Records by which the next offset to process lies beyond the partition's
        log end (0 when it does not): a checkpoint restored against a broker
        whose log is shorter (a new broker, a recreated topic).
    assigned_partitions : Gauge
    last_checkpoint_timestamp, last_checkpoint_age : Gauge
    checkpoint_duration : Histogram
    checkpoint_size : Gauge
    checkpoints, checkpoint_failures : Counter
    commits, commit_failures, rebalances, broker_errors : Counter
    batch_processing : Histogram (pipeline)
    lstm_embed : Histogram
    windows_open, window_events_open : Gauge (pipeline)
    windows_evicted : Counter (pipeline, reason)
    windows_emitted, late_events_dropped : Counter (pipeline)
    ready : Gauge
    build_info : Info (version, python)
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, clock: Callable[[], float] = time.time,
                 consumer_group: str = ""):
        self.registry = CollectorRegistry() if registry is None else registry
        self._clock = clock
        self.consumer_group = str(consumer_group)
        self._started = clock()
        self._last_ckpt: float | None = None
        self._pipelines: dict[str, str] = {}  # registered pipeline -> input topic
        self._model_seen: dict[str, dict[str, int]] = {}
        self._win_seen: dict[str, dict[str, int]] = {}
        r = self.registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labelnames=labels, registry=r)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labelnames=labels, registry=r)

        # --- records
        self.records_consumed = counter(
            "streamkm_records_consumed", "Kafka records fetched from an input topic (valid or not).",
            ("pipeline", "topic"))
        self.records_clustered = counter(
            "streamkm_records_clustered", "Input records whose vectors or events reached the model.",
            ("pipeline",))
        self.vectors_clustered = counter(
            "streamkm_vectors_clustered",
            "Vectors fed to the pipeline's streaming k-means (input rows or window embeddings).",
            ("pipeline",))
        self.records_dead_lettered = counter(
            "streamkm_records_dead_lettered",
            "Records rejected by decoding or validation and sent to the dead-letter topic, by reason.",
            ("pipeline", "reason"))
        self.dlq_failures = counter(
            "streamkm_dlq_failures", "Failed attempts to write a record to the dead-letter topic.",
            ("pipeline",))
        self.output_records = counter(
            "streamkm_output_records", "Assignment records written to the output topic.", ("pipeline",))
        # --- model
        self.batch_objective = gauge(
            "streamkm_batch_objective",
            "Prequential objective of the last batch: mean squared distance to the nearest centroid "
            "before the update.", ("pipeline",))
        self.objective_ewma = gauge(
            "streamkm_objective_ewma", "Exponentially weighted moving average of the batch objective.",
            ("pipeline",))
        self.centroid_shift = gauge(
            "streamkm_centroid_shift",
            "Largest Euclidean distance any centroid moved in the last update.", ("pipeline",))
        # registered here so the exposition keeps its family order
        self.cluster_stats = _ClusterCollector()
        r.register(self.cluster_stats)
        self.model_points = gauge(
            "streamkm_model_points", "Points the model has seen over its whole life (from its state).",
            ("pipeline",))
        self.model_version = gauge(
            "streamkm_model_version",
            "Model version: number of mini-batch updates applied over the model's life.", ("pipeline",))
        self.reseeds_accepted = counter(
            "streamkm_reseeds_accepted", "Reservoir reseeds that improved the objective and were kept.",
            ("pipeline",))
        self.reseeds_rejected = counter(
            "streamkm_reseeds_rejected", "Reservoir reseeds discarded for insufficient gain.", ("pipeline",))
        self.dying_clusters_replaced = counter(
            "streamkm_dying_clusters_replaced",
            "Clusters whose weight fell below the dying threshold and were re-placed.", ("pipeline",))
        self.drift_detections = counter(
            "streamkm_drift_detections", "Drift detected on the batch objective series.", ("pipeline",))
        # --- group model (group.enabled)
        self.group_stats_messages = counter(
            "streamkm_group_stats_messages",
            "Chunk statistics messages read by the reducer, by outcome (reason: accepted, duplicate, overlap, "
            "gap, invalid).", ("pipeline", "reason"))
        self.group_stats_sent = counter(
            "streamkm_group_stats_sent", "Chunk statistics messages this worker produced to the stats topic.",
            ("pipeline",))
        self.group_realignments = counter(
            "streamkm_group_realignments",
            "Partitions this worker re-sought to the model's offset because its statistics were not folded.",
            ("pipeline",))
        self.group_reducer = gauge(
            "streamkm_group_reducer", "1 while this member holds the pipeline's stats partition (is its reducer).",
            ("pipeline",))
        self.group_in_flight = gauge(
            "streamkm_group_in_flight", "Statistics messages sent and not yet reflected in a model version.",
            ("pipeline",))
        self.group_round_queue = gauge(
            "streamkm_group_round_queue_messages",
            "group.ordering = rounds: statistics messages the reducer holds until every partition has sent "
            "its chunk of the round.", ("pipeline",))
        self.group_idle_partitions = counter(
            "streamkm_group_idle_partitions",
            "group.ordering = rounds: partitions declared idle (no chunk for group.idle_partition_seconds while "
            "others waited); from then on the model depends on timing.", ("pipeline",))
        self.group_partial_chunks = counter(
            "streamkm_group_partial_chunks",
            "group.ordering = rounds: partial chunks this member cut after half of group.idle_partition_seconds "
            "without records (mid-stream, a replay cuts there only if the recording ends there).", ("pipeline",))
        self.records_lost = counter(
            "streamkm_records_lost",
            "Records the model needed that the broker had deleted (retention) when their partition resumed, "
            "skipped under kafka.on_offsets_lost = skip.")
        self.model_rollbacks = counter(
            "streamkm_model_rollbacks",
            "Per-worker model: times a failed revoke checkpoint rolled the model and offsets back to the "
            "last durable checkpoint (the records after it are re-read by their partitions' next owners).")
        self.group_window_restores = counter(
            "streamkm_group_window_restores",
            "Sequence pipeline on the group model: partitions started with the open windows their previous "
            "owner left (outcome=restored), or without them because that state was missing or unusable "
            "(outcome=lost: those windows' events are not in the model).", ("pipeline", "outcome"))
        self.group_versions_published = counter(
            "streamkm_group_versions_published", "Model versions this member published as the reducer.",
            ("pipeline",))
        self.group_snapshot_failures = counter(
            "streamkm_group_snapshot_failures",
            "Reducer snapshots that could not be published (recovery then replays more of the stats log).",
            ("pipeline",))
        self.group_staleness_versions = Histogram(
            "streamkm_group_staleness_versions",
            "Versions between the one a chunk was summarised against and the one it was folded into (0 with "
            "group.ordering = rounds: rows are assigned by the fold itself).",
            labelnames=("pipeline",), buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.group_version_delay = Histogram(
            "streamkm_group_version_delay_seconds",
            "Seconds from a version's publication by the reducer to its use by this worker.",
            labelnames=("pipeline",), buckets=_FAST_BUCKETS, registry=r)
        self.group_version_age = gauge(
            "streamkm_group_version_age_seconds",
            "Seconds since the reducer published the model version this worker uses (how far behind it is); "
            "grows when the reducer is down or idle.", ("pipeline",))
        self.cluster_transitions = counter(
            "streamkm_cluster_transitions",
            "Cluster identity transitions at reseeds and replacements (reason: survived, moved, born, retired, "
            "split, absorbed).", ("pipeline", "reason"))
        # --- kafka
        self.consumer_lag = gauge(
            "streamkm_consumer_lag_records",
            "Records between the partition's high watermark and the next offset to process.",
            ("consumergroup", "topic", "partition"))
        self.offset_beyond_end = gauge(
            "streamkm_checkpoint_offset_beyond_end_records",
            "Records by which the next offset to process (restored from a checkpoint or a commit) lies beyond "
            "the partition's log end, 0 if it does not; records below that offset are skipped.",
            ("consumergroup", "topic", "partition"))
        self.assigned_partitions = gauge(
            "streamkm_assigned_partitions", "Partitions currently assigned to this worker.")
        self.commits = counter("streamkm_commits", "Successful Kafka offset commits.")
        self.commit_failures = counter("streamkm_commit_failures", "Failed Kafka offset commits.")
        self.rebalances = counter(
            "streamkm_rebalances", "Consumer group rebalances seen (partition assignments received).")
        self.broker_errors = counter(
            "streamkm_broker_errors", "Errors talking to the broker that led to a retry with backoff.")
        # --- checkpoints
        self.checkpoints = counter("streamkm_checkpoints", "Checkpoints written successfully.")
        self.checkpoint_failures = counter("streamkm_checkpoint_failures", "Checkpoint writes that failed.")
        self.checkpoint_duration = Histogram(
            "streamkm_checkpoint_duration_seconds", "Time to write a checkpoint durably (serialize, fsync, rename).",
            buckets=_CKPT_BUCKETS, registry=r)
        self.checkpoint_size = gauge("streamkm_checkpoint_size_bytes", "Size of the last checkpoint on disk.")
        self.last_checkpoint_timestamp = gauge(
            "streamkm_last_checkpoint_timestamp_seconds",
            "Unix time of the last successful checkpoint (0 if none yet).")
        self.last_checkpoint_age = gauge(
            "streamkm_last_checkpoint_age_seconds",
            "Seconds since the last successful checkpoint (since process start if none yet); "
            "computed at scrape time.")
        self.last_checkpoint_age.set_function(self._checkpoint_age)
        # --- processing
        self.batch_processing = Histogram(
            "streamkm_batch_processing_seconds",
            "Time to process one fetched batch in a pipeline (decode, update, predict, output).",
            labelnames=("pipeline",), buckets=_FAST_BUCKETS, registry=r)
        self.lstm_embed = Histogram(
            "streamkm_lstm_embed_seconds", "Time to embed one batch of ready windows with the LSTM.",
            buckets=_FAST_BUCKETS, registry=r)
        # --- windows
        self.windows_open = gauge("streamkm_windows_open", "Keys with an open event window.", ("pipeline",))
        self.window_events_open = gauge(
            "streamkm_window_events_open", "Events buffered in open windows.", ("pipeline",))
        self.windows_evicted = counter(
            "streamkm_windows_evicted", "Open windows evicted before closing, by reason.", ("pipeline", "reason"))
        self.windows_emitted = counter(
            "streamkm_windows_emitted", "Windows closed and handed to the embedder.", ("pipeline",))
        self.late_events_dropped = counter(
            "streamkm_late_events_dropped", "Events older than the watermark minus the allowed lateness.",
            ("pipeline",))
        # --- lifecycle
        self.ready = gauge("streamkm_ready", "1 when partitions are assigned, the model is restored and "
                                             "the worker is fetching, else 0.")
        self.build_info = Info("streamkm_build", "streamkm build information.", registry=r)
        from streamkm import __version__

        self.build_info.info({"version": str(__version__), "python": platform.python_version()})

    # ------------------------------------------------------------------ pipelines
    def init_pipeline(self, pipeline: str, topic: str, *, reasons: tuple[str, ...] | None = None,
                      windows: bool = False) -> None:
        """Register a pipeline and create its labelled series at 0 (exported before the first event).

        Parameters
        ----------
        pipeline : str
            The pipeline's name (its ``pipeline`` label value).
        topic : str
            Its input topic.
        reasons : tuple of str, optional
            Dead-letter reasons to pre-create; default :data:`streamkm.codec.REASONS`.
        windows : bool
            Also pre-create the window series (pipelines with an event windower).
        """
        if not isinstance(pipeline, str) or not pipeline:
            raise ValueError(f"pipeline must be a non-empty string, got {pipeline!r}")
        if reasons is None:
            from streamkm.codec import REASONS

            reasons = tuple(REASONS)
        self._pipelines[pipeline] = topic
        self.records_consumed.labels(pipeline=pipeline, topic=topic)
        for c in (self.records_clustered, self.vectors_clustered, self.dlq_failures, self.output_records,
                  self.reseeds_accepted, self.reseeds_rejected, self.dying_clusters_replaced,
                  self.drift_detections):
            c.labels(pipeline=pipeline)
        for reason in reasons:
            self.records_dead_lettered.labels(pipeline=pipeline, reason=reason)
        self.batch_processing.labels(pipeline=pipeline)
        if windows:
            for w in (self.windows_emitted, self.late_events_dropped, self.windows_open, self.window_events_open):
                w.labels(pipeline=pipeline)

    def init_group(self, pipeline: str, *, outcomes: tuple[str, ...], transitions: tuple[str, ...]) -> None:
        """Create a pipeline's group-model series (group.enabled) before the first event."""
        self._check_pipeline(pipeline)
        for reason in outcomes:
            self.group_stats_messages.labels(pipeline=pipeline, reason=reason)
        for kind in transitions:
            self.cluster_transitions.labels(pipeline=pipeline, reason=kind)
        for series in (self.group_stats_sent, self.group_realignments, self.group_versions_published,
                       self.group_snapshot_failures, self.group_in_flight, self.group_version_age):
            series.labels(pipeline=pipeline)
        self.group_reducer.labels(pipeline=pipeline).set(0)
        if pipeline == "sequence":
            for outcome in ("restored", "lost"):
                self.group_window_restores.labels(pipeline=pipeline, outcome=outcome)

    def observe_model(self, pipeline: str, stats: ModelStats, *, baseline: bool = False) -> None:
        """Update the model gauges and counters from a :class:`ModelStats` snapshot.

        Parameters
        ----------
        pipeline : str
            A pipeline registered with :meth:`init_pipeline`.
        stats : ModelStats
            The model's state after the batch. ``None`` objectives leave their
            gauges unset; ``weights=None`` (not initialized) keeps the last
            exported weights.
        baseline : bool
            Record the model's cumulative counts as the starting point without
            incrementing counters (call after creating or restoring a model).
        """
        self._check_pipeline(pipeline)
        for v, g in ((stats.last_batch_objective, self.batch_objective), (stats.ewm_objective, self.objective_ewma),
                     (stats.last_center_shift, self.centroid_shift), (stats.n_seen, self.model_points),
                     (stats.n_batches, self.model_version)):
            if v is not None:
                g.labels(pipeline=pipeline).set(float(v))
        if stats.weights is not None:
            self.cluster_stats.set_weights(pipeline, stats.weights)
        seen = self._model_seen.setdefault(pipeline, {})
        for key, v, c in (("n_reseeds", stats.n_reseeds, self.reseeds_accepted),
                          ("n_reseeds_rejected", stats.n_reseeds_rejected, self.reseeds_rejected),
                          ("n_dying_replaced", stats.n_dying_replaced, self.dying_clusters_replaced)):
            self._count(c.labels(pipeline=pipeline), seen, key, int(v), baseline)

    def observe_windows(self, pipeline: str, stats: WindowStats, *, baseline: bool = False) -> None:
        """Update the window gauges and counters from a :class:`WindowStats` snapshot.

        ``pipeline`` and ``baseline`` as in :meth:`observe_model`.
        """
        self._check_pipeline(pipeline)
        self.windows_open.labels(pipeline=pipeline).set(float(stats.n_open_keys))
        self.window_events_open.labels(pipeline=pipeline).set(float(stats.n_open_events))
        seen = self._win_seen.setdefault(pipeline, {})
        self._count(self.late_events_dropped.labels(pipeline=pipeline), seen, "n_late_dropped",
                    int(stats.n_late_dropped), baseline)
        self._count(self.windows_emitted.labels(pipeline=pipeline), seen, "n_emitted", int(stats.n_emitted),
                    baseline)
        for reason, v in dict(stats.n_evicted).items():
            self._count(self.windows_evicted.labels(pipeline=pipeline, reason=str(reason)), seen,
                        f"evicted:{reason}", int(v), baseline)

    # ------------------------------------------------------------------ service
    def set_consumer_group(self, group: str) -> None:
        """Set the ``consumergroup`` label of the per-partition series (one group per worker).

        A different group drops the series labelled with the previous one, so the
        label keeps a single value.
        """
        group = str(group)
        if group != self.consumer_group:
            self.consumer_lag.clear()
            self.offset_beyond_end.clear()
            self.consumer_group = group

    def set_lag(self, topic: str, partition: int, lag: float) -> None:
        """Set the consumer lag of one partition: its high watermark minus the next offset (records).

        A negative *lag* (the next offset lies beyond the log end) is exported as lag 0
        and as ``streamkm_checkpoint_offset_beyond_end_records``.
        """
        labels = dict(consumergroup=self.consumer_group, topic=topic, partition=str(int(partition)))
        lag = float(lag)
        self.consumer_lag.labels(**labels).set(max(0.0, lag))
        self.offset_beyond_end.labels(**labels).set(max(0.0, -lag))

    def remove_partition(self, topic: str, partition: int) -> None:
        """Drop the per-partition series of a revoked partition."""
        for g in (self.consumer_lag, self.offset_beyond_end):
            try:
                g.remove(self.consumer_group, topic, str(int(partition)))
            except KeyError:
                pass

    def checkpoint_written(self, duration_seconds: float, size_bytes: int, timestamp: float | None = None) -> None:
        """Record a successful checkpoint (duration, size, time)."""
        ts = self._clock() if timestamp is None else float(timestamp)
        self.checkpoints.inc()
        self.checkpoint_duration.observe(float(duration_seconds))
        self.checkpoint_size.set(float(size_bytes))
        self.last_checkpoint_timestamp.set(ts)
        self._last_ckpt = ts

    def set_ready(self, ready: bool) -> None:
        """Set the readiness gauge."""
        self.ready.set(1.0 if ready else 0.0)

    def exposition(self) -> bytes:
        """The registry in Prometheus text format 0.0.4."""
        return generate_latest(self.registry)

    # ------------------------------------------------------------------ private
    def _check_pipeline(self, pipeline: str) -> None:
        if pipeline not in self._pipelines:
            raise ValueError(f"unknown pipeline {pipeline!r}: register it with init_pipeline() first "
                             f"(known: {', '.join(map(repr, self._pipelines)) or 'none'})")

    @staticmethod
    def _count(child: Any, seen: dict[str, int], key: str, value: int, baseline: bool) -> None:
        """Increment a counter child by how much a cumulative count grew since it was last seen."""
        if not baseline:
            delta = value - seen.get(key, 0)
            if delta > 0:
                child.inc(delta)
        seen[key] = value

    def _checkpoint_age(self) -> float:
        ref = self._started if self._last_ckpt is None else self._last_ckpt
        return max(0.0, self._clock() - ref)

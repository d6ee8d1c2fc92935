"""Prometheus metrics of one worker process (prefix ``events_worker_``).

One :class:`Metrics` object per process (or per test) owns its own
``CollectorRegistry``: nothing is registered at import time, so tests build
as many as they like. The pipeline receives it as a parameter and records
per *batch*, never per event, except :meth:`Metrics.events_committed`,
which samples at most :data:`COMMIT_LAG_SAMPLES` events a batch.

Label sets are fixed and small: stage, table, reason, kind, state, and
topic/partition for the consumer lag (bounded by the partition count).
Never a tenant, customer or event id.

The deploy tests check that alert rules and dashboards only use the sample
names a fresh :class:`Metrics` exposes (``tests/metric_names.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from worker import __version__
from worker.domain.catalog_index import CatalogIndex, UnresolvedReason
from worker.domain.rating import VALUE_OUT_OF_RANGE, Outcome
from worker.domain.validation import InvalidReason

PREFIX = "events_worker"

#: Pipeline stages timed per batch (``stage`` label).
STAGES = ("prepare", "write", "dead_letters", "commit")
#: Tables the usage pipeline inserts into (``table`` label).
TABLES = ("raw_events", "processed_events")
#: Dead-letter reasons: every validation reason, a message without a value, and
#: a valid event whose priced values do not fit the stored columns.
DLQ_REASONS = (*(reason.value for reason in InvalidReason), "empty_message", VALUE_OUT_OF_RANGE)
#: Dedup outcomes that are duplicates (``kind`` label); ``counted`` is not one.
DUPLICATE_KINDS = tuple(o.value for o in Outcome if o is not Outcome.COUNTED)
#: Catalog entity kinds (``kind`` label).
CATALOG_KINDS = ("customer", "line_item", "feature")
#: Reprocess request states (``state`` label).
REPROCESS_STATES = ("pending", "running", "completed", "failed")
#: Rebalance callbacks (``kind`` label).
REBALANCE_KINDS = ("assign", "revoke", "lost")
#: At most this many events per batch feed the event-time-to-commit histogram.
COMMIT_LAG_SAMPLES = 200

_SIZE_BUCKETS = (1, 10, 100, 500, 1_000, 2_500, 5_000, 10_000, 20_000, 50_000, 100_000)
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3_600, 21_600, 86_400)


class _Declare:
    """Declares metrics named ``events_worker_<suffix>`` in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def counter(self, suffix: str, doc: str, *, labels: Sequence[str] = ()) -> Counter:
        return Counter(f"{PREFIX}_{suffix}", doc, labels, registry=self._registry)

    def gauge(self, suffix: str, doc: str, *, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(f"{PREFIX}_{suffix}", doc, labels, registry=self._registry)

    def histogram(
        self, suffix: str, doc: str, *, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> Histogram:
        return Histogram(
            f"{PREFIX}_{suffix}", doc, labels, buckets=buckets, registry=self._registry
        )


class ReprocessMetrics:
    """Progress of reprocess requests, for the reprocess consumer to call.

    Gauges carry only a request-state label (never a request id).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        new = _Declare(registry)
        self.requests = new.gauge(
            "reprocess_requests",
            "Reprocess requests known to this worker, by state.",
            labels=("state",),
        )
        self.events = new.gauge(
            "reprocess_events",
            "Events of the requests in each state: found so far, republished when completed.",
            labels=("state",),
        )
        self.republished = new.counter(
            "reprocess_events_republished", "Unprocessed events re-published to the events topic."
        )
        self.last_progress = new.gauge(
            "reprocess_last_progress_timestamp_seconds",
            "Unix time a reprocess request last advanced its cursor.",
        )
        for state in REPROCESS_STATES:
            self.requests.labels(state).set(0)
            self.events.labels(state).set(0)

    def set_requests(
        self, counts: Mapping[str, int], events: Mapping[str, int] | None = None
    ) -> None:
        """Replace the per-state request (and optionally event) counts.

        States outside :data:`REPROCESS_STATES` raise ``ValueError``: the label
        set stays fixed.
        """
        for state in (*counts, *(events or {})):
            if state not in REPROCESS_STATES:
                raise ValueError(f"unknown reprocess state {state!r}")
        for state in REPROCESS_STATES:
            self.requests.labels(state).set(counts.get(state, 0))
            if events is not None:
                self.events.labels(state).set(events.get(state, 0))

    def republished_events(self, count: int) -> None:
        """``count`` events were re-published (and acknowledged); marks progress."""
        self.republished.inc(count)
        self.last_progress.set(time.time())


class Metrics:
    """Every metric of one worker process, in its own registry. Thread-safe."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        self._clock = clock
        self._catalog_loaded_at: float | None = None
        new = _Declare(self.registry)

        self.build_info = new.gauge(
            "build_info", "Constant 1, labelled by version.", labels=("version",)
        )
        self.build_info.labels(__version__).set(1)

        # -- throughput --------------------------------------------------------
        self.messages_consumed = new.counter(
            "messages_consumed", "Kafka messages collected into batches (redeliveries count again)."
        )
        self.events_processed = new.counter(
            "events_processed",
            "Valid events stored raw and rated, counted when their offsets are committed.",
        )
        self.rows_inserted = new.counter(
            "processed_rows_inserted", "Processed (priced) rows written to ClickHouse."
        )
        self.batches_committed = new.counter("batches_committed", "Batches written and committed.")
        self.batches_abandoned = new.counter(
            "batches_abandoned",
            "Batches dropped uncommitted after a rebalance (they are redelivered).",
        )
        self.unresolved = new.counter(
            "events_unresolved",
            "Events stored raw without processed rows (left for reprocessing), by reason.",
            labels=("reason",),
        )
        self.duplicates = new.counter(
            "duplicates",
            "Dedup outcomes other than counted: already_processed (no row), "
            "repeated_value (COUNT_UNIQUE, zero row).",
            labels=("kind",),
        )
        self.dedup_fingerprints = new.gauge(
            "dedup_fingerprints",
            "Unique-hash fingerprints held in memory for the dedup check "
            "(bounded by EW_DEDUP_MEMORY_HASHES).",
        )
        self.dedup_store_lookups = new.counter(
            "dedup_store_lookups",
            "Unique hashes sent to the batched ClickHouse dedup lookup (repeats, and "
            "every hash of states whose fingerprints are not in memory).",
        )
        self.dead_letters = new.counter(
            "dlq_messages",
            "Messages produced to the dead-letter topic and acknowledged, by reason.",
            labels=("reason",),
        )
        self.missing_quantity_fields = new.counter(
            "quantity_field_missing",
            "Rated (event, line item) pairs whose quantity field was missing or unparseable.",
        )

        # -- batches and stages ------------------------------------------------
        self.batch_messages = new.histogram(
            "batch_messages", "Messages per committed batch.", buckets=_SIZE_BUCKETS
        )
        self.batch_rows = new.histogram(
            "batch_rows", "Processed rows per committed batch.", buckets=_SIZE_BUCKETS
        )
        self.stage_duration = new.histogram(
            "stage_duration_seconds",
            "Time per batch in each stage, retries included.",
            buckets=_DURATION_BUCKETS,
            labels=("stage",),
        )
        self.retries = new.counter(
            "retries",
            "Failed attempts retried with backoff (store or broker errors), by stage.",
            labels=("stage",),
        )
        self.insert_duration = new.histogram(
            "clickhouse_insert_duration_seconds",
            "Latency of successful ClickHouse inserts, by table.",
            buckets=_DURATION_BUCKETS,
            labels=("table",),
        )
        self.insert_errors = new.counter(
            "clickhouse_insert_errors", "Failed ClickHouse inserts, by table.", labels=("table",)
        )
        self.commit_lag = new.histogram(
            "event_commit_lag_seconds",
            "From an event's timestamp to the commit of its offset "
            f"(sampled: at most {COMMIT_LAG_SAMPLES} events per batch).",
            buckets=_LAG_BUCKETS,
        )

        # -- the consumer group ------------------------------------------------
        self.consumer_lag = new.gauge(
            "consumer_lag",
            "High watermark minus the consumer position, per assigned partition "
            "(a lower bound on brokers whose watermark lags).",
            labels=("topic", "partition"),
        )
        self.assigned_partitions = new.gauge("assigned_partitions", "Partitions currently owned.")
        self.rebalances = new.counter(
            "rebalances", "Rebalance callbacks, by kind.", labels=("kind",)
        )
        self.last_commit = new.gauge(
            "last_commit_timestamp_seconds",
            "Unix time of the last successful offset commit (0 before the first).",
        )
        self.heartbeat = new.gauge(
            "loop_heartbeat_timestamp_seconds",
            "Unix time the consumer loop last made an iteration.",
        )

        # -- catalog -----------------------------------------------------------
        self.catalog_entities = new.gauge(
            "catalog_entities", "Entities in the catalog index in use, by kind.", labels=("kind",)
        )
        self.catalog_problems = new.gauge(
            "catalog_problems",
            "Problems (dangling references, invalid entities) in the catalog index in use.",
        )
        self.catalog_updates = new.counter(
            "catalog_updates", "Catalog indexes built and put in use (the first load included)."
        )
        # -- Kafka reachability ------------------------------------------------
        self.kafka_unreachable = new.counter(
            "kafka_unreachable",
            "Times every Kafka broker became unreachable (librdkafka's connection lines "
            "are folded into one log line per change).",
        )
        self.kafka_reachable = new.gauge(
            "kafka_reachable",
            "1 while a Kafka broker answers (0 after all became unreachable, until one is back).",
        )
        self.kafka_reachable.set(1)

        self.catalog_rejected = new.counter(
            "catalog_rejected",
            "Catalog topic entity values rejected as invalid (dead-lettered; the "
            "previous version of the entity stays in force).",
        )
        self.catalog_age = new.gauge(
            "catalog_age_seconds",
            "Seconds since the catalog index in use was built (-1 before the first).",
        )
        self.catalog_age.set_function(self._catalog_age)

        self.reprocess = ReprocessMetrics(self.registry)

        for unresolved in UnresolvedReason:
            self.unresolved.labels(unresolved.value)
        for kind in DUPLICATE_KINDS:
            self.duplicates.labels(kind)
        for reason in DLQ_REASONS:
            self.dead_letters.labels(reason)
        for stage in STAGES:
            self.stage_duration.labels(stage)
            self.retries.labels(stage)
        for table in TABLES:
            self.insert_duration.labels(table)
            self.insert_errors.labels(table)
        for kind in REBALANCE_KINDS:
            self.rebalances.labels(kind)
        for kind in CATALOG_KINDS:
            self.catalog_entities.labels(kind).set(0)

    # -- recording API ---------------------------------------------------------

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def kafka_reachability_changed(self, down: bool) -> None:
        """Every broker became unreachable (``down``), or one is back."""
        if down:
            self.kafka_unreachable.inc()
        self.kafka_reachable.set(0 if down else 1)

    def catalog_in_use(self, index: CatalogIndex) -> None:
        """A catalog index was built and is now used for rating."""
        self._catalog_loaded_at = self._clock()
        self.catalog_updates.inc()
        self.catalog_entities.labels("customer").set(index.customer_count)
        self.catalog_entities.labels("line_item").set(index.line_item_count)
        self.catalog_entities.labels("feature").set(len(index.features))
        self.catalog_problems.set(len(index.problems))

    def _catalog_age(self) -> float:
        loaded = self._catalog_loaded_at
        return -1.0 if loaded is None else max(0.0, self._clock() - loaded)

    def events_committed(self, timestamps: Sequence[datetime]) -> None:
        """Observe event-time-to-now of committed events' ``timestamps``: at most
        :data:`COMMIT_LAG_SAMPLES` evenly spaced ones a batch, sampled by the caller."""
        if not timestamps:
            return
        now = self._clock()
        observe = self.commit_lag.observe
        for timestamp in timestamps:
            observe(max(0.0, now - timestamp.timestamp()))

    def committed(self, when: float | None = None) -> None:
        self.last_commit.set(self._clock() if when is None else when)

    def set_assignment(self, partitions: Iterable[tuple[str, int]]) -> None:
        """The partitions owned now: updates the count and drops lag of partitions gone."""
        owned = {(topic, str(partition)) for topic, partition in partitions}
        self.assigned_partitions.set(len(owned))
        for labels in self._lag_labels():
            if labels not in owned:
                self.consumer_lag.remove(*labels)

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic, str(partition)).set(max(0, lag))

    def _lag_labels(self) -> list[tuple[str, str]]:
        labels: list[tuple[str, str]] = []
        for family in self.consumer_lag.collect():
            for sample in family.samples:
                labels.append((sample.labels["topic"], sample.labels["partition"]))
        return labels

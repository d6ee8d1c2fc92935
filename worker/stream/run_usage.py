"""``events-worker run usage``: the whole usage pipeline wired in one function."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from worker.domain.catalog import load_catalog_file
from worker.domain.catalog_index import CatalogIndex
from worker.domain.validation import EventLimits
from worker.ops.gc_tuning import tune_gc
from worker.ops.health import LoopHealth, StoreProbe
from worker.ops.logging import with_kafka_logger
from worker.ops.metrics import Metrics
from worker.ops.settings import WorkerSettings
from worker.store.arrow_columns import warm_up_arrow
from worker.store.connect import open_gateway
from worker.store.schema import migrate
from worker.stream.catalog_guard import refuse_empty_file, rejection_handler, wait_for_entities
from worker.stream.catalog_source import CatalogTopicSource
from worker.stream.dlq import DeadLetterProducer
from worker.stream.runtime import LoopOptions
from worker.stream.topics import ensure_topics, worker_topics
from worker.stream.usage_batch import UsageBatchProcessor
from worker.stream.usage_consumer import LoopStats, UsageConsumer

log = logging.getLogger(__name__)


def run_usage(
    settings: WorkerSettings,
    *,
    catalog_file: str | None = None,
    exit_when_idle_s: float | None = None,
    metrics: Metrics | None = None,
    health: LoopHealth | None = None,
    record_commit_latency: bool = False,
) -> LoopStats:
    """Run the usage consumer until stopped (or idle); returns its counters.

    bytes -> Event -> resolved line items -> priced rows -> ClickHouse -> commit.
    Creates missing topics and applies pending migrations first. Raises
    ``CatalogError``/``StoreError``/``TopicSetupError`` with one-line messages
    for set-up problems. An empty catalog is refused (file) or waited out
    (topic) unless ``settings.allow_empty_catalog``: see
    :mod:`worker.stream.catalog_guard`. ``metrics`` and ``health`` are what a
    :class:`~worker.ops.health.HealthServer` serves (fresh ones when omitted);
    ``record_commit_latency`` fills ``LoopStats.commit_latencies_ms`` (benchmarks).
    """
    metrics = metrics if metrics is not None else Metrics()
    if health is None:
        health = LoopHealth(settings.health_stall_seconds, metrics=metrics)
    log.info("starting the usage consumer", extra={"settings": settings.redacted()})
    file_index: CatalogIndex | None = None
    if catalog_file is not None:  # a typo in the file stops the start before any I/O
        file_index = CatalogIndex(load_catalog_file(catalog_file))
        if not settings.allow_empty_catalog:
            refuse_empty_file(file_index, catalog_file)
    # librdkafka lines into our JSON logs, its connection noise folded into ours
    clients = with_kafka_logger(settings, on_reachability=metrics.kafka_reachability_changed)
    ensure_topics(clients, worker_topics(settings))
    gateway = open_gateway(settings.store_url)
    source: CatalogTopicSource | None = None
    try:
        health.watch_store(StoreProbe(gateway.ping))
        migrate(gateway, cluster=settings.cluster_layout)
        updates: Callable[[], CatalogIndex | None] | None = None
        if file_index is not None:
            index = file_index
        else:
            rejected = rejection_handler(DeadLetterProducer(clients), metrics, health)
            source = CatalogTopicSource(clients, on_rejected=rejected)
            index = source.load()
            if not settings.allow_empty_catalog:
                index = wait_for_entities(
                    source, index, health=health, give_up_after_s=exit_when_idle_s
                )
            updates = partial(source.poll_updates, 0.0)  # non-blocking, between batches
        for problem in index.problems[:20]:
            log.warning("catalog: %s", problem)
        metrics.catalog_in_use(index)
        health.catalog_loaded()
        processor = UsageBatchProcessor(
            gateway,
            index,
            limits=EventLimits(
                max_message_bytes=settings.max_message_bytes,
                max_properties=settings.max_properties,
            ),
            metrics=metrics,
            max_dedup_fingerprints=settings.dedup_memory_hashes,
            fused_core=settings.engine == "core",
        )
        warm_up_arrow()  # not in the first batch's time
        tune_gc()  # after the catalog and the engine are built: they stay out of collections
        consumer = UsageConsumer(
            clients,
            processor,
            DeadLetterProducer(clients),
            catalog_updates=updates,
            metrics=metrics,
            health=health,
            record_commit_latency=record_commit_latency,
            loop=LoopOptions(exit_when_idle_s=exit_when_idle_s),
        )
        consumer.run()
        return consumer.stats
    finally:
        health.watch_store(None)
        if source is not None:
            source.close()
        gateway.close()

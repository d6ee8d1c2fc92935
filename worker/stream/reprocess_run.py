"""``events-worker run reprocess``: the reprocess pipeline wired in one function."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from worker.ops.health import LoopHealth, StoreProbe
from worker.ops.logging import with_kafka_logger
from worker.ops.settings import WorkerSettings
from worker.store.connect import open_gateway
from worker.store.schema import migrate
from worker.stream.dlq import DeadLetterProducer
from worker.stream.reprocess_consumer import EventRepublisher, ReprocessConsumer, ReprocessStats
from worker.stream.runtime import LoopOptions
from worker.stream.topics import ensure_topics, worker_topics

if TYPE_CHECKING:
    from worker.ops.metrics import ReprocessMetrics


def run_reprocess(
    settings: WorkerSettings,
    *,
    exit_when_idle_s: float | None = None,
    metrics: ReprocessMetrics | None = None,
    health: LoopHealth | None = None,
    on_reachability: Callable[[bool], None] | None = None,
) -> ReprocessStats:
    """Serve reprocess requests until stopped (or idle); returns the run's counters.

    control message -> saved progress -> pages of unprocessed events ->
    events topic (original keys) -> saved cursor -> ... -> completed -> commit.
    Creates missing topics and applies pending migrations first. Raises
    ``StoreError``/``TopicSetupError`` with one-line messages for set-up problems.
    """
    if health is None:
        health = LoopHealth(settings.health_stall_seconds, needs_catalog=False)
    # librdkafka lines into our JSON logs, its connection noise folded into ours
    clients = with_kafka_logger(settings, on_reachability=on_reachability)
    ensure_topics(clients, worker_topics(settings))
    gateway = open_gateway(settings.store_url)
    try:
        migrate(gateway, cluster=settings.cluster_layout)
        consumer = ReprocessConsumer(
            clients,
            gateway,
            DeadLetterProducer(clients),
            EventRepublisher(clients),
            metrics=metrics,
            health=health,
            loop=LoopOptions(exit_when_idle_s=exit_when_idle_s),
        )
        health.watch_store(StoreProbe(gateway.ping))
        consumer.run()
        return consumer.stats
    finally:
        health.watch_store(None)
        gateway.close()

"""What only a real Apache Kafka can show (tansu has no CreatePartitions or
AlterConfigs and may not compact): partitions added to `events` while the
group runs, the compacted catalog topic with tombstones, and the broker
stopped and restarted on the same log directory mid-stream.

These request the `apache_kafka` fixture: they run in `make test-kafka` and
skip under tansu.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions

from tests.integration.kafka_broker import ApacheKafkaBroker
from tests.integration.support import ChdbTarget
from tests.integration.workers import (
    MALFORMED,
    MALFORMED_MESSAGES,
    dead_letter_headers,
    expected_invoice,
    make_consumer,
    produce,
    settings_for,
    stored_totals,
)
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.ops.settings import WorkerSettings
from worker.samples.synthetic import build_catalog, generate_events
from worker.store.gateway import open_gateway
from worker.store.schema import migrate
from worker.stream.topics import ensure_topics, worker_topics


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not reached in {timeout_s}s: {what}"
        time.sleep(0.2)


def prepared(
    broker: ApacheKafkaBroker,
    store: str,
    unique_name: Callable[[str], str],
    protocol: str = "eager",
) -> WorkerSettings:
    settings = settings_for(broker.bootstrap, store, unique_name).model_copy(
        update={
            "kafka_group_protocol": protocol,
            # Classic groups notice new partitions at a metadata refresh (default 5 min).
            "kafka_extra": {"topic.metadata.refresh.interval.ms": 1000},
        }
    )
    ensure_topics(settings, worker_topics(settings))
    gateway = open_gateway(store)
    try:
        migrate(gateway)
    finally:
        gateway.close()
    return settings


def partitions_with_data(settings: WorkerSettings, count: int) -> set[int]:
    """The partitions of `events` whose high watermark is above 0 (Apache Kafka's are exact)."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "probe"})
    try:
        return {
            p
            for p in range(count)
            if consumer.get_watermark_offsets(TopicPartition(settings.events_topic, p), timeout=10)[
                1
            ]
            > 0
        }
    finally:
        consumer.close()


@pytest.mark.parametrize("protocol", ["eager", "cooperative-sticky", "consumer"])
def test_partitions_added_while_the_group_runs_are_consumed_and_priced(
    protocol: str,
    apache_kafka: ApacheKafkaBroker,
    chdb_path: Path,
    chdb_database: ChdbTarget,
    unique_name: Callable[[str], str],
) -> None:
    store = f"chdb://{chdb_path}?database={chdb_database.database}"
    settings = prepared(apache_kafka, store, unique_name, protocol)
    catalog = build_catalog(customers=24, line_items_per_customer=3, seed=3)
    index = CatalogIndex(parse_documents(catalog))
    documents = list(generate_events(catalog, 6000, seed=12, duplicate_rate=0.02))
    gateway = open_gateway(store)
    consumer = make_consumer(settings, gateway, index, idle_s=300.0)
    runner = threading.Thread(target=consumer.run)
    try:
        runner.start()
        produce(settings, documents[:3000])
        wait_until(lambda: consumer.stats.messages >= 3000, "the first half committed")
        admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
        admin.create_partitions([NewPartitions(settings.events_topic, 6)])[
            settings.events_topic
        ].result(30)
        wait_until(
            lambda: len(admin.list_topics(settings.events_topic).topics[settings.events_topic]
                        .partitions) == 6,
            "six partitions in the metadata",
        )  # fmt: skip
        produce(settings, documents[3000:])  # a fresh producer: keys spread over six
        wait_until(lambda: consumer.stats.messages >= len(documents), "every event committed")
    finally:
        consumer.stop()
        runner.join(60)
        gateway.close()
    assert not runner.is_alive()
    assert partitions_with_data(settings, 6) & {3, 4, 5}, "no event went to a new partition"
    assert consumer.stats.messages == len(documents)
    assert stored_totals(settings) == expected_invoice(index, documents)


def test_broker_restart_mid_stream_pauses_resumes_and_loses_nothing(
    apache_kafka: ApacheKafkaBroker,
    chdb_path: Path,
    chdb_database: ChdbTarget,
    unique_name: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = f"chdb://{chdb_path}?database={chdb_database.database}"
    settings = prepared(apache_kafka, store, unique_name)
    catalog = build_catalog(customers=12, line_items_per_customer=3, seed=8)
    index = CatalogIndex(parse_documents(catalog))
    documents = list(generate_events(catalog, 6000, seed=13, duplicate_rate=0.02))
    gateway = open_gateway(store)
    consumer = make_consumer(settings, gateway, index, idle_s=300.0)
    runner = threading.Thread(target=consumer.run)
    caplog.set_level(logging.WARNING, logger="worker")
    try:
        runner.start()
        produce(settings, documents[:3000], MALFORMED_MESSAGES)
        wait_until(lambda: consumer.stats.batches > 0, "a first batch committed")
        apache_kafka.stop()  # mid-stream: batches in flight fail to commit / dead-letter
        time.sleep(3)  # the broker stays away for a while (not a synchronisation)
        apache_kafka.start()  # same log directory, same ports
        produce(settings, documents[3000:], MALFORMED_MESSAGES)
        total = len(documents) + 2 * len(MALFORMED_MESSAGES)
        wait_until(lambda: consumer.stats.messages >= total, "every message committed", 180)
    finally:
        consumer.stop()
        runner.join(60)
        gateway.close()
    assert not runner.is_alive()
    assert consumer.stats.retries > 0  # it did see the broker go away
    said = [r.getMessage() for r in caplog.records if r.name.startswith("worker")]
    assert any("broker" in line.lower() for line in said), said[-5:]
    assert stored_totals(settings) == expected_invoice(index, documents)
    # Every malformed message has a dead letter (a repeat after a failed send is allowed).
    letters = dead_letter_headers(settings, 2 * len(MALFORMED))
    by_source = {(h["source_partition"], h["source_offset"]): h["reason"].decode() for h in letters}
    assert sorted(by_source.values()) == sorted([reason for _, reason in MALFORMED] * 2)

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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    ResourceType,
)

from tests.integration.kafka_broker import ApacheKafkaBroker
from tests.integration.support import ChdbTarget
from tests.integration.workers import (
    MALFORMED,
    MALFORMED_MESSAGES,
    catalog_without,
    dead_letter_headers,
    expected_invoice,
    make_consumer,
    never_priced,
    produce,
    settings_for,
    stored_totals,
)
from tests.reference import line_item_ids
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.domain.events import Event
from worker.ops.settings import WorkerSettings
from worker.samples.synthetic import SAMPLE_START, build_catalog, generate_events
from worker.store.connect import open_gateway
from worker.store.gateway import Gateway
from worker.store.reprocess_state import RequestState, load_progress
from worker.store.schema import migrate
from worker.stream.catalog_source import CatalogPublisher, CatalogTopicSource, EntityType
from worker.stream.reprocess_consumer import ReprocessStats
from worker.stream.reprocess_request import ReprocessRequest, publish_request
from worker.stream.reprocess_run import run_reprocess
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
    assert stored_totals(settings) == expected_invoice(catalog, documents)


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
    # It said so in its own words: while polling, or while retrying a stage.
    said = [r.getMessage() for r in caplog.records if r.name.startswith("worker")]
    assert any(
        line.startswith(("Kafka unreachable at", "Kafka broker unreachable"))
        or "Kafka broker unavailable" in line
        for line in said
    ), said[-5:]
    assert stored_totals(settings) == expected_invoice(catalog, documents)
    # Every malformed message has a dead letter (a repeat after a failed send is allowed).
    letters = dead_letter_headers(settings, 2 * len(MALFORMED))
    by_source = {(h["source_partition"], h["source_offset"]): h["reason"].decode() for h in letters}
    assert sorted(by_source.values()) == sorted([reason for _, reason in MALFORMED] * 2)


def topic_records(settings: WorkerSettings, topic: str) -> list[tuple[bytes, bytes | None]]:
    """Every (key, value) of partition 0 of `topic`, read to its high watermark."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "reader"})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        records: list[tuple[bytes, bytes | None]] = []
        position = -1
        deadline = time.monotonic() + 30
        while position + 1 < high and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                if message.error() is None:
                    records.append((message.key() or b"", message.value()))
                    position = message.offset() or 0
        return records
    finally:
        consumer.close()


def test_compacted_catalog_with_tombstones_loads_exactly_the_live_catalog(
    apache_kafka: ApacheKafkaBroker, unique_name: Callable[[str], str]
) -> None:
    settings = WorkerSettings(
        kafka_bootstrap=apache_kafka.bootstrap,
        catalog_topic=unique_name("catalog"),
        topic_partitions=1,
    )
    topic = settings.catalog_topic
    ensure_topics(settings, {topic: 1})
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    eager_cleaning = {
        "segment.ms": "100",  # small segments: everything but the newest is cleanable
        "min.cleanable.dirty.ratio": "0.01",
        "min.compaction.lag.ms": "0",
        "delete.retention.ms": "0",  # tombstones go in the pass after their first one
    }
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
            for name, value in eager_cleaning.items()
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(30)

    full = build_catalog(customers=10, line_items_per_customer=2, seed=4)
    deleted = ["cus_2", "cus_5", "cus_7"]
    live = full
    for customer in deleted:
        live = catalog_without(live, customer)
    publisher = CatalogPublisher(settings)
    published = 0
    for _ in range(3):  # three versions of every entity: two are superseded
        publisher.upsert_documents(parse_documents(full))
        published += sum(publisher.flush().published.values())
        time.sleep(0.2)  # let the segment roll (segment.ms), not a synchronisation
    for subscription in full["subscriptions"]:
        if subscription["customer_id"] in deleted:
            publisher.delete(EntityType.SUBSCRIPTION, "t1", "prod", subscription["id"])
    for customer in deleted:
        publisher.delete(EntityType.CUSTOMER, "t1", "prod", customer)
    published += sum(publisher.flush().published.values())

    def compacted() -> bool:
        # New appends roll segments and dirty the log, so the cleaner runs again
        # (a tombstone is removed only by a pass after the one that kept it).
        publisher.upsert_documents(parse_documents(live)[:1])
        publisher.flush()
        records = topic_records(settings, topic)
        return len(records) < published and all(value is not None for _, value in records)

    wait_until(compacted, "superseded values and tombstones compacted away", 120)
    source = CatalogTopicSource(settings, idle_gap_s=0.3)
    try:
        index = source.load(30)
    finally:
        source.close()
    assert not index.problems
    assert (index.customer_count, index.line_item_count) == (
        len(live["customers"]),
        sum(len(s["line_items"]) for s in live["subscriptions"]),
    )
    matched = 0
    at = SAMPLE_START + timedelta(days=3)
    for customer in full["customers"]:
        for meter in full["meters"]:
            event = Event(
                id="e1", tenant_id="t1", environment_id="prod", event_name=meter["event_name"],
                timestamp=at, external_customer_id=customer["external_id"],
            )  # fmt: skip
            got = sorted(m.binding.line_item_id for m in index.resolve(event).matches)
            assert got == line_item_ids(live, event)  # the independent reference's reading
            matched += len(got)
    assert matched > 0


def test_broker_restart_during_a_reprocess_request_loses_nothing(
    apache_kafka: ApacheKafkaBroker,
    chdb_path: Path,
    chdb_database: ChdbTarget,
    unique_name: Callable[[str], str],
) -> None:
    store = f"chdb://{chdb_path}?database={chdb_database.database}"
    settings = prepared(apache_kafka, store, unique_name).model_copy(
        update={"reprocess_group": unique_name("reprocess"), "reprocess_rate_limit": 150.0}
    )
    full = build_catalog(customers=4, line_items_per_customer=3, seed=6)
    documents = list(generate_events(full, 5000, seed=14, duplicate_rate=0.02))
    initial = CatalogIndex(parse_documents(catalog_without(full, "cus_3")))
    index = CatalogIndex(parse_documents(full))
    produce(settings, documents)
    gateway = open_gateway(store)
    try:
        # The late customer's events are stored raw, unprocessed ...
        first = make_consumer(settings, gateway, initial, idle_s=2.0, max_events=2000)
        first.run()
        late = [d for d in documents if d["external_customer_id"] == "cust-3"]
        assert late and stored_totals(settings) != expected_invoice(full, documents)
        # ... a request re-publishes them at 150 events/s, and the broker goes away
        # and comes back (same log directory) while it is being served.
        publish_request(settings, request_for("r1"))
        stats: list[ReprocessStats] = []
        serving = threading.Thread(
            target=lambda: stats.append(run_reprocess(settings, exit_when_idle_s=3.0))
        )
        serving.start()
        try:
            wait_until(lambda: _republished(gateway, "r1") > 0, "the request in flight")
            apache_kafka.stop()
            time.sleep(3)  # the broker stays away for a while (not a synchronisation)
            apache_kafka.start()
        finally:
            serving.join(180)
        assert not serving.is_alive() and stats[0].requests_completed == 1
        progress = load_progress(gateway, "t1", "prod", "r1")
        assert progress is not None and progress.state is RequestState.COMPLETED
        # Found: every event without a processed row (the late customer's and those
        # no line item matches); re-published at least once each (a page twice at most).
        unprocessed = never_priced(catalog_without(full, "cus_3"), documents)
        assert {d["id"] for d in late} <= unprocessed
        assert progress.found == len(unprocessed) <= progress.republished
        second = make_consumer(settings, gateway, index, idle_s=3.0, max_events=2000)
        second.run()  # the owners price the re-published events once
    finally:
        gateway.close()
    assert stored_totals(settings) == expected_invoice(full, documents)


def request_for(request_id: str) -> ReprocessRequest:
    return ReprocessRequest(
        request_id=request_id,
        tenant_id="t1",
        environment_id="prod",
        start_time=datetime(2025, 1, 1, tzinfo=UTC),
        end_time=datetime(2027, 1, 1, tzinfo=UTC),
        batch_size=100,
    )


def _republished(gateway: Gateway, request_id: str) -> int:
    progress = load_progress(gateway, "t1", "prod", request_id)
    return 0 if progress is None else progress.republished

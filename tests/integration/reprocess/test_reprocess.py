"""Reprocessing end to end on the real tansu broker and embedded ClickHouse.

Events of a customer the catalog does not know yet are stored raw and left
unprocessed; after the catalog gains the customer, a reprocess request re-drives
them through the usage consumer, and the invoice must equal an independent
rating of every distinct event. Repeating the request, or an overlapping one,
changes nothing; events that never resolve are re-published once per request.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.integration.pipeline.test_usage_consumer import expected_invoice, settings_for
from tests.integration.support import ChdbTarget
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.domain.engine import UsageRater
from worker.domain.events import Event
from worker.domain.validation import decode_event
from worker.ops.metrics import Metrics
from worker.ops.settings import WorkerSettings
from worker.samples.synthetic import build_catalog, generate_events
from worker.store.events_reads import find_unprocessed_events
from worker.store.gateway import open_gateway
from worker.store.params import FindUnprocessedEventsParams
from worker.store.processed import line_item_totals
from worker.store.reprocess_state import RequestState, load_progress
from worker.stream.reprocess_request import ReprocessRequest, publish_request
from worker.stream.reprocess_run import run_reprocess
from worker.stream.run_usage import run_usage
from worker.stream.topics import ensure_topics, worker_topics

WINDOW_START = datetime(2025, 12, 1, tzinfo=UTC)
WINDOW_END = datetime(2026, 3, 1, tzinfo=UTC)
LATE_CUSTOMER = "cust-5"
GHOST = "ghost-1"


def catalog_without(catalog: dict[str, Any], customer_id: str) -> dict[str, Any]:
    """``catalog`` minus one customer and its subscriptions."""
    reduced = copy.deepcopy(catalog)
    reduced["customers"] = [c for c in reduced["customers"] if c["id"] != customer_id]
    reduced["subscriptions"] = [
        s for s in reduced["subscriptions"] if s["customer_id"] != customer_id
    ]
    return reduced


def ghost_events(documents: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """Events of a customer that will never exist (they never resolve)."""
    return [
        {**document, "id": f"ghost-{n}", "external_customer_id": GHOST}
        for n, document in enumerate(documents[::7][:count])
    ]


def decoded(documents: list[dict[str, Any]]) -> dict[str, Event]:
    """Distinct events by id, decoded as the worker decodes them."""
    now = datetime(2026, 3, 1, tzinfo=UTC)
    events: dict[str, Event] = {}
    for document in documents:
        event = decode_event(orjson.dumps(document), fallback_id="x", fallback_timestamp=now)
        events.setdefault(event.id, event)
    return events


def never_priced(catalog: dict[str, Any], events: dict[str, Event]) -> set[str]:
    """Ids of events an independent rating against ``catalog`` gives no row."""
    rater = UsageRater(CatalogIndex(parse_documents(catalog)))
    rated = rater.rate(rater.resolve(list(events.values())), datetime(2026, 3, 1, tzinfo=UTC))
    return set(events) - {row.event.id for row in rated.rows}


def produce_events(settings: WorkerSettings, documents: list[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
    for document in documents:
        key = f"{document['tenant_id']}:{document['environment_id']}:"
        key += document["external_customer_id"]
        producer.produce(settings.events_topic, orjson.dumps(document), key.encode())
    assert producer.flush(30) == 0


def unprocessed_ids(settings: WorkerSettings) -> set[str]:
    gateway = open_gateway(settings.store_url)
    try:
        return {
            event.id
            for event in find_unprocessed_events(
                gateway,
                FindUnprocessedEventsParams(
                    "t1", "prod", WINDOW_START, WINDOW_END, batch_size=10_000
                ),
            )
        }
    finally:
        gateway.close()


def stored_invoice(settings: WorkerSettings) -> list[Any]:
    gateway = open_gateway(settings.store_url)
    try:
        return line_item_totals(gateway, "t1", "prod")
    finally:
        gateway.close()


def dead_letters(settings: WorkerSettings, expected: int) -> list[tuple[str, bytes]]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "dlq-reader",
            "enable.auto.commit": False,
        }
    )
    consumer.assign(
        [TopicPartition(settings.dlq_topic, p, 0) for p in range(settings.topic_partitions)]
    )
    letters: list[tuple[str, bytes]] = []
    try:
        for _ in range(20):
            for message in consumer.consume(100, 0.5):
                if message.error() is None:
                    headers = dict(message.headers() or [])
                    letters.append((headers["reason"].decode(), headers["source_topic"]))
            if len(letters) >= expected:
                break
    finally:
        consumer.close()
    return letters


def request(request_id: str, start: datetime = WINDOW_START) -> ReprocessRequest:
    return ReprocessRequest(
        request_id=request_id,
        tenant_id="t1",
        environment_id="prod",
        start_time=start,
        end_time=WINDOW_END,
        batch_size=200,
    )


def test_reprocess_prices_late_customers_once_and_repeats_change_nothing(
    kafka_bootstrap: str,
    chdb_path: Path,
    chdb_database: ChdbTarget,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    full = build_catalog(customers=6, line_items_per_customer=3)
    initial_file, full_file = tmp_path / "initial.json", tmp_path / "full.json"
    initial_file.write_text(json.dumps(catalog_without(full, "cus_5")))
    full_file.write_text(json.dumps(full))
    documents = list(generate_events(full, 1500, seed=5, duplicate_rate=0.03))
    ghosts = ghost_events(documents, 40)
    settings = settings_for(
        kafka_bootstrap, f"chdb://{chdb_path}?database={chdb_database.database}", unique_name
    ).model_copy(update={"reprocess_group": unique_name("reprocess")})
    ensure_topics(settings, worker_topics(settings))
    produce_events(settings, documents + ghosts)

    # 1. The late customer's events (and the ghost's) are stored raw, unprocessed,
    #    with the events that match no line item at all (e.g. filtered regions).
    run_usage(settings, catalog_file=str(initial_file), exit_when_idle_s=2.0)
    events = decoded(documents + ghosts)
    late_ids = {d["id"] for d in documents if d["external_customer_id"] == LATE_CUSTOMER}
    ghost_ids = {d["id"] for d in ghosts}
    unresolved_before = never_priced(catalog_without(full, "cus_5"), events)
    unresolved_forever = never_priced(full, events)
    assert late_ids | ghost_ids <= unresolved_before
    assert ghost_ids <= unresolved_forever and not late_ids <= unresolved_forever
    assert unprocessed_ids(settings) == unresolved_before

    # 2. A bad request is dead-lettered; the real one re-drives everything unprocessed.
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(settings.reprocess_topic, b'{"request_id": "bad-1", "tenant_id": "t1"}')
    assert producer.flush(10) == 0
    publish_request(settings, request("r1"))
    metrics = Metrics()
    stats = run_reprocess(settings, exit_when_idle_s=2.0, metrics=metrics.reprocess)
    assert (stats.requests_completed, stats.requests_rejected) == (1, 1)
    sample = metrics.registry.get_sample_value
    assert sample("events_worker_reprocess_events_republished_total") == stats.republished
    assert sample("events_worker_reprocess_requests", {"state": "completed"}) == 1
    assert sample("events_worker_reprocess_requests", {"state": "failed"}) == 1
    assert stats.republished == len(unresolved_before)

    run_usage(settings, catalog_file=str(full_file), exit_when_idle_s=2.0)
    index = CatalogIndex(parse_documents(full))
    invoice = stored_invoice(settings)
    assert invoice == expected_invoice(index, documents + ghosts)
    assert unprocessed_ids(settings) == unresolved_forever

    # 3. The same request again is ignored; an overlapping one re-publishes only
    #    what is still unprocessed in its range (events that never resolve), once.
    overlap_start = datetime(2026, 1, 12, tzinfo=UTC)
    still_unresolved = {i for i in unresolved_forever if events[i].timestamp >= overlap_start}
    #    Reusing a finished request's id for another window is dead-lettered.
    publish_request(settings, request("r1"))
    publish_request(settings, request("r1", overlap_start))
    publish_request(settings, request("r2", overlap_start))
    stats = run_reprocess(settings, exit_when_idle_s=2.0)
    assert (stats.requests_completed, stats.requests_ignored) == (1, 1)
    assert stats.requests_rejected == 1
    assert stats.republished == len(still_unresolved) < len(unresolved_before)
    run_usage(settings, catalog_file=str(full_file), exit_when_idle_s=2.0)
    assert stored_invoice(settings) == invoice

    gateway = open_gateway(settings.store_url)
    try:
        first, second = load_progress(gateway, "r1"), load_progress(gateway, "r2")
        rejected = load_progress(gateway, "bad-1")
    finally:
        gateway.close()
    assert first is not None and second is not None and rejected is not None
    assert (first.state, first.found, first.republished) == (
        RequestState.COMPLETED,
        len(unresolved_before),
        len(unresolved_before),
    )
    assert (second.state, second.republished) == (RequestState.COMPLETED, len(still_unresolved))
    assert rejected.state is RequestState.REJECTED and "environment_id" in rejected.error
    topic = settings.reprocess_topic.encode()
    assert sorted(dead_letters(settings, 2)) == [
        ("missing_field", topic),
        ("request_id_reused", topic),
    ]

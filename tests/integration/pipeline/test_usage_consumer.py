"""The usage consumer end to end on the real tansu broker and embedded ClickHouse.

Events (with client retries and malformed messages) are produced keyed by
customer; `run_usage` consumes until idle; the invoice read back from
ClickHouse must equal an independent in-memory rating of the distinct events,
and every malformed message must be in the DLQ with its reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.integration.support import ChdbTarget
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.domain.engine import UsageRater
from worker.domain.events import Event
from worker.domain.invoice import LineItemTotal, summarize
from worker.domain.validation import decode_event
from worker.ops.settings import WorkerSettings
from worker.samples.synthetic import build_catalog, generate_events
from worker.store.gateway import open_gateway
from worker.store.processed import line_item_totals
from worker.stream.run_usage import run_usage

MALFORMED: list[tuple[bytes, str]] = [
    (b"{not json", "invalid_json"),
    (b"\xff\xfe\x00garbage", "invalid_encoding"),
    (b"[1, 2]", "not_an_object"),
    (b'{"event_name": "x", "external_customer_id": "c"}', "missing_field"),
    (b'{"tenant_id": 5, "event_name": "x", "external_customer_id": "c"}', "wrong_type"),
    (
        b'{"tenant_id": "t1", "event_name": "x", "external_customer_id": "c", "oops": 1}',
        "unknown_field",
    ),
]


def settings_for(
    bootstrap: str, store_url: str, unique_name: Callable[[str], str]
) -> WorkerSettings:
    return WorkerSettings(
        kafka_bootstrap=bootstrap,
        kafka_session_timeout_ms=6000,
        store_url=store_url,
        events_topic=unique_name("events"),
        dlq_topic=unique_name("dlq"),
        catalog_topic=unique_name("catalog"),
        reprocess_topic=unique_name("reprocess"),
        usage_group=unique_name("usage"),
        topic_partitions=3,
        batch_max_events=700,
        batch_max_wait_ms=200,
    )


def produce(settings: WorkerSettings, documents: list[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
    failures: list[object] = []

    def report(error: object, message: object) -> None:
        if error is not None:
            failures.append(error)

    for document in documents:
        tenant, environment = document["tenant_id"], document["environment_id"]
        key = f"{tenant}:{environment}:{document['external_customer_id']}"
        producer.produce(
            settings.events_topic, orjson.dumps(document), key.encode(), on_delivery=report
        )
    for value, _ in MALFORMED:
        producer.produce(settings.events_topic, value, b"bad", on_delivery=report)
    assert producer.flush(30) == 0 and not failures


def dead_letter_reasons(settings: WorkerSettings, expected: int) -> list[str]:
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
    reasons: list[str] = []
    try:
        for _ in range(40):
            for message in consumer.consume(100, 0.5):
                if message.error() is None:
                    headers = dict(message.headers() or [])
                    reasons.append(headers["reason"].decode())
            if len(reasons) >= expected:
                break
    finally:
        consumer.close()
    return sorted(reasons)


def expected_invoice(index: CatalogIndex, documents: list[dict[str, Any]]) -> list[LineItemTotal]:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    distinct: dict[str, Event] = {}
    for document in documents:
        event = decode_event(orjson.dumps(document), fallback_id="x", fallback_timestamp=now)
        distinct.setdefault(event.id, event)
    rater = UsageRater(index)
    return list(summarize(rater.rate(rater.resolve(list(distinct.values())), now).rows))


def test_consumer_prices_every_event_once_and_dead_letters_bad_input(
    kafka_bootstrap: str,
    chdb_path: Path,
    chdb_database: ChdbTarget,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    catalog = build_catalog(customers=12, line_items_per_customer=4)
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(json.dumps(catalog))
    documents = list(generate_events(catalog, 3000, seed=9, duplicate_rate=0.05))
    settings = settings_for(
        kafka_bootstrap, f"chdb://{chdb_path}?database={chdb_database.database}", unique_name
    )
    from worker.stream.topics import ensure_topics, worker_topics

    ensure_topics(settings, worker_topics(settings))
    produce(settings, documents)

    stats = run_usage(settings, catalog_file=str(catalog_file), exit_when_idle_s=2.0)

    assert stats.messages == len(documents) + len(MALFORMED)
    gateway = open_gateway(settings.store_url)
    try:
        stored = line_item_totals(gateway, "t1", "prod")
    finally:
        gateway.close()
    index = CatalogIndex(parse_documents(catalog))
    assert stored == expected_invoice(index, documents)
    assert dead_letter_reasons(settings, len(MALFORMED)) == sorted(r for _, r in MALFORMED)

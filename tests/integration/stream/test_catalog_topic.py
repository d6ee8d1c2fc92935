"""The catalog on its compacted topic: publish (CLI and API), load, follow, tombstones."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from confluent_kafka import KafkaError, Message, Producer

from tests.integration.kafka_broker import apache_kafka_selected
from tests.reference import line_item_ids
from worker.cli import main
from worker.domain.catalog import CatalogDocument, CustomerDoc, load_catalog_file
from worker.domain.catalog_index import CatalogIndex, UnresolvedReason
from worker.domain.events import Event
from worker.ops.settings import WorkerSettings
from worker.samples import __file__ as samples_init
from worker.stream.catalog_source import (
    CatalogLoadTimeout,
    CatalogPublisher,
    CatalogTopicSource,
    EntityType,
)
from worker.stream.topics import ensure_topics

SAMPLE_CATALOG = str(Path(samples_init).parent / "catalog.json")
TS = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def _event(customer: str, *, tenant: str = "acme-cloud", name: str = "request") -> Event:
    return Event(
        id="e1",
        tenant_id=tenant,
        environment_id="prod",
        event_name=name,
        timestamp=TS,
        external_customer_id=customer,
    )


def _line_items(index: CatalogIndex, event: Event) -> list[str]:
    return sorted(match.binding.line_item_id for match in index.resolve(event).matches)


@pytest.fixture
def source(cli_env: WorkerSettings) -> Iterator[CatalogTopicSource]:
    source = CatalogTopicSource(cli_env, idle_gap_s=0.3, debounce_s=0.2)
    try:
        yield source
    finally:
        source.close()


def _next_index(source: CatalogTopicSource, timeout_s: float = 10.0) -> CatalogIndex:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        index = source.poll_updates(0.5)
        if index is not None:
            return index
    raise AssertionError(f"no catalog update within {timeout_s}s")


def test_published_file_loads_into_an_equivalent_index_and_follows_updates(
    cli_env: WorkerSettings, source: CatalogTopicSource, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["catalog", "publish", SAMPLE_CATALOG]) == 0
    assert capsys.readouterr().out == (
        f"published 68 catalog entities to {cli_env.catalog_topic} (10 customers, 16 meters, "
        "16 features, 16 prices, 10 subscriptions), failed 0\n"
    )

    index = source.load(timeout_s=15)

    expected = orjson.loads(Path(SAMPLE_CATALOG).read_bytes())  # read by the reference
    assert index.problems == []
    assert (index.customer_count, index.line_item_count) == (
        sum(len(document["customers"]) for document in expected),
        sum(len(s["line_items"]) for document in expected for s in document["subscriptions"]),
    )
    for tenant in ("acme-cloud", "globex"):
        for customer in ("cust-0", "cust-1", "cust-2"):
            for name in ("request", "api_call", "login", "storage"):
                event = _event(customer, tenant=tenant, name=name)
                assert _line_items(index, event) == line_item_ids(expected, event)
    assert _line_items(index, _event("cust-0")) == ["li_0_req"]
    assert source.poll_updates(0.3) is None  # nothing new

    # An update (a new customer with a subscription) and a delete, published later.
    newcomer = (
        load_catalog_file(SAMPLE_CATALOG)[0]
        .subscriptions[0]
        .model_copy(update={"id": "sub_new", "customer_id": "cus_new"})
    )
    publisher = CatalogPublisher(cli_env)
    publisher.upsert_documents(
        [
            CatalogDocument(
                tenant_id="acme-cloud",
                environment_id="prod",
                customers=[CustomerDoc(id="cus_new", external_id="cust-new")],
                subscriptions=[newcomer],
            )
        ]
    )
    publisher.delete(EntityType.CUSTOMER, "acme-cloud", "prod", "cus_1")
    result = publisher.flush(timeout_s=10)
    assert (result.published, result.failed) == (
        {"customer": 1, "subscription": 1, "deleted": 1},
        0,
    )

    updated = _next_index(source)

    assert _line_items(updated, _event("cust-new")) == ["li_0_req"]
    gone = updated.resolve(_event("cust-1"))
    assert gone.unresolved is UnresolvedReason.UNKNOWN_CUSTOMER
    assert any("'sub_1' references unknown customer 'cus_1'" in p for p in updated.problems)
    assert _line_items(updated, _event("cust-0")) == ["li_0_req"]  # the rest is intact
    # The old index is unchanged (indexes are immutable snapshots).
    assert index.resolve(_event("cust-new")).unresolved is UnresolvedReason.UNKNOWN_CUSTOMER


def test_invalid_entity_values_are_rejected_and_previous_versions_kept(
    cli_env: WorkerSettings, source: CatalogTopicSource
) -> None:
    ensure_topics(cli_env, {cli_env.catalog_topic: 2}, timeout_s=10)
    producer = Producer({"bootstrap.servers": cli_env.kafka_bootstrap})
    records: list[tuple[bytes | None, bytes | None]] = [
        (b"customer:t1:prod:c1", b'{"id": "c1", "external_id": "x1"}'),
        (b"customer:t1:prod:c2", b"{broken"),
        (b"customer:t1:prod:c3", b'{"id": "c3"}'),
        (b"customer:t1:prod:c3", b'{"id": "c3", "external_id": ["not", "a", "string"]}'),
        (b"gadget:t1:prod:g1", b'{"id": "g1"}'),
        (None, b'{"id": "keyless"}'),
        (b"customer:t1:prod:c4", b'{"id": "c4", "external_id": "x4"}'),
        (b"customer:t1:prod:c4", None),
    ]
    refused: list[bytes | None] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            refused.append(message.key())

    for key, value in records:
        # One at a time: Apache Kafka refuses a keyless record on a compacted topic,
        # and with it the rest of its produce request.
        producer.produce(cli_env.catalog_topic, key=key, value=value, on_delivery=delivered)
        assert producer.flush(10) == 0
    # tansu stores the keyless record (the source skips it); Apache Kafka refuses it.
    assert refused == ([None] if apache_kafka_selected() else [])

    index = source.load(timeout_s=15)

    assert source.messages_read == len(records) - len(refused)
    # c1, and c3 in its previous valid version; c2 invalid, c4 deleted.
    assert index.customer_count == 2
    assert source.rejected == 3
    problems = sorted(source.problems)
    assert [p.split(": ")[0] for p in problems] == [
        "customer:t1:prod:c2",
        "customer:t1:prod:c3",
        "gadget:t1:prod:g1",
    ]
    assert "unknown entity type 'gadget'" in problems[2]
    assert "rejected (previous version kept)" in problems[1]
    assert "customer 'c3' of t1/prod" in problems[1] and "external_id" in problems[1]
    assert "rejected (no previous version)" in problems[0]
    assert set(problems) <= set(index.problems)

    # Followed: a fixed value for c3 clears its problem; a tombstone removes c1.
    producer.produce(cli_env.catalog_topic, key=b"customer:t1:prod:c3", value=b'{"id": "c3"}')
    producer.produce(cli_env.catalog_topic, key=b"customer:t1:prod:c1", value=None)
    assert producer.flush(10) == 0
    updated = next(source.follow(poll_s=0.2))
    assert updated.customer_count == 1
    c3 = Event(id="e", tenant_id="t1", environment_id="prod", event_name="x", timestamp=TS)
    assert updated.customer_id_for(replace(c3, customer_id="c3")) == "c3"
    assert updated.customer_id_for(replace(c3, customer_id="c1")) is None
    assert sorted(p.split(": ")[0] for p in source.problems) == [
        "customer:t1:prod:c2",
        "gadget:t1:prod:g1",
    ]


def test_empty_topic_loads_an_empty_catalog(
    cli_env: WorkerSettings, source: CatalogTopicSource
) -> None:
    ensure_topics(cli_env, {cli_env.catalog_topic: 2}, timeout_s=10)
    # A load timeout far beyond pytest's own: only seeing the topic is empty can pass.
    index = source.load(timeout_s=3600)
    assert index.customer_count == 0 and index.problems == []


def test_missing_topic_is_a_clear_error(source: CatalogTopicSource) -> None:
    with pytest.raises(CatalogLoadTimeout, match=f"catalog topic {source.topic} unusable"):
        source.load(timeout_s=5)


def test_load_times_out_on_an_unreachable_broker() -> None:
    settings = WorkerSettings(kafka_bootstrap="127.0.0.1:1", kafka_extra={"log_level": 0})
    source = CatalogTopicSource(settings)
    with pytest.raises(CatalogLoadTimeout):  # not a hang (pytest's timeout bounds it)
        source.load(timeout_s=1.5)
    source.close()


def test_invalid_catalog_file_is_one_line_exit_2_and_publishes_nothing(
    cli_env: WorkerSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = orjson.loads(Path(SAMPLE_CATALOG).read_bytes())[0]
    document["subscriptions"][0]["customer_id"] = "cus_missing"
    path = tmp_path / "catalog.json"
    path.write_bytes(orjson.dumps(document))

    assert main(["catalog", "publish", str(path)]) == 2

    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "inconsistent" in captured.err and "cus_missing" in captured.err

    document["subscriptions"][0]["customer_id"] = "cus_0"
    document["tenant_id"] = "acme:cloud"
    path.write_bytes(orjson.dumps(document))
    assert main(["catalog", "publish", str(path)]) == 2
    assert "':' is not allowed" in capsys.readouterr().err


def test_a_rejected_entity_is_dead_lettered_with_its_reason_and_the_previous_one_stays(
    cli_env: WorkerSettings,
) -> None:
    from tests.integration.stream.conftest import read_topic
    from worker.ops.health import LoopHealth, StoreProbe
    from worker.ops.metrics import Metrics
    from worker.stream.catalog_guard import rejection_handler
    from worker.stream.dlq import DeadLetterProducer

    ensure_topics(cli_env, {cli_env.catalog_topic: 1, cli_env.dlq_topic: 1}, timeout_s=10)
    good = load_catalog_file(SAMPLE_CATALOG)
    publisher = CatalogPublisher(cli_env)
    publisher.upsert_documents(good)
    assert publisher.flush(10).failed == 0
    price = next(p for p in good[0].prices if p.billing_model == "TIERED")
    bad_value = price.model_dump(mode="json")
    bad_value["tiers"] = list(reversed(bad_value["tiers"]))  # unbounded tier first
    bad_key = f"price:{good[0].tenant_id}:prod:{price.id}".encode()
    producer = Producer({"bootstrap.servers": cli_env.kafka_bootstrap})
    producer.produce(cli_env.catalog_topic, key=bad_key, value=orjson.dumps(bad_value))
    assert producer.flush(10) == 0

    metrics = Metrics()
    health = LoopHealth(60.0, metrics=metrics)
    handler = rejection_handler(DeadLetterProducer(cli_env), metrics, health)
    source = CatalogTopicSource(cli_env, idle_gap_s=0.3, on_rejected=handler)
    try:
        index = source.load(timeout_s=15)
    finally:
        source.close()

    # The previous version of the price stays in force: same pricing as the file.
    expected = orjson.loads(Path(SAMPLE_CATALOG).read_bytes())  # read by the reference
    for customer in ("cust-0", "cust-1", "cust-2", "cust-3"):
        event = _event(customer)
        assert _line_items(index, event) == line_item_ids(expected, event)
    assert index.line_item_count == sum(
        len(s["line_items"]) for document in expected for s in document["subscriptions"]
    )
    assert metrics.catalog_rejected._value.get() == 1
    (letter,) = read_topic(cli_env.kafka_bootstrap, cli_env.dlq_topic, 1)
    headers = dict(letter.headers() or [])
    assert letter.key() == bad_key and letter.value() == orjson.dumps(bad_value)
    assert headers["reason"] == b"invalid_catalog_entity"
    assert b"only the last tier may be unbounded" in headers["error"]
    assert b"previous version kept" in headers["error"]
    health.catalog_loaded()
    health.set_assigned(1)
    health.watch_store(StoreProbe(lambda: None))
    readiness = health.readiness()
    assert readiness.ok  # a bad entity never stops the fleet
    rejected = "1 entity values rejected (dead-lettered, previous versions kept)"
    assert f"{rejected}, latest {bad_key.decode()}" in readiness.detail

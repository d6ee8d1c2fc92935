"""A reprocess request's scope and pace, on the real broker and chdb.

A request naming a customer and an event name re-publishes exactly the
unprocessed events of that customer and name (none of another customer or
name), at no more than the rate limit; the usage consumer then prices exactly
those, which the invoice of the independent reference confirms.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, Message, TopicPartition

from tests.integration.support import ChdbTarget
from tests.integration.workers import (
    catalog_without,
    expected_invoice,
    never_priced,
    produce,
    settings_for,
    stored_totals,
    wait_until,
    write_catalog,
)
from worker.ops.settings import WorkerSettings
from worker.samples.synthetic import build_catalog, generate_events
from worker.stream.producer import event_key
from worker.stream.reprocess_consumer import HEADER_REQUEST_ID
from worker.stream.reprocess_request import ReprocessRequest, publish_request
from worker.stream.reprocess_run import run_reprocess
from worker.stream.run_usage import run_usage
from worker.stream.topics import ensure_topics, worker_topics

RATE = 100.0  # events/s
#: The limiter books about 0.1 s of events at once, so one such chunk may go at once.
BURST = int(RATE * 0.1)


def republished(settings: WorkerSettings, request_id: str, expected: int) -> list[Message]:
    """The messages re-published for `request_id`, read from the start of the events topic."""
    reader = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": "scope-reader",
         "enable.auto.commit": False}
    )  # fmt: skip
    found: list[Message] = []
    try:
        topic = settings.events_topic
        reader.assign([TopicPartition(topic, p, 0) for p in range(settings.topic_partitions)])

        def all_read() -> bool:
            for message in reader.consume(500, 0.2):
                headers = dict(message.headers() or [])
                if (
                    message.error() is None
                    and headers.get(HEADER_REQUEST_ID) == request_id.encode()
                ):
                    found.append(message)
            return len(found) >= expected

        wait_until(all_read, f"{expected} re-published messages read back", 60)
    finally:
        reader.close()
    return found


def test_a_request_for_one_customer_and_event_name_republishes_only_those_at_the_rate_limit(
    kafka_bootstrap: str,
    chdb_path: Path,
    chdb_database: ChdbTarget,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    store = f"chdb://{chdb_path}?database={chdb_database.database}"
    full = build_catalog(customers=6, line_items_per_customer=3, seed=61)
    initial = catalog_without(catalog_without(full, "cus_4"), "cus_5")  # two customers late
    initial_file = write_catalog(tmp_path, initial, "initial.json")
    full_file = write_catalog(tmp_path, full, "full.json")
    documents = list(generate_events(full, 1500, seed=61, duplicate_rate=0.03))
    late = [d for d in documents if d["external_customer_id"] == "cust-5"]
    name, _ = Counter(d["event_name"] for d in late).most_common(1)[0]
    assert {d["event_name"] for d in late} != {name}  # the name filter has work to do
    wanted = {d["id"] for d in late if d["event_name"] == name}
    assert wanted <= never_priced(initial, documents)
    settings = settings_for(kafka_bootstrap, store, unique_name).model_copy(
        update={"reprocess_group": unique_name("reprocess"), "reprocess_rate_limit": RATE}
    )
    ensure_topics(settings, worker_topics(settings))
    produce(settings, documents)
    run_usage(settings, catalog_file=str(initial_file), exit_when_idle_s=1.0)

    publish_request(
        settings,
        ReprocessRequest(
            request_id="scoped", tenant_id="t1", environment_id="prod",
            start_time=datetime(2025, 12, 1, tzinfo=UTC), end_time=datetime(2026, 3, 1, tzinfo=UTC),
            external_customer_id="cust-5", event_name=name, batch_size=25,
        ),
    )  # fmt: skip
    stats = run_reprocess(settings, exit_when_idle_s=1.0)
    assert stats.requests_completed == 1 and stats.republished == len(wanted)

    messages = republished(settings, "scoped", len(wanted))
    assert sorted(json.loads(message.value())["id"] for message in messages) == sorted(wanted)
    assert {message.key() for message in messages} == {event_key(late[0]).encode()}
    # Paced: n events at RATE per second take at least (n - BURST) / RATE seconds.
    stamps = sorted(message.timestamp()[1] for message in messages)
    assert (stamps[-1] - stamps[0]) / 1000 >= (len(wanted) - BURST) / RATE - 0.002

    run_usage(settings, catalog_file=str(full_file), exit_when_idle_s=1.0)
    priced = [
        d for d in documents
        if d["external_customer_id"] != "cust-4"
        and (d["external_customer_id"] != "cust-5" or d["event_name"] == name)
    ]  # fmt: skip
    assert stored_totals(settings) == expected_invoice(full, priced)

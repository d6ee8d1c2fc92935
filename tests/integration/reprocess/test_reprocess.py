"""Reprocessing end to end on the real tansu broker and embedded ClickHouse.

Events of a customer the catalog does not know yet are stored raw and left
unprocessed; after the catalog gains the customer, a reprocess request re-drives
them through the usage consumer, and the invoice must equal an independent
rating of every distinct event. Repeating the request, or an overlapping one,
changes nothing; events that never resolve are re-published once per request.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from tests.integration.workers import (
    catalog_without,
    dead_letter_headers,
    expected_invoice,
    never_priced,
    produce,
    settings_for,
    stored_totals,
    write_catalog,
)
from tests.reference import parse_timestamp
from worker.ops.metrics import Metrics
from worker.ops.settings import WorkerSettings
from worker.samples.synthetic import build_catalog, generate_events
from worker.store.connect import open_gateway
from worker.store.events_reads import find_unprocessed_events
from worker.store.params import FindUnprocessedEventsParams
from worker.store.reprocess_state import RequestState, load_progress
from worker.stream.reprocess_request import ReprocessRequest, publish_request
from worker.stream.reprocess_run import run_reprocess
from worker.stream.run_usage import run_usage
from worker.stream.topics import ensure_topics, worker_topics

WINDOW_START = datetime(2025, 12, 1, tzinfo=UTC)
WINDOW_END = datetime(2026, 3, 1, tzinfo=UTC)
LATE_CUSTOMER = "cust-5"
GHOST = "ghost-1"


def ghost_events(documents: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """Events of a customer that will never exist (they never resolve)."""
    return [
        {**document, "id": f"ghost-{n}", "external_customer_id": GHOST}
        for n, document in enumerate(documents[::7][:count])
    ]


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
    store_under_test: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    full = build_catalog(customers=6, line_items_per_customer=3)
    initial_file = write_catalog(tmp_path, catalog_without(full, "cus_5"), "initial.json")
    full_file = write_catalog(tmp_path, full, "full.json")
    documents = list(generate_events(full, 1500, seed=5, duplicate_rate=0.03))
    ghosts = ghost_events(documents, 40)
    settings = settings_for(kafka_bootstrap, store_under_test, unique_name).model_copy(
        update={"reprocess_group": unique_name("reprocess")}
    )
    ensure_topics(settings, worker_topics(settings))
    produce(settings, documents + ghosts)

    # 1. The late customer's events (and the ghost's) are stored raw, unprocessed,
    #    with the events that match no line item at all (e.g. filtered regions).
    run_usage(settings, catalog_file=str(initial_file), exit_when_idle_s=2.0)
    timestamps = {d["id"]: parse_timestamp(d["timestamp"]) for d in documents + ghosts}
    late_ids = {d["id"] for d in documents if d["external_customer_id"] == LATE_CUSTOMER}
    ghost_ids = {d["id"] for d in ghosts}
    unresolved_before = never_priced(catalog_without(full, "cus_5"), documents + ghosts)
    unresolved_forever = never_priced(full, documents + ghosts)
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
    invoice = stored_totals(settings)
    assert invoice == expected_invoice(full, documents + ghosts)
    assert unprocessed_ids(settings) == unresolved_forever

    # 3. The same request again is ignored; an overlapping one re-publishes only
    #    what is still unprocessed in its range (events that never resolve), once.
    overlap_start = datetime(2026, 1, 12, tzinfo=UTC)
    still_unresolved = {i for i in unresolved_forever if timestamps[i] >= overlap_start}
    #    Reusing a finished request's id for another window is dead-lettered.
    publish_request(settings, request("r1"))
    publish_request(settings, request("r1", overlap_start))
    publish_request(settings, request("r2", overlap_start))
    stats = run_reprocess(settings, exit_when_idle_s=2.0)
    assert (stats.requests_completed, stats.requests_ignored) == (1, 1)
    assert stats.requests_rejected == 1
    assert stats.republished == len(still_unresolved) < len(unresolved_before)
    run_usage(settings, catalog_file=str(full_file), exit_when_idle_s=2.0)
    assert stored_totals(settings) == invoice

    gateway = open_gateway(settings.store_url)
    try:
        first = load_progress(gateway, "t1", "prod", "r1")
        second = load_progress(gateway, "t1", "prod", "r2")
        # No environment_id: the rejection is recorded without a scope.
        rejected = load_progress(gateway, "", "", "bad-1")
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
    letters = dead_letter_headers(settings, 2)
    assert sorted((h["reason"].decode(), h["source_topic"]) for h in letters) == [
        ("missing_field", topic),
        ("request_id_reused", topic),
    ]

"""The usage batch step on a real ClickHouse: prepare -> write, restart and replay.

No Kafka here: messages are built as the consumer would hand them over. The
expected invoice is computed independently, by `tests/reference.py` from the
catalog JSON and the events alone (never by the worker's own rater).
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from tests.integration.store.conftest import StoreUnderTest
from tests.reference import reference_invoice
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.domain.engine import DEFAULT_MAX_FINGERPRINTS
from worker.domain.validation import DEFAULT_LIMITS
from worker.samples.synthetic import build_catalog, generate_events
from worker.store import rating_reads
from worker.store.processed import line_item_totals
from worker.stream.usage_batch import SourceMessage, UsageBatchProcessor

NOW = datetime(2026, 3, 1, tzinfo=UTC)
TOPIC = "events"
Line = dict[str, object]


def catalog_index() -> tuple[CatalogIndex, dict[str, object]]:
    document = build_catalog(customers=6, line_items_per_customer=4)
    return CatalogIndex(parse_documents(document)), document


def messages(document: dict[str, object], count: int) -> list[SourceMessage]:
    """Events alternate between two partitions whatever their customer: even a
    producer that keys inconsistently gets one state per line item in a process."""
    out = []
    for offset, event in enumerate(generate_events(document, count, seed=3, duplicate_rate=0.1)):
        out.append(SourceMessage(TOPIC, offset % 2, offset, orjson.dumps(event), 1_770_000_000_000))
    out.append(SourceMessage(TOPIC, 0, count, b"{not json", None))
    out.append(SourceMessage(TOPIC, 1, count + 1, orjson.dumps({"tenant_id": "t1"}), None))
    return out


def expected_invoice(document: dict[str, object], stream: list[SourceMessage]) -> list[Line]:
    """The independent reference (`tests/reference.py`) over the stream's valid events."""
    documents = []
    for message in stream:
        try:
            decoded = orjson.loads(message.value or b"")
        except orjson.JSONDecodeError:
            continue
        if decoded.get("event_name") and decoded.get("external_customer_id"):
            documents.append({"id": message.fallback_id, **decoded})  # an id of its own wins
    return reference_invoice(document, documents, "t1", record_time=NOW)


def stored_invoice(store: StoreUnderTest) -> list[Line]:
    """The stored t1/prod lines as `query line-items --json` prints them."""
    return [total.to_json() for total in line_item_totals(store.gateway, "t1", "prod")]


def run(processor: UsageBatchProcessor, stream: list[SourceMessage], size: int) -> None:
    for start in range(0, len(stream), size):
        batch = processor.prepare(stream[start : start + size])
        processor.write(batch)
        processor.committed(batch)


def test_batches_written_to_clickhouse_add_up_to_the_invoice(migrated: StoreUnderTest) -> None:
    index, document = catalog_index()
    stream = messages(document, 1500)
    processor = UsageBatchProcessor(
        migrated.gateway, index, limits=DEFAULT_LIMITS, clock=lambda: NOW
    )
    processor.assign([(TOPIC, 0), (TOPIC, 1)])
    dead = processor.prepare(stream[-2:]).dead_letters
    assert [d.reason for d in dead] == ["invalid_json", "missing_field"]

    run(processor, stream, 400)

    assert stored_invoice(migrated) == expected_invoice(document, stream)


@pytest.mark.parametrize(
    ("read_chunk", "fingerprints"),
    [
        (rating_reads.STORE_READ_CHUNK, DEFAULT_MAX_FINGERPRINTS),
        (3, DEFAULT_MAX_FINGERPRINTS),
        (3, 0),
    ],
)
def test_restart_replays_the_uncommitted_batch_without_double_counting(
    migrated: StoreUnderTest,
    monkeypatch: pytest.MonkeyPatch,
    read_chunk: int,
    fingerprints: int,
) -> None:
    # Tiny read chunks split the restart's state loads and dedup lookups into many
    # reads; no fingerprint memory sends every hash to ClickHouse.
    monkeypatch.setattr(rating_reads, "STORE_READ_CHUNK", read_chunk)
    index, document = catalog_index()
    stream = messages(document, 1500)

    def worker() -> UsageBatchProcessor:
        return UsageBatchProcessor(
            migrated.gateway,
            index,
            limits=DEFAULT_LIMITS,
            clock=lambda: NOW,
            max_dedup_fingerprints=fingerprints,
        )

    run(worker(), stream[:900], 300)  # batch 600..900 written but, say, never committed
    run(worker(), stream[600:], 250)  # restarted: redelivered from the last committed offset

    assert stored_invoice(migrated) == expected_invoice(document, stream)


def test_replaying_the_whole_stream_into_a_fresh_consumer_changes_nothing(
    migrated: StoreUnderTest,
) -> None:
    index, document = catalog_index()
    stream = messages(document, 800)
    run(UsageBatchProcessor(migrated.gateway, index, limits=DEFAULT_LIMITS), stream, 300)
    before = stored_invoice(migrated)
    run(UsageBatchProcessor(migrated.gateway, index, limits=DEFAULT_LIMITS), stream, 170)
    assert stored_invoice(migrated) == before == expected_invoice(document, stream)

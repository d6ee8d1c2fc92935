"""insert_rated: the Arrow columns of ProcessedRows equal those of row objects, value for value."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.integration.store.conftest import StoreUnderTest
from tests.processed_rows import insert_processed, processed_columns, processed_events
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.domain.engine import UsageRater
from worker.domain.processed_rows import ProcessedRows
from worker.domain.validation import event_from_document
from worker.samples.synthetic import SAMPLE_START, build_catalog, generate_events
from worker.store.errors import StoreError
from worker.store.processed import MatchColumnCache, insert_rated, rated_columns

INGESTED = datetime(2026, 2, 3, 4, 5, 6, 789_012, tzinfo=UTC)
ALL_ROWS = "SELECT * FROM events_processed ORDER BY tenant_id, sub_line_item_id, period_id, id"


def _rated_batches(*, ingested_at: datetime | None) -> list[ProcessedRows]:
    """Three rated batches of synthetic traffic over every aggregation type.

    Each customer gets a twin of its first line item (same meter), so events
    are rated against several line items; the third batch is processed 100 days
    on (lags clamp to 2**32 - 1 ms), the second before its events (lag 0).
    """
    catalog = build_catalog(customers=12, line_items_per_customer=4)
    for subscription in catalog["subscriptions"]:
        first = subscription["line_items"][0]
        subscription["line_items"].append({**first, "id": first["id"] + "_twin", "free_units": 0})
    rater = UsageRater(CatalogIndex(parse_documents(catalog)))
    documents = list(generate_events(catalog, 900, duplicate_rate=0.05))
    processed_at = [
        SAMPLE_START + timedelta(days=40),
        SAMPLE_START - timedelta(days=1),
        SAMPLE_START + timedelta(days=100),
    ]
    batches = []
    for n, when in enumerate(processed_at):
        events = [
            dataclasses.replace(
                event_from_document(doc, fallback_id=f"e{n}-{i}", fallback_timestamp=when),
                ingested_at=ingested_at,
            )
            for i, doc in enumerate(documents[n * 300 : (n + 1) * 300])
        ]
        batches.append(rater.rate(rater.resolve(events), when).rows)
        rater.forget_hashes()
    assert all(len(batch) > 300 for batch in batches)  # several line items per event
    return batches


@pytest.fixture(scope="module")
def batches() -> list[ProcessedRows]:
    return _rated_batches(ingested_at=INGESTED)


def test_columns_equal_those_of_the_row_objects(batches: list[ProcessedRows]) -> None:
    now = datetime.now(UTC)
    for batch in batches:
        slow = processed_columns(processed_events(batch), now)
        fast = rated_columns(batch, now)
        assert fast.keys() == slow.keys()
        for name, values in slow.items():
            assert fast[name].to_pylist() == values, name


@pytest.mark.parametrize("limit", [10, 200_000])
def test_a_writer_cache_gives_the_same_columns(batches: list[ProcessedRows], limit: int) -> None:
    """Matches seen before come from the cache; a full cache starts over."""
    cache = MatchColumnCache(limit=limit)
    now = datetime.now(UTC)
    for batch in [*batches, *batches]:
        slow = processed_columns(processed_events(batch), now)
        fast = rated_columns(batch, now, cache)
        for name, values in slow.items():
            assert fast[name].to_pylist() == values, name
        assert 0 < len(cache) <= max(limit, len(batch))


def test_stores_the_same_rows_as_insert_processed(
    migrated: StoreUnderTest, batches: list[ProcessedRows]
) -> None:
    gateway = migrated.gateway
    for n, batch in enumerate(batches):
        insert_processed(gateway, processed_events(batch), dedup_token=f"slow-{n}")
    slow = gateway.query(ALL_ROWS)
    gateway.execute(f"TRUNCATE TABLE {migrated.rows_table('events_processed')}")
    cache = MatchColumnCache()
    for n, batch in enumerate(batches):
        inserted = insert_rated(gateway, batch, dedup_token=f"fast-{n}", cache=cache)
        assert inserted == len(batch)
    fast = gateway.query(ALL_ROWS)
    assert len(fast) == sum(map(len, batches))
    assert fast == slow
    # Byte for byte: same Decimal exponents, same time zones, same types.
    assert [list(map(repr, row)) for row in fast] == [list(map(repr, row)) for row in slow]


def test_same_token_twice_leaves_one_copy(
    migrated: StoreUnderTest, batches: list[ProcessedRows]
) -> None:
    insert_rated(migrated.gateway, batches[0], dedup_token="events:0:0-299")
    insert_rated(migrated.gateway, batches[0], dedup_token="events:0:0-299")
    assert migrated.gateway.query("SELECT count() FROM events_processed") == [(len(batches[0]),)]


def test_missing_ingested_at_is_the_insert_time(migrated: StoreUnderTest) -> None:
    batch = _rated_batches(ingested_at=None)[0]
    before = datetime.now(UTC)
    insert_rated(migrated.gateway, batch, dedup_token=None)
    after = datetime.now(UTC)
    [(low, high, distinct)] = migrated.gateway.query(
        "SELECT min(ingested_at), max(ingested_at), uniqExact(ingested_at) FROM events_processed"
    )
    assert before - timedelta(milliseconds=1) <= low == high <= after and distinct == 1


def test_more_than_15_places_is_refused_not_rounded(
    migrated: StoreUnderTest, batches: list[ProcessedRows]
) -> None:
    bad = _first_row(batches[0], cost=Decimal("1e-16"))
    with pytest.raises(StoreError, match="cannot convert rows for events_processed"):
        insert_rated(migrated.gateway, bad, dedup_token=None)
    assert migrated.gateway.query("SELECT count() FROM events_processed") == [(0,)]


def test_decimals_in_any_notation_are_stored_exactly(
    migrated: StoreUnderTest, batches: list[ProcessedRows]
) -> None:
    values = {
        "qty_total": Decimal("12345678901234567890123.123456789012345"),
        "qty_billable": Decimal("1E+3"),
        "qty_free_applied": Decimal("0E-15"),
        "tier_snapshot": Decimal("1E-15"),
        "unit_cost": Decimal("1.000000E-9"),
        "cost": Decimal("-0.000000001000000"),
    }
    exotic = _first_row(batches[0], **values)
    insert_rated(migrated.gateway, exotic, dedup_token=None)
    [stored] = migrated.gateway.query(f"SELECT {', '.join(values)} FROM events_processed")
    assert stored == tuple(values.values())


def test_an_empty_batch_inserts_nothing(migrated: StoreUnderTest) -> None:
    empty = ProcessedRows(datetime.now(UTC))
    assert insert_rated(migrated.gateway, empty, dedup_token="t") == 0
    assert migrated.gateway.query("SELECT count() FROM events_processed") == [(0,)]


def _first_row(rows: ProcessedRows, **decimals: Decimal) -> ProcessedRows:
    """The first row of ``rows`` alone, with some decimal columns replaced."""
    columns = {
        field.name: getattr(rows, field.name)[:1]
        for field in dataclasses.fields(rows)
        if field.name != "processed_at"
    }
    columns.update({name: (value,) for name, value in decimals.items()})
    return dataclasses.replace(rows, **columns)

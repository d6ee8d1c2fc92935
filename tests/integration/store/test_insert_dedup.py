"""The ``insert_deduplication_token`` contract of every gateway's insert, on every
available ClickHouse: the token, not the data, decides (DESIGN.md §5).

A table with a deduplication window also drops a block whose *data* repeats
when no token is given; so these tests insert different data under one token
(a batch re-rated after a rebalance carries new ``processed_at`` and
``version``), and equal data under two tokens, to fail if the token were lost.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from tests.integration.store.conftest import StoreUnderTest
from tests.integration.store.rows import event, row
from tests.processed_rows import insert_processed
from worker.domain.events import ProcessedEvent
from worker.store.processed import PROCESSED_TABLE
from worker.store.raw import EVENTS_TABLE, insert_raw

_AT = datetime(2026, 3, 2, tzinfo=UTC)


def _rated(version: int, qty: str) -> list[ProcessedEvent]:
    return [row(f"e{n}", qty=qty, version=version) for n in range(3)]


def test_a_token_seen_before_drops_the_insert_whatever_its_data(
    migrated: StoreUnderTest,
) -> None:
    gateway = migrated.gateway
    assert insert_processed(gateway, _rated(1, "2"), dedup_token="events:0:0-2") == 3
    insert_processed(gateway, _rated(2, "5"), dedup_token="events:0:0-2")
    assert gateway.query(
        f"SELECT count(), sum(qty_total), max(version) FROM {PROCESSED_TABLE}"
    ) == [(3, Decimal(6), 1)]
    insert_raw(gateway, [event("e1", properties={"n": 1})], dedup_token="events:0:0-2")
    insert_raw(gateway, [event("e1", properties={"n": 2})], dedup_token="events:0:0-2")
    assert gateway.query(f"SELECT properties FROM {EVENTS_TABLE}") == [('{"n":1}',)]


def test_equal_data_under_another_token_is_stored_again(migrated: StoreUnderTest) -> None:
    gateway = migrated.gateway
    batch = [event("e1"), event("e2")]
    insert_raw(gateway, batch, dedup_token="events:0:0-1", ingested_at=_AT)
    insert_raw(gateway, batch, dedup_token="events:1:0-1", ingested_at=_AT)
    assert gateway.query(f"SELECT count() FROM {EVENTS_TABLE}") == [(4,)]

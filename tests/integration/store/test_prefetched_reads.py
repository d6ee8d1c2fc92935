"""First-touch snapshots read ahead (``UsageBatchProcessor.prefetch``) on a real
ClickHouse: the rows are those of reading at rating time, the read-ahead
saves the rating its snapshot reads, and it is never used once a state was
dropped after it (when rows may have been stored since).
"""

from __future__ import annotations

from typing import Any

from tests.integration.store.conftest import StoreUnderTest
from tests.integration.store.test_usage_batch import (
    TOPIC,
    catalog_index,
    expected_invoice,
    messages,
    run,
    stored_invoice,
)
from tests.integration.store.test_usage_batch_core import PROCESSED_ROWS, processor
from worker.domain.catalog_index import CatalogIndex
from worker.store.gateway import Gateway
from worker.stream.usage_batch import PreparedBatch, SourceMessage, UsageBatchProcessor


class CountingGateway:
    """The store's gateway, counting its snapshot reads (``load_snapshots``)."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self.snapshot_reads = 0

    def query(self, sql: str, params: Any = None) -> Any:
        if "argMax(qty_total" in sql:
            self.snapshot_reads += 1
        return self._gateway.query(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gateway, name)


def counting_processor(
    store: StoreUnderTest, index: CatalogIndex
) -> tuple[UsageBatchProcessor, CountingGateway]:
    gateway = CountingGateway(store.gateway)
    worker = processor(store, index, core=True)
    worker._gateway = gateway  # type: ignore[assignment]
    worker._reads._gateway = gateway  # type: ignore[assignment]
    return worker, gateway


def read_ahead(worker: UsageBatchProcessor, batch: list[SourceMessage]) -> PreparedBatch:
    worker.route(batch)
    worker.prefetch(batch)
    return worker.prepare(batch)


def rated(batch: PreparedBatch) -> dict[str, list[Any]]:
    assert batch.core_rows is not None
    return {name: array.to_pylist() for name, array in batch.core_rows.rated.items()}


def test_a_restart_reading_ahead_stores_the_rows_of_reading_at_rating_time(
    migrated: StoreUnderTest,
) -> None:
    index, document = catalog_index()
    stream = messages(document, 600)
    run(processor(migrated, index, core=True), stream, 150)
    reference_priced = migrated.gateway.query(PROCESSED_ROWS)
    migrated.gateway.execute(f"TRUNCATE TABLE {migrated.rows_table('events_processed')}")
    migrated.gateway.execute(f"TRUNCATE TABLE {migrated.rows_table('events')}")

    run(processor(migrated, index, core=True), stream[:300], 150)
    # A restart: every state is read from the store, ahead of rating.
    restarted, counting = counting_processor(migrated, index)
    for start in range(300, len(stream), 150):
        batch = stream[start : start + 150]
        restarted.route(batch)
        restarted.prefetch(batch)
        read_before_rating = counting.snapshot_reads
        prepared = restarted.prepare(batch)
        assert counting.snapshot_reads == read_before_rating  # rating read nothing more
        restarted.write(prepared)
        restarted.committed(prepared)

    assert counting.snapshot_reads > 0
    assert migrated.gateway.query(PROCESSED_ROWS) == reference_priced
    assert stored_invoice(migrated) == expected_invoice(document, stream)


def test_what_was_read_ahead_is_not_used_after_a_state_was_dropped(
    migrated: StoreUnderTest,
) -> None:
    index, document = catalog_index()
    stream = messages(document, 400)
    first, later = stream[:200], stream[200:]

    # Read ahead on an empty store, then the first half is stored (as if by the
    # partition's previous owner), then a revoke drops states before rating.
    dropped = processor(migrated, index, core=True)
    dropped.route(later)
    dropped.prefetch(later)
    run(processor(migrated, index, core=True), first, 200)
    dropped.revoke([(TOPIC, 1)])
    dropped.assign([(TOPIC, 1)])
    after_drop = dropped.prepare(later)

    # The same without the drop would rate on the stale read-ahead.
    migrated.gateway.execute(f"TRUNCATE TABLE {migrated.rows_table('events_processed')}")
    migrated.gateway.execute(f"TRUNCATE TABLE {migrated.rows_table('events')}")
    stale = processor(migrated, index, core=True)
    stale.route(later)
    stale.prefetch(later)
    run(processor(migrated, index, core=True), first, 200)
    stale_rows = rated(stale.prepare(later))

    fresh_rows = rated(processor(migrated, index, core=True).prepare(later))
    assert rated(after_drop) == fresh_rows
    assert stale_rows != fresh_rows  # the read-ahead did matter here


def test_nothing_is_read_ahead_while_a_rated_batch_may_be_unwritten_after_a_drop(
    migrated: StoreUnderTest,
) -> None:
    """A revoke between rating a batch and reading ahead for the next drops
    states whose rows may still be on their way to the store: the next batch
    reads them at rating time, after that write."""
    index, document = catalog_index()
    stream = messages(document, 400)
    first, later = stream[:200], stream[200:]
    worker, counting = counting_processor(migrated, index)
    pending = worker.prepare(first)  # rated; its write is still to come
    worker.revoke([(TOPIC, 1)])
    worker.assign([(TOPIC, 1)])
    worker.route(later)
    before = counting.snapshot_reads
    worker.prefetch(later)
    assert counting.snapshot_reads == before
    worker.write(pending)
    worker.committed(pending)

    assert rated(worker.prepare(later)) == rated(
        processor(migrated, index, core=True).prepare(later)
    )

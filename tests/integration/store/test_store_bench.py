"""The store benchmark runs end to end at a tiny size (its figures are not checked)."""

from __future__ import annotations

from tests.integration.store.conftest import StoreUnderTest
from worker.benchmarks.store import measure, rated_batches


def test_rated_batches_are_distinct_rows() -> None:
    batches = rated_batches(25_000, 5_000, distinct_events=6_000)
    rows = [
        (match.state_key, event.id)
        for batch in batches
        for match, event in zip(batch.matches, batch.events, strict=True)
    ]
    assert len(rows) >= 25_000
    assert len(set(rows)) == len(rows)


def test_measure_runs_on_small_tables(migrated: StoreUnderTest) -> None:
    result = measure(
        migrated.gateway, insert_rows=12_000, batch_size=4_000, table_rows=30_000, say=print
    )
    assert result.insert_rows >= 12_000
    assert result.dedup_keys == 10_000
    assert result.dedup_found > 0  # about 10% of the keys are stored hashes
    assert result.snapshot_line_items == 1_000
    assert result.table_rows == 30_000

"""``EW_ENGINE=core`` in the usage batch step on a real ClickHouse.

The fused core (decode, route, measure and rate in ``worker._core``) must
store exactly the rows the Python reference path stores - raw ``events`` and
priced ``events_processed``, every column but the insert time - answer the
same dead letters and counts, and add up to the invoice of the independent
reference (``tests/reference.py``), across a restart that replays a batch and
a catalog update.
"""

from __future__ import annotations

from typing import Any

import orjson

from tests.integration.store.conftest import StoreUnderTest
from tests.integration.store.test_usage_batch import (
    NOW,
    TOPIC,
    catalog_index,
    expected_invoice,
    messages,
    run,
    stored_invoice,
)
from worker.domain.catalog_index import CatalogIndex
from worker.domain.validation import DEFAULT_LIMITS
from worker.stream.usage_batch import PreparedBatch, SourceMessage, UsageBatchProcessor

# Every column but ingested_at (the insert's wall-clock time); processed_at
# and version are the processor's clock (NOW) in both runs.
PROCESSED_ROWS = (
    "SELECT * EXCEPT ingested_at FROM events_processed FINAL"
    " ORDER BY sub_line_item_id, period_id, id, unique_hash"
)
RAW_ROWS = "SELECT * EXCEPT ingested_at FROM events FINAL ORDER BY id"


def tricky(offset: int) -> list[SourceMessage]:
    """Events whose raw columns exercise the core's number and text rules."""
    properties: list[dict[str, Any]] = [
        {"a": 1e-7, "b": "1_000.5", "c": 2.5e16, "d": -3, "e": "١٢", "f": True, "g": None},
        {"a": 0.1, "b": " 7 ", "nested": {"x": [1.5, "y"]}, "q": "\u3000", "big": 2**64 - 1},
    ]
    return [
        SourceMessage(
            TOPIC,
            0,
            offset + n,
            orjson.dumps(
                {
                    "tenant_id": "t1",
                    "environment_id": "prod",
                    "event_name": " api_call ",
                    "external_customer_id": "nobody",
                    "timestamp": "2026-02-03T04:05:06.1234567+01:30",
                    "properties": props,
                }
            ),
            None,
        )
        for n, props in enumerate(properties)
    ]


def processor(store: StoreUnderTest, index: CatalogIndex, *, core: bool) -> UsageBatchProcessor:
    worker = UsageBatchProcessor(
        store.gateway, index, limits=DEFAULT_LIMITS, clock=lambda: NOW, fused_core=core
    )
    worker.assign([(TOPIC, 0), (TOPIC, 1)])
    return worker


def summary(batch: PreparedBatch) -> dict[str, Any]:
    """What a prepared batch says besides its rows."""
    return {
        "dead_letters": [
            (d.message.partition, d.message.offset, d.reason, d.error) for d in batch.dead_letters
        ],
        "unresolved": dict(batch.unresolved),
        "missing_fields": batch.missing_fields,
        "outcomes": dict(batch.outcomes),
        "rows": batch.row_count,
        "events": batch.event_count,
        "next_offsets": batch.next_offsets,
        "lag_samples": batch.sampled_timestamps(50),
    }


def test_core_rows_equal_the_reference_rows(migrated: StoreUnderTest) -> None:
    index, document = catalog_index()
    stream = messages(document, 600)
    extra = tricky(len(stream))
    stream = stream[:-2] + extra + stream[-2:]

    # One batch on an empty store: the same dead letters, counts and touched states.
    python, core = processor(migrated, index, core=False), processor(migrated, index, core=True)
    python_batch, core_batch = python.prepare(stream), core.prepare(stream)
    assert core_batch.core_rows is not None  # the fused core did the work
    assert summary(core_batch) == summary(python_batch)
    assert len(core_batch.dead_letters) == 2
    assert core_batch.unresolved  # the tricky events name no known customer
    assert core._keys_by_partition == python._keys_by_partition
    assert all(core._keys_by_partition.values())

    run(processor(migrated, index, core=False), stream, 200)
    reference_rows = migrated.gateway.query(RAW_ROWS)
    reference_priced = migrated.gateway.query(PROCESSED_ROWS)
    for table in ("events", "events_processed"):
        migrated.gateway.execute(f"TRUNCATE TABLE {migrated.rows_table(table)}")

    # Other batch boundaries (other insert tokens), a restart that replays a
    # written batch (state reloaded from the store, redeliveries skipped) and
    # a catalog update (new tables in the core, the state kept).
    run(processor(migrated, index, core=True), stream[:300], 150)
    restarted = processor(migrated, index, core=True)
    run(restarted, stream[150:450], 150)
    restarted.replace_index(catalog_index()[0])
    run(restarted, stream[450:], 150)

    stored_ids = {row[2] for row in reference_rows}
    assert {message.fallback_id for message in extra} <= stored_ids
    assert len(stored_ids) > 500  # the synthetic stream repeats some ids
    assert migrated.gateway.query(RAW_ROWS) == reference_rows
    assert len(reference_priced) > 300
    assert migrated.gateway.query(PROCESSED_ROWS) == reference_priced
    assert stored_invoice(migrated) == expected_invoice(document, stream)

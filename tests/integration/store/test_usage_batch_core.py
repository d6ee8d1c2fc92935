"""``EW_ENGINE=core`` in the usage batch step on a real ClickHouse.

The raw ``events`` rows written from the compiled core's columns must be the
rows the reference path writes, column for column; the priced rows rated by
the core's rating state must be the reference's, column for column (but the
processing time), and add up to the same invoice.
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
from worker.domain.validation import DEFAULT_LIMITS
from worker.stream.usage_batch import SourceMessage, UsageBatchProcessor

PROCESSED_ROWS = (
    "SELECT tenant_id, environment_id, id, customer_id, subscription_id, sub_line_item_id,"
    " price_id, feature_id, meter_id, period_id, currency, unique_hash, qty_total,"
    " qty_billable, qty_free_applied, tier_snapshot, unit_cost, cost"
    " FROM events_processed FINAL ORDER BY sub_line_item_id, period_id, id"
)
RAW_ROWS = (
    "SELECT tenant_id, environment_id, id, event_name, external_customer_id, customer_id,"
    " source, timestamp, properties, canonical_properties, numeric_properties"
    " FROM events FINAL ORDER BY id"
)


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


def test_core_raw_rows_equal_the_reference_rows(migrated: StoreUnderTest) -> None:
    index, document = catalog_index()
    stream = messages(document, 600)
    extra = tricky(len(stream))
    stream = stream[:-2] + extra + stream[-2:]

    def processor(core: bool) -> UsageBatchProcessor:
        worker = UsageBatchProcessor(
            migrated.gateway,
            index,
            limits=DEFAULT_LIMITS,
            clock=lambda: NOW,
            decode_in_core=core,
            rate_in_core=core,
        )
        worker.assign([(TOPIC, 0), (TOPIC, 1)])
        return worker

    run(processor(False), stream, 200)
    reference_rows = migrated.gateway.query(RAW_ROWS)
    reference_priced = migrated.gateway.query(PROCESSED_ROWS)
    for table in ("events", "events_processed"):
        migrated.gateway.execute(f"TRUNCATE TABLE {migrated.rows_table(table)}")

    prepared = processor(True).prepare(stream[:150])
    assert prepared.core is not None  # the core's columns were used
    run(processor(True), stream, 150)  # other batch boundaries: other insert tokens

    stored_ids = {row[2] for row in reference_rows}
    assert {message.fallback_id for message in extra} <= stored_ids
    assert len(stored_ids) > 500  # the synthetic stream repeats some ids
    assert migrated.gateway.query(RAW_ROWS) == reference_rows
    assert len(reference_priced) > 300
    assert migrated.gateway.query(PROCESSED_ROWS) == reference_priced
    assert stored_invoice(migrated) == expected_invoice(document, stream)

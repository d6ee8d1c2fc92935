"""``EW_ENGINE=core`` in the usage batch step on a real ClickHouse.

The raw ``events`` rows written from the compiled core's columns must be the
rows the reference path writes, column for column, and rating is unchanged.
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
            migrated.gateway, index, limits=DEFAULT_LIMITS, clock=lambda: NOW, decode_in_core=core
        )
        worker.assign([(TOPIC, 0), (TOPIC, 1)])
        return worker

    run(processor(False), stream, 200)
    reference_rows = migrated.gateway.query(RAW_ROWS)
    migrated.gateway.execute(f"TRUNCATE TABLE {migrated.rows_table('events')}")

    core = processor(True)
    prepared = core.prepare(stream[:150])
    assert prepared.core is not None  # the core's columns were used
    run(core, stream, 150)  # other batch boundaries: other insert tokens

    stored_ids = {row[2] for row in reference_rows}
    assert {message.fallback_id for message in extra} <= stored_ids
    assert len(stored_ids) > 500  # the synthetic stream repeats some ids
    assert migrated.gateway.query(RAW_ROWS) == reference_rows
    assert stored_invoice(migrated) == expected_invoice(document, stream)

"""The core's routing and metering against the Python reference, event for event.

Random catalogs (customers with and without external ids, subscriptions in
every status with end and cancellation dates, billing cycles in several IANA
zones, line items with their own windows, meters of all 8 aggregations with
filters and multipliers) and random events (known and unknown customers,
timestamps on and around period boundaries, far outside the precomputed
periods, numbers in every spelling) go through
``CatalogIndex.resolve`` + ``metering.measure`` and through the core. Every
field must be equal: the customer, the unresolved reason, and per match the
line item, period, quantity, unique hash and missing-field flag.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.core.strategies import NOW, catalogs, events
from worker.core_catalog import CoreRouting
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.domain.metering import measure
from worker.domain.money import exact
from worker.domain.validation import EventLimits, InvalidEvent, decode_event
from worker.store.arrow_columns import epoch_us
from worker.stream.usage_batch import SourceMessage


@exact
def reference(index: CatalogIndex, messages: list[SourceMessage]) -> list[tuple[Any, ...]]:
    """Per accepted message: customer, unresolved reason, matches (all fields)."""
    answers: list[tuple[Any, ...]] = []
    for message in messages:
        assert message.value is not None
        try:
            event = decode_event(
                message.value, fallback_id=message.fallback_id, fallback_timestamp=NOW
            )
        except InvalidEvent:
            continue
        resolution = index.resolve(event)
        matches = []
        for match in resolution.matches:
            measurement = measure(match.binding.meter, event, match.period.start, match.period.end)
            matches.append(
                (
                    match.binding.line_item_id,
                    match.period.period_id,
                    epoch_us(match.period.start),
                    epoch_us(match.period.end),
                    measurement.quantity,
                    measurement.unique_hash,
                    measurement.field_missing,
                )
            )
        reason = None if resolution.unresolved is None else resolution.unresolved.value
        answers.append((resolution.customer_id, reason, matches))
    return answers


def core(routing: CoreRouting, messages: list[SourceMessage]) -> list[tuple[Any, ...]]:
    resolved = routing.resolve(messages, NOW, EventLimits())
    reasons = dict(resolved.unresolved)
    answers: list[tuple[Any, ...]] = []
    for row, customer in enumerate(resolved.customers):
        matches = [
            (
                m.binding.line_item_id,
                m.period_id,
                m.period_start_us,
                m.period_end_us,
                m.quantity,
                m.unique_hash,
                m.field_missing,
            )
            for m in resolved.matches
            if m.row == row
        ]
        answers.append((customer, reasons.get(row), matches))
    return answers


@settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_core_routes_and_measures_exactly_like_the_reference(data: st.DataObject) -> None:
    index = CatalogIndex(parse_documents(data.draw(catalogs())))
    routing = CoreRouting(index, NOW, before=timedelta(days=2), after=timedelta(days=1))
    payloads = data.draw(st.lists(events(index), min_size=1, max_size=12))
    messages = [SourceMessage("events", 0, i, value) for i, value in enumerate(payloads)]
    want = reference(index, messages)
    got = core(routing, messages)
    assert len(got) == len(want)
    for got_row, want_row in zip(got, want, strict=True):
        assert got_row[:2] == want_row[:2]
        assert len(got_row[2]) == len(want_row[2])
        for got_match, want_match in zip(got_row[2], want_row[2], strict=True):
            assert got_match[:4] == want_match[:4]
            # Equal values, and the core's is exact at 15 places (no -0 or other spelling).
            assert got_match[4] == want_match[4]
            assert got_match[5:] == want_match[5:]


def test_quantities_are_exact_digit_products() -> None:
    """SUM_WITH_MULTIPLIER rounds the exact product once, half away from zero."""
    documents = [
        {
            "tenant_id": "t1",
            "environment_id": "prod",
            "customers": [{"id": "c0"}],
            "meters": [
                {
                    "id": "m0",
                    "event_name": "api",
                    "aggregation": {
                        "type": "SUM_WITH_MULTIPLIER",
                        "field": "n",
                        "multiplier": "0.5",
                    },
                }
            ],
            "prices": [
                {
                    "id": "p",
                    "meter_id": "m0",
                    "currency": "usd",
                    "billing_model": "FLAT_FEE",
                    "amount": "1",
                }
            ],
            "subscriptions": [
                {
                    "id": "s0",
                    "customer_id": "c0",
                    "start_date": "2026-01-01T00:00:00Z",
                    "line_items": [{"id": "li", "price_id": "p"}],
                }
            ],
        }
    ]
    index = CatalogIndex(parse_documents(documents))
    routing = CoreRouting(index, NOW)
    values = [
        "0.000000000000001",
        "0.000000000000003",
        "12345678901234567.000000000000001",
        "1e1000001",
    ]
    messages = [
        SourceMessage(
            "events",
            0,
            i,
            json.dumps(
                {
                    "tenant_id": "t1",
                    "environment_id": "prod",
                    "event_name": "api",
                    "customer_id": "c0",
                    "timestamp": "2026-03-01T00:00:00Z",
                    "properties": {"n": value},
                }
            ).encode(),
        )
        for i, value in enumerate(values)
    ]
    resolved = routing.resolve(messages, NOW, EventLimits())
    assert [m.quantity for m in resolved.matches] == [
        Decimal("0.000000000000001"),  # 0.0000000000000005 rounds away from zero
        Decimal("0.000000000000002"),  # 0.0000000000000015 too
        Decimal("6172839450617283.500000000000001"),  # 0.5 x ...0005: half up
        Decimal(0),
    ]
    # The last one is at or above 10^18: unusable in both.
    assert [m.field_missing for m in resolved.matches] == [False, False, False, True]

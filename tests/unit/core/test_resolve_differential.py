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

import decimal
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.core.strategies import numeric_strings
from worker.core_catalog import CoreRouting, micros
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.domain.metering import AggregationType, Measurement, event_hash, measure
from worker.domain.money import ZERO, exact
from worker.domain.validation import EventLimits, InvalidEvent, decode_event
from worker.stream.usage_batch import SourceMessage

NOW = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # a DST night in Europe
_ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata"]
_UNITS = ["DAILY", "WEEKLY", "MONTHLY", "QUARTERLY", "ANNUAL"]
_STATUSES = ["active", "active", "trialing", "cancelled", "canceled", "paused", " Active "]
_KEYS = ["n", "s", "region"]
_REGION_VALUES = ["us", "eu", "1", "true", "1.5", "0.1"]
_MULTIPLIERS = ["1", "0.5", "2", "-3", "1.000000000000001", "0.333333333333333", "1000000"]


def _instant(draw: st.DrawFn, spread_days: int = 40) -> datetime:
    seconds = draw(st.integers(-spread_days * 86_400, spread_days * 86_400))
    micro = draw(st.sampled_from([0, 0, 1, 999_999, 123_456]))
    return NOW + timedelta(seconds=seconds, microseconds=micro)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@st.composite
def catalogs(draw: st.DrawFn) -> list[dict[str, Any]]:
    documents = []
    for tenant in draw(st.sampled_from([["t1"], ["t1", "t2"]])):
        meters = []
        for number in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(list(AggregationType)))
            aggregation: dict[str, Any] = {"type": kind.value}
            if kind is not AggregationType.COUNT:
                aggregation["field"] = draw(st.sampled_from(["n", "s"]))
            if kind is AggregationType.SUM_WITH_MULTIPLIER:
                aggregation["multiplier"] = draw(st.sampled_from(_MULTIPLIERS))
            meter: dict[str, Any] = {
                "id": f"m{number}",
                "event_name": draw(st.sampled_from(["api", "db", " api "])),
                "aggregation": aggregation,
            }
            if draw(st.booleans()):
                values = draw(st.lists(st.sampled_from(_REGION_VALUES), min_size=1, max_size=3))
                meter["filters"] = [{"key": "region", "values": values}]
            meters.append(meter)
        prices = [
            {
                "id": f"p{m['id']}",
                "meter_id": m["id"],
                "currency": "usd",
                "billing_model": "FLAT_FEE",
                "amount": "1",
            }
            for m in meters
        ]
        customers = []
        for number in range(3):
            customer: dict[str, Any] = {"id": f"c{number}"}
            if draw(st.booleans()):
                customer["external_id"] = draw(st.sampled_from(["x0", "x1", "c0"]))
            customers.append(customer)
        subscriptions = []
        for number in range(draw(st.integers(1, 4))):
            start = NOW - timedelta(
                days=draw(st.integers(-3, 60)), seconds=draw(st.integers(0, 86_399))
            )
            subscription: dict[str, Any] = {
                "id": f"s{number}",
                "customer_id": draw(st.sampled_from(["c0", "c1", "c2"])),
                "status": draw(st.sampled_from(_STATUSES)),
                "start_date": _iso(start),
                "billing_anchor": _iso(_instant(draw, 400)),
                "billing_period": draw(st.sampled_from(_UNITS)),
                "billing_period_count": draw(st.sampled_from([1, 1, 2, 3])),
                "timezone": draw(st.sampled_from(_ZONES)),
                "line_items": [],
            }
            if draw(st.booleans()):
                subscription["end_date"] = _iso(start + timedelta(days=draw(st.integers(1, 60))))
            if draw(st.booleans()):
                subscription["cancelled_at"] = _iso(_instant(draw))
            for item in range(draw(st.sampled_from([0, 1, 1, 2, 3]))):
                line_item: dict[str, Any] = {
                    "id": f"li{number}_{item}",
                    "price_id": draw(st.sampled_from(prices))["id"],
                }
                if draw(st.integers(0, 3)) == 0:
                    line_item["start_date"] = _iso(_instant(draw))
                if draw(st.integers(0, 3)) == 0:
                    line_item["end_date"] = _iso(_instant(draw))
                subscription["line_items"].append(line_item)
            subscriptions.append(subscription)
        documents.append(
            {
                "tenant_id": tenant,
                "environment_id": "prod",
                "customers": customers,
                "meters": meters,
                "prices": prices,
                "subscriptions": subscriptions,
            }
        )
    return documents


_VALUES = st.one_of(
    st.sampled_from(_REGION_VALUES),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(min_value=-(10**19), max_value=10**19, places=20).map(float),
    numeric_strings(),
    st.sampled_from([None, True, [], {}, "1e999999", "0E+999999999", "12.5", " 3 "]),
)


@st.composite
def events(draw: st.DrawFn, index: CatalogIndex) -> bytes:
    """Mostly events of a line item of the catalog, inside its subscription, often
    on a period boundary; the others with unknown or mismatched ids."""
    tables = index.routing_tables()
    document: dict[str, Any] = {"id": draw(st.sampled_from(["e1", "e2", "é\x1f"]))}
    moment = _instant(draw, 60)
    if tables.bindings and draw(st.integers(0, 4)) > 0:
        key = draw(st.sampled_from(sorted(tables.bindings)))
        tenant, environment, customer, name = key
        binding = draw(st.sampled_from(tables.bindings[key]))
        cycle = binding.subscription.cycle
        moment = draw(
            st.sampled_from(
                [
                    moment,
                    binding.start_date + timedelta(days=draw(st.integers(0, 30))),
                    binding.subscription.start_date,
                    cycle.boundary(draw(st.integers(-40, 40))),
                ]
            )
        )
        moment += timedelta(microseconds=draw(st.sampled_from([-1, 0, 0, 1, 7_000])))
        externals = [x for (t, e, x), c in tables.external_ids.items() if (t, e, c) == key[:3]]
        if externals and draw(st.booleans()):
            document["external_customer_id"] = draw(st.sampled_from(externals))
        else:
            document["customer_id"] = customer
    else:
        tenant = draw(st.sampled_from(["t1", "t2", "t3"]))
        environment = draw(st.sampled_from(["prod", ""]))
        name = draw(st.sampled_from(["api", "db", "other"]))
        document["customer_id"] = draw(st.sampled_from(["c0", "c1", "c2", "x0", "nobody"]))
        if draw(st.booleans()):
            document["external_customer_id"] = draw(st.sampled_from(["x0", "x1", "c0"]))
    document.update(tenant_id=tenant, environment_id=environment, event_name=name)
    document["timestamp"] = moment.isoformat()
    document["properties"] = {key: draw(_VALUES) for key in _KEYS if draw(st.integers(0, 4)) > 0}
    return json.dumps(document).encode()


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
            try:
                measurement = measure(
                    match.binding.meter, event, match.period.start, match.period.end
                )
            except decimal.Overflow:
                # The reference's multiply traps past 10^999999 (a poison event,
                # see docs/core.md); the core reads it as unusable, like any
                # value at or above 10^18.
                measurement = Measurement(ZERO, event_hash(event), True)
            matches.append(
                (
                    match.binding.line_item_id,
                    match.period.period_id,
                    micros(match.period.start),
                    micros(match.period.end),
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
    max_examples=300,
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
    # The reference raises decimal.Overflow on the last one (docs/core.md).
    assert [m.field_missing for m in resolved.matches] == [False, False, False, True]

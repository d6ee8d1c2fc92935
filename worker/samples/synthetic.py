"""Deterministic synthetic catalogs and events for the demo, benchmarks and tests.

The catalog exercises every billing model and aggregation type; events are
keyed by customer and spread over a billing month. Same seed, same output.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

SAMPLE_START = datetime(2026, 1, 1, tzinfo=UTC)

_METERS: list[dict[str, Any]] = [
    {
        "id": "m_api",
        "event_name": "api_call",
        "aggregation": {"type": "SUM", "field": "calls"},
        "filters": [{"key": "region", "values": ["us", "eu"]}],
    },
    {"id": "m_req", "event_name": "request", "aggregation": {"type": "COUNT"}},
    {
        "id": "m_users",
        "event_name": "login",
        "aggregation": {"type": "COUNT_UNIQUE", "field": "user"},
    },
    {
        "id": "m_storage",
        "event_name": "storage",
        "aggregation": {"type": "MAX", "field": "gb", "bucket_size": "DAY"},
    },
    {
        "id": "m_tokens",
        "event_name": "tokens",
        "aggregation": {"type": "SUM_WITH_MULTIPLIER", "field": "n", "multiplier": "0.001"},
    },
    {"id": "m_latency", "event_name": "latency", "aggregation": {"type": "AVG", "field": "ms"}},
    {"id": "m_seats", "event_name": "seats", "aggregation": {"type": "LATEST", "field": "count"}},
    {"id": "m_vm", "event_name": "vm", "aggregation": {"type": "WEIGHTED_SUM", "field": "cores"}},
]

_PRICES: list[dict[str, Any]] = [
    {
        "id": "p_api",
        "meter_id": "m_api",
        "currency": "usd",
        "billing_model": "TIERED",
        "tier_mode": "SLAB",
        "tiers": [
            {"up_to": "1000", "unit_amount": "0.01", "flat_amount": "0"},
            {"up_to": "10000", "unit_amount": "0.005", "flat_amount": "1"},
            {"up_to": None, "unit_amount": "0.001", "flat_amount": "0"},
        ],
    },
    {
        "id": "p_req",
        "meter_id": "m_req",
        "currency": "usd",
        "billing_model": "FLAT_FEE",
        "amount": "0.002",
    },
    {
        "id": "p_users",
        "meter_id": "m_users",
        "currency": "usd",
        "billing_model": "PACKAGE",
        "amount": "5",
        "transform_quantity": {"divide_by": "10", "round": "up"},
    },
    {
        "id": "p_storage",
        "meter_id": "m_storage",
        "currency": "usd",
        "billing_model": "TIERED",
        "tier_mode": "VOLUME",
        "tiers": [
            {"up_to": "100", "unit_amount": "0.10", "flat_amount": "2"},
            {"up_to": None, "unit_amount": "0.08", "flat_amount": "0"},
        ],
    },
    {
        "id": "p_tokens",
        "meter_id": "m_tokens",
        "currency": "eur",
        "billing_model": "FLAT_FEE",
        "amount": "0.02",
    },
    {
        "id": "p_latency",
        "meter_id": "m_latency",
        "currency": "usd",
        "billing_model": "FLAT_FEE",
        "amount": "0.001",
    },
    {
        "id": "p_seats",
        "meter_id": "m_seats",
        "currency": "jpy",
        "billing_model": "PACKAGE",
        "amount": "1200",
        "transform_quantity": {"divide_by": "5", "round": "down"},
    },
    {
        "id": "p_vm",
        "meter_id": "m_vm",
        "currency": "usd",
        "billing_model": "FLAT_FEE",
        "amount": "0.75",
    },
]

_FEATURES = [
    {
        "id": f"f_{m['id'][2:]}",
        "meter_id": m["id"],
        "name": m["event_name"].replace("_", " ").title(),
        "unit": "unit",
        "unit_plural": "units",
    }
    for m in _METERS
]

_FREE_UNITS = {
    "p_api": "100",
    "p_req": "50",
    "p_users": "2",
    "p_storage": "0",
    "p_tokens": "1000",
    "p_latency": "0",
    "p_seats": "0",
    "p_vm": "1",
}


def build_catalog(
    *,
    tenant_id: str = "t1",
    environment_id: str = "prod",
    customers: int = 10,
    line_items_per_customer: int = 3,
    seed: int = 7,
) -> dict[str, Any]:
    """One catalog document (DESIGN.md §8) with ``customers`` customers.

    Customer ``i`` has external id ``cust-i`` and one monthly subscription whose
    line items use ``line_items_per_customer`` of the sample prices, rotating so
    every price and aggregation type is used.
    """
    rng = random.Random(seed)
    count = min(line_items_per_customer, len(_PRICES))
    customer_docs, subscriptions = [], []
    for i in range(customers):
        customer_id = f"cus_{i}"
        customer_docs.append({"id": customer_id, "external_id": f"cust-{i}"})
        first = i % len(_PRICES)
        chosen = [_PRICES[(first + k) % len(_PRICES)] for k in range(count)]
        anchor_day = rng.choice([1, 1, 1, 15, 31])
        subscriptions.append(
            {
                "id": f"sub_{i}",
                "customer_id": customer_id,
                "status": "active",
                "start_date": "2025-12-01T00:00:00Z",
                "billing_anchor": f"2025-12-{anchor_day:02d}T00:00:00Z",
                "billing_period": "MONTHLY",
                "billing_period_count": 1,
                "timezone": rng.choice(["UTC", "UTC", "America/New_York", "Europe/Berlin"]),
                "line_items": [
                    {
                        "id": f"li_{i}_{price['id'][2:]}",
                        "price_id": price["id"],
                        "meter_id": price["meter_id"],
                        "free_units": _FREE_UNITS[price["id"]],
                    }
                    for price in chosen
                ],
            }
        )
    return {
        "tenant_id": tenant_id,
        "environment_id": environment_id,
        "customers": customer_docs,
        # Copies: a caller that edits its catalog (a test planting a typo) must
        # not change every later catalog of the process.
        "meters": copy.deepcopy(_METERS),
        "features": copy.deepcopy(_FEATURES),
        "prices": copy.deepcopy(_PRICES),
        "subscriptions": subscriptions,
    }


def generate_events(
    catalog: dict[str, Any],
    count: int,
    *,
    seed: int = 11,
    start: datetime = SAMPLE_START,
    span: timedelta = timedelta(days=31),
    duplicate_rate: float = 0.0,
    late_rate: float = 0.05,
) -> Iterator[dict[str, Any]]:
    """``count`` event documents for the catalog's customers (JSON-ready dicts).

    Like live traffic, timestamps advance through ``[start, start + span)`` in
    arrival order with a little jitter; a ``late_rate`` share arrives late (up
    to two days behind, possibly in the previous period). Each event targets
    one of its customer's metered event names; with ``duplicate_rate`` > 0 some
    events repeat an earlier event verbatim (a client retry with the same id).
    """
    rng = random.Random(seed)
    prices = {price["id"]: price for price in catalog["prices"]}
    meters = {meter["id"]: meter for meter in catalog["meters"]}
    customers = {customer["id"]: customer for customer in catalog["customers"]}
    plans = []
    for subscription in catalog["subscriptions"]:
        customer = customers[subscription["customer_id"]]
        used = [meters[prices[li["price_id"]]["meter_id"]] for li in subscription["line_items"]]
        plans.append((customer["external_id"], used))
    span_seconds = int(span.total_seconds())
    recent: list[dict[str, Any]] = []
    for n in range(count):
        if recent and rng.random() < duplicate_rate:
            yield rng.choice(recent)
            continue
        external_id, meter_choices = plans[rng.randrange(len(plans))]
        meter = rng.choice(meter_choices)
        offset = span_seconds * n // max(count, 1) + rng.randrange(60)
        if rng.random() < late_rate:
            offset = max(0, offset - rng.randrange(2 * 86_400))
        ts = start + timedelta(
            seconds=min(offset, span_seconds - 1), microseconds=rng.randrange(1000) * 1000
        )
        event = {
            "id": f"{catalog['tenant_id']}-evt-{seed}-{n}",
            "tenant_id": catalog["tenant_id"],
            "environment_id": catalog["environment_id"],
            "event_name": meter["event_name"],
            "external_customer_id": external_id,
            "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "source": rng.choice(["api", "sdk", "batch"]),
            "properties": _properties(meter, rng),
        }
        if len(recent) < 1000:
            recent.append(event)
        else:
            recent[rng.randrange(1000)] = event
        yield event


def _properties(meter: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    field = meter["aggregation"].get("field")
    properties: dict[str, Any] = {}
    if meter.get("filters"):
        properties["region"] = rng.choice(["us", "eu", "us", "apac"])
    if field == "user":
        properties[field] = f"user-{rng.randrange(40)}"
    elif field:
        properties[field] = rng.choice(
            [rng.randrange(1, 200), round(rng.uniform(0, 50), 2), str(rng.randrange(1, 90))]
        )
    return properties

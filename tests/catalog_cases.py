"""Catalog documents for tests, and every catalog mistake class of issue 15.

Shared by the unit tests of the catalog and the command-line tests (test
modules never import from each other). Each case names what the one-line
error must contain.
"""

from __future__ import annotations

from typing import Any

import pytest


def meter(meter_id: str = "m_api", event_name: str = "api_call", **extra: Any) -> dict[str, Any]:
    meter: dict[str, Any] = {
        "id": meter_id,
        "event_name": event_name,
        "aggregation": {"type": "SUM", "field": "calls"},
        "filters": [{"key": "region", "values": ["us", "eu"]}],
    }
    meter.update(extra)
    return meter


def price(price_id: str = "p_api", meter_id: str | None = "m_api", **extra: Any) -> dict[str, Any]:
    price: dict[str, Any] = {
        "id": price_id,
        "meter_id": meter_id,
        "currency": "usd",
        "billing_model": "FLAT_FEE",
        "amount": "0.01",
    }
    price.update(extra)
    return price


def line_item(item_id: str = "li_1", price_id: str = "p_api", **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"id": item_id, "price_id": price_id}
    item.update(extra)
    return item


def subscription(
    subscription_id: str = "sub_1",
    customer_id: str = "cus_1",
    line_items: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    subscription: dict[str, Any] = {
        "id": subscription_id,
        "customer_id": customer_id,
        "status": "active",
        "start_date": "2026-01-01T00:00:00Z",
        "billing_anchor": "2026-01-01T00:00:00Z",
        "billing_period": "MONTHLY",
        "timezone": "UTC",
        "line_items": line_items if line_items is not None else [line_item()],
    }
    subscription.update(extra)
    return subscription


def document(
    tenant_id: str = "t1",
    environment_id: str = "prod",
    *,
    customers: list[dict[str, Any]] | None = None,
    meters: list[dict[str, Any]] | None = None,
    features: list[dict[str, Any]] | None = None,
    prices: list[dict[str, Any]] | None = None,
    subscriptions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "environment_id": environment_id,
        "customers": customers
        if customers is not None
        else [{"id": "cus_1", "external_id": "acme"}],
        "meters": meters if meters is not None else [meter()],
        "features": features if features is not None else [],
        "prices": prices if prices is not None else [price()],
        "subscriptions": subscriptions if subscriptions is not None else [subscription()],
    }


_TIER = {"unit_amount": "1"}


def tiered(*up_tos: str | None) -> dict[str, Any]:
    """Price fields of a TIERED price with tiers ending at ``up_tos`` (unit amount 1)."""
    return {
        "billing_model": "TIERED",
        "amount": None,
        "tiers": [{"up_to": up_to, **_TIER} for up_to in up_tos],
    }


#: Every way a price can be unratable, with what the one-line error must name.
UNRATABLE_PRICES = [
    pytest.param({"amount": None}, "'amount' is required for FLAT_FEE", id="flat-without-amount"),
    pytest.param(
        {"billing_model": "PACKAGE", "amount": None, "transform_quantity": {"divide_by": 10}},
        "'amount' is required for PACKAGE",
        id="package-without-amount",
    ),
    pytest.param(
        {"billing_model": "PACKAGE", "amount": "5", "transform_quantity": None},
        "'transform_quantity' with 'divide_by' is required",
        id="package-without-transform",
    ),
    pytest.param(
        {"billing_model": "PACKAGE", "amount": "5", "transform_quantity": {"divide_by": 0}},
        "divide_by' must be > 0",
        id="package-divide-by-zero",
    ),
    pytest.param(
        {"billing_model": "PACKAGE", "amount": "5", "transform_quantity": {"round": "up"}},
        "'divide_by' is required",
        id="package-without-divide-by",
    ),
    pytest.param(
        {"billing_model": "FLAT_FEE", "transform_quantity": {"divide_by": 10}},
        "'transform_quantity' is only for PACKAGE",
        id="flat-fee-with-package-settings",
    ),
    pytest.param(
        {"tiers": [{"up_to": None, **_TIER}]}, "only for TIERED", id="flat-fee-with-tiers"
    ),
    pytest.param(
        {"billing_model": "TIERED", "amount": None, "tiers": None},
        "at least one tier",
        id="tiered-without-tiers",
    ),
    pytest.param(
        {"billing_model": "TIERED", "amount": None, "tiers": []},
        "at least one tier",
        id="tiered-empty-tiers",
    ),
    pytest.param(
        {"billing_model": "TIERED", "amount": "1", "tiers": [{"up_to": None, **_TIER}]},
        "'amount' is not used by TIERED",
        id="tiered-with-amount",
    ),
    pytest.param(
        {"billing_model": "TIERED", "amount": None, "tiers": [{"up_to": "10"}]},
        "tiers.0.unit_amount ",
        id="tier-without-unit-amount",
    ),
    pytest.param(
        tiered("10", "10"),
        "tiers.1.up_to: 10 must be greater than the previous tier up_to 10",
        id="tiered-equal-up-to",
    ),
    pytest.param(
        tiered("10", "5"),
        "tiers.1.up_to: 5 must be greater than the previous tier up_to 10",
        id="tiered-decreasing-up-to",
    ),
    pytest.param(
        tiered(None, "10"),
        "tiers.0.up_to: only the last tier may be unbounded",
        id="tiered-null-up-to-not-last",
    ),
    pytest.param(
        tiered("0", None),
        "tiers.0.up_to: 0 must be greater than 0",
        id="tiered-zero-up-to",
    ),
]


def with_tiers(**extra: Any) -> dict[str, Any]:
    tier = {"up_to": None, "unit_amount": "1", **extra}
    return price(billing_model="TIERED", amount=None, tier_mode="SLAB", tiers=[tier])


#: (document, location, entity named) for a typo'd field in every entity type.
UNKNOWN_FIELDS = [
    pytest.param({**document(), "customer": []}, "customer", "t1/prod", id="document"),
    pytest.param(
        document(customers=[{"id": "cus_1", "externl_id": "acme"}]),
        "customers.0.externl_id",
        "customer 'cus_1'",
        id="customer",
    ),
    pytest.param(
        document(meters=[meter(event="api_call")]), "meters.0.event", "meter 'm_api'", id="meter"
    ),
    pytest.param(
        document(meters=[meter(aggregation={"type": "SUM", "feild": "calls", "field": "c"})]),
        "meters.0.aggregation.feild",
        "meter 'm_api'",
        id="aggregation",
    ),
    pytest.param(
        document(meters=[meter(filters=[{"key": "region", "value": ["us"], "values": ["us"]}])]),
        "meters.0.filters.0.value",
        "meter 'm_api'",
        id="filter",
    ),
    pytest.param(
        document(features=[{"id": "f_1", "meter": "m_api"}]),
        "features.0.meter",
        "feature 'f_1'",
        id="feature",
    ),
    pytest.param(
        document(prices=[price(curency="usd")]), "prices.0.curency", "price 'p_api'", id="price"
    ),
    pytest.param(
        document(prices=[with_tiers(unit_amout="1")]),
        "prices.0.tiers.0.unit_amout",
        "price 'p_api'",
        id="tier",
    ),
    pytest.param(
        document(
            prices=[
                price(
                    billing_model="PACKAGE",
                    transform_quantity={"divide_by": "10", "rounding": "down"},
                )
            ]
        ),
        "prices.0.transform_quantity.rounding",
        "price 'p_api'",
        id="transform-quantity",
    ),
    pytest.param(
        document(subscriptions=[subscription(billing_cycle="MONTHLY")]),
        "subscriptions.0.billing_cycle",
        "subscription 'sub_1'",
        id="subscription",
    ),
    pytest.param(
        document(subscriptions=[subscription(line_items=[line_item(free_unit="100")])]),
        "subscriptions.0.line_items.0.free_unit",
        "line item 'li_1', subscription 'sub_1'",
        id="line-item",
    ),
]


#: (document, location, bad value) for every closed set.
UNKNOWN_VALUES = [
    pytest.param(
        document(subscriptions=[subscription(status="actve")]),
        "subscriptions.0.status",
        "actve",
        id="status",
    ),
    pytest.param(
        document(prices=[price(billing_model="FLAT")]),
        "prices.0.billing_model",
        "FLAT",
        id="billing-model",
    ),
    pytest.param(
        document(prices=[{**with_tiers(), "tier_mode": "GRADUATED"}]),
        "prices.0.tier_mode",
        "GRADUATED",
        id="tier-mode",
    ),
    pytest.param(
        document(subscriptions=[subscription(billing_period="MONTHY")]),
        "subscriptions.0.billing_period",
        "MONTHY",
        id="billing-period",
    ),
    pytest.param(
        document(meters=[meter(aggregation={"type": "SUMM", "field": "calls"})]),
        "meters.0.aggregation.type",
        "SUMM",
        id="aggregation-type",
    ),
    pytest.param(
        document(meters=[meter(aggregation={"type": "MAX", "field": "c", "bucket_size": "1H"})]),
        "meters.0.aggregation.bucket_size",
        "1H",
        id="bucket-size",
    ),
    pytest.param(
        document(
            prices=[
                price(billing_model="PACKAGE", transform_quantity={"divide_by": 5, "round": "near"})
            ]
        ),
        "prices.0.transform_quantity.round",
        "near",
        id="rounding",
    ),
]

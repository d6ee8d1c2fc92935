"""Hypothesis strategies shared by the core's differential tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from worker.domain.catalog_index import CatalogIndex, LineItemBinding
from worker.domain.metering import AggregationType

NOW = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # a DST night in Europe

_SPACE = st.sampled_from(["", " ", "\t", "\u3000", "\x1c", "\xa0", "\u2028"])
_DIGITS = st.sampled_from([*"0123456789", "٣", "０", "²", "_", "𝟡"])


@st.composite
def numeric_strings(draw: st.DrawFn) -> str:
    sign = draw(st.sampled_from(["", "-", "+"]))
    whole = "".join(draw(st.lists(_DIGITS, max_size=22)))
    fraction = "".join(draw(st.lists(_DIGITS, max_size=20)))
    exponent = draw(
        st.sampled_from(
            ["", "e5", "E-3", "e+17", "e-1999999999999999997", "e999999999999999999", "e"]
        )
    )
    point = draw(st.sampled_from([".", ""])) if fraction else draw(st.sampled_from(["", "."]))
    text = f"{sign}{whole}{point}{fraction}{exponent}"
    return draw(_SPACE) + text + draw(_SPACE)


_AMOUNTS = ["1", "0.01", "-0.5", "2.000000000000001", "999999999999", "0"]
_SIZES = ["1", "10", "0.3", "1000"]


@st.composite
def price_documents(draw: st.DrawFn, price_id: str, meter_id: str) -> dict[str, Any]:
    """A catalog price of any model on ``meter_id``."""
    price: dict[str, Any] = {"id": price_id, "meter_id": meter_id, "currency": "usd"}
    model = draw(st.sampled_from(["FLAT_FEE", "PACKAGE", "TIERED"]))
    price["billing_model"] = model
    if model == "TIERED":
        bounds = sorted(set(draw(st.lists(st.sampled_from(_SIZES), max_size=2))), key=float)
        ups: list[str | None] = list(bounds)
        if not ups or draw(st.booleans()):
            ups.append(None)
        price["tier_mode"] = draw(st.sampled_from(["VOLUME", "SLAB"]))
        price["tiers"] = [
            {
                "up_to": up,
                "unit_amount": draw(st.sampled_from(_AMOUNTS)),
                "flat_amount": draw(st.sampled_from(_AMOUNTS)),
            }
            for up in ups
        ]
        return price
    price["amount"] = draw(st.sampled_from(_AMOUNTS))
    if model == "PACKAGE":
        price["transform_quantity"] = {
            "divide_by": draw(st.sampled_from(_SIZES)),
            "round": draw(st.sampled_from(["up", "down"])),
        }
    return price


_ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata"]
_UNITS = ["DAILY", "WEEKLY", "MONTHLY", "QUARTERLY", "ANNUAL"]
_STATUSES = ["active"] * 4 + ["trialing", "cancelled", "canceled", "paused", " Active "]
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
            if kind is AggregationType.MAX and draw(st.booleans()):
                aggregation["bucket_size"] = draw(st.sampled_from(["HOUR", "DAY", "WEEK", "MONTH"]))
            meter: dict[str, Any] = {
                "id": f"m{number}",
                "event_name": draw(st.sampled_from(["api", "db", " api "])),
                "aggregation": aggregation,
            }
            if draw(st.booleans()):
                values = draw(st.lists(st.sampled_from(_REGION_VALUES), min_size=1, max_size=3))
                meter["filters"] = [{"key": "region", "values": values}]
            meters.append(meter)
        prices = [draw(price_documents(f"p{m['id']}", m["id"])) for m in meters]
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
                    "free_units": draw(st.sampled_from(["0", "0", "1", "2.5", "100"])),
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


def _active_instant(draw: st.DrawFn, binding: LineItemBinding) -> datetime:
    """An instant inside both the line item's and its subscription's windows (when
    they overlap): without it most drawn events fall outside every window and
    are never rated, which starves the rating-state tests of rows."""
    subscription = binding.subscription
    start = max(binding.start_date, subscription.start_date)
    ends = [binding.end_date, subscription.end_date, subscription.cancelled_at]
    end = min([end for end in ends if end is not None], default=start + timedelta(days=60))
    span_s = int((end - start).total_seconds()) - 1
    return start + timedelta(seconds=draw(st.integers(0, max(0, span_s))))


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
        inside = _active_instant(draw, binding)
        filters = binding.meter.filters
        moment = draw(
            st.sampled_from(
                [
                    moment,
                    binding.start_date + timedelta(days=draw(st.integers(0, 30))),
                    binding.subscription.start_date,
                    cycle.boundary(draw(st.integers(-3, 3))),
                    inside,
                    inside,
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
        filters = ()
        tenant = draw(st.sampled_from(["t1", "t2", "t3"]))
        environment = draw(st.sampled_from(["prod", ""]))
        name = draw(st.sampled_from(["api", "db", "other"]))
        document["customer_id"] = draw(st.sampled_from(["c0", "c1", "c2", "x0", "nobody"]))
        if draw(st.booleans()):
            document["external_customer_id"] = draw(st.sampled_from(["x0", "x1", "c0"]))
    document.update(tenant_id=tenant, environment_id=environment, event_name=name)
    document["timestamp"] = moment.isoformat()
    properties = {key: draw(_VALUES) for key in _KEYS if draw(st.integers(0, 4)) > 0}
    if filters and draw(st.booleans()):  # often a value the meter's filter accepts
        for meter_filter in filters:
            properties[meter_filter.key] = draw(st.sampled_from(sorted(meter_filter.values)))
    document["properties"] = properties
    return json.dumps(document).encode()

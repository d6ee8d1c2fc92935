"""The independent reference (`tests/reference.py`) against figures computed by hand.

Every expected value here is worked out in the comment beside it from
DESIGN.md §3-§5, never by running the worker or the reference itself.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from tests.reference import Price, never_priced, parse_timestamp, rate, reference_invoice
from tests.reference_periods import Cycle, epoch_ms


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


TIERS = [
    {"up_to": "100", "unit_amount": "0.10", "flat_amount": "1"},
    {"up_to": "1000", "unit_amount": "0.05", "flat_amount": "2"},
    {"up_to": None, "unit_amount": "0.01", "flat_amount": "0"},
]


@pytest.mark.parametrize(
    ("doc", "quantity", "expected"),
    [
        ({"billing_model": "FLAT_FEE", "amount": "0.25"}, "7", "1.75"),
        # 25 / 10 = 2.5 packages: up -> 3 x 4 = 12, down -> 2 x 4 = 8
        ({"billing_model": "PACKAGE", "amount": "4",
          "transform_quantity": {"divide_by": 10, "round": "up"}}, "25", "12"),
        ({"billing_model": "PACKAGE", "amount": "4",
          "transform_quantity": {"divide_by": 10, "round": "down"}}, "25", "8"),
        # volume: 150 falls in the second tier: 150 x 0.05 + 2 = 9.5
        ({"billing_model": "TIERED", "tier_mode": "VOLUME", "tiers": TIERS}, "150", "9.5"),
        # volume, inclusive bound: 100 is still the first tier: 100 x 0.10 + 1 = 11
        ({"billing_model": "TIERED", "tier_mode": "VOLUME", "tiers": TIERS}, "100", "11"),
        # slab: 100 x 0.10 + 1 + 50 x 0.05 + 2 = 15.5
        ({"billing_model": "TIERED", "tier_mode": "SLAB", "tiers": TIERS}, "150", "15.5"),
        # slab: 11 + (900 x 0.05 + 2) + 500 x 0.01 = 11 + 47 + 5 = 63
        ({"billing_model": "TIERED", "tier_mode": "SLAB", "tiers": TIERS}, "1500", "63"),
        ({"billing_model": "TIERED", "tier_mode": "SLAB", "tiers": TIERS}, "0", "0"),
        # 1/3 x 1 = 0.333... quantized to 15 places
        ({"billing_model": "FLAT_FEE", "amount": "0.333333333333333333"}, "1",
         "0.333333333333333"),
        # half away from zero at the 16th place: ...5 -> up
        ({"billing_model": "FLAT_FEE", "amount": "0.0000000000000005"}, "1",
         "0.000000000000001"),
    ],
)  # fmt: skip
def test_rate_of_each_model_equals_the_hand_computed_amount(
    doc: dict[str, Any], quantity: str, expected: str
) -> None:
    assert rate(Price.from_json(doc), Fraction(Decimal(quantity))) == Decimal(expected)


def test_periods_clamp_month_ends_and_return_to_the_anchor_day() -> None:
    cycle = Cycle(utc("2026-01-31T00:00:00"), "MONTHLY", 1, "UTC")
    assert [cycle.boundary(k) for k in range(4)] == [
        utc("2026-01-31T00:00:00"),
        utc("2026-02-28T00:00:00"),
        utc("2026-03-31T00:00:00"),
        utc("2026-04-30T00:00:00"),
    ]
    assert cycle.boundary(-2) == utc("2025-11-30T00:00:00")  # negative k too
    assert Cycle(utc("2024-01-31T00:00:00"), "MONTHLY", 1, "UTC").boundary(1) == utc(
        "2024-02-29T00:00:00"
    )  # leap year


def test_periods_follow_the_local_wall_time_across_daylight_saving() -> None:
    # Midnight in New York: EST (-05:00) in January, EDT (-04:00) from 8 March 2026.
    cycle = Cycle(utc("2026-01-01T05:00:00"), "MONTHLY", 1, "America/New_York")
    assert cycle.boundary(3) == utc("2026-04-01T04:00:00")
    daily = Cycle(utc("2026-03-07T05:00:00"), "DAILY", 1, "America/New_York")
    # 7 March 00:00 EST -> 8 March 00:00 EST -> 9 March 00:00 EDT: a 23-hour day
    assert daily.boundary(2) - daily.boundary(1) == utc("2026-01-01T23:00") - utc("2026-01-01")
    # quarterly, count 2 = six months
    assert Cycle(utc("2026-01-15T00:00:00"), "QUARTERLY", 2, "UTC").boundary(1) == utc(
        "2026-07-15T00:00:00"
    )


def test_the_first_period_starts_at_the_start_date() -> None:
    cycle = Cycle(utc("2026-01-01T00:00:00"), "MONTHLY", 1, "UTC")
    start = utc("2026-01-10T12:00:00")
    assert cycle.period_at(utc("2026-01-20T00:00:00"), start) == (start, utc("2026-02-01"))
    assert cycle.period_at(utc("2026-02-01T00:00:00"), start) == (
        utc("2026-02-01"),
        utc("2026-03-01"),
    )
    assert cycle.period_at(utc("2026-01-09T00:00:00"), start) is None
    assert epoch_ms(utc("2026-01-01T00:00:00.0019")) == 1_767_225_600_001


def test_timestamps_truncate_fractions_and_apply_offsets() -> None:
    assert parse_timestamp("2026-02-03T04:05:06.1234567+01:30") == datetime(
        2026, 2, 3, 2, 35, 6, 123456, tzinfo=UTC
    )
    assert parse_timestamp("2026-02-03T04:05:06") == datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)


def catalog(meter: dict[str, Any], price: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    subscription = {
        "id": "sub_1", "customer_id": "cus_1", "status": "active",
        "start_date": "2026-01-01T00:00:00Z", "end_date": None, "cancelled_at": None,
        "billing_anchor": "2026-01-01T00:00:00Z", "billing_period": "MONTHLY",
        "billing_period_count": 1, "timezone": "UTC",
        "line_items": [{"id": "li_1", "price_id": "p", "meter_id": "m",
                        "start_date": None, "end_date": None, "free_units": "2"}],
    }  # fmt: skip
    subscription.update(overrides)
    return {
        "tenant_id": "t1", "environment_id": "prod",
        "customers": [{"id": "cus_1", "external_id": "acme"}],
        "meters": [{"id": "m", "event_name": "call", "filters": [], **meter}],
        "features": [{"id": "f", "meter_id": "m", "name": "Calls"}],
        "prices": [{"id": "p", "meter_id": "m", "currency": "usd", **price}],
        "subscriptions": [subscription],
    }  # fmt: skip


FLAT = {"billing_model": "FLAT_FEE", "amount": "0.5"}


def event(number: int, ts: str, **properties: Any) -> dict[str, Any]:
    return {"id": f"e{number}", "tenant_id": "t1", "environment_id": "prod", "event_name": "call",
            "external_customer_id": "acme", "timestamp": ts, "properties": properties}  # fmt: skip


def quantities(meter: dict[str, Any], events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    lines = reference_invoice(catalog(meter, FLAT), events)
    return [(line["qty_total"], line["cost"]) for line in lines]


JAN = "2026-01-{:02d}T00:00:00Z"


def test_sum_with_free_units_duplicates_and_invoice_rounding() -> None:
    meter = {"aggregation": {"type": "SUM", "field": "n"}}
    events = [event(1, JAN.format(2), n=3), event(2, JAN.format(3), n="4.5"),
              event(1, JAN.format(4), n=100),  # a retry of e1: the first copy counts
              event(3, JAN.format(5), n=-7), event(4, JAN.format(6), n="abc")]  # fmt: skip
    (line,) = reference_invoice(catalog(meter, FLAT), events)
    # q = 3 + 4.5 + 0 + 0 = 7.5; free 2; billable 5.5; cost 5.5 x 0.5 = 2.75
    assert line["qty_total"] == "7.500000000000000"
    assert line["qty_free_applied"] == "2.000000000000000"
    assert line["qty_billable"] == "5.500000000000000"
    assert line["cost"] == "2.750000000000000" and line["amount"] == "2.75"
    assert line["event_count"] == 4 and line["feature_id"] == "f"
    assert line["period_id"] == 1_767_225_600_000  # 2026-01-01T00:00:00Z


def test_each_aggregation_over_the_same_events() -> None:
    events = [event(1, JAN.format(2), v=4, u="a"), event(2, JAN.format(3), v=10, u="b"),
              event(3, JAN.format(3) .replace("00:00:00", "12:00:00"), v=6, u="a")]  # fmt: skip
    # billable = q - 2, cost = billable x 0.5
    assert quantities({"aggregation": {"type": "COUNT"}}, events) == [
        ("3.000000000000000", "0.500000000000000")
    ]
    assert quantities({"aggregation": {"type": "COUNT_UNIQUE", "field": "u"}}, events) == [
        ("2.000000000000000", "0.000000000000000")
    ]
    assert quantities({"aggregation": {"type": "MAX", "field": "v"}}, events)[0][0] == (
        "10.000000000000000"
    )
    # bucketed by UTC day: max(4) on the 2nd + max(10, 6) on the 3rd = 14
    assert quantities({"aggregation": {"type": "MAX", "field": "v", "bucket_size": "DAY"}},
                      events)[0][0] == "14.000000000000000"  # fmt: skip
    # latest by timestamp: e3 (3 Jan 12:00) = 6
    assert quantities({"aggregation": {"type": "LATEST", "field": "v"}}, events)[0][0] == (
        "6.000000000000000"
    )
    # (4 + 10 + 6) / 3 = 6.666... -> 6.666666666666667
    assert quantities({"aggregation": {"type": "AVG", "field": "v"}}, events)[0][0] == (
        "6.666666666666667"
    )
    # 20 x 1.5 = 30
    assert (
        quantities(
            {"aggregation": {"type": "SUM_WITH_MULTIPLIER", "field": "v", "multiplier": "1.5"}},
            events,
        )[0][0]
        == "30.000000000000000"
    )


def test_weighted_sum_weighs_by_the_rest_of_the_period() -> None:
    # January has 31 days; an event at 1 Jan 00:00 weighs 31/31, at 16 Jan 12:00 15.5/31 = 0.5
    events = [event(1, JAN.format(1), v=2), event(2, "2026-01-16T12:00:00Z", v=10)]
    assert quantities({"aggregation": {"type": "WEIGHTED_SUM", "field": "v"}}, events)[0][0] == (
        "7.000000000000000"
    )


def test_filters_compare_canonical_values() -> None:
    meter = {"aggregation": {"type": "COUNT"},
             "filters": [{"key": "size", "values": ["1000000", "true"]}]}  # fmt: skip
    events = [event(1, JAN.format(2), size=1e6), event(2, JAN.format(2), size=True),
              event(3, JAN.format(2), size="1e6"), event(4, JAN.format(2)),
              event(5, JAN.format(2), size=None)]  # fmt: skip
    (line,) = reference_invoice(catalog(meter, FLAT), events)
    assert line["event_count"] == 2  # e1 (1e6 -> "1000000") and e2 (true)


def test_statuses_windows_and_unknown_customers_leave_events_unpriced() -> None:
    meter = {"aggregation": {"type": "COUNT"}}
    cancelled = catalog(meter, FLAT, status="Cancelled", cancelled_at="2026-01-10T00:00:00Z")
    events = [event(1, JAN.format(9)), event(2, JAN.format(10)),
              {**event(3, JAN.format(9)), "external_customer_id": "nobody"},
              {**event(4, JAN.format(9)), "external_customer_id": "", "customer_id": "cus_1"},
              event(5, "2025-12-31T23:59:59Z")]  # fmt: skip
    assert never_priced(cancelled, events) == {"e2", "e3", "e5"}
    paused = catalog(meter, FLAT, status="paused")
    assert reference_invoice(paused, events) == []


def test_periods_split_lines_and_zero_decimal_currencies_round_to_units() -> None:
    meter = {"aggregation": {"type": "SUM", "field": "n"}}
    doc = catalog(meter, {"billing_model": "FLAT_FEE", "amount": "0.5"})
    doc["prices"][0]["currency"] = "jpy"
    events = [event(1, "2026-01-31T23:59:59.999Z", n=5), event(2, "2026-02-01T00:00:00Z", n=5)]
    lines = reference_invoice(doc, events)
    # each period: q 5, free 2, billable 3, cost 1.5 -> 2 yen (half away from zero)
    assert [(line["period_id"], line["amount"]) for line in lines] == [
        (1_767_225_600_000, "2"),
        (1_769_904_000_000, "2"),
    ]

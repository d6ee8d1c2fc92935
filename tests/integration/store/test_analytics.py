"""GetProcessedEvents, GetUsageAnalytics, GetDetailedUsageAnalytics on real ClickHouse."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.integration.store.conftest import StoreUnderTest
from tests.integration.store.rows import T0, row
from tests.processed_rows import insert_processed
from worker.domain.events import ProcessedEvent
from worker.domain.metering import WindowSize
from worker.store.analytics import (
    get_detailed_usage_analytics,
    get_processed_events,
    get_usage_analytics,
)
from worker.store.params import (
    AnalyticsGroup,
    DetailedUsageAnalytic,
    GetProcessedEventsParams,
    UsageAnalytic,
    UsageAnalyticPoint,
    UsageAnalyticsParams,
)
from worker.store.raw import insert_raw

END = T0 + timedelta(days=1)
HOUR1 = T0 + timedelta(hours=1)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def priced(
    event_id: str,
    minutes: int,
    *,
    qty: str = "1",
    source: str = "sdk",
    properties: dict[str, Any] | None = None,
    **fields: Any,
) -> ProcessedEvent:
    """A row billing ``qty`` at 0.01 (half free when ``free`` is given)."""
    base = row(event_id, qty=qty, timestamp=at(minutes), **fields)
    raw = dataclasses.replace(
        base.event,
        source=source,
        properties=properties or {"calls": 1},
        ingested_at=T0 + timedelta(hours=2),
    )
    return dataclasses.replace(base, event=raw)


# Usage = free + billable; cost = 0.01 per billable unit.
ROWS = [
    priced("e1", 1, qty="2"),
    priced("e2", 2, qty="3", source="api", properties={"region": "us"}),
    priced("e3", 61, qty="5", feature_id="feat_2", meter_id="meter_2", properties={"region": "eu"}),
    priced("e4", 62, qty="7", source="api", feature_id="feat_2", meter_id="meter_2"),
    priced("e5", 63, qty="11", customer_id="cus_2", subscription_id="sub_2", price_id="price_2"),
]


def store(migrated: StoreUnderTest, rows: list[ProcessedEvent] = ROWS) -> None:
    insert_processed(migrated.gateway, rows, dedup_token=None)
    insert_raw(migrated.gateway, [r.event for r in rows], dedup_token=None)


def processed_params(**fields: Any) -> GetProcessedEventsParams:
    return GetProcessedEventsParams("t1", "prod", T0, END, **fields)


def test_processed_events_page_filters_and_counts(migrated: StoreUnderTest) -> None:
    store(migrated)
    page = get_processed_events(migrated.gateway, processed_params(count_total=True))
    assert [r.event.id for r in page.rows] == ["e5", "e4", "e3", "e2", "e1"]
    assert page.total == 5
    assert page.rows[-1] == ROWS[0]  # exact round trip of every field
    second = get_processed_events(migrated.gateway, processed_params(limit=2, offset=2))
    assert [r.event.id for r in second.rows] == ["e3", "e2"] and second.total is None
    for fields, expected in (
        ({"customer_id": "cus_2"}, ["e5"]),
        ({"subscription_id": "sub_1"}, ["e4", "e3", "e2", "e1"]),
        ({"meter_id": "meter_2"}, ["e4", "e3"]),
        ({"feature_id": "feat_1"}, ["e5", "e2", "e1"]),
        ({"price_id": "price_2"}, ["e5"]),
    ):
        page = get_processed_events(migrated.gateway, processed_params(count_total=True, **fields))
        assert [r.event.id for r in page.rows] == expected, fields
        assert page.total == len(expected)
    window = GetProcessedEventsParams("t1", "prod", at(2), at(62))  # half-open
    assert [r.event.id for r in get_processed_events(migrated.gateway, window).rows] == [
        "e3",
        "e2",
    ]


def test_a_row_stored_twice_is_read_once_everywhere(migrated: StoreUnderTest) -> None:
    store(migrated)
    insert_processed(
        migrated.gateway, [dataclasses.replace(r, version=2) for r in ROWS], dedup_token=None
    )
    insert_raw(migrated.gateway, [r.event for r in ROWS], dedup_token=None)
    page = get_processed_events(migrated.gateway, processed_params(count_total=True, limit=100))
    assert len(page.rows) == 5 and page.total == 5
    assert {r.version for r in page.rows} == {2}
    analytics = get_usage_analytics(migrated.gateway, "t1", "prod", "", 24, now=END)
    assert sum(a.usage for a in analytics) == 28
    [detail] = get_detailed_usage_analytics(
        migrated.gateway,
        UsageAnalyticsParams("t1", "prod", T0, END, group_by=(), property_filters={"calls": ["1"]}),
    )
    assert detail.total_usage == 2 + 7 + 11 and detail.event_count == 3


def test_usage_analytics_by_source_and_feature(migrated: StoreUnderTest) -> None:
    free_row = priced("e6", 64, qty="4", qty_billable=Decimal(1), qty_free_applied=Decimal(3))
    free_row = dataclasses.replace(free_row, cost=Decimal("0.01"))
    store(migrated, [*ROWS, free_row])
    result = get_usage_analytics(migrated.gateway, "t1", "prod", "", 24, now=END)
    assert result == [
        UsageAnalytic("api", "feat_1", Decimal(3), Decimal("0.03")),
        UsageAnalytic("api", "feat_2", Decimal(7), Decimal("0.07")),
        UsageAnalytic("sdk", "feat_1", Decimal(2 + 11 + 4), Decimal("0.14")),
        UsageAnalytic("sdk", "feat_2", Decimal(5), Decimal("0.05")),
    ]
    recent = get_usage_analytics(migrated.gateway, "t1", "prod", "cus_1", 1, now=at(63))
    assert [(a.source, a.feature_id, a.usage) for a in recent] == [
        ("api", "feat_2", 7),
        ("sdk", "feat_2", 5),
    ]
    assert get_usage_analytics(migrated.gateway, "t2", "prod", "", 24, now=END) == []
    with pytest.raises(ValueError, match="lookback_hours"):
        get_usage_analytics(migrated.gateway, "t1", "prod", "", 0)


def detailed(**fields: Any) -> UsageAnalyticsParams:
    return UsageAnalyticsParams("t1", "prod", T0, END, **fields)


def test_detailed_analytics_groups_and_points_in_one_query(migrated: StoreUnderTest) -> None:
    store(migrated)
    result = get_detailed_usage_analytics(
        migrated.gateway,
        detailed(
            group_by=(AnalyticsGroup.FEATURE_ID, AnalyticsGroup.SOURCE),
            window_size=WindowSize.HOUR,
        ),
    )
    c = Decimal("0.01")
    assert result == [
        DetailedUsageAnalytic(
            "feat_1", "api", "meter_1", "api_call", "usd", Decimal(3), 3 * c, 1,
            (UsageAnalyticPoint(T0, Decimal(3), 3 * c, 1),),
        ),
        DetailedUsageAnalytic(
            "feat_1", "sdk", "meter_1", "api_call", "usd", Decimal(13), 13 * c, 2,
            (
                UsageAnalyticPoint(T0, Decimal(2), 2 * c, 1),
                UsageAnalyticPoint(HOUR1, Decimal(11), 11 * c, 1),
            ),
        ),
        DetailedUsageAnalytic(
            "feat_2", "api", "meter_2", "api_call", "usd", Decimal(7), 7 * c, 1,
            (UsageAnalyticPoint(HOUR1, Decimal(7), 7 * c, 1),),
        ),
        DetailedUsageAnalytic(
            "feat_2", "sdk", "meter_2", "api_call", "usd", Decimal(5), 5 * c, 1,
            (UsageAnalyticPoint(HOUR1, Decimal(5), 5 * c, 1),),
        ),
    ]  # fmt: skip
    by_source = get_detailed_usage_analytics(
        migrated.gateway, detailed(group_by=(AnalyticsGroup.SOURCE,))
    )
    assert [(d.source, d.feature_id, d.meter_id, d.total_usage, d.points) for d in by_source] == [
        ("api", "", "", 10, ()),
        ("sdk", "", "", 18, ()),
    ]
    [everything] = get_detailed_usage_analytics(
        migrated.gateway, detailed(group_by=(), window_size=WindowSize.DAY)
    )
    assert everything.total_usage == 28 and everything.event_count == 5
    assert everything.points == (UsageAnalyticPoint(T0, Decimal(28), 28 * c, 5),)


def test_detailed_analytics_filters(migrated: StoreUnderTest) -> None:
    store(migrated)

    def totals(**fields: Any) -> list[tuple[str, Decimal]]:
        found = get_detailed_usage_analytics(migrated.gateway, detailed(**fields))
        return [(d.feature_id, d.total_usage) for d in found]

    assert totals() == [("feat_1", 16), ("feat_2", 12)]
    assert totals(feature_ids=["feat_2"]) == [("feat_2", 12)]
    assert totals(sources=["api"]) == [("feat_1", 3), ("feat_2", 7)]
    assert totals(customer_id="cus_2") == [("feat_1", 11)]
    assert totals(external_customer_id="nobody") == []
    assert totals(property_filters={"region": ["us", "eu"]}) == [("feat_1", 3), ("feat_2", 5)]
    assert totals(property_filters={"region": ["eu"], "calls": ["1"]}) == []
    assert totals(property_filters={"calls": ["1"]}) == [("feat_1", 13), ("feat_2", 7)]
    for text in ("' OR 1=1 --", "x') OR ('1'='1", "'; DROP TABLE events_processed; --"):
        assert totals(property_filters={text: [text]}) == []
        assert totals(feature_ids=[text], sources=[text]) == []
        assert totals(customer_id=text) == []
        assert (
            get_processed_events(
                migrated.gateway, processed_params(customer_id=text, count_total=True)
            ).total
            == 0
        )
    assert migrated.gateway.query("SELECT count() FROM events_processed") == [(5,)]
    with pytest.raises(ValueError):
        detailed(group_by=("price_id",))


def test_tenants_never_see_each_other(migrated: StoreUnderTest) -> None:
    store(migrated)
    store(migrated, [priced("e1", 1, qty="100", tenant="t2")])
    other = GetProcessedEventsParams("t2", "prod", T0, END, count_total=True)
    page = get_processed_events(migrated.gateway, other)
    assert page.total == 1 and page.rows[0].qty_total == 100
    assert get_processed_events(migrated.gateway, processed_params(count_total=True)).total == 5
    [only] = get_detailed_usage_analytics(
        migrated.gateway, UsageAnalyticsParams("t2", "prod", T0, END, group_by=())
    )
    assert only.total_usage == 100
    # The property semi-join reads raw events of the same tenant only: t2's e1
    # also has calls=1, yet t1's read counts its own e1 once, at its own quantity.
    [mine] = get_detailed_usage_analytics(
        migrated.gateway, detailed(group_by=(), property_filters={"calls": ["1"]})
    )
    assert mine.total_usage == 2 + 7 + 11 and mine.event_count == 3
    assert (
        get_processed_events(
            migrated.gateway, GetProcessedEventsParams("t1", "staging", T0, END, count_total=True)
        ).total
        == 0
    )

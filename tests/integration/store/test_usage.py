"""GetUsage / GetUsageWithFilters on real ClickHouse against hand-computed values."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from tests.integration.store.conftest import StoreUnderTest
from tests.integration.store.rows import T0, event
from tests.reference import MAX_EVENT_QUANTITY, canonical, event_value, number, window_start
from worker.domain.events import Event
from worker.domain.metering import (
    AggregationType,
    WindowSize,
)
from worker.store.params import (
    AggregationResult,
    FilterGroup,
    UsageParams,
    UsageResult,
    UsageWithFiltersParams,
)
from worker.store.raw import derived_properties, insert_raw
from worker.store.usage import get_usage, get_usage_with_filters

A = AggregationType
END = T0 + timedelta(minutes=100)


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def usage(
    aggregation: AggregationType, *, start: datetime = T0, end: datetime = END, **fields: Any
) -> UsageParams:
    values: dict[str, Any] = {"property_name": "calls"}
    values.update(fields)
    return UsageParams("t1", "prod", "api_call", aggregation, start, end, **values)


def store_events(migrated: StoreUnderTest, events: list[Event], token: str | None = None) -> None:
    insert_raw(migrated.gateway, events, dedup_token=token)


# e1..e5 in the first hour, e6 and e7 tied on the timestamp in the second.
SAMPLE = [
    event("e1", timestamp=minutes(1), properties={"calls": 3}),
    event("e2", timestamp=minutes(2), properties={"calls": "4.5"}),
    event("e3", timestamp=minutes(3), properties={"calls": -2}),
    event("e4", timestamp=minutes(4), properties={}),
    event("e5", timestamp=minutes(5), properties={"calls": "abc"}),
    event("e6", timestamp=minutes(70), properties={"calls": 3}),
    event("e7", timestamp=minutes(70), properties={"calls": 2}),
]
HOUR0, HOUR1 = T0, T0 + timedelta(hours=1)


def windows(*pairs: tuple[datetime, str]) -> tuple[UsageResult, ...]:
    return tuple(UsageResult(start, Decimal(value)) for start, value in pairs)


@pytest.mark.parametrize(
    ("aggregation", "total", "hourly", "extra"),
    [
        (A.COUNT, "7", [(HOUR0, "5"), (HOUR1, "2")], {}),
        (A.SUM, "12.5", [(HOUR0, "7.5"), (HOUR1, "5")], {}),
        # 12.5 / 7 = 1.7857142857142857..., 15 places half up; hour 0: 7.5 / 5.
        (A.AVG, "1.785714285714286", [(HOUR0, "1.5"), (HOUR1, "2.5")], {}),
        (A.MAX, "4.5", [(HOUR0, "4.5"), (HOUR1, "3")], {}),
        # Ties on the timestamp: the greater id (e7) is the latest; hour 0 ends with e5 (0).
        (A.LATEST, "2", [(HOUR0, "0"), (HOUR1, "2")], {}),
        (
            A.SUM_WITH_MULTIPLIER,
            "18.75",
            [(HOUR0, "11.25"), (HOUR1, "7.5")],
            {"multiplier": Decimal("1.5")},
        ),
        # Distinct canonical values {3, 4.5, -2, abc, 2}; per hour {3, 4.5, -2, abc}, {3, 2}.
        (A.COUNT_UNIQUE, "5", [(HOUR0, "4"), (HOUR1, "2")], {}),
        # Weights (end - ts) / 100 min: 3 x .99 + 4.5 x .98 + 3 x .3 + 2 x .3.
        (A.WEIGHTED_SUM, "8.88", [(HOUR0, "7.38"), (HOUR1, "1.5")], {}),
    ],
)
def test_each_aggregation_in_total_and_per_window(
    migrated: StoreUnderTest,
    aggregation: AggregationType,
    total: str,
    hourly: list[tuple[datetime, str]],
    extra: dict[str, Any],
) -> None:
    store_events(migrated, SAMPLE)
    result = get_usage(migrated.gateway, usage(aggregation, window_size=WindowSize.HOUR, **extra))
    assert result == AggregationResult(
        event_name="api_call",
        aggregation=aggregation,
        value=Decimal(total),
        windows=windows(*hourly),
    )
    without_windows = get_usage(migrated.gateway, usage(aggregation, **extra))
    assert without_windows.value == Decimal(total)
    assert without_windows.windows == ()


def test_bucketed_max_sums_each_buckets_maximum(migrated: StoreUnderTest) -> None:
    store_events(
        migrated,
        [
            event("b1", timestamp=minutes(1), properties={"calls": 4}),
            event("b2", timestamp=minutes(14), properties={"calls": 6}),  # bucket [0, 15): 6
            event("b3", timestamp=minutes(15), properties={"calls": 1}),  # bucket [15, 30): 1
            event("b4", timestamp=minutes(61), properties={"calls": 2}),  # [60, 75): 5
            event("b5", timestamp=minutes(74), properties={"calls": "5"}),
        ],
    )
    params = usage(A.MAX, bucket_size=WindowSize.MIN15, window_size=WindowSize.HOUR)
    result = get_usage(migrated.gateway, params)
    assert result.value == Decimal(12)
    assert result.windows == windows((HOUR0, "7"), (HOUR1, "5"))
    assert get_usage(migrated.gateway, usage(A.MAX, bucket_size=WindowSize.HOUR)).value == 11
    # One bucket spanning the range is a plain MAX.
    assert get_usage(migrated.gateway, usage(A.MAX, bucket_size=WindowSize.DAY)).value == 6


def test_values_are_measured_exactly_as_metering_measures_them(
    migrated: StoreUnderTest,
) -> None:
    odd_values: list[Any] = [
        1e-20,
        1e16,
        "  12 ",
        "1e3",
        10**30,
        "NaN",
        "Infinity",
        0.1,
        -0.0,
        "1_000",
        True,
        None,
        {"n": 1},
        [1],
        "0.0000000000000015",
        123456789.123456789,
    ]
    events = [
        event(f"v{i}", external_customer_id=f"cust_{i}", properties={"calls": value})
        for i, value in enumerate(odd_values)
    ]
    store_events(migrated, events)
    for item in events:  # expected: the independent reference's reading of the value
        expected = event_value(item.properties["calls"])
        params = usage(A.SUM, external_customer_id=item.external_customer_id)
        assert get_usage(migrated.gateway, params).value == expected, item.properties


def test_filters_use_the_canonical_form_of_the_meter_match(migrated: StoreUnderTest) -> None:
    values: list[Any] = [True, False, 1000000.0, 1e16, 0.1, 7, "x", None, {"a": 1}, [1], 2.5e-7]
    events = [event(f"f{i}", properties={"flag": value}) for i, value in enumerate(values)]
    store_events(migrated, events)
    for wanted in (
        ["true"],
        ["1000000"],
        ["10000000000000000"],
        ["0.1", "7"],
        ["x", "false"],
        ["0.00000025"],
        ["None", "null", "{'a': 1}", "[1]", "1e+06", "1.0"],
        [],
    ):
        # expected: the meter match of the independent reference (canonical values)
        expected = sum(1 for item in events if canonical(item.properties.get("flag")) in wanted)
        result = get_usage(migrated.gateway, usage(A.COUNT, filters={"flag": wanted}))
        assert result.value == expected, wanted
    assert get_usage(migrated.gateway, usage(A.COUNT, filters={"flag": ["true"]})).value == 1
    assert get_usage(migrated.gateway, usage(A.COUNT, filters={"flag": ["1e+06"]})).value == 0


def test_filters_and_across_keys_or_within(migrated: StoreUnderTest) -> None:
    store_events(
        migrated,
        [
            event("g1", properties={"region": "us", "tier": "gold"}),
            event("g2", properties={"region": "eu", "tier": "gold"}),
            event("g3", properties={"region": "us", "tier": "silver"}),
            event("g4", properties={"region": "ap"}),
        ],
    )
    count = lambda filters: get_usage(migrated.gateway, usage(A.COUNT, filters=filters)).value  # noqa: E731
    assert count({"region": ["us", "eu"]}) == 3
    assert count({"region": ["us", "eu"], "tier": ["gold"]}) == 2
    assert count({"tier": ["gold", "silver"]}) == 3
    assert count({"missing": ["x"]}) == 0


def test_every_window_size_matches_domain_windows(migrated: StoreUnderTest) -> None:
    step = timedelta(hours=37, minutes=13, seconds=7, microseconds=5)
    start = datetime(2026, 1, 20, 5, 0, tzinfo=UTC)
    events = [event(f"w{i:02d}", timestamp=start + i * step) for i in range(48)]
    store_events(migrated, events)
    end = start + 48 * step
    for size in WindowSize:
        result = get_usage(migrated.gateway, usage(A.COUNT, start=start, end=end, window_size=size))
        expected = Counter(window_start(item.timestamp, size) for item in events)  # reference
        assert result.value == 48
        assert result.windows == tuple(
            UsageResult(when, Decimal(n)) for when, n in sorted(expected.items())
        ), size
    weekly = get_usage(
        migrated.gateway, usage(A.COUNT, start=start, end=end, window_size=WindowSize.WEEK)
    )
    assert weekly.windows[0].window_start == datetime(2026, 1, 19, tzinfo=UTC)  # ISO Monday
    assert all(w.window_start.weekday() == 0 for w in weekly.windows)
    monthly = get_usage(
        migrated.gateway, usage(A.COUNT, start=start, end=end, window_size=WindowSize.MONTH)
    )
    assert [w.window_start for w in monthly.windows] == [
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 2, 1, tzinfo=UTC),
        datetime(2026, 3, 1, tzinfo=UTC),
        datetime(2026, 4, 1, tzinfo=UTC),
    ]
    three_hourly = get_usage(
        migrated.gateway, usage(A.COUNT, start=start, end=end, window_size=WindowSize.HOUR3)
    )
    assert three_hourly.windows[0] == UsageResult(datetime(2026, 1, 20, 3, tzinfo=UTC), Decimal(1))


def test_range_is_half_open_and_scoped_by_customer_and_name(migrated: StoreUnderTest) -> None:
    store_events(
        migrated,
        [
            event("h1", timestamp=T0),  # at start: in
            event("h2", timestamp=END),  # at end: out
            event("h3", timestamp=END - timedelta(microseconds=1)),
            event("h4", event_name="other"),
            event("h5", customer_id="cus_2", external_customer_id="globex"),
        ],
    )
    assert get_usage(migrated.gateway, usage(A.COUNT)).value == 3
    assert get_usage(migrated.gateway, usage(A.COUNT, customer_id="cus_1")).value == 2
    assert get_usage(migrated.gateway, usage(A.COUNT, external_customer_id="globex")).value == 1
    params = UsageParams("t1", "prod", " other ", A.COUNT, T0, END)
    assert get_usage(migrated.gateway, params).value == 1


def test_an_event_stored_twice_is_counted_once(migrated: StoreUnderTest) -> None:
    store_events(migrated, SAMPLE, token="a")
    store_events(migrated, SAMPLE, token="b")
    store_events(migrated, SAMPLE[:2], token="c")
    assert get_usage(migrated.gateway, usage(A.COUNT)).value == 7
    assert get_usage(migrated.gateway, usage(A.SUM)).value == Decimal("12.5")
    assert get_usage(migrated.gateway, usage(A.COUNT_UNIQUE)).value == 5
    groups = UsageWithFiltersParams(usage(A.COUNT), [FilterGroup("all", 0)])
    assert [r.value for r in get_usage_with_filters(migrated.gateway, groups)] == [7]


def test_tenants_and_environments_never_see_each_other(migrated: StoreUnderTest) -> None:
    store_events(migrated, SAMPLE)
    store_events(migrated, [event("e1", tenant="t2", properties={"calls": 100})])
    store_events(migrated, [event("e1", env="staging", properties={"calls": 1000})])
    assert get_usage(migrated.gateway, usage(A.SUM)).value == Decimal("12.5")
    other = UsageParams("t2", "prod", "api_call", A.SUM, T0, END, property_name="calls")
    assert get_usage(migrated.gateway, other).value == 100
    assert get_usage(migrated.gateway, UsageParams("t3", "prod", "api_call", A.COUNT, T0, END)) == (
        AggregationResult("api_call", A.COUNT, Decimal(0))
    )


def test_each_event_counts_in_its_highest_priority_group(migrated: StoreUnderTest) -> None:
    store_events(
        migrated,
        [
            event("p1", properties={"region": "us", "tier": "gold", "calls": 1}),
            event("p2", properties={"region": "us", "tier": "gold", "calls": 2}),
            event("p3", properties={"region": "us", "tier": "silver", "calls": 4}),
            event("p4", properties={"region": "eu", "tier": "gold", "calls": 8}),
            event("p5", properties={"region": "eu", "calls": 16}, timestamp=minutes(61)),
        ],
    )
    groups = [
        FilterGroup("catch_all", 0),
        FilterGroup("us", 5, {"region": ["us"]}),
        FilterGroup("us_gold", 10, {"region": ["us"], "tier": ["gold"]}),
        FilterGroup("ap", 20, {"region": ["ap"]}),
    ]
    params = UsageWithFiltersParams(usage(A.SUM, window_size=WindowSize.HOUR), groups)
    results = get_usage_with_filters(migrated.gateway, params)
    assert [(r.filter_group_id, r.value) for r in results] == [
        ("ap", 0),
        ("us_gold", 3),
        ("us", 4),
        ("catch_all", 24),
    ]
    assert results[3].windows == windows((HOUR0, "8"), (HOUR1, "16"))
    assert results[0].windows == ()


def test_equal_priority_goes_to_the_group_listed_first(migrated: StoreUnderTest) -> None:
    store_events(migrated, [event("q1", properties={"region": "us"})])
    first = FilterGroup("first", 1, {"region": ["us"]})
    second = FilterGroup("second", 1, {"region": ["us", "eu"]})
    results = get_usage_with_filters(
        migrated.gateway, UsageWithFiltersParams(usage(A.COUNT), [first, second])
    )
    assert [(r.filter_group_id, r.value) for r in results] == [("first", 1), ("second", 0)]
    assert (
        get_usage_with_filters(migrated.gateway, UsageWithFiltersParams(usage(A.COUNT), [])) == []
    )


INJECTIONS = [
    "' OR 1=1 --",
    "x') OR ('1'='1",
    "'; DROP TABLE events; --",
    "{tenant:String}",
    "\t\n\\N",
]


def test_injection_attempts_match_nothing_and_harm_nothing(migrated: StoreUnderTest) -> None:
    store_events(migrated, [*SAMPLE, event("i1", properties={"region": "us"})])
    for text in INJECTIONS:
        for filters in ({text: ["us"]}, {"region": [text]}, {text: [text]}):
            assert get_usage(migrated.gateway, usage(A.COUNT, filters=filters)).value == 0
        assert get_usage(migrated.gateway, usage(A.COUNT, external_customer_id=text)).value == 0
        assert get_usage(migrated.gateway, usage(A.SUM, property_name=text)).value == 0
        assert get_usage(
            migrated.gateway, UsageParams(text, "prod", "api_call", A.COUNT, T0, END)
        ) == (AggregationResult("api_call", A.COUNT, Decimal(0)))
        groups = UsageWithFiltersParams(usage(A.COUNT), [FilterGroup(text, 1, {text: [text]})])
        assert get_usage_with_filters(migrated.gateway, groups)[0].value == 0
    assert get_usage(migrated.gateway, usage(A.COUNT)).value == 8
    assert migrated.gateway.query("SELECT count() FROM events") == [(8,)]


def test_a_property_value_can_contain_anything(migrated: StoreUnderTest) -> None:
    weird = 'it\'s "quoted"\t\\ and ünïcode 🎉'
    store_events(migrated, [event("u1", properties={weird: weird}), event("u2")])
    assert get_usage(migrated.gateway, usage(A.COUNT, filters={weird: [weird]})).value == 1


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="property_name"):
        UsageParams("t1", "prod", "api_call", A.SUM, T0, END)
    with pytest.raises(ValueError, match="tenant_id"):
        UsageParams("", "prod", "api_call", A.COUNT, T0, END)
    with pytest.raises(ValueError, match="aware"):
        UsageParams("t1", "prod", "api_call", A.COUNT, datetime(2026, 1, 1), END)
    with pytest.raises(ValueError, match="before"):
        UsageParams("t1", "prod", "api_call", A.COUNT, END, T0)
    with pytest.raises(ValueError, match="bucket_size"):
        usage(A.SUM, bucket_size=WindowSize.HOUR)
    with pytest.raises(ValueError, match="multiplier"):
        usage(A.SUM_WITH_MULTIPLIER, multiplier=Decimal(0))
    with pytest.raises(ValueError, match="15 decimal"):
        usage(A.SUM_WITH_MULTIPLIER, multiplier=Decimal("1.0000000000000001"))
    with pytest.raises(ValueError, match="lists of strings"):
        usage(A.COUNT, filters={"region": "us"})
    with pytest.raises(ValueError, match="unique"):
        UsageWithFiltersParams(usage(A.COUNT), [FilterGroup("a", 1), FilterGroup("a", 2)])


def test_derived_property_maps_follow_the_domain_rules() -> None:
    """raw.derived_properties (fast paths included) == the reference's canonical form and
    number reading (what the meter match and metering use)."""
    rng = random.Random(7)
    values: list[Any] = [
        *(1, 0, -3, 10**18, 10**18 - 1, 10**30, True, False, None, {"a": 1}, [1]),
        *(1.5, -0.0, 1e-20, 1e16, 1e18, 9.999999999999999e17, 0.1 + 0.2, 1e-5, 1e15),
        *(float("nan"), float("inf"), "x", " 12 ", "1e3", "+5", ".5", "١٢", "NaN", ""),
        *("-Infinity", "1_000", "²", "0.0000000000000015", "99999999999999999999"),
        *(rng.uniform(-1e6, 1e6) for _ in range(300)),
        *(10 ** rng.uniform(-20, 19) for _ in range(300)),
        *(float(rng.randint(-(10**17), 10**17)) for _ in range(100)),
    ]
    for value in values:  # expected: the independent reference (tests/reference.py)
        canonical_json, numeric_json = derived_properties({"k": value})
        canonical_form = canonical(value)
        assert orjson.loads(canonical_json) == (
            {} if canonical_form is None else {"k": canonical_form}
        )
        numeric = orjson.loads(numeric_json)
        assert Decimal(numeric.get("k", "0")) == event_value(value), value
        parsed = number(value)
        usable = parsed is not None and parsed < MAX_EVENT_QUANTITY
        assert ("k" in numeric) == (canonical_form is not None and usable), value

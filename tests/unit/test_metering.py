"""Meters, per-event quantities, unique hashes and time windows (DESIGN.md §3).

Every expected value here is worked out by hand (hashes with :mod:`hashlib` directly).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.domain.events import Event
from worker.domain.metering import (
    AggregationType,
    Meter,
    MeterFilter,
    WindowSize,
    canonical_value,
    measure,
)
from worker.domain.windows import window_start

PERIOD_START = datetime(2026, 4, 1, tzinfo=UTC)
PERIOD_END = datetime(2026, 5, 1, tzinfo=UTC)  # 30 days


def _event(properties: dict[str, Any] | None = None, **overrides: Any) -> Event:
    fields: dict[str, Any] = {
        "id": "evt_1",
        "tenant_id": "t1",
        "environment_id": "prod",
        "event_name": "api_call",
        "timestamp": datetime(2026, 4, 11, tzinfo=UTC),
        "properties": properties if properties is not None else {},
        "external_customer_id": "acme",
    }
    fields.update(overrides)
    return Event(**fields)


def _meter(kind: AggregationType, **overrides: Any) -> Meter:
    fields: dict[str, Any] = {
        "id": "m_api",
        "event_name": "api_call",
        "aggregation": kind,
        "field": "" if kind is AggregationType.COUNT else "calls",
    }
    fields.update(overrides)
    return Meter(**fields)


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _measure(kind: AggregationType, properties: dict[str, Any], **meter: Any) -> Any:
    return measure(_meter(kind, **meter), _event(properties), PERIOD_START, PERIOD_END)


# --- canonical_value ------------------------------------------------------------------------

CANONICAL = [
    pytest.param("us-east", "us-east", id="string-as-is"),
    pytest.param(" padded ", " padded ", id="string-not-trimmed"),
    pytest.param("1.0", "1.0", id="numeric-string-as-is"),
    pytest.param("", "", id="empty-string"),
    pytest.param(True, "true", id="true"),
    pytest.param(False, "false", id="false"),
    pytest.param(0, "0", id="int-zero"),
    pytest.param(-42, "-42", id="negative-int"),
    pytest.param(1000000, "1000000", id="int-million"),
    pytest.param(1e6, "1000000", id="float-1e6"),
    pytest.param(1000000.0, "1000000", id="float-million"),
    pytest.param(10**30, "1" + "0" * 30, id="big-int"),
    pytest.param(1e16, "10000000000000000", id="float-1e16"),
    pytest.param(-3.0, "-3", id="negative-integral-float"),
    pytest.param(0.1, "0.1", id="float-0.1"),
    pytest.param(2.5, "2.5", id="float-2.5"),
    pytest.param(-0.25, "-0.25", id="negative-float"),
    pytest.param(123.456, "123.456", id="float-123.456"),
    pytest.param(1e-7, "0.0000001", id="float-1e-7"),
    pytest.param(1.5e-10, "0.00000000015", id="float-1.5e-10"),
    pytest.param(1.5e300, "15" + "0" * 299, id="float-1.5e300"),
    pytest.param(1e23, "1" + "0" * 23, id="float-1e23"),
]


@pytest.mark.parametrize(("value", "expected"), CANONICAL)
def test_canonical_value(value: object, expected: str) -> None:
    assert canonical_value(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="null"),
        pytest.param({}, id="empty-object"),
        pytest.param({"a": 1}, id="object"),
        pytest.param([], id="empty-array"),
        pytest.param(["us"], id="array"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="inf"),
        pytest.param(float("-inf"), id="minus-inf"),
    ],
)
def test_canonical_value_of_unmatchable_values_is_none(value: object) -> None:
    assert canonical_value(value) is None


@settings(max_examples=300)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_canonical_float_never_has_an_exponent_and_round_trips(value: float) -> None:
    text = canonical_value(value)
    assert text is not None
    assert "e" not in text.lower()
    assert float(text) == value


# --- Meter.matches --------------------------------------------------------------------------

FILTERED = _meter(
    AggregationType.COUNT,
    filters=(
        MeterFilter("region", frozenset({"us", "eu"})),
        MeterFilter("tier", frozenset({"1"})),
    ),
)


def test_meter_matches_name_and_all_filters() -> None:
    assert FILTERED.matches(_event({"region": "us", "tier": "1"}))


def test_meter_filter_values_are_or_within_a_key() -> None:
    assert FILTERED.matches(_event({"region": "eu", "tier": "1"}))


def test_meter_filter_keys_are_and_across_keys() -> None:
    assert not FILTERED.matches(_event({"region": "us", "tier": "2"}))
    assert not FILTERED.matches(_event({"region": "apac", "tier": "1"}))


def test_meter_missing_filter_key_never_matches() -> None:
    assert not FILTERED.matches(_event({"region": "us"}))
    assert not FILTERED.matches(_event({"tier": "1"}))
    assert not FILTERED.matches(_event({}))


def test_meter_event_name_must_be_equal() -> None:
    meter = _meter(AggregationType.COUNT)
    assert meter.matches(_event(event_name="api_call"))
    assert not meter.matches(_event(event_name="api_calls"))
    assert not meter.matches(_event(event_name="API_CALL"))
    assert not meter.matches(_event(event_name="api"))


def test_meter_without_filters_matches_any_properties() -> None:
    meter = _meter(AggregationType.COUNT)
    assert meter.matches(_event({}))
    assert meter.matches(_event({"anything": [1, 2]}))


def test_numeric_property_matches_its_canonical_string() -> None:
    assert FILTERED.matches(_event({"region": "us", "tier": 1}))
    assert FILTERED.matches(_event({"region": "us", "tier": 1.0}))


def test_string_one_point_zero_does_not_match_one() -> None:
    assert not FILTERED.matches(_event({"region": "us", "tier": "1.0"}))


def test_boolean_property_matches_true_false_strings() -> None:
    meter = _meter(AggregationType.COUNT, filters=(MeterFilter("beta", frozenset({"true"})),))
    assert meter.matches(_event({"beta": True}))
    assert not meter.matches(_event({"beta": False}))
    assert not meter.matches(_event({"beta": "True"}))
    assert not meter.matches(_event({"beta": 1}))


def test_large_integral_float_matches_plain_digit_filter() -> None:
    meter = _meter(AggregationType.COUNT, filters=(MeterFilter("n", frozenset({"1000000"})),))
    assert meter.matches(_event({"n": 1e6}))
    assert meter.matches(_event({"n": 1000000}))
    assert not meter.matches(_event({"n": "1e6"}))


def test_null_object_and_array_never_match() -> None:
    meter = _meter(
        AggregationType.COUNT,
        filters=(MeterFilter("v", frozenset({"null", "None", "", "{}", "[]", "[1]"})),),
    )
    assert not meter.matches(_event({"v": None}))
    assert not meter.matches(_event({"v": {}}))
    assert not meter.matches(_event({"v": []}))
    assert not meter.matches(_event({"v": [1]}))
    assert meter.matches(_event({"v": ""}))


# --- measure: quantities --------------------------------------------------------------------


def test_count_is_one_regardless_of_properties() -> None:
    result = _measure(AggregationType.COUNT, {"calls": 99})
    assert result.quantity == Decimal(1)
    assert result.field_missing is False


FIELD_VALUE_KINDS = [
    AggregationType.SUM,
    AggregationType.AVG,
    AggregationType.MAX,
    AggregationType.LATEST,
]


@pytest.mark.parametrize("kind", FIELD_VALUE_KINDS)
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(7, Decimal(7), id="int"),
        pytest.param(2.5, Decimal("2.5"), id="float"),
        pytest.param(0.1, Decimal("0.1"), id="float-0.1-exact-decimal"),
        pytest.param("12.75", Decimal("12.75"), id="numeric-string"),
        pytest.param(" 4 ", Decimal(4), id="padded-numeric-string"),
        pytest.param("1e3", Decimal(1000), id="exponent-string"),
        pytest.param(0, Decimal(0), id="zero"),
        pytest.param(-3, Decimal(0), id="negative-clamped"),
        pytest.param("-0.5", Decimal(0), id="negative-string-clamped"),
    ],
)
def test_field_value_kinds_measure_the_field(
    kind: AggregationType, raw: object, expected: Decimal
) -> None:
    result = _measure(kind, {"calls": raw})
    assert result.quantity == expected
    assert result.field_missing is False


@pytest.mark.parametrize("kind", [*FIELD_VALUE_KINDS, AggregationType.SUM_WITH_MULTIPLIER])
@pytest.mark.parametrize(
    "properties",
    [
        pytest.param({}, id="missing"),
        pytest.param({"calls": None}, id="null"),
        pytest.param({"calls": "abc"}, id="unparseable-string"),
        pytest.param({"calls": ""}, id="empty-string"),
        pytest.param({"calls": True}, id="boolean"),
        pytest.param({"calls": [1]}, id="array"),
        pytest.param({"calls": {"n": 1}}, id="object"),
        pytest.param({"calls": "NaN"}, id="nan-string"),
        pytest.param({"calls": "Infinity"}, id="infinity-string"),
        pytest.param({"other": 5}, id="other-field-only"),
    ],
)
def test_missing_or_unparseable_field_measures_zero_and_is_flagged(
    kind: AggregationType, properties: dict[str, Any]
) -> None:
    result = _measure(kind, properties, multiplier=Decimal(3))
    assert result.quantity == Decimal(0)
    assert result.field_missing is True


def test_quantity_is_quantized_to_15_places() -> None:
    result = _measure(AggregationType.SUM, {"calls": "0.1234567890123456789"})
    # 15th decimal is 5, the next digit 6 rounds it up.
    assert result.quantity == Decimal("0.123456789012346")
    assert result.quantity.as_tuple().exponent == -15


def test_quantity_rounds_half_up_at_the_16th_place() -> None:
    result = _measure(AggregationType.SUM, {"calls": "0.0000000000000005"})
    assert result.quantity == Decimal("0.000000000000001")


def test_integer_quantity_carries_15_places() -> None:
    assert _measure(AggregationType.SUM, {"calls": 7}).quantity.as_tuple().exponent == -15


def test_sum_with_multiplier_multiplies() -> None:
    result = _measure(AggregationType.SUM_WITH_MULTIPLIER, {"calls": 3}, multiplier=Decimal("2.5"))
    assert result.quantity == Decimal("7.5")
    assert result.field_missing is False


def test_sum_with_multiplier_is_exact_in_decimal() -> None:
    result = _measure(AggregationType.SUM_WITH_MULTIPLIER, {"calls": 0.1}, multiplier=Decimal(3))
    assert result.quantity == Decimal("0.3")


def test_sum_with_multiplier_clamps_negative_value_first() -> None:
    result = _measure(AggregationType.SUM_WITH_MULTIPLIER, {"calls": -4}, multiplier=Decimal("2.5"))
    assert result.quantity == Decimal(0)


@pytest.mark.parametrize(
    ("value", "multiplier", "quantity", "missing"),
    [
        ("1e1000001", "2", "0", True),  # beyond the decimal context's exponents: unusable
        ("-1e1000001", "2", "0", False),  # negative: clamped to 0 like any negative
        ("1e999999999999999999", "10", "0", True),
        ("1e30", "0.000000000000001", "1000000000000000", False),  # in range after the product
        ("1e17", "10", "0", True),  # exactly 10^18: unusable
        ("0.00000000000000000001e-1000001", "5", "0", False),
    ],
)
def test_sum_with_multiplier_of_huge_or_tiny_values_never_raises(
    value: str, multiplier: str, quantity: str, missing: bool
) -> None:
    result = _measure(
        AggregationType.SUM_WITH_MULTIPLIER, {"calls": value}, multiplier=Decimal(multiplier)
    )
    assert result.quantity == Decimal(quantity)
    assert result.field_missing is missing


def test_count_unique_measures_one() -> None:
    result = _measure(AggregationType.COUNT_UNIQUE, {"calls": "user-7"})
    assert result.quantity == Decimal(1)
    assert result.field_missing is False


def test_count_unique_without_the_field_is_flagged() -> None:
    result = _measure(AggregationType.COUNT_UNIQUE, {})
    assert result.quantity == Decimal(0)
    assert result.field_missing is True


# --- measure: WEIGHTED_SUM ------------------------------------------------------------------


def _weighted(value: object, ts: datetime) -> Decimal:
    event = _event({"calls": value}, timestamp=ts)
    quantity: Decimal = measure(
        _meter(AggregationType.WEIGHTED_SUM), event, PERIOD_START, PERIOD_END
    ).quantity
    return quantity


def test_weighted_sum_ten_days_into_thirty_keeps_two_thirds() -> None:
    # 30 x (30 days - 10 days) / 30 days = 20, exactly.
    assert _weighted(30, datetime(2026, 4, 11, tzinfo=UTC)) == Decimal(20)


def test_weighted_sum_at_period_start_is_the_full_value() -> None:
    assert _weighted(30, PERIOD_START) == Decimal(30)


def test_weighted_sum_one_third_left_is_quantized() -> None:
    # 20 days in, 10 of 30 left: 1 x 1/3.
    assert _weighted(1, datetime(2026, 4, 21, tzinfo=UTC)) == Decimal("0.333333333333333")


def test_weighted_sum_two_thirds_left_rounds_half_up() -> None:
    assert _weighted(1, datetime(2026, 4, 11, tzinfo=UTC)) == Decimal("0.666666666666667")


def test_weighted_sum_half_a_day_before_the_end() -> None:
    # 12 hours of 720 hours left: 720 x 12/720 = 12.
    assert _weighted(720, datetime(2026, 4, 30, 12, tzinfo=UTC)) == Decimal(12)


def test_weighted_sum_of_negative_value_is_zero() -> None:
    assert _weighted(-30, datetime(2026, 4, 11, tzinfo=UTC)) == Decimal(0)


# --- measure: unique_hash -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind", [k for k in AggregationType if k is not AggregationType.COUNT_UNIQUE]
)
def test_non_unique_meters_hash_tenant_environment_and_event_id(kind: AggregationType) -> None:
    result = _measure(kind, {"calls": 1})
    assert result.unique_hash == _sha256_hex("t1\x1fprod\x1fevt_1")


def test_event_hash_changes_with_the_event_id() -> None:
    meter = _meter(AggregationType.SUM)
    first = measure(meter, _event({"calls": 1}, id="a"), PERIOD_START, PERIOD_END)
    second = measure(meter, _event({"calls": 1}, id="b"), PERIOD_START, PERIOD_END)
    assert first.unique_hash == _sha256_hex("t1\x1fprod\x1fa")
    assert second.unique_hash == _sha256_hex("t1\x1fprod\x1fb")


def test_event_hash_with_empty_environment() -> None:
    result = measure(
        _meter(AggregationType.COUNT), _event(environment_id=""), PERIOD_START, PERIOD_END
    )
    assert result.unique_hash == _sha256_hex("t1\x1f\x1fevt_1")


def test_count_unique_hashes_tenant_environment_meter_and_value() -> None:
    result = _measure(AggregationType.COUNT_UNIQUE, {"calls": "user-7"})
    assert result.unique_hash == _sha256_hex("t1\x1fprod\x1fm_api\x1fuser-7")


def test_count_unique_hashes_the_canonical_value() -> None:
    result = _measure(AggregationType.COUNT_UNIQUE, {"calls": 1e6})
    assert result.unique_hash == _sha256_hex("t1\x1fprod\x1fm_api\x1f1000000")


def test_count_unique_same_value_in_two_events_gives_the_same_hash() -> None:
    meter = _meter(AggregationType.COUNT_UNIQUE)
    first = measure(meter, _event({"calls": "user-7"}, id="a"), PERIOD_START, PERIOD_END)
    second = measure(
        meter,
        _event({"calls": "user-7"}, id="b", timestamp=datetime(2026, 4, 20, tzinfo=UTC)),
        PERIOD_START,
        PERIOD_END,
    )
    assert first.unique_hash == second.unique_hash


def test_count_unique_int_and_integral_float_share_a_hash() -> None:
    meter = _meter(AggregationType.COUNT_UNIQUE)
    as_int = measure(meter, _event({"calls": 42}), PERIOD_START, PERIOD_END)
    as_float = measure(meter, _event({"calls": 42.0}), PERIOD_START, PERIOD_END)
    assert as_int.unique_hash == as_float.unique_hash == _sha256_hex("t1\x1fprod\x1fm_api\x1f42")


def test_count_unique_different_meter_gives_a_different_hash() -> None:
    event = _event({"calls": "user-7"})
    first = measure(_meter(AggregationType.COUNT_UNIQUE), event, PERIOD_START, PERIOD_END)
    second = measure(
        _meter(AggregationType.COUNT_UNIQUE, id="m_other"), event, PERIOD_START, PERIOD_END
    )
    assert second.unique_hash == _sha256_hex("t1\x1fprod\x1fm_other\x1fuser-7")
    assert first.unique_hash != second.unique_hash


def test_count_unique_different_tenant_gives_a_different_hash() -> None:
    meter = _meter(AggregationType.COUNT_UNIQUE)
    other = measure(meter, _event({"calls": "user-7"}, tenant_id="t2"), PERIOD_START, PERIOD_END)
    assert other.unique_hash == _sha256_hex("t2\x1fprod\x1fm_api\x1fuser-7")


# --- measure never crashes on a JSON number -------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        pytest.param(AggregationType.SUM, 1e300, id="sum-float-1e300"),
        pytest.param(AggregationType.MAX, "1e100", id="max-string-1e100"),
        pytest.param(AggregationType.WEIGHTED_SUM, "9" * 80, id="weighted-80-digit-string"),
    ],
)
def test_huge_field_value_does_not_crash_measure(kind: AggregationType, raw: object) -> None:
    # Bad input never raises outside the single error boundary (STYLE.md #4): a huge but
    # finite JSON number must not escape measure() as decimal.InvalidOperation.
    result = _measure(kind, {"calls": raw})
    assert result.quantity.is_finite()
    assert result.quantity >= 0


# --- window_start ---------------------------------------------------------------------------


def _utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


# 2026-03-18 is a Wednesday; 2026-03-16 the Monday of its ISO week.
WINDOWS = [
    (_utc(2026, 3, 18, 14, 47, 31, 500000), WindowSize.MINUTE, _utc(2026, 3, 18, 14, 47)),
    (_utc(2026, 3, 18, 14, 47, 31, 500000), WindowSize.MIN15, _utc(2026, 3, 18, 14, 45)),
    (_utc(2026, 3, 18, 14, 47, 31, 500000), WindowSize.MIN30, _utc(2026, 3, 18, 14, 30)),
    (_utc(2026, 3, 18, 14, 47, 31, 500000), WindowSize.HOUR, _utc(2026, 3, 18, 14)),
    (_utc(2026, 3, 18, 14, 47, 31, 500000), WindowSize.HOUR3, _utc(2026, 3, 18, 12)),
    (_utc(2026, 3, 18, 14, 47, 31, 500000), WindowSize.HOUR6, _utc(2026, 3, 18, 12)),
    (_utc(2026, 3, 18, 14, 47, 31, 500000), WindowSize.HOUR12, _utc(2026, 3, 18, 12)),
    (_utc(2026, 3, 18, 14, 47, 31, 500000), WindowSize.DAY, _utc(2026, 3, 18)),
    (_utc(2026, 3, 18, 14, 47, 31, 500000), WindowSize.WEEK, _utc(2026, 3, 16)),
    (_utc(2026, 3, 18, 14, 47, 31, 500000), WindowSize.MONTH, _utc(2026, 3, 1)),
    (_utc(2026, 3, 18, 10, 5), WindowSize.MIN15, _utc(2026, 3, 18, 10)),
    (_utc(2026, 3, 18, 10, 5), WindowSize.MIN30, _utc(2026, 3, 18, 10)),
    (_utc(2026, 3, 18, 10, 5), WindowSize.HOUR3, _utc(2026, 3, 18, 9)),
    (_utc(2026, 3, 18, 10, 5), WindowSize.HOUR6, _utc(2026, 3, 18, 6)),
    (_utc(2026, 3, 18, 10, 5), WindowSize.HOUR12, _utc(2026, 3, 18)),
    (_utc(2026, 3, 18, 23, 59, 59, 999999), WindowSize.HOUR3, _utc(2026, 3, 18, 21)),
    (_utc(2026, 3, 18, 23, 59, 59, 999999), WindowSize.HOUR6, _utc(2026, 3, 18, 18)),
    (_utc(2026, 3, 18, 23, 59, 59, 999999), WindowSize.HOUR12, _utc(2026, 3, 18, 12)),
    (_utc(2026, 3, 18, 23, 59, 59, 999999), WindowSize.DAY, _utc(2026, 3, 18)),
    # exact boundaries map to themselves
    (_utc(2026, 3, 18, 14, 47), WindowSize.MINUTE, _utc(2026, 3, 18, 14, 47)),
    (_utc(2026, 3, 18, 14, 45), WindowSize.MIN15, _utc(2026, 3, 18, 14, 45)),
    (_utc(2026, 3, 18, 14, 30), WindowSize.MIN30, _utc(2026, 3, 18, 14, 30)),
    (_utc(2026, 3, 18, 14), WindowSize.HOUR, _utc(2026, 3, 18, 14)),
    (_utc(2026, 3, 18, 9), WindowSize.HOUR3, _utc(2026, 3, 18, 9)),
    (_utc(2026, 3, 18, 18), WindowSize.HOUR6, _utc(2026, 3, 18, 18)),
    (_utc(2026, 3, 18, 12), WindowSize.HOUR12, _utc(2026, 3, 18, 12)),
    (_utc(2026, 3, 18), WindowSize.DAY, _utc(2026, 3, 18)),
    (_utc(2026, 3, 16), WindowSize.WEEK, _utc(2026, 3, 16)),
    (_utc(2026, 3, 1), WindowSize.MONTH, _utc(2026, 3, 1)),
    # one microsecond before a boundary belongs to the previous window
    (_utc(2026, 3, 18, 14, 44, 59, 999999), WindowSize.MIN15, _utc(2026, 3, 18, 14, 30)),
    (_utc(2026, 3, 17, 23, 59, 59, 999999), WindowSize.DAY, _utc(2026, 3, 17)),
    # ISO weeks start on Monday: Sunday 2026-03-22 is still the week of Monday 03-16
    (_utc(2026, 3, 22, 23, 59, 59, 999999), WindowSize.WEEK, _utc(2026, 3, 16)),
    (_utc(2026, 3, 23), WindowSize.WEEK, _utc(2026, 3, 23)),
    # a week spanning a year end: Thursday 2026-01-01 -> Monday 2025-12-29
    (_utc(2026, 1, 1, 8), WindowSize.WEEK, _utc(2025, 12, 29)),
    (_utc(2024, 2, 29, 23, 59, 59), WindowSize.MONTH, _utc(2024, 2, 1)),
    (_utc(2026, 12, 31, 23, 59, 59), WindowSize.MONTH, _utc(2026, 12, 1)),
    # before the epoch (Wednesday 1969-12-31; its Monday is 1969-12-29)
    (_utc(1969, 12, 31, 23, 59, 59), WindowSize.MIN15, _utc(1969, 12, 31, 23, 45)),
    (_utc(1969, 12, 31, 23, 59, 59), WindowSize.HOUR3, _utc(1969, 12, 31, 21)),
    (_utc(1969, 12, 31, 23, 59, 59), WindowSize.WEEK, _utc(1969, 12, 29)),
]


@pytest.mark.parametrize(
    ("ts", "size", "expected"),
    [pytest.param(*case, id=f"{case[1].value}-{case[0].isoformat()}") for case in WINDOWS],
)
def test_window_start(ts: datetime, size: WindowSize, expected: datetime) -> None:
    start = window_start(ts, size)
    assert start == expected
    assert start.utcoffset() == timedelta(0)


def test_window_start_converts_other_zones_to_utc_first() -> None:
    # 2026-03-01T00:30+01:00 is 2026-02-28T23:30Z (a Saturday; Monday is 02-23).
    ts = datetime(2026, 3, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    assert window_start(ts, WindowSize.HOUR) == _utc(2026, 2, 28, 23)
    assert window_start(ts, WindowSize.DAY) == _utc(2026, 2, 28)
    assert window_start(ts, WindowSize.WEEK) == _utc(2026, 2, 23)
    assert window_start(ts, WindowSize.MONTH) == _utc(2026, 2, 1)


@settings(max_examples=200)
@given(
    st.datetimes(
        min_value=datetime(1960, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
    st.sampled_from(list(WindowSize)),
)
def test_window_start_is_at_or_before_ts_and_idempotent(ts: datetime, size: WindowSize) -> None:
    start = window_start(ts, size)
    assert start <= ts
    assert ts - start < timedelta(days=31)
    assert window_start(start, size) == start

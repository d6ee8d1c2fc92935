"""Billing periods (DESIGN.md §3, "period_id").

Expected instants in the example tests are worked out by hand from the calendar and the tz
rules (New York: EST -05:00 / EDT -04:00, DST 2026-03-08 .. 2026-11-01 and 2027-11-07;
Berlin: CET +01:00 / CEST +02:00, DST 2026-03-29 .. 2026-10-25, 2027-03-28; Apia skipped
2011-12-30, going from -10:00 to +14:00), never produced by the code under test. The property
tests compare against a slow reference written independently in this file.
"""

from __future__ import annotations

import calendar
import random
import sys
import threading
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.domain.periods import BillingCycle, BillingPeriodUnit, Period, epoch_ms

U = BillingPeriodUnit
NY = "America/New_York"
BERLIN = "Europe/Berlin"
ONE_US = timedelta(microseconds=1)


def utc(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    microsecond: int = 0,
) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


def cycle(
    anchor: datetime,
    unit: BillingPeriodUnit = U.MONTHLY,
    *,
    count: int = 1,
    tz: str = "UTC",
    start_date: datetime | None = None,
) -> BillingCycle:
    return BillingCycle(
        anchor=anchor,
        unit=unit,
        count=count,
        timezone=tz,
        start_date=anchor - timedelta(days=3650) if start_date is None else start_date,
    )


def period(start: datetime, end: datetime) -> Period:
    return Period(start, end)


def assert_boundaries(c: BillingCycle, expected: dict[int, datetime]) -> None:
    assert {k: c.boundary(k) for k in expected} == expected


# --- epoch_ms and Period ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dt", "expected"),
    [
        (utc(1970, 1, 1), 0),
        (utc(1970, 1, 1, 0, 0, 0, 999), 0),
        (utc(1970, 1, 1, 0, 0, 0, 1000), 1),
        (utc(1969, 12, 31, 23, 59, 59, 999_999), -1),  # floor, not truncation
        (utc(1969, 12, 31, 23, 59, 59, 999_000), -1),
        (utc(2026, 1, 1, 0, 0, 0, 123_456), 1_767_225_600_123),
        (datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))), 1_767_225_600_000),
        (utc(9999, 12, 31, 23, 59, 59, 999_999), 253_402_300_799_999),
    ],
)
def test_epoch_ms_is_exact_and_floors(dt: datetime, expected: int) -> None:
    assert epoch_ms(dt) == expected
    assert type(epoch_ms(dt)) is int


def test_epoch_ms_rejects_naive() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        epoch_ms(datetime(2026, 1, 1))


def test_period_normalises_to_utc_and_keeps_milliseconds() -> None:
    berlin = ZoneInfo(BERLIN)
    p = Period(
        datetime(2026, 1, 1, 1, 0, 0, 123_456, tzinfo=berlin),
        datetime(2026, 2, 1, 1, tzinfo=berlin),
    )
    assert p.start == utc(2026, 1, 1, 0, 0, 0, 123_456)
    assert p.start.tzinfo is UTC
    assert p.end.tzinfo is UTC
    assert p.period_id == 1_767_225_600_123
    assert p == Period(utc(2026, 1, 1, 0, 0, 0, 123_456), utc(2026, 2, 1))


def test_period_validation() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Period(datetime(2026, 1, 1), utc(2026, 2, 1))
    with pytest.raises(ValueError, match="before start"):
        Period(utc(2026, 2, 1), utc(2026, 1, 1))
    p = Period(utc(2026, 1, 1), utc(2026, 2, 1))
    assert p.contains(utc(2026, 1, 1))
    assert p.contains(utc(2026, 2, 1) - ONE_US)
    assert not p.contains(utc(2026, 2, 1))


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, -1, True, 1.5])
def test_count_must_be_a_positive_integer(count: object) -> None:
    with pytest.raises(ValueError, match="count must be an integer >= 1"):
        BillingCycle(
            anchor=utc(2026, 1, 1),
            unit=U.MONTHLY,
            count=count,  # type: ignore[arg-type]
            timezone="UTC",
            start_date=utc(2026, 1, 1),
        )


@pytest.mark.parametrize(
    "tz", ["Mars/Olympus", "", "America", "../etc/passwd", "/etc/localtime", "Europe/Berlin\0"]
)
def test_timezone_must_be_a_valid_iana_name(tz: str) -> None:
    with pytest.raises(ValueError, match="timezone"):
        cycle(utc(2026, 1, 1), tz=tz)


def test_unit_must_be_known_and_accepts_its_string_value() -> None:
    with pytest.raises(ValueError, match="unknown billing period unit"):
        cycle(utc(2026, 1, 1), "monthly")  # type: ignore[arg-type]
    c = cycle(utc(2026, 1, 1), "QUARTERLY")  # type: ignore[arg-type]
    assert c.unit is U.QUARTERLY
    assert c.boundary(1) == utc(2026, 4, 1)
    assert [u.value for u in U] == [u.name for u in U]


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValueError, match="anchor must be a timezone-aware"):
        cycle(datetime(2026, 1, 1), start_date=utc(2026, 1, 1))
    with pytest.raises(ValueError, match="start_date must be a timezone-aware"):
        cycle(utc(2026, 1, 1), start_date=datetime(2026, 1, 1))
    c = cycle(utc(2026, 1, 1))
    with pytest.raises(ValueError, match="ts must be a timezone-aware"):
        c.period_at(datetime(2026, 1, 5))
    c.period_at(utc(2026, 1, 5))  # now cached: a naive ts must still be refused
    with pytest.raises(ValueError, match="ts must be a timezone-aware"):
        c.period_at(datetime(2026, 1, 5))


def test_out_of_range_boundary_raises_overflow_error() -> None:
    c = cycle(utc(2026, 1, 1))
    with pytest.raises(OverflowError, match="k=100000"):
        c.boundary(100_000)
    with pytest.raises(OverflowError):
        c.period_at(utc(9999, 12, 15))


# --- month arithmetic and clamping ---------------------------------------------------------------


def test_monthly_anchor_on_31st_non_leap_year_2026() -> None:
    c = cycle(utc(2026, 1, 31), start_date=utc(2026, 1, 1))
    assert_boundaries(
        c,
        {
            -2: utc(2025, 11, 30),
            -1: utc(2025, 12, 31),
            0: utc(2026, 1, 31),
            1: utc(2026, 2, 28),
            2: utc(2026, 3, 31),
            3: utc(2026, 4, 30),
            11: utc(2026, 12, 31),
            12: utc(2027, 1, 31),
            13: utc(2027, 2, 28),
            24: utc(2028, 1, 31),
            25: utc(2028, 2, 29),
            26: utc(2028, 3, 31),
        },
    )
    assert c.period_at(utc(2026, 2, 15)) == period(utc(2026, 1, 31), utc(2026, 2, 28))
    assert c.period_at(utc(2026, 3, 1)) == period(utc(2026, 2, 28), utc(2026, 3, 31))
    assert c.period_at(utc(2026, 3, 31) - ONE_US) == period(utc(2026, 2, 28), utc(2026, 3, 31))
    assert c.period_at(utc(2026, 3, 31)) == period(utc(2026, 3, 31), utc(2026, 4, 30))


def test_monthly_anchor_on_31st_leap_year_2028() -> None:
    c = cycle(utc(2028, 1, 31, 8, 30))
    assert_boundaries(
        c,
        {
            1: utc(2028, 2, 29, 8, 30),
            2: utc(2028, 3, 31, 8, 30),
            3: utc(2028, 4, 30, 8, 30),
            -1: utc(2027, 12, 31, 8, 30),
        },
    )
    assert c.period_at(utc(2028, 2, 29, 12)) == period(
        utc(2028, 2, 29, 8, 30), utc(2028, 3, 31, 8, 30)
    )
    assert c.period_at(utc(2028, 2, 29, 8, 29)) == period(
        utc(2028, 1, 31, 8, 30), utc(2028, 2, 29, 8, 30)
    )


def test_monthly_anchor_on_30th() -> None:
    c = cycle(utc(2026, 1, 30))
    assert_boundaries(
        c,
        {
            1: utc(2026, 2, 28),
            2: utc(2026, 3, 30),
            3: utc(2026, 4, 30),
            4: utc(2026, 5, 30),
            25: utc(2028, 2, 29),
            26: utc(2028, 3, 30),
        },
    )
    assert c.period_at(utc(2026, 3, 29)) == period(utc(2026, 2, 28), utc(2026, 3, 30))


def test_quarterly_clamps_and_returns_to_anchor_day() -> None:
    c = cycle(utc(2025, 11, 30, 10), U.QUARTERLY)
    assert_boundaries(
        c,
        {
            -1: utc(2025, 8, 30, 10),
            0: utc(2025, 11, 30, 10),
            1: utc(2026, 2, 28, 10),
            2: utc(2026, 5, 30, 10),
            3: utc(2026, 8, 30, 10),
            4: utc(2026, 11, 30, 10),
        },
    )
    assert c.period_at(utc(2026, 4, 1)) == period(utc(2026, 2, 28, 10), utc(2026, 5, 30, 10))


def test_half_yearly() -> None:
    c = cycle(utc(2027, 8, 31), U.HALF_YEARLY)
    assert_boundaries(
        c,
        {
            -1: utc(2027, 2, 28),
            1: utc(2028, 2, 29),
            2: utc(2028, 8, 31),
            3: utc(2029, 2, 28),
        },
    )
    assert c.period_at(utc(2028, 6, 1)) == period(utc(2028, 2, 29), utc(2028, 8, 31))


def test_annual_anchor_on_leap_day() -> None:
    c = cycle(utc(2028, 2, 29), U.ANNUAL, start_date=utc(2020, 1, 1))
    assert_boundaries(
        c,
        {
            -4: utc(2024, 2, 29),
            -1: utc(2027, 2, 28),
            1: utc(2029, 2, 28),
            2: utc(2030, 2, 28),
            3: utc(2031, 2, 28),
            4: utc(2032, 2, 29),
        },
    )
    assert c.period_at(utc(2031, 6, 1)) == period(utc(2031, 2, 28), utc(2032, 2, 29))
    assert c.period_at(utc(2032, 2, 29)) == period(utc(2032, 2, 29), utc(2033, 2, 28))


def test_every_two_months() -> None:
    c = cycle(utc(2026, 1, 15, 12), count=2)
    assert_boundaries(
        c,
        {
            -1: utc(2025, 11, 15, 12),
            1: utc(2026, 3, 15, 12),
            2: utc(2026, 5, 15, 12),
            6: utc(2027, 1, 15, 12),
        },
    )
    assert c.period_at(utc(2026, 4, 30)) == period(utc(2026, 3, 15, 12), utc(2026, 5, 15, 12))


def test_weekly_and_biweekly() -> None:
    monday = utc(2026, 1, 5, 9)  # 2026-01-01 is a Thursday
    weekly = cycle(monday, U.WEEKLY, start_date=monday)
    assert weekly.period_at(utc(2026, 1, 21, 12)) == period(
        utc(2026, 1, 19, 9), utc(2026, 1, 26, 9)
    )
    assert weekly.period_at(utc(2026, 1, 19, 9) - ONE_US) == period(
        utc(2026, 1, 12, 9), utc(2026, 1, 19, 9)
    )
    biweekly = cycle(monday, U.WEEKLY, count=2, start_date=monday)
    assert biweekly.period_at(utc(2026, 1, 21, 12)) == period(
        utc(2026, 1, 19, 9), utc(2026, 2, 2, 9)
    )
    assert biweekly.boundary(-1) == utc(2025, 12, 22, 9)


def test_daily_every_three_days() -> None:
    c = cycle(utc(2026, 1, 1, 6), U.DAILY, count=3)
    assert_boundaries(c, {1: utc(2026, 1, 4, 6), 2: utc(2026, 1, 7, 6), -1: utc(2025, 12, 29, 6)})
    expected = period(utc(2026, 1, 7, 6), utc(2026, 1, 10, 6))
    assert c.period_at(utc(2026, 1, 9, 23)) == expected
    assert c.period_at(utc(2026, 1, 10, 6) - ONE_US) == expected


# --- start_date, negative k, half-open edges ---------------------------------------------------


def test_negative_k_event_before_anchor_after_start_date() -> None:
    c = cycle(utc(2026, 6, 15), start_date=utc(2026, 1, 1))
    assert c.boundary(-3) == utc(2026, 3, 15)
    assert c.period_at(utc(2026, 3, 20)) == period(utc(2026, 3, 15), utc(2026, 4, 15))
    # b_-6 = 2025-12-15 is before start_date: the first period starts at start_date.
    assert c.period_at(utc(2026, 1, 10)) == period(utc(2026, 1, 1), utc(2026, 1, 15))
    assert c.period_at(utc(2026, 1, 1) - ONE_US) is None


@pytest.mark.parametrize("warm_first", [False, True])
def test_half_open_boundaries(warm_first: bool) -> None:
    c = cycle(utc(2026, 1, 1))
    january = period(utc(2026, 1, 1), utc(2026, 2, 1))
    february = period(utc(2026, 2, 1), utc(2026, 3, 1))
    if warm_first:  # the same answers whichever period the cache holds
        c.period_at(utc(2026, 2, 10))
    assert c.period_at(utc(2026, 2, 1)) == february
    assert c.period_at(utc(2026, 2, 1) - ONE_US) == january
    assert c.period_at(utc(2026, 2, 1)) == february
    assert c.period_at(utc(2026, 1, 1)) == january


def test_cache_follows_any_order_of_events() -> None:
    c = cycle(utc(2026, 1, 1), start_date=utc(2026, 1, 1))
    jan = period(utc(2026, 1, 1), utc(2026, 2, 1))
    feb = period(utc(2026, 2, 1), utc(2026, 3, 1))
    mar = period(utc(2026, 3, 1), utc(2026, 4, 1))
    sequence = [
        (utc(2026, 1, 15), jan),
        (utc(2026, 3, 1), mar),  # skips February, within a month of the cached end
        (utc(2026, 2, 28, 23, 59, 59, 999_999), feb),  # back in time
        (utc(2026, 3, 31, 23), mar),  # the "next period" of the cached one
        (utc(2025, 12, 31), None),  # before start_date while March is cached
        (utc(2026, 1, 1), jan),
    ]
    for ts, expected in sequence:
        assert c.period_at(ts) == expected, ts


def test_start_date_after_boundary_starts_the_first_period() -> None:
    start = utc(2026, 1, 20, 10, 30, 0, 987_654)
    c = cycle(utc(2026, 1, 1), start_date=start)
    first = c.period_at(utc(2026, 1, 25))
    assert first == period(start, utc(2026, 2, 1))
    assert first is not None
    assert first.period_id == 1_768_905_000_987  # 2026-01-20T10:30:00.987Z, ms kept
    assert c.period_at(start) == first
    assert c.period_at(start - ONE_US) is None
    assert c.period_at(utc(2025, 6, 1)) is None
    assert c.period_at(utc(2026, 2, 3)) == period(utc(2026, 2, 1), utc(2026, 3, 1))


def test_period_id_keeps_milliseconds() -> None:
    c = cycle(utc(2026, 1, 1, 0, 0, 0, 123_456))
    p = c.period_at(utc(2026, 1, 15))
    assert p is not None
    assert p.start == utc(2026, 1, 1, 0, 0, 0, 123_456)
    assert p.period_id == 1_767_225_600_123
    feb = c.period_at(utc(2026, 2, 15))
    assert feb is not None
    assert feb.period_id == 1_769_904_000_123  # 2026-02-01T00:00:00.123Z


# --- local wall time and DST ------------------------------------------------------------------


def test_new_york_monthly_stays_at_local_midnight() -> None:
    c = cycle(utc(2026, 1, 1, 5), tz=NY)  # 2026-01-01 00:00 EST
    assert_boundaries(
        c,
        {
            1: utc(2026, 2, 1, 5),
            2: utc(2026, 3, 1, 5),
            3: utc(2026, 4, 1, 4),  # EDT
            6: utc(2026, 7, 1, 4),
            10: utc(2026, 11, 1, 4),  # midnight Nov 1 is still EDT (the switch is at 02:00)
            11: utc(2026, 12, 1, 5),
        },
    )
    march = period(utc(2026, 3, 1, 5), utc(2026, 4, 1, 4))
    assert c.period_at(utc(2026, 3, 20, 12)) == march
    assert c.period_at(utc(2026, 4, 1, 4) - ONE_US) == march  # 23:59:59.999999 EDT Mar 31
    assert c.period_at(utc(2026, 4, 1, 4)) == period(utc(2026, 4, 1, 4), utc(2026, 5, 1, 4))


def test_new_york_daily_periods_are_23h_and_25h_on_dst_days() -> None:
    c = cycle(utc(2026, 3, 1, 5), U.DAILY, tz=NY)
    spring = c.period_at(utc(2026, 3, 8, 12))
    assert spring == period(utc(2026, 3, 8, 5), utc(2026, 3, 9, 4))
    assert spring.end - spring.start == timedelta(hours=23)
    fall = c.period_at(utc(2026, 11, 1, 12))
    assert fall == period(utc(2026, 11, 1, 4), utc(2026, 11, 2, 5))
    assert fall.end - fall.start == timedelta(hours=25)


def test_berlin_monthly_and_daily_across_dst() -> None:
    monthly = cycle(utc(2025, 12, 31, 23), tz=BERLIN)  # 2026-01-01 00:00 CET
    assert_boundaries(
        monthly,
        {
            2: utc(2026, 2, 28, 23),
            3: utc(2026, 3, 31, 22),  # Apr 1 00:00 CEST
            9: utc(2026, 9, 30, 22),
            10: utc(2026, 10, 31, 23),  # Nov 1 00:00 CET
        },
    )
    daily = cycle(utc(2025, 12, 31, 23), U.DAILY, tz=BERLIN)
    assert daily.period_at(utc(2026, 3, 29, 12)) == period(
        utc(2026, 3, 28, 23), utc(2026, 3, 29, 22)
    )
    assert daily.period_at(utc(2026, 10, 25, 12)) == period(
        utc(2026, 10, 24, 22), utc(2026, 10, 25, 23)
    )


def test_anchor_wall_time_is_taken_in_the_subscription_timezone() -> None:
    # 2026-01-31T03:00Z is Jan 30, 22:00 EST in New York: periods turn on the 30th at 22:00.
    c = cycle(utc(2026, 1, 31, 3), tz=NY)
    assert_boundaries(
        c,
        {
            -1: utc(2025, 12, 31, 3),  # Dec 30 22:00 EST
            1: utc(2026, 3, 1, 3),  # Feb 28 22:00 EST
            2: utc(2026, 3, 31, 2),  # Mar 30 22:00 EDT
        },
    )
    same_instant = cycle(datetime(2026, 1, 30, 22, tzinfo=ZoneInfo(NY)), tz=NY)
    for k in range(-3, 4):
        assert same_instant.boundary(k) == c.boundary(k)


def test_non_existent_wall_time_moves_forward_by_the_gap() -> None:
    # Daily at 02:30 New York; 02:30 on 2026-03-08 does not exist: read with the EST offset
    # (fold=0), i.e. 07:30Z = 03:30 EDT.
    c = cycle(utc(2026, 3, 1, 7, 30), U.DAILY, tz=NY)
    assert_boundaries(
        c,
        {6: utc(2026, 3, 7, 7, 30), 7: utc(2026, 3, 8, 7, 30), 8: utc(2026, 3, 9, 6, 30)},
    )
    assert c.period_at(utc(2026, 3, 8, 10)) == period(
        utc(2026, 3, 8, 7, 30), utc(2026, 3, 9, 6, 30)
    )


def test_ambiguous_wall_time_takes_first_occurrence() -> None:
    # Daily at 01:30 EDT; 01:30 on 2026-11-01 happens twice: the first (EDT, 05:30Z) is used.
    c = cycle(utc(2026, 10, 25, 5, 30), U.DAILY, tz=NY)
    assert_boundaries(c, {7: utc(2026, 11, 1, 5, 30), 8: utc(2026, 11, 2, 6, 30)})
    # 06:00Z is 01:00 EST, the second pass through that hour: after the boundary.
    assert c.period_at(utc(2026, 11, 1, 6)) == period(
        utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)
    )
    weekly = cycle(utc(2026, 11, 1, 5, 30), U.WEEKLY, tz=NY)
    assert weekly.boundary(53) == utc(2027, 11, 7, 5, 30)  # 01:30 EDT, first occurrence


def test_anchor_at_second_occurrence_keeps_its_fold() -> None:
    # 2026-11-01T06:30Z is 01:30 EST, the second 01:30 of that night (fold=1).
    anchor = utc(2026, 11, 1, 6, 30)
    c = cycle(anchor, U.DAILY, tz=NY)
    assert_boundaries(c, {-1: utc(2026, 10, 31, 5, 30), 0: anchor, 1: utc(2026, 11, 2, 6, 30)})
    assert c.period_at(utc(2026, 11, 1, 6)) == period(utc(2026, 10, 31, 5, 30), anchor)
    weekly = cycle(anchor, U.WEEKLY, tz=NY)
    assert weekly.boundary(53) == utc(2027, 11, 7, 6, 30)  # 01:30 EST, second occurrence


def test_fold_one_anchor_reads_a_gap_with_the_post_transition_offset() -> None:
    # Berlin, daily at 02:30 from 2026-10-25T01:30Z = 02:30 CET (second occurrence). On
    # 2027-03-28, 02:30 does not exist: fold=1 reads it as CEST, 00:30Z = 01:30 CET.
    c = cycle(utc(2026, 10, 25, 1, 30), U.DAILY, tz=BERLIN)
    assert_boundaries(
        c,
        {
            0: utc(2026, 10, 25, 1, 30),
            153: utc(2027, 3, 27, 1, 30),
            154: utc(2027, 3, 28, 0, 30),
            155: utc(2027, 3, 29, 0, 30),
        },
    )


def test_skipped_calendar_day_gives_an_empty_period_never_returned() -> None:
    # Pacific/Apia skipped 2011-12-30 (-10:00 -> +14:00). Daily at 12:00 local.
    c = cycle(utc(2011, 12, 25, 22), U.DAILY, tz="Pacific/Apia")
    assert_boundaries(
        c,
        {
            4: utc(2011, 12, 29, 22),
            5: utc(2011, 12, 30, 22),  # Dec 30 12:00 read with -10:00
            6: utc(2011, 12, 30, 22),  # Dec 31 12:00 +14:00
            7: utc(2011, 12, 31, 22),
        },
    )
    assert c.period_at(utc(2011, 12, 30, 22)) == period(
        utc(2011, 12, 30, 22), utc(2011, 12, 31, 22)
    )
    assert c.period_at(utc(2011, 12, 30, 22) - ONE_US) == period(
        utc(2011, 12, 29, 22), utc(2011, 12, 30, 22)
    )


def test_event_timestamp_zone_does_not_matter() -> None:
    c = cycle(utc(2026, 1, 1, 5), tz=NY)
    in_berlin = datetime(2026, 4, 1, 6, 0, tzinfo=ZoneInfo(BERLIN))  # 04:00Z
    fixed = datetime(2026, 4, 1, 0, 0, tzinfo=timezone(timedelta(hours=-4)))  # 04:00Z
    expected = period(utc(2026, 4, 1, 4), utc(2026, 5, 1, 4))
    assert c.period_at(in_berlin) == expected
    assert c.period_at(fixed) == expected
    assert c.period_at(utc(2026, 4, 1, 4) - ONE_US) == period(
        utc(2026, 3, 1, 5), utc(2026, 4, 1, 4)
    )


# --- no drift -----------------------------------------------------------------------------------


def test_no_drift_monthly_from_the_31st() -> None:
    ny = ZoneInfo(NY)
    anchor = datetime(2026, 1, 31, 9, 15, 30, 123_000, tzinfo=ny)
    c = cycle(anchor, tz=NY)
    # Jan 2026 + 1000 months = May 2109; 09:15:30.123 EDT (the US rule continues) = 13:15Z.
    assert c.boundary(1000) == utc(2109, 5, 31, 13, 15, 30, 123_000)
    assert c.boundary(1001) == utc(2109, 6, 30, 13, 15, 30, 123_000)
    assert c.boundary(1) == utc(2026, 2, 28, 14, 15, 30, 123_000)
    for k in range(-120, 1001):
        local = c.boundary(k).astimezone(ny)
        last_day = calendar.monthrange(local.year, local.month)[1]
        assert local.day == min(31, last_day), k
        assert (local.hour, local.minute, local.second, local.microsecond) == (9, 15, 30, 123_000)


def test_no_drift_daily_in_berlin() -> None:
    berlin = ZoneInfo(BERLIN)
    c = cycle(datetime(2026, 1, 1, 0, 0, tzinfo=berlin), U.DAILY, tz=BERLIN)
    for k in (-36_500, -1, 1, 365, 10_000, 36_500):
        local = c.boundary(k).astimezone(berlin)
        assert local.date() == date(2026, 1, 1) + timedelta(days=k)
        assert local.time() == datetime.min.time()


# --- properties -------------------------------------------------------------------------------

INTERESTING_ZONES = [
    "UTC",
    NY,
    BERLIN,
    "Europe/London",
    "America/Sao_Paulo",  # DST changes at midnight (historically)
    "America/St_Johns",  # -03:30 / -02:30
    "Australia/Lord_Howe",  # 30-minute DST
    "Asia/Kathmandu",  # +05:45
    "Pacific/Chatham",  # +12:45 / +13:45
    "Pacific/Apia",  # skipped a day
    "Africa/Casablanca",  # DST suspended during Ramadan
    "Asia/Tehran",
]
_MONTHS = {U.MONTHLY: 1, U.QUARTERLY: 3, U.HALF_YEARLY: 6, U.ANNUAL: 12}
_DAYS = {U.DAILY: 1, U.WEEKLY: 7}


def reference_boundary(
    anchor: datetime, unit: BillingPeriodUnit, count: int, tz: str, k: int
) -> datetime:
    """b_k, written independently of the implementation (calendar.monthrange, date arithmetic)."""
    local = anchor.astimezone(ZoneInfo(tz))
    if unit in _MONTHS:
        months = local.month - 1 + k * count * _MONTHS[unit]
        year, month = local.year + months // 12, months % 12 + 1
        day = min(local.day, calendar.monthrange(year, month)[1])
        wall = local.replace(year=year, month=month, day=day)
    else:
        new_date = local.date() + timedelta(days=k * count * _DAYS[unit])
        wall = local.replace(year=new_date.year, month=new_date.month, day=new_date.day)
    return wall.astimezone(UTC)  # replace() keeps tzinfo and fold


def nominal_step(unit: BillingPeriodUnit, count: int) -> timedelta:
    if unit in _MONTHS:
        return timedelta(days=30.436875 * _MONTHS[unit] * count)
    return timedelta(days=_DAYS[unit] * count)


@st.composite
def cycles(draw: st.DrawFn) -> tuple[dict[str, object], list[datetime]]:
    tz = draw(st.one_of(st.sampled_from(INTERESTING_ZONES), st.timezone_keys()))
    year = draw(st.integers(1950, 2090))
    month = draw(st.integers(1, 12))
    day = min(
        draw(st.sampled_from([1, 2, 15, 28, 29, 30, 31])), calendar.monthrange(year, month)[1]
    )
    hour = draw(st.sampled_from([0, 1, 2, 3, 12, 23]) | st.integers(0, 23))
    wall = datetime(
        year,
        month,
        day,
        hour,
        draw(st.sampled_from([0, 30]) | st.integers(0, 59)),
        draw(st.integers(0, 59)),
        draw(st.sampled_from([0, 999_999]) | st.integers(0, 999_999)),
        tzinfo=ZoneInfo(tz),
        fold=draw(st.integers(0, 1)),
    )
    anchor = wall.astimezone(UTC)  # may land in a gap or a fold: normalised
    unit = draw(st.sampled_from(list(U)))
    count = draw(st.integers(1, 13))
    start_date = anchor + timedelta(
        days=draw(st.integers(-800, 800)), microseconds=draw(st.integers(0, 86_400_000_000))
    )
    offsets = st.timedeltas(timedelta(days=-400), timedelta(days=4000))
    timestamps = [start_date + d for d in draw(st.lists(offsets, min_size=1, max_size=12))]
    config = {
        "anchor": anchor,
        "unit": unit,
        "count": count,
        "timezone": tz,
        "start_date": start_date,
    }
    return config, timestamps


@settings(max_examples=300, deadline=None)
@given(cycles())
def test_period_at_properties(case: tuple[dict[str, object], list[datetime]]) -> None:
    config, timestamps = case
    shared = BillingCycle(**config)  # type: ignore[arg-type]
    anchor, start_date = shared.anchor, shared.start_date
    unit, count, tz = shared.unit, shared.count, shared.timezone
    assert shared.boundary(0) == anchor

    for ts in timestamps:
        p = shared.period_at(ts)
        fresh = BillingCycle(**config).period_at(ts)  # type: ignore[arg-type]
        assert p == fresh  # the cache cannot change an answer
        if ts < start_date:
            assert p is None
            continue
        assert p is not None
        assert p.start <= ts < p.end
        assert p.start.tzinfo is UTC and p.end.tzinfo is UTC
        assert p.period_id == epoch_ms(p.start)

        # p.end is the first reference boundary after ts, p.start the one before (or start_date).
        guess = round((p.end - anchor) / nominal_step(unit, count))
        matches = [
            k
            for k in range(guess - 3, guess + 4)
            if reference_boundary(anchor, unit, count, tz, k) == p.end
            and reference_boundary(anchor, unit, count, tz, k - 1) <= ts
        ]
        assert matches, (guess, p)
        k = matches[0]
        assert p.start == max(start_date, reference_boundary(anchor, unit, count, tz, k - 1))
        assert shared.boundary(k) == p.end

        # Contiguity: the next period starts where this one ends, the previous ends at its start.
        after = shared.period_at(p.end)
        assert after is not None and after.start == p.end
        if p.start > start_date:
            before = shared.period_at(p.start - ONE_US)
            assert before is not None and before.end == p.start
        assert shared.period_at(ts) == p


@settings(max_examples=100, deadline=None)
@given(cycles(), st.randoms(use_true_random=False))
def test_boundaries_are_ordered_and_match_reference(
    case: tuple[dict[str, object], list[datetime]], rnd: random.Random
) -> None:
    config, _ = case
    c = BillingCycle(**config)  # type: ignore[arg-type]
    ks = sorted(rnd.sample(range(-60, 60), 12))
    values = [c.boundary(k) for k in ks]
    assert values == sorted(values)
    for k, value in zip(ks, values, strict=True):
        assert value == reference_boundary(c.anchor, c.unit, c.count, c.timezone, k)


def test_shared_cycle_across_threads_gives_the_same_answers() -> None:
    c = cycle(utc(2026, 1, 31, 5), U.DAILY, tz=NY, start_date=utc(2026, 1, 1))
    rnd = random.Random(7)
    timestamps = [
        utc(2026, 1, 1) + timedelta(seconds=rnd.randrange(0, 3 * 365 * 86400)) for _ in range(3000)
    ]
    expected = [
        cycle(utc(2026, 1, 31, 5), U.DAILY, tz=NY, start_date=utc(2026, 1, 1)).period_at(t)
        for t in timestamps
    ]
    failures: list[int] = []

    def worker(seed: int) -> None:
        order = list(range(len(timestamps)))
        random.Random(seed).shuffle(order)
        failures.extend(i for i in order if c.period_at(timestamps[i]) != expected[i])

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []

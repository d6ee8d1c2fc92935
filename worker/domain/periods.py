"""Billing periods: which period of a subscription an event falls into.

Pure (stdlib and ``zoneinfo`` only, no I/O). The contract is DESIGN.md §3, "period_id":

* Boundaries are ``b_k = billing_anchor + k × count × unit`` for every integer ``k`` (negative
  too). Each ``b_k`` is computed from the anchor directly, never by stepping from a neighbour,
  so there is no drift: ``boundary(1000)`` of a Jan-31 monthly cycle is still on the 31st (or
  the month's last day), at the anchor's wall-clock time.
* Steps are taken on the *local calendar* of the subscription's IANA timezone, at the anchor's
  local wall time. MONTHLY / QUARTERLY (3 months) / HALF_YEARLY (6) / ANNUAL (12) add calendar
  months and clamp the anchor's day of month to the month's length (31st -> Feb 28/29 -> Mar
  31; Jan 30 -> Feb 28/29 -> Mar 30; Feb 29 -> Feb 28 in common years). DAILY / WEEKLY add local
  calendar days, so across a DST change a daily period lasts 23 h or 25 h.
* Periods are half-open ``[b_k, b_{k+1})``. The first period starts at the subscription's
  ``start_date``: the period of ``ts`` is ``[max(start_date, b_k), b_{k+1})`` for the largest
  ``b_k <= ts``; an event before ``start_date`` has no period (``None``).
* ``period_id`` is the period start as epoch milliseconds (an exact ``int``; sub-millisecond
  parts are floored, milliseconds are kept).

Wall times that do not exist or exist twice (DST, or a zone changing its offset) resolve as
zoneinfo resolves them (PEP 495) using the fold of the anchor itself, and are then normalised
through UTC:

* The anchor is an instant, so its local wall time always exists; its ``fold`` is 1 only when
  it is the *second* occurrence of a repeated wall time (e.g. 01:30 EST on a New York
  fall-back night), otherwise 0. Reusing it makes ``boundary(0) == anchor`` exact.
* fold=0 (nearly every anchor): an ambiguous wall time takes its first occurrence (the
  pre-transition offset, the earlier instant); a non-existent one is read with the
  pre-transition offset, i.e. pushed forward by the gap (02:30 on a New York spring-forward
  night is 07:30Z = 03:30 EDT).
* fold=1: the mirror image: an ambiguous wall time takes its second occurrence; a non-existent
  one is read with the post-transition offset (Berlin 02:30 in the March gap -> 00:30Z = 01:30
  CET).

With these rules boundaries never decrease in ``k`` (no tz database offset jump exceeds 24 h).
When a zone skips a whole calendar day (Pacific/Apia on 2011-12-30) two consecutive
boundaries coincide: that empty period is never returned, as no instant falls into it.

Boundaries outside ``datetime``'s range (years 1..9999) raise ``OverflowError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["BillingCycle", "BillingPeriodUnit", "Period", "epoch_ms"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class BillingPeriodUnit(StrEnum):
    """The unit a billing cycle steps by; values equal the names (as in the catalog)."""

    DAILY = "DAILY"
    WEEKLY = "WEEKLY"
    MONTHLY = "MONTHLY"
    QUARTERLY = "QUARTERLY"
    HALF_YEARLY = "HALF_YEARLY"
    ANNUAL = "ANNUAL"


# Length of one unit: calendar months for the month family, local calendar days otherwise.
_UNIT_MONTHS = {
    BillingPeriodUnit.MONTHLY: 1,
    BillingPeriodUnit.QUARTERLY: 3,
    BillingPeriodUnit.HALF_YEARLY: 6,
    BillingPeriodUnit.ANNUAL: 12,
}
_UNIT_DAYS = {BillingPeriodUnit.DAILY: 1, BillingPeriodUnit.WEEKLY: 7}


def epoch_ms(dt: datetime) -> int:
    """Return the aware ``dt`` as integer milliseconds since the Unix epoch.

    Exact integer arithmetic (no float); sub-millisecond parts are floored, also before 1970
    (``1969-12-31T23:59:59.999999Z`` -> ``-1``). Raises ``ValueError`` for a naive datetime.
    """
    _require_aware(dt, "dt")
    return (dt - _EPOCH) // _ONE_MS


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open billing period ``[start, end)``; both ends are aware UTC datetimes.

    Construction normalises aware datetimes in other zones to UTC and raises ``ValueError`` for
    naive ones or for ``end < start``.
    """

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        start, end = _to_utc(self.start, "start"), _to_utc(self.end, "end")
        if end < start:
            raise ValueError(f"period end {end.isoformat()} is before start {start.isoformat()}")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)

    @property
    def period_id(self) -> int:
        """The period start in epoch milliseconds (exact)."""
        return epoch_ms(self.start)

    def contains(self, ts: datetime) -> bool:
        """``start <= ts < end`` (``ts`` must be aware)."""
        return self.start <= _to_utc(ts, "ts") < self.end


class BillingCycle:
    """The billing periods of one subscription: frozen configuration, no mutable state.

    ``boundary`` and ``period_at`` are pure functions of their argument and the configuration,
    safe to call from any thread. ``period_at`` estimates ``k`` from the months or days elapsed
    between the anchor's and the event's local wall times, then corrects it with boundary
    comparisons (usually zero or one step, never a walk from the anchor).
    """

    __slots__ = (
        "_anchor_fold",
        "_anchor_month_index",
        "_anchor_ordinal",
        "_anchor_time",
        "_day_of_month",
        "_step_days",
        "_step_months",
        "_zone",
        "anchor",
        "count",
        "start_date",
        "timezone",
        "unit",
    )

    def __init__(
        self,
        *,
        anchor: datetime,
        unit: BillingPeriodUnit,
        count: int,
        timezone: str,
        start_date: datetime,
    ) -> None:
        """Validate and freeze the configuration.

        Raises ``ValueError`` when ``count`` is not an integer >= 1, ``unit`` is not a
        ``BillingPeriodUnit`` value, ``timezone`` is not a loadable IANA name, or ``anchor`` /
        ``start_date`` is naive.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"billing period count must be an integer >= 1, got {count!r}")
        try:
            unit = BillingPeriodUnit(unit)
        except ValueError:
            allowed = ", ".join(BillingPeriodUnit)
            raise ValueError(
                f"unknown billing period unit {unit!r}; expected one of {allowed}"
            ) from None
        #: The billing anchor (UTC).
        self.anchor: Final = _to_utc(anchor, "anchor")
        #: The subscription start (UTC); no period exists before it.
        self.start_date: Final = _to_utc(start_date, "start_date")
        self.unit: Final = unit
        self.count: Final = count
        #: The IANA timezone name whose local calendar the cycle steps on.
        self.timezone: Final = timezone
        self._zone = _load_zone(timezone)

        local_anchor = self.anchor.astimezone(self._zone)
        self._anchor_fold = local_anchor.fold
        self._anchor_time = (
            local_anchor.hour,
            local_anchor.minute,
            local_anchor.second,
            local_anchor.microsecond,
        )
        self._day_of_month = local_anchor.day
        self._anchor_month_index = local_anchor.year * 12 + local_anchor.month - 1
        self._anchor_ordinal = local_anchor.toordinal()
        self._step_months = _UNIT_MONTHS.get(unit, 0) * count
        self._step_days = _UNIT_DAYS.get(unit, 0) * count

    def __repr__(self) -> str:
        return (
            f"BillingCycle(anchor={self.anchor.isoformat()}, unit={self.unit}, "
            f"count={self.count}, timezone={self.timezone!r}, "
            f"start_date={self.start_date.isoformat()})"
        )

    def boundary(self, k: int) -> datetime:
        """Return ``b_k`` as an aware UTC datetime (``boundary(0) == anchor``).

        Ignores ``start_date`` (boundaries exist for every ``k``). Raises ``OverflowError`` when
        ``b_k`` is outside ``datetime``'s range.
        """
        try:
            if self._step_months:
                year, month0 = divmod(self._anchor_month_index + k * self._step_months, 12)
                month = month0 + 1
                day = min(self._day_of_month, _days_in_month(year, month))
            else:
                local_date = date.fromordinal(self._anchor_ordinal + k * self._step_days)
                year, month, day = local_date.year, local_date.month, local_date.day
            hour, minute, second, microsecond = self._anchor_time
            wall = datetime(
                year,
                month,
                day,
                hour,
                minute,
                second,
                microsecond,
                tzinfo=self._zone,
                fold=self._anchor_fold,
            )
            return wall.astimezone(UTC)
        except (OverflowError, ValueError) as exc:
            raise OverflowError(
                f"billing boundary k={k} of {self!r} is outside the datetime range"
            ) from exc

    def period_at(self, ts: datetime) -> Period | None:
        """Return the period containing the aware instant ``ts``, or ``None`` before start_date.

        The result is ``[max(start_date, b_k), b_{k+1})`` for the largest ``b_k <= ts``.
        Raises ``ValueError`` for a naive ``ts`` and ``OverflowError`` when ``b_{k+1}`` is
        outside ``datetime``'s range. Never blocks, never does I/O.
        """
        ts = _to_utc(ts, "ts")
        if ts < self.start_date:
            return None
        # Estimate k from the months (or days) elapsed between the anchor's and the event's
        # local wall times. The estimate is usually exact; it is one too high when ts is
        # earlier in the boundary's own month (or day) than the anchor's wall time, and DST
        # resolution or a coinciding boundary can move it by one either way: real instants
        # settle it.
        local = ts.astimezone(self._zone)
        if self._step_months:
            elapsed = local.year * 12 + local.month - 1 - self._anchor_month_index
            k = elapsed // self._step_months
        else:
            k = (local.toordinal() - self._anchor_ordinal) // self._step_days
        start = self.boundary(k)
        while start > ts:
            k -= 1
            start = self.boundary(k)
        end = self.boundary(k + 1)
        while end <= ts:
            k += 1
            start, end = end, self.boundary(k + 1)
        return Period(max(start, self.start_date), end)


def _days_in_month(year: int, month: int) -> int:
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        return 29
    return _DAYS_IN_MONTH[month - 1]


def _require_aware(dt: datetime, name: str) -> None:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {dt!r}")


def _to_utc(dt: datetime, name: str) -> datetime:
    """Return the aware ``dt`` with ``tzinfo=UTC`` (the same object when it already is)."""
    if dt.tzinfo is UTC:
        return dt
    _require_aware(dt, name)
    return dt.astimezone(UTC)


def _load_zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ValueError(f"timezone must be a non-empty IANA name such as 'UTC', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown IANA timezone {name!r}") from exc

"""Billing periods for the test reference, written from DESIGN.md §3 alone.

Imports nothing of ``worker``: the integration tests compare the worker's
period ids with these. The rules, restated:

* boundaries ``b_k = anchor + k x count x unit`` for every integer ``k``, each
  computed from the anchor (never stepped from a neighbour), at the anchor's
  local wall time in the subscription's IANA zone; months clamp the anchor's
  day to the month's length (31st -> Feb 28/29 -> Mar 31);
* DAILY and WEEKLY step local calendar days (a day across DST lasts 23/25 h);
* wall times that do not exist or exist twice resolve with the anchor's own
  ``fold`` (PEP 495), as the README's decisions say;
* the period of ``ts`` is ``[max(start_date, b_k), b_{k+1})`` for the largest
  ``b_k <= ts``; its id is the start in epoch milliseconds (floored).
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MONTHS = {"MONTHLY": 1, "QUARTERLY": 3, "HALF_YEARLY": 6, "ANNUAL": 12}
DAYS = {"DAILY": 1, "WEEKLY": 7}


def epoch_ms(instant: datetime) -> int:
    """Milliseconds since the epoch, floored (sub-millisecond parts dropped)."""
    return (instant - EPOCH) // timedelta(milliseconds=1)


class Cycle:
    """The boundaries of one subscription's billing cycle."""

    def __init__(self, anchor: datetime, unit: str, count: int, zone: str) -> None:
        self.local = anchor.astimezone(ZoneInfo(zone))  # fold=1 on a repeated wall time
        self.unit, self.count = unit.upper(), count
        self._memo: dict[int, datetime] = {}

    def boundary(self, k: int) -> datetime:
        """``b_k`` as an aware UTC datetime (memoised: pure in ``k``)."""
        found = self._memo.get(k)
        if found is None:
            found = self._memo[k] = self._boundary(k)
        return found

    def _boundary(self, k: int) -> datetime:
        local = self.local
        wall = local.replace(tzinfo=None)
        if self.unit in MONTHS:
            months = local.year * 12 + (local.month - 1) + k * self.count * MONTHS[self.unit]
            year, month = divmod(months, 12)
            day = min(local.day, calendar.monthrange(year, month + 1)[1])
            wall = wall.replace(year=year, month=month + 1, day=day)
        else:
            wall = wall + timedelta(days=k * self.count * DAYS[self.unit])
        return wall.replace(tzinfo=local.tzinfo, fold=local.fold).astimezone(UTC)

    def index_at(self, ts: datetime) -> int:
        """The largest ``k`` with ``b_k <= ts``."""
        local_ts = ts.astimezone(self.local.tzinfo)
        if self.unit in MONTHS:
            step = self.count * MONTHS[self.unit]
            elapsed = (local_ts.year - self.local.year) * 12 + local_ts.month - self.local.month
        else:
            step = self.count * DAYS[self.unit]
            elapsed = (local_ts.replace(tzinfo=None) - self.local.replace(tzinfo=None)).days
        k = elapsed // step
        while self.boundary(k) > ts:
            k -= 1
        while self.boundary(k + 1) <= ts:
            k += 1
        return k

    def period_at(self, ts: datetime, start_date: datetime) -> tuple[datetime, datetime] | None:
        """``(start, end)`` of the period holding ``ts``; None before ``start_date``."""
        if ts < start_date:
            return None
        k = self.index_at(ts)
        return max(start_date, self.boundary(k)), self.boundary(k + 1)

"""Time windows in UTC, shared by bucketed MAX and the read side.

``window_start`` matches ClickHouse's ``toStartOfInterval`` for minute/hour
windows, ``toStartOfDay``, ``toMonday`` (ISO weeks) and ``toStartOfMonth``,
all evaluated in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worker.domain.metering import WindowSize

_FIXED_MINUTES = {
    WindowSize.MINUTE: 1,
    WindowSize.MIN15: 15,
    WindowSize.MIN30: 30,
    WindowSize.HOUR: 60,
    WindowSize.HOUR3: 180,
    WindowSize.HOUR6: 360,
    WindowSize.HOUR12: 720,
    WindowSize.DAY: 1440,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def window_start(ts: datetime, size: WindowSize) -> datetime:
    """Start (aware UTC) of the window of ``size`` containing ``ts``."""
    ts = ts.astimezone(UTC)
    minutes = _FIXED_MINUTES.get(size)
    if minutes is not None:
        step = timedelta(minutes=minutes)
        return _EPOCH + ((ts - _EPOCH) // step) * step
    day = ts.replace(hour=0, minute=0, second=0, microsecond=0)
    if size is WindowSize.WEEK:
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)

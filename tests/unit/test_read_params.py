"""Every ranged read's parameters refuse a missing scope or a bad range, and still
check their own fields (the checks ScopedRange shares with its subclasses)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from worker.store.params import (
    FindUnprocessedEventsParams,
    GetEventsParams,
    GetProcessedEventsParams,
    ScopedRange,
    UsageAnalyticsParams,
)

START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 4, 1, tzinfo=UTC)
SCOPE: dict[str, Any] = {
    "tenant_id": "t1",
    "environment_id": "prod",
    "start_time": START,
    "end_time": END,
}
# One field of each class's own that is out of bounds, and the message naming it.
OWN_FIELD = {
    GetEventsParams: ({"page_size": 0}, "page_size"),
    FindUnprocessedEventsParams: ({"batch_size": 0}, "batch_size"),
    GetProcessedEventsParams: ({"limit": 0}, "limit"),
    UsageAnalyticsParams: ({"sources": "web"}, "sources"),
}
PARAMS = pytest.mark.parametrize("cls", list(OWN_FIELD), ids=lambda cls: cls.__name__)


@PARAMS
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tenant_id": ""}, "tenant_id is required"),
        ({"environment_id": ""}, "environment_id is required"),
        ({"start_time": datetime(2026, 3, 1)}, "start_time must be timezone-aware"),
        ({"end_time": datetime(2026, 4, 1)}, "end_time must be timezone-aware"),
        ({"end_time": datetime(2026, 2, 1, tzinfo=UTC)}, "is before start_time"),
    ],
)
def test_scope_and_range_are_checked(
    cls: type[ScopedRange], change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        cls(**{**SCOPE, **change})


@PARAMS
def test_the_own_fields_are_still_checked(cls: type[ScopedRange]) -> None:
    change, message = OWN_FIELD[cls]
    with pytest.raises(ValueError, match=message):
        cls(**{**SCOPE, **change})


@PARAMS
def test_the_four_scope_fields_come_first_in_order(cls: type[ScopedRange]) -> None:
    params = cls("t1", "prod", START, END)
    assert (params.tenant_id, params.environment_id, params.start_time, params.end_time) == (
        "t1",
        "prod",
        START,
        END,
    )

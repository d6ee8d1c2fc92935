"""Read-side parameters a caller controls are bounded (issue 19): at the limit a
read is accepted, one past it is refused with the field named."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from worker.domain.metering import AggregationType
from worker.store.params import (
    MAX_FILTER_GROUPS,
    MAX_FILTER_KEYS,
    MAX_FILTER_TEXT,
    MAX_FILTER_VALUES,
    FilterGroup,
    UsageAnalyticsParams,
    UsageParams,
    UsageWithFiltersParams,
)

START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 4, 1, tzinfo=UTC)


def usage(filters: dict[str, list[str]]) -> UsageParams:
    return UsageParams(
        tenant_id="t1",
        environment_id="prod",
        event_name="api",
        aggregation=AggregationType.COUNT,
        start_time=START,
        end_time=END,
        filters=filters,
    )


def analytics(**changes: Any) -> UsageAnalyticsParams:
    return UsageAnalyticsParams(
        tenant_id="t1", environment_id="prod", start_time=START, end_time=END, **changes
    )


def with_groups(count: int) -> UsageWithFiltersParams:
    groups = [FilterGroup(f"g{i}", i) for i in range(count)]
    return UsageWithFiltersParams(usage({}), groups)


CASES: list[tuple[str, Callable[[int], object], int, str]] = [
    ("filter keys", lambda n: usage({f"k{i}": ["v"] for i in range(n)}), MAX_FILTER_KEYS, "keys"),
    ("values", lambda n: usage({"k": [str(i) for i in range(n)]}), MAX_FILTER_VALUES, "values"),
    ("value text", lambda n: usage({"k": ["v" * n]}), MAX_FILTER_TEXT, "longer than"),
    ("key text", lambda n: usage({"k" * n: ["v"]}), MAX_FILTER_TEXT, "longer than"),
    ("groups", with_groups, MAX_FILTER_GROUPS, "filter groups"),
    (
        "feature ids",
        lambda n: analytics(feature_ids=[f"f{i}" for i in range(n)]),
        MAX_FILTER_VALUES,
        "feature_ids",
    ),
    ("sources", lambda n: analytics(sources=["s"] * n), MAX_FILTER_VALUES, "sources"),
    (
        "analytics filters",
        lambda n: analytics(property_filters={f"k{i}": ["v"] for i in range(n)}),
        MAX_FILTER_KEYS,
        "property_filters",
    ),
]


@pytest.mark.parametrize(("what", "build", "limit", "named"), CASES, ids=[c[0] for c in CASES])
def test_parameters_are_accepted_at_the_limit_and_refused_past_it(
    what: str, build: Callable[[int], object], limit: int, named: str
) -> None:
    build(limit)
    with pytest.raises(ValueError, match=named):
        build(limit + 1)

"""A loaded snapshot crosses into the core as None exactly when it is empty."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from worker.core_rating import snapshot_argument, snapshot_tuple
from worker.domain.aggregates import AggregateSnapshot

_AT = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "snapshot",
    [
        AggregateSnapshot(),
        AggregateSnapshot(total=Decimal("0.000"), maximum=Decimal("-0")),
    ],
)
def test_an_empty_snapshot_crosses_as_none(snapshot: AggregateSnapshot) -> None:
    assert snapshot == AggregateSnapshot()
    assert snapshot_argument(snapshot) is None


@pytest.mark.parametrize(
    "snapshot",
    [
        AggregateSnapshot(count=1),
        AggregateSnapshot(total=Decimal("0.5")),
        AggregateSnapshot(maximum=Decimal("2")),
        AggregateSnapshot(latest=(_AT, "e1", Decimal("1"))),
        AggregateSnapshot(bucket_maxima={_AT: Decimal("0")}),
        # A count of 0 beside a total (not a stored state's shape, but not empty).
        AggregateSnapshot(total=Decimal("3"), count=0),
    ],
)
def test_a_snapshot_differing_in_one_field_crosses_as_its_texts(
    snapshot: AggregateSnapshot,
) -> None:
    assert snapshot != AggregateSnapshot()
    assert snapshot_argument(snapshot) == snapshot_tuple(snapshot)

"""Running aggregates of one (line item, period): ``A' = A + event``, ``q(A)``.

Each aggregate is mutable state owned by one partition's consumer. ``quantity``
is always quantized to 15 places so that free/billable deltas derived from it
are exact. Every aggregate can be rebuilt from stored rows (see
:class:`AggregateSnapshot`), which is how state is loaded after an assignment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from worker.domain.metering import AggregationType, WindowSize
from worker.domain.money import ZERO, div, quantize
from worker.domain.windows import window_start


@dataclass(frozen=True, slots=True)
class AggregateSnapshot:
    """What the store returns to rebuild an aggregate (``GetLineItemUsage``).

    ``total``: sum of stored ``qty_total``; ``count``: number of rows;
    ``maximum``: max ``qty_total``; ``latest``: ``(timestamp, event id, value)``
    of the newest row; ``bucket_maxima``: bucket start -> max ``qty_total``.
    """

    total: Decimal = ZERO
    count: int = 0
    maximum: Decimal = ZERO
    latest: tuple[datetime, str, Decimal] | None = None
    bucket_maxima: dict[datetime, Decimal] = field(default_factory=dict)


class Aggregate(Protocol):
    """Mutable aggregate state; ``add`` applies one (deduplicated) event.

    ``add`` returns ``quantity()`` after the event; ``peek`` returns the same
    value without applying the event (the rater checks the outcome first).
    """

    def peek(self, value: Decimal, ts: datetime, event_id: str) -> Decimal: ...

    def add(self, value: Decimal, ts: datetime, event_id: str) -> Decimal: ...

    def quantity(self) -> Decimal: ...


class SumAggregate:
    """COUNT, SUM, SUM_WITH_MULTIPLIER, COUNT_UNIQUE, WEIGHTED_SUM: q = sum of values."""

    __slots__ = ("_total",)

    def __init__(self, snapshot: AggregateSnapshot) -> None:
        self._total = snapshot.total

    def peek(self, value: Decimal, ts: datetime, event_id: str) -> Decimal:
        return self._total + value

    def add(self, value: Decimal, ts: datetime, event_id: str) -> Decimal:
        self._total += value
        return self._total

    def quantity(self) -> Decimal:
        return self._total


class AverageAggregate:
    """AVG: q = sum / count, quantized."""

    __slots__ = ("_count", "_total")

    def __init__(self, snapshot: AggregateSnapshot) -> None:
        self._total = snapshot.total
        self._count = snapshot.count

    def peek(self, value: Decimal, ts: datetime, event_id: str) -> Decimal:
        return quantize(div(self._total + value, Decimal(self._count + 1)))

    def add(self, value: Decimal, ts: datetime, event_id: str) -> Decimal:
        self._total += value
        self._count += 1
        return self.quantity()

    def quantity(self) -> Decimal:
        return quantize(div(self._total, Decimal(self._count))) if self._count else ZERO


class MaxAggregate:
    """MAX without buckets: q = largest value."""

    __slots__ = ("_maximum",)

    def __init__(self, snapshot: AggregateSnapshot) -> None:
        self._maximum = snapshot.maximum

    def peek(self, value: Decimal, ts: datetime, event_id: str) -> Decimal:
        return value if value > self._maximum else self._maximum

    def add(self, value: Decimal, ts: datetime, event_id: str) -> Decimal:
        if value > self._maximum:
            self._maximum = value
        return self._maximum

    def quantity(self) -> Decimal:
        return self._maximum


class BucketedMaxAggregate:
    """MAX with ``bucket_size``: q = sum over buckets of each bucket's max."""

    __slots__ = ("_bucket_size", "_maxima", "_sum")

    def __init__(self, snapshot: AggregateSnapshot, bucket_size: WindowSize) -> None:
        self._bucket_size = bucket_size
        self._maxima = dict(snapshot.bucket_maxima)
        self._sum = sum(self._maxima.values(), ZERO)

    def peek(self, value: Decimal, ts: datetime, event_id: str) -> Decimal:
        previous = self._maxima.get(window_start(ts, self._bucket_size))
        if previous is None:
            return self._sum + value
        return self._sum + value - previous if value > previous else self._sum

    def add(self, value: Decimal, ts: datetime, event_id: str) -> Decimal:
        bucket = window_start(ts, self._bucket_size)
        previous = self._maxima.get(bucket)
        if previous is None:
            self._maxima[bucket] = value
            self._sum += value
        elif value > previous:
            self._maxima[bucket] = value
            self._sum += value - previous
        return self._sum

    def quantity(self) -> Decimal:
        return self._sum


class LatestAggregate:
    """LATEST: value of the event with the greatest (timestamp, event id)."""

    __slots__ = ("_key", "_value")

    def __init__(self, snapshot: AggregateSnapshot) -> None:
        if snapshot.latest is None:
            self._key: tuple[datetime, str] | None = None
            self._value = ZERO
        else:
            ts, event_id, value = snapshot.latest
            self._key = (ts, event_id)
            self._value = value

    def peek(self, value: Decimal, ts: datetime, event_id: str) -> Decimal:
        key = (ts, event_id)
        return value if self._key is None or key > self._key else self._value

    def add(self, value: Decimal, ts: datetime, event_id: str) -> Decimal:
        key = (ts, event_id)
        if self._key is None or key > self._key:
            self._key = key
            self._value = value
        return self._value

    def quantity(self) -> Decimal:
        return self._value


def new_aggregate(
    kind: AggregationType,
    bucket_size: WindowSize | None = None,
    snapshot: AggregateSnapshot | None = None,
) -> Aggregate:
    """The aggregate for ``kind``, rebuilt from ``snapshot`` (empty when None)."""
    snapshot = snapshot or AggregateSnapshot()
    if kind is AggregationType.AVG:
        return AverageAggregate(snapshot)
    if kind is AggregationType.MAX:
        if bucket_size is not None:
            return BucketedMaxAggregate(snapshot, bucket_size)
        return MaxAggregate(snapshot)
    if kind is AggregationType.LATEST:
        return LatestAggregate(snapshot)
    return SumAggregate(snapshot)

"""Meters: which events they count, how much each event measures, and its unique hash.

Pure functions of (meter, event). The canonical value form used for filters and
COUNT_UNIQUE is the one the SQL read side uses too (DESIGN.md §3).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import NamedTuple

from worker.domain.events import Event
from worker.domain.money import ONE, ZERO, div, mul, parse_decimal, quantize


class AggregationType(StrEnum):
    COUNT = "COUNT"
    SUM = "SUM"
    AVG = "AVG"
    MAX = "MAX"
    LATEST = "LATEST"
    SUM_WITH_MULTIPLIER = "SUM_WITH_MULTIPLIER"
    COUNT_UNIQUE = "COUNT_UNIQUE"
    WEIGHTED_SUM = "WEIGHTED_SUM"


class WindowSize(StrEnum):
    """Time buckets of the read side and of bucketed MAX."""

    MINUTE = "MINUTE"
    MIN15 = "15MIN"
    MIN30 = "30MIN"
    HOUR = "HOUR"
    HOUR3 = "3HOUR"
    HOUR6 = "6HOUR"
    HOUR12 = "12HOUR"
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"


NEEDS_FIELD = frozenset(AggregationType) - {AggregationType.COUNT}

MAX_EVENT_QUANTITY = Decimal(10) ** 18
"""One event's quantity must stay below this; larger values are unusable (treated
as missing). Stored columns are Decimal(38, 15): 23 integer digits, so a period
can sum 100,000 maximal events without overflow."""


def canonical_value(value: object) -> str | None:
    """The canonical string of a property value, or None if it can never match.

    Strings as-is; booleans ``true``/``false``; integers and integral floats as
    plain digits (``1000000``, never ``1e+06``); other floats as their shortest
    round-trip digits without exponent; null, objects and arrays -> None.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        # Shortest round-trip digits, never the binary expansion (1e23 -> 1 and 23 zeros).
        digits = format(Decimal(repr(value)), "f")
        return digits.partition(".")[0] if value.is_integer() else digits
    return None


@dataclass(frozen=True, slots=True)
class MeterFilter:
    """Property ``key`` must be present with a canonical value in ``values``."""

    key: str
    values: frozenset[str]


@dataclass(frozen=True, slots=True)
class Meter:
    """A compiled meter: event name, filters (AND across keys, OR within) and aggregation."""

    id: str
    event_name: str
    aggregation: AggregationType
    field: str = ""
    multiplier: Decimal = ONE
    bucket_size: WindowSize | None = None
    filters: tuple[MeterFilter, ...] = ()

    def matches(self, event: Event) -> bool:
        """True when the event's name and properties satisfy this meter."""
        return event.event_name == self.event_name and all(
            canonical_value(event.properties.get(meter_filter.key)) in meter_filter.values
            for meter_filter in self.filters
        )


class Measurement(NamedTuple):
    """What one event contributes to a meter.

    ``quantity`` is the event's ``qty_total`` before dedup (quantized, >= 0).
    ``field_missing`` flags a missing or unparseable field (counted, treated as 0).
    ``unique_hash`` is the dedup key.
    """

    quantity: Decimal
    unique_hash: str
    field_missing: bool = False


def measure(
    meter: Meter, event: Event, period_start: datetime, period_end: datetime
) -> Measurement:
    """Quantity of one event for ``meter`` in the period ``[period_start, period_end)``."""
    kind = meter.aggregation
    if kind is AggregationType.COUNT:
        return Measurement(quantity=ONE, unique_hash=event_hash(event))
    raw = event.properties.get(meter.field)
    if kind is AggregationType.COUNT_UNIQUE:
        canonical = canonical_value(raw)
        if canonical is None:
            return _missing(event)
        return Measurement(quantity=ONE, unique_hash=value_hash(event, meter.id, canonical))
    value = parse_decimal(raw)
    if value is not None and kind is AggregationType.SUM_WITH_MULTIPLIER:
        value = _times_multiplier(value, meter.multiplier)
    if value is None or value >= MAX_EVENT_QUANTITY:
        return _missing(event)
    if value < 0:
        value = ZERO
    elif kind is AggregationType.WEIGHTED_SUM:
        value = mul(value, time_weight(event.timestamp, period_start, period_end))
    return Measurement(quantity=quantize(value), unique_hash=event_hash(event))


def _missing(event: Event) -> Measurement:
    """The measurement of an event whose field is missing or unusable: 0, flagged."""
    return Measurement(quantity=ZERO, unique_hash=event_hash(event), field_missing=True)


def _times_multiplier(value: Decimal, multiplier: Decimal) -> Decimal:
    """``value × multiplier``, or a stand-in of the same sign at 10^18 when the
    product is at least 10^19: such a product is out of range whatever its
    digits, and computing it could overflow the arithmetic context's exponent
    range (a property of ``"1e1000001"`` would otherwise stop the batch)."""
    if value and multiplier and value.adjusted() + multiplier.adjusted() >= 19:
        return -MAX_EVENT_QUANTITY if (value < 0) != (multiplier < 0) else MAX_EVENT_QUANTITY
    return mul(value, multiplier)


def time_weight(ts: datetime, period_start: datetime, period_end: datetime) -> Decimal:
    """Share of the period left at ``ts``: ``(end - ts) / (end - start)``, in [0, 1].

    Computed from integer microseconds, so the weight is exact before quantizing.
    """
    length = _micros(period_end - period_start)
    remaining = _micros(period_end - ts)
    if length <= 0 or remaining <= 0:
        return ZERO
    return div(min(remaining, length), length)


def _micros(delta: timedelta) -> Decimal:
    return Decimal((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)


def event_hash(event: Event) -> str:
    """unique_hash of non-COUNT_UNIQUE meters: sha256 of tenant, environment, event id."""
    return _sha256(event.tenant_id, event.environment_id, event.id)


def value_hash(event: Event, meter_id: str, canonical: str) -> str:
    """unique_hash of COUNT_UNIQUE: sha256 of tenant, environment, meter id, canonical value."""
    return _sha256(event.tenant_id, event.environment_id, meter_id, canonical)


def _sha256(*parts: str) -> str:
    # The unit separator cannot be confused with content boundaries of ids.
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()

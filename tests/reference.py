"""Reference computations for tests: exact fractions, written independently of the rater.

Pricing of DESIGN.md §4 over :class:`fractions.Fraction`, quantized half away
from zero to 15 places. Unit tests (the rating invariant) and integration
tests (the end-to-end invoice) compare the worker's results with these.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Context, Decimal
from fractions import Fraction
from typing import Any

import orjson

from worker.domain.catalog_index import CatalogIndex, LineItemBinding
from worker.domain.events import Event
from worker.domain.metering import AggregationType
from worker.domain.periods import Period
from worker.domain.pricing import BillingModel, PackageRounding, PriceTable, TierMode
from worker.domain.validation import decode_event

MICROSECOND = timedelta(microseconds=1)

Q15 = Decimal("1e-15")
#: Wide enough for every value a Decimal(38, 15) column holds (the default
#: context keeps 28 digits and would refuse to quantize 1e13 to 15 places).
_EXACT = Context(prec=100)


def q15(value: Fraction | Decimal | int) -> Decimal:
    """Reference quantizer: exact fraction -> 15 places, half away from zero."""
    fraction = Fraction(value)
    sign = -1 if fraction < 0 else 1
    scaled = abs(fraction) * 10**15
    whole = math.floor(scaled)
    if scaled - whole >= Fraction(1, 2):
        whole += 1
    return _EXACT.multiply(Decimal(sign * whole), Q15).quantize(Q15, context=_EXACT)


def reference_rate(price: PriceTable, quantity: Decimal) -> Decimal:
    q = Fraction(quantity)
    if q <= 0:
        return Decimal(0)
    if price.model is BillingModel.FLAT_FEE:
        return q15(Fraction(price.amount) * q)
    if price.model is BillingModel.PACKAGE:
        packages = q / Fraction(price.package_size)
        count = (
            math.ceil(packages)
            if price.package_rounding is PackageRounding.UP
            else math.floor(packages)
        )
        return q15(Fraction(price.amount) * count)
    tiers = price.tiers
    if price.tier_mode is TierMode.VOLUME:
        for tier in tiers:
            if tier.up_to is None or q <= tier.up_to:
                return q15(Fraction(tier.unit_amount) * q + Fraction(tier.flat_amount))
        return q15(Fraction(tiers[-1].unit_amount) * q + Fraction(tiers[-1].flat_amount))
    total, remaining, lower = Fraction(0), q, Fraction(0)
    for tier in tiers:
        width = remaining if tier.up_to is None else Fraction(tier.up_to) - lower
        taken = min(remaining, width)
        if taken > 0:
            total += Fraction(tier.unit_amount) * taken + Fraction(tier.flat_amount)
            remaining -= taken
        if tier.up_to is not None:
            lower = Fraction(tier.up_to)
    total += Fraction(tiers[-1].unit_amount) * remaining
    return q15(total)


# -- the invoice of a stream, from first principles -----------------------------


def _value(event: Event, binding: LineItemBinding) -> Fraction:
    raw = event.properties.get(binding.meter.field)
    try:
        value = Fraction(Decimal(str(raw)))
    except ArithmeticError:
        return Fraction(0)
    return max(value, Fraction(0))


def reference_quantity(binding: LineItemBinding, period: Period, events: list[Event]) -> Decimal:
    meter = binding.meter
    kind = meter.aggregation
    if kind is AggregationType.COUNT:
        return Decimal(len(events))
    if kind is AggregationType.COUNT_UNIQUE:
        return Decimal(len({str(e.properties.get(meter.field)) for e in events}))
    values = [_value(e, binding) for e in events]
    if kind is AggregationType.SUM:
        return q15(sum(values, Fraction(0)))
    if kind is AggregationType.SUM_WITH_MULTIPLIER:
        return sum((q15(v * Fraction(meter.multiplier)) for v in values), Decimal(0))
    if kind is AggregationType.AVG:
        return q15(sum(values, Fraction(0)) / len(values))
    if kind is AggregationType.WEIGHTED_SUM:
        length = (period.end - period.start) // MICROSECOND
        return sum(
            (q15(v * Fraction((period.end - e.timestamp) // MICROSECOND, length))
             for v, e in zip(values, events, strict=True)),
            Decimal(0),
        )  # fmt: skip
    if kind is AggregationType.LATEST:
        newest = max(range(len(events)), key=lambda i: (events[i].timestamp, events[i].id))
        return q15(values[newest])
    if meter.bucket_size is None:
        return q15(max(values))
    daily: dict[Any, Fraction] = defaultdict(Fraction)  # the sample buckets MAX by UTC day
    for event, value in zip(events, values, strict=True):
        day = event.timestamp.date()
        daily[day] = max(daily[day], value)
    return q15(sum(daily.values(), Fraction(0)))


def reference_invoice(
    index: CatalogIndex, documents: list[dict[str, Any]], tenant: str
) -> list[dict[str, Any]]:
    """The `query line-items --json` lines of `tenant`/prod for the distinct `documents`:
    exact fractions over each line item and period's events (resolution by the
    catalog index), never the worker's incremental rating."""
    now = datetime(2026, 3, 1).astimezone()
    distinct: dict[tuple[str, str], Event] = {}
    for document in documents:
        event = decode_event(orjson.dumps(document), fallback_id="-", fallback_timestamp=now)
        if event.tenant_id == tenant:
            distinct.setdefault((event.tenant_id, event.id), event)
    groups: dict[tuple[str, str, int], list[tuple[Event, Any]]] = defaultdict(list)
    for event in distinct.values():
        for match in index.resolve(event).matches:
            key = (
                match.binding.subscription.id,
                match.binding.line_item_id,
                match.period.period_id,
            )
            groups[key].append((event, match))
    lines = []
    for (subscription_id, line_item_id, period_id), items in sorted(groups.items()):
        binding, period = items[0][1].binding, items[0][1].period
        quantity = reference_quantity(binding, period, [event for event, _ in items])
        free = min(quantity, binding.free_units)
        billable = max(Decimal(0), quantity - binding.free_units)
        cost = reference_rate(binding.price, billable)
        places = 0 if binding.price.currency in ("jpy", "krw", "vnd", "clp") else 2
        amount = Fraction(cost) * 10**places
        rounded = math.floor(amount + Fraction(1, 2))
        lines.append(
            {
                "subscription_id": subscription_id,
                "sub_line_item_id": line_item_id,
                "period_id": period_id,
                "customer_id": binding.subscription.customer_id,
                "price_id": binding.price.price_id,
                "feature_id": binding.feature_id,
                "currency": binding.price.currency,
                "qty_total": f"{q15(quantity):f}",
                "qty_free_applied": f"{q15(free):f}",
                "qty_billable": f"{q15(billable):f}",
                "cost": f"{q15(cost):f}",
                "amount": f"{Decimal(rounded).scaleb(-places):f}",
                "event_count": len(items),
            }
        )
    return lines

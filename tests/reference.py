"""The independent reference: expected invoices from the catalog JSON and the events alone.

Written from DESIGN.md §3-§5 and the README's decisions, importing nothing of
``worker`` (plain ``fractions``, ``decimal``, ``datetime``, ``zoneinfo``), so
that a resolution, filter, period, metering or pricing bug in the worker makes
the tests that compare with it fail. It reads the catalog documents as JSON
(dicts) and the event documents as dicts, and computes each (subscription,
line item, period) from the whole set of its distinct events at once, never
incrementally:

* resolution: customer (``customer_id`` when the catalog knows it, else
  ``external_customer_id``) -> billing subscriptions (active/trialing, or
  cancelled after the event; ``start <= ts < end``) -> line items active at
  ``ts`` -> price and meter (the line item's, else the price's) -> the meter's
  event name (trimmed) and filters (canonical values, AND across keys, OR
  within);
* periods: :mod:`tests.reference_periods`;
* dedup: one row per (event id, line item, period), first copy wins;
  COUNT_UNIQUE counts distinct canonical values;
* the eight aggregations, free units, the four price models, quantization to
  15 places half away from zero and invoice rounding to the currency.

Exact arithmetic is :class:`fractions.Fraction`; only results are quantized.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal
from fractions import Fraction
from typing import Any

from tests.reference_periods import EPOCH, Cycle, epoch_ms

Q15 = Decimal("1e-15")
#: Wide enough for every value a Decimal(38, 15) column holds (the default
#: context keeps 28 digits and would refuse to quantize 1e13 to 15 places).
_EXACT = Context(prec=100)
#: One event's value at or above this is unusable (README, "Metering").
MAX_EVENT_QUANTITY = Fraction(10**18)
ZERO_DECIMAL_CURRENCIES = frozenset({"jpy", "krw", "vnd", "clp"})
#: A numeric string. Single underscores between digits are accepted ("1_000"): the
#: worker and its SQL read side both read them so (noted in docs/testing.md).
_DIGITS = r"\d(?:_?\d)*"
_NUMBER = re.compile(rf"[+-]?(?:{_DIGITS}(?:\.(?:{_DIGITS})?)?|\.{_DIGITS})(?:[eE][+-]?{_DIGITS})?")
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)?"
)
_BILLING = frozenset({"active", "trialing"})
_CANCELLED = frozenset({"cancelled", "canceled"})


def q15(value: Fraction | Decimal | int) -> Decimal:
    """Exact value -> 15 places, half away from zero."""
    fraction = Fraction(value)
    sign = -1 if fraction < 0 else 1
    scaled = abs(fraction) * 10**15
    whole = math.floor(scaled)
    if scaled - whole >= Fraction(1, 2):
        whole += 1
    return _EXACT.multiply(Decimal(sign * whole), Q15).quantize(Q15, context=_EXACT)


def round_amount(cost: Fraction, currency: str) -> Decimal:
    """Invoice amount: half away from zero to the currency's places (0 or 2)."""
    places = 0 if currency.lower() in ZERO_DECIMAL_CURRENCIES else 2
    scaled = abs(cost) * 10**places
    whole = math.floor(scaled + Fraction(1, 2))
    return Decimal(-whole if cost < 0 else whole).scaleb(-places)


# -- prices ---------------------------------------------------------------------


def _fraction(text: Any) -> Fraction:
    return Fraction(Decimal(str(text))) if text is not None else Fraction(0)


@dataclass(frozen=True)
class Tier:
    """One tier of a TIERED price; ``up_to`` None is unbounded."""

    up_to: Fraction | None
    unit_amount: Fraction
    flat_amount: Fraction


@dataclass(frozen=True)
class Price:
    """A price read from its catalog JSON: ``model`` FLAT_FEE, PACKAGE, VOLUME or SLAB."""

    model: str
    amount: Fraction = Fraction(0)
    divide_by: Fraction = Fraction(1)
    round_up: bool = True
    tiers: tuple[Tier, ...] = ()

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Price:
        model = str(doc["billing_model"]).upper()
        if model == "TIERED":
            tiers = tuple(
                Tier(
                    None if tier.get("up_to") is None else _fraction(tier["up_to"]),
                    _fraction(tier.get("unit_amount")),
                    _fraction(tier.get("flat_amount")),
                )
                for tier in doc["tiers"]
            )
            return cls(str(doc["tier_mode"]).upper(), tiers=tiers)
        transform = doc.get("transform_quantity") or {}
        return cls(
            model,
            amount=_fraction(doc.get("amount")),
            divide_by=_fraction(transform.get("divide_by", 1)),
            round_up=transform.get("round", "up") == "up",
        )


def rate(price: Price, quantity: Fraction | Decimal) -> Decimal:
    """``rate(q)`` of DESIGN.md §4, quantized; ``rate(0) = 0``."""
    q = Fraction(quantity)
    if q <= 0:
        return q15(0)
    if price.model == "FLAT_FEE":
        return q15(price.amount * q)
    if price.model == "PACKAGE":
        packages = q / price.divide_by
        return q15(price.amount * (math.ceil(packages) if price.round_up else math.floor(packages)))
    if price.model == "VOLUME":
        tier = next((t for t in price.tiers if t.up_to is None or q <= t.up_to), price.tiers[-1])
        return q15(tier.unit_amount * q + tier.flat_amount)
    total, lower = Fraction(0), Fraction(0)
    for tier in price.tiers:  # SLAB: each tier takes the units between its bounds
        upper = q if tier.up_to is None else min(q, tier.up_to)
        if upper > lower:
            total += tier.unit_amount * (upper - lower) + tier.flat_amount
        if tier.up_to is None or tier.up_to >= q:
            return q15(total)
        lower = tier.up_to
    return q15(total + price.tiers[-1].unit_amount * (q - lower))


def reference_rate(price: Any, quantity: Decimal) -> Decimal:
    """:func:`rate` of a compiled price table (any object with the worker's
    ``PriceTable`` attributes), for the unit tests of the rating invariant."""
    model = str(getattr(price.model, "value", price.model))
    if model == "TIERED":
        model = str(getattr(price.tier_mode, "value", price.tier_mode))
    rounding = str(getattr(price.package_rounding, "value", price.package_rounding))
    tiers = tuple(
        Tier(
            None if t.up_to is None else Fraction(t.up_to),
            Fraction(t.unit_amount),
            Fraction(t.flat_amount),
        )
        for t in (price.tiers or ())
    )
    table = Price(
        model.upper(),
        amount=Fraction(price.amount or 0),
        divide_by=Fraction(price.package_size or 1),
        round_up=rounding.lower() != "down",
        tiers=tiers,
    )
    return rate(table, quantity)


# -- events ---------------------------------------------------------------------


def parse_timestamp(text: str) -> datetime:
    """RFC 3339; fraction digits past microseconds truncated; naive = UTC."""
    match = _TIMESTAMP.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    micros = int(((match.group(7) or "") + "000000")[:6])
    zone = match.group(8)
    instant = datetime(year, month, day, hour, minute, second, micros, tzinfo=UTC)
    if zone and zone not in "Zz":
        sign = 1 if zone[0] == "+" else -1
        instant -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return instant


def canonical(value: Any) -> str | None:
    """The canonical filter / COUNT_UNIQUE form of a property value (DESIGN.md §3)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        digits = format(Decimal(repr(value)), "f")
        return digits.split(".")[0] if value.is_integer() else digits
    return None


def number(value: Any) -> Fraction | None:
    """A JSON number or numeric string as an exact fraction; None when unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(Decimal(repr(value))) if math.isfinite(value) else None
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return Fraction(Decimal(value.strip()))
    return None


@dataclass(frozen=True)
class RefEvent:
    """An event document as the reference reads it."""

    id: str
    tenant_id: str
    environment_id: str
    event_name: str
    timestamp: datetime
    properties: Mapping[str, Any]
    customer_id: str
    external_customer_id: str

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], record_time: datetime) -> RefEvent:
        raw_ts = doc.get("timestamp")
        return cls(
            id=str(doc["id"]),
            tenant_id=doc["tenant_id"],
            environment_id=doc.get("environment_id") or "",
            event_name=str(doc["event_name"]).strip(),
            timestamp=record_time if raw_ts is None else parse_timestamp(raw_ts),
            properties=doc.get("properties") or {},
            customer_id=doc.get("customer_id") or "",
            external_customer_id=doc.get("external_customer_id") or "",
        )


# -- the catalog ----------------------------------------------------------------


def _instant(text: str | None) -> datetime | None:
    if text is None:
        return None
    value = datetime.fromisoformat(text.replace("z", "Z"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class Terms:
    """A subscription's status and dates, read once."""

    status: str
    start: datetime
    end: datetime | None
    cancelled_at: datetime | None

    @classmethod
    def from_json(cls, sub: Mapping[str, Any]) -> Terms:
        start = _instant(sub["start_date"])
        assert start is not None
        return cls(
            str(sub["status"]).strip().lower(),
            start,
            _instant(sub.get("end_date")),
            _instant(sub.get("cancelled_at")),
        )


@dataclass(frozen=True)
class LineItem:
    """A usage line item with everything its rows need."""

    id: str
    subscription: Mapping[str, Any]
    terms: Terms
    cycle: Cycle
    start: datetime
    end: datetime | None
    free_units: Fraction
    price_id: str
    price: Price
    currency: str
    meter: Mapping[str, Any]
    feature_id: str

    def bills_at(self, ts: datetime) -> bool:
        """The subscription bills at ``ts`` and the line item is active then."""
        terms = self.terms
        billing = terms.status in _BILLING or (
            terms.status in _CANCELLED
            and terms.cancelled_at is not None
            and ts < terms.cancelled_at
        )
        return (
            billing
            and terms.start <= ts
            and (terms.end is None or ts < terms.end)
            and self.start <= ts
            and (self.end is None or ts < self.end)
        )

    def meter_matches(self, event: RefEvent) -> bool:
        if str(self.meter["event_name"]).strip() != event.event_name:
            return False
        return all(
            canonical(event.properties.get(f["key"])) in f["values"]
            for f in self.meter.get("filters") or ()
        )


class Catalog:
    """Catalog documents (one or a list), read as plain JSON."""

    def __init__(self, documents: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> None:
        docs = [documents] if isinstance(documents, Mapping) else list(documents)
        self.customers: set[tuple[str, str, str]] = set()
        self.by_external: dict[tuple[str, str, str], str] = {}
        self.line_items: dict[tuple[str, str, str], list[LineItem]] = defaultdict(list)
        for doc in docs:
            self._add(doc)

    def _add(self, doc: Mapping[str, Any]) -> None:
        scope = (doc["tenant_id"], doc.get("environment_id") or "")
        for customer in doc.get("customers") or ():
            self.customers.add((*scope, customer["id"]))
            if customer.get("external_id"):
                self.by_external[(*scope, customer["external_id"])] = customer["id"]
        meters = {meter["id"]: meter for meter in doc.get("meters") or ()}
        prices = {price["id"]: price for price in doc.get("prices") or ()}
        features: dict[str, str] = {}
        for feature in doc.get("features") or ():
            if feature.get("meter_id"):
                features.setdefault(feature["meter_id"], feature["id"])
        for sub in doc.get("subscriptions") or ():
            start = _instant(sub["start_date"])
            anchor = _instant(sub.get("billing_anchor")) or start
            assert start is not None and anchor is not None
            cycle = Cycle(
                anchor,
                sub.get("billing_period") or "MONTHLY",
                int(sub.get("billing_period_count") or 1),
                sub.get("timezone") or "UTC",
            )
            for item in sub.get("line_items") or ():
                price_doc = prices[item["price_id"]]
                meter = meters[item.get("meter_id") or price_doc["meter_id"]]
                self.line_items[(*scope, sub["customer_id"])].append(
                    LineItem(
                        id=item["id"],
                        subscription=sub,
                        terms=Terms.from_json(sub),
                        cycle=cycle,
                        start=_instant(item.get("start_date")) or start,
                        end=_instant(item.get("end_date")),
                        free_units=_fraction(item.get("free_units")),
                        price_id=price_doc["id"],
                        price=Price.from_json(price_doc),
                        currency=price_doc["currency"],
                        meter=meter,
                        feature_id=item.get("feature_id") or features.get(meter["id"], ""),
                    )
                )

    def customer_of(self, event: RefEvent) -> str | None:
        scope = (event.tenant_id, event.environment_id)
        if event.customer_id and (*scope, event.customer_id) in self.customers:
            return event.customer_id
        return self.by_external.get((*scope, event.external_customer_id))

    def matches(self, event: RefEvent) -> list[tuple[LineItem, datetime, datetime]]:
        """Every (line item, period start, period end) the event is priced on."""
        customer = self.customer_of(event)
        if customer is None:
            return []
        found = []
        for item in self.line_items.get((event.tenant_id, event.environment_id, customer), ()):
            if item.bills_at(event.timestamp) and item.meter_matches(event):
                period = item.cycle.period_at(event.timestamp, item.terms.start)
                if period is not None:
                    found.append((item, *period))
        return found


# -- quantities -----------------------------------------------------------------


_WINDOW_MINUTES = {"MINUTE": 1, "15MIN": 15, "30MIN": 30, "HOUR": 60, "3HOUR": 180,
                   "6HOUR": 360, "12HOUR": 720, "DAY": 1440}  # fmt: skip


def window_start(ts: datetime, size: str) -> datetime:
    """Start of the UTC window of ``size`` holding ``ts``: ``toStartOfInterval`` from the
    epoch for minutes to days, the ISO week's Monday, the calendar month's first day."""
    ts = ts.astimezone(UTC)
    size = str(size).upper()
    if size in _WINDOW_MINUTES:
        step = timedelta(minutes=_WINDOW_MINUTES[size])
        return EPOCH + (ts - EPOCH) // step * step
    day = datetime(ts.year, ts.month, ts.day, tzinfo=UTC)
    if size == "WEEK":
        return day - timedelta(days=day.weekday())
    if size == "MONTH":
        return day.replace(day=1)
    raise ValueError(f"unknown window size {size}")


def _usable(value: Fraction | None) -> Fraction:
    if value is None or value >= MAX_EVENT_QUANTITY:
        return Fraction(0)
    return max(value, Fraction(0))


def event_value(raw: Any) -> Decimal:
    """One event's quantity from a property value (SUM, MAX, AVG, LATEST): the number,
    negative -> 0, unusable (missing, not numeric, >= 10^18) -> 0, to 15 places."""
    return q15(_usable(number(raw)))


def period_quantity(
    meter: Mapping[str, Any], start: datetime, end: datetime, events: list[RefEvent]
) -> Fraction:
    """``q`` of a (line item, period) from its distinct events, quantized like a stored value."""
    aggregation = meter["aggregation"]
    kind, field = str(aggregation["type"]).upper(), aggregation.get("field")
    if kind == "COUNT":
        return Fraction(len(events))
    raws = [e.properties.get(field) for e in events]
    if kind == "COUNT_UNIQUE":
        return Fraction(len({canonical(r) for r in raws} - {None}))
    if kind == "SUM_WITH_MULTIPLIER":
        multiplier = _fraction(aggregation["multiplier"])
        product = [None if (v := number(r)) is None else v * multiplier for r in raws]
        return sum((Fraction(q15(_usable(p))) for p in product), Fraction(0))
    values = [Fraction(q15(_usable(number(r)))) for r in raws]
    if kind == "SUM":
        return sum(values, Fraction(0))
    if kind == "AVG":
        return Fraction(q15(sum(values, Fraction(0)) / len(values)))
    if kind == "LATEST":
        newest = max(range(len(events)), key=lambda i: (events[i].timestamp, events[i].id))
        return values[newest]
    if kind == "WEIGHTED_SUM":
        length = Fraction((end - start) // timedelta(microseconds=1))
        weights = [Fraction((end - e.timestamp) // timedelta(microseconds=1)) for e in events]
        raw = [_usable(number(r)) for r in raws]
        return sum((Fraction(q15(v * w / length)) for v, w in zip(raw, weights, strict=True)),
                   Fraction(0))  # fmt: skip
    if kind != "MAX":
        raise ValueError(f"unknown aggregation {kind}")
    size = aggregation.get("bucket_size")
    if size is None:
        return max(values)
    maxima: dict[Any, Fraction] = defaultdict(Fraction)
    for event, value in zip(events, values, strict=True):
        key = window_start(event.timestamp, size)
        maxima[key] = max(maxima[key], value)
    return sum(maxima.values(), Fraction(0))


# -- the invoice ----------------------------------------------------------------


def invoice_line(
    item: LineItem, start: datetime, end: datetime, events: list[RefEvent]
) -> dict[str, Any]:
    """One ``query line-items --json`` object for a line item's period."""
    quantity = period_quantity(item.meter, start, end, events)
    free = min(quantity, item.free_units)
    billable = max(Fraction(0), quantity - item.free_units)
    cost = rate(item.price, billable)
    return {
        "subscription_id": item.subscription["id"],
        "sub_line_item_id": item.id,
        "period_id": epoch_ms(start),
        "customer_id": item.subscription["customer_id"],
        "price_id": item.price_id,
        "feature_id": item.feature_id,
        "currency": item.currency,
        "qty_total": f"{q15(quantity):f}",
        "qty_free_applied": f"{q15(free):f}",
        "qty_billable": f"{q15(billable):f}",
        "cost": f"{cost:f}",
        "amount": f"{round_amount(Fraction(cost), item.currency):f}",
        "event_count": len(events),
    }


def reference_invoice(
    catalog: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    documents: Iterable[Mapping[str, Any]],
    tenant: str = "t1",
    environment: str = "prod",
    *,
    record_time: datetime = datetime(2026, 3, 1, tzinfo=UTC),
) -> list[dict[str, Any]]:
    """The ``query line-items --json`` lines of ``tenant``/``environment``, sorted by
    (subscription, line item, period), for the event ``documents`` in arrival order.

    A repeated event id is priced once per (line item, period) (the first copy);
    events without a customer, subscription or line item have no line. An event
    without ``timestamp`` takes ``record_time`` (its Kafka record time).
    """
    index = Catalog(catalog)
    groups: dict[tuple[str, str, int], tuple[LineItem, datetime, datetime, list[RefEvent]]] = {}
    seen: set[tuple[str, int, str]] = set()
    for document in documents:
        if document.get("tenant_id") != tenant or (document.get("environment_id") or "") != (
            environment
        ):
            continue
        event = RefEvent.from_document(document, record_time)
        for item, start, end in index.matches(event):
            key = (item.subscription["id"], item.id, epoch_ms(start))
            if (item.id, key[2], event.id) in seen:
                continue
            seen.add((item.id, key[2], event.id))
            groups.setdefault(key, (item, start, end, []))[3].append(event)
    return [invoice_line(*groups[key]) for key in sorted(groups)]


def never_priced(
    catalog: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    documents: Iterable[Mapping[str, Any]],
    *,
    record_time: datetime = datetime(2026, 3, 1, tzinfo=UTC),
) -> set[str]:
    """Ids of the event ``documents`` that ``catalog`` prices on no line item."""
    index = Catalog(catalog)
    ids: dict[str, bool] = {}
    for document in documents:
        event = RefEvent.from_document(document, record_time)
        ids[event.id] = ids.get(event.id, False) or bool(index.matches(event))
    return {event_id for event_id, priced in ids.items() if not priced}


def line_item_ids(
    catalog: Mapping[str, Any] | Iterable[Mapping[str, Any]], event: Any
) -> list[str]:
    """Sorted ids of the line items ``catalog`` prices ``event`` on (any object
    with the worker's ``Event`` attributes), by the reference's own resolution."""
    document = {
        "id": event.id,
        "tenant_id": event.tenant_id,
        "environment_id": event.environment_id,
        "event_name": event.event_name,
        "timestamp": event.timestamp.isoformat(),
        "customer_id": event.customer_id,
        "external_customer_id": event.external_customer_id,
        "properties": dict(event.properties),
    }
    reference_event = RefEvent.from_document(document, event.timestamp)
    return sorted(item.id for item, _, _ in Catalog(catalog).matches(reference_event))


def line_totals(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """The ``query line-items --json`` lines of given priced rows (objects with the
    worker's ``ProcessedEvent`` attributes), summed here: per (subscription, line
    item, period) the sums of free, billable and cost and the row count;
    ``qty_total`` is free + billable (the rows telescope to the period quantity)."""
    sums: dict[tuple[str, str, int], list[Any]] = {}
    for row in rows:
        key = (row.subscription_id, row.sub_line_item_id, row.period_id)
        entry = sums.setdefault(key, [row, Fraction(0), Fraction(0), Fraction(0), 0])
        entry[1] += Fraction(row.qty_free_applied)
        entry[2] += Fraction(row.qty_billable)
        entry[3] += Fraction(row.cost)
        entry[4] += 1
    lines = []
    for key in sorted(sums):
        first, free, billable, cost, count = sums[key]
        lines.append(
            {
                "subscription_id": first.subscription_id,
                "sub_line_item_id": first.sub_line_item_id,
                "period_id": first.period_id,
                "customer_id": first.customer_id,
                "price_id": first.price_id,
                "feature_id": first.feature_id,
                "currency": first.currency,
                "qty_total": f"{q15(free + billable):f}",
                "qty_free_applied": f"{q15(free):f}",
                "qty_billable": f"{q15(billable):f}",
                "cost": f"{q15(cost):f}",
                "amount": f"{round_amount(cost, first.currency):f}",
                "event_count": count,
            }
        )
    return lines

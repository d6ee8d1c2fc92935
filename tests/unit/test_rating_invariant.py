"""The core invariant of incremental rating, property-tested (DESIGN.md §4).

For every billing model and aggregation type, any arrival order, with
redeliveries: the per-event rows of a (line item, period) telescope to the
invoice. Expected values come from a reference computation written here with
exact fractions over the *distinct* events, independent of the rater.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reference import q15, reference_rate
from worker.domain.aggregates import new_aggregate
from worker.domain.events import Event
from worker.domain.metering import AggregationType, Meter, WindowSize, measure
from worker.domain.pricing import BillingModel, PackageRounding, PriceTable, Tier, TierMode
from worker.domain.rating import LineItemPeriodRating, Outcome

PERIOD_START = datetime(2026, 3, 1, tzinfo=UTC)
PERIOD_END = datetime(2026, 4, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SourceEvent:
    id: str
    value: int | str
    ts: datetime


def reference_quantity(meter: Meter, events: list[SourceEvent]) -> Decimal:
    """q(final) over distinct events, from the aggregation definitions."""
    kind = meter.aggregation
    values = [max(Fraction(Decimal(str(e.value))), Fraction(0)) for e in events]
    if kind is AggregationType.COUNT:
        return Decimal(len(events))
    if kind is AggregationType.COUNT_UNIQUE:
        return Decimal(len({str(e.value) for e in events}))
    if not events:
        return Decimal(0)
    if kind is AggregationType.SUM:
        return q15(sum(values, Fraction(0)))
    if kind is AggregationType.SUM_WITH_MULTIPLIER:
        return sum((q15(v * Fraction(meter.multiplier)) for v in values), Decimal(0))
    if kind is AggregationType.WEIGHTED_SUM:
        span = (PERIOD_END - PERIOD_START) / timedelta(microseconds=1)
        weights = [
            Fraction(int((PERIOD_END - e.ts) / timedelta(microseconds=1)), int(span))
            for e in events
        ]
        return sum((q15(v * w) for v, w in zip(values, weights, strict=True)), Decimal(0))
    if kind is AggregationType.AVG:
        return q15(sum(values, Fraction(0)) / len(values))
    if kind is AggregationType.LATEST:
        latest = max(range(len(events)), key=lambda i: (events[i].ts, events[i].id))
        return q15(values[latest])
    if meter.bucket_size is None:
        return q15(max(values))
    buckets: dict[datetime, Fraction] = {}
    for event, value in zip(events, values, strict=True):
        hour = event.ts.replace(minute=0, second=0, microsecond=0)
        buckets[hour] = max(buckets.get(hour, Fraction(0)), value)
    return q15(sum(buckets.values(), Fraction(0)))


decimals = st.decimals(min_value=0, max_value=500, places=3, allow_nan=False, allow_infinity=False)


@st.composite
def prices(draw: st.DrawFn) -> PriceTable:
    model = draw(st.sampled_from(list(BillingModel)))
    if model is BillingModel.FLAT_FEE:
        return PriceTable("p", "usd", model, amount=draw(decimals))
    if model is BillingModel.PACKAGE:
        return PriceTable(
            "p",
            "usd",
            model,
            amount=draw(decimals),
            package_size=draw(st.decimals(min_value="0.5", max_value=50, places=1)),
            package_rounding=draw(st.sampled_from(list(PackageRounding))),
        )
    bounds = sorted(draw(st.sets(st.integers(1, 400), min_size=1, max_size=4)))
    tiers = [Tier(Decimal(b), draw(decimals), draw(decimals)) for b in bounds]
    if draw(st.booleans()):
        tiers.append(Tier(None, draw(decimals), draw(decimals)))
    mode = draw(st.sampled_from(list(TierMode)))
    return PriceTable("p", "usd", model, tier_mode=mode, tiers=tuple(tiers))


@st.composite
def meters(draw: st.DrawFn) -> Meter:
    kind = draw(st.sampled_from(list(AggregationType)))
    bucket = None
    if kind is AggregationType.MAX and draw(st.booleans()):
        bucket = WindowSize.HOUR
    multiplier = Decimal(draw(st.sampled_from(["1", "2.5", "0.001", "3"])))
    return Meter("m", "use", kind, field="v", multiplier=multiplier, bucket_size=bucket)


@st.composite
def source_events(draw: st.DrawFn) -> list[SourceEvent]:
    count = draw(st.integers(0, 25))
    period_seconds = int((PERIOD_END - PERIOD_START).total_seconds())
    value = st.one_of(
        st.integers(-5, 40),
        st.decimals(min_value=-1, max_value=40, places=4).map(str),
    )
    events = []
    for i in range(count):
        second = draw(st.integers(0, period_seconds - 1))
        if draw(st.booleans()):
            second -= second % 3600  # on the hour: several events share a MAX bucket
        events.append(SourceEvent(f"e{i}", draw(value), PERIOD_START + timedelta(seconds=second)))
    return events


def to_event(source: SourceEvent) -> Event:
    return Event(
        id=source.id,
        tenant_id="t",
        environment_id="prod",
        event_name="use",
        timestamp=source.ts,
        properties={"v": source.value},
    )


def run(
    meter: Meter, price: PriceTable, free_units: Decimal, deliveries: list[SourceEvent]
) -> tuple[LineItemPeriodRating, list[tuple[str, Outcome, object]]]:
    state = LineItemPeriodRating(
        price, free_units, new_aggregate(meter.aggregation, meter.bucket_size)
    )
    rows = []
    for source in deliveries:
        event = to_event(source)
        delta = state.apply(
            event.id, event.timestamp, measure(meter, event, PERIOD_START, PERIOD_END)
        )
        rows.append((event.id, delta.outcome, delta))
    return state, rows


FREE_UNITS = st.decimals(min_value=0, max_value=300, places=2)


@settings(max_examples=400, deadline=None)
@given(
    meter=meters(),
    price=prices(),
    free_units=FREE_UNITS,
    events=source_events(),
    data=st.data(),
)
def test_rows_telescope_to_the_invoice_in_any_order_with_redeliveries(
    meter: Meter,
    price: PriceTable,
    free_units: Decimal,
    events: list[SourceEvent],
    data: st.DataObject,
) -> None:
    redelivered = data.draw(st.lists(st.sampled_from(events), max_size=10)) if events else []
    deliveries = data.draw(st.permutations(events + redelivered))

    state, rows = run(meter, price, free_units, deliveries)

    quantity = reference_quantity(meter, events)
    billable = max(Decimal(0), quantity - free_units)
    written = [delta for _, outcome, delta in rows if outcome is not Outcome.ALREADY_PROCESSED]
    assert sum((d.cost for d in written), Decimal(0)) == reference_rate(price, billable)
    assert sum((d.qty_free_applied for d in written), Decimal(0)) == min(quantity, free_units)
    assert sum((d.qty_billable for d in written), Decimal(0)) == billable
    assert state.quantity == quantity
    # exactly one row per distinct event; redeliveries write nothing
    assert sorted(
        event_id for event_id, outcome, _ in rows if outcome is not Outcome.ALREADY_PROCESSED
    ) == sorted(e.id for e in events)


@settings(max_examples=200, deadline=None)
@given(
    meter=meters(),
    price=prices(),
    free_units=FREE_UNITS,
    events=source_events(),
    data=st.data(),
)
def test_final_state_is_independent_of_arrival_order(
    meter: Meter,
    price: PriceTable,
    free_units: Decimal,
    events: list[SourceEvent],
    data: st.DataObject,
) -> None:
    first, _ = run(meter, price, free_units, events)
    second, _ = run(meter, price, free_units, data.draw(st.permutations(events)))
    assert (first.quantity, first.free_applied, first.billable, first.rated_amount) == (
        second.quantity,
        second.free_applied,
        second.billable,
        second.rated_amount,
    )


def test_tier_snapshot_is_billable_after_each_event_and_unit_cost_is_cost_per_unit() -> None:
    price = PriceTable(
        "p",
        "usd",
        BillingModel.TIERED,
        tier_mode=TierMode.SLAB,
        tiers=(Tier(Decimal(10), Decimal(1)), Tier(None, Decimal("0.5"))),
    )
    meter = Meter("m", "use", AggregationType.SUM, field="v")
    ts = PERIOD_START + timedelta(days=1)
    _, rows = run(meter, price, Decimal(5), [SourceEvent("a", 8, ts), SourceEvent("b", 12, ts)])
    first, second = rows[0][2], rows[1][2]
    # a: q=8, free 5, billable 3 -> cost 3
    assert (first.qty_free_applied, first.qty_billable, first.cost, first.tier_snapshot) == (
        5,
        3,
        3,
        3,
    )
    assert first.unit_cost == 1
    # b: q=20, billable 15 -> rate = 10 + 5 x 0.5 = 12.5, delta 9.5 over 12 units
    assert (second.qty_free_applied, second.qty_billable, second.cost, second.tier_snapshot) == (
        0,
        12,
        Decimal("9.5"),
        15,
    )
    assert second.unit_cost == Decimal("0.791666666666667")


def test_free_units_larger_than_usage_leave_nothing_billable() -> None:
    price = PriceTable("p", "usd", BillingModel.FLAT_FEE, amount=Decimal(1))
    meter = Meter("m", "use", AggregationType.COUNT)
    ts = PERIOD_START
    state, rows = run(meter, price, Decimal(100), [SourceEvent(f"e{i}", 0, ts) for i in range(3)])
    assert [d.qty_free_applied for _, _, d in rows] == [1, 1, 1]
    assert all(d.cost == 0 and d.qty_billable == 0 for _, _, d in rows)
    assert state.billable == 0 and state.free_applied == 3


def test_volume_tier_crossing_gives_a_negative_delta_that_still_sums_to_the_invoice() -> None:
    price = PriceTable(
        "p",
        "usd",
        BillingModel.TIERED,
        tier_mode=TierMode.VOLUME,
        tiers=(Tier(Decimal(10), Decimal(2)), Tier(None, Decimal(1))),
    )
    meter = Meter("m", "use", AggregationType.SUM, field="v")
    _, rows = run(
        meter,
        price,
        Decimal(0),
        [SourceEvent("a", 10, PERIOD_START), SourceEvent("b", 1, PERIOD_START)],
    )
    costs = [d.cost for _, _, d in rows]
    assert costs == [Decimal(20), Decimal(-9)]  # 10 x 2, then 11 x 1 = 11
    assert sum(costs) == 11


def test_latest_with_out_of_order_timestamps_keeps_the_newest_value() -> None:
    price = PriceTable("p", "usd", BillingModel.FLAT_FEE, amount=Decimal(1))
    meter = Meter("m", "use", AggregationType.LATEST, field="v")
    late = PERIOD_START + timedelta(days=3)
    early = PERIOD_START + timedelta(days=1)
    state, rows = run(
        meter, price, Decimal(0), [SourceEvent("new", 7, late), SourceEvent("old", 99, early)]
    )
    assert state.quantity == 7
    assert [d.cost for _, _, d in rows] == [Decimal(7), Decimal(0)]


def test_count_unique_repeats_write_a_zero_row_and_redelivery_writes_none() -> None:
    price = PriceTable("p", "usd", BillingModel.FLAT_FEE, amount=Decimal(3))
    meter = Meter("m", "use", AggregationType.COUNT_UNIQUE, field="v")
    ts = PERIOD_START
    deliveries = [
        SourceEvent("a", "x", ts),
        SourceEvent("b", "x", ts),
        SourceEvent("c", "y", ts),
        SourceEvent("a", "x", ts),
    ]
    state, rows = run(meter, price, Decimal(0), deliveries)
    assert [outcome for _, outcome, _ in rows] == [
        Outcome.COUNTED,
        Outcome.REPEATED_VALUE,
        Outcome.COUNTED,
        Outcome.ALREADY_PROCESSED,
    ]
    assert [d.qty_total for _, _, d in rows[:3]] == [1, 0, 1]
    assert state.quantity == 2 and state.rated_amount == 6


def test_hashes_remembered_from_the_store_make_a_redelivery_write_nothing() -> None:
    price = PriceTable("p", "usd", BillingModel.FLAT_FEE, amount=Decimal(1))
    meter = Meter("m", "use", AggregationType.COUNT_UNIQUE, field="v")
    event = to_event(SourceEvent("a", "x", PERIOD_START))
    stored_hash = hashlib.sha256("\x1f".join(["t", "prod", "m", "x"]).encode()).hexdigest()
    state = LineItemPeriodRating(price, Decimal(0), new_aggregate(AggregationType.COUNT_UNIQUE))
    state.remember({stored_hash: "a"})
    delta = state.apply("a", event.timestamp, measure(meter, event, PERIOD_START, PERIOD_END))
    assert delta.outcome is Outcome.ALREADY_PROCESSED
    other = state.apply("b", event.timestamp, measure(meter, event, PERIOD_START, PERIOD_END))
    assert other.outcome is Outcome.REPEATED_VALUE

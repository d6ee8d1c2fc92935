"""Events whose priced values cannot be stored are refused without a trace (issue 19).

`Decimal(38, 15)` holds magnitudes below 1e23. An event whose row, or the period
total it would make, reaches that is refused (`ValueOutOfRange`) and the state
is left exactly as if the event had never arrived, so the pipeline can
dead-letter it and carry on. Expected values come from the exact reference
pricing in `tests/reference.py`, not from the rater.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, localcontext
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.processed_rows import processed_events, summarize
from tests.reference import q15, reference_rate
from worker.domain.aggregates import new_aggregate
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.domain.engine import UsageRater
from worker.domain.events import Event
from worker.domain.metering import AggregationType, Meter, measure
from worker.domain.money import exact
from worker.domain.pricing import BillingModel, PriceTable, Tier, TierMode
from worker.domain.rating import LineItemPeriodRating, RatedDelta, ValueOutOfRange

LIMIT = Decimal(10) ** 23
PERIOD_START = datetime(2026, 3, 1, tzinfo=UTC)
PERIOD_END = datetime(2026, 4, 1, tzinfo=UTC)
METER = Meter("m", "use", AggregationType.SUM, field="v")

#: 15 decimals on large quantities: rows above 1e13 need more than the 28 digits
#: of Python's default decimal context to stay exact.
amounts = st.sampled_from(
    [Decimal("0.001"), Decimal("0.123456789012345"), Decimal("1000"), Decimal("1000000")]
)


@st.composite
def prices(draw: st.DrawFn) -> PriceTable:
    if draw(st.booleans()):
        return PriceTable("p", "usd", BillingModel.FLAT_FEE, amount=draw(amounts))
    tiers = (
        Tier(Decimal(10**16), draw(amounts), draw(amounts)),
        Tier(None, draw(amounts), draw(amounts)),
    )
    mode = draw(st.sampled_from(list(TierMode)))
    return PriceTable("p", "usd", BillingModel.TIERED, tier_mode=mode, tiers=tiers)


values = st.one_of(st.integers(0, 1000), st.integers(10**16, 10**18 - 1))


def event(index: int, value: int) -> Event:
    return Event(
        id=f"e{index}",
        tenant_id="t",
        environment_id="prod",
        event_name="use",
        timestamp=PERIOD_START + timedelta(minutes=index),
        properties={"v": value},
    )


@exact
def apply_all(
    price: PriceTable, free_units: Decimal, stream: list[tuple[int, int]]
) -> tuple[LineItemPeriodRating, list[tuple[int, RatedDelta | None]]]:
    state = LineItemPeriodRating(price, free_units, new_aggregate(AggregationType.SUM))
    results: list[tuple[int, RatedDelta | None]] = []
    for index, value in stream:
        source = event(index, value)
        measurement = measure(METER, source, PERIOD_START, PERIOD_END)
        try:
            results.append((index, state.apply(source.id, source.timestamp, measurement)))
        except ValueOutOfRange:
            results.append((index, None))
    return state, results


def must_refuse(price: PriceTable, free: Decimal, before: Decimal, value: int) -> bool:
    """Whether the reference row of `value` after `before` units breaks the stored range."""
    after = before + value
    billable_before = max(Decimal(0), before - free)
    billable = max(Decimal(0), after - free)
    rated = reference_rate(price, billable)
    cost = rated - reference_rate(price, billable_before)
    moved = billable - billable_before
    unit_cost = q15(Fraction(cost) / Fraction(moved)) if moved else Decimal(0)
    return after >= LIMIT or abs(rated) >= LIMIT or abs(unit_cost) >= LIMIT


@settings(max_examples=300, deadline=None)
@given(
    price=prices(),
    free_units=st.sampled_from([Decimal(0), Decimal(100), Decimal(10**17)]),
    raw=st.lists(values, max_size=12),
)
def test_refused_events_leave_no_trace_and_are_refused_only_when_they_must_be(
    price: PriceTable, free_units: Decimal, raw: list[int]
) -> None:
    stream = list(enumerate(raw))
    state, results = apply_all(price, free_units, stream)

    pairs = zip(stream, results, strict=True)
    accepted = [(index, value) for (index, value), (_, delta) in pairs if delta is not None]
    again, replayed = apply_all(price, free_units, accepted)
    assert [r for r in results if r[1] is not None] == replayed
    assert (state.quantity, state.rated_amount) == (again.quantity, again.rated_amount)

    total = Decimal(0)
    for (_, value), (_, delta) in zip(stream, results, strict=True):
        assert (delta is None) == must_refuse(price, free_units, total, value)
        if delta is not None:
            total += value
            assert all(abs(field) < LIMIT for field in delta[1:])
    assert state.quantity == total
    invoice = reference_rate(price, max(Decimal(0), total - free_units))
    assert state.rated_amount == invoice
    with localcontext(Context(prec=100)):  # the test's own sum: exact too
        assert sum((d.cost for _, d in replayed if d is not None), Decimal(0)) == invoice


def flat_fee_rater(amount: str) -> UsageRater:
    """A rater for one customer with one SUM line item at ``amount`` per call."""
    catalog = {
        "tenant_id": "t1",
        "environment_id": "prod",
        "customers": [{"id": "c1", "external_id": "acme"}],
        "meters": [
            {"id": "m", "event_name": "api", "aggregation": {"type": "SUM", "field": "calls"}}
        ],
        "prices": [
            {"id": "p", "meter_id": "m", "currency": "usd", "billing_model": "FLAT_FEE",
             "amount": amount}
        ],
        "subscriptions": [
            {"id": "s1", "customer_id": "c1", "status": "active",
             "start_date": "2026-01-01T00:00:00Z", "billing_anchor": "2026-01-01T00:00:00Z",
             "billing_period": "MONTHLY",
             "line_items": [{"id": "li", "price_id": "p", "meter_id": "m"}]}
        ],
    }  # fmt: skip
    return UsageRater(CatalogIndex(parse_documents(catalog)))


def api_calls(calls: list[int]) -> list[Event]:
    return [
        Event(
            id=f"e{i}",
            tenant_id="t1",
            environment_id="prod",
            event_name="api",
            timestamp=datetime(2026, 3, 2, i, tzinfo=UTC),
            external_customer_id="acme",
            properties={"calls": value},
        )
        for i, value in enumerate(calls)
    ]


RATED_AT = datetime(2026, 3, 3, tzinfo=UTC)


def test_the_rater_lists_refused_rows_and_rates_the_rest() -> None:
    rater = flat_fee_rater("1000000")
    rated = rater.rate(rater.resolve(api_calls([5, 9 * 10**17, 7])), RATED_AT)
    rows = rated.rows
    assert [(e.id, cost) for e, cost in zip(rows.events, rows.cost, strict=True)] == [
        ("e0", Decimal(5_000_000)),
        ("e2", Decimal(7_000_000)),
    ]
    assert [(row.event.id, row.key.line_item_id) for row in rated.refused] == [("e1", "li")]
    assert "line item li" in rated.refused[0].detail


def test_rows_above_1e13_still_sum_exactly_to_the_invoice() -> None:
    """The rater is exact without the caller setting a decimal context."""
    rater = flat_fee_rater("0.123456789012345")
    calls = [10**14 + 1, 3, 10**15 + 7]
    rows = processed_events(rater.rate(rater.resolve(api_calls(calls)), RATED_AT).rows)
    price = PriceTable("p", "usd", BillingModel.FLAT_FEE, amount=Decimal("0.123456789012345"))
    # 1100000000000011 x 0.123456789012345 = 135802467913580.858024679135795 (15 places)
    assert reference_rate(price, Decimal(sum(calls))) == Decimal("135802467913580.858024679135795")
    [line] = summarize(rows)
    assert line.cost == Decimal("135802467913580.858024679135795")

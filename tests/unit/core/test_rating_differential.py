"""The core's rating of one (line item, period) against ``LineItemPeriodRating``.

Random prices (FLAT_FEE, PACKAGE up and down, TIERED VOLUME and SLAB with
bounded and unbounded last tiers, negative amounts), every aggregation (MAX
with and without buckets), free units, loaded snapshots and remembered hash
owners, then a stream of events with repeated ids and hashes (redeliveries,
repeated COUNT_UNIQUE values), out of order, with quantities from zero to the
edge of the stored range. Every delta of every event, and which events are
refused (``value_out_of_range``), must be equal.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker import _core
from worker.core_rating import price_tuple, snapshot_tuple
from worker.domain.aggregates import AggregateSnapshot, new_aggregate
from worker.domain.metering import AggregationType, Measurement, WindowSize
from worker.domain.money import exact, format_decimal, quantize
from worker.domain.pricing import BillingModel, PackageRounding, PriceTable, Tier, TierMode
from worker.domain.rating import LineItemPeriodRating, ValueOutOfRange

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _text(value: Decimal) -> str:
    return format_decimal(quantize(value))


_START = datetime(2026, 3, 1, tzinfo=UTC)


def _decimals(low: str, high: str, places: int = 15) -> st.SearchStrategy[Decimal]:
    return st.decimals(Decimal(low), Decimal(high), places=places)


_AMOUNTS = st.one_of(
    _decimals("-5", "5", 3),
    _decimals("-999999999999", "999999999999"),
    st.sampled_from([Decimal(0), Decimal("999999999999.999999999999999"), Decimal("-0.5")]),
)
_QUANTITIES = st.one_of(
    _decimals("0", "100", 2),
    _decimals("0", "999999999999999999"),
    st.sampled_from(
        [Decimal(0), Decimal(1), Decimal("0.000000000000001"), Decimal("999999999999999999.5")]
    ),
)


@st.composite
def prices(draw: st.DrawFn) -> PriceTable:
    model = draw(st.sampled_from(list(BillingModel)))
    if model is BillingModel.FLAT_FEE:
        return PriceTable("p", "usd", model, amount=draw(_AMOUNTS))
    if model is BillingModel.PACKAGE:
        return PriceTable(
            "p",
            "usd",
            model,
            amount=draw(_AMOUNTS),
            package_size=draw(_QUANTITIES.filter(lambda q: q > 0)),
            package_rounding=draw(st.sampled_from(list(PackageRounding))),
        )
    bounds = sorted(set(draw(st.lists(_QUANTITIES.filter(lambda q: q > 0), max_size=3))))
    ups: list[Decimal | None] = list(bounds)
    if not ups or draw(st.booleans()):
        ups.append(None)
    tiers = tuple(
        Tier(up_to=up, unit_amount=draw(_AMOUNTS), flat_amount=draw(_AMOUNTS)) for up in ups
    )
    return PriceTable(
        "p", "usd", model, tier_mode=draw(st.sampled_from(list(TierMode))), tiers=tiers
    )


_MOMENTS = st.integers(0, 40 * 86_400 * 10**6).map(lambda us: _START + timedelta(microseconds=us))


@st.composite
def snapshots(draw: st.DrawFn) -> AggregateSnapshot:
    if draw(st.booleans()):
        return AggregateSnapshot()
    big = draw(st.booleans())
    near_limit = st.sampled_from(
        [Decimal("99999999999999999999999"), Decimal("99999999999990000000000.000000000000001")]
    )
    total = draw(
        st.one_of(_decimals("0", "99999999999999999999999"), near_limit) if big else _QUANTITIES
    )
    latest = None
    if draw(st.booleans()):
        latest = (draw(_MOMENTS), draw(st.sampled_from(["a", "b", "é"])), draw(_QUANTITIES))
    buckets = {
        datetime(2026, 3, day, tzinfo=UTC): draw(_QUANTITIES)
        for day in draw(st.lists(st.integers(1, 31), max_size=3))
    }
    return AggregateSnapshot(
        total=total,
        count=draw(st.integers(0, 5)),
        maximum=draw(_QUANTITIES),
        latest=latest,
        bucket_maxima=buckets,
    )


@exact
def reference(
    price: PriceTable,
    kind: AggregationType,
    bucket: WindowSize | None,
    free_units: Decimal,
    snapshot: AggregateSnapshot,
    known: dict[str, str],
    events: list[tuple[str, datetime, Decimal, str]],
) -> list[tuple[Any, ...] | None]:
    state = LineItemPeriodRating(price, free_units, new_aggregate(kind, bucket, snapshot), known)
    out: list[tuple[Any, ...] | None] = []
    for event_id, ts, quantity, unique_hash in events:
        try:
            delta = state.apply(event_id, ts, Measurement(quantity, unique_hash))
        except ValueOutOfRange:
            out.append(None)
            continue
        out.append((delta.outcome.value, *delta[1:]))
    return out


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_core_rates_a_period_exactly_like_the_reference(data: st.DataObject) -> None:
    price = data.draw(prices())
    kind = data.draw(st.sampled_from(list(AggregationType)))
    bucket = None
    if kind is AggregationType.MAX:
        bucket = data.draw(st.one_of(st.none(), st.sampled_from(list(WindowSize))))
    free_units = data.draw(st.one_of(st.just(Decimal(0)), _QUANTITIES))
    snapshot = data.draw(snapshots())
    hashes = st.sampled_from([f"h{number}" for number in range(8)])
    ids = st.sampled_from(["a", "b", "c", "é"])
    known = data.draw(st.dictionaries(hashes, ids, max_size=2))
    events = data.draw(st.lists(st.tuples(ids, _MOMENTS, _QUANTITIES, hashes), max_size=12))
    want = reference(price, kind, bucket, free_units, snapshot, known, events)
    got = _core.rate_period(
        price_tuple(price),
        kind.value,
        None if bucket is None else bucket.value,
        _text(free_units),
        snapshot_tuple(snapshot),
        list(known.items()),
        [(e, (ts - _EPOCH) // timedelta(microseconds=1), _text(q), h) for e, ts, q, h in events],
    )
    assert len(got) == len(want)
    for got_delta, want_delta in zip(got, want, strict=True):
        if want_delta is None or got_delta is None:
            assert got_delta == want_delta
            continue
        assert got_delta[0] == want_delta[0]
        assert [Decimal(v) for v in got_delta[1:]] == list(want_delta[1:])

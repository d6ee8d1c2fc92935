"""``CyclePeriods``: a period computed once per cycle class is every class
member's ``period_at`` answer, clamped to its own start date."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worker.core_catalog import CyclePeriods, add_periods
from worker.domain.catalog_index import SubscriptionTerms
from worker.domain.periods import BillingCycle, BillingPeriodUnit
from worker.store.arrow_columns import epoch_us

_ANCHOR = datetime(2026, 1, 31, 5, 0, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Recorder:
    """Records the periods added per subscription (what the core would hold)."""

    def __init__(self) -> None:
        self.periods: dict[int, set[tuple[int, int]]] = {}

    def add_periods(self, subscription: int, periods: list[tuple[int, int]]) -> None:
        self.periods.setdefault(subscription, set()).update(periods)


def _terms(number: int, start: datetime, zone: str = "Europe/Berlin") -> SubscriptionTerms:
    cycle = BillingCycle(
        anchor=_ANCHOR,
        unit=BillingPeriodUnit.MONTHLY,
        count=1,
        timezone=zone,
        start_date=start,
    )
    return SubscriptionTerms(f"s{number}", "c", "active", start, None, None, cycle)


def _expected(terms: SubscriptionTerms, at: datetime) -> tuple[int, int] | None:
    period = terms.cycle.period_at(at)
    return None if period is None else (epoch_us(period.start), epoch_us(period.end))


def _genuine(terms: SubscriptionTerms, periods: set[tuple[int, int]]) -> bool:
    """Each period is what ``period_at`` answers for the subscription at its start."""
    return all(
        _expected(terms, _EPOCH + timedelta(microseconds=start)) == (start, end)
        for start, end in periods
    )


def test_a_period_goes_to_every_class_member_as_its_own_period_at() -> None:
    march = datetime(2026, 3, 10, tzinfo=UTC)
    starts = [
        datetime(2026, 1, 1, tzinfo=UTC),  # long before: the whole period
        datetime(2026, 3, 5, tzinfo=UTC),  # inside the period: clamped
        datetime(2026, 4, 20, tzinfo=UTC),  # after the period: only the next one
    ]
    subscriptions = [_terms(n, start) for n, start in enumerate(starts)]
    subscriptions.append(_terms(3, starts[0], zone="UTC"))  # another class
    core = _Recorder()
    add_periods(core, CyclePeriods(subscriptions), [(0, epoch_us(march))])
    assert set(core.periods) == {0, 1, 2}
    assert all(_genuine(subscriptions[n], core.periods[n]) for n in range(3))
    assert _expected(subscriptions[0], march) in core.periods[0]
    clamped = _expected(subscriptions[1], march)
    assert clamped is not None and clamped in core.periods[1]
    assert clamped[0] == epoch_us(starts[1])  # the clamp really happened
    assert _expected(subscriptions[2], march) is None
    # The period after March's went to every member (clamped for the third).
    april = datetime(2026, 4, 25, tzinfo=UTC)
    assert all(_expected(subscriptions[n], april) in core.periods[n] for n in range(3))
    assert len(core.periods[0]) == len(core.periods[1]) == 2
    assert len(core.periods[2]) == 1


def test_a_clamped_period_is_not_shared() -> None:
    # The first member's period starts at its start date: b_k is unknown.
    starts = [datetime(2026, 3, 5, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)]
    subscriptions = [_terms(n, start) for n, start in enumerate(starts)]
    periods = CyclePeriods(subscriptions)
    core = _Recorder()
    at = datetime(2026, 3, 10, tzinfo=UTC)
    add_periods(core, periods, [(0, epoch_us(at))])
    assert core.periods == {0: {_expected(subscriptions[0], at)}}
    # Asked for by the other member, the unclamped period is computed and shared.
    add_periods(core, periods, [(1, epoch_us(at)), (1, epoch_us(at + timedelta(days=40)))])
    later = at + timedelta(days=40)
    assert {_expected(subscriptions[1], at), _expected(subscriptions[1], later)} <= core.periods[1]
    assert _expected(subscriptions[0], later) in core.periods[0]
    assert all(_genuine(terms, core.periods[n]) for n, terms in enumerate(subscriptions))

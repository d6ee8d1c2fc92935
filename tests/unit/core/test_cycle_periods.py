"""``CyclePeriods``: a period computed once per cycle class is every class
member's ``period_at`` answer, clamped to its own start date."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worker.core_catalog import CyclePeriods, add_periods, micros
from worker.domain.catalog_index import SubscriptionTerms
from worker.domain.periods import BillingCycle, BillingPeriodUnit

_ANCHOR = datetime(2026, 1, 31, 5, 0, tzinfo=UTC)


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
    return None if period is None else (micros(period.start), micros(period.end))


def test_a_period_goes_to_every_class_member_as_its_own_period_at() -> None:
    march = datetime(2026, 3, 10, tzinfo=UTC)
    starts = [
        datetime(2026, 1, 1, tzinfo=UTC),  # long before: the whole period
        datetime(2026, 3, 5, tzinfo=UTC),  # inside the period: clamped
        datetime(2026, 4, 20, tzinfo=UTC),  # after the period: none
    ]
    subscriptions = [_terms(n, start) for n, start in enumerate(starts)]
    subscriptions.append(_terms(3, starts[0], zone="UTC"))  # another class
    core = _Recorder()
    add_periods(core, CyclePeriods(subscriptions), [(0, micros(march))])
    assert core.periods == {
        0: {_expected(subscriptions[0], march)},
        1: {_expected(subscriptions[1], march)},
    }
    assert _expected(subscriptions[2], march) is None
    clamped = core.periods[1].pop()
    assert clamped[0] == micros(starts[1])  # the clamp really happened


def test_a_clamped_period_is_not_shared() -> None:
    # The first member's period starts at its start date: b_k is unknown.
    starts = [datetime(2026, 3, 5, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)]
    subscriptions = [_terms(n, start) for n, start in enumerate(starts)]
    periods = CyclePeriods(subscriptions)
    core = _Recorder()
    at = datetime(2026, 3, 10, tzinfo=UTC)
    add_periods(core, periods, [(0, micros(at))])
    assert core.periods == {0: {_expected(subscriptions[0], at)}}
    # Asked for by the other member, the unclamped period is computed and shared.
    add_periods(core, periods, [(1, micros(at)), (1, micros(at + timedelta(days=40)))])
    later = at + timedelta(days=40)
    assert core.periods[1] == {_expected(subscriptions[1], at), _expected(subscriptions[1], later)}
    assert _expected(subscriptions[0], later) in core.periods[0]

"""The catalog handed to the compiled core, and routing + metering there.

:class:`CoreRouting` builds the core's flat tables from a validated
:class:`~worker.domain.catalog_index.CatalogIndex` once per load: customers,
subscriptions (normalised status, start/end/cancellation in epoch µs), meters
(event name, aggregation, field, multiplier, canonical filter values) and line
items (active window, subscription and meter indices). Billing periods stay
Python's (:mod:`worker.domain.periods`: IANA zones, DST, month-end clamping):
each subscription gets the periods around "now" precomputed, and a batch whose
events fall outside them is answered after Python adds the missing periods
(once per period, not per event).

:meth:`CoreRouting.resolve` then decodes, routes and measures a whole batch in
the core: the equivalent of :func:`~worker.domain.validation.decode_event`,
:meth:`CatalogIndex.resolve` and :func:`~worker.domain.metering.measure` (a
differential property test holds them together). Rating stays in Python for
now (docs/core.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

from worker import _core
from worker.core_decode import Message, batch_arguments
from worker.domain.catalog_index import CatalogIndex, LineItemBinding, SubscriptionTerms
from worker.domain.metering import Meter
from worker.domain.validation import EventLimits
from worker.store.arrow_columns import epoch_us

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
DEFAULT_PERIODS_BEFORE = timedelta(days=7)
"""Periods precomputed before "now": late events within it need no Python."""
DEFAULT_PERIODS_AFTER = timedelta(days=2)
"""Periods precomputed after "now" (clock skew of producers)."""
_MAX_PERIOD_ROUNDS = 3


@dataclass(frozen=True, slots=True)
class CoreMatch:
    """One (event, line item) routed and measured by the core (``PendingRow`` fields)."""

    row: int
    """Index of the event among the accepted messages."""
    binding: LineItemBinding
    period_id: int
    period_start_us: int
    period_end_us: int
    quantity: Decimal
    unique_hash: str
    field_missing: bool


@dataclass(frozen=True, slots=True)
class CoreResolved:
    """One batch decoded, routed and measured by the core.

    ``accepted``/``rejected`` are as in :class:`~worker.core_decode.CoreDecoded`;
    ``customers`` holds per accepted event its catalog customer id (``""`` when
    unknown); ``unresolved`` is ``(row, reason)``; ``matches`` are in row order,
    and within a row in the reference's order.
    """

    accepted: list[int]
    rejected: list[tuple[int, str]]
    customers: list[str]
    unresolved: list[tuple[int, str]]
    matches: list[CoreMatch]

    @property
    def missing_fields(self) -> int:
        """``ResolvedBatch.missing_fields``: matches whose field was missing or unusable."""
        return sum(match.field_missing for match in self.matches)


class CoreRouting:
    """The core's copy of one catalog index. Use from one thread (the partition owner)."""

    def __init__(
        self,
        index: CatalogIndex,
        now: datetime,
        *,
        before: timedelta = DEFAULT_PERIODS_BEFORE,
        after: timedelta = DEFAULT_PERIODS_AFTER,
    ) -> None:
        self._tables = catalog_tables(index)
        self._periods = CyclePeriods(self._tables.subscriptions)
        self._bindings = self._tables.bindings
        self._core = _core.CoreCatalog(self._tables.arguments())
        self._tables.add_periods_around(self._core, now - before, now + after)

    def resolve(
        self, messages: Sequence[Message], now: datetime, limits: EventLimits
    ) -> CoreResolved:
        """Decode, route and measure ``messages`` in the core (the GIL released meanwhile).

        ``now`` is the timestamp of messages without one (as in decoding).
        """
        arguments = batch_arguments(messages, now, limits)
        for _ in range(_MAX_PERIOD_ROUNDS):
            accepted, rejected, need, customers, unresolved, matches = self._core.resolve_batch(
                *arguments
            )
            if not need:
                break
            add_periods(self._core, self._periods, need)
        else:  # pragma: no cover - each round adds every period the last one asked for
            raise RuntimeError("the core kept asking for billing periods")
        bindings = self._bindings
        return CoreResolved(
            accepted,
            rejected,
            customers,
            unresolved,
            [
                CoreMatch(
                    row,
                    bindings[line_item],
                    period_id,
                    start,
                    end,
                    Decimal(quantity),
                    unique_hash,
                    missing,
                )
                for row, line_item, period_id, start, end, quantity, unique_hash, missing in matches
            ],
        )


def _within(periods: list[tuple[int, int]], instant: int) -> bool:
    return any(start <= instant < end for start, end in periods)


class PeriodSink(Protocol):
    """What takes a subscription's periods (the core's ``add_periods``)."""

    def add_periods(self, subscription: int, periods: list[tuple[int, int]]) -> None: ...


def add_periods(
    core: PeriodSink,
    periods: CyclePeriods,
    need: list[tuple[int, int]],
) -> None:
    """Add the periods the core asked for: (subscription, timestamp µs) each.

    Requests are taken in (subscription, time) order; see
    :meth:`CyclePeriods.add_at` for what one request adds."""
    for number, timestamp_us in sorted(set(need)):
        periods.add_at(core, number, timestamp_us)


def needed_periods(
    periods: CyclePeriods, need: list[tuple[int, int]]
) -> list[tuple[int, int, int]]:
    """What :func:`add_periods` would add for ``need``, as (subscription, start
    µs, end µs) in order: the answer to ``CoreEngine.prepare``'s
    ``periods_for``, which adds them itself and routes again."""
    found = _CollectedPeriods()
    add_periods(found, periods, need)
    return found.periods


class _CollectedPeriods:
    """A :class:`PeriodSink` that keeps what it is given, in order."""

    def __init__(self) -> None:
        self.periods: list[tuple[int, int, int]] = []

    def add_periods(self, subscription: int, periods: list[tuple[int, int]]) -> None:
        self.periods.extend((subscription, start, end) for start, end in periods)


class CyclePeriods:
    """The billing periods of a catalog's subscriptions, computed once per cycle class.

    Subscriptions whose cycles have the same anchor, unit, count and time
    zone share their boundaries ``b_k`` (``BillingCycle.boundary`` ignores
    ``start_date``); each one's period is ``[max(b_k, start_date), b_k+1)``
    and none ends at or before its ``start_date``, exactly as ``period_at``.
    So when one subscription needs a period, ``period_at`` runs once and the
    period goes to every subscription of its class: their later events in it
    need no Python and no new routing round.
    """

    def __init__(self, subscriptions: Sequence[SubscriptionTerms]) -> None:
        self._subscriptions = subscriptions
        self._starts = [epoch_us(terms.cycle.start_date) for terms in subscriptions]
        classes: dict[tuple[object, ...], tuple[list[int], list[tuple[int, int]]]] = {}
        self._class_of: list[tuple[list[int], list[tuple[int, int]]]] = []
        for number, terms in enumerate(subscriptions):
            cycle = terms.cycle
            key = (cycle.anchor, cycle.unit, cycle.count, cycle.timezone)
            members, shared = classes.setdefault(key, ([], []))
            members.append(number)
            self._class_of.append((members, shared))
        # Per class: (its members, the boundary pairs [b_k, b_k+1) already shared).

    def add_at(self, core: PeriodSink, number: int, timestamp_us: int) -> None:
        """Add the period of subscription ``number`` containing ``timestamp_us``
        (none before its start date) and, when that period is not clamped by
        its start date, the same boundaries and the period after them to every
        subscription of its class (events move forward in time: the class
        crosses into the next period without a routing round)."""
        members, shared = self._class_of[number]
        if _within(shared, timestamp_us):
            return  # added already (or the instant is before its start date)
        period = self._add_own(core, number, timestamp_us)
        if period is None or period[0] <= self._starts[number]:
            return  # no period, or b_k unknown (clamped to the start date)
        self._share(core, members, shared, period)
        try:
            following = self._add_own(core, number, period[1])
        except OverflowError:  # the end of datetime's range: nothing after it
            return
        if following is not None and not _within(shared, following[0]):
            self._share(core, members, shared, following)

    def _share(
        self,
        core: PeriodSink,
        members: list[int],
        shared: list[tuple[int, int]],
        period: tuple[int, int],
    ) -> None:
        """Add the unclamped ``period`` to every member, clamped to its start date."""
        shared.append(period)
        start, end = period
        starts = self._starts
        for member in members:
            if end > starts[member]:
                core.add_periods(member, [(max(start, starts[member]), end)])

    def _add_own(self, core: PeriodSink, number: int, timestamp_us: int) -> tuple[int, int] | None:
        cycle = self._subscriptions[number].cycle
        period = cycle.period_at(_EPOCH + timestamp_us * _MICROSECOND)
        if period is None:
            return None
        found = epoch_us(period.start), epoch_us(period.end)
        core.add_periods(number, [found])
        return found


@dataclass(frozen=True, slots=True)
class CatalogTables:
    """The core's flat tables of one catalog index, with the Python objects they index."""

    customers: list[tuple[str, str, str, str]]
    subscription_rows: list[tuple[str, str, str, str, int, int | None, int | None]]
    meter_rows: list[tuple[str, str, str, str, str, list[tuple[str, list[str]]]]]
    line_item_rows: list[tuple[str, int, int, int | None, int]]
    subscriptions: list[SubscriptionTerms]
    """Indexed like ``subscription_rows``: whose periods Python computes."""
    bindings: list[LineItemBinding]
    """Indexed like ``line_item_rows``."""

    def arguments(
        self,
    ) -> tuple[
        list[tuple[str, str, str, str]],
        list[tuple[str, str, str, str, int, int | None, int | None]],
        list[tuple[str, str, str, str, str, list[tuple[str, list[str]]]]],
        list[tuple[str, int, int, int | None, int]],
    ]:
        return self.customers, self.subscription_rows, self.meter_rows, self.line_item_rows

    def add_periods_around(
        self, core: _core.CoreCatalog | _core.CoreEngine, first: datetime, last: datetime
    ) -> None:
        """Precompute every subscription's periods overlapping ``[first, last]``."""
        for number, terms in enumerate(self.subscriptions):
            core.add_periods(number, _periods_between(terms, first, last))


def catalog_tables(index: CatalogIndex) -> CatalogTables:
    """Flatten ``index`` into the core's tables (once per catalog load)."""
    tables = index.routing_tables()
    customers = [(t, e, c, "") for t, e, c in sorted(tables.customers)]
    customers += [(t, e, c, x) for (t, e, x), c in tables.external_ids.items()]
    subscriptions: list[SubscriptionTerms] = []
    subscription_rows = []
    subscription_index: dict[int, int] = {}
    for (tenant, environment, _), terms_list in tables.subscriptions.items():
        for terms in terms_list:
            subscription_index[id(terms)] = len(subscriptions)
            subscriptions.append(terms)
            subscription_rows.append(_subscription_row(tenant, environment, terms))
    meters: list[Meter] = []
    meter_index: dict[int, int] = {}
    bindings: list[LineItemBinding] = []
    line_items = []
    for routed in tables.bindings.values():
        for binding in routed:
            meter = binding.meter
            if id(meter) not in meter_index:
                meter_index[id(meter)] = len(meters)
                meters.append(meter)
            bindings.append(binding)
            line_items.append(
                (
                    binding.line_item_id,
                    subscription_index[id(binding.subscription)],
                    epoch_us(binding.start_date),
                    None if binding.end_date is None else epoch_us(binding.end_date),
                    meter_index[id(meter)],
                )
            )
    return CatalogTables(
        customers,
        subscription_rows,
        [_meter_row(meter) for meter in meters],
        line_items,
        subscriptions,
        bindings,
    )


def _subscription_row(
    tenant: str, environment: str, terms: SubscriptionTerms
) -> tuple[str, str, str, str, int, int | None, int | None]:
    return (
        tenant,
        environment,
        terms.customer_id,
        terms.status,
        epoch_us(terms.start_date),
        None if terms.end_date is None else epoch_us(terms.end_date),
        None if terms.cancelled_at is None else epoch_us(terms.cancelled_at),
    )


def _meter_row(meter: Meter) -> tuple[str, str, str, str, str, list[tuple[str, list[str]]]]:
    return (
        meter.id,
        meter.event_name,
        meter.aggregation.value,
        meter.field,
        str(meter.multiplier),
        [(f.key, sorted(f.values)) for f in meter.filters],
    )


def _periods_between(
    terms: SubscriptionTerms, first: datetime, last: datetime
) -> list[tuple[int, int]]:
    """The periods of ``terms`` that overlap ``[first, last]``."""
    cycle = terms.cycle
    periods: list[tuple[int, int]] = []
    at = max(first, cycle.start_date)
    try:
        while at <= last:
            period = cycle.period_at(at)
            if period is None:  # pragma: no cover - at >= start_date
                break
            periods.append((epoch_us(period.start), epoch_us(period.end)))
            at = period.end
    except OverflowError:
        pass  # boundaries beyond year 9999: such events are asked for one by one
    return periods

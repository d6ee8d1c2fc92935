"""Incremental rating of one (line item, period): the core invariant (DESIGN.md §4).

For aggregate state ``A`` and free units ``F``::

    free(A) = min(q(A), F)          billable(A) = max(0, q(A) - F)
    row.qty_free_applied = free(A') - free(A)
    row.qty_billable     = billable(A') - billable(A)
    row.cost             = rate(billable(A')) - rate(billable(A))
    row.tier_snapshot    = billable(A')

so the rows of a period telescope to the invoice whatever the arrival order:
``sum(cost) == rate(billable(final))`` and ``sum(qty_free_applied) == min(q, F)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import NamedTuple

from worker.domain.aggregates import Aggregate
from worker.domain.metering import Measurement
from worker.domain.money import STORED_LIMIT, ZERO, div, quantize
from worker.domain.pricing import PriceTable


class Outcome(StrEnum):
    """What the dedup check decided for one (event, line item)."""

    COUNTED = "counted"
    REPEATED_VALUE = "repeated_value"
    """COUNT_UNIQUE value already counted by another event: a zero row is written."""
    ALREADY_PROCESSED = "already_processed"
    """The same event was already rated for this line item and period: no row."""


VALUE_OUT_OF_RANGE = "value_out_of_range"
"""Dead-letter reason of :class:`ValueOutOfRange`: the event is stored raw but
not priced for that line item; retrying would fail the same way, so it never
blocks a batch."""


class ValueOutOfRange(ValueError):
    """An event whose row, or the period total it would make, does not fit the
    stored ``Decimal(38, 15)`` columns. The state is left as it was: the event
    is not applied (the pipeline dead-letters it, ``value_out_of_range``)."""


class RatedDelta(NamedTuple):
    """Per-event row values: deltas of the period aggregate caused by one event."""

    outcome: Outcome
    qty_total: Decimal = ZERO
    qty_free_applied: Decimal = ZERO
    qty_billable: Decimal = ZERO
    cost: Decimal = ZERO
    unit_cost: Decimal = ZERO
    tier_snapshot: Decimal = ZERO


class LineItemPeriodRating:
    """Mutable rating state of one (line item, period), owned by one partition.

    ``known_hashes`` maps unique_hash -> the event id that counted it; it must
    hold every hash already stored for this (line item, period) that may recur
    in the events about to be applied (the pipeline fills it with one batched
    dedup query per batch, see :meth:`remember`). Owners are held in two
    generations (ADR 0003): new ones go to the current one, lookups see both,
    and :meth:`age_owners` drops the previous one. Not thread-safe. Drive it
    inside :func:`~worker.domain.money.exact` (as :class:`UsageRater` does):
    under Python's default 28-digit context, amounts above 1e13 with 15
    decimals would be rounded.
    """

    __slots__ = (
        "_aggregate",
        "_billable",
        "_free",
        "_free_units",
        "_known",
        "_known_before",
        "_price",
        "_rated",
        "_repeat_rows",
        "_repeat_rows_before",
    )

    def __init__(
        self,
        price: PriceTable,
        free_units: Decimal,
        aggregate: Aggregate,
        known_hashes: Mapping[str, str] | None = None,
    ) -> None:
        self._price = price
        self._free_units = quantize(free_units)
        self._aggregate = aggregate
        self._known: dict[str, str] = dict(known_hashes or {})
        # Event ids that already got a zero row for a repeated COUNT_UNIQUE value.
        self._repeat_rows: set[str] = set()
        # The previous generation of both (see age_owners).
        self._known_before: dict[str, str] = {}
        self._repeat_rows_before: set[str] = set()
        quantity = quantize(aggregate.quantity())
        self._free = min(quantity, self._free_units)
        self._billable = quantity - self._free
        self._rated = price.rate(self._billable)

    @property
    def quantity(self) -> Decimal:
        """q(A): the period quantity so far."""
        return self._free + self._billable

    @property
    def billable(self) -> Decimal:
        return self._billable

    @property
    def free_applied(self) -> Decimal:
        return self._free

    @property
    def rated_amount(self) -> Decimal:
        """rate(billable(A)): the unrounded invoice amount so far."""
        return self._rated

    def knows(self, unique_hash: str) -> bool:
        return unique_hash in self._known or unique_hash in self._known_before

    @property
    def remembered(self) -> int:
        """Hashes and repeat-row event ids held in both generations (the memory
        :meth:`forget_hashes` frees)."""
        return (
            len(self._known)
            + len(self._repeat_rows)
            + len(self._known_before)
            + len(self._repeat_rows_before)
        )

    def remember(self, owners: Mapping[str, str]) -> None:
        """Record stored hashes (unique_hash -> counting event id) from a dedup
        query, in the current generation; a hash already known keeps its owner."""
        for unique_hash, event_id in owners.items():
            if not self.knows(unique_hash):
                self._known[unique_hash] = event_id

    def age_owners(self) -> None:
        """Start a new generation: the previous one is dropped, the current one
        becomes the previous one (durable in the store once committed)."""
        self._known_before, self._known = self._known, {}
        self._repeat_rows_before, self._repeat_rows = self._repeat_rows, set()

    def forget_hashes(self) -> None:
        """Drop remembered hashes of both generations (durable in the store once committed)."""
        self._known.clear()
        self._repeat_rows.clear()
        self._known_before.clear()
        self._repeat_rows_before.clear()

    def apply(self, event_id: str, ts: datetime, measurement: Measurement) -> RatedDelta:
        """Apply one event and return its row values.

        ``ALREADY_PROCESSED`` means the caller must not write a row;
        ``REPEATED_VALUE`` rows carry zero quantities and the current snapshot.
        Raises :class:`ValueOutOfRange` (state unchanged) when the row or the
        period's totals would not fit the stored columns.
        """
        owner = self._known.get(measurement.unique_hash)
        if owner is None:
            owner = self._known_before.get(measurement.unique_hash)
        if owner is not None:
            if (
                owner == event_id
                or event_id in self._repeat_rows
                or event_id in self._repeat_rows_before
            ):
                return RatedDelta(Outcome.ALREADY_PROCESSED, tier_snapshot=self._billable)
            self._repeat_rows.add(event_id)
            return RatedDelta(Outcome.REPEATED_VALUE, tier_snapshot=self._billable)
        # Aggregates of quantized measurements are already quantized.
        value = measurement.quantity
        quantity = self._aggregate.peek(value, ts, event_id)
        if not (quantity < STORED_LIMIT and value < STORED_LIMIT):
            raise ValueOutOfRange(
                f"quantity {value} makes the period quantity {quantity}, "
                f"beyond the stored range (< 1e{STORED_LIMIT.adjusted()})"
            )
        free = min(self._free_units, quantity)
        billable = quantity - free
        if billable == self._billable:
            # All free (or a quantity that did not move): no cost, and no unit
            # cost (cost / qty_billable would be 0 / 0).
            delta = RatedDelta(
                Outcome.COUNTED,
                qty_total=value,
                qty_free_applied=free - self._free,
                tier_snapshot=billable,
            )
            self._commit(measurement.unique_hash, event_id, value, ts)
            self._free = free
            return delta
        rated = self._price.rate(billable)
        qty_billable = billable - self._billable
        cost = rated - self._rated
        unit_cost = quantize(div(cost, qty_billable))
        # Quantities are >= 0 and bounded by the period quantity checked above;
        # the cost is checked too: amounts may be negative (credits), so the
        # difference of two in-range period amounts may not be.
        if not (
            -STORED_LIMIT < rated < STORED_LIMIT
            and -STORED_LIMIT < cost < STORED_LIMIT
            and -STORED_LIMIT < unit_cost < STORED_LIMIT
        ):
            raise ValueOutOfRange(
                f"period amount {rated} (row cost {cost}, unit cost {unit_cost}) at "
                f"billable quantity {billable}, beyond the stored range "
                f"(< 1e{STORED_LIMIT.adjusted()})"
            )
        self._commit(measurement.unique_hash, event_id, value, ts)
        delta = RatedDelta(
            Outcome.COUNTED,
            qty_total=value,
            qty_free_applied=free - self._free,
            qty_billable=qty_billable,
            cost=cost,
            unit_cost=unit_cost,
            tier_snapshot=billable,
        )
        self._free, self._billable, self._rated = free, billable, rated
        return delta

    def _commit(self, unique_hash: str, event_id: str, value: Decimal, ts: datetime) -> None:
        """Count the event: its hash is now owned and the aggregate includes it."""
        self._known[unique_hash] = event_id
        self._aggregate.add(value, ts, event_id)

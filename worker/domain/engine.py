"""The usage rater: events -> priced rows, batch by batch, with per-line-item state.

Pure and I/O free. The pipeline drives one batch in four steps::

    batch = rater.resolve(events)                  # catalog + meter + period + hash
    rater.load_states(loader(rater.missing_states(batch)))   # first touch only
    rater.remember(dedup_lookup(batch.dedup_keys()))          # one query per batch
    rows = rater.rate(batch, processed_at)         # incremental rating

``loader`` and ``dedup_lookup`` are the store's ``GetLineItemUsage`` and batched
``IsDuplicate``; tests pass dictionaries. State is keyed by
(tenant, environment, line item, period) and owned by one partition's consumer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from worker.domain.aggregates import AggregateSnapshot, new_aggregate
from worker.domain.catalog_index import CatalogIndex, LineItemBinding, Match, UnresolvedReason
from worker.domain.events import Event, ProcessedEvent
from worker.domain.metering import Measurement, measure
from worker.domain.periods import epoch_ms
from worker.domain.rating import LineItemPeriodRating, Outcome

StateKey = tuple[str, str, str, int]
"""(tenant_id, environment_id, sub_line_item_id, period_id)."""

DedupKey = tuple[StateKey, str]
"""(state key, unique_hash)."""

_MAX_LAG_MS = 2**32 - 1
_ONE_MS = timedelta(milliseconds=1)


class PendingRow(NamedTuple):
    """One (event, line item) awaiting rating."""

    event: Event
    customer_id: str
    match: Match
    measurement: Measurement
    key: StateKey


@dataclass(slots=True)
class ResolvedBatch:
    """Output of :meth:`UsageRater.resolve`."""

    pending: list[PendingRow] = field(default_factory=list)
    unresolved: list[tuple[Event, UnresolvedReason]] = field(default_factory=list)
    missing_fields: int = 0

    def state_keys(self) -> set[StateKey]:
        return {row.key for row in self.pending}

    def dedup_keys(self) -> set[DedupKey]:
        return {(row.key, row.measurement.unique_hash) for row in self.pending}


@dataclass(slots=True)
class RatedBatch:
    """Output of :meth:`UsageRater.rate`: rows to insert and dedup counts by outcome."""

    rows: list[ProcessedEvent] = field(default_factory=list)
    outcomes: Counter[Outcome] = field(default_factory=Counter)


class UsageRater:
    """Holds rating state for the (line item, period) pairs a consumer owns."""

    def __init__(self, index: CatalogIndex) -> None:
        self._index = index
        self._states: dict[StateKey, LineItemPeriodRating] = {}

    @property
    def index(self) -> CatalogIndex:
        return self._index

    def replace_index(self, index: CatalogIndex) -> None:
        """Use a new catalog version for events resolved from now on."""
        self._index = index

    def resolve(self, events: Iterable[Event]) -> ResolvedBatch:
        """Resolve and measure events; no state is touched."""
        batch = ResolvedBatch()
        for event in events:
            resolution = self._index.resolve(event)
            if resolution.unresolved is not None:
                batch.unresolved.append((event, resolution.unresolved))
                continue
            for match in resolution.matches:
                measurement = measure(
                    match.binding.meter, event, match.period.start, match.period.end
                )
                if measurement.field_missing:
                    batch.missing_fields += 1
                binding = match.binding
                key = (
                    binding.tenant_id,
                    binding.environment_id,
                    binding.line_item_id,
                    match.period.period_id,
                )
                batch.pending.append(
                    PendingRow(event, resolution.customer_id, match, measurement, key)
                )
        return batch

    def missing_states(self, batch: ResolvedBatch) -> set[StateKey]:
        """State keys of the batch not yet in memory (to load from the store)."""
        return {key for key in batch.state_keys() if key not in self._states}

    def load_states(self, snapshots: Mapping[StateKey, AggregateSnapshot]) -> None:
        """Install loaded aggregates; keys absent from ``snapshots`` start empty later."""
        for key, snapshot in snapshots.items():
            if key not in self._states:
                binding = self._index.line_item(key[0], key[1], key[2])
                if binding is not None:
                    self._states[key] = _new_state(binding, snapshot)

    def remember(self, owners: Mapping[DedupKey, str]) -> None:
        """Record stored unique hashes (-> the event id that counted them)."""
        grouped: dict[StateKey, dict[str, str]] = {}
        for (key, unique_hash), event_id in owners.items():
            grouped.setdefault(key, {})[unique_hash] = event_id
        for key, hashes in grouped.items():
            state = self._states.get(key)
            if state is not None:
                state.remember(hashes)

    def rate(self, batch: ResolvedBatch, processed_at: datetime) -> RatedBatch:
        """Rate pending rows in order; returns rows to insert (no row for redeliveries)."""
        result = RatedBatch()
        version = epoch_ms(processed_at) * 1000 + processed_at.microsecond % 1000
        for row in batch.pending:
            binding = row.match.binding
            state = self._states.get(row.key)
            if state is None:
                state = _new_state(binding, None)
                self._states[row.key] = state
            event = row.event
            delta = state.apply(event.id, event.timestamp, row.measurement)
            result.outcomes[delta.outcome] += 1
            if delta.outcome is Outcome.ALREADY_PROCESSED:
                continue
            lag_ms = (processed_at - event.timestamp) // _ONE_MS
            result.rows.append(
                ProcessedEvent(
                    event=event,
                    customer_id=row.customer_id,
                    subscription_id=binding.subscription.id,
                    sub_line_item_id=binding.line_item_id,
                    price_id=binding.price.price_id,
                    feature_id=binding.feature_id,
                    meter_id=binding.meter.id,
                    period_id=row.key[3],
                    currency=binding.price.currency,
                    unique_hash=row.measurement.unique_hash,
                    qty_total=delta.qty_total,
                    qty_billable=delta.qty_billable,
                    qty_free_applied=delta.qty_free_applied,
                    tier_snapshot=delta.tier_snapshot,
                    unit_cost=delta.unit_cost,
                    cost=delta.cost,
                    version=version,
                    processed_at=processed_at,
                    final_lag_ms=min(max(lag_ms, 0), _MAX_LAG_MS),
                )
            )
        return result

    def state(self, key: StateKey) -> LineItemPeriodRating | None:
        return self._states.get(key)

    def forget_hashes(self) -> None:
        """Drop remembered hashes of every state (they are durable once committed)."""
        for state in self._states.values():
            state.forget_hashes()

    def drop_states(self, keep: Iterable[StateKey] = ()) -> None:
        """Drop all state (on revoke), except ``keep``."""
        kept = {key: self._states[key] for key in keep if key in self._states}
        self._states = kept

    def totals(self) -> dict[StateKey, tuple[Decimal, Decimal, Decimal, Decimal]]:
        """(quantity, free, billable, rated amount) of every state in memory."""
        return {
            key: (s.quantity, s.free_applied, s.billable, s.rated_amount)
            for key, s in self._states.items()
        }


def _new_state(
    binding: LineItemBinding, snapshot: AggregateSnapshot | None
) -> LineItemPeriodRating:
    aggregate = new_aggregate(binding.meter.aggregation, binding.meter.bucket_size, snapshot)
    return LineItemPeriodRating(binding.price, binding.free_units, aggregate)

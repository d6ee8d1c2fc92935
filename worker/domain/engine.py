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
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from worker.domain.aggregates import AggregateSnapshot, new_aggregate
from worker.domain.catalog_index import CatalogIndex, LineItemBinding, Match, UnresolvedReason
from worker.domain.events import Event, ProcessedEvent
from worker.domain.metering import Measurement, measure
from worker.domain.rating import LineItemPeriodRating, Outcome, RatedDelta

StateKey = tuple[str, str, str, int]
"""(tenant_id, environment_id, sub_line_item_id, period_id)."""

DedupKey = tuple[StateKey, str]
"""(state key, unique_hash)."""

_MAX_LAG_MS = 2**32 - 1
_COUNTED = Outcome.COUNTED  # Enum attribute access costs ~100 ns in CPython 3.11
_REPEATED_VALUE = Outcome.REPEATED_VALUE
_ONE_US = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
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
    """Output of :meth:`UsageRater.rate`: rated rows and dedup counts by outcome.

    ``rated`` holds (pending row, delta) pairs, everything a processed row
    needs; :attr:`rows` materialises them as :class:`ProcessedEvent` objects
    (writers may read ``rated`` directly to build columns without that step).
    """

    processed_at: datetime
    rated: list[tuple[PendingRow, RatedDelta]] = field(default_factory=list)
    outcomes: Counter[Outcome] = field(default_factory=Counter)

    @property
    def version(self) -> int:
        """Row version for ReplacingMergeTree: processing time in epoch microseconds."""
        return (self.processed_at - _EPOCH) // _ONE_US

    @property
    def rows(self) -> list[ProcessedEvent]:
        version, processed_at = self.version, self.processed_at
        return [
            to_processed_event(pending, delta, processed_at, version)
            for pending, delta in self.rated
        ]


def to_processed_event(
    pending: PendingRow, delta: RatedDelta, processed_at: datetime, version: int
) -> ProcessedEvent:
    """The stored row for one rated (event, line item)."""
    binding = pending.match.binding
    event = pending.event
    lag_ms = (processed_at - event.timestamp) // _ONE_MS
    return ProcessedEvent(
        event=event,
        customer_id=pending.customer_id,
        subscription_id=binding.subscription.id,
        sub_line_item_id=binding.line_item_id,
        price_id=binding.price.price_id,
        feature_id=binding.feature_id,
        meter_id=binding.meter.id,
        period_id=pending.key[3],
        currency=binding.price.currency,
        unique_hash=pending.measurement.unique_hash,
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


class UsageRater:
    """Holds rating state for the (line item, period) pairs a consumer owns."""

    def __init__(self, index: CatalogIndex) -> None:
        self._index = index
        self._states: dict[StateKey, LineItemPeriodRating] = {}
        self._touched: set[StateKey] = set()

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
                batch.pending.append(
                    PendingRow(event, resolution.customer_id, match, measurement, match.state_key)
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
        """Rate pending rows in order; redeliveries (ALREADY_PROCESSED) yield no row."""
        result = RatedBatch(processed_at)
        rated = result.rated
        states = self._states
        touched = self._touched
        counted = repeated = skipped = 0
        for row in batch.pending:
            state = states.get(row.key)
            if state is None:
                state = states[row.key] = _new_state(row.match.binding, None)
            touched.add(row.key)
            delta = state.apply(row.event.id, row.event.timestamp, row.measurement)
            outcome = delta.outcome
            if outcome is _COUNTED:
                counted += 1
            elif outcome is _REPEATED_VALUE:
                repeated += 1
            else:
                skipped += 1
                continue
            rated.append((row, delta))
        result.outcomes.update(
            {
                Outcome.COUNTED: counted,
                Outcome.REPEATED_VALUE: repeated,
                Outcome.ALREADY_PROCESSED: skipped,
            }
        )
        return result

    def forget_hashes(self) -> None:
        """Drop remembered hashes (they are durable in the store once committed)."""
        for key in self._touched:
            state = self._states.get(key)
            if state is not None:
                state.forget_hashes()
        self._touched.clear()

    def drop(self, keys: Iterable[StateKey]) -> None:
        """Drop the state of ``keys`` (on revoke of the partitions that touched them)."""
        for key in keys:
            self._states.pop(key, None)
            self._touched.discard(key)


def _new_state(
    binding: LineItemBinding, snapshot: AggregateSnapshot | None
) -> LineItemPeriodRating:
    aggregate = new_aggregate(binding.meter.aggregation, binding.meter.bucket_size, snapshot)
    return LineItemPeriodRating(binding.price, binding.free_units, aggregate)

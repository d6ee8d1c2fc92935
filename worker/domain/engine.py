"""The usage rater: events -> priced rows, batch by batch, with per-line-item state.

Pure and I/O free. The pipeline makes one call per batch::

    rated = rater.rate_batch(events, reads, processed_at)
    ...                              # store rated.rows, dead-letter rated.refused
    rater.committed()                # once the rows are durable and committed

:func:`rate_batch` resolves the events (catalog + meter + period + hash),
loads the state of every (line item, period) touched for the first time,
asks the store about the hashes memory cannot rule out, then rates.
``reads`` is the port :class:`~worker.domain.rating_reads.RatingReads`: the
store's batched ``GetLineItemUsage``, stored hash fingerprints and
``IsDuplicate``; tests answer it from rows in memory. The steps it drives
are :class:`RatingSteps`, public so that a rater holding its state elsewhere
(the compiled core) gets the same flow, and so that tests can probe the
dedup memory. State is keyed by :class:`~worker.domain.rating_reads.StateKey`
and owned by one partition's consumer.

Dedup without a store round trip per event: a state is *covered* when the
rater holds the 64-bit :func:`fingerprint` of every hash stored for it (a
state that started empty, or whose stored fingerprints were loaded). For a
covered state only hashes whose fingerprint is already present (a repeat, or a
rare fingerprint collision) go to the store lookup; an absent fingerprint
proves the hash was never stored. Uncovered states send every hash. Memory is
bounded by ``max_fingerprints``: past it the largest states are uncovered.

Owners stay remembered after a commit (the hashes this rater counted or
looked up, with the event id that counted each), so a repeat of a recent
event - a client retry, a redelivery - is answered in memory instead of by
the store. They are exact for as long as the rater owns the state: every
row of a (line item, period) is written through its one owner. Their memory
is bounded by ``max_remembered_owners`` in two generations (ADR 0003): new
owners go to the current one, lookups see both. Once a commit finds more
than half of the bound in the current one, the owners of event hashes age:
the previous generation is dropped and the current one becomes the previous
one, so the owners of (at least) the most recent half of the bound survive;
a current generation beyond the whole bound (one batch larger than it) is
forgotten as well. The owners of COUNT_UNIQUE values (values recur all
period long) are not aged: they count as current, and when they alone fill
more than half of the bound the largest states forget theirs until they fill
a quarter. Memory held: at most the bound plus one batch's owners.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Protocol

from worker.domain.aggregates import AggregateSnapshot, new_aggregate
from worker.domain.catalog_index import CatalogIndex, LineItemBinding, Match, UnresolvedReason
from worker.domain.events import Event
from worker.domain.metering import AggregationType, Measurement, WindowSize, measure
from worker.domain.money import exact
from worker.domain.processed_rows import ProcessedRows
from worker.domain.rating import LineItemPeriodRating, Outcome, RatedDelta, ValueOutOfRange
from worker.domain.rating_reads import DedupKey, RatingReads, StateKey

DEFAULT_MAX_FINGERPRINTS = 5_000_000
"""Fingerprints held in memory at most (about 70 bytes each)."""

DEFAULT_MAX_REMEMBERED_OWNERS = 2_000_000
"""Hash owners kept in memory across commits (both generations, plus at most
one batch's): 105-116 bytes each in the core (~230 MB at this bound), about
225 bytes each in this engine (~450 MB); measured in ADR 0003."""


def fingerprint(unique_hash: str) -> int:
    """64-bit fingerprint of a (hex) unique_hash: its first 16 hex digits as an integer.

    The store computes the same value in SQL (see ``load_fingerprints``).
    """
    return int(unique_hash[:16], 16)


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
        return {DedupKey(row.key, row.measurement.unique_hash) for row in self.pending}


class RefusedRow(NamedTuple):
    """An (event, line item) not applied: its values would not fit the stored columns."""

    event: Event
    key: StateKey
    detail: str


@dataclass(slots=True)
class RatedBatch:
    """What rating a batch produced: the rows to store and what became of every event.

    Filled in full by :meth:`UsageRater.rate_batch`; :meth:`UsageRater.rate`
    alone fills ``rows``, ``outcomes`` and ``refused``.
    """

    rows: ProcessedRows
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    refused: list[RefusedRow] = field(default_factory=list)
    """Rows left out (state unchanged); the pipeline dead-letters their events."""
    unresolved: list[tuple[Event, UnresolvedReason]] = field(default_factory=list)
    """Events with no line item to rate them, and why (stored raw, left for reprocessing)."""
    missing_fields: int = 0
    """Rows whose meter's property was missing or unparseable (measured 0)."""
    touched: list[tuple[Event, StateKey]] = field(default_factory=list)
    """(event, state) of every resolved row, refused ones included: the states
    the batch touched, which the owner of the event's partition must drop on revoke."""
    store_lookups: int = 0
    """Dedup keys sent to :meth:`RatingReads.hash_owners`."""


def outcome_counts(counted: int, repeated: int, skipped: int) -> Counter[Outcome]:
    """A batch's dedup outcomes, every outcome present (0 when none)."""
    return Counter(
        {
            Outcome.COUNTED: counted,
            Outcome.REPEATED_VALUE: repeated,
            Outcome.ALREADY_PROCESSED: skipped,
        }
    )


def processed_rows(
    processed_at: datetime, rated: list[tuple[PendingRow, RatedDelta]]
) -> ProcessedRows:
    """The named columns of (pending row, delta) pairs, in their order.

    For :meth:`RatingSteps.rate` implementations: how rows leave a rater.
    """
    return ProcessedRows(
        processed_at=processed_at,
        events=tuple(row.event for row, _ in rated),
        customer_ids=tuple(row.customer_id for row, _ in rated),
        matches=tuple(row.match for row, _ in rated),
        unique_hashes=tuple(row.measurement.unique_hash for row, _ in rated),
        qty_total=tuple(delta.qty_total for _, delta in rated),
        qty_free_applied=tuple(delta.qty_free_applied for _, delta in rated),
        qty_billable=tuple(delta.qty_billable for _, delta in rated),
        cost=tuple(delta.cost for _, delta in rated),
        unit_cost=tuple(delta.unit_cost for _, delta in rated),
        tier_snapshot=tuple(delta.tier_snapshot for _, delta in rated),
    )


class UsageRater:
    """Holds rating state for the (line item, period) pairs a consumer owns."""

    def __init__(
        self,
        index: CatalogIndex,
        *,
        max_fingerprints: int = DEFAULT_MAX_FINGERPRINTS,
        max_remembered_owners: int = DEFAULT_MAX_REMEMBERED_OWNERS,
    ) -> None:
        self._index = index
        self._states: dict[StateKey, LineItemPeriodRating] = {}
        self._touched: set[StateKey] = set()
        # Covered states -> fingerprints of every hash stored (or about to be) for them.
        self._fingerprints: dict[StateKey, set[int]] = {}
        self._fingerprint_count = 0
        self._max_fingerprints = max_fingerprints
        # Owners (and repeat-row ids) of the current generation, COUNT_UNIQUE
        # states' all included, counted from above: dropped states still count
        # until the next aging. Touched states hold owners of either generation.
        self._remembered = 0
        self._max_remembered = max_remembered_owners

    @property
    def fingerprint_count(self) -> int:
        """Fingerprints held for covered states (the dedup memory in use)."""
        return self._fingerprint_count

    @property
    def index(self) -> CatalogIndex:
        return self._index

    def replace_index(self, index: CatalogIndex) -> None:
        """Use a new catalog version for events resolved from now on."""
        self._index = index

    def rate_batch(
        self, events: Sequence[Event], reads: RatingReads, processed_at: datetime
    ) -> RatedBatch:
        """Rate one batch, reading only what memory cannot answer: :func:`rate_batch`."""
        return rate_batch(self, events, reads, processed_at)

    @exact
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
                    PendingRow(
                        event=event,
                        customer_id=resolution.customer_id,
                        match=match,
                        measurement=measurement,
                        key=match.state_key,
                    )
                )
        return batch

    def missing_states(self, batch: ResolvedBatch) -> set[StateKey]:
        """State keys of the batch not yet in memory (to load from the store)."""
        return {key for key in batch.state_keys() if key not in self._states}

    def coverable(self, snapshots: Mapping[StateKey, AggregateSnapshot]) -> list[StateKey]:
        """Loaded keys with stored rows whose fingerprints fit the memory budget, smallest first.

        Load their fingerprints and pass them to :meth:`load_states` to cover them.
        """
        room = self._max_fingerprints - self._fingerprint_count
        chosen: list[StateKey] = []
        stored = sorted(
            (snapshot.count, key)
            for key, snapshot in snapshots.items()
            if snapshot.count > 0 and key not in self._states
        )
        for count, key in stored:
            if count > room:
                break
            room -= count
            chosen.append(key)
        return chosen

    @exact
    def load_states(
        self,
        snapshots: Mapping[StateKey, AggregateSnapshot],
        stored_fingerprints: Mapping[StateKey, Iterable[int]] | None = None,
    ) -> None:
        """Install loaded aggregates; keys absent from ``snapshots`` start empty later.

        A key whose snapshot is empty (nothing stored) is covered from the start;
        one with stored rows is covered when ``stored_fingerprints`` holds the
        fingerprints of all its stored hashes. Keys that start empty without a
        snapshot are not covered (nothing proves the store has no rows for them).
        """
        for key, snapshot in snapshots.items():
            if key in self._states:
                continue
            binding = self._index.line_item(key.tenant_id, key.environment_id, key.line_item_id)
            if binding is None:
                continue
            self._states[key] = _new_state(binding, snapshot)
            if snapshot.count == 0:
                self._cover(key, ())
            elif stored_fingerprints is not None and key in stored_fingerprints:
                self._cover(key, stored_fingerprints[key])
        self._trim_fingerprints()

    def lookup_keys(self, batch: ResolvedBatch) -> set[DedupKey]:
        """The dedup keys of ``batch`` only the store can answer (see module docstring)."""
        keys: set[DedupKey] = set()
        for row in batch.pending:
            unique_hash = row.measurement.unique_hash
            known = self._fingerprints.get(row.key)
            if known is None or fingerprint(unique_hash) in known:
                state = self._states.get(row.key)
                if state is None or not state.knows(unique_hash):
                    keys.add(DedupKey(row.key, unique_hash))
        return keys

    def remember(self, owners: Mapping[DedupKey, str]) -> None:
        """Record stored unique hashes (-> the event id that counted them)."""
        grouped: dict[StateKey, dict[str, str]] = {}
        for (key, unique_hash), event_id in owners.items():
            grouped.setdefault(key, {})[unique_hash] = event_id
        for key, hashes in grouped.items():
            state = self._states.get(key)
            if state is not None:
                state.remember(hashes)
                self._touched.add(key)
                self._remembered += len(hashes)

    @exact
    def rate(self, batch: ResolvedBatch, processed_at: datetime) -> RatedBatch:
        """Rate pending rows in order; redeliveries (ALREADY_PROCESSED) yield no row.

        Rows whose values would not fit the stored columns are left out and
        listed in :attr:`RatedBatch.refused`; their states are unchanged.
        Only ``rows``, ``outcomes`` and ``refused`` of the result are filled.
        """
        rated: list[tuple[PendingRow, RatedDelta]] = []
        refused: list[RefusedRow] = []
        outcomes = outcome_counts(counted=0, repeated=0, skipped=0)
        for row in batch.pending:
            state = self._states.get(row.key)
            if state is None:
                state = self._states[row.key] = _new_state(row.match.binding, None)
            self._touched.add(row.key)
            try:
                delta = state.apply(row.event.id, row.event.timestamp, row.measurement)
            except ValueOutOfRange as exc:
                detail = f"line item {row.key.line_item_id}: {exc}"
                refused.append(RefusedRow(event=row.event, key=row.key, detail=detail))
                continue
            outcomes[delta.outcome] += 1
            if delta.outcome is Outcome.ALREADY_PROCESSED:
                continue
            rated.append((row, delta))
            self._add_fingerprint(row.key, row.measurement.unique_hash)
        self._remembered += outcomes[Outcome.COUNTED] + outcomes[Outcome.REPEATED_VALUE]
        self._trim_fingerprints()
        return RatedBatch(processed_rows(processed_at, rated), outcomes, refused)

    def committed(self) -> None:
        """Call once the rated rows are durable and their offsets committed.

        Keeps the remembered owners while the current generation holds at
        most half of ``max_remembered_owners``; past that, ages them (see the
        module docstring: the store has them all).
        """
        if self._remembered <= self._max_remembered // 2:
            return
        beyond_bound = self._remembered > self._max_remembered
        kept: list[tuple[int, StateKey]] = []
        for key in list(self._touched):
            state = self._states.get(key)
            binding = self._index.line_item(key.tenant_id, key.environment_id, key.line_item_id)
            if state is None:
                self._touched.discard(key)
            elif binding is not None and binding.meter.aggregation is AggregationType.COUNT_UNIQUE:
                kept.append((state.remembered, key))
            else:
                if beyond_bound:
                    state.forget_hashes()
                else:
                    state.age_owners()
                if not state.remembered:
                    self._touched.discard(key)
        total = sum(size for size, _ in kept)
        if total > self._max_remembered // 2:
            kept.sort()
            while kept and total > self._max_remembered // 4:
                size, key = kept.pop()
                self._states[key].forget_hashes()
                self._touched.discard(key)
                total -= size
        self._remembered = total

    def forget_hashes(self) -> None:
        """Drop remembered owners of both generations (only once durable in the store)."""
        self._remembered = 0
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
            self._uncover(key)

    def _cover(self, key: StateKey, fingerprints: Iterable[int]) -> None:
        known = set(fingerprints)
        self._uncover(key)
        self._fingerprints[key] = known
        self._fingerprint_count += len(known)

    def _add_fingerprint(self, key: StateKey, unique_hash: str) -> None:
        """Note a hash now stored for ``key``, if ``key`` is covered."""
        known = self._fingerprints.get(key)
        value = fingerprint(unique_hash)
        if known is not None and value not in known:
            known.add(value)
            self._fingerprint_count += 1

    def _uncover(self, key: StateKey) -> None:
        known = self._fingerprints.pop(key, None)
        if known is not None:
            self._fingerprint_count -= len(known)

    def _trim_fingerprints(self) -> None:
        """Over budget: uncover the largest states until a quarter of the budget is free."""
        if self._fingerprint_count <= self._max_fingerprints:
            return
        target = self._max_fingerprints * 3 // 4
        by_size = sorted(self._fingerprints, key=lambda key: len(self._fingerprints[key]))
        while self._fingerprint_count > target and by_size:
            self._uncover(by_size.pop())


class StateLoading(Protocol):
    """What :func:`load_missing_states` needs of a rater: its catalog, the
    coverage rule and the loading step."""

    @property
    def index(self) -> CatalogIndex: ...

    def coverable(self, snapshots: Mapping[StateKey, AggregateSnapshot]) -> list[StateKey]: ...

    def load_states(
        self,
        snapshots: Mapping[StateKey, AggregateSnapshot],
        stored_fingerprints: Mapping[StateKey, Iterable[int]] | None = None,
    ) -> None: ...


class RatingSteps(StateLoading, Protocol):
    """The steps :func:`rate_batch` drives, in its order; :class:`UsageRater` has them.

    A rater with its state elsewhere (the compiled core) implements the same
    steps and gets the same batch flow, store reads and failure contract.
    """

    def resolve(self, events: Iterable[Event]) -> ResolvedBatch: ...

    def missing_states(self, batch: ResolvedBatch) -> set[StateKey]: ...

    def lookup_keys(self, batch: ResolvedBatch) -> set[DedupKey]: ...

    def remember(self, owners: Mapping[DedupKey, str]) -> None: ...

    def rate(self, batch: ResolvedBatch, processed_at: datetime) -> RatedBatch: ...

    def drop(self, keys: Iterable[StateKey]) -> None: ...


def rate_batch(
    rater: RatingSteps, events: Sequence[Event], reads: RatingReads, processed_at: datetime
) -> RatedBatch:
    """Rate one batch in order, reading from ``reads`` only what memory cannot answer.

    Resolves every event, loads the state of each (line item, period) seen
    for the first time (stored snapshots chunk by chunk, and the fingerprints
    of those that fit the memory budget), asks :meth:`RatingReads.hash_owners`
    once about the hashes memory cannot rule out, then rates. Store round
    trips per batch: one per snapshot chunk, one per chunk with coverable
    states, the hash-owner reads.

    Raises whatever ``reads`` raises, with the states this call loaded
    dropped again: a failed batch leaves no state behind that its partitions'
    owner would not know to drop on revoke, and may simply be rated again.
    """
    resolved = rater.resolve(events)
    missing = rater.missing_states(resolved)
    try:
        load_missing_states(rater, missing, reads)
        lookup = rater.lookup_keys(resolved)
        owners = reads.hash_owners(lookup) if lookup else {}
    except BaseException:
        rater.drop(missing)
        raise
    rater.remember(owners)
    result = rater.rate(resolved, processed_at)
    result.unresolved = resolved.unresolved
    result.missing_fields = resolved.missing_fields
    result.touched = [(row.event, row.key) for row in resolved.pending]
    result.store_lookups = len(lookup)
    return result


def load_missing_states(rater: StateLoading, missing: set[StateKey], reads: RatingReads) -> None:
    """Load ``missing`` chunk by chunk, covering what fits the fingerprint budget.

    Raises whatever ``reads`` raises; the caller drops ``missing`` again."""
    requests: dict[StateKey, WindowSize | None] = {}
    for key in missing:
        binding = rater.index.line_item(key.tenant_id, key.environment_id, key.line_item_id)
        requests[key] = binding.meter.bucket_size if binding is not None else None
    if not requests:
        return
    for snapshots in reads.snapshots(requests):
        coverable = rater.coverable(snapshots)
        rater.load_states(snapshots, reads.fingerprints(coverable) if coverable else None)


def _new_state(
    binding: LineItemBinding, snapshot: AggregateSnapshot | None
) -> LineItemPeriodRating:
    aggregate = new_aggregate(binding.meter.aggregation, binding.meter.bucket_size, snapshot)
    return LineItemPeriodRating(binding.price, binding.free_units, aggregate)

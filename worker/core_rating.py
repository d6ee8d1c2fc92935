"""The rating state in the compiled core, behind the ``UsageRater`` interface.

:class:`CoreUsageRater` keeps the per (line item, period) aggregates, the
dedup fingerprints and the remembered hash owners in the core
(``core/src/rater.rs``, ``period_rating.rs``, ``pricing.rs``) with the rules of
:class:`~worker.domain.engine.UsageRater` (missing states, coverage, lookup
keys, remember, rate, committed, drop and both memory bounds), exact in
fixed point. Events are still resolved and measured by the Python reference
here (:meth:`resolve`); :mod:`worker.core_catalog` does that in the core too,
and joining the two is the next step (docs/core.md). A differential test
drives both raters through the same store-backed flow and compares every row.

The one visible difference: a refused row's reason text names the line item
and the stored range, not the numbers (dead letters keep the reason code
``value_out_of_range``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Generic, TypeVar

from worker import _core
from worker.domain.aggregates import AggregateSnapshot
from worker.domain.catalog_index import CatalogIndex, LineItemBinding
from worker.domain.engine import (
    PendingRow,
    RatedBatch,
    RefusedRow,
    ResolvedBatch,
    UsageRater,
    outcome_counts,
    processed_rows,
    rate_batch,
)
from worker.domain.events import Event
from worker.domain.money import format_decimal, quantize
from worker.domain.pricing import PriceTable
from worker.domain.rating import Outcome, RatedDelta
from worker.domain.rating_reads import DedupKey, RatingReads, StateKey
from worker.store.arrow_columns import epoch_us

_OUT_OF_RANGE = "the row or its period total is beyond the stored range (Decimal(38, 15))"

KeyTuple = tuple[str, str, str, int]
PendingTuple = tuple[KeyTuple, int, str, int, str, str]
PriceTuple = tuple[str, str, str, list[tuple[str | None, str, str]], str, str]
TermsTuple = tuple[PriceTuple, str, str, str | None]


def refused_detail(line_item_id: str) -> str:
    """The dead-letter text of a row refused as ``value_out_of_range`` by the core."""
    return f"line item {line_item_id}: {_OUT_OF_RANGE}"


def _text(value: Decimal) -> str:
    return format_decimal(quantize(value))


def price_tuple(price: PriceTable) -> PriceTuple:
    """A price as the core reads it (catalog numbers have at most 15 places)."""
    return (
        price.model.value,
        price.tier_mode.value,
        _text(price.amount),
        [
            (
                None if tier.up_to is None else _text(tier.up_to),
                _text(tier.unit_amount),
                _text(tier.flat_amount),
            )
            for tier in price.tiers
        ],
        _text(price.package_size),
        price.package_rounding.value,
    )


SnapshotTuple = tuple[str, int, str, tuple[int, str, str] | None, list[tuple[int, str]]]


def snapshot_tuple(snapshot: AggregateSnapshot) -> SnapshotTuple:
    """An ``AggregateSnapshot`` as the core reads it."""
    latest = snapshot.latest
    return (
        _text(snapshot.total),
        snapshot.count,
        _text(snapshot.maximum),
        None if latest is None else (epoch_us(latest[0]), latest[1], _text(latest[2])),
        [(epoch_us(start), _text(value)) for start, value in snapshot.bucket_maxima.items()],
    )


def snapshot_argument(snapshot: AggregateSnapshot) -> SnapshotTuple | None:
    """A loaded snapshot as the core reads it: an empty one (a state's first
    load: most loads are) crosses as ``None``, not as texts."""
    return None if _is_empty(snapshot) else snapshot_tuple(snapshot)


def _is_empty(snapshot: AggregateSnapshot) -> bool:
    """``snapshot == AggregateSnapshot()``, field by field without the
    dataclass's tuples (a count first: a stored state's is not 0)."""
    return (
        snapshot.count == 0
        and snapshot.latest is None
        and not snapshot.bucket_maxima
        and not snapshot.total
        and not snapshot.maximum
    )


def load_arguments(
    snapshots: Mapping[StateKey, AggregateSnapshot],
    stored_fingerprints: Mapping[StateKey, Iterable[int]] | None,
) -> tuple[list[tuple[StateKey, SnapshotTuple | None]], dict[KeyTuple, list[int]] | None]:
    """``load_states``' arguments as the core reads them: an empty snapshot (a
    state's first load: most loads are) crosses as ``None``, not as texts."""
    fingerprints: dict[KeyTuple, list[int]] | None = (
        None
        if stored_fingerprints is None
        else {key: list(values) for key, values in stored_fingerprints.items()}
    )
    snapshot_tuples = [(key, snapshot_argument(s)) for key, s in snapshots.items()]
    return snapshot_tuples, fingerprints


_Core = TypeVar("_Core", _core.CoreRater, _core.CoreEngine)


class CoreState(Generic[_Core]):
    """The rating-state steps the core's rater and fused engine share: what
    the batch flow loads into, asks of and tells the state held in ``_core``."""

    _core: _Core

    @property
    def fingerprint_count(self) -> int:
        return self._core.fingerprint_count

    def coverable(self, snapshots: Mapping[StateKey, AggregateSnapshot]) -> list[StateKey]:
        # The core takes only stored rows (count > 0): empty snapshots stay here.
        counts = [(key, s.count) for key, s in snapshots.items() if s.count > 0]
        return [StateKey(*key) for key in self._core.coverable(counts)] if counts else []

    def load_states(
        self,
        snapshots: Mapping[StateKey, AggregateSnapshot],
        stored_fingerprints: Mapping[StateKey, Iterable[int]] | None = None,
    ) -> None:
        self._core.load_states(*load_arguments(snapshots, stored_fingerprints))

    def remember(self, owners: Mapping[DedupKey, str]) -> None:
        self._core.remember(
            [(key, unique_hash, event) for (key, unique_hash), event in owners.items()]
        )

    def committed(self) -> None:
        self._core.committed()

    def drop(self, keys: Iterable[StateKey]) -> None:
        self._core.drop_states(list(keys))


class CoreUsageRater(CoreState[_core.CoreRater]):
    """``UsageRater`` with its state in the core. Use from one thread (the partition owner)."""

    def __init__(
        self,
        index: CatalogIndex,
        *,
        max_fingerprints: int,
        max_remembered_owners: int,
    ) -> None:
        self._core = _core.CoreRater(max_fingerprints, max_remembered_owners)
        self._resolver = UsageRater(index)
        self._terms: dict[int, int] = {}
        self.replace_index(index)

    @property
    def index(self) -> CatalogIndex:
        return self._resolver.index

    def replace_index(self, index: CatalogIndex) -> None:
        """Use a new catalog version for states created from now on."""
        self._resolver.replace_index(index)
        items: list[tuple[str, str, str, TermsTuple]] = []
        self._terms = {}
        for bindings in index.routing_tables().bindings.values():
            for binding in bindings:
                self._terms[id(binding)] = len(items)
                items.append(
                    (
                        binding.tenant_id,
                        binding.environment_id,
                        binding.line_item_id,
                        terms_tuple(binding),
                    )
                )
        self._core.set_terms(items)

    def resolve(self, events: Iterable[Event]) -> ResolvedBatch:
        """Resolve and measure (the Python reference, for now)."""
        return self._resolver.resolve(events)

    def missing_states(self, batch: ResolvedBatch) -> set[StateKey]:
        return {StateKey(*key) for key in self._core.missing_states(self._rows(batch))}

    def lookup_keys(self, batch: ResolvedBatch) -> set[DedupKey]:
        return {
            DedupKey(StateKey(*key), unique_hash)
            for key, unique_hash in self._core.lookup_keys(self._rows(batch))
        }

    def rate_batch(
        self, events: Sequence[Event], reads: RatingReads, processed_at: datetime
    ) -> RatedBatch:
        """Rate one batch through the same flow as ``UsageRater.rate_batch``."""
        return rate_batch(self, events, reads, processed_at)

    def rate(self, batch: ResolvedBatch, processed_at: datetime) -> RatedBatch:
        """Rate in the core; rows, outcome counts and refusals as ``UsageRater.rate``."""
        results, (counted, repeated, skipped) = self._core.rate(self._rows(batch))
        rated: list[tuple[PendingRow, RatedDelta]] = []
        refused: list[RefusedRow] = []
        for row, (status, delta) in zip(batch.pending, results, strict=True):
            if status == "refused":
                detail = refused_detail(row.key.line_item_id)
                refused.append(RefusedRow(row.event, row.key, detail))
            elif delta is not None:
                outcome, *values = delta
                rated.append((row, RatedDelta(Outcome(outcome), *map(Decimal, values))))
        outcomes = outcome_counts(counted, repeated, skipped)
        return RatedBatch(processed_rows(processed_at, rated), outcomes, refused)

    def forget_hashes(self) -> None:
        self._core.forget_hashes()

    def _rows(self, batch: ResolvedBatch) -> list[PendingTuple]:
        terms = self._terms
        return [
            (
                row.key,
                terms[id(row.match.binding)],
                row.event.id,
                epoch_us(row.event.timestamp),
                _text(row.measurement.quantity),
                row.measurement.unique_hash,
            )
            for row in batch.pending
        ]


def terms_tuple(binding: LineItemBinding) -> TermsTuple:
    meter = binding.meter
    return (
        price_tuple(binding.price),
        _text(binding.free_units),
        meter.aggregation.value,
        None if meter.bucket_size is None else meter.bucket_size.value,
    )

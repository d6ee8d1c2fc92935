"""The priced rows of one batch, column by column: the contract from rating to the store.

Rating produces, and the store's writer consumes, :class:`ProcessedRows`:
named columns of equal length, one entry per (event, line item) row in rating
order. The store derives the ``events_processed`` columns from these alone
(the catalog-derived ones - subscription, price, feature, meter, currency,
line item, period - from each row's :class:`~worker.domain.catalog_index.Match`),
so it never depends on how the rater represents its work in progress.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from worker.domain.catalog_index import Match
from worker.domain.events import Event

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class ProcessedRows:
    """Columns of the rows rated at ``processed_at``; every column has ``len(self)`` entries.

    ``matches[i]`` is row i's catalog match: its line item binding, billing
    period and rating state key (whose tenant and environment are the event's).
    The decimal columns are the row values of DESIGN.md §4, quantized to 15
    places. Read-only by contract (the columns may be tuples or lists).
    """

    processed_at: datetime
    events: Sequence[Event] = ()
    customer_ids: Sequence[str] = ()
    matches: Sequence[Match] = ()
    unique_hashes: Sequence[str] = ()
    qty_total: Sequence[Decimal] = ()
    qty_free_applied: Sequence[Decimal] = ()
    qty_billable: Sequence[Decimal] = ()
    cost: Sequence[Decimal] = ()
    unit_cost: Sequence[Decimal] = ()
    tier_snapshot: Sequence[Decimal] = ()

    def __len__(self) -> int:
        return len(self.events)

    @property
    def version(self) -> int:
        """Row version for ReplacingMergeTree: processing time in epoch microseconds."""
        return (self.processed_at - _EPOCH) // _ONE_US

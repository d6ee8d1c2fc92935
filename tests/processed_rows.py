"""Processed rows as objects, for tests: seed a store with rows, read a rater's output row by row.

Production writes :class:`~worker.domain.processed_rows.ProcessedRows` as
columns (``worker.store.processed.insert_rated``); tests often want one
:class:`~worker.domain.events.ProcessedEvent` per row instead, to build rows by
hand (:func:`insert_processed`) or to compare and sum a rater's rows
(:func:`processed_events`, :func:`summarize`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.domain.events import ProcessedEvent
from worker.domain.invoice import LineItemTotal
from worker.domain.money import ZERO, exact
from worker.domain.processed_rows import ProcessedRows
from worker.store.gateway import Gateway
from worker.store.processed import PROCESSED_TABLE
from worker.store.raw import properties_text

_MAX_LAG_MS = 2**32 - 1
_ONE_MS = timedelta(milliseconds=1)


def processed_events(rows: ProcessedRows) -> list[ProcessedEvent]:
    """One row object per rated row, with the values the store writes for it."""
    version, processed_at = rows.version, rows.processed_at
    return [
        ProcessedEvent(
            event=event,
            customer_id=customer_id,
            subscription_id=match.binding.subscription.id,
            sub_line_item_id=match.state_key.line_item_id,
            price_id=match.binding.price.price_id,
            feature_id=match.binding.feature_id,
            meter_id=match.binding.meter.id,
            period_id=match.state_key.period_id,
            currency=match.binding.price.currency,
            unique_hash=unique_hash,
            qty_total=qty_total,
            qty_billable=qty_billable,
            qty_free_applied=qty_free_applied,
            tier_snapshot=tier_snapshot,
            unit_cost=unit_cost,
            cost=cost,
            version=version,
            processed_at=processed_at,
            final_lag_ms=min(max((processed_at - event.timestamp) // _ONE_MS, 0), _MAX_LAG_MS),
        )
        for (
            event,
            customer_id,
            match,
            unique_hash,
            qty_total,
            qty_free_applied,
            qty_billable,
            cost,
            unit_cost,
            tier_snapshot,
        ) in zip(
            rows.events,
            rows.customer_ids,
            rows.matches,
            rows.unique_hashes,
            rows.qty_total,
            rows.qty_free_applied,
            rows.qty_billable,
            rows.cost,
            rows.unit_cost,
            rows.tier_snapshot,
            strict=True,
        )
    ]


_EVENT_COLUMNS = ("tenant_id", "environment_id", "id", "event_name", "external_customer_id")
_ROW_COLUMNS = (
    "customer_id",
    "subscription_id",
    "sub_line_item_id",
    "price_id",
    "feature_id",
    "meter_id",
    "period_id",
    "currency",
    "unique_hash",
    "qty_total",
    "qty_billable",
    "qty_free_applied",
    "tier_snapshot",
    "unit_cost",
    "cost",
    "version",
    "sign",
    "final_lag_ms",
)


def processed_columns(rows: Sequence[ProcessedEvent], now: datetime) -> dict[str, list[Any]]:
    """The ``events_processed`` columns of ``rows`` as Python lists; ``now`` fills missing times."""
    events = [row.event for row in rows]
    columns = {name: [getattr(e, name) for e in events] for name in _EVENT_COLUMNS}
    columns.update({name: [getattr(row, name) for row in rows] for name in _ROW_COLUMNS})
    columns["source"] = [e.source for e in events]
    columns["timestamp"] = [e.timestamp for e in events]
    columns["ingested_at"] = [e.ingested_at or now for e in events]
    columns["properties"] = [properties_text(e.properties) for e in events]
    columns["processed_at"] = [row.processed_at or now for row in rows]
    return columns


def insert_processed(
    gateway: Gateway, rows: Sequence[ProcessedEvent], *, dedup_token: str | None
) -> int:
    """Store row objects in one columnar insert (as the worker would); return the rows sent.

    Blocking, durable on return, idempotent with ``dedup_token``. Decimals
    must have at most 15 places (refused, never rounded).
    """
    if not rows:
        return 0
    columns = processed_columns(rows, datetime.now(UTC))
    return gateway.insert(PROCESSED_TABLE, columns, dedup_token=dedup_token)


class _Accumulator:
    __slots__ = ("billable", "cost", "count", "first", "free")

    def __init__(self, first: ProcessedEvent) -> None:
        self.first = first
        self.free = ZERO
        self.billable = ZERO
        self.cost = ZERO
        self.count = 0


@exact
def summarize(rows: Iterable[ProcessedEvent]) -> list[LineItemTotal]:
    """Sum rows per (subscription, line item, period), sorted by those keys: in
    memory what ``worker.store.processed.line_item_totals`` answers from the store."""
    sums: dict[tuple[str, str, int], _Accumulator] = {}
    for row in rows:
        key = (row.subscription_id, row.sub_line_item_id, row.period_id)
        acc = sums.get(key)
        if acc is None:
            acc = sums[key] = _Accumulator(row)
        acc.free += row.qty_free_applied
        acc.billable += row.qty_billable
        acc.cost += row.cost
        acc.count += 1
    totals = []
    for key in sorted(sums):
        acc = sums[key]
        first = acc.first
        totals.append(
            LineItemTotal(
                customer_id=first.customer_id,
                subscription_id=first.subscription_id,
                sub_line_item_id=first.sub_line_item_id,
                period_id=first.period_id,
                price_id=first.price_id,
                feature_id=first.feature_id,
                currency=first.currency,
                qty_total=acc.free + acc.billable,
                qty_free_applied=acc.free,
                qty_billable=acc.billable,
                cost=acc.cost,
                event_count=acc.count,
            )
        )
    return totals

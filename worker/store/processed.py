"""Priced rows in ``events_processed``: the write path and the reads the pipeline needs.

Every function is scoped by tenant and environment, parameterised (no value
in SQL text), and reads through ``FINAL``: a row stored twice (redelivery,
replay, reprocess) is counted once even before merges. Every function blocks
and raises :class:`~worker.store.errors.StoreError` on failure.

* :func:`insert_processed` - ``BulkInsertProcessedEvents``
* :func:`find_hash_owners` - the batched ``IsDuplicate``
* :func:`load_snapshots` - the batched ``GetLineItemUsage`` (aggregate state)
* :func:`line_item_totals`, :func:`get_period_cost`, :func:`get_period_feature_totals`
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from worker.domain.aggregates import AggregateSnapshot
from worker.domain.engine import DedupKey, StateKey
from worker.domain.events import ProcessedEvent
from worker.domain.invoice import LineItemTotal
from worker.domain.metering import WindowSize
from worker.domain.money import ZERO
from worker.store.gateway import Gateway
from worker.store.raw import properties_text

PROCESSED_TABLE = "events_processed"

#: Bucket width in seconds per window size; WEEK and MONTH are calendar based.
_BUCKET_STEP_S: dict[WindowSize, int] = {
    WindowSize.MINUTE: 60,
    WindowSize.MIN15: 15 * 60,
    WindowSize.MIN30: 30 * 60,
    WindowSize.HOUR: 3600,
    WindowSize.HOUR3: 3 * 3600,
    WindowSize.HOUR6: 6 * 3600,
    WindowSize.HOUR12: 12 * 3600,
    WindowSize.DAY: 86_400,
    WindowSize.WEEK: -1,
    WindowSize.MONTH: -2,
}
_NO_BUCKET = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PeriodFeatureTotal:
    """Usage of one feature in a period (the seed's ``PeriodFeatureTotal``).

    ``quantity`` = free + billable quantity; ``free_units`` = free quantity
    applied; ``cost`` = unrounded sum of the rows' cost.
    """

    feature_id: str
    quantity: Decimal
    free_units: Decimal
    cost: Decimal


# -- write -------------------------------------------------------------------


def processed_columns(rows: Sequence[ProcessedEvent], now: datetime) -> dict[str, list[Any]]:
    """The ``events_processed`` columns of ``rows``; ``now`` fills missing times."""
    events = [row.event for row in rows]
    return {
        "tenant_id": [e.tenant_id for e in events],
        "environment_id": [e.environment_id for e in events],
        "id": [e.id for e in events],
        "event_name": [e.event_name for e in events],
        "external_customer_id": [e.external_customer_id for e in events],
        "customer_id": [row.customer_id for row in rows],
        "source": [e.source for e in events],
        "timestamp": [e.timestamp for e in events],
        "ingested_at": [e.ingested_at or now for e in events],
        "properties": [properties_text(e.properties) for e in events],
        "subscription_id": [row.subscription_id for row in rows],
        "sub_line_item_id": [row.sub_line_item_id for row in rows],
        "price_id": [row.price_id for row in rows],
        "feature_id": [row.feature_id for row in rows],
        "meter_id": [row.meter_id for row in rows],
        "period_id": [row.period_id for row in rows],
        "currency": [row.currency for row in rows],
        "unique_hash": [row.unique_hash for row in rows],
        "qty_total": [row.qty_total for row in rows],
        "qty_billable": [row.qty_billable for row in rows],
        "qty_free_applied": [row.qty_free_applied for row in rows],
        "tier_snapshot": [row.tier_snapshot for row in rows],
        "unit_cost": [row.unit_cost for row in rows],
        "cost": [row.cost for row in rows],
        "version": [row.version for row in rows],
        "sign": [row.sign for row in rows],
        "processed_at": [row.processed_at or now for row in rows],
        "final_lag_ms": [row.final_lag_ms for row in rows],
    }


def insert_processed(
    gateway: Gateway, rows: Sequence[ProcessedEvent], *, dedup_token: str | None
) -> int:
    """Store priced rows in one columnar insert; return the number of rows sent.

    Blocking; durable on return. Idempotent with ``dedup_token`` (the same
    token again is a no-op); rows with the same identity under other tokens
    are replaced by the highest ``version`` and never double counted by reads.
    Decimals must have at most 15 places (they are refused, never rounded).
    """
    if not rows:
        return 0
    columns = processed_columns(rows, datetime.now(UTC))
    return gateway.insert(PROCESSED_TABLE, columns, dedup_token=dedup_token)


# -- reads for the pipeline --------------------------------------------------


def _scoped(keys: Iterable[StateKey], tenant_id: str, environment_id: str) -> None:
    for key in keys:
        if key[0] != tenant_id or key[1] != environment_id:
            raise ValueError(f"key {key!r} is outside tenant {tenant_id!r} / {environment_id!r}")


_HASH_OWNERS_SQL = """
SELECT sub_line_item_id, period_id, unique_hash,
       argMin(id, (qty_total = 0, timestamp, id)) AS owner
FROM events_processed FINAL
WHERE tenant_id = {tenant:String}
  AND environment_id = {environment:String}
  AND sub_line_item_id IN {line_items:Array(String)}
  AND unique_hash IN {hashes:Array(String)}
  AND (sub_line_item_id, period_id, unique_hash) IN (
      SELECT k.1, k.2, k.3
      FROM (SELECT arrayJoin({keys:Array(Tuple(String, UInt64, String))}) AS k))
GROUP BY sub_line_item_id, period_id, unique_hash
"""


def find_hash_owners(
    gateway: Gateway, tenant_id: str, environment_id: str, keys: Iterable[DedupKey]
) -> dict[DedupKey, str]:
    """For each (state key, unique_hash) already stored, the event id that counted it.

    One query for all ``keys`` (the batched ``IsDuplicate``). When several
    events stored the same hash in a (line item, period) - COUNT_UNIQUE repeats
    are stored with ``qty_total`` 0 - the owner is the one with a non-zero
    quantity (then the earliest). Keys not stored are absent from the result.
    Every key must belong to ``tenant_id`` / ``environment_id`` (ValueError).
    """
    wanted = set(keys)
    if not wanted:
        return {}
    _scoped((key for key, _ in wanted), tenant_id, environment_id)
    triples = sorted((key[2], key[3], unique_hash) for key, unique_hash in wanted)
    rows = gateway.query(
        _HASH_OWNERS_SQL,
        {
            "tenant": tenant_id,
            "environment": environment_id,
            "line_items": sorted({t[0] for t in triples}),
            "hashes": sorted({t[2] for t in triples}),
            "keys": triples,
        },
    )
    return {
        ((tenant_id, environment_id, line_item, int(period)), unique_hash): str(owner)
        for line_item, period, unique_hash, owner in rows
    }


_SNAPSHOT_SQL = """
SELECT sub_line_item_id, period_id,
       multiIf(step = 0, toDateTime(0, 'UTC'),
               step > 0, toDateTime(intDiv(toUnixTimestamp(timestamp), step) * step, 'UTC'),
               step = -1, toDateTime(toMonday(timestamp, 'UTC'), 'UTC'),
               toDateTime(toStartOfMonth(timestamp, 'UTC'), 'UTC')) AS bucket,
       sum(qty_total), count(), max(qty_total),
       argMax(timestamp, (timestamp, id)), argMax(id, (timestamp, id)),
       argMax(qty_total, (timestamp, id))
FROM (
    SELECT sub_line_item_id, period_id, timestamp, id, qty_total,
           transform(sub_line_item_id, {bucket_items:Array(String)},
                     {bucket_steps:Array(Int64)}, toInt64(0)) AS step
    FROM events_processed FINAL
    WHERE tenant_id = {tenant:String}
      AND environment_id = {environment:String}
      AND sub_line_item_id IN {line_items:Array(String)}
      AND (sub_line_item_id, period_id) IN (
          SELECT k.1, k.2 FROM (SELECT arrayJoin({keys:Array(Tuple(String, UInt64))}) AS k))
)
GROUP BY sub_line_item_id, period_id, bucket
"""


def load_snapshots(
    gateway: Gateway,
    tenant_id: str,
    environment_id: str,
    requests: Mapping[StateKey, WindowSize | None],
) -> dict[StateKey, AggregateSnapshot]:
    """Aggregate snapshots of many (line item, period) in one query (``GetLineItemUsage``).

    ``requests`` maps each state key to its meter's bucket size (None when the
    meter is not bucketed). Every requested key is in the result (an empty
    snapshot when nothing is stored). ``total`` = sum(qty_total), ``count`` =
    rows, ``maximum`` = max(qty_total) (0 when empty), ``latest`` = the row with
    the greatest (timestamp, id); ``bucket_maxima`` (bucketed keys only) uses
    the UTC windows of :func:`worker.domain.windows.window_start`.
    """
    if not requests:
        return {}
    _scoped(requests, tenant_id, environment_id)
    buckets: dict[str, int] = {}
    for key, size in requests.items():
        step = 0 if size is None else _BUCKET_STEP_S[size]
        if buckets.setdefault(key[2], step) != step:
            raise ValueError(f"line item {key[2]!r} requested with two bucket sizes")
    bucketed = sorted(item for item, step in buckets.items() if step != 0)
    rows = gateway.query(
        _SNAPSHOT_SQL,
        {
            "tenant": tenant_id,
            "environment": environment_id,
            "line_items": sorted(buckets),
            "keys": sorted((key[2], key[3]) for key in requests),
            "bucket_items": bucketed,
            "bucket_steps": [buckets[item] for item in bucketed],
        },
    )
    parts: dict[StateKey, list[tuple[Any, ...]]] = {}
    for line_item, period, *rest in rows:
        parts.setdefault((tenant_id, environment_id, line_item, int(period)), []).append(
            tuple(rest)
        )
    return {key: _snapshot(parts.get(key, []), bucketed=buckets[key[2]] != 0) for key in requests}


def _snapshot(groups: list[tuple[Any, ...]], *, bucketed: bool) -> AggregateSnapshot:
    """Combine per-bucket groups (bucket, sum, count, max, ts, id, value) into one snapshot."""
    if not groups:
        return AggregateSnapshot()
    total, count, maximum = ZERO, 0, None
    latest: tuple[datetime, str, Decimal] | None = None
    maxima: dict[datetime, Decimal] = {}
    for bucket, part_sum, part_count, part_max, ts, event_id, value in groups:
        total += part_sum
        count += int(part_count)
        maximum = part_max if maximum is None or part_max > maximum else maximum
        ts = ts.astimezone(UTC)
        if latest is None or (ts, event_id) > latest[:2]:
            latest = (ts, str(event_id), value)
        if bucketed:
            maxima[bucket.astimezone(UTC)] = part_max
    return AggregateSnapshot(
        total=total, count=count, maximum=maximum or ZERO, latest=latest, bucket_maxima=maxima
    )


# -- totals (invoice side) ---------------------------------------------------

_LINE_ITEM_TOTALS_SQL = """
SELECT min(customer_id), subscription_id, sub_line_item_id, period_id,
       min(price_id), min(feature_id), min(currency),
       sum(qty_free_applied), sum(qty_billable), sum(cost), count()
FROM events_processed FINAL
WHERE tenant_id = {tenant:String}
  AND environment_id = {environment:String}
  AND ({customer:String} = '' OR customer_id = {customer:String})
  AND ({subscription:String} = '' OR subscription_id = {subscription:String})
GROUP BY subscription_id, sub_line_item_id, period_id
ORDER BY subscription_id, sub_line_item_id, period_id
"""


def line_item_totals(
    gateway: Gateway,
    tenant_id: str,
    environment_id: str,
    *,
    customer_id: str | None = None,
    subscription_id: str | None = None,
) -> list[LineItemTotal]:
    """Deduplicated totals per (subscription, line item, period), sorted by those keys.

    ``qty_total`` = sum(qty_free_applied) + sum(qty_billable) (telescoping rows,
    DESIGN.md §4), ``cost`` = sum(cost) unrounded, ``event_count`` = rows.
    """
    rows = gateway.query(
        _LINE_ITEM_TOTALS_SQL,
        {
            "tenant": tenant_id,
            "environment": environment_id,
            "customer": customer_id or "",
            "subscription": subscription_id or "",
        },
    )
    return [
        LineItemTotal(
            customer_id=customer,
            subscription_id=subscription,
            sub_line_item_id=line_item,
            period_id=int(period),
            price_id=price,
            feature_id=feature,
            currency=currency,
            qty_total=free + billable,
            qty_free_applied=free,
            qty_billable=billable,
            cost=cost,
            event_count=int(count),
        )
        for (
            customer,
            subscription,
            line_item,
            period,
            price,
            feature,
            currency,
            free,
            billable,
            cost,
            count,
        ) in rows
    ]


_PERIOD_COST_SQL = """
SELECT sum(cost)
FROM events_processed FINAL
WHERE tenant_id = {tenant:String}
  AND environment_id = {environment:String}
  AND customer_id = {customer:String}
  AND subscription_id = {subscription:String}
  AND period_id = {period:UInt64}
"""
_PERIOD_FEATURES_SQL = """
SELECT feature_id, sum(qty_free_applied), sum(qty_billable), sum(cost)
FROM events_processed FINAL
WHERE tenant_id = {tenant:String}
  AND environment_id = {environment:String}
  AND customer_id = {customer:String}
  AND subscription_id = {subscription:String}
  AND period_id = {period:UInt64}
GROUP BY feature_id
ORDER BY feature_id
"""


def _period_params(
    tenant_id: str, environment_id: str, customer_id: str, subscription_id: str, period_id: int
) -> dict[str, Any]:
    return {
        "tenant": tenant_id,
        "environment": environment_id,
        "customer": customer_id,
        "subscription": subscription_id,
        "period": period_id,
    }


def get_period_cost(
    gateway: Gateway,
    tenant_id: str,
    environment_id: str,
    customer_id: str,
    subscription_id: str,
    period_id: int,
) -> Decimal:
    """Unrounded usage cost of a customer's subscription in one period (0 when none)."""
    rows = gateway.query(
        _PERIOD_COST_SQL,
        _period_params(tenant_id, environment_id, customer_id, subscription_id, period_id),
    )
    return rows[0][0] if rows and rows[0][0] is not None else ZERO


def get_period_feature_totals(
    gateway: Gateway,
    tenant_id: str,
    environment_id: str,
    customer_id: str,
    subscription_id: str,
    period_id: int,
) -> list[PeriodFeatureTotal]:
    """Usage per feature of a customer's subscription in one period, sorted by feature id."""
    rows = gateway.query(
        _PERIOD_FEATURES_SQL,
        _period_params(tenant_id, environment_id, customer_id, subscription_id, period_id),
    )
    return [
        PeriodFeatureTotal(feature_id=feature, quantity=free + billable, free_units=free, cost=cost)
        for feature, free, billable, cost in rows
    ]

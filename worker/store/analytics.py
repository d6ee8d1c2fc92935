"""Reads of priced rows for people: ``GetProcessedEvents``, ``GetUsageAnalytics``,
``GetDetailedUsageAnalytics`` (the seed's ``ProcessedEventRepository``).

Fixed, parameterised queries over ``events_processed FINAL`` (a row stored
twice - redelivery, replay, reprocess - counts once), scoped by tenant and
environment, event time in ``[start, end)``.

Usage is ``qty_free_applied + qty_billable`` summed over rows: the rows are
deltas of the period quantity (DESIGN.md §4), so over a whole period this is
the period's quantity for every aggregation type (``qty_total`` is the raw
per-event measure, which does not add up for MAX or LATEST). Cost is the
unrounded sum of ``cost``.

Every function blocks and raises :class:`~worker.store.errors.StoreError`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from worker.domain.events import ProcessedEvent
from worker.store.ddl import SHARD_LOCAL_SUBQUERIES
from worker.store.events_reads import event_from_row
from worker.store.gateway import Gateway, Row
from worker.store.params import (
    AnalyticsGroup,
    DetailedUsageAnalytic,
    GetProcessedEventsParams,
    ProcessedEventsPage,
    UsageAnalytic,
    UsageAnalyticPoint,
    UsageAnalyticsParams,
    filters_param,
    window_step,
)

# -- GetProcessedEvents --------------------------------------------------------

_PROCESSED_WHERE = """
FROM events_processed FINAL
WHERE tenant_id = {tenant:String}
  AND environment_id = {environment:String}
  AND timestamp >= {start:DateTime64(6, 'UTC')}
  AND timestamp < {end:DateTime64(6, 'UTC')}
  AND ({customer:String} = '' OR customer_id = {customer:String})
  AND ({subscription:String} = '' OR subscription_id = {subscription:String})
  AND ({meter:String} = '' OR meter_id = {meter:String})
  AND ({feature:String} = '' OR feature_id = {feature:String})
  AND ({price:String} = '' OR price_id = {price:String})
"""
# Only constant fragments are joined: no value or caller text reaches SQL.
_PROCESSED_PAGE_SQL = "".join(
    (
        """
SELECT id, tenant_id, environment_id, event_name, timestamp, properties, source,
       customer_id, external_customer_id, ingested_at,
       subscription_id, sub_line_item_id, price_id, feature_id, meter_id, period_id,
       currency, unique_hash, qty_total, qty_billable, qty_free_applied, tier_snapshot,
       unit_cost, cost, version, sign, processed_at, final_lag_ms
""",
        _PROCESSED_WHERE,
        """
ORDER BY timestamp DESC, id DESC, sub_line_item_id ASC, period_id ASC
LIMIT {limit:UInt32} OFFSET {offset:UInt64}
""",
    )
)
_PROCESSED_COUNT_SQL = "".join(("SELECT count()", _PROCESSED_WHERE))


def get_processed_events(gateway: Gateway, params: GetProcessedEventsParams) -> ProcessedEventsPage:
    """A page of priced rows, newest event first (ties: event id, line item, period).

    One query, plus one for the total when ``count_total``.
    """
    base = {
        "tenant": params.tenant_id,
        "environment": params.environment_id,
        "start": params.start_time,
        "end": params.end_time,
        "customer": params.customer_id,
        "subscription": params.subscription_id,
        "meter": params.meter_id,
        "feature": params.feature_id,
        "price": params.price_id,
    }
    rows = gateway.query(
        _PROCESSED_PAGE_SQL, {**base, "limit": params.limit, "offset": params.offset}
    )
    total = None
    if params.count_total:
        total = int(gateway.query(_PROCESSED_COUNT_SQL, base)[0][0])
    return ProcessedEventsPage(tuple(_processed_from_row(row) for row in rows), total)


def _processed_from_row(row: Row) -> ProcessedEvent:
    """A :class:`ProcessedEvent` from the raw event columns (see
    :func:`~worker.store.events_reads.event_from_row`) followed by the pricing ones."""
    event = event_from_row(row[:10])
    (
        subscription_id,
        sub_line_item_id,
        price_id,
        feature_id,
        meter_id,
        period_id,
        currency,
        unique_hash,
        qty_total,
        qty_billable,
        qty_free_applied,
        tier_snapshot,
        unit_cost,
        cost,
        version,
        sign,
        processed_at,
        final_lag_ms,
    ) = row[10:]
    return ProcessedEvent(
        event=event,
        customer_id=event.customer_id,
        subscription_id=subscription_id,
        sub_line_item_id=sub_line_item_id,
        price_id=price_id,
        feature_id=feature_id,
        meter_id=meter_id,
        period_id=int(period_id),
        currency=currency,
        unique_hash=unique_hash,
        qty_total=qty_total,
        qty_billable=qty_billable,
        qty_free_applied=qty_free_applied,
        tier_snapshot=tier_snapshot,
        unit_cost=unit_cost,
        cost=cost,
        version=int(version),
        sign=int(sign),
        processed_at=processed_at.astimezone(UTC),
        final_lag_ms=int(final_lag_ms),
    )


# -- GetUsageAnalytics ---------------------------------------------------------

_USAGE_ANALYTICS_SQL = """
SELECT source, feature_id, sum(qty_free_applied + qty_billable), sum(cost)
FROM events_processed FINAL
WHERE tenant_id = {tenant:String}
  AND environment_id = {environment:String}
  AND ({customer:String} = '' OR customer_id = {customer:String})
  AND timestamp >= {start:DateTime64(6, 'UTC')}
  AND timestamp < {end:DateTime64(6, 'UTC')}
GROUP BY source, feature_id
ORDER BY source, feature_id
"""


def get_usage_analytics(
    gateway: Gateway,
    tenant_id: str,
    environment_id: str,
    customer_id: str,
    lookback_hours: int,
    *,
    now: datetime | None = None,
) -> list[UsageAnalytic]:
    """Usage and cost per (source, feature) of events in the last ``lookback_hours``.

    The window is ``[now - lookback_hours, now)`` (``now`` defaults to the
    current time); ``customer_id`` "" means every customer. Sorted by source,
    then feature id.
    """
    if not tenant_id or not environment_id:
        raise ValueError("tenant_id and environment_id are required")
    if lookback_hours <= 0:
        raise ValueError(f"lookback_hours must be > 0, got {lookback_hours}")
    end = now or datetime.now(UTC)
    if end.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    rows = gateway.query(
        _USAGE_ANALYTICS_SQL,
        {
            "tenant": tenant_id,
            "environment": environment_id,
            "customer": customer_id,
            "start": end - timedelta(hours=lookback_hours),
            "end": end,
        },
    )
    return [
        UsageAnalytic(source=source, feature_id=feature, usage=usage, cost=cost)
        for source, feature, usage, cost in rows
    ]


# -- GetDetailedUsageAnalytics -------------------------------------------------

# Grouping keys are chosen by bool parameters (an ungrouped key is the constant
# ""), so one statement serves every ``group_by``; totals and window points
# come from one GROUPING SETS query. Property filters select event ids from the
# raw events of the same tenant, environment and window (the priced rows keep
# the properties only as text).
_DETAILED_SQL = "".join(
    (
        """
SELECT feature_key, source_key, window_start, grouping(window_start) AS is_total,
       if(min(meter_id) = max(meter_id), min(meter_id), ''),
       if(min(event_name) = max(event_name), min(event_name), ''),
       if(min(currency) = max(currency), min(currency), ''),
       sum(usage), sum(cost), uniqExact(id)
FROM (
    SELECT if({by_feature:UInt8} = 1, feature_id, '') AS feature_key,
           if({by_source:UInt8} = 1, source, '') AS source_key,
           multiIf({window_step:Int64} = 0, toDateTime64(0, 6, 'UTC'),
                   {window_step:Int64} > 0,
                   toDateTime64(intDiv(toUnixTimestamp(timestamp), {window_step:Int64})
                                * {window_step:Int64}, 6, 'UTC'),
                   {window_step:Int64} = -1, toDateTime64(toMonday(timestamp, 'UTC'), 6, 'UTC'),
                   toDateTime64(toStartOfMonth(timestamp, 'UTC'), 6, 'UTC')) AS window_start,
           meter_id, toString(event_name) AS event_name, toString(currency) AS currency, id,
           qty_free_applied + qty_billable AS usage, cost
    FROM events_processed FINAL
    WHERE tenant_id = {tenant:String}
      AND environment_id = {environment:String}
      AND timestamp >= {start:DateTime64(6, 'UTC')}
      AND timestamp < {end:DateTime64(6, 'UTC')}
      AND ({customer:String} = '' OR customer_id = {customer:String})
      AND ({external_customer:String} = ''
           OR external_customer_id = {external_customer:String})
      AND (empty({features:Array(String)}) OR has({features:Array(String)}, feature_id))
      AND (empty({sources:Array(String)}) OR has({sources:Array(String)}, source))
      AND ({by_properties:UInt8} = 0 OR id IN (
          SELECT id
          FROM events
          WHERE {by_properties:UInt8} = 1
            AND tenant_id = {tenant:String}
            AND environment_id = {environment:String}
            AND timestamp >= {start:DateTime64(6, 'UTC')}
            AND timestamp < {end:DateTime64(6, 'UTC')}
            AND arrayAll(f -> mapContains(canonical_properties, f.1)
                              AND has(f.2, canonical_properties[f.1]),
                         {filters:Array(Tuple(String, Array(String)))})))
)
GROUP BY GROUPING SETS ((feature_key, source_key), (feature_key, source_key, window_start))
""",
        SHARD_LOCAL_SUBQUERIES,
    )
)


def get_detailed_usage_analytics(
    gateway: Gateway, params: UsageAnalyticsParams
) -> list[DetailedUsageAnalytic]:
    """Usage, cost and distinct events per group, with window points, in one query.

    Groups are sorted by (feature id, source); points by window start and only
    for windows with rows (none without ``window_size``).
    """
    group_by = {AnalyticsGroup(group) for group in params.group_by}
    step = window_step(params.window_size)
    rows = gateway.query(
        _DETAILED_SQL,
        {
            "tenant": params.tenant_id,
            "environment": params.environment_id,
            "start": params.start_time,
            "end": params.end_time,
            "customer": params.customer_id,
            "external_customer": params.external_customer_id,
            "features": list(params.feature_ids),
            "sources": list(params.sources),
            "by_feature": int(AnalyticsGroup.FEATURE_ID in group_by),
            "by_source": int(AnalyticsGroup.SOURCE in group_by),
            "by_properties": int(bool(params.property_filters)),
            "filters": filters_param(params.property_filters),
            "window_step": step,
        },
    )
    totals: dict[tuple[str, str], tuple[Any, ...]] = {}
    points: dict[tuple[str, str], list[UsageAnalyticPoint]] = {}
    for feature, source, window_start, is_total, *values in rows:
        key = (feature, source)
        if is_total:
            totals[key] = tuple(values)
        elif step != 0:
            _, _, _, usage, cost, events = values
            points.setdefault(key, []).append(
                UsageAnalyticPoint(window_start.astimezone(UTC), usage, cost, int(events))
            )
    return [
        DetailedUsageAnalytic(
            feature_id=feature,
            source=source,
            meter_id=meter,
            event_name=event_name,
            currency=currency,
            total_usage=Decimal(usage),
            total_cost=Decimal(cost),
            event_count=int(events),
            points=tuple(sorted(points.get((feature, source), []), key=lambda p: p.window_start)),
        )
        for (feature, source), (meter, event_name, currency, usage, cost, events) in sorted(
            totals.items()
        )
    ]

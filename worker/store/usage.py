"""Usage aggregates over raw events: the seed's ``GetUsage`` and ``GetUsageWithFilters``.

One fixed, parameterised query serves every aggregation type, window size and
filter group (no SQL is built per call; no value is in SQL text). It reads
``events FINAL`` - an event stored twice counts once - scoped by tenant and
environment, event name, ``[start, end)`` and optional customer ids, and:

* matches properties on ``canonical_properties`` (the meter-match canonical
  form, DESIGN.md §3): AND across keys, OR within a key's values;
* reads values from ``numeric_properties``: what metering measures from the
  property (numbers or numeric strings; missing, unparseable or >= 1e18 -> 0;
  negatives -> 0; 15 decimal places);
* assigns each event to the first matching filter group in priority order;
* groups by bucket (the window, or MAX's ``bucket_size``), then by window
  and in total (``GROUPING SETS``), computing every aggregate at once; Python
  picks the one asked for. Windows are those of
  :func:`worker.domain.windows.window_start` (UTC).

Aggregations: COUNT = events; SUM; SUM_WITH_MULTIPLIER = sum of value x
multiplier per event; AVG = SUM / COUNT (15 places, half up; events without
the field count as 0, as in metering); MAX, or with ``bucket_size`` the sum of
each bucket's maximum (a bucket belongs to the window holding its start);
LATEST = value of the greatest ``(timestamp, id)``; COUNT_UNIQUE = distinct
canonical values (events without the field ignored); WEIGHTED_SUM = sum of
value x ``(end - ts) / (end - start)``, the query range being the period.

Known difference from metering: a property value with more than 15 decimal
places is rounded to 15 when stored, before the multiplier / weight apply
(metering rounds after). Rows stored before schema migration 2 have no
property maps and measure 0.

Both functions block and raise :class:`~worker.store.errors.StoreError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, timedelta
from decimal import Decimal
from typing import Any

from worker.domain.metering import AggregationType
from worker.domain.money import ONE, ZERO, div, quantize
from worker.store.gateway import Gateway
from worker.store.params import (
    AggregationResult,
    FilterGroup,
    UsageParams,
    UsageResult,
    UsageWithFiltersParams,
    filters_param,
    window_step,
)

_USAGE_SQL = """
SELECT group_index, window_start, grouping(window_start) AS is_total,
       sum(events), sum(total), sum(peak), max(peak),
       argMax(latest_value, latest_key), uniqExactMerge(distinct_values), sum(weighted)
FROM (
    SELECT group_index, bucket,
           multiIf({window_step:Int64} = 0, toDateTime64(0, 6, 'UTC'),
                   {window_step:Int64} > 0,
                   toDateTime64(intDiv(toUnixTimestamp(bucket), {window_step:Int64})
                                * {window_step:Int64}, 6, 'UTC'),
                   {window_step:Int64} = -1, toDateTime64(toMonday(bucket, 'UTC'), 6, 'UTC'),
                   toDateTime64(toStartOfMonth(bucket, 'UTC'), 6, 'UTC')) AS window_start,
           count() AS events, sum(value) AS total, max(value) AS peak,
           argMax(value, (timestamp, id)) AS latest_value, max((timestamp, id)) AS latest_key,
           uniqExactState(distinct_value) AS distinct_values, sum(weighted_value) AS weighted
    FROM (
        SELECT timestamp, id, group_index, value,
               multiIf({bucket_step:Int64} = 0, toDateTime64(0, 6, 'UTC'),
                       {bucket_step:Int64} > 0,
                       toDateTime64(intDiv(toUnixTimestamp(timestamp), {bucket_step:Int64})
                                    * {bucket_step:Int64}, 6, 'UTC'),
                       {bucket_step:Int64} = -1,
                       toDateTime64(toMonday(timestamp, 'UTC'), 6, 'UTC'),
                       toDateTime64(toStartOfMonth(timestamp, 'UTC'), 6, 'UTC')) AS bucket,
               if(mapContains(canonical_properties, {field:String}),
                  canonical_properties[{field:String}], NULL) AS distinct_value,
               if({weighted:UInt8} = 1,
                  toDecimal128(round(toDecimal256(value, 30)
                                     * (toUnixTimestamp64Micro({end:DateTime64(6, 'UTC')})
                                        - toUnixTimestamp64Micro(timestamp))
                                     / {length_us:Int64}, 15), 15),
                  toDecimal128(0, 15)) AS weighted_value
        FROM (
            SELECT timestamp, id,
                   arrayFirstIndex(
                       group_filters -> arrayAll(
                           f -> mapContains(canonical_properties, f.1)
                                AND has(f.2, canonical_properties[f.1]),
                           group_filters),
                       {groups:Array(Array(Tuple(String, Array(String))))}) AS group_index,
                   canonical_properties,
                   if({multiply:UInt8} = 1,
                      toDecimal128(
                          if(toDecimal256(numeric_properties[{field:String}], 15)
                               * toDecimal256({multiplier:String}, 15)
                               >= toDecimal256('1000000000000000000', 0),
                             toDecimal256(0, 30),
                             round(toDecimal256(numeric_properties[{field:String}], 15)
                                   * toDecimal256({multiplier:String}, 15), 15)),
                          15),
                      numeric_properties[{field:String}]) AS value
            FROM events FINAL
            WHERE tenant_id = {tenant:String}
              AND environment_id = {environment:String}
              AND event_name = {event_name:String}
              AND timestamp >= {start:DateTime64(6, 'UTC')}
              AND timestamp < {end:DateTime64(6, 'UTC')}
              AND ({customer:String} = '' OR customer_id = {customer:String})
              AND ({external_customer:String} = ''
                   OR external_customer_id = {external_customer:String})
              AND arrayAll(f -> mapContains(canonical_properties, f.1)
                                AND has(f.2, canonical_properties[f.1]),
                           {filters:Array(Tuple(String, Array(String)))})
        )
        WHERE group_index > 0
    )
    GROUP BY group_index, bucket
)
GROUP BY GROUPING SETS ((group_index), (group_index, window_start))
"""

_MATCH_ALL = FilterGroup(id="", priority=0)


def get_usage(gateway: Gateway, params: UsageParams) -> AggregationResult:
    """The aggregate of ``params`` over ``[start, end)`` and per window (see module doc)."""
    [result] = _aggregate(gateway, params, [_MATCH_ALL])
    return result


def get_usage_with_filters(
    gateway: Gateway, params: UsageWithFiltersParams
) -> list[AggregationResult]:
    """One result per filter group, highest priority first, in one query.

    Each event counts only in its highest-priority matching group; events
    matching no group are not counted. Groups without events have value 0.
    """
    return _aggregate(gateway, params.usage, params.by_priority())


def _aggregate(
    gateway: Gateway, params: UsageParams, groups: Sequence[FilterGroup]
) -> list[AggregationResult]:
    if not groups:
        return []
    kind = params.aggregation
    bucketed = kind is AggregationType.MAX and params.bucket_size is not None
    window = window_step(params.window_size)
    multiplier = params.multiplier if params.multiplier is not None else ONE
    length_us = (params.end_time - params.start_time) // timedelta(microseconds=1)
    rows = gateway.query(
        _USAGE_SQL,
        {
            "tenant": params.tenant_id,
            "environment": params.environment_id,
            "event_name": params.event_name.strip(),
            "start": params.start_time,
            "end": params.end_time,
            "customer": params.customer_id,
            "external_customer": params.external_customer_id,
            "filters": filters_param(params.filters),
            "groups": [filters_param(group.filters) for group in groups],
            "field": params.property_name,
            "multiply": int(kind is AggregationType.SUM_WITH_MULTIPLIER),
            "multiplier": format(multiplier, "f"),
            "weighted": int(kind is AggregationType.WEIGHTED_SUM),
            "length_us": max(1, length_us),
            "window_step": window,
            "bucket_step": window_step(params.bucket_size) if bucketed else window,
        },
    )
    totals: dict[int, Decimal] = {}
    windows: dict[int, list[UsageResult]] = {}
    for group_index, window_start, is_total, *aggregates in rows:
        value = _pick(kind, bucketed, aggregates)
        if is_total:
            totals[int(group_index)] = value
        elif window != 0:
            windows.setdefault(int(group_index), []).append(
                UsageResult(window_start.astimezone(UTC), value)
            )
    return [
        AggregationResult(
            event_name=params.event_name,
            aggregation=kind,
            value=totals.get(index, ZERO),
            windows=tuple(sorted(windows.get(index, []), key=lambda r: r.window_start)),
            filter_group_id=group.id,
        )
        for index, group in enumerate(groups, start=1)
    ]


def _pick(kind: AggregationType, bucketed: bool, aggregates: list[Any]) -> Decimal:
    """The value of ``kind`` from one row's aggregates.

    Those are: events, sum, sum of bucket peaks, peak, latest, distinct, weighted.
    """
    events, total, peak_sum, peak, latest, distinct, weighted = aggregates
    if kind is AggregationType.COUNT:
        return Decimal(int(events))
    if kind in (AggregationType.SUM, AggregationType.SUM_WITH_MULTIPLIER):
        return Decimal(total)
    if kind is AggregationType.AVG:
        return quantize(div(Decimal(total), Decimal(int(events)))) if events else ZERO
    if kind is AggregationType.MAX:
        return Decimal(peak_sum if bucketed else peak)
    if kind is AggregationType.LATEST:
        return Decimal(latest)
    if kind is AggregationType.COUNT_UNIQUE:
        return Decimal(int(distinct))
    return Decimal(weighted)

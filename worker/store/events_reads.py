"""Raw event reads: the seed's ``GetEvents`` and ``FindUnprocessedEvents``.

Fixed, parameterised queries over ``events FINAL`` (an event stored twice is
returned once), scoped by tenant and environment, time ranges ``[start, end)``.
Pages are keyset pages over ``(timestamp, id)``: ties on the timestamp are
ordered by id, so no event is skipped or repeated between pages. Property
filters match ``canonical_properties`` (the meter-match canonical form).

Both functions block and raise :class:`~worker.store.errors.StoreError`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from worker.domain.events import Event
from worker.store.ddl import SHARD_LOCAL_SUBQUERIES
from worker.store.gateway import Gateway, Row
from worker.store.params import (
    EventIterator,
    EventsPage,
    FindUnprocessedEventsParams,
    GetEventsParams,
    SortOrder,
    filters_param,
)

_NO_CURSOR = EventIterator(datetime(1970, 1, 1, tzinfo=UTC), "")

# A page is the events nearest a cursor in one scan direction. A sort
# direction cannot be a query parameter, so the two directions are two
# statements assembled from constant fragments at import.
_EVENTS_WHERE = """
FROM events FINAL
WHERE tenant_id = {tenant:String}
  AND environment_id = {environment:String}
  AND timestamp >= {start:DateTime64(6, 'UTC')}
  AND timestamp < {end:DateTime64(6, 'UTC')}
  AND ({event_name:String} = '' OR event_name = {event_name:String})
  AND ({external_customer:String} = '' OR external_customer_id = {external_customer:String})
  AND ({event_id:String} = '' OR id = {event_id:String})
  AND ({source:String} = '' OR source = {source:String})
  AND arrayAll(f -> mapContains(canonical_properties, f.1) AND has(f.2, canonical_properties[f.1]),
               {filters:Array(Tuple(String, Array(String)))})
"""
_EVENT_COLUMNS = """
SELECT id, tenant_id, environment_id, event_name, timestamp, properties, source,
       customer_id, external_customer_id, ingested_at
"""
_CURSORS = """
  AND ({has_after:UInt8} = 0
       OR (timestamp >= {after_ts:DateTime64(6, 'UTC')}
           AND (timestamp, id) > ({after_ts:DateTime64(6, 'UTC')}, {after_id:String})))
  AND ({has_before:UInt8} = 0
       OR (timestamp <= {before_ts:DateTime64(6, 'UTC')}
           AND (timestamp, id) < ({before_ts:DateTime64(6, 'UTC')}, {before_id:String})))
"""
_PAGE = "LIMIT {limit:UInt32} OFFSET {offset:UInt32}"
# Only constant fragments are joined: no value or caller text reaches SQL.
_PAGE_SQL = {
    SortOrder.ASC: "".join(
        (_EVENT_COLUMNS, _EVENTS_WHERE, _CURSORS, "ORDER BY timestamp ASC, id ASC\n", _PAGE)
    ),
    SortOrder.DESC: "".join(
        (_EVENT_COLUMNS, _EVENTS_WHERE, _CURSORS, "ORDER BY timestamp DESC, id DESC\n", _PAGE)
    ),
}
_COUNT_SQL = "".join(("SELECT count()", _EVENTS_WHERE))


def get_events(gateway: Gateway, params: GetEventsParams) -> EventsPage:
    """One page of raw events in ``params.order`` (see :class:`GetEventsParams`).

    With ``iter_first`` only, the page is the ``page_size`` events right after
    it (scanned ascending, then put in ``order``); otherwise the events right
    before ``iter_last`` or, without cursors, the first events in ``order``.
    ``offset`` skips events from the cursor. One query, plus one for the total.
    """
    scan_newer = params.iter_first is not None and params.iter_last is None
    if params.iter_first is None and params.iter_last is None:
        scan = params.order
    else:
        scan = SortOrder.ASC if scan_newer else SortOrder.DESC
    after = params.iter_first or _NO_CURSOR
    before = params.iter_last or _NO_CURSOR
    base = _base_params(params)
    rows = gateway.query(
        _PAGE_SQL[scan],
        {
            **base,
            "has_after": int(params.iter_first is not None),
            "after_ts": after.timestamp,
            "after_id": after.id,
            "has_before": int(params.iter_last is not None),
            "before_ts": before.timestamp,
            "before_id": before.id,
            "limit": params.page_size,
            "offset": params.offset,
        },
    )
    events = [event_from_row(row) for row in rows]
    if scan != params.order:
        events.reverse()
    total = None
    if params.count_total:
        total = int(gateway.query(_COUNT_SQL, base)[0][0])
    return EventsPage(tuple(events), total)


def _base_params(params: GetEventsParams) -> dict[str, Any]:
    return {
        "tenant": params.tenant_id,
        "environment": params.environment_id,
        "start": params.start_time,
        "end": params.end_time,
        "event_name": params.event_name.strip(),
        "external_customer": params.external_customer_id,
        "event_id": params.event_id,
        "source": params.source,
        "filters": filters_param(params.property_filters),
    }


# The anti-join's right side is scoped exactly like the left: same tenant,
# environment, customer, event name and time window (from the cursor on), so a
# page never reads the tenant's whole processed history.
_SCOPE = """
WHERE tenant_id = {tenant:String}
  AND environment_id = {environment:String}
  AND ({external_customer:String} = '' OR external_customer_id = {external_customer:String})
  AND ({event_name:String} = '' OR event_name = {event_name:String})"""

# The cursor: after (after_ts, after_id), or after every event at after_ts when
# strict. Written as plain comparisons (no tuple, no if()) so that ClickHouse
# reads the time-ordered ``by_time`` projections (schema migration 4).
_AFTER = """
  AND timestamp >= {after_ts:DateTime64(6, 'UTC')}
  AND (timestamp > {after_ts:DateTime64(6, 'UTC')}
       OR ({strict:UInt8} = 0 AND id > {after_id:String}))"""

# How far the next slice reaches: the timestamp of the `scan`-th raw event from
# the cursor on (copies of an event only move the bound, so no FINAL).
_SLICE_BOUND_SQL = "".join(
    (
        "SELECT max(timestamp), count() FROM (SELECT timestamp FROM events",
        _SCOPE,
        """
  AND timestamp >= {start:DateTime64(6, 'UTC')}
  AND timestamp < {end:DateTime64(6, 'UTC')}
  AND timestamp >= {after_ts:DateTime64(6, 'UTC')}
  AND (timestamp > {after_ts:DateTime64(6, 'UTC')} OR {strict:UInt8} = 0)
ORDER BY timestamp ASC
LIMIT {scan:UInt32})""",
    )
)

# Unprocessed events of one slice: the anti-join's right side covers only the
# slice's time range, never the whole window. No FINAL (it would bypass the
# projections): unmerged copies of a raw event come out adjacent, newest
# ``ingested_at`` first, and the caller keeps the first. On a cluster the
# anti-join runs on each shard (see SHARD_LOCAL_SUBQUERIES).
_UNPROCESSED_SQL = "".join(
    (
        """
SELECT id, tenant_id, environment_id, event_name, timestamp, properties, source,
       customer_id, external_customer_id, ingested_at
FROM events""",
        _SCOPE,
        """
  AND timestamp >= {start:DateTime64(6, 'UTC')}
  AND timestamp < {end:DateTime64(6, 'UTC')}
  AND timestamp <= {bound:DateTime64(6, 'UTC')}""",
        _AFTER,
        """
  AND id NOT IN (
      SELECT id FROM events_processed""",
        _SCOPE,
        """
        AND timestamp >= {after_ts:DateTime64(6, 'UTC')}
        AND timestamp >= {start:DateTime64(6, 'UTC')}
        AND timestamp <= {bound:DateTime64(6, 'UTC')})
ORDER BY timestamp ASC, id ASC, ingested_at DESC
LIMIT {limit:UInt32}""",
        SHARD_LOCAL_SUBQUERIES,
    ),
)

#: Raw events examined per slice (a slice is one bounded anti-join).
SLICE_SCAN = 50_000
_MAX_SLICES = 1_000


def find_unprocessed_events(gateway: Gateway, params: FindUnprocessedEventsParams) -> list[Event]:
    """The next batch of raw events that have no processed row, by ``(timestamp, id)``.

    Page on with ``after=EventIterator.of(batch[-1])`` until a batch comes back
    short. A processed row counts whatever its line item; matching is by event
    id within the same tenant, environment (and customer / event name when
    given). The range is examined in slices of :data:`SLICE_SCAN` raw events,
    each a bounded anti-join on the time-ordered projections, so the cost of a
    page depends neither on the size of the window nor on where the cursor is.
    Unmerged copies of a raw event count once (the latest ingested).
    """
    # (start, "") precedes every event at ``start`` but one with id "" (never valid).
    after = params.after or EventIterator(params.start_time, "")
    base = {
        "tenant": params.tenant_id,
        "environment": params.environment_id,
        "start": params.start_time,
        "end": params.end_time,
        "external_customer": params.external_customer_id,
        "event_name": params.event_name.strip(),
    }
    cursor: dict[str, Any] = {"after_ts": after.timestamp, "after_id": after.id, "strict": 0}
    found: list[Event] = []
    for _ in range(_MAX_SLICES):
        bound_rows = gateway.query(_SLICE_BOUND_SQL, {**base, **cursor, "scan": SLICE_SCAN})
        bound, scanned = bound_rows[0] if bound_rows else (None, 0)
        if not scanned:
            break
        while True:  # more than one read only when copies of events filled a read
            wanted = params.batch_size - len(found)
            rows = gateway.query(
                _UNPROCESSED_SQL, {**base, **cursor, "bound": bound, "limit": wanted}
            )
            found += _first_copies(rows)
            if len(found) >= params.batch_size:
                return found
            if len(rows) < wanted:
                break  # every event of the slice was examined
            cursor = {"after_ts": rows[-1][4], "after_id": rows[-1][0], "strict": 0}
        if scanned < SLICE_SCAN:
            break
        cursor = {"after_ts": bound, "after_id": "", "strict": 1}
    return found


def _first_copies(rows: Sequence[Row]) -> list[Event]:
    """Events of rows ordered by (timestamp, id), keeping the first row of each."""
    events: list[Event] = []
    previous: tuple[Any, Any] | None = None
    for row in rows:
        identity = (row[4], row[0])
        if identity != previous:
            events.append(event_from_row(row))
            previous = identity
    return events


def event_from_row(row: Row | Sequence[Any]) -> Event:
    """An :class:`Event` from (id, tenant, env, name, ts, properties, source,
    customer, external customer, ingested_at)."""
    event_id, tenant_id, environment_id, event_name, timestamp, properties, *rest = row
    source, customer_id, external_customer_id, ingested_at = rest
    return Event(
        id=event_id,
        tenant_id=tenant_id,
        environment_id=environment_id,
        event_name=event_name,
        timestamp=timestamp.astimezone(UTC),
        properties=decode_properties(properties),
        source=source,
        customer_id=customer_id,
        external_customer_id=external_customer_id,
        ingested_at=ingested_at.astimezone(UTC) if ingested_at is not None else None,
    )


def decode_properties(text: str) -> dict[str, Any]:
    """The stored properties JSON object (orjson; the standard library for huge integers)."""
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = json.loads(text)
    return value if isinstance(value, dict) else {}

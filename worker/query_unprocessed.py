"""``events-worker query unprocessed``: raw events stored without processed rows.

Lists the events a reprocess would re-drive (the same ``FindUnprocessedEvents``
read), oldest first. With ``--catalog FILE`` each gets the reason it is
unpriced under that catalog (``unknown_customer``, ``no_active_subscription``,
``no_matching_line_item``, or ``priced now`` when the catalog would price it:
then a ``reprocess request`` will); without one the reason is unknown (the
store does not keep it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any, TextIO

import orjson

from worker.domain.catalog_index import CatalogIndex
from worker.domain.events import Event
from worker.domain.validation import MAX_TIMESTAMP, MIN_TIMESTAMP
from worker.store.events_reads import find_unprocessed_events
from worker.store.gateway import Gateway
from worker.store.params import EventIterator, FindUnprocessedEventsParams

#: Window when no --start / --end is given: every event time validation accepts.
EARLIEST = MIN_TIMESTAMP
LATEST = MAX_TIMESTAMP
PRICEABLE = "priced now"
UNKNOWN = "unknown"


def unprocessed_events(
    gateway: Gateway, params: FindUnprocessedEventsParams, limit: int
) -> list[Event]:
    """Up to ``limit`` of the unprocessed events ``params`` selects, by (timestamp, id),
    read in pages of at most ``params.batch_size`` (each page sets ``batch_size`` and ``after``)."""
    found: list[Event] = []
    after: EventIterator | None = None
    while len(found) < limit:
        wanted = min(params.batch_size, limit - len(found))
        page = find_unprocessed_events(gateway, replace(params, batch_size=wanted, after=after))
        found += page
        if len(page) < wanted:
            break
        after = EventIterator.of(page[-1])
    return found


def reason(event: Event, index: CatalogIndex | None) -> str:
    """Why ``event`` is unpriced under ``index`` (see the module docstring)."""
    if index is None:
        return UNKNOWN
    resolution = index.resolve(event)
    return resolution.unresolved.value if resolution.unresolved is not None else PRICEABLE


def print_unprocessed(
    events: list[Event], index: CatalogIndex | None, out: TextIO, *, as_json: bool
) -> None:
    """One line (or JSON object) per event, then a count by reason (text only)."""
    reasons = [reason(event, index) for event in events]
    for event, why in zip(events, reasons, strict=True):
        document: dict[str, Any] = {
            "id": event.id,
            "timestamp": event.timestamp.isoformat(timespec="milliseconds"),
            "event_name": event.event_name,
            "external_customer_id": event.external_customer_id,
            "customer_id": event.customer_id,
            "reason": why,
        }
        if as_json:
            out.write(orjson.dumps(document).decode() + "\n")
        else:
            customer = event.external_customer_id or event.customer_id
            print(
                f"{document['timestamp']}  {event.id}  {event.event_name}  {customer}  {why}",
                file=out,
            )
    if not as_json:
        counts = Counter(reasons)
        summary = ", ".join(f"{n} {why}" for why, n in sorted(counts.items())) or "none"
        print(f"{len(events)} unprocessed events: {summary}", file=out)

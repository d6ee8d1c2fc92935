"""The batch rater over a real catalog: determinism, fan-out, and crash/resume.

The crash test rebuilds state the way the store does after a restart (aggregate
snapshots and hash owners derived from the rows already written) and replays
the uncommitted batch; the invoice must equal an uninterrupted run's.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from worker.domain.aggregates import AggregateSnapshot
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.domain.engine import DedupKey, StateKey, UsageRater
from worker.domain.events import Event, ProcessedEvent
from worker.domain.invoice import LineItemTotal, summarize
from worker.domain.validation import decode_event
from worker.domain.windows import window_start
from worker.samples.synthetic import build_catalog, generate_events

NOW = datetime(2026, 3, 1, tzinfo=UTC)
BATCH = 250


def catalog_documents() -> list[dict[str, object]]:
    # 8 customers x 4 line items rotate through every price and aggregation type.
    document = build_catalog(customers=8, line_items_per_customer=4)
    # customer 0 gets a second subscription sharing a price with its first
    first = document["subscriptions"][0]
    second = {
        **first,
        "id": "sub_0_b",
        "line_items": [{**first["line_items"][0], "id": "li_0_b", "free_units": "0"}],
    }
    document["subscriptions"].append(second)
    return [document]


def events(count: int = 3000) -> list[Event]:
    document = catalog_documents()[0]
    decoded = []
    for n, doc in enumerate(generate_events(document, count, seed=5, duplicate_rate=0.05)):
        decoded.append(decode_event(orjson.dumps(doc), fallback_id=str(n), fallback_timestamp=NOW))
    return decoded


def rate_all(rater: UsageRater, batches: list[list[Event]]) -> list[ProcessedEvent]:
    rows: list[ProcessedEvent] = []
    for batch in batches:
        resolved = rater.resolve(batch)
        rows.extend(rater.rate(resolved, NOW).rows)
    return rows


def batches_of(items: list[Event]) -> list[list[Event]]:
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


def stored(rows: list[ProcessedEvent]) -> list[ProcessedEvent]:
    """What a ReplacingMergeTree keeps: the last row per identity."""
    latest: dict[tuple[str, int, str], ProcessedEvent] = {}
    for row in rows:
        latest[(row.sub_line_item_id, row.period_id, row.event.id)] = row
    return list(latest.values())


def snapshots_from(
    rows: list[ProcessedEvent], index: CatalogIndex
) -> dict[StateKey, AggregateSnapshot]:
    """GetLineItemUsage computed by hand from stored rows."""
    grouped: dict[StateKey, list[ProcessedEvent]] = defaultdict(list)
    for row in stored(rows):
        grouped[
            (row.event.tenant_id, row.event.environment_id, row.sub_line_item_id, row.period_id)
        ].append(row)
    snapshots = {}
    for key, group in grouped.items():
        binding = index.line_item(*key[:3])
        assert binding is not None
        buckets: dict[datetime, Decimal] = {}
        if binding.meter.bucket_size is not None:
            for row in group:
                start = window_start(row.event.timestamp, binding.meter.bucket_size)
                buckets[start] = max(buckets.get(start, Decimal(0)), row.qty_total)
        newest = max(group, key=lambda r: (r.event.timestamp, r.event.id))
        snapshots[key] = AggregateSnapshot(
            total=sum((r.qty_total for r in group), Decimal(0)),
            count=len(group),
            maximum=max(r.qty_total for r in group),
            latest=(newest.event.timestamp, newest.event.id, newest.qty_total),
            bucket_maxima=buckets,
        )
    return snapshots


def owners_from(rows: list[ProcessedEvent]) -> dict[DedupKey, str]:
    """Batched IsDuplicate by hand: hash -> the event id that counted it."""
    owners: dict[DedupKey, str] = {}
    for row in sorted(stored(rows), key=lambda r: r.qty_total == 0):
        key = (row.event.tenant_id, row.event.environment_id, row.sub_line_item_id, row.period_id)
        owners.setdefault((key, row.unique_hash), row.event.id)
    return owners


def invoice(rows: list[ProcessedEvent]) -> list[LineItemTotal]:
    return summarize(stored(rows))


def test_the_same_input_gives_the_same_rows() -> None:
    index = CatalogIndex(parse_documents(catalog_documents()))
    stream = batches_of(events())
    first = rate_all(UsageRater(index), stream)
    second = rate_all(UsageRater(index), stream)
    assert first == second
    assert len(first) > 2000


def test_an_event_on_a_shared_price_is_rated_once_per_line_item() -> None:
    index = CatalogIndex(parse_documents(catalog_documents()))
    rows = rate_all(UsageRater(index), batches_of(events()))
    line_items_by_event: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        line_items_by_event[row.event.id].add(row.sub_line_item_id)
    shared = [ids for ids in line_items_by_event.values() if "li_0_b" in ids]
    assert shared and all(len(ids) == 2 for ids in shared)


def test_each_period_telescopes_to_its_invoice() -> None:
    index = CatalogIndex(parse_documents(catalog_documents()))
    rows = rate_all(UsageRater(index), batches_of(events()))
    periods = {(r.sub_line_item_id, r.period_id) for r in rows}
    assert len(periods) > len({r.sub_line_item_id for r in rows})  # several periods per item
    for total in invoice(rows):
        binding = index.line_item("t1", "prod", total.sub_line_item_id)
        assert binding is not None
        billable = max(Decimal(0), total.qty_total - binding.free_units)
        assert total.cost == binding.price.rate(billable)
        assert total.qty_free_applied == min(total.qty_total, binding.free_units)


@pytest.mark.parametrize("crash_after_batch", [1, 5, 9])
def test_restart_from_stored_rows_and_replay_gives_the_uninterrupted_invoice(
    crash_after_batch: int,
) -> None:
    index = CatalogIndex(parse_documents(catalog_documents()))
    stream = batches_of(events())
    expected = invoice(rate_all(UsageRater(index), stream))

    # Rows of batches 0..crash_after_batch were written; the last one was not committed.
    written = rate_all(UsageRater(index), stream[: crash_after_batch + 1])
    restarted = UsageRater(index)
    snapshots = snapshots_from(written, index)
    owners = owners_from(written)
    replayed: list[ProcessedEvent] = []
    for batch in stream[crash_after_batch:]:
        resolved = restarted.resolve(batch)
        missing = restarted.missing_states(resolved)
        restarted.load_states({key: snapshots[key] for key in missing if key in snapshots})
        restarted.remember({key: owners[key] for key in resolved.dedup_keys() if key in owners})
        rated = restarted.rate(resolved, NOW)
        replayed.extend(rated.rows)
        for row in rated.rows:  # what the store now holds, for later batches' dedup
            key = (
                row.event.tenant_id,
                row.event.environment_id,
                row.sub_line_item_id,
                row.period_id,
            )
            owners.setdefault((key, row.unique_hash), row.event.id)
        restarted.forget_hashes()

    assert invoice(written + replayed) == expected

"""The batch rater over a real catalog: determinism, fan-out, and crash/resume.

The crash test rebuilds state the way the store does after a restart (aggregate
snapshots and hash owners derived from the rows already written) and replays
the uncommitted batch; the invoice must equal an uninterrupted run's.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.processed_rows import processed_events, summarize
from worker.domain.aggregates import AggregateSnapshot
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.domain.engine import UsageRater, fingerprint
from worker.domain.events import Event, ProcessedEvent
from worker.domain.invoice import LineItemTotal
from worker.domain.metering import AggregationType, WindowSize
from worker.domain.rating_reads import DedupKey, StateKey
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
        rows.extend(processed_events(rater.rate(resolved, NOW).rows))
    return rows


def batches_of(items: list[Event]) -> list[list[Event]]:
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


def stored(rows: list[ProcessedEvent]) -> list[ProcessedEvent]:
    """What a ReplacingMergeTree keeps: the last row per identity."""
    latest: dict[tuple[str, int, str], ProcessedEvent] = {}
    for row in rows:
        latest[(row.sub_line_item_id, row.period_id, row.event.id)] = row
    return list(latest.values())


def state_key(row: ProcessedEvent) -> StateKey:
    return StateKey(
        row.event.tenant_id, row.event.environment_id, row.sub_line_item_id, row.period_id
    )


def snapshots_from(
    rows: list[ProcessedEvent], index: CatalogIndex
) -> dict[StateKey, AggregateSnapshot]:
    """GetLineItemUsage computed by hand from stored rows."""
    grouped: dict[StateKey, list[ProcessedEvent]] = defaultdict(list)
    for row in stored(rows):
        grouped[state_key(row)].append(row)
    snapshots = {}
    for key, group in grouped.items():
        binding = index.line_item(key.tenant_id, key.environment_id, key.line_item_id)
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
        owners.setdefault(DedupKey(state_key(row), row.unique_hash), row.event.id)
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
        rated = processed_events(restarted.rate(resolved, NOW).rows)
        replayed.extend(rated)
        for row in rated:  # what the store now holds, for later batches' dedup
            owners.setdefault(DedupKey(state_key(row), row.unique_hash), row.event.id)
        restarted.forget_hashes()

    assert invoice(written + replayed) == expected


# -- dedup through the store lookup: covered states ask only for repeats -------


def fingerprints_from(
    rows: list[ProcessedEvent], keys: list[StateKey]
) -> dict[StateKey, list[int]]:
    """Stored fingerprints by hand, for the requested keys."""
    found: dict[StateKey, list[int]] = {key: [] for key in keys}
    for row in rows:
        key = state_key(row)
        if key in found:
            found[key].append(fingerprint(row.unique_hash))
    return found


class StoredRows:
    """The rating reads answered from the rows written so far, as ClickHouse would.

    Snapshots come in chunks of ``chunk`` keys (as the store reads them).
    """

    def __init__(self, index: CatalogIndex, written: list[ProcessedEvent], chunk: int) -> None:
        self._index = index
        self._written = written
        self._chunk = chunk

    def snapshots(
        self, requests: Mapping[StateKey, WindowSize | None]
    ) -> Iterator[Mapping[StateKey, AggregateSnapshot]]:
        stored = snapshots_from(self._written, self._index)
        keys = sorted(requests)
        for start in range(0, len(keys), self._chunk):
            yield {
                key: stored.get(key, AggregateSnapshot())
                for key in keys[start : start + self._chunk]
            }

    def fingerprints(self, keys: Collection[StateKey]) -> Mapping[StateKey, Iterable[int]]:
        return fingerprints_from(self._written, list(keys))

    def hash_owners(self, keys: Collection[DedupKey]) -> Mapping[DedupKey, str]:
        owners = owners_from(self._written)
        return {key: owners[key] for key in keys if key in owners}


def run_through_store(
    index: CatalogIndex,
    stream: list[list[Event]],
    *,
    max_fingerprints: int,
    max_remembered_owners: int = 0,
    crash_after: Collection[int] = (),
    asked: list[int] | None = None,
    chunk: int = 5,
) -> list[ProcessedEvent]:
    """The usage batch flow (``rate_batch``) against a store made of the rows written so far.

    A crash after batch n (written, not committed) restarts the rater and
    replays batch n. The store answers only the dedup keys the rater asks for,
    so a key wrongly left out of the lookup is counted twice.
    """
    written: list[ProcessedEvent] = []
    store = StoredRows(index, written, chunk)
    pending_crashes = set(crash_after)

    def new_rater() -> UsageRater:
        return UsageRater(
            index, max_fingerprints=max_fingerprints, max_remembered_owners=max_remembered_owners
        )

    rater = new_rater()
    n = 0
    while n < len(stream):
        rated = rater.rate_batch(stream[n], store, NOW)
        if asked is not None:
            asked.append(rated.store_lookups)
        written.extend(processed_events(rated.rows))
        assert rater.fingerprint_count <= max_fingerprints
        if n in pending_crashes:
            pending_crashes.discard(n)
            rater = new_rater()
            continue
        rater.committed()
        n += 1
    return written


@settings(max_examples=40, deadline=None)
@given(
    max_fingerprints=st.sampled_from([0, 7, 60, 400, 10**6]),
    max_remembered_owners=st.sampled_from([0, 150, 10**6]),
    crash_after=st.sets(st.integers(0, 11), max_size=4),
    seed=st.integers(0, 3),
)
def test_store_lookup_flow_gives_the_uninterrupted_invoice(
    max_fingerprints: int, max_remembered_owners: int, crash_after: set[int], seed: int
) -> None:
    index = CatalogIndex(parse_documents(catalog_documents()))
    document = catalog_documents()[0]
    stream_events = [
        decode_event(orjson.dumps(doc), fallback_id=str(n), fallback_timestamp=NOW)
        for n, doc in enumerate(generate_events(document, 1200, seed=seed, duplicate_rate=0.1))
    ]
    stream = [stream_events[i : i + 100] for i in range(0, len(stream_events), 100)]
    expected = invoice(rate_all(UsageRater(index), stream))
    written = run_through_store(
        index,
        stream,
        max_fingerprints=max_fingerprints,
        max_remembered_owners=max_remembered_owners,
        crash_after=crash_after,
    )
    assert invoice(written) == expected
    # Replaying everything afterwards (a fresh group from offset 0) adds nothing.
    replayed = run_through_store(
        index,
        stream + stream,
        max_fingerprints=max_fingerprints,
        max_remembered_owners=max_remembered_owners,
    )
    assert invoice(replayed) == expected


def test_covered_states_ask_the_store_only_about_repeats() -> None:
    index = CatalogIndex(parse_documents(catalog_documents()))
    document = catalog_documents()[0]
    unique = [
        decode_event(orjson.dumps(doc), fallback_id=str(n), fallback_timestamp=NOW)
        for n, doc in enumerate(generate_events(document, 1000, seed=9, duplicate_rate=0.0))
    ]
    stream = batches_of(unique)
    asked: list[int] = []
    run_through_store(index, stream + stream[:1], max_fingerprints=10**6, asked=asked)
    # Owners forgotten at every commit: only hashes stored by an earlier batch are
    # asked about (COUNT_UNIQUE values repeat by design); the redelivered first
    # batch is asked about in full.
    resolver = UsageRater(index)
    seen: set[DedupKey] = set()
    repeats = []
    for batch in stream + stream[:1]:
        keys = resolver.resolve(batch).dedup_keys()
        repeats.append(len(keys & seen))
        seen |= keys
    assert asked == repeats
    assert repeats[-1] == len(resolver.resolve(stream[0]).dedup_keys())
    assert sum(repeats[:-1]) < len(unique) // 10

    # Without memory for fingerprints, states seen in an earlier batch ask about every hash.
    asked_uncovered: list[int] = []
    run_through_store(index, stream, max_fingerprints=0, asked=asked_uncovered)
    known_states: set[StateKey] = set()
    expected = []
    for batch in stream:
        keys = resolver.resolve(batch).dedup_keys()
        expected.append(len({key for key in keys if key.state in known_states}))
        known_states |= {key.state for key in keys}
    assert asked_uncovered == expected
    assert sum(expected) > len(unique) // 2

    # Owners remembered across commits: what this rater counted is answered in
    # memory, the redelivered first batch included. Covered states then ask
    # nothing; uncovered ones still ask about every hash they have not seen.
    redelivered = stream + stream[:1]
    remembering = {}
    for max_fingerprints in (10**6, 0):
        remembering[max_fingerprints] = []
        run_through_store(
            index,
            redelivered,
            max_fingerprints=max_fingerprints,
            max_remembered_owners=10**6,
            asked=remembering[max_fingerprints],
        )
    assert remembering[10**6] == [0] * len(redelivered)
    seen_keys: set[DedupKey] = set()
    seen_states: set[StateKey] = set()
    unseen_in_seen_states = []
    for batch in redelivered:
        keys = resolver.resolve(batch).dedup_keys()
        unseen_in_seen_states.append(
            len({key for key in keys if key.state in seen_states and key not in seen_keys})
        )
        seen_keys |= keys
        seen_states |= {key.state for key in keys}
    assert remembering[0] == unseen_in_seen_states
    assert remembering[0][-1] == 0


def test_remembered_owners_are_forgotten_past_their_budget() -> None:
    index = CatalogIndex(parse_documents(catalog_documents()))
    stream = batches_of(events(1000))
    first = stream[0]
    keys = UsageRater(index).resolve(first).dedup_keys()
    by_value = {
        key for key in keys if _aggregation(index, key.state) is AggregationType.COUNT_UNIQUE
    }
    assert by_value and by_value != keys

    rater = UsageRater(index, max_remembered_owners=len(first) * 2)
    rate_all(rater, [first])
    rater.committed()
    assert rater.lookup_keys(rater.resolve(first)) == set()  # within budget: all remembered
    rate_all(rater, stream[1:3])
    rater.committed()  # over budget: event hashes forgotten, COUNT_UNIQUE values kept
    assert rater.lookup_keys(rater.resolve(first)) == keys - by_value

    # A budget whose quarter holds the smallest COUNT_UNIQUE state (each of its
    # rows remembers at most one hash or repeat) but whose half the values exceed.
    value_states = {key.state for key in by_value}
    pending = UsageRater(index).resolve(first).pending
    rows_per_state = Counter(row.key for row in pending if row.key in value_states)
    budget = 4 * min(rows_per_state.values()) + 3
    assert sum(rows_per_state.values()) > budget // 2
    tiny = UsageRater(index, max_remembered_owners=budget)
    rate_all(tiny, [first])
    tiny.committed()  # values alone fill more than half: the largest states forget
    remembered = keys - tiny.lookup_keys(tiny.resolve(first))
    assert remembered < by_value
    assert 0 < len(remembered) <= budget // 4  # the smallest states keep theirs


def _requests(batch: int) -> list[Event]:
    """Batch ``batch``: ten COUNT events of one customer (one row each), ids of their own."""
    return [
        decode_event(
            orjson.dumps(
                {
                    "id": f"req-{n}",
                    "tenant_id": "t1",
                    "environment_id": "prod",
                    "event_name": "request",
                    "external_customer_id": "cust-0",
                    "timestamp": "2026-02-10T00:00:00Z",
                }
            ),
            fallback_id=str(n),
            fallback_timestamp=NOW,
        )
        for n in range(batch * 10, batch * 10 + 10)
    ]


def test_owners_of_the_recent_half_of_the_bound_survive_an_aging() -> None:
    index = CatalogIndex(parse_documents(catalog_documents()))
    batches = [_requests(n) for n in range(5)]
    redelivered = batches[3] + batches[2] + batches[0]
    stream = [*batches[:4], redelivered]
    asked: dict[int, list[int]] = {}
    rows = {}
    # A bound of 30: the current generation ages at a commit that finds more
    # than 15 owners in it, i.e. after batches 1 and 3 (the half is crossed
    # inside them). Batches 2 and 3 are then remembered, 0 and 1 (two
    # generations back) are read from the store. The old wipe past the bound
    # forgot batch 2 and 3 too; unbounded memory asks nothing; none asks all.
    for bound in (0, 30, 10**6):
        asked[bound] = []
        rows[bound] = run_through_store(
            index,
            stream,
            max_fingerprints=10**6,
            max_remembered_owners=bound,
            asked=asked[bound],
        )
    assert asked[30] == [0, 0, 0, 0, len(batches[0])]
    assert asked[10**6] == [0] * len(stream)
    assert asked[0] == [0, 0, 0, 0, len(redelivered)]
    # Memory saves store reads only: the rows are the same (the redelivery writes none).
    assert rows[30] == rows[10**6] == rows[0]
    assert len(rows[30]) == 40

    rater = UsageRater(index, max_fingerprints=10**6, max_remembered_owners=30)
    written: list[ProcessedEvent] = []
    store = StoredRows(index, written, chunk=5)
    for batch in batches:
        written.extend(processed_events(rater.rate_batch(batch, store, NOW).rows))
        rater.committed()
    # Batch 4 is the current generation, 2 and 3 the previous one; a revoke drops both.
    recent = batches[2] + batches[3] + batches[4]
    assert rater.lookup_keys(rater.resolve(recent)) == set()
    rater.drop(rater.resolve(recent).state_keys())
    assert rater.rate_batch(recent, store, NOW).store_lookups == len(recent)


def _aggregation(index: CatalogIndex, key: StateKey) -> AggregationType:
    binding = index.line_item(key.tenant_id, key.environment_id, key.line_item_id)
    assert binding is not None
    return binding.meter.aggregation


def test_states_loaded_with_stored_rows_are_covered_by_their_fingerprints() -> None:
    index = CatalogIndex(parse_documents(catalog_documents()))
    stream = batches_of(events(1000))
    written = rate_all(UsageRater(index), stream[:2])
    restarted = UsageRater(index)
    resolved = restarted.resolve(stream[2])
    snapshots = snapshots_from(written, index)
    missing = restarted.missing_states(resolved)
    loaded = {key: snapshots.get(key, AggregateSnapshot()) for key in missing}
    assert any(snapshot.count for snapshot in loaded.values())

    restarted.load_states(loaded)  # no fingerprints: stored states stay uncovered
    uncovered = restarted.lookup_keys(resolved)
    stored_keys = {key for key, snapshot in loaded.items() if snapshot.count}
    assert {key.state for key in uncovered} >= {
        row.key for row in resolved.pending if row.key in stored_keys
    }

    covered = UsageRater(index)
    coverable = covered.coverable(loaded)
    assert set(coverable) == stored_keys
    covered.load_states(loaded, fingerprints_from(written, coverable))
    stored_hashes = set(owners_from(written))
    assert covered.lookup_keys(resolved) == {
        (row.key, row.measurement.unique_hash)
        for row in resolved.pending
        if (row.key, row.measurement.unique_hash) in stored_hashes
    }


class StoreFailingAfterOneChunk(StoredRows):
    """Answers the first snapshot chunk, then fails (ClickHouse went away mid-batch)."""

    def snapshots(
        self, requests: Mapping[StateKey, WindowSize | None]
    ) -> Iterator[Mapping[StateKey, AggregateSnapshot]]:
        chunks = super().snapshots(requests)
        yield next(chunks)
        raise ConnectionError("ClickHouse went away")


def test_a_failed_read_leaves_no_state_behind() -> None:
    """The failed batch's partitions move to another owner and come back: the
    states the failed call had loaded must not be used, stale, afterwards."""
    index = CatalogIndex(parse_documents(catalog_documents()))
    stream = batches_of(events(750))
    expected = invoice(rate_all(UsageRater(index), stream))
    written: list[ProcessedEvent] = []
    other_owner, failing = UsageRater(index), UsageRater(index)
    written.extend(
        processed_events(other_owner.rate_batch(stream[0], StoredRows(index, written, 5), NOW).rows)
    )

    with pytest.raises(ConnectionError):
        failing.rate_batch(stream[1], StoreFailingAfterOneChunk(index, written, 5), NOW)
    resolved = failing.resolve(stream[1])
    assert failing.missing_states(resolved) == resolved.state_keys()

    written.extend(
        processed_events(other_owner.rate_batch(stream[1], StoredRows(index, written, 5), NOW).rows)
    )
    back = failing.rate_batch(stream[2], StoredRows(index, written, 5), NOW)
    written.extend(processed_events(back.rows))
    assert invoice(written) == expected

"""The core's rating state against ``UsageRater``, batch for batch.

Random catalogs (every price model and aggregation, free units, bucketed
MAX) and event streams with redeliveries, repeated ids and values, and events
out of order go through the usage batch flow of both raters against a store
made of the rows written so far: missing states -> snapshots -> coverable ->
stored fingerprints -> lookup keys -> owners -> rate -> committed, with
restarts (a new rater loading its state from the store and replaying the
batch), revokes (the states a batch wrote dropped after its commit), a
catalog change between two batches (prices redrawn, line items gone, or
another catalog: held states keep their price) and memory budgets from 0 (the
remembered owners' bound drawn so that their generations age inside a batch
and between batches, ADR 0003). Every step's answer must be equal: the keys
asked for, every rated row's values, outcome counts, refusals and the
fingerprints held. The fused core engine (messages in, Arrow rows out) runs
the same flow and must give the same answers.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.core.strategies import NOW, catalogs, events, price_documents
from worker.core_engine import CoreBatchEngine
from worker.core_rating import CoreUsageRater
from worker.domain.aggregates import AggregateSnapshot
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.domain.engine import (
    DedupKey,
    RatedBatch,
    ResolvedBatch,
    StateKey,
    UsageRater,
    fingerprint,
)
from worker.domain.events import Event
from worker.domain.validation import EventLimits, InvalidEvent, decode_event
from worker.domain.windows import window_start
from worker.stream.usage_batch import SourceMessage

Row = tuple[Any, ...]


class Rater(Protocol):
    @property
    def fingerprint_count(self) -> int: ...
    def resolve(self, events: list[Event]) -> ResolvedBatch: ...
    def missing_states(self, batch: ResolvedBatch) -> set[StateKey]: ...
    def coverable(self, snapshots: dict[StateKey, AggregateSnapshot]) -> list[StateKey]: ...
    def load_states(
        self,
        snapshots: dict[StateKey, AggregateSnapshot],
        stored_fingerprints: dict[StateKey, list[int]] | None = None,
    ) -> None: ...
    def lookup_keys(self, batch: ResolvedBatch) -> set[DedupKey]: ...
    def remember(self, owners: dict[DedupKey, str]) -> None: ...
    def rate(self, batch: ResolvedBatch, processed_at: datetime) -> RatedBatch: ...
    def committed(self) -> None: ...
    def drop(self, keys: list[StateKey]) -> None: ...


def _stored(written: list[Row]) -> dict[tuple[StateKey, str], Row]:
    """What a ReplacingMergeTree keeps: the last row per (state key, event id)."""
    return {(row[0], row[1]): row for row in written}


def _snapshots(written: list[Row], index: CatalogIndex) -> dict[StateKey, AggregateSnapshot]:
    grouped: dict[StateKey, list[Row]] = defaultdict(list)
    for row in _stored(written).values():
        grouped[row[0]].append(row)
    snapshots = {}
    for key, group in grouped.items():
        binding = index.line_item(*key[:3])
        if binding is None:  # gone in a catalog change: no rater asks for it
            continue
        buckets: dict[datetime, Decimal] = {}
        if binding.meter.bucket_size is not None:
            for row in group:
                start = window_start(row[2], binding.meter.bucket_size)
                buckets[start] = max(buckets.get(start, Decimal(0)), row[4])
        newest = max(group, key=lambda r: (r[2], r[1]))
        snapshots[key] = AggregateSnapshot(
            total=sum((r[4] for r in group), Decimal(0)),
            count=len(group),
            maximum=max(r[4] for r in group),
            latest=(newest[2], newest[1], newest[4]),
            bucket_maxima=buckets,
        )
    return snapshots


def _owners(written: list[Row]) -> dict[DedupKey, str]:
    owners: dict[DedupKey, str] = {}
    for row in sorted(_stored(written).values(), key=lambda r: r[4] == 0):
        owners.setdefault((row[0], row[3]), row[1])
    return owners


class StateLoader(Protocol):
    def coverable(self, snapshots: dict[StateKey, AggregateSnapshot]) -> list[StateKey]: ...
    def load_states(
        self,
        snapshots: dict[StateKey, AggregateSnapshot],
        stored_fingerprints: dict[StateKey, list[int]] | None = None,
    ) -> None: ...


def _load_from_store(
    target: StateLoader, written: list[Row], index: CatalogIndex, missing: set[StateKey]
) -> list[StateKey]:
    """Snapshots of the missing states, fingerprints of the coverable ones, loaded."""
    stored = _snapshots(written, index)
    snapshots = {key: stored.get(key, AggregateSnapshot()) for key in sorted(missing)}
    coverable = target.coverable(snapshots)
    fingerprints: dict[StateKey, list[int]] = {key: [] for key in coverable}
    for row in written:
        if row[0] in fingerprints:
            fingerprints[row[0]].append(fingerprint(row[3]))
    target.load_states(snapshots, fingerprints)
    return coverable


def _owners_of(written: list[Row], lookup: set[DedupKey]) -> dict[DedupKey, str]:
    owners = _owners(written)
    return {key: owners[key] for key in sorted(lookup) if key in owners}


Change = tuple[int, CatalogIndex] | None
"""From batch n on, the catalog is this index (None: no change)."""


def _drive(
    new_target: Callable[[CatalogIndex], Any],
    index: CatalogIndex,
    batches: int,
    crash_after: set[int],
    step: Any,
    change: Change,
    revoke_after: set[int],
) -> list[Any]:
    """The usage batch flow around ``step(target, n, written, index)``, which
    does batch ``n`` and returns (missing, coverable, lookup, rows, outcomes,
    refused); a crash after batch n (written, not committed) restarts with a
    new target and replays batch n; a revoke after batch n (committed) drops
    the states it wrote rows for; at the ``change`` the target in use gets
    the new catalog (``replace_index``, between batches), and a restart after
    it starts on it. Returns everything each step answered."""
    log: list[Any] = []
    written: list[Row] = []
    target = new_target(index)
    crashes = set(crash_after)
    n = 0
    while n < batches:
        if change is not None and n == change[0] and index is not change[1]:
            index = change[1]
            if isinstance(target, CoreBatchEngine):
                target.replace_index(index, NOW)
            else:
                target.replace_index(index)
        missing, coverable, lookup, rows, outcomes, refused = step(target, n, written, index)
        written.extend(rows)
        log.append(
            (n, missing, coverable, lookup, rows, outcomes, refused, target.fingerprint_count)
        )
        if n in crashes:
            crashes.discard(n)
            target = new_target(index)
            continue
        target.committed()
        log.append(("committed", target.fingerprint_count))
        if n in revoke_after:
            target.drop(sorted({row[0] for row in rows}))
        n += 1
    return log


def run(
    new_rater: Callable[[CatalogIndex], Any],
    index: CatalogIndex,
    stream: list[list[Event]],
    crash_after: set[int],
    change: Change = None,
    revoke_after: frozenset[int] = frozenset(),
) -> list[Any]:
    """The usage batch flow of a ``UsageRater``-like rater."""

    def step(rater: Rater, n: int, written: list[Row], index: CatalogIndex) -> tuple[Any, ...]:
        resolved = rater.resolve(stream[n])
        missing = rater.missing_states(resolved)
        coverable = _load_from_store(rater, written, index, missing)
        lookup = rater.lookup_keys(resolved)
        rater.remember(_owners_of(written, lookup))
        rated = rater.rate(resolved, NOW)
        # (key, event id, timestamp, hash, the deltas); outcomes are compared as counts
        priced = rated.rows
        rows = list(
            zip(
                [match.state_key for match in priced.matches],
                [event.id for event in priced.events],
                [event.timestamp for event in priced.events],
                priced.unique_hashes,
                priced.qty_total,
                priced.qty_free_applied,
                priced.qty_billable,
                priced.cost,
                priced.unit_cost,
                priced.tier_snapshot,
                strict=True,
            )
        )
        refused = [(row.key, row.event.id) for row in rated.refused]
        return missing, coverable, lookup, rows, dict(rated.outcomes), refused

    return _drive(new_rater, index, len(stream), crash_after, step, change, set(revoke_after))


def _decoded(payloads: list[bytes]) -> list[tuple[bytes, Event]]:
    found = []
    for number, payload in enumerate(payloads):
        try:
            event = decode_event(payload, fallback_id=f"e-{number}", fallback_timestamp=NOW)
        except InvalidEvent:
            continue
        found.append((payload, event))
    return found


def _final_lag_ms(processed_at: datetime, timestamp: datetime) -> int:
    """Whole milliseconds from ``timestamp`` to ``processed_at``, clamped to uint32."""
    return min(max((processed_at - timestamp) // timedelta(milliseconds=1), 0), 2**32 - 1)


def run_fused(
    new_engine: Callable[[CatalogIndex], Any],
    index: CatalogIndex,
    stream: list[list[tuple[bytes, Event]]],
    crash_after: set[int],
    change: Change = None,
    revoke_after: frozenset[int] = frozenset(),
) -> list[Any]:
    """:func:`run` with the fused core engine: messages in, Arrow rows out."""

    def step(
        engine: CoreBatchEngine, n: int, written: list[Row], index: CatalogIndex
    ) -> tuple[Any, ...]:
        messages = [
            SourceMessage("events", 0, i, payload) for i, (payload, _) in enumerate(stream[n])
        ]
        prepared = engine.prepare(messages, NOW, EventLimits())
        events = [stream[n][i][1] for i in prepared.accepted]
        missing = engine.missing_states()
        coverable = _load_from_store(engine, written, index, missing)
        lookup = engine.lookup_keys()
        engine.remember(_owners_of(written, lookup))
        rated = engine.rate(NOW)
        columns = {name: array.to_pylist() for name, array in rated.columns.items()}
        # The lag column against its definition (store.processed.rated_columns).
        assert columns["final_lag_ms"] == [
            _final_lag_ms(NOW, events[event].timestamp) for event in columns["event"]
        ]

        def key(event: int, line_item: int, period_id: int) -> StateKey:
            return (
                events[event].tenant_id,
                events[event].environment_id,
                engine.bindings[line_item].line_item_id,
                period_id,
            )

        rows = [
            (
                key(columns["event"][i], columns["line_item"][i], columns["period_id"][i]),
                events[columns["event"][i]].id,
                events[columns["event"][i]].timestamp,
                columns["unique_hash"][i],
                columns["qty_total"][i],
                columns["qty_free_applied"][i],
                columns["qty_billable"][i],
                columns["cost"][i],
                columns["unit_cost"][i],
                columns["tier_snapshot"][i],
            )
            for i in range(len(columns["row"]))
        ]
        refused = [(key(e, li, p), events[e].id) for e, li, p in rated.refused]
        return missing, coverable, lookup, rows, dict(rated.outcomes), refused

    return _drive(new_engine, index, len(stream), crash_after, step, change, set(revoke_after))


@st.composite
def changed_catalogs(draw: st.DrawFn, documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same catalog with its prices redrawn and some line items gone, or another one."""
    if draw(st.integers(0, 3)) == 0:
        return draw(catalogs())
    changed = copy.deepcopy(documents)
    for document in changed:
        document["prices"] = [
            draw(price_documents(price["id"], price["meter_id"])) for price in document["prices"]
        ]
        for subscription in document["subscriptions"]:
            items = subscription["line_items"]
            subscription["line_items"] = items[: draw(st.integers(0, len(items)))]
    return changed


@settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_core_rating_state_follows_the_reference_step_by_step(data: st.DataObject) -> None:
    documents = data.draw(catalogs())
    index = CatalogIndex(parse_documents(documents))
    decoded = _decoded(data.draw(st.lists(events(index), min_size=1, max_size=24)))
    # Mostly events that are rated (the state rules are what this test is
    # about), a few that are not.
    rated = [pair for pair in decoded if index.resolve(pair[1]).matches]
    unique = rated + [pair for pair in decoded if pair not in rated][:2]
    # Redeliveries and repeats: the stream draws events again, in any order.
    stream_events = data.draw(
        st.lists(st.sampled_from(unique), min_size=1, max_size=24) if unique else st.just([])
    )
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream_events) - 1)), max_size=4)))
    batches = [
        stream_events[start:end]
        for start, end in zip([0, *cuts], [*cuts, len(stream_events)], strict=True)
        if start < end
    ]
    max_fingerprints = data.draw(st.sampled_from([0, 1, 3, 10, 10**6]))
    # Each rated row remembers at most one owner (1-3 rows per event): bounds
    # up to twice the stream's events put the aging inside batches and at
    # their ends.
    max_owners = data.draw(
        st.one_of(st.sampled_from([0, 10**6]), st.integers(1, 2 * len(stream_events) + 2))
    )
    stream = [[event for _, event in batch] for batch in batches]
    crash_after = data.draw(st.sets(st.integers(0, max(0, len(stream) - 1)), max_size=2))
    revoke_after = frozenset(
        data.draw(st.sets(st.integers(0, max(0, len(stream) - 1)), max_size=2))
    )
    change: Change = None
    if len(stream) > 1 and data.draw(st.booleans()):
        changed = CatalogIndex(parse_documents(data.draw(changed_catalogs(documents))))
        change = (data.draw(st.integers(1, len(stream) - 1)), changed)

    def reference(index: CatalogIndex) -> UsageRater:
        return UsageRater(
            index, max_fingerprints=max_fingerprints, max_remembered_owners=max_owners
        )

    def core(index: CatalogIndex) -> CoreUsageRater:
        return CoreUsageRater(
            index, max_fingerprints=max_fingerprints, max_remembered_owners=max_owners
        )

    def fused(index: CatalogIndex) -> CoreBatchEngine:
        return CoreBatchEngine(
            index,
            NOW,
            max_fingerprints=max_fingerprints,
            max_remembered_owners=max_owners,
            before=timedelta(days=2),
            after=timedelta(days=1),
        )

    want = run(reference, index, stream, crash_after, change, revoke_after)
    got = run(core, index, stream, crash_after, change, revoke_after)
    fused_log = run_fused(fused, index, batches, crash_after, change, revoke_after)
    assert len(got) == len(want) == len(fused_log)
    for got_step, fused_step, want_step in zip(got, fused_log, want, strict=True):
        assert got_step == want_step
        assert fused_step == want_step

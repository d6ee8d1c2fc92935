"""Stage 2 of write-behind (ADR 0002): the core's stateless phase of a batch
(``CoreBatchStep.route``) runs before the previous batch is finished, the
stateful phase (``rate``) after. A rebalance between the two may drop rating
states: they must be read from the store again, never used stale.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from datetime import UTC, datetime

import orjson

from worker.domain.aggregates import AggregateSnapshot
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.domain.engine import DEFAULT_MAX_FINGERPRINTS, DEFAULT_MAX_REMEMBERED_OWNERS
from worker.domain.metering import WindowSize
from worker.domain.rating_reads import DedupKey, StateKey
from worker.domain.validation import DEFAULT_LIMITS
from worker.samples.synthetic import build_catalog, generate_events
from worker.stream.usage_batch import SourceMessage
from worker.stream.usage_batch_core import CoreBatchStep

NOW = datetime(2026, 3, 1, tzinfo=UTC)
STORED = AggregateSnapshot(count=7)  # what the store holds of every state, in this test


class RecordingStore:
    """Rating reads of a store where every state has a stored aggregate; records
    which states were read."""

    def __init__(self) -> None:
        self.read: list[set[StateKey]] = []

    def snapshots(
        self, requests: Mapping[StateKey, WindowSize | None]
    ) -> Iterator[Mapping[StateKey, AggregateSnapshot]]:
        self.read.append(set(requests))
        yield dict.fromkeys(requests, STORED)

    def fingerprints(self, keys: Collection[StateKey]) -> Mapping[StateKey, Iterable[int]]:
        return {key: () for key in keys}

    def hash_owners(self, keys: Collection[DedupKey]) -> Mapping[DedupKey, str]:
        return {}


def test_states_dropped_between_routing_and_rating_are_read_again() -> None:
    catalog = build_catalog(customers=2, line_items_per_customer=2)
    payloads = [orjson.dumps(e) for e in generate_events(catalog, 40, late_rate=0.0)]
    messages = [SourceMessage("events", 0, n, p) for n, p in enumerate(payloads)]
    step = CoreBatchStep(
        CatalogIndex(parse_documents(catalog)),
        NOW,
        limits=DEFAULT_LIMITS,
        max_fingerprints=DEFAULT_MAX_FINGERPRINTS,
        max_remembered_owners=DEFAULT_MAX_REMEMBERED_OWNERS,
    )
    store = RecordingStore()
    first = step.prepare(messages[:20], NOW, store)
    loaded = {key for _, key in first.touched}
    assert loaded and store.read == [loaded]

    routed = step.route(messages[20:], NOW)  # the next batch, while the first is written
    step.drop(loaded)  # a revoke between the phases drops every state
    second = step.rate(routed, store)

    touched_again = {key for _, key in second.touched}
    # every state the second batch uses was read from the store again
    assert touched_again and touched_again <= store.read[1]
    assert second.rows.row_count > 0

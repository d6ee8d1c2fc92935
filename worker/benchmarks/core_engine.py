"""Benchmark of the fused core alone: a batch's messages to both tables' insert columns.

One thread, no Kafka, no ClickHouse: :class:`~worker.stream.usage_batch_core.CoreBatchStep`
(decode, route, measure, state, rate; the rated rows as Arrow arrays) against
an empty store (:class:`EmptyStore`: every state starts empty and covered, so
no hash-owner reads), then the ``events`` and ``events_processed`` insert
columns built from its arrays, as the usage batch step builds them.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from worker.domain.aggregates import AggregateSnapshot
from worker.domain.catalog_index import CatalogIndex
from worker.domain.engine import DEFAULT_MAX_FINGERPRINTS, DEFAULT_MAX_REMEMBERED_OWNERS
from worker.domain.metering import WindowSize
from worker.domain.rating_reads import DedupKey, StateKey
from worker.domain.validation import DEFAULT_LIMITS
from worker.ops.gc_tuning import tune_gc
from worker.stream.usage_batch import SourceMessage
from worker.stream.usage_batch_core import CoreBatchStep

_EMPTY = AggregateSnapshot()


class EmptyStore:
    """The rating reads of a store with nothing in it (no I/O; one shared
    empty snapshot, so the store's own object making is not timed)."""

    def snapshots(
        self, requests: Mapping[StateKey, WindowSize | None]
    ) -> Iterator[Mapping[StateKey, AggregateSnapshot]]:
        yield dict.fromkeys(requests, _EMPTY)

    def fingerprints(self, keys: Collection[StateKey]) -> Mapping[StateKey, Iterable[int]]:
        return {key: () for key in keys}

    def hash_owners(self, keys: Collection[DedupKey]) -> Mapping[DedupKey, str]:
        return {}


@dataclass(frozen=True, slots=True)
class FusedCoreSeconds:
    """CPU seconds of the core's batch step and of building the insert columns."""

    core: float
    columns: float
    rows: int


def _new_step(index: CatalogIndex, now: datetime) -> CoreBatchStep:
    return CoreBatchStep(
        index,
        now,
        limits=DEFAULT_LIMITS,
        max_fingerprints=DEFAULT_MAX_FINGERPRINTS,
        max_remembered_owners=DEFAULT_MAX_REMEMBERED_OWNERS,
    )


def _warm_up(
    index: CatalogIndex, payloads: Sequence[bytes], now: datetime, reads: EmptyStore
) -> None:
    """One small untimed batch through a throwaway step, so that one-time
    imports (pyarrow loads pandas on its first compute call) are not timed."""
    step = _new_step(index, now)
    messages = [SourceMessage("events", 0, n, p) for n, p in enumerate(payloads)]
    prepared = step.prepare(messages, now, reads)
    prepared.rows.decoded.insert_columns(now)
    prepared.rows.processed_columns(now)


def fused_core_seconds(
    index: CatalogIndex, payloads: Sequence[bytes], now: datetime, batch_size: int
) -> FusedCoreSeconds:
    """Run ``payloads`` batch by batch through the fused core (CPU time of this process)."""
    step = _new_step(index, now)
    reads = EmptyStore()
    _warm_up(index, payloads[:10], now, reads)
    # As the usage consumer does once its catalog and engine are built
    # (``run_usage``): what exists now stays out of the collector's scans.
    tune_gc()
    core = columns = 0.0
    rows = 0
    for offset in range(0, len(payloads), batch_size):
        chunk = payloads[offset : offset + batch_size]
        messages = [SourceMessage("events", 0, n, p) for n, p in enumerate(chunk, offset)]
        started = time.process_time()
        prepared = step.prepare(messages, now, reads)
        step.committed()
        prepared_at = time.process_time()
        prepared.rows.decoded.insert_columns(now)
        prepared.rows.processed_columns(now)
        columns += time.process_time() - prepared_at
        core += prepared_at - started
        rows += prepared.rows.row_count
    return FusedCoreSeconds(core, columns, rows)

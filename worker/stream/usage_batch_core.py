"""``EW_ENGINE=core``: the usage batch step's prepare in the fused core.

:class:`CoreBatchStep` runs a batch through
:class:`~worker.core_engine.CoreBatchEngine` - decode, route, measure and
rate in the core - with the store reads of the Python flow
(:func:`~worker.domain.engine.rate_batch`'s order and failure contract:
snapshots chunk by chunk, fingerprints of coverable states, one hash-owner
read; states loaded by a failed read are dropped again). What it returns is
what :class:`~worker.stream.usage_batch.UsageBatchProcessor` needs to fill
its ``PreparedBatch``: rejections and refusals by message index, unresolved
and missing-field counts, outcome counts, the states each partition touched,
and the Arrow arrays the ``events`` and ``events_processed`` inserts are
built from (:mod:`worker.store.processed_core`). Per row there is no Python
work: only per batch, per rejected or refused message, per unresolved event
and per distinct (partition, state).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa

from worker.core_catalog import micros
from worker.core_decode import CoreDecoded, Message
from worker.core_engine import CoreBatchEngine, EnginePrepared
from worker.core_rating import refused_detail
from worker.domain.catalog_index import CatalogIndex, UnresolvedReason
from worker.domain.engine import load_missing_states
from worker.domain.rating import Outcome
from worker.domain.rating_reads import RatingReads, StateKey
from worker.domain.validation import EventLimits
from worker.store.processed_core import core_processed_columns, line_item_table

PartitionKey = tuple[str, int]


@dataclass(slots=True)
class CoreRows:
    """A batch prepared in the core: its raw columns and its priced rows' arrays."""

    decoded: CoreDecoded
    processed_at: datetime
    customers: pa.Array
    line_items: dict[str, pa.Array]
    rated: dict[str, pa.Array]
    outcomes: Counter[Outcome]

    @property
    def row_count(self) -> int:
        return len(self.rated["event"])

    def processed_columns(self, ingested_at: pa.Array) -> dict[str, pa.Array]:
        """The ``events_processed`` insert columns (``ingested_at`` per accepted event);
        ``version`` is the processing time in epoch µs, as ``ProcessedRows.version``."""
        return core_processed_columns(
            raw=self.decoded.columns,
            customers=self.customers,
            line_items=self.line_items,
            rated=self.rated,
            processed_at=self.processed_at,
            version=micros(self.processed_at),
            ingested_at=ingested_at,
        )

    def sampled_timestamps(self, limit: int) -> list[datetime]:
        """Event times of at most ``limit`` evenly spaced accepted events."""
        timestamps = self.decoded.columns["timestamp"]
        stride = max(1, -(-len(timestamps) // limit))
        return [value for value in timestamps[::stride].to_pylist() if value is not None]


@dataclass(slots=True)
class CorePrepared:
    """What the core made of a batch, by message index (into the batch)."""

    rows: CoreRows
    rejected: list[tuple[int, str]] = field(default_factory=list)
    """(message, reason code) of messages that are no event."""
    refused: list[tuple[int, str]] = field(default_factory=list)
    """(message, detail) of rows refused as ``value_out_of_range``."""
    unresolved: Counter[UnresolvedReason] = field(default_factory=Counter)
    missing_fields: int = 0
    touched: list[tuple[PartitionKey, StateKey]] = field(default_factory=list)
    """Every (partition, state) the batch's routed rows touched, once each."""
    store_lookups: int = 0


class CoreBatchStep:
    """The fused core of one consumer, rebuilt per catalog version. One thread only."""

    def __init__(
        self,
        index: CatalogIndex,
        now: datetime,
        *,
        limits: EventLimits,
        max_fingerprints: int,
        max_remembered_owners: int,
    ) -> None:
        self._limits = limits
        self._engine = CoreBatchEngine(
            index,
            now,
            max_fingerprints=max_fingerprints,
            max_remembered_owners=max_remembered_owners,
        )
        self._line_items = line_item_table(self._engine.bindings)

    @property
    def fingerprint_count(self) -> int:
        return self._engine.fingerprint_count

    def committed(self) -> None:
        """The batch's rows are durable and committed (see ``UsageRater.committed``)."""
        self._engine.committed()

    def drop(self, keys: Iterable[StateKey]) -> None:
        """Drop the state of ``keys`` (revoked partitions)."""
        self._engine.drop(keys)

    def replace_index(self, index: CatalogIndex, now: datetime) -> None:
        """Use a new catalog version from the next batch on (call between
        batches): the engine's tables are rebuilt, the rating state is kept
        (states keep the price they were created with, as in the Python rater)."""
        self._engine.replace_index(index, now)
        self._line_items = line_item_table(self._engine.bindings)

    def prepare(
        self, messages: Sequence[Message], now: datetime, reads: RatingReads
    ) -> CorePrepared:
        """Decode, route, measure, load what memory lacks, and rate ``messages``.

        Raises whatever ``reads`` raises, with the states it loaded dropped.
        """
        engine = self._engine
        prepared = engine.prepare(messages, now, self._limits)
        missing = engine.missing_states()
        try:
            load_missing_states(engine, missing, reads)
            lookup = engine.lookup_keys()
            owners = reads.hash_owners(lookup) if lookup else {}
        except BaseException:
            engine.drop(missing)
            raise
        engine.remember(owners)
        touched = self._touched(prepared)
        rated = engine.rate()
        accepted = prepared.accepted
        bindings = engine.bindings
        return CorePrepared(
            CoreRows(
                prepared.decoded,
                now,
                pa.array(prepared.customers, pa.string()),
                self._line_items,
                rated.columns,
                rated.outcomes,
            ),
            rejected=prepared.rejected,
            refused=[
                (accepted[event], refused_detail(bindings[line_item].line_item_id))
                for event, line_item, _ in rated.refused
            ],
            unresolved=Counter(UnresolvedReason(reason) for _, reason in prepared.unresolved),
            missing_fields=prepared.missing_fields,
            touched=touched,
            store_lookups=len(lookup),
        )

    def _touched(self, prepared: EnginePrepared) -> list[tuple[PartitionKey, StateKey]]:
        """The distinct (partition, state) of the held rows, grouped in Arrow."""
        held = self._engine.held_rows()
        if not len(held["event"]):
            return []
        message = pa.array(prepared.accepted, pa.int32()).take(held["event"])
        sources = pa.table(
            {
                "topic": pa.array(prepared.topics, pa.string()),
                "partition": pa.array(prepared.partitions, pa.int64()),
            }
        ).take(message)
        rows = pa.table(
            {
                "topic": sources["topic"],
                "partition": sources["partition"],
                "line_item": held["line_item"],
                "period_id": held["period_id"],
            }
        )
        distinct = rows.group_by(["topic", "partition", "line_item", "period_id"]).aggregate([])
        bindings = self._engine.bindings
        touched: list[tuple[PartitionKey, StateKey]] = []
        for topic, partition, line_item, period_id in zip(
            *(
                distinct[name].to_pylist()
                for name in ("topic", "partition", "line_item", "period_id")
            ),
            strict=True,
        ):
            binding = bindings[line_item]
            key = StateKey(
                binding.tenant_id, binding.environment_id, binding.line_item_id, period_id
            )
            touched.append(((topic, partition), key))
        return touched

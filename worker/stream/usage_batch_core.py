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
work: only per batch, per rejected or refused message, per partition, per
newly loaded state and per (partition, state) pair the core did not report
before (a pair stays reported until the state is dropped; see
:meth:`~worker.core_engine.CoreBatchEngine.touched`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa

from worker.core_decode import CoreDecoded, Messages
from worker.core_engine import CoreBatchEngine, EnginePrepared, MissingStates, PartitionKey
from worker.core_rating import refused_detail
from worker.domain.catalog_index import CatalogIndex, UnresolvedReason
from worker.domain.metering import WindowSize
from worker.domain.rating import Outcome
from worker.domain.rating_reads import RatingReads, StateKey
from worker.domain.validation import EventLimits
from worker.store.arrow_columns import epoch_us
from worker.store.processed_core import core_processed_columns


def load_missing_states(
    engine: CoreBatchEngine, missing: MissingStates, reads: RatingReads
) -> None:
    """``worker.domain.engine.load_missing_states`` for the fused core: the
    same reads in the same chunks (snapshots chunk by chunk, the stored
    fingerprints of each chunk's coverable states), loaded by position.

    Raises whatever ``reads`` raises; the caller drops ``missing`` again."""
    if not missing.requests:
        return
    for snapshots in reads.snapshots(missing.requests):
        coverable = engine.coverable_of(missing, snapshots)
        engine.load_of(missing, snapshots, reads.fingerprints(coverable) if coverable else None)


@dataclass(slots=True)
class CoreRows:
    """A batch prepared in the core: its raw columns and its priced rows' arrays."""

    decoded: CoreDecoded
    processed_at: datetime
    rated: dict[str, pa.Array]
    outcomes: Counter[Outcome]

    @property
    def row_count(self) -> int:
        return len(self.rated["event"])

    def processed_columns(self, ingested_at: datetime) -> dict[str, pa.Array]:
        """The ``events_processed`` insert columns (``ingested_at``: the batch's
        ``events`` insert's, :meth:`CoreDecoded.insert_columns`);
        ``version`` is the processing time in epoch µs, as ``ProcessedRows.version``."""
        return core_processed_columns(
            rated=self.rated,
            processed_at=self.processed_at,
            version=epoch_us(self.processed_at),
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
    """The (partition, state) pairs the batch's routed rows touched that were
    not reported before (since the state was last dropped), once each. The
    caller keeps them per partition and drops their states on revocation."""
    store_lookups: int = 0
    offsets: dict[PartitionKey, tuple[int, int]] = field(default_factory=dict)
    """Per partition of the batch: its first offset and the offset after its last message."""


@dataclass(frozen=True, slots=True)
class CoreRouted:
    """A batch routed by :meth:`CoreBatchStep.route`, not yet rated."""

    prepared: EnginePrepared
    now: datetime


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

    def prepare(self, messages: Messages, now: datetime, reads: RatingReads) -> CorePrepared:
        """Decode, route, measure, load what memory lacks, and rate ``messages``.

        Raises whatever ``reads`` raises, with the states it loaded dropped.
        """
        return self.rate(self.route(messages, now), reads)

    def missing_requests(self) -> dict[StateKey, WindowSize | None]:
        """The snapshot requests of the states the routed batch lacks in memory
        (what :meth:`rate` would read first, if nothing changes meanwhile)."""
        return self._engine.missing().requests

    def route(self, messages: Messages, now: datetime) -> CoreRouted:
        """The stateless phase: decode, route and measure ``messages``; the core
        holds their rows until the next ``route``. Reads and changes no rating
        state and no store, so it may run while an earlier batch is written."""
        return CoreRouted(self._engine.prepare(messages, now, self._limits), now)

    def rate(self, routed: CoreRouted, reads: RatingReads) -> CorePrepared:
        """The stateful phase of the batch last routed: load what memory lacks
        (states dropped since the routing too: what is missing is decided
        here), remember the stored hash owners, rate. May be retried after it
        raised (whatever ``reads`` raises, with the states it loaded dropped).
        """
        engine = self._engine
        prepared, now = routed.prepared, routed.now
        missing = engine.missing()
        try:
            load_missing_states(engine, missing, reads)
            lookup = engine.lookup_keys()
            owners = reads.hash_owners(lookup) if lookup else {}
        except BaseException:
            engine.drop(missing.requests)
            raise
        engine.remember(owners)
        rated = engine.rate(now)
        touched = engine.touched()
        accepted = prepared.accepted
        bindings = engine.bindings
        return CorePrepared(
            CoreRows(prepared.decoded, now, rated.columns, rated.outcomes),
            rejected=prepared.rejected,
            refused=[
                (accepted[event], refused_detail(bindings[line_item].line_item_id))
                for event, line_item, _ in rated.refused
            ],
            unresolved=Counter({UnresolvedReason(code): n for code, n in prepared.unresolved}),
            missing_fields=prepared.missing_fields,
            touched=touched,
            store_lookups=len(lookup),
            offsets=prepared.offsets,
        )

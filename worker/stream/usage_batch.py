"""One batch of the usage pipeline, without Kafka: messages in, durable rows out.

The consumer loop hands a batch of :class:`SourceMessage` to
:meth:`UsageBatchProcessor.prepare`, which is the single error boundary for
producer input: it decodes (bad input becomes a :class:`DeadLetter` with a
reason), resolves, loads rating state on first touch, runs the batched dedup
check and rates every event. :meth:`UsageBatchProcessor.write` then stores the
raw events and the priced rows. Only after ``write`` (and the dead letters)
succeeded may the loop commit :attr:`PreparedBatch.next_offsets`.

Failure contract: a failed ``prepare`` leaves the rating state as it was
(:meth:`~worker.domain.engine.UsageRater.rate_batch` drops what it loaded
before a read failed), so it may simply be retried. A failed ``write``
must be retried *with the same PreparedBatch* (never re-prepared: its events
are already applied to the in-memory state); if the process dies instead, the
restarted consumer reloads state from the store and the dedup check skips
whatever had been written.

With ``fused_core`` (``EW_ENGINE=core``) the whole prepare runs in the
compiled core (:mod:`worker.stream.usage_batch_core`), with the same store
reads, failure contract, rows, dead letters and counts.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import overload

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from worker.core_decode import Messages, rejection_detail
from worker.domain.catalog_index import CatalogIndex, UnresolvedReason
from worker.domain.engine import (
    DEFAULT_MAX_FINGERPRINTS,
    DEFAULT_MAX_REMEMBERED_OWNERS,
    RatedBatch,
    UsageRater,
)
from worker.domain.events import Event
from worker.domain.rating import VALUE_OUT_OF_RANGE, Outcome
from worker.domain.rating_reads import RatingReads, StateKey
from worker.domain.validation import EventLimits, InvalidEvent, decode_event
from worker.ops.metrics import Metrics
from worker.store.errors import StoreError
from worker.store.gateway import Gateway
from worker.store.processed import PROCESSED_TABLE, MatchColumnCache, insert_rated
from worker.store.rating_reads import StoreRatingReads
from worker.store.raw import EVENTS_TABLE, insert_raw
from worker.stream.prefetched_reads import PrefetchedReads, read_snapshots
from worker.stream.runtime import position
from worker.stream.usage_batch_core import CoreBatchStep, CorePrepared, CoreRouted, CoreRows

PartitionKey = tuple[str, int]
"""(topic, partition): the unit of ownership."""


@dataclass(slots=True)
class SourceMessage:
    """The parts of a Kafka record the pipeline needs. Read-only by convention.

    Not frozen: one is built per record, and a frozen dataclass costs about
    three times as much to construct (CPython 3.11).
    """

    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp_ms: int | None = None
    key: bytes | None = None

    @property
    def next_offset(self) -> int:
        """The offset to commit once this message is durably handled."""
        return self.offset + 1

    @property
    def fallback_id(self) -> str:
        """Event id for messages without one: stable across redelivery."""
        return f"{self.topic}-{self.partition}-{self.offset}"


def source_message(record: Message) -> SourceMessage:
    """A consumed Kafka message as the batch processor takes it (the runtime
    checked its position); no timestamp when its type is
    ``TIMESTAMP_NOT_AVAILABLE``."""
    topic, partition, offset = position(record)
    kind, timestamp = record.timestamp()
    return SourceMessage(
        topic,
        partition,
        offset,
        record.value(),
        timestamp if kind != TIMESTAMP_NOT_AVAILABLE else None,
        record.key(),
    )


class ConsumedMessages(Sequence[SourceMessage]):
    """Kafka messages as consumed, each seen as a :class:`SourceMessage` on demand.

    The compiled core reads :attr:`records` themselves (by method), so the
    consumer's hot path builds no Python object per message; a SourceMessage
    is built only for a message looked at in Python (a dead letter, the
    reference engine, a latency sample), each time it is looked at.
    """

    __slots__ = ("records",)

    def __init__(self, records: Sequence[Message]) -> None:
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    @overload
    def __getitem__(self, index: int) -> SourceMessage: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[SourceMessage]: ...
    def __getitem__(self, index: int | slice) -> SourceMessage | Sequence[SourceMessage]:
        if isinstance(index, slice):
            return ConsumedMessages(self.records[index])
        return source_message(self.records[index])


def core_input(messages: Sequence[SourceMessage]) -> Messages:
    """What the core reads of ``messages``: the Kafka messages behind
    :class:`ConsumedMessages`, else the records themselves."""
    return messages.records if isinstance(messages, ConsumedMessages) else messages


def timestamps_ms(messages: Sequence[SourceMessage]) -> list[int]:
    """The Kafka timestamps of ``messages`` that have one (no SourceMessage built)."""
    if isinstance(messages, ConsumedMessages):
        stamps = (record.timestamp() for record in messages.records)
        return [ts for kind, ts in stamps if kind != TIMESTAMP_NOT_AVAILABLE]
    return [m.timestamp_ms for m in messages if m.timestamp_ms is not None]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that cannot become an event, and why."""

    message: SourceMessage
    reason: str
    error: str


@dataclass(slots=True)
class PreparedBatch:
    """A rated batch ready to be written, and the offsets it completes."""

    events: list[Event] = field(default_factory=list)
    rated: RatedBatch | None = None
    dead_letters: list[DeadLetter] = field(default_factory=list)
    unresolved: Counter[UnresolvedReason] = field(default_factory=Counter)
    missing_fields: int = 0
    next_offsets: dict[PartitionKey, int] = field(default_factory=dict)
    first_offsets: dict[PartitionKey, int] = field(default_factory=dict)
    messages: int = 0
    core_rows: CoreRows | None = None
    """The batch as the fused core prepared it (``EW_ENGINE=core``): its raw
    columns and priced rows' arrays; ``events`` and ``rated`` stay empty."""

    @property
    def row_count(self) -> int:
        if self.core_rows is not None:
            return self.core_rows.row_count
        return len(self.rated.rows) if self.rated is not None else 0

    @property
    def event_count(self) -> int:
        """Messages that became events."""
        if self.core_rows is not None:
            return len(self.core_rows.decoded.accepted)
        return len(self.events)

    @property
    def outcomes(self) -> Counter[Outcome]:
        """Dedup outcome counts of the batch's rows."""
        if self.core_rows is not None:
            return self.core_rows.outcomes
        return self.rated.outcomes if self.rated is not None else Counter()

    def sampled_timestamps(self, limit: int) -> list[datetime]:
        """Event times of at most ``limit`` evenly spaced events (commit lag samples)."""
        if self.core_rows is not None:
            return self.core_rows.sampled_timestamps(limit)
        stride = max(1, -(-len(self.events) // limit))
        return [event.timestamp for event in self.events[::stride]]

    def dedup_token(self, kind: str) -> str:
        """Insert token derived from the exact offset ranges of this batch.

        A batch re-consumed with the same boundaries after a failure before
        commit is then dropped by ClickHouse's insert deduplication.
        """
        ranges = ",".join(
            f"{topic}/{partition}/{self.first_offsets[(topic, partition)]}-{end}"
            for (topic, partition), end in sorted(self.next_offsets.items())
        )
        return f"{kind}:{hashlib.sha256(ranges.encode()).hexdigest()[:40]}"


Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class UsageBatchProcessor:
    """Rating state of the owned partitions and the prepare/write steps of a batch.

    Not thread-safe: one consumer loop drives it. One rater holds the state of
    every owned partition (so even events of one customer that a producer
    keyed inconsistently are rated against one state within this process);
    ``revoke`` drops the state the revoked partitions touched, which the next
    owner reloads from the store.
    """

    def __init__(
        self,
        gateway: Gateway,
        index: CatalogIndex,
        *,
        limits: EventLimits,
        clock: Clock = _utc_now,
        metrics: Metrics | None = None,
        max_dedup_fingerprints: int = DEFAULT_MAX_FINGERPRINTS,
        fused_core: bool = False,
    ) -> None:
        self._gateway = gateway
        self._reads = StoreRatingReads(gateway)
        self._metrics = metrics
        self._limits = limits
        self._clock = clock
        self._match_columns = MatchColumnCache()
        # One engine holds the rating state: the compiled core, or the Python
        # reference engine the core is differential-tested against.
        self._core_step: CoreBatchStep | None = None
        self._rater: UsageRater | None = None
        if fused_core:
            self._core_step = CoreBatchStep(
                index,
                clock(),
                limits=limits,
                max_fingerprints=max_dedup_fingerprints,
                max_remembered_owners=DEFAULT_MAX_REMEMBERED_OWNERS,
            )
        else:
            self._rater = UsageRater(index, max_fingerprints=max_dedup_fingerprints)
        self._keys_by_partition: dict[PartitionKey, set[StateKey]] = {}
        self._routed: tuple[Sequence[SourceMessage], CoreRouted] | None = None
        # States dropped so far (revokes, catalog changes) and as of the last
        # rated batch: snapshots may be read ahead only while the two agree
        # (see worker.stream.prefetched_reads).
        self._drops = 0
        self._drops_when_rated = 0
        self._prefetched: tuple[int, Sequence[SourceMessage], PrefetchedReads] | None = None

    @property
    def owned(self) -> set[PartitionKey]:
        return set(self._keys_by_partition)

    def replace_index(self, index: CatalogIndex) -> None:
        """Use a new catalog version for events prepared from now on (between batches)."""
        self._routed = None  # routed with the old catalog
        self._drops += 1
        if self._core_step is not None:
            self._core_step.replace_index(index, self._clock())
        if self._rater is not None:
            self._rater.replace_index(index)

    def assign(self, partitions: Iterable[PartitionKey]) -> None:
        for partition in partitions:
            self._keys_by_partition.setdefault(partition, set())

    def revoke(self, partitions: Iterable[PartitionKey]) -> None:
        """Drop the rating state the partitions touched. Call after flush + commit."""
        state = self._state
        self._drops += 1
        for partition in partitions:
            state.drop(self._keys_by_partition.pop(partition, set()))
        if self._metrics is not None:
            self._metrics.dedup_fingerprints.set(state.fingerprint_count)

    def route(self, messages: Sequence[SourceMessage]) -> None:
        """Optionally, the stateless first part of :meth:`prepare`, ahead of it.

        With the core: decode, route and measure ``messages`` now; the next
        ``prepare`` of this very sequence only rates them. Reads and changes no
        rating state and no store, so it may run while the previous batch is
        still being written (write-behind, ADR 0002). A ``prepare`` of other
        messages, or a catalog change, forgets it. The Python engine has no
        such split: nothing happens.
        """
        if self._core_step is not None:
            self._routed = (messages, self._core_step.route(core_input(messages), self._clock()))

    def prefetch(self, messages: Sequence[SourceMessage]) -> None:
        """Optionally, after :meth:`route` of ``messages``: read the stored
        aggregates of the states they touch first, ahead of :meth:`prepare`,
        so that the read overlaps the previous batch's write.

        Only while no state was dropped since the last batch was rated (see
        :mod:`worker.stream.prefetched_reads` for why that is sound); what
        ``prepare`` finds read ahead it takes only if still no state was
        dropped. A store error here is left for ``prepare`` to meet (and
        retry). The Python engine reads nothing ahead.
        """
        routed = self._routed
        step = self._core_step
        if step is None or routed is None or routed[0] is not messages:
            return
        if self._drops != self._drops_when_rated:
            return
        requests = step.missing_requests()
        if not requests:
            return
        try:
            snapshots = read_snapshots(self._reads, requests)
        except StoreError:
            return
        self._prefetched = (self._drops, messages, PrefetchedReads(self._reads, snapshots))

    def _reads_for(self, messages: Sequence[SourceMessage]) -> RatingReads:
        """The reads of ``messages``' rating: with their snapshots read ahead
        when no state was dropped since."""
        prefetched = self._prefetched
        if prefetched is not None and prefetched[1] is messages and prefetched[0] == self._drops:
            return prefetched[2]
        return self._reads

    def prepare(self, messages: Sequence[SourceMessage]) -> PreparedBatch:
        """Decode, then rate the events, reading the store only through the rating port.

        No writes. Bad input becomes dead letters; see the module docstring.
        """
        batch = PreparedBatch(messages=len(messages))
        routed, self._routed = self._routed, None
        if self._core_step is not None:
            if routed is None or routed[0] is not messages:
                routed = (messages, self._core_step.route(core_input(messages), self._clock()))
            try:
                core = self._core_step.rate(routed[1], self._reads_for(messages))
            except BaseException:
                self._routed = routed  # the core still holds them: a retry only rates
                raise
            self._prefetched = None
            self._drops_when_rated = self._drops
            self._fill_from_core(batch, messages, core)
        elif self._rater is not None:
            self._fill_from_python(batch, messages, self._clock(), self._rater)
        if self._metrics is not None:
            self._metrics.dedup_fingerprints.set(self._state.fingerprint_count)
        return batch

    @property
    def _state(self) -> CoreBatchStep | UsageRater:
        """The engine that holds the rating state (exactly one is set)."""
        state = self._core_step or self._rater
        if state is None:  # pragma: no cover - __init__ sets one
            raise RuntimeError("no rating engine")
        return state

    def _fill_from_python(
        self,
        batch: PreparedBatch,
        messages: Sequence[SourceMessage],
        now: datetime,
        rater: UsageRater,
    ) -> None:
        """``batch`` from the reference engine (``EW_ENGINE=python``)."""
        for message in messages:
            partition = (message.topic, message.partition)
            batch.first_offsets.setdefault(partition, message.offset)
            batch.next_offsets[partition] = message.next_offset
        source: dict[int, SourceMessage] = {}
        for message in messages:
            event = self._decode(message, now, batch)
            if event is not None:
                source[id(event)] = message
                batch.events.append(event)
        rated = batch.rated = rater.rate_batch(batch.events, self._reads, now)
        batch.unresolved.update(reason for _, reason in rated.unresolved)
        batch.missing_fields = rated.missing_fields
        for refused in rated.refused:
            batch.dead_letters.append(
                DeadLetter(source[id(refused.event)], VALUE_OUT_OF_RANGE, refused.detail)
            )
        for event, key in rated.touched:
            message = source[id(event)]
            self._keys_by_partition.setdefault((message.topic, message.partition), set()).add(key)
        if self._metrics is not None:
            self._metrics.dedup_store_lookups.inc(rated.store_lookups)

    def _fill_from_core(
        self, batch: PreparedBatch, messages: Sequence[SourceMessage], core: CorePrepared
    ) -> None:
        """``batch`` from the fused core's answers (its offsets per partition; dead
        letters in the reference's order)."""
        for partition, (first, after) in core.offsets.items():
            batch.first_offsets[partition] = first
            batch.next_offsets[partition] = after
        now = core.rows.processed_at
        for number, reason in core.rejected:
            message = messages[number]
            detail = rejection_detail(message, now, self._limits)
            batch.dead_letters.append(DeadLetter(message, reason, detail))
        for number, detail in core.refused:
            batch.dead_letters.append(DeadLetter(messages[number], VALUE_OUT_OF_RANGE, detail))
        batch.unresolved = core.unresolved
        batch.missing_fields = core.missing_fields
        batch.core_rows = core.rows
        for partition, key in core.touched:
            self._keys_by_partition.setdefault(partition, set()).add(key)
        if self._metrics is not None:
            self._metrics.dedup_store_lookups.inc(core.store_lookups)

    def write(self, batch: PreparedBatch) -> None:
        """Store raw events then priced rows. Blocking, idempotent; raises StoreError.

        With metrics: each insert's latency, failures by table, and the
        processed rows written. With the core's raw columns the raw insert runs
        on a helper thread while the processed columns are built (the gateway
        releases the GIL inside an insert); both are durable on return.
        """
        if batch.core_rows is not None:
            self._write_overlapped(batch, batch.core_rows)
            return
        self._timed(
            "raw_events",
            lambda: insert_raw(self._gateway, batch.events, dedup_token=batch.dedup_token("raw")),
        )
        self._write_processed(batch)

    def _write_overlapped(self, batch: PreparedBatch, rows: CoreRows) -> None:
        core = rows.decoded
        ingested_at = datetime.now(UTC)
        columns = core.insert_columns(ingested_at)
        token = batch.dedup_token("raw")
        failure: list[BaseException] = []

        def insert_raw_columns() -> None:
            try:
                if core.accepted:
                    self._timed(
                        "raw_events",
                        lambda: self._gateway.insert(EVENTS_TABLE, columns, dedup_token=token),
                    )
            except BaseException as exc:  # re-raised by the caller's thread below
                failure.append(exc)

        raw = threading.Thread(target=insert_raw_columns, name="raw-insert", daemon=True)
        raw.start()
        try:
            self._write_core_processed(batch, rows, ingested_at)
        finally:
            raw.join()
        if failure:
            raise failure[0]

    def _write_processed(self, batch: PreparedBatch) -> None:
        rated = batch.rated
        if rated is None or not rated.rows:
            return
        self._timed(
            "processed_events",
            lambda: insert_rated(
                self._gateway,
                rated.rows,
                dedup_token=batch.dedup_token("processed"),
                cache=self._match_columns,
            ),
        )
        if self._metrics is not None:
            self._metrics.rows_inserted.inc(len(rated.rows))

    def _write_core_processed(
        self, batch: PreparedBatch, rows: CoreRows, ingested_at: datetime
    ) -> None:
        if not rows.row_count:
            return
        columns = rows.processed_columns(ingested_at)
        token = batch.dedup_token("processed")
        self._timed(
            "processed_events",
            lambda: self._gateway.insert(PROCESSED_TABLE, columns, dedup_token=token),
        )
        if self._metrics is not None:
            self._metrics.rows_inserted.inc(rows.row_count)

    def _timed(self, table: str, insert: Callable[[], object]) -> None:
        metrics = self._metrics
        if metrics is None:
            insert()
            return
        started = time.perf_counter()
        try:
            insert()
        except StoreError:
            metrics.insert_errors.labels(table).inc()
            raise
        metrics.insert_duration.labels(table).observe(time.perf_counter() - started)

    def committed(self, batch: PreparedBatch) -> None:
        """Call after the batch's offsets are committed: its hashes are now durable."""
        self._state.committed()

    def _decode(self, message: SourceMessage, now: datetime, batch: PreparedBatch) -> Event | None:
        if message.value is None:
            batch.dead_letters.append(DeadLetter(message, "empty_message", "message has no value"))
            return None
        fallback_ts = (
            datetime.fromtimestamp(message.timestamp_ms / 1000, UTC)
            if message.timestamp_ms is not None and message.timestamp_ms > 0
            else now
        )
        try:
            return decode_event(
                message.value,
                fallback_id=message.fallback_id,
                fallback_timestamp=fallback_ts,
                limits=self._limits,
            )
        except InvalidEvent as exc:
            batch.dead_letters.append(DeadLetter(message, exc.reason.value, exc.detail))
            return None

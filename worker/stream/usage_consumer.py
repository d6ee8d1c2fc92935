"""The usage consumer loop: Kafka in, one batch at a time, commit after write.

A small loop on ``confluent_kafka.Consumer`` (ADR 0001). Each iteration
collects a batch (cut by size and age), then :meth:`UsageBatchProcessor.prepare`
rates it, dead letters are produced, :meth:`UsageBatchProcessor.write` stores
the rows, dead letters are acknowledged, and only then are exactly the batch's
offsets committed, synchronously. While ClickHouse or the broker fails, the
loop pauses its partitions, keeps polling (so the group keeps it) and retries
with backoff; it never commits past unwritten data.

Rebalance, under every group protocol (eager, cooperative-sticky, KIP-848
``consumer``; ``EW_KAFKA_GROUP_PROTOCOL``): partitions are revoked or lost only
inside ``consume``, i.e. while a batch is collected or while a stage is retried
(pausing and polling). Revoked partitions lose their rating state and their
messages in hand, which are uncommitted and redelivered to the next owner. A
batch whose retry saw a revoke is abandoned: all rating state goes (the store
is the truth; rows already written are deduplicated on redelivery) and the
batch's messages of partitions still owned are kept, in order, for the next
batch, since an incremental rebalance leaves their fetch position past them
(dropping them would skip uncommitted messages). Partitions paused for a retry
are resumed when it ends, abandoned or not; commits cover owned partitions only.

Operability: the loop beats :class:`~worker.ops.health.LoopHealth` every
iteration and marks batches in flight and committed (liveness), records the
:class:`~worker.ops.metrics.Metrics` of every committed batch, measures the
consumer lag of its partitions every few seconds, and logs one structured
line per batch and per dead letter.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import orjson
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from worker.domain.catalog_index import CatalogIndex
from worker.domain.rating import Outcome
from worker.ops.health import LoopHealth
from worker.ops.metrics import Metrics
from worker.ops.settings import WorkerSettings
from worker.store.errors import StoreError
from worker.stream.consumer_support import (
    NeverAssignedError,
    RetryPolicy,
    StopOnSignals,
    commit_offsets,
    describe_consumer_error,
    group_consumer_config,
    idle_long_enough,
    owned_offsets,
    release_partitions,
    take_partitions,
)
from worker.stream.dlq import DeadLetterError, DeadLetterProducer, SourcePosition
from worker.stream.usage_batch import PreparedBatch, SourceMessage, UsageBatchProcessor

log = logging.getLogger(__name__)

T = TypeVar("T")

_POLL_TIMEOUT_S = 0.5  # consume() ignores signals while waiting: keep it short
_DLQ_ACK_TIMEOUT_S = 30.0
_LAG_INTERVAL_S = 5.0  # consumer lag is measured at most this often (and after commits)
_LAG_AFTER_COMMIT_S = 1.0
_WATERMARK_TIMEOUT_S = 0.5
_LOGGED_DEAD_LETTERS = 20  # per batch; the rest are counted in the batch line


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """When to cut a batch: at ``max_events`` messages, or once ``max_wait_s`` has
    passed since the previous batch was cut and at least one message is held.

    Under load a batch is cut as soon as the previous one is committed (with
    whatever arrived meanwhile, up to ``max_events``); in light traffic at most
    one batch per ``max_wait_s`` reaches ClickHouse (few, larger inserts).
    """

    max_events: int = 20_000
    max_wait_s: float = 0.5
    max_bytes: int = 64 * 1024 * 1024
    """Cut once the messages' values hold this many bytes (at least one message
    per batch); what a consume() returned beyond it waits for the next batch."""


_COLLECT_SLICE_S = 0.05  # consume() waits its whole timeout unless it fills the request


def collect_wait(now: float, holding: bool, *, cut_at: float, idle_at: float) -> float | None:
    """How long the next ``consume()`` of a batch being collected may wait; None = stop.

    ``holding``: the batch has messages. It is cut at ``cut_at``; an empty one
    gives up at ``idle_at`` (the loop then checks for idleness and comes back).
    Waits are short slices so a batch is cut close to ``cut_at``.
    """
    until = cut_at if holding else idle_at
    if now >= until:
        return None
    return min(_COLLECT_SLICE_S, until - now)


class _Abandoned(Exception):
    """The partitions of the batch in flight were revoked or lost."""


@dataclass(slots=True)
class LoopStats:
    """Counters of one run (for logs, tests and the idle exit)."""

    batches: int = 0
    messages: int = 0
    rows: int = 0
    dead_letters: int = 0
    retries: int = 0
    abandoned: int = 0
    rebalances: int = 0
    unpriced: dict[str, int] = field(default_factory=dict)
    """Events stored raw without processed rows, by reason (``UnresolvedReason``)."""
    owned_partitions: bool = False
    """Whether any partition was ever assigned (the idle exit is honest only then)."""
    first_batch_at: float | None = None
    """Clock reading when the first batch was collected (throughput window start)."""
    last_commit_at: float | None = None
    commit_latencies_ms: list[float] | None = None
    """When recording (benchmarks): per message, wall milliseconds from its
    Kafka timestamp to the commit of its offset."""

    @property
    def busy_seconds(self) -> float:
        """From the first batch collected to the last commit."""
        if self.first_batch_at is None or self.last_commit_at is None:
            return 0.0
        return self.last_commit_at - self.first_batch_at


class UsageConsumer:
    """Runs the usage pipeline until stopped, idle (optional) or fatally failing."""

    def __init__(
        self,
        settings: WorkerSettings,
        processor: UsageBatchProcessor,
        dead_letters: DeadLetterProducer,
        *,
        batch_policy: BatchPolicy | None = None,
        retry_policy: RetryPolicy | None = None,
        exit_when_idle_s: float | None = None,
        catalog_updates: Callable[[], CatalogIndex | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
        health: LoopHealth | None = None,
        record_commit_latency: bool = False,
    ) -> None:
        self._settings = settings
        self._processor = processor
        self._dlq = dead_letters
        self._batch = batch_policy or BatchPolicy(
            settings.batch_max_events, settings.batch_max_wait_ms / 1000, settings.batch_max_bytes
        )
        self._retry = retry_policy or RetryPolicy()
        self._exit_when_idle_s = exit_when_idle_s
        self._catalog_updates = catalog_updates
        self._clock = clock
        self._stop = False
        self._in_flight = False
        self._abandon = False
        self._assigned: set[tuple[str, int]] = set()
        # Revoked or lost since the messages in hand were fetched: theirs are stale
        # (a partition assigned again restarts from its committed offset).
        self._revoked: set[tuple[str, int]] = set()
        # Messages that arrived while paused, or kept from an abandoned batch: handled
        # first by the next batch, never skipped.
        self._carried: list[SourceMessage] = []
        self._last_activity = self._started_at = clock()
        self.stats = LoopStats(commit_latencies_ms=[] if record_commit_latency else None)
        self._writes = 0
        self._metrics = metrics if metrics is not None else Metrics()
        self._health = (
            health
            if health is not None
            else LoopHealth(settings.health_stall_seconds, metrics=self._metrics, clock=clock)
        )
        self._last_lag_at: float | None = None
        self._last_cut = float("-inf")  # clock reading when the previous batch was cut

    def stop(self) -> None:
        """Ask the loop to finish the current batch, commit and return (signal-safe)."""
        self._stop = True

    def run(self) -> None:
        """Consume until :meth:`stop`, SIGTERM/SIGINT or the idle exit. Blocking.

        Returns normally after a clean shutdown (everything handled is
        committed); raises on a fatal error (the process should exit non-zero
        and be restarted).
        """
        consumer = Consumer(group_consumer_config(self._settings, self._settings.usage_group))
        try:
            with StopOnSignals(self.stop, "finishing the current batch"):
                # Subscribe just before polling: a joined member that does not
                # poll stalls the whole group's rebalance (ADR 0001).
                consumer.subscribe(
                    [self._settings.events_topic],
                    on_assign=self._on_assign,
                    on_revoke=self._on_revoke,
                    on_lost=self._on_lost,
                )
                self._last_activity = self._started_at = self._clock()
                while not self._stop:
                    self._health.beat()
                    self._refresh_catalog()
                    messages = self._collect(consumer)
                    if messages:
                        self._handle(consumer, messages)
                    self._refresh_lag(consumer, after_commit=bool(messages))
                    if not messages and self._idle_long_enough():
                        if not self.stats.owned_partitions:
                            raise NeverAssignedError.of(
                                self._settings.usage_group,
                                self._settings.events_topic,
                                self._clock() - self._started_at,
                            )
                        log.info(
                            "idle for %.1fs with everything committed: exiting",
                            self._exit_when_idle_s,
                        )
                        break
        finally:
            consumer.close()
            self._dlq.close()

    # -- the batch -----------------------------------------------------------------

    def _collect(self, consumer: Consumer) -> list[SourceMessage]:
        """The next batch (see :class:`BatchPolicy`); empty after a quiet poll."""
        policy = self._batch
        held = [m for m in self._carried if (m.topic, m.partition) in self._assigned]
        self._carried = []
        batch: list[SourceMessage] = []
        size = 0
        for index, kept in enumerate(held):  # carried messages lead, within the budget
            if batch and size + _value_size(kept) > policy.max_bytes:
                self._carried = held[index:]
                break
            batch.append(kept)
            size += _value_size(kept)
        cut_at = self._last_cut + policy.max_wait_s
        idle_at = self._clock() + _POLL_TIMEOUT_S
        while (
            not self._stop
            and not self._carried
            and len(batch) < policy.max_events
            and size < policy.max_bytes
        ):
            timeout = collect_wait(self._clock(), bool(batch), cut_at=cut_at, idle_at=idle_at)
            if timeout is None:
                break
            raw = consumer.consume(policy.max_events - len(batch), timeout)
            self._health.beat()
            if self._abandon:  # partitions changed: drop what we hold of revoked ones
                self._abandon = False
                batch = [m for m in batch if (m.topic, m.partition) not in self._revoked]
                size = sum(_value_size(m) for m in batch)
                self._revoked.clear()
            for message in raw:
                converted = self._convert(message)
                if (
                    converted is None
                    or (converted.topic, converted.partition) not in self._assigned
                ):
                    continue
                if self._carried or (batch and size + _value_size(converted) > policy.max_bytes):
                    self._carried.append(converted)  # in order, for the next batch
                    continue
                batch.append(converted)
                size += _value_size(converted)
        if batch:
            self._last_cut = self._clock()
        return batch

    def _handle(self, consumer: Consumer, messages: list[SourceMessage]) -> None:
        if self.stats.first_batch_at is None:
            self.stats.first_batch_at = self._clock()
        self._in_flight = True
        self._abandon = False
        self._revoked.clear()
        self._health.batch_started()
        self._metrics.messages_consumed.inc(len(messages))
        durations: dict[str, float] = {}
        try:
            prepared = self._stage(
                consumer, "prepare", durations, lambda: self._processor.prepare(messages)
            )
            self._stage(consumer, "write", durations, lambda: self._processor.write(prepared))
            self._maybe_crash_for_test()
            self._stage(
                consumer, "dead_letters", durations, lambda: self._send_dead_letters(prepared)
            )
            self._stage(consumer, "commit", durations, lambda: self._commit(consumer, prepared))
        except _Abandoned:
            kept = self._abandon_batch(messages)
            log.warning(
                "batch abandoned after a rebalance: messages of revoked partitions go to "
                "their next owner, %d of partitions still owned are retried here",
                len(kept),
                extra={"messages": len(messages)},
            )
            return
        finally:
            self._in_flight = False
        self._processor.committed(prepared)
        if self.stats.commit_latencies_ms is not None:
            now_ms = time.time() * 1000
            self.stats.commit_latencies_ms.extend(
                now_ms - m.timestamp_ms for m in messages if m.timestamp_ms is not None
            )
        self._health.batch_finished(committed=True)
        self._last_activity = self.stats.last_commit_at = self._clock()
        self.stats.batches += 1
        self.stats.messages += prepared.messages
        self.stats.rows += prepared.row_count
        self.stats.dead_letters += len(prepared.dead_letters)
        for reason, count in prepared.unresolved.items():
            self.stats.unpriced[str(reason)] = self.stats.unpriced.get(str(reason), 0) + count
        self._record(prepared, durations)

    def _abandon_batch(self, messages: list[SourceMessage]) -> list[SourceMessage]:
        """Forget a batch that saw a revoke; return (and carry) its messages still owned.

        All rating state goes, since the batch was already rated into it. The
        messages of kept partitions lead the next batch: the consumer's position
        there is already past them, so dropping them would skip them.
        """
        self.stats.abandoned += 1
        self._metrics.batches_abandoned.inc()
        self._health.batch_finished(committed=False)
        self._processor.revoke(self._processor.owned)
        self._processor.assign(self._assigned)
        self._dlq.reset_after_failure()
        kept = [
            m
            for m in messages
            if (m.topic, m.partition) in self._assigned
            and (m.topic, m.partition) not in self._revoked
        ]
        self._revoked.clear()
        self._carried = kept + self._carried
        return kept

    def _stage(
        self,
        consumer: Consumer,
        stage: str,
        durations: dict[str, float],
        operation: Callable[[], T],
    ) -> T:
        """One pipeline stage with retries, timed into ``durations`` and the histogram."""
        started = time.perf_counter()
        result = self._with_retry(consumer, operation, stage=stage)
        elapsed = time.perf_counter() - started
        durations[stage] = elapsed
        self._metrics.stage_duration.labels(stage).observe(elapsed)
        return result

    def _record(self, prepared: PreparedBatch, durations: dict[str, float]) -> None:
        """Metrics and the log line of a committed batch."""
        metrics = self._metrics
        metrics.batches_committed.inc()
        metrics.events_processed.inc(len(prepared.events))
        metrics.batch_messages.observe(prepared.messages)
        metrics.batch_rows.observe(prepared.row_count)
        for unresolved, count in prepared.unresolved.items():
            metrics.unresolved.labels(unresolved.value).inc(count)
        outcomes: dict[str, int] = {}
        if prepared.rated is not None:
            outcomes = {outcome.value: n for outcome, n in prepared.rated.outcomes.items() if n}
            for kind, count in outcomes.items():
                if kind in _DUPLICATE_KINDS:
                    metrics.duplicates.labels(kind).inc(count)
        dead_letters: dict[str, int] = {}
        for letter in prepared.dead_letters:
            dead_letters[letter.reason] = dead_letters.get(letter.reason, 0) + 1
        for reason, count in dead_letters.items():
            metrics.dead_letters.labels(reason).inc(count)
        for letter in prepared.dead_letters[:_LOGGED_DEAD_LETTERS]:  # once, when acknowledged
            message = letter.message
            log.warning(
                "dead letter: %s (%s)",
                letter.reason,
                letter.error[:200],
                extra={
                    "topic": message.topic,
                    "partition": message.partition,
                    "offset": message.offset,
                    "tenant": _tenant_hint(message.value),
                    "reason": letter.reason,
                    "error": letter.error[:200],
                },
            )
        if prepared.missing_fields:
            metrics.missing_quantity_fields.inc(prepared.missing_fields)
        metrics.events_committed(prepared.events)
        log.info(
            "batch committed",
            extra={
                "messages": prepared.messages,
                "events": len(prepared.events),
                "rows": prepared.row_count,
                "dead_letters": dead_letters,
                "unresolved": {str(r): n for r, n in prepared.unresolved.items()},
                "outcomes": outcomes,
                "durations_ms": {stage: round(s * 1000, 3) for stage, s in durations.items()},
                "offsets": {
                    f"{topic}/{partition}": [prepared.first_offsets[(topic, partition)], end]
                    for (topic, partition), end in sorted(prepared.next_offsets.items())
                },
            },
        )

    def _maybe_crash_for_test(self) -> None:
        """Fault injection (``EW_FAULT_CRASH_AFTER_WRITES``): die between write and commit."""
        limit = self._settings.fault_crash_after_writes
        if limit:
            self._writes += 1
            if self._writes >= limit:
                log.warning("fault injection: exiting after write, before commit")
                os._exit(137)

    def _send_dead_letters(self, prepared: PreparedBatch) -> None:
        """Produce the batch's dead letters and wait for every acknowledgement.

        Idempotent per attempt: a failed attempt is forgotten and all are sent
        again (a duplicate dead letter is harmless; a missing one is not).
        """
        if not prepared.dead_letters:
            return
        self._dlq.reset_after_failure()
        for letter in prepared.dead_letters:
            message = letter.message
            self._dlq.send(
                message.value,
                key=message.key,
                reason=letter.reason,
                error=letter.error,
                source=SourcePosition(message.topic, message.partition, message.offset),
            )
        self._dlq.flush_and_check(_DLQ_ACK_TIMEOUT_S)

    def _commit(self, consumer: Consumer, prepared: PreparedBatch) -> None:
        offsets = [
            TopicPartition(topic, partition, next_offset)
            for (topic, partition), next_offset in sorted(prepared.next_offsets.items())
        ]
        commit_offsets(consumer, owned_offsets(offsets, self._assigned))

    def _with_retry(
        self, consumer: Consumer, operation: Callable[[], T], *, stage: str = "prepare"
    ) -> T:
        """Run ``operation``; on store/broker failure pause, keep polling, back off, retry.

        An outage is said once, in a warning when it starts (then each retry
        only at DEBUG), and once more when the operation succeeds again. Every
        partition owned during the retry is paused (those assigned meanwhile
        too); the ones still owned are resumed when the retry ends, whether it
        succeeded or the batch was abandoned.
        """
        delays = self._retry.delays()
        paused: set[tuple[str, int]] = set()
        failures = 0
        started = self._clock()
        try:
            while True:
                if self._abandon:
                    raise _Abandoned
                try:
                    result = operation()
                except (StoreError, DeadLetterError, KafkaException) as exc:
                    self.stats.retries += 1
                    self._metrics.retries.labels(stage).inc()
                    self._pause_owned(consumer, paused)
                    delay = next(delays)
                    failures += 1
                    log.log(
                        logging.WARNING if failures == 1 else logging.DEBUG,
                        "consumption paused, nothing committed; %s; retrying (next in %.1fs) "
                        "until it works again: %s",
                        _failing_part(exc, stage),
                        delay,
                        exc,
                        extra={
                            "stage": stage,
                            "reason": type(exc).__name__,
                            "attempt": failures,
                            "partitions": sorted(f"{t}/{p}" for t, p in self._assigned),
                        },
                    )
                    self._wait_polling(consumer, delay)
                    continue
                if failures:
                    log.warning(
                        "resumed after %d failed attempts in %.1fs",
                        failures,
                        self._clock() - started,
                        extra={"stage": stage, "attempt": failures},
                    )
                return result
        finally:
            still_owned = sorted(paused & self._assigned)
            if still_owned:
                consumer.resume([TopicPartition(t, p) for t, p in still_owned])

    def _pause_owned(self, consumer: Consumer, paused: set[tuple[str, int]]) -> None:
        """Pause the owned partitions not yet in ``paused`` and add them to it."""
        fresh = sorted(self._assigned - paused)
        if fresh:
            consumer.pause([TopicPartition(t, p) for t, p in fresh])
            paused.update(fresh)

    def _wait_polling(self, consumer: Consumer, seconds: float) -> None:
        """Sleep while calling consume() on paused partitions to stay in the group."""
        until = self._clock() + seconds
        while self._clock() < until and not self._abandon:
            # Paused partitions should deliver nothing; this serves rebalances and
            # heartbeats. Anything that still arrives is kept for the next batch.
            self._health.beat()
            for message in consumer.consume(
                1, min(_POLL_TIMEOUT_S, max(0.0, until - self._clock()))
            ):
                converted = self._convert(message)
                if converted is not None:
                    self._carried.append(converted)

    # -- rebalance callbacks (run inside consume()) ---------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        take_partitions(consumer, self._settings, partitions)
        keys = {(p.topic, p.partition) for p in partitions}
        self._assigned |= keys
        self._processor.assign(keys)
        self.stats.rebalances += 1
        self.stats.owned_partitions |= bool(keys)
        self._last_activity = self._clock()
        self._assignment_changed("assign")
        self._last_lag_at = None
        log.info("assigned %s", sorted(keys), extra={"partitions": _names(keys)})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drop(partitions, "revoke")
        release_partitions(consumer, self._settings, partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drop(partitions, "lost")
        release_partitions(consumer, self._settings, partitions)

    def _drop(self, partitions: list[TopicPartition], kind: str) -> None:
        keys = {(p.topic, p.partition) for p in partitions}
        self._assigned -= keys
        self._revoked |= keys
        self._last_activity = self._clock()
        self._abandon = True
        self._carried = [m for m in self._carried if (m.topic, m.partition) not in keys]
        self._processor.revoke(keys)
        self._assignment_changed(kind)
        log.info(
            "%s %s",
            "revoked" if kind == "revoke" else kind,
            sorted(keys),
            extra={"partitions": _names(keys)},
        )

    def _assignment_changed(self, kind: str) -> None:
        self._metrics.rebalances.labels(kind).inc()
        self._metrics.set_assignment(self._assigned)
        self._health.set_assigned(len(self._assigned))

    def _refresh_lag(self, consumer: Consumer, *, after_commit: bool = False) -> None:
        """Measure high watermark minus position per owned partition.

        At most every 5 s, or every second while batches are being committed.

        Watermarks come from librdkafka's cache of fetch responses (no request);
        a partition without a known position or watermark is skipped. On
        brokers whose high watermark lags (tansu) this is a lower bound, which
        is fine for a gauge and never used to decide "caught up".
        """
        now = self._clock()
        interval = _LAG_AFTER_COMMIT_S if after_commit else _LAG_INTERVAL_S
        if self._last_lag_at is not None and now - self._last_lag_at < interval:
            return
        self._last_lag_at = now
        if not self._assigned:
            self._health.set_backlog(0)
            return
        try:
            positions = consumer.position(
                [TopicPartition(topic, partition) for topic, partition in sorted(self._assigned)]
            )
        except KafkaException as exc:
            log.debug("cannot read positions for the lag: %s", exc)
            return
        total = 0
        for position in positions:
            if position.offset < 0:
                continue
            try:
                _, high = consumer.get_watermark_offsets(
                    position, timeout=_WATERMARK_TIMEOUT_S, cached=True
                )
            except KafkaException:
                continue
            if high < 0:
                continue
            lag = max(0, high - position.offset)
            total += lag
            self._metrics.set_lag(position.topic, position.partition, lag)
        self._health.set_backlog(total)

    # -- helpers --------------------------------------------------------------------

    def _convert(self, message: Message) -> SourceMessage | None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise KafkaException(error)
            log.warning("%s", describe_consumer_error(error))
            return None
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            return None
        kind, timestamp = message.timestamp()
        return SourceMessage(
            topic,
            partition,
            offset,
            message.value(),
            timestamp if kind != 0 else None,
            message.key(),
        )

    def _refresh_catalog(self) -> None:
        if self._catalog_updates is None:
            return
        index = self._catalog_updates()
        if index is not None:
            self._processor.replace_index(index)
            self._metrics.catalog_in_use(index)
            log.info(
                "catalog updated",
                extra={
                    "customers": index.customer_count,
                    "line_items": index.line_item_count,
                    "problems": len(index.problems),
                },
            )

    def _idle_long_enough(self) -> bool:
        return idle_long_enough(
            idle_s=self._exit_when_idle_s,
            # Never owned a partition: count from the start, since every
            # (empty) assignment of a rebalance loop would reset the activity.
            idle_for_s=self._clock()
            - (self._last_activity if self.stats.owned_partitions else self._started_at),
            busy=self._in_flight or bool(self._carried),
            owns_partitions=bool(self._assigned),
            session_timeout_ms=self._settings.kafka_session_timeout_ms,
        )


_DUPLICATE_KINDS = frozenset(o.value for o in Outcome if o is not Outcome.COUNTED)


def _value_size(message: SourceMessage) -> int:
    return len(message.value) if message.value is not None else 0


def _failing_part(exc: Exception, stage: str) -> str:
    """Which part failed, in the worker's words, for the retry log line."""
    if isinstance(exc, StoreError):
        return f"ClickHouse unavailable during {stage}"
    return f"Kafka broker unavailable or refusing during {stage}"


def _names(keys: set[tuple[str, int]]) -> list[str]:
    return sorted(f"{topic}/{partition}" for topic, partition in keys)


def _tenant_hint(value: bytes | None) -> str | None:
    """The ``tenant_id`` of a rejected message when it is readable, for the log line only."""
    if not value or len(value) > 65_536:
        return None
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    tenant = document.get("tenant_id") if isinstance(document, dict) else None
    return tenant[:100] if isinstance(tenant, str) else None

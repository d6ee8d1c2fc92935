"""The usage consumer loop: Kafka in, one batch at a time, commit after write.

A small loop on ``confluent_kafka.Consumer`` (ADR 0001). Each iteration
collects a batch (cut by size and age), then :meth:`UsageBatchProcessor.prepare`
rates it, dead letters are produced, :meth:`UsageBatchProcessor.write` stores
the rows, dead letters are acknowledged, and only then are exactly the batch's
offsets committed, synchronously. While ClickHouse or the broker fails, the
loop pauses its partitions, keeps polling (so the group keeps it) and retries
with backoff; it never commits past unwritten data.

Rebalance (eager assignment): partitions are revoked only inside ``consume``,
i.e. between batches or during a retry. Messages collected but not yet rated
are dropped (uncommitted, they are redelivered); a batch still failing to write
is abandoned together with all rating state (the store is the truth; rows
already written are deduplicated on redelivery).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from worker.domain.catalog_index import CatalogIndex
from worker.ops.settings import WorkerSettings
from worker.store.errors import StoreError
from worker.stream.dlq import DeadLetterError, DeadLetterProducer, SourcePosition
from worker.stream.usage_batch import PreparedBatch, SourceMessage, UsageBatchProcessor

log = logging.getLogger(__name__)

T = TypeVar("T")

_POLL_TIMEOUT_S = 0.5  # consume() ignores signals while waiting: keep it short
_DLQ_ACK_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """When to cut a batch: ``max_events`` messages or ``max_wait_s`` after its first."""

    max_events: int = 20_000
    max_wait_s: float = 0.5


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff between attempts while the store or the broker fails."""

    initial_s: float = 0.2
    max_s: float = 10.0
    multiplier: float = 2.0

    def delays(self) -> Any:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(self.max_s, delay * self.multiplier)


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
    first_batch_at: float | None = None
    """Clock reading when the first batch was collected (throughput window start)."""
    last_commit_at: float | None = None

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
    ) -> None:
        self._settings = settings
        self._processor = processor
        self._dlq = dead_letters
        self._batch = batch_policy or BatchPolicy(
            settings.batch_max_events, settings.batch_max_wait_ms / 1000
        )
        self._retry = retry_policy or RetryPolicy()
        self._exit_when_idle_s = exit_when_idle_s
        self._catalog_updates = catalog_updates
        self._clock = clock
        self._stop = False
        self._in_flight = False
        self._abandon = False
        self._assigned: set[tuple[str, int]] = set()
        # Messages that arrived while paused: handled by the next batch, never skipped.
        self._carried: list[SourceMessage] = []
        self._last_activity = clock()
        self.stats = LoopStats()
        self._writes = 0

    def stop(self) -> None:
        """Ask the loop to finish the current batch, commit and return (signal-safe)."""
        self._stop = True

    def run(self) -> None:
        """Consume until :meth:`stop`, SIGTERM/SIGINT or the idle exit. Blocking.

        Returns normally after a clean shutdown (everything handled is
        committed); raises on a fatal error (the process should exit non-zero
        and be restarted).
        """
        consumer = Consumer(self._consumer_config())
        previous = self._install_signal_handlers()
        try:
            # Subscribe just before polling: a joined member that does not poll
            # stalls the whole group's rebalance (ADR 0001).
            consumer.subscribe(
                [self._settings.events_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self._last_activity = self._clock()
            while not self._stop:
                self._refresh_catalog()
                messages = self._collect(consumer)
                if messages:
                    self._handle(consumer, messages)
                elif self._idle_long_enough():
                    log.info(
                        "idle for %.1fs with everything committed: exiting", self._exit_when_idle_s
                    )
                    break
        finally:
            self._restore_signal_handlers(previous)
            consumer.close()
            self._dlq.close()

    # -- the batch -----------------------------------------------------------------

    def _collect(self, consumer: Consumer) -> list[SourceMessage]:
        batch = [m for m in self._carried if (m.topic, m.partition) in self._assigned]
        self._carried = []
        deadline: float | None = self._clock() + self._batch.max_wait_s if batch else None
        while not self._stop and len(batch) < self._batch.max_events:
            timeout = _POLL_TIMEOUT_S
            if deadline is not None:
                timeout = min(timeout, max(0.0, deadline - self._clock()))
            raw = consumer.consume(self._batch.max_events - len(batch), timeout)
            if self._abandon:  # partitions changed: drop what we hold of revoked ones
                self._abandon = False
                batch = [m for m in batch if (m.topic, m.partition) in self._assigned]
            for message in raw:
                converted = self._convert(message)
                if (
                    converted is not None
                    and (converted.topic, converted.partition) in self._assigned
                ):
                    batch.append(converted)
            if batch and deadline is None:
                deadline = self._clock() + self._batch.max_wait_s
            if not raw and not batch:
                return batch
            if deadline is not None and self._clock() >= deadline:
                break
        return batch

    def _handle(self, consumer: Consumer, messages: list[SourceMessage]) -> None:
        if self.stats.first_batch_at is None:
            self.stats.first_batch_at = self._clock()
        self._in_flight = True
        self._abandon = False
        try:
            prepared = self._with_retry(consumer, lambda: self._processor.prepare(messages))
            self._with_retry(consumer, lambda: self._processor.write(prepared))
            self._maybe_crash_for_test()
            self._with_retry(consumer, lambda: self._send_dead_letters(prepared))
            self._with_retry(consumer, lambda: self._commit(consumer, prepared))
        except _Abandoned:
            self.stats.abandoned += 1
            self._processor.revoke(self._processor.owned)
            self._processor.assign(self._assigned)
            self._dlq.reset_after_failure()
            log.warning("batch abandoned after a rebalance: it will be redelivered")
            return
        finally:
            self._in_flight = False
        self._processor.committed(prepared)
        self._last_activity = self.stats.last_commit_at = self._clock()
        self.stats.batches += 1
        self.stats.messages += prepared.messages
        self.stats.rows += prepared.row_count
        self.stats.dead_letters += len(prepared.dead_letters)
        log.info(
            "batch committed: %d messages, %d rows, %d dead letters, unresolved %s",
            prepared.messages,
            prepared.row_count,
            len(prepared.dead_letters),
            dict(prepared.unresolved),
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
        for result in consumer.commit(offsets=offsets, asynchronous=False) or []:
            if result.error is not None:
                raise KafkaException(result.error)

    def _with_retry(self, consumer: Consumer, operation: Callable[[], T]) -> T:
        """Run ``operation``; on store/broker failure pause, keep polling, back off, retry."""
        delays = self._retry.delays()
        paused: list[TopicPartition] = []
        try:
            while True:
                if self._abandon:
                    raise _Abandoned
                try:
                    return operation()
                except (StoreError, DeadLetterError, KafkaException) as exc:
                    self.stats.retries += 1
                    if not paused:
                        paused = consumer.assignment()
                        consumer.pause(paused)
                    delay = next(delays)
                    log.warning("retrying in %.1fs: %s", delay, exc)
                    self._wait_polling(consumer, delay)
        finally:
            if paused and not self._abandon:
                consumer.resume(paused)

    def _wait_polling(self, consumer: Consumer, seconds: float) -> None:
        """Sleep while calling consume() on paused partitions to stay in the group."""
        until = self._clock() + seconds
        while self._clock() < until and not self._abandon:
            # Paused partitions should deliver nothing; this serves rebalances and
            # heartbeats. Anything that still arrives is kept for the next batch.
            for message in consumer.consume(
                1, min(_POLL_TIMEOUT_S, max(0.0, until - self._clock()))
            ):
                converted = self._convert(message)
                if converted is not None:
                    self._carried.append(converted)

    # -- rebalance callbacks (run inside consume()) ---------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = {(p.topic, p.partition) for p in partitions}
        self._assigned |= keys
        self._processor.assign(keys)
        self.stats.rebalances += 1
        self._last_activity = self._clock()
        log.info("assigned %s", sorted(keys))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = {(p.topic, p.partition) for p in partitions}
        self._assigned -= keys
        self._abandon = True
        self._processor.revoke(keys)
        log.info("revoked %s", sorted(keys))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._on_revoke(consumer, partitions)

    # -- helpers --------------------------------------------------------------------

    def _consumer_config(self) -> dict[str, Any]:
        settings = self._settings
        return settings.kafka_config(
            **{
                "group.id": settings.usage_group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": settings.kafka_session_timeout_ms,
                "max.poll.interval.ms": max(300_000, settings.kafka_session_timeout_ms),
            }
        )

    def _convert(self, message: Message) -> SourceMessage | None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise KafkaException(error)
            log.warning("consumer error: %s", error)
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

    def _idle_long_enough(self) -> bool:
        """No message for ``exit_when_idle_s`` since the last assignment or commit.

        Before any assignment the group join may still be under way (a join can
        wait for a departed or phantom member to time out), so the wait is
        extended by three session timeouts. Never decided from watermarks.
        """
        limit = self._exit_when_idle_s
        if limit is None or self._in_flight or self._carried:
            return False
        if not self.stats.rebalances:
            limit += 3 * self._settings.kafka_session_timeout_ms / 1000
        return self._clock() - self._last_activity >= limit

    def _install_signal_handlers(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}

        def handle(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: finishing the current batch", signum)
            self.stop()

        try:
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, handle)
        except ValueError:  # not the main thread (tests): stop() still works
            pass
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

"""The usage consumer: Kafka in, one batch at a time, commit after write.

The pipeline is :meth:`UsageConsumer._handle`, read top to bottom: collect ->
prepare -> write -> dead letters -> commit, each stage retried by the
:class:`~worker.stream.runtime.ConsumerRuntime` (pause, keep polling, back
off; never commit past unwritten data). Metrics, logs, the lag gauge, fault
injection and benchmark recording are hooks of :mod:`worker.stream.usage_hooks`.

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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final, TypeVar

from confluent_kafka import Message

from worker.domain.catalog_index import CatalogIndex
from worker.ops.health import LoopHealth
from worker.ops.metrics import Metrics
from worker.ops.settings import WorkerSettings
from worker.stream.consumer_support import NeverAssignedError
from worker.stream.dlq import DeadLetterProducer, SourcePosition
from worker.stream.runtime import (
    PRODUCTION_LOOP,
    BatchPolicy,
    ConsumerRuntime,
    Interrupted,
    LoopOptions,
    PartitionKey,
    RuntimeConfig,
    RuntimeHooks,
    collect_wait,
    position,
)
from worker.stream.usage_batch import PreparedBatch, SourceMessage, UsageBatchProcessor
from worker.stream.usage_hooks import (
    BatchRecorder,
    CommitLatencyRecorder,
    LagGauge,
    LoopStats,
    crash_after_writes,
)

__all__ = ["BatchPolicy", "LoopStats", "UsageConsumer", "collect_wait"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_DLQ_ACK_TIMEOUT_S: Final = 30.0


class UsageConsumer:
    """Runs the usage pipeline until stopped, idle (optional) or fatally failing."""

    def __init__(
        self,
        settings: WorkerSettings,
        processor: UsageBatchProcessor,
        dead_letters: DeadLetterProducer,
        *,
        batch_policy: BatchPolicy | None = None,
        catalog_updates: Callable[[], CatalogIndex | None] | None = None,
        metrics: Metrics | None = None,
        health: LoopHealth | None = None,
        record_commit_latency: bool = False,
        loop: LoopOptions = PRODUCTION_LOOP,
    ) -> None:
        self._settings = settings
        self._processor = processor
        self._dlq = dead_letters
        self._batch = batch_policy or BatchPolicy(
            settings.batch_max_events, settings.batch_max_wait_ms / 1000, settings.batch_max_bytes
        )
        self._catalog_updates = catalog_updates
        self._clock = clock = loop.clock
        self._metrics = metrics if metrics is not None else Metrics()
        self._health = (
            health
            if health is not None
            else LoopHealth(settings.health_stall_seconds, metrics=self._metrics, clock=clock)
        )
        self._runtime = ConsumerRuntime(
            settings,
            RuntimeConfig(settings.usage_group, settings.events_topic),
            loop,
            health=self._health,
            hooks=RuntimeHooks(
                assigned=self._assigned, released=self._released, retried=self._retried
            ),
        )
        self.stats = LoopStats(
            self._runtime.counters, commit_latencies_ms=[] if record_commit_latency else None
        )
        self._recorder = BatchRecorder(self._metrics, self.stats)
        self._after_write = crash_after_writes(settings.fault_crash_after_writes)
        latencies = self.stats.commit_latencies_ms
        self._latency = CommitLatencyRecorder(latencies) if latencies is not None else None
        self._lag = LagGauge(self._metrics, self._health, clock)

    def stop(self) -> None:
        """Ask the loop to finish the current batch, commit and return (signal-safe)."""
        self._runtime.stop()

    def run(self) -> None:
        """Consume until :meth:`stop`, SIGTERM/SIGINT or the idle exit. Blocking.

        Returns normally after a clean shutdown (everything handled is
        committed); raises on a fatal error (the process should exit non-zero
        and be restarted), :class:`NeverAssignedError` when the idle exit came
        without ever owning a partition.
        """
        runtime = self._runtime
        try:
            idle = runtime.run(self._step, stopping_says="finishing the current batch")
        finally:
            self._dlq.close()
        if not idle:
            return
        if not runtime.counters.ever_assigned:
            raise NeverAssignedError.of(
                self._settings.usage_group, self._settings.events_topic, runtime.waited_s()
            )
        log.info("idle for %.1fs with everything committed: exiting", runtime.loop.exit_when_idle_s)

    def _step(self) -> bool:
        """One iteration: the catalog, a batch, the lag; whether there were messages."""
        self._refresh_catalog()
        messages = self._runtime.collect(self._batch)
        if messages:
            self._handle(messages)
        self._lag.refresh(
            self._runtime.consumer, self._runtime.assigned, after_commit=bool(messages)
        )
        return bool(messages)

    # -- the pipeline ----------------------------------------------------------------

    def _handle(self, raw: list[Message]) -> None:
        """collect -> prepare -> write -> dead letters -> commit; abandoned on a revoke."""
        messages = [_source(m) for m in raw]
        if self.stats.first_batch_at is None:
            self.stats.first_batch_at = self._clock()
        self._health.batch_started()
        self._metrics.messages_consumed.inc(len(messages))
        durations: dict[str, float] = {}
        stage = self._timed_stage(durations)
        try:
            with self._runtime.unit_of_work():
                prepared = stage("prepare", lambda: self._processor.prepare(messages))
                stage("write", lambda: self._processor.write(prepared))
                self._after_write()
                stage("dead_letters", lambda: self._send_dead_letters(prepared))
                stage("commit", lambda: self._runtime.commit(prepared.next_offsets))
        except Interrupted:
            self._abandon(raw)
            return
        self._processor.committed(prepared)
        if self._latency is not None:
            self._latency(messages)
        self._health.batch_finished(committed=True)
        self._recorder.committed(prepared, durations, at=self._clock())

    def _timed_stage(self, durations: dict[str, float]) -> Callable[[str, Callable[[], T]], T]:
        """A stage runner: retried by the runtime, timed into ``durations`` and the histogram."""

        def stage(name: str, operation: Callable[[], T]) -> T:
            started = time.perf_counter()
            result = self._runtime.retry(operation, stage=name)
            elapsed = time.perf_counter() - started
            durations[name] = elapsed
            self._metrics.stage_duration.labels(name).observe(elapsed)
            return result

        return stage

    def _abandon(self, raw: list[Message]) -> None:
        """Forget a batch that saw a revoke; carry its messages still owned.

        All rating state goes, since the batch was already rated into it.
        """
        self._metrics.batches_abandoned.inc()
        self._health.batch_finished(committed=False)
        self._processor.revoke(self._processor.owned)
        self._processor.assign(self._runtime.assigned)
        self._dlq.reset_after_failure()
        kept = self._runtime.keep_unrevoked(raw)
        log.warning(
            "batch abandoned after a rebalance: messages of revoked partitions go to "
            "their next owner, %d of partitions still owned are retried here",
            len(kept),
            extra={"messages": len(raw)},
        )

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

    # -- hooks of the runtime and between batches -----------------------------------

    def _assigned(self, keys: set[PartitionKey]) -> None:
        self._processor.assign(keys)
        self._assignment_changed("assign")
        self._lag.reset()

    def _released(self, keys: set[PartitionKey], kind: str) -> None:
        self._processor.revoke(keys)
        self._assignment_changed(kind)

    def _assignment_changed(self, kind: str) -> None:
        self._metrics.rebalances.labels(kind).inc()
        self._metrics.set_assignment(self._runtime.assigned)

    def _retried(self, stage: str) -> None:
        self._metrics.retries.labels(stage).inc()

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


def _source(message: Message) -> SourceMessage:
    """A consumed message as the batch processor takes it (the runtime checked its position)."""
    topic, partition, offset = position(message)
    kind, timestamp = message.timestamp()
    return SourceMessage(
        topic,
        partition,
        offset,
        message.value(),
        timestamp if kind != 0 else None,
        message.key(),
    )

"""The usage consumer: Kafka in, batches in order, commit after write.

The pipeline is :meth:`UsageConsumer._handle`, read top to bottom: collect ->
prepare -> write -> dead letters -> commit, each stage retried by the
:class:`~worker.stream.runtime.ConsumerRuntime` (pause, keep polling, back
off; never commit past unwritten data). Metrics, logs, the lag gauge, fault
injection and benchmark recording are hooks of :mod:`worker.stream.usage_hooks`.

Write-behind (ADR 0002): a batch's write runs on a helper thread
(:mod:`worker.stream.write_behind`) while the next batch is collected; at most
one batch is pending. Between the polls of that collect, a pending batch whose
write succeeded is finished at once (dead letters, commit, ``committed()``).
After the collect the next batch is routed (the core's stateless phase), then
the pending batch is joined (a failed write retried on this thread with the
same PreparedBatch) and finished before the next batch is rated, so its store
reads see it durable. It is also finished before an empty
step returns (idle exit), on stop, and before a new catalog is applied. A
rebalance callback joins it before partitions go: a durable batch is finished
there (offsets of revoked partitions committed too; of lost ones not), one
whose write or commit failed is abandoned and its messages still owned lead
the batch being collected. Per batch the order stays: rows durable -> dead
letters acknowledged -> offsets committed.

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
    RETRIED,
    BatchPolicy,
    ConsumerRuntime,
    Interrupted,
    LoopOptions,
    PartitionKey,
    RuntimeConfig,
    RuntimeHooks,
    collect_wait,
)
from worker.stream.usage_batch import ConsumedMessages, PreparedBatch, UsageBatchProcessor
from worker.stream.usage_hooks import (
    BatchRecorder,
    CommitLatencyRecorder,
    LagGauge,
    LoopStats,
    crash_after_writes,
)
from worker.stream.write_behind import BackgroundWrite, PendingBatch

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
                assigned=self._assigned,
                released=self._released,
                retried=self._retried,
                releasing=self._releasing,
                between_polls=self._between_polls,
                busy=lambda: self._pending is not None,
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
        self._pending: PendingBatch | None = None

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
            self._forget_pending()
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
        if not messages or self._runtime.stopping:
            self._finish_pending()  # nothing waits for the next collect's cut
        self._lag.refresh(
            self._runtime.consumer, self._runtime.assigned, after_commit=bool(messages)
        )
        return bool(messages)

    # -- the pipeline ----------------------------------------------------------------

    def _handle(self, raw: list[Message]) -> None:
        """collect -> prepare -> write -> dead letters -> commit; abandoned on a revoke.

        The batch before this one (pending) is finished first; this one's write
        is started on a helper thread and finished by a later call (see the
        module docstring).
        """
        messages = ConsumedMessages(raw)
        if self.stats.first_batch_at is None:
            self.stats.first_batch_at = self._clock()
        routed_at = time.perf_counter()
        self._processor.route(messages)  # stateless: overlaps the pending write
        self._processor.prefetch(messages)  # first-touch reads, also during that write
        routing = time.perf_counter() - routed_at
        if not self._finish_pending(then=raw):
            return  # abandoned: its messages, then these, lead the next batch
        self._health.batch_started()
        self._metrics.messages_consumed.inc(len(messages))
        durations: dict[str, float] = {}
        stage = self._timed_stage(durations, plus={"prepare": routing})
        try:
            with self._runtime.unit_of_work():
                prepared = stage("prepare", lambda: self._processor.prepare(messages))
        except Interrupted:
            self._abandon(raw)
            return
        write = BackgroundWrite(lambda: self._processor.write(prepared))
        self._pending = PendingBatch(raw, messages, prepared, write, durations)

    def _finish_pending(self, *, then: list[Message] | None = None) -> bool:
        """Finish the pending batch on this thread: its write joined (a failed one
        retried with the same PreparedBatch), dead letters, commit.

        Returns False when a revoke abandoned it: its messages still owned,
        then those of ``then`` (collected after it), lead the next batch.
        """
        pending = self._pending
        if pending is None:
            return True
        pending.finishing = True
        stage = self._timed_stage(pending.durations)
        try:
            with self._runtime.unit_of_work():
                self._join_write(pending)
                self._after_write()
                stage("dead_letters", lambda: self._send_dead_letters(pending.prepared))
                stage("commit", lambda: self._runtime.commit(pending.prepared.next_offsets))
        except Interrupted:
            self._pending = None
            self._abandon(pending.raw + (then or []))
            return False
        self._pending = None
        self._finished(pending)
        return True

    def _join_write(self, pending: PendingBatch) -> None:
        """Wait for the pending write; retry a failed one with the runtime's retry.

        The helper thread's attempt counts as the first: its failure is replayed
        into :meth:`ConsumerRuntime.retry` (counted, logged, partitions paused,
        backed off) before the write runs again here. ``write`` is timed as the
        helper's attempt plus the retry (it overlaps the collect that ran
        meanwhile, so it is not the join's wait).
        """
        error = pending.write.join()
        seconds = pending.write.seconds
        if error is not None:
            if not isinstance(error, RETRIED):
                raise error  # a bug, not an outage: fail as a synchronous write would
            replay: list[BaseException] = [error]

            def attempt() -> None:
                if replay:
                    raise replay.pop()
                self._processor.write(pending.prepared)

            started = time.perf_counter()
            self._runtime.retry(attempt, stage="write")
            seconds += time.perf_counter() - started
        self._observe("write", seconds, pending.durations)

    def _finished(self, pending: PendingBatch) -> None:
        """The pending batch is committed: its hashes are durable (the rater may age
        its remembered owners, ADR 0003); record it."""
        self._processor.committed(pending.prepared)
        if self._latency is not None:
            self._latency(pending.messages)
        self._health.batch_finished(committed=True)
        self._recorder.committed(pending.prepared, pending.durations, at=self._clock())

    def _between_polls(self) -> None:
        """Between the polls of a collect: finish the pending batch once its write
        succeeded, so its commit never waits for the next batch's cut."""
        pending = self._pending
        if pending is not None and not pending.finishing and pending.write.succeeded():
            self._finish_pending()

    def _releasing(self, keys: set[PartitionKey], kind: str) -> None:
        """Inside on_revoke/on_lost, before ``keys`` go: join the pending write.

        Durable: the batch is finished here (one attempt each for dead letters
        and commit, since a callback cannot poll for a retry), its offsets of
        revoked partitions committed too (still ours until the callback
        returns), of lost ones not (the next owner redelivers them and the
        dedup check skips their rows). Not durable, or the dead letters or the
        commit failed: the batch is abandoned (all rating state goes) and its
        messages of partitions still owned lead the batch being collected.
        A batch this thread is already finishing is left to it: its retry sees
        the rebalance and abandons it.
        """
        pending = self._pending
        if pending is None or pending.finishing:
            return
        pending.finishing = True
        self._pending = None
        error = pending.write.join()
        if error is not None and not isinstance(error, RETRIED):
            raise error
        if error is None:
            self._observe("write", pending.write.seconds, pending.durations)
            offsets = pending.prepared.next_offsets
            if kind == "lost":
                offsets = {key: offset for key, offset in offsets.items() if key not in keys}
            try:
                self._after_write()
                self._once(
                    "dead_letters", pending, lambda: self._send_dead_letters(pending.prepared)
                )
                self._once("commit", pending, lambda: self._runtime.commit(offsets))
            except RETRIED as exc:
                error = exc
            else:
                self._finished(pending)
                return
        log.warning(
            "the batch in flight could not be finished before the %s: %s",
            kind,
            error,
            extra={"stage": "rebalance", "reason": type(error).__name__},
        )
        self._runtime.count_interrupted()
        self._abandon(pending.raw, leaving=keys)

    def _forget_pending(self) -> None:
        """Leaving :meth:`run` on an error: wait for a pending write, commit nothing
        (its messages are redelivered and its durable rows deduplicated)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.write.join()

    def _timed_stage(
        self, durations: dict[str, float], *, plus: dict[str, float] | None = None
    ) -> Callable[[str, Callable[[], T]], T]:
        """A stage runner: retried by the runtime, timed into ``durations`` and the
        histogram (``plus``: seconds a stage spent earlier, e.g. the routing part
        of ``prepare``)."""
        earlier = plus or {}

        def stage(name: str, operation: Callable[[], T]) -> T:
            started = time.perf_counter()
            result = self._runtime.retry(operation, stage=name)
            seconds = time.perf_counter() - started + earlier.get(name, 0.0)
            self._observe(name, seconds, durations)
            return result

        return stage

    def _once(self, name: str, pending: PendingBatch, operation: Callable[[], None]) -> None:
        """One attempt of a stage, timed (inside a rebalance callback: no retry)."""
        started = time.perf_counter()
        operation()
        self._observe(name, time.perf_counter() - started, pending.durations)

    def _observe(self, name: str, seconds: float, durations: dict[str, float]) -> None:
        durations[name] = seconds
        self._metrics.stage_duration.labels(name).observe(seconds)

    def _abandon(self, raw: list[Message], *, leaving: set[PartitionKey] | None = None) -> None:
        """Forget a batch that saw a revoke; its messages still owned lead the next batch.

        All rating state goes, since the batch was already rated into it.
        ``leaving``: the partitions a rebalance callback is releasing.
        """
        self._metrics.batches_abandoned.inc()
        self._health.batch_finished(committed=False)
        self._processor.revoke(self._processor.owned)
        self._processor.assign(self._runtime.assigned - (leaving or set()))
        self._dlq.reset_after_failure()
        kept = self._runtime.lead_with(raw, leaving=leaving or ())
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
            self._finish_pending()  # rated with the old catalog: finished with it
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

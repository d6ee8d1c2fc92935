"""The consumer runtime both pipelines run on (ADR 0001, docs/architecture.md).

One :class:`ConsumerRuntime` owns a group consumer of one topic and does
everything that is not the pipeline's own work:

* subscribe just before polling, and serve the rebalance callbacks the
  protocol's way (``eager``: ``assign``/``unassign``; ``cooperative-sticky``
  and ``consumer``: the incremental calls), keeping the set of owned
  partitions;
* collect a batch of raw messages cut by count, bytes and age
  (:class:`BatchPolicy`), messages in hand of revoked partitions dropped;
* run a stage with retries (:meth:`retry`): on a store or broker failure pause
  the owned partitions, keep polling so the group keeps the member, back off
  and try again, and say the outage once in the worker's words;
* interrupt the unit of work in flight when its partitions are revoked or lost
  (and, for the pipelines that ask, on stop) by raising :class:`Interrupted`;
  messages fetched meanwhile are carried, in order, to the next batch;
* let a pipeline finish work that runs behind the collect (write-behind, ADR
  0002): a hook between the polls of a collect, a hook inside the rebalance
  callbacks before the partitions go, and :meth:`ConsumerRuntime.lead_with`
  to put abandoned work's messages ahead of the batch being collected;
* commit offsets of owned partitions only, synchronously;
* SIGTERM/SIGINT stop and the ``--exit-when-idle`` rule.

The Kafka consumer and the clock are injected (``consumer_factory`` and
``clock`` of :class:`LoopOptions`): :mod:`worker.stream.memory_consumer` gives
an in-memory broker and a driven clock for fast tests. Pipelines hook in
through :class:`RuntimeHooks` (partitions assigned/released, a retry) and never
touch the consumer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from worker._core import usable_bytes
from worker.ops.health import LoopHealth
from worker.ops.settings import WorkerSettings
from worker.store.errors import StoreError
from worker.stream.consumer_support import (
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
from worker.stream.delivery import DeliveryError

log = logging.getLogger(__name__)

T = TypeVar("T")

PartitionKey = tuple[str, int]
#: Builds the Kafka consumer from its librdkafka configuration (``confluent_kafka.Consumer``
#: in production, :class:`~worker.stream.memory_consumer.MemoryConsumer` in fast tests).
ConsumerFactory = Callable[[dict[str, Any]], Any]

POLL_TIMEOUT_S: Final = 0.5  # consume() ignores signals while waiting: keep it short
_COLLECT_SLICE_S: Final = 0.05  # consume() waits its whole timeout unless it fills the request
_POLL_BATCH: Final = 100
#: Failures a stage is retried on: the store or the broker, never a bug.
RETRIED: Final = (StoreError, DeliveryError, KafkaException)


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


class Interrupted(Exception):
    """The unit of work in flight lost its partitions (revoke or loss), or the
    pipeline stops on request: it must not be committed (it is redelivered)."""


@dataclass(slots=True)
class RunCounters:
    """What the runtime counted in one run (read by the pipelines' run summaries)."""

    rebalances: int = 0
    """Assignments received (every ``on_assign``, empty ones included)."""
    retries: int = 0
    interrupted: int = 0
    ever_assigned: bool = False
    """Whether any partition was ever owned (the idle exit is honest only then)."""


@dataclass(slots=True)
class RunSummary:
    """Base of a pipeline's run summary: the runtime's counters, read, never copied."""

    counters: RunCounters = field(default_factory=RunCounters)

    @property
    def retries(self) -> int:
        return self.counters.retries

    @property
    def rebalances(self) -> int:
        return self.counters.rebalances


def _ignore(*_: object) -> None:
    return None


@dataclass(frozen=True, slots=True)
class RuntimeHooks:
    """What a pipeline adds to the runtime's events; each runs on the polling thread.

    ``assigned(keys)`` and ``released(keys, kind)`` run inside the rebalance
    callbacks after the runtime updated its owned set (``kind``: ``revoke`` or
    ``lost``); ``retried(stage)`` after each failed attempt of a stage.

    For work that runs behind the collect (ADR 0002): ``releasing(keys, kind)``
    runs inside ``on_revoke``/``on_lost`` *before* the owned set changes and
    before the partitions are given up (in a ``revoke`` they can still be
    committed, in a ``lost`` they cannot); ``between_polls()`` after each
    ``consume()`` of :meth:`ConsumerRuntime.collect`; ``busy()`` says the
    pipeline still has work in flight (the idle exit waits for it).
    """

    assigned: Callable[[set[PartitionKey]], None] = _ignore
    released: Callable[[set[PartitionKey], str], None] = _ignore
    retried: Callable[[str], None] = _ignore
    releasing: Callable[[set[PartitionKey], str], None] = _ignore
    between_polls: Callable[[], None] = _ignore
    busy: Callable[[], bool] = lambda: False


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """Which group and topic, and how the pipeline's unit of work meets a stop or
    a revoke (the pipeline's choice, frozen)."""

    group: str
    topic: str
    stop_interrupts: bool = False
    """True: a stop interrupts the unit of work between chunks (reprocess);
    False: the unit is finished and committed first (usage)."""
    interrupt_on_any_revoke: bool = True
    """True: any revoke interrupts the unit in flight (usage: the batch was rated
    into state of every owned partition); False: only a revoke of the unit's
    own partitions (reprocess: one control message)."""


@dataclass(frozen=True, slots=True)
class LoopOptions:
    """How a consumer's loop runs, whichever pipeline it serves (the caller's
    choice, frozen); the defaults are production's.

    ``retry``: the back-off of a failing stage; ``exit_when_idle_s``: return once
    idle this long (None: never); ``clock`` and ``consumer_factory``: the seams
    the in-memory tests drive.
    """

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    exit_when_idle_s: float | None = None
    clock: Callable[[], float] = time.monotonic
    consumer_factory: ConsumerFactory = Consumer


PRODUCTION_LOOP: Final = LoopOptions()


class ConsumerRuntime:
    """A group consumer's loop machinery; the pipeline supplies the unit of work.

    Mutable state owned by one thread (the one calling :meth:`run`);
    :meth:`stop` may be called from a signal handler or another thread.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        config: RuntimeConfig,
        loop: LoopOptions,
        *,
        health: LoopHealth,
        hooks: RuntimeHooks | None = None,
    ) -> None:
        self._settings = settings
        self.config = config
        self.loop = loop
        self._health = health
        self._hooks = hooks or RuntimeHooks()
        self._factory = loop.consumer_factory
        self._clock = loop.clock
        self._consumer: Any = None
        self.stopping = False
        self.counters = RunCounters()
        self.assigned: set[PartitionKey] = set()
        # Revoked or lost since the messages in hand were fetched: theirs are stale
        # (a partition assigned again restarts from its committed offset).
        self._revoked: set[PartitionKey] = set()
        # Messages that arrived while paused or between chunks, or kept from an
        # interrupted batch: handled first by the next batch, never skipped.
        self._carried: list[Message] = []
        # Messages of abandoned work that must lead even the batch being collected
        # (lead_with): the collect gives its batch up behind them.
        self._lead: list[Message] = []
        self._interrupt = False
        self._work: set[PartitionKey] | None = None
        self._in_flight = False
        self._last_cut = float("-inf")
        self._last_activity = self._started_at = loop.clock()

    # -- the loop --------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to stop (signal-safe); see ``RuntimeConfig.stop_interrupts``."""
        self.stopping = True

    def run(
        self,
        step: Callable[[], bool],
        *,
        stopping_says: str,
    ) -> bool:
        """Subscribe, then call ``step`` until stopped or idle; close the consumer. Blocking.

        ``step`` does one iteration (collect, handle) and returns whether it had
        messages. Returns True when the loop ended on the idle exit, False on a
        stop. Exceptions of ``step`` propagate (after the consumer is closed).
        """
        self._consumer = self._factory(group_consumer_config(self._settings, self.config.group))
        try:
            with StopOnSignals(self.stop, stopping_says):
                # Subscribe just before polling: a joined member that does not
                # poll stalls the whole group's rebalance (ADR 0001).
                self._consumer.subscribe(
                    [self.config.topic],
                    on_assign=self._on_assign,
                    on_revoke=self._on_revoke,
                    on_lost=self._on_lost,
                )
                self._last_activity = self._started_at = self._clock()
                while not self.stopping:
                    self._health.beat()
                    if not step() and self.idle_long_enough():
                        return True
                return False
        finally:
            self._consumer.close()

    @property
    def consumer(self) -> Any:
        """The Kafka consumer of the running loop (lag reads only; None before :meth:`run`)."""
        return self._consumer

    def waited_s(self) -> float:
        """Seconds since the subscription."""
        return self._clock() - self._started_at

    # -- collecting ------------------------------------------------------------------

    def collect(self, policy: BatchPolicy) -> list[Message]:
        """The next batch of owned partitions' messages (see :class:`BatchPolicy`).

        Carried messages lead, within the byte budget; empty after a quiet poll.
        """
        held = [m for m in self._lead + self._carried if _key(m) in self.assigned]
        self._lead, self._carried = [], []
        batch: list[Message] = []
        size = 0
        for index, kept in enumerate(held):
            kept_size = _size(kept)
            if batch and (size + kept_size > policy.max_bytes or len(batch) >= policy.max_events):
                self._carried = held[index:]
                break
            batch.append(kept)
            size += kept_size
        cut_at = self._last_cut + policy.max_wait_s
        idle_at = self._clock() + POLL_TIMEOUT_S
        while (
            not self.stopping
            and not self._carried
            and len(batch) < policy.max_events
            and size < policy.max_bytes
        ):
            timeout = collect_wait(self._clock(), bool(batch), cut_at=cut_at, idle_at=idle_at)
            if timeout is None:
                break
            raw = self._consumer.consume(policy.max_events - len(batch), timeout)
            self._health.beat()
            batch, size = self._unrevoked(batch, size)
            size = self._take(raw, batch, size, policy.max_bytes)
            self._hooks.between_polls()  # may poll (a retry) and abandon work: check again
            batch, size = self._unrevoked(batch, size)
            if self._lead:  # abandoned work's messages come first: give this batch up
                self._carried = self._lead + batch + self._carried
                self._lead, batch, size = [], [], 0
        if batch:
            self._last_cut = self._clock()
        return batch

    def _take(self, raw: list[Message], batch: list[Message], size: int, max_bytes: int) -> int:
        """Append the usable messages of ``raw`` to ``batch`` (of ``size`` bytes)
        within ``max_bytes``, carry the rest in order; return the new size.

        One core call checks the whole list first: when every message is
        usable and all fit, no Python runs per message."""
        fits = usable_bytes(raw, self.assigned) if raw and not self._carried else None
        if fits is not None and size + fits <= max_bytes:
            batch.extend(raw)
            return size + fits
        for message in raw:
            if not self._usable(message):
                continue
            message_size = _size(message)
            if self._carried or (batch and size + message_size > max_bytes):
                self._carried.append(message)  # in order, for the next batch
                continue
            batch.append(message)
            size += message_size
        return size

    def _unrevoked(self, batch: list[Message], size: int) -> tuple[list[Message], int]:
        """``batch`` (of ``size`` bytes) without the messages of partitions revoked or
        lost since it was fetched (one assigned again restarts from its committed
        offset), and its size."""
        if not self._interrupt:
            return batch, size
        self._interrupt = False
        kept = [m for m in batch if _key(m) not in self._revoked]
        self._revoked.clear()
        return kept, sum(_size(m) for m in kept)

    # -- the unit of work ------------------------------------------------------------

    @contextmanager
    def unit_of_work(self, partitions: Iterable[PartitionKey] | None = None) -> Iterator[None]:
        """Mark work in flight on ``partitions`` (None: on all owned ones).

        :class:`Interrupted` raised inside is counted and propagates; the
        health's batch marks are the caller's (they carry its outcome).
        """
        self._in_flight = True
        self._interrupt = False
        self._revoked.clear()
        self._work = set(partitions) if partitions is not None else None
        try:
            yield
        except Interrupted:
            self.counters.interrupted += 1
            raise
        finally:
            self._in_flight = False
            self._work = None
            self._last_activity = self._clock()

    def lead_with(
        self, messages: list[Message], *, leaving: Iterable[PartitionKey] = ()
    ) -> list[Message]:
        """After abandoning work that ran behind the collect: its ``messages`` of
        partitions still owned (and not ``leaving``: being released by the
        rebalance callback this is called from) lead the next batch, ahead of the
        batch being collected, if any, and of every carried message. Returns them.

        The consumer's position is past them; a later commit must never pass them.
        """
        gone = set(leaving) | self._revoked
        kept = [m for m in messages if _key(m) in self.assigned and _key(m) not in gone]
        self._lead = kept + self._lead
        return kept

    def count_interrupted(self) -> None:
        """Count a unit of work abandoned outside :meth:`unit_of_work` (a rebalance callback)."""
        self.counters.interrupted += 1

    def check_interrupt(self) -> None:
        """Serve the group once and raise :class:`Interrupted` when the unit must stop."""
        self._health.beat()  # a long unit is progress, chunk by chunk
        self.poll(0.0)
        if self._must_stop():
            raise Interrupted

    def retry(self, operation: Callable[[], T], *, stage: str) -> T:
        """Run ``operation``; on store/broker failure pause, keep polling, back off, retry.

        Raises :class:`Interrupted` (without another attempt) once the unit is
        interrupted. An outage is said once, in a warning when it starts (then
        each retry only at DEBUG), and once more when the operation succeeds
        again. Every partition owned during the retry is paused (those assigned
        meanwhile too); the ones still owned are resumed when the retry ends,
        whatever its outcome.
        """
        delays = self.loop.retry.delays()
        paused: set[PartitionKey] = set()
        failures = 0
        started = self._clock()
        try:
            while True:
                if self._interrupt:
                    raise Interrupted
                try:
                    result = operation()
                except RETRIED as exc:
                    self.counters.retries += 1
                    self._hooks.retried(stage)
                    self._pause_owned(paused)
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
                            "partitions": names(self.assigned),
                        },
                    )
                    self.wait_polling(delay)
                    if self._must_stop():
                        raise Interrupted from None
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
            still_owned = sorted(paused & self.assigned)
            if still_owned:
                self._consumer.resume([TopicPartition(t, p) for t, p in still_owned])

    def commit(self, next_offsets: dict[PartitionKey, int]) -> None:
        """Commit ``next_offsets`` of the partitions still owned, synchronously.

        Raises ``KafkaException`` when the commit fails (run it in :meth:`retry`).
        None still owned (all lost while the batch was written): nothing is sent.
        """
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(next_offsets.items())]
        owned = owned_offsets(offsets, self.assigned)
        if owned:
            commit_offsets(self._consumer, owned)

    # -- polling ---------------------------------------------------------------------

    def wait_polling(self, seconds: float) -> None:
        """Wait ``seconds`` while calling consume() to stay in the group.

        Returns early when the unit is interrupted. Paused partitions deliver
        nothing; anything that still arrives is carried to the next batch.
        """
        until = self._clock() + seconds
        while not self._must_stop():
            left = until - self._clock()
            if left <= 0:
                return
            self._health.beat()
            self.poll(min(POLL_TIMEOUT_S, left))

    def poll(self, timeout_s: float) -> None:
        """Serve the group (heartbeats, rebalances); carry any message for later."""
        for message in self._consumer.consume(_POLL_BATCH, timeout_s):
            if self._usable(message):
                self._carried.append(message)

    def idle_long_enough(self) -> bool:
        """The ``--exit-when-idle`` rule (see ``consumer_support.idle_long_enough``)."""
        return idle_long_enough(
            idle_s=self.loop.exit_when_idle_s,
            # Never owned a partition: count from the start, since every
            # (empty) assignment of a rebalance loop would reset the activity.
            idle_for_s=self._clock()
            - (self._last_activity if self.counters.ever_assigned else self._started_at),
            busy=self._in_flight or bool(self._carried or self._lead) or self._hooks.busy(),
            owns_partitions=bool(self.assigned),
            session_timeout_ms=self._settings.kafka_session_timeout_ms,
        )

    def _must_stop(self) -> bool:
        return self._interrupt or (self.stopping and self.config.stop_interrupts)

    def _pause_owned(self, paused: set[PartitionKey]) -> None:
        fresh = sorted(self.assigned - paused)
        if fresh:
            self._consumer.pause([TopicPartition(t, p) for t, p in fresh])
            paused.update(fresh)

    def _usable(self, message: Message) -> bool:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise KafkaException(error)
            log.warning("%s", describe_consumer_error(error))
            return False
        return message.offset() is not None and _key(message) in self.assigned

    # -- rebalance callbacks (run inside consume()) ---------------------------------

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        take_partitions(consumer, self._settings, partitions)
        keys = {(p.topic, p.partition) for p in partitions}
        self.assigned |= keys
        self.counters.rebalances += 1
        self.counters.ever_assigned |= bool(keys)
        self._last_activity = self._clock()
        self._health.set_assigned(len(self.assigned))
        self._hooks.assigned(keys)
        log.info("assigned %s", sorted(keys), extra={"partitions": names(keys)})

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._hooks.releasing({(p.topic, p.partition) for p in partitions}, "revoke")
        self._drop(partitions, "revoke")
        release_partitions(consumer, self._settings, partitions)

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._hooks.releasing({(p.topic, p.partition) for p in partitions}, "lost")
        self._drop(partitions, "lost")
        release_partitions(consumer, self._settings, partitions)

    def _drop(self, partitions: list[TopicPartition], kind: str) -> None:
        keys = {(p.topic, p.partition) for p in partitions}
        self.assigned -= keys
        self._revoked |= keys
        self._last_activity = self._clock()
        if self.config.interrupt_on_any_revoke or self._work is None or self._work & keys:
            self._interrupt = True
        self._carried = [m for m in self._carried if _key(m) not in keys]
        self._lead = [m for m in self._lead if _key(m) not in keys]
        self._health.set_assigned(len(self.assigned))
        self._hooks.released(keys, kind)
        log.info(
            "%s %s",
            "revoked" if kind == "revoke" else kind,
            sorted(keys),
            extra={"partitions": names(keys)},
        )


def position(message: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a message the runtime handed out (all known)."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("a consumed message without a position")
    return topic, partition, offset


def _key(message: Message) -> PartitionKey:
    return (message.topic() or "", message.partition() or 0)


def _size(message: Message) -> int:
    value = message.value()
    return len(value) if value is not None else 0


def _failing_part(exc: Exception, stage: str) -> str:
    """Which part failed, in the worker's words, for the retry log line."""
    if isinstance(exc, StoreError):
        return f"ClickHouse unavailable during {stage}"
    return f"Kafka broker unavailable or refusing during {stage}"


def names(keys: Iterable[PartitionKey]) -> list[str]:
    """``topic/partition`` names, sorted (log fields)."""
    return sorted(f"{topic}/{partition}" for topic, partition in keys)

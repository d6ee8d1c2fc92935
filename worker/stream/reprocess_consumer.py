"""The reprocess consumer: re-drive unprocessed events on request (DESIGN.md §6).

A small loop on ``confluent_kafka.Consumer`` (ADR 0001), group
``settings.reprocess_group`` on ``settings.reprocess_topic``. One control
message at a time:

1. :func:`~worker.stream.reprocess_request.parse_request`; a bad message goes
   to the DLQ with its reason (acknowledged before the commit), and a request
   id that already names a *different* request of the same tenant and
   environment is rejected as
   ``request_id_reused``.
2. Its saved progress (``reprocess_progress``, per tenant, environment and
   request id) is loaded: ``completed`` means
   the request is ignored (only its control offset is committed).
3. Otherwise pages of :func:`~worker.store.events_reads.find_unprocessed_events`
   are read by keyset ``(timestamp, id)`` from the saved cursor; each event is
   re-published to ``settings.events_topic`` with its original key
   (``tenant:environment:customer``) and a ``reprocess_request_id`` header,
   paced by ``settings.reprocess_rate_limit`` events/s; once the broker has
   acknowledged the page, the cursor and counters are saved. A killed worker
   therefore resumes at the last saved page: at most one page is re-published
   twice, which the usage consumer's dedup absorbs.
4. After the last (short) page the request is saved ``completed`` and only
   then is its control offset committed, synchronously.

Between chunks of a page the loop keeps calling ``consume`` (so it keeps its
group membership during long requests); control messages that arrive then are
kept, in order, for later. A rebalance or SIGTERM interrupts the request
between chunks without committing: whoever owns the partition next resumes
it from the saved cursor. Store or broker failures are retried with backoff.

Events that never resolve (e.g. a customer that will never exist) are
re-published once per request, since each request pages the window once:
bounded work, never a loop.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from worker.domain.events import Event
from worker.ops.settings import WorkerSettings
from worker.store.errors import StoreError
from worker.store.events_reads import find_unprocessed_events
from worker.store.gateway import Gateway
from worker.store.params import EventIterator, FindUnprocessedEventsParams
from worker.store.reprocess_state import (
    ReprocessProgress,
    RequestState,
    load_progress,
    save_progress,
)
from worker.stream.consumer_support import (
    RetryPolicy,
    StopOnSignals,
    commit_offsets,
    describe_consumer_error,
    group_consumer_config,
    idle_long_enough,
    release_partitions,
    take_partitions,
)
from worker.stream.delivery import DeliveryError, DeliveryTracker, produce_or_wait
from worker.stream.dlq import DeadLetterProducer, SourcePosition
from worker.stream.producer import event_key, producer_config
from worker.stream.reprocess_request import (
    InvalidRequest,
    RejectReason,
    ReprocessRequest,
    parse_request,
    rfc3339,
)

if TYPE_CHECKING:
    from worker.ops.health import LoopHealth
    from worker.ops.metrics import ReprocessMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Header naming the request on every re-published event.
HEADER_REQUEST_ID: Final = "reprocess_request_id"
_POLL_TIMEOUT_S: Final = 0.5  # consume() ignores signals while waiting: keep it short
_ACK_TIMEOUT_S: Final = 30.0
#: A page is sent in chunks of about this many seconds of the rate limit.
_CHUNK_SECONDS: Final = 0.1


def event_document(event: Event) -> dict[str, Any]:
    """The JSON document of a stored event, as a producer would send it.

    Decoding it (``worker.domain.validation.decode_event``) gives back an equal
    :class:`Event` (``ingested_at`` aside: the usage consumer sets it).
    """
    return {
        "id": event.id,
        "tenant_id": event.tenant_id,
        "environment_id": event.environment_id,
        "event_name": event.event_name,
        "external_customer_id": event.external_customer_id,
        "customer_id": event.customer_id,
        "source": event.source,
        "timestamp": rfc3339(event.timestamp),
        "properties": event.properties,
    }


def encode_event(event: Event) -> tuple[str, bytes]:
    """``(key, value)`` of an event to re-publish; the key is :func:`event_key`'s."""
    document = event_document(event)
    try:
        value = orjson.dumps(document)
    except TypeError:  # integers beyond 64 bits: valid JSON orjson refuses
        value = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    return event_key(document), value


class RateLimiter:
    """Paces work to ``rate_per_s`` units per second (virtual scheduling, no burst credit).

    :meth:`reserve` never sleeps: it books ``units`` and returns how long the
    caller must wait before doing them. Mutable; one thread.
    """

    def __init__(self, rate_per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.rate_per_s = rate_per_s
        self._clock = clock
        self._next_at: float | None = None

    def reserve(self, units: int) -> float:
        now = self._clock()
        start = now if self._next_at is None else max(self._next_at, now)
        self._next_at = start + units / self.rate_per_s
        return start - now

    def chunk_size(self, limit: int) -> int:
        """How many units to book at once (about ``_CHUNK_SECONDS`` worth, 1..``limit``)."""
        return max(1, min(limit, int(self.rate_per_s * _CHUNK_SECONDS)))


class EventRepublisher:
    """Produces events back to the events topic and checks every acknowledgement.

    Same contract as :class:`~worker.stream.dlq.DeadLetterProducer`: :meth:`send`
    does not wait for the broker, :meth:`flush_and_check` does and raises
    :class:`DeliveryError` unless everything sent since :meth:`reset` was acked.
    """

    def __init__(self, settings: WorkerSettings, *, topic: str | None = None) -> None:
        self.topic = topic or settings.events_topic
        config = producer_config(settings, **{"linger.ms": 5})
        self._queue_timeout_s = float(config.get("message.timeout.ms", 30_000)) / 1000.0
        self._producer = Producer(config)
        self._tracker = DeliveryTracker()

    def send(self, key: str, value: bytes, headers: list[tuple[str, str | bytes | None]]) -> None:
        """Queue one event (blocks only while the local queue is full)."""
        produce_or_wait(
            self._producer,
            self._tracker,
            self.topic,
            value=value,
            key=key,
            headers=headers,
            queue_full_timeout_s=self._queue_timeout_s,
        )
        self._producer.poll(0)

    def flush_and_check(self, timeout_s: float) -> int:
        """Wait for every acknowledgement (at most ``timeout_s``); return how many."""
        remaining = self._producer.flush(timeout_s)
        tracker = self._tracker
        if tracker.failed or remaining or tracker.in_flight:
            detail = "; ".join(tracker.errors[:3])
            raise DeliveryError(
                f"{tracker.failed} re-published events failed and {tracker.in_flight} "
                f"unacknowledged after {timeout_s}s on {self.topic}"
                + (f": {detail}" if detail else "")
            )
        delivered = tracker.delivered
        tracker.reset()
        return delivered

    def reset(self) -> None:
        """Forget counts (before re-sending a failed page); waits at most 5 s for reports."""
        self._producer.flush(5.0)
        self._tracker.reset()

    def close(self, timeout_s: float = 10.0) -> int:
        remaining: int = self._producer.flush(timeout_s)
        return remaining


class _Interrupted(Exception):
    """The request in flight was interrupted (revoke or stop): do not commit it."""


@dataclass(slots=True)
class ReprocessStats:
    """Counters of one run (for logs and tests)."""

    requests_completed: int = 0
    requests_ignored: int = 0
    requests_rejected: int = 0
    requests_interrupted: int = 0
    found: int = 0
    republished: int = 0
    pages: int = 0
    retries: int = 0
    rebalances: int = 0


class ReprocessConsumer:
    """Serves reprocess requests until stopped, idle (optional) or fatally failing."""

    def __init__(
        self,
        settings: WorkerSettings,
        gateway: Gateway,
        dead_letters: DeadLetterProducer,
        republisher: EventRepublisher,
        *,
        retry_policy: RetryPolicy | None = None,
        exit_when_idle_s: float | None = None,
        metrics: ReprocessMetrics | None = None,
        health: LoopHealth | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._health = health
        self._gateway = gateway
        self._metrics = metrics
        # State of each request this process has served (for the metrics gauges).
        self._states: dict[str, tuple[str, int]] = {}
        self._dlq = dead_letters
        self._republisher = republisher
        self._retry = retry_policy or RetryPolicy()
        self._exit_when_idle_s = exit_when_idle_s
        self._clock = clock
        self._limiter = RateLimiter(settings.reprocess_rate_limit, clock)
        self._stop = False
        self._abandon = False
        self._in_flight = False
        self._assigned: set[tuple[str, int]] = set()
        self._current: tuple[str, int] | None = None
        self._carried: list[Message] = []
        self._last_activity = clock()
        self.stats = ReprocessStats()

    def stop(self) -> None:
        """Ask the loop to stop between chunks, without committing an unfinished request."""
        self._stop = True

    def run(self) -> None:
        """Consume requests until :meth:`stop`, SIGTERM/SIGINT or the idle exit. Blocking.

        Returns after a clean shutdown (finished requests committed, an
        unfinished one left for redelivery); raises on a fatal error.
        """
        consumer = Consumer(group_consumer_config(self._settings, self._settings.reprocess_group))
        try:
            with StopOnSignals(self.stop, "stopping after the current chunk"):
                consumer.subscribe(
                    [self._settings.reprocess_topic],
                    on_assign=self._on_assign,
                    on_revoke=self._on_revoke,
                    on_lost=self._on_revoke,
                )
                self._last_activity = self._clock()
                while not self._stop:
                    if self._health is not None:
                        self._health.beat()
                    message = self._next_message(consumer)
                    if message is not None:
                        self._handle(consumer, message)
                    elif self._idle_long_enough():
                        log.info("idle for %.1fs: exiting", self._exit_when_idle_s)
                        break
        finally:
            consumer.close()
            self._republisher.close()
            self._dlq.close()

    # -- one control message ---------------------------------------------------------

    def _next_message(self, consumer: Consumer) -> Message | None:
        self._carried = [m for m in self._carried if _position(m) in self._assigned]
        if self._carried:
            return self._carried.pop(0)
        for message in consumer.consume(1, _POLL_TIMEOUT_S):
            if self._usable(message):
                return message
        return None

    def _handle(self, consumer: Consumer, message: Message) -> None:
        if self._health is not None:
            self._health.batch_started()
        committed = False
        self._in_flight = True
        self._abandon = False
        self._current = _position(message)
        try:
            self._serve(consumer, message)
            self._with_retry(consumer, lambda: self._commit(consumer, message))
            committed = True
        except _Interrupted:
            self.stats.requests_interrupted += 1
            log.warning(
                "request at %s[%d]@%d interrupted: it resumes from its saved cursor",
                *self._current,
                message.offset(),
            )
        finally:
            self._in_flight = False
            self._current = None
            self._last_activity = self._clock()
            if self._health is not None:
                self._health.batch_finished(committed=committed)

    def _serve(self, consumer: Consumer, message: Message) -> None:
        try:
            request = parse_request(message.value())
        except InvalidRequest as exc:
            self._reject(consumer, message, exc)
            return
        progress = self._with_retry(
            consumer,
            lambda: load_progress(
                self._gateway, request.tenant_id, request.environment_id, request.request_id
            ),
        )
        canonical = request.canonical()
        if (
            progress is not None
            and progress.state is not RequestState.REJECTED
            and progress.request != canonical
        ):
            self._reject(
                consumer,
                message,
                InvalidRequest(
                    RejectReason.REQUEST_ID_REUSED,
                    f"request id {request.request_id} already names another request",
                ),
            )
            return
        if progress is not None and progress.state is RequestState.COMPLETED:
            self._record(progress)
            self.stats.requests_ignored += 1
            log.info("request %s already completed: ignored", request.request_id)
            return
        if progress is None or progress.state is RequestState.REJECTED:
            now = datetime.now(UTC)
            started = ReprocessProgress(
                request_id=request.request_id,
                tenant_id=request.tenant_id,
                environment_id=request.environment_id,
                request=canonical,
                state=RequestState.RUNNING,
                created_at=now,
                updated_at=now,
                version=(progress.version if progress else 0) + 1,
            )
            self._with_retry(consumer, lambda: save_progress(self._gateway, started))
            progress = started
        else:
            log.info(
                "resuming request %s after %d events (cursor %s, %s)",
                request.request_id,
                progress.republished,
                progress.cursor_timestamp.isoformat(),
                progress.cursor_id,
            )
        self._drive(consumer, request, progress)

    def _drive(
        self, consumer: Consumer, request: ReprocessRequest, progress: ReprocessProgress
    ) -> None:
        """Page, re-publish and save until the window is exhausted; then save completed."""
        page_size = request.page_size
        after = (
            EventIterator(progress.cursor_timestamp, progress.cursor_id)
            if progress.has_cursor
            else None
        )
        while True:
            self._check_interrupt(consumer)
            params = FindUnprocessedEventsParams(
                tenant_id=request.tenant_id,
                environment_id=request.environment_id,
                start_time=request.start_time,
                end_time=request.end_time,
                external_customer_id=request.external_customer_id,
                event_name=request.event_name,
                batch_size=page_size,
                after=after,
            )
            page = self._with_retry(
                consumer, partial(find_unprocessed_events, self._gateway, params)
            )
            if page:
                republished = self._republish(consumer, request.request_id, page)
                last = page[-1]
                progress = progress.advanced(
                    cursor_timestamp=last.timestamp,
                    cursor_id=last.id,
                    found=progress.found + len(page),
                    republished=progress.republished + republished,
                    pages=progress.pages + 1,
                )
                self._with_retry(consumer, partial(save_progress, self._gateway, progress))
                self._record(progress, republished)
                after = EventIterator.of(last)
                self.stats.found += len(page)
                self.stats.republished += republished
                self.stats.pages += 1
            if len(page) < page_size:
                break
        done = progress.advanced(state=RequestState.COMPLETED)
        self._with_retry(consumer, lambda: save_progress(self._gateway, done))
        self._record(done)
        self.stats.requests_completed += 1
        log.info(
            "request %s completed: %d found, %d re-published in %d pages",
            request.request_id,
            done.found,
            done.republished,
            done.pages,
        )

    def _republish(self, consumer: Consumer, request_id: str, page: list[Event]) -> int:
        """Send ``page`` paced by the rate limit; return the count acknowledged.

        A failed page is sent again whole (duplicates are deduplicated downstream).
        """
        headers: list[tuple[str, str | bytes | None]] = [(HEADER_REQUEST_ID, request_id.encode())]
        messages: list[tuple[str, bytes]] = []
        for event in page:
            try:
                messages.append(encode_event(event))
            except ValueError as exc:  # stored events were validated: not expected
                log.warning("event %s cannot be keyed, skipped: %s", event.id, exc)
        chunk = self._limiter.chunk_size(len(messages) or 1)

        def attempt() -> int:
            self._republisher.reset()
            for start in range(0, len(messages), chunk):
                part = messages[start : start + chunk]
                self._wait_polling(consumer, self._limiter.reserve(len(part)))
                self._check_interrupt(consumer)
                for key, value in part:
                    self._republisher.send(key, value, headers)
                self._poll_control(consumer, 0.0)
            return self._republisher.flush_and_check(_ACK_TIMEOUT_S)

        return self._with_retry(consumer, attempt)

    def _reject(self, consumer: Consumer, message: Message, problem: InvalidRequest) -> None:
        """Dead-letter ``message`` with its reason and wait for the ack; record it when new."""
        self.stats.requests_rejected += 1
        log.warning("reprocess request rejected: %s", problem)
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None

        def send() -> None:
            self._dlq.reset_after_failure()
            self._dlq.send(
                message.value(),
                key=message.key(),
                reason=problem.reason.value,
                error=problem.detail,
                source=SourcePosition(topic, partition, offset),
            )
            self._dlq.flush_and_check(_ACK_TIMEOUT_S)

        self._with_retry(consumer, send)
        request_id = problem.request_id
        if request_id is None or problem.reason is RejectReason.REQUEST_ID_REUSED:
            return
        tenant, environment = problem.scope
        existing = self._with_retry(
            consumer, lambda: load_progress(self._gateway, tenant, environment, request_id)
        )
        if existing is not None:
            return
        now = datetime.now(UTC)
        rejected = ReprocessProgress(
            request_id=request_id,
            tenant_id=tenant,
            environment_id=environment,
            request=(message.value() or b"").decode("utf-8", "replace")[:10_000],
            state=RequestState.REJECTED,
            error=str(problem)[:1000],
            created_at=now,
            updated_at=now,
            version=1,
        )
        self._with_retry(consumer, lambda: save_progress(self._gateway, rejected))
        self._record(rejected)

    def _record(self, progress: ReprocessProgress, republished: int = 0) -> None:
        """Update the metrics (when given) after ``progress`` was saved."""
        if self._metrics is None:
            return
        if republished:
            self._metrics.republished_events(republished)
        state = "failed" if progress.state is RequestState.REJECTED else progress.state.value
        events = (
            progress.republished if progress.state is RequestState.COMPLETED else progress.found
        )
        self._states[progress.request_id] = (state, events)
        counts: dict[str, int] = {}
        totals: dict[str, int] = {}
        for known_state, known_events in self._states.values():
            counts[known_state] = counts.get(known_state, 0) + 1
            totals[known_state] = totals.get(known_state, 0) + known_events
        self._metrics.set_requests(counts, totals)

    def _commit(self, consumer: Consumer, message: Message) -> None:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        commit_offsets(consumer, [TopicPartition(topic, partition, offset + 1)])

    # -- waiting, polling, retrying --------------------------------------------------

    def _check_interrupt(self, consumer: Consumer) -> None:
        if self._health is not None:
            self._health.beat()  # a long request is progress, chunk by chunk
        self._poll_control(consumer, 0.0)
        if self._abandon or self._stop:
            raise _Interrupted

    def _poll_control(self, consumer: Consumer, timeout_s: float) -> None:
        """Serve the group (heartbeats, rebalances); keep any control message for later."""
        for message in consumer.consume(100, timeout_s):
            if self._usable(message):
                self._carried.append(message)

    def _wait_polling(self, consumer: Consumer, seconds: float) -> None:
        until = self._clock() + seconds
        while not self._abandon and not self._stop:
            left = until - self._clock()
            if left <= 0:
                return
            self._poll_control(consumer, min(_POLL_TIMEOUT_S, left))

    def _with_retry(self, consumer: Consumer, operation: Callable[[], T]) -> T:
        """Run ``operation``; on store/broker failure back off (polling) and retry."""
        delays = self._retry.delays()
        while True:
            try:
                return operation()
            except (StoreError, DeliveryError, KafkaException) as exc:
                self.stats.retries += 1
                delay = next(delays)
                log.warning("retrying in %.1fs: %s", delay, exc)
                self._wait_polling(consumer, delay)
                if self._abandon or self._stop:
                    raise _Interrupted from None

    # -- rebalance callbacks (run inside consume()) ---------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        take_partitions(consumer, self._settings, partitions)
        keys = {(p.topic, p.partition) for p in partitions}
        self._assigned |= keys
        self.stats.rebalances += 1
        self._last_activity = self._clock()
        if self._health is not None:
            self._health.set_assigned(len(self._assigned))
        log.info("assigned %s", sorted(keys))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = {(p.topic, p.partition) for p in partitions}
        self._assigned -= keys
        self._last_activity = self._clock()
        if self._current in keys:
            self._abandon = True
        self._carried = [m for m in self._carried if _position(m) not in keys]
        if self._health is not None:
            self._health.set_assigned(len(self._assigned))
        release_partitions(consumer, self._settings, partitions)
        log.info("revoked %s", sorted(keys))

    # -- helpers --------------------------------------------------------------------

    def _usable(self, message: Message) -> bool:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise KafkaException(error)
            log.warning("%s", describe_consumer_error(error))
            return False
        return message.offset() is not None and _position(message) in self._assigned

    def _idle_long_enough(self) -> bool:
        return idle_long_enough(
            idle_s=self._exit_when_idle_s,
            idle_for_s=self._clock() - self._last_activity,
            busy=self._in_flight or bool(self._carried),
            owns_partitions=bool(self._assigned),
            session_timeout_ms=self._settings.kafka_session_timeout_ms,
        )


def _position(message: Message) -> tuple[str, int]:
    return (message.topic() or "", message.partition() or 0)

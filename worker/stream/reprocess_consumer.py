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
from typing import Any, Final, TypeVar

import orjson
from confluent_kafka import Message
from prometheus_client import CollectorRegistry

from worker.domain.events import Event
from worker.ops.health import LoopHealth
from worker.ops.metrics import ReprocessMetrics
from worker.ops.settings import WorkerSettings
from worker.store.events_reads import find_unprocessed_events
from worker.store.gateway import Gateway
from worker.store.params import EventIterator, FindUnprocessedEventsParams
from worker.store.reprocess_state import (
    ReprocessProgress,
    RequestState,
    load_progress,
    save_progress,
)
from worker.stream.delivery import AckedProducer
from worker.stream.dlq import DeadLetterProducer, SourcePosition
from worker.stream.producer import event_key, producer_config
from worker.stream.reprocess_request import (
    InvalidRequest,
    RejectReason,
    ReprocessRequest,
    parse_request,
    rfc3339,
)
from worker.stream.runtime import (
    PRODUCTION_LOOP,
    BatchPolicy,
    ConsumerRuntime,
    Interrupted,
    LoopOptions,
    RunSummary,
    RuntimeConfig,
    position,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Header naming the request on every re-published event.
HEADER_REQUEST_ID: Final = "reprocess_request_id"
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
        self._producer = AckedProducer(self.topic, producer_config(settings, **{"linger.ms": 5}))

    def send(self, key: str, value: bytes, headers: list[tuple[str, str | bytes | None]]) -> None:
        """Queue one event (blocks only while the local queue is full)."""
        self._producer.send(value, key=key, headers=headers)

    def flush_and_check(self, timeout_s: float) -> int:
        """Wait for every acknowledgement (at most ``timeout_s``); return how many."""
        return self._producer.check(timeout_s, "re-published events")

    def reset(self) -> None:
        """Forget counts (before re-sending a failed page); waits at most 5 s for reports."""
        self._producer.reset()

    def close(self, timeout_s: float = 10.0) -> int:
        return self._producer.flush(timeout_s)


@dataclass(slots=True)
class ReprocessStats(RunSummary):
    """The run summary of a reprocess consumer (the CLI's last line, tests).

    Interruptions, retries and rebalances are the runtime's own counters.
    """

    requests_completed: int = 0
    requests_ignored: int = 0
    requests_rejected: int = 0
    found: int = 0
    republished: int = 0
    pages: int = 0

    @property
    def requests_interrupted(self) -> int:
        return self.counters.interrupted


class ReprocessConsumer:
    """Serves reprocess requests until stopped, idle (optional) or fatally failing."""

    def __init__(
        self,
        settings: WorkerSettings,
        gateway: Gateway,
        dead_letters: DeadLetterProducer,
        republisher: EventRepublisher,
        *,
        metrics: ReprocessMetrics | None = None,
        health: LoopHealth | None = None,
        loop: LoopOptions = PRODUCTION_LOOP,
    ) -> None:
        self._settings = settings
        self._gateway = gateway
        self._metrics = metrics if metrics is not None else ReprocessMetrics(CollectorRegistry())
        self._health = (
            health
            if health is not None
            else LoopHealth(settings.health_stall_seconds, needs_catalog=False, clock=loop.clock)
        )
        # State of each request this process has served (for the metrics gauges).
        self._states: dict[str, tuple[str, int]] = {}
        self._dlq = dead_letters
        self._republisher = republisher
        self._limiter = RateLimiter(settings.reprocess_rate_limit, loop.clock)
        self._runtime = ConsumerRuntime(
            settings,
            RuntimeConfig(
                settings.reprocess_group,
                settings.reprocess_topic,
                stop_interrupts=True,
                interrupt_on_any_revoke=False,
            ),
            loop,
            health=self._health,
        )
        self.stats = ReprocessStats(self._runtime.counters)

    def stop(self) -> None:
        """Ask the loop to stop between chunks, without committing an unfinished request."""
        self._runtime.stop()

    def run(self) -> None:
        """Consume requests until :meth:`stop`, SIGTERM/SIGINT or the idle exit. Blocking.

        Returns after a clean shutdown (finished requests committed, an
        unfinished one left for redelivery); raises on a fatal error.
        """
        try:
            idle = self._runtime.run(self._step, stopping_says="stopping after the current chunk")
        finally:
            self._republisher.close()
            self._dlq.close()
        if idle:
            log.info("idle for %.1fs: exiting", self._runtime.loop.exit_when_idle_s)

    def _step(self) -> bool:
        messages = self._runtime.collect(_ONE_AT_A_TIME)
        for message in messages:
            self._handle(message)
        return bool(messages)

    # -- one control message: the pipeline -------------------------------------------

    def _handle(self, message: Message) -> None:
        """parse -> progress -> pages re-published -> completed -> commit; or interrupted."""
        topic, partition, offset = position(message)
        self._health.batch_started()
        committed = False
        try:
            with self._runtime.unit_of_work([(topic, partition)]):
                self._serve(message)
                self._retry(
                    lambda: self._runtime.commit({(topic, partition): offset + 1}), "commit"
                )
                committed = True
        except Interrupted:
            log.warning(
                "request at %s[%d]@%d interrupted: it resumes from its saved cursor",
                topic,
                partition,
                offset,
            )
        finally:
            self._health.batch_finished(committed=committed)

    def _serve(self, message: Message) -> None:
        try:
            request = parse_request(message.value())
        except InvalidRequest as exc:
            self._reject(message, exc)
            return
        progress = self._retry(
            lambda: load_progress(
                self._gateway, request.tenant_id, request.environment_id, request.request_id
            ),
            "load progress",
        )
        canonical = request.canonical()
        if (
            progress is not None
            and progress.state is not RequestState.REJECTED
            and progress.request != canonical
        ):
            self._reject(
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
            self._retry(lambda: save_progress(self._gateway, started), "save progress")
            progress = started
        else:
            log.info(
                "resuming request %s after %d events (cursor %s, %s)",
                request.request_id,
                progress.republished,
                progress.cursor_timestamp.isoformat(),
                progress.cursor_id,
            )
        self._drive(request, progress)

    def _drive(self, request: ReprocessRequest, progress: ReprocessProgress) -> None:
        """Page, re-publish and save until the window is exhausted; then save completed."""
        page_size = request.page_size
        after = (
            EventIterator(progress.cursor_timestamp, progress.cursor_id)
            if progress.has_cursor
            else None
        )
        while True:
            self._runtime.check_interrupt()
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
            page = self._retry(partial(find_unprocessed_events, self._gateway, params), "read")
            if page:
                republished = self._republish(request.request_id, page)
                last = page[-1]
                progress = progress.advanced(
                    cursor_timestamp=last.timestamp,
                    cursor_id=last.id,
                    found=progress.found + len(page),
                    republished=progress.republished + republished,
                    pages=progress.pages + 1,
                )
                self._retry(partial(save_progress, self._gateway, progress), "save progress")
                self._record(progress, republished)
                after = EventIterator.of(last)
                self.stats.found += len(page)
                self.stats.republished += republished
                self.stats.pages += 1
            if len(page) < page_size:
                break
        done = progress.advanced(state=RequestState.COMPLETED)
        self._retry(lambda: save_progress(self._gateway, done), "save progress")
        self._record(done)
        self.stats.requests_completed += 1
        log.info(
            "request %s completed: %d found, %d re-published in %d pages",
            request.request_id,
            done.found,
            done.republished,
            done.pages,
        )

    def _republish(self, request_id: str, page: list[Event]) -> int:
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
        runtime = self._runtime

        def attempt() -> int:
            self._republisher.reset()
            for start in range(0, len(messages), chunk):
                part = messages[start : start + chunk]
                runtime.wait_polling(self._limiter.reserve(len(part)))
                runtime.check_interrupt()
                for key, value in part:
                    self._republisher.send(key, value, headers)
                runtime.poll(0.0)
            return self._republisher.flush_and_check(_ACK_TIMEOUT_S)

        return self._retry(attempt, "republish")

    def _reject(self, message: Message, problem: InvalidRequest) -> None:
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

        self._retry(send, "dead_letters")
        request_id = problem.request_id
        if request_id is None or problem.reason is RejectReason.REQUEST_ID_REUSED:
            return
        tenant, environment = problem.scope
        existing = self._retry(
            lambda: load_progress(self._gateway, tenant, environment, request_id), "load progress"
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
        self._retry(lambda: save_progress(self._gateway, rejected), "save progress")
        self._record(rejected)

    def _record(self, progress: ReprocessProgress, republished: int = 0) -> None:
        """Update the metrics after ``progress`` was saved."""
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

    def _retry(self, operation: Callable[[], T], stage: str) -> T:
        return self._runtime.retry(operation, stage=stage)


#: One control message at a time, handed over as soon as it arrives.
_ONE_AT_A_TIME: Final = BatchPolicy(max_events=1, max_wait_s=0.0)

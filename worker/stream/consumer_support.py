"""Pieces of the consumer runtime (:mod:`worker.stream.runtime`, ADR 0001): retry policy,
consumer configuration, the protocol's assign/release, the idle rule, signals."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from worker.ops.settings import WorkerSettings
from worker.ops.starting import SignalHandlers, loop_takes_over

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff between attempts while the store or the broker fails."""

    initial_s: float = 0.2
    max_s: float = 10.0
    multiplier: float = 2.0

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(self.max_s, delay * self.multiplier)


def commit_offsets(consumer: Consumer, offsets: Sequence[TopicPartition]) -> None:
    """Commit exactly ``offsets`` (next offsets to read), synchronously.

    Raises ``KafkaException`` when the request or any partition's commit fails.
    """
    for result in consumer.commit(offsets=list(offsets), asynchronous=False) or []:
        if result.error is not None:
            raise KafkaException(result.error)


def group_consumer_config(settings: WorkerSettings, group_id: str) -> dict[str, Any]:
    """librdkafka settings of a group consumer that commits explicitly after writing.

    ``settings.kafka_group_protocol`` picks the rebalance protocol (see
    :func:`group_protocol_config`).
    """
    return settings.kafka_config(
        **{
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "max.poll.interval.ms": max(300_000, settings.kafka_session_timeout_ms),
            **group_protocol_config(settings),
            **fetch_config(settings),
            **error_reporting(settings),
        }
    )


def error_reporting(settings: WorkerSettings) -> dict[str, Any]:
    """An ``error_cb`` that says a broker outage in the worker's words, unless one is set.

    The command line installs the reachability reporter of
    :mod:`worker.ops.kafka_reachability` (one "unreachable" and one "back"
    line for every client) through ``EW_KAFKA_EXTRA``; a consumer built
    without it still says, once per outage, that the broker is unreachable.
    """
    return {} if "error_cb" in settings.kafka_extra else {"error_cb": _say_client_error}


def fetch_config(settings: WorkerSettings) -> dict[str, Any]:
    """Fetch sizes matched to the batch and message limits, unless ``EW_KAFKA_EXTRA`` tunes them.

    A fetch response holds at most ``EW_BATCH_MAX_BYTES`` (at least one
    message, whatever its size), a partition's share at least
    ``EW_MAX_MESSAGE_BYTES``, and librdkafka's prefetch queue as much as one
    batch: what the worker holds of the topic stays within about two batches.
    """
    batch = settings.batch_max_bytes
    sizes = {
        "fetch.max.bytes": batch,
        "max.partition.fetch.bytes": min(batch, max(settings.max_message_bytes, 1024 * 1024)),
        "queued.max.messages.kbytes": max(1, batch // 1024),
        # librdkafka requires room for one whole fetch response.
        "receive.message.max.bytes": max(100_000_000, batch + 512),
    }
    return {key: value for key, value in sizes.items() if key not in settings.kafka_extra}


class NeverAssignedError(RuntimeError):
    """``--exit-when-idle`` passed without the worker ever owning a partition.

    "Idle with everything committed" would be a lie: nothing was read. The
    message says which group and topic, and what to check.
    """

    @classmethod
    def of(cls, group: str, topic: str, waited_s: float) -> NeverAssignedError:
        return cls(
            f"never received a partition of {topic} in group {group} within {waited_s:.0f}s: "
            "other members hold them all (more workers than partitions?) or the group join "
            "did not finish; nothing was consumed"
        )


def group_protocol_config(settings: WorkerSettings) -> dict[str, Any]:
    """The librdkafka properties of ``EW_KAFKA_GROUP_PROTOCOL``.

    ``eager`` and ``cooperative-sticky`` use the classic protocol, where the
    client sets the session timeout; under ``consumer`` (KIP-848) the broker
    assigns partitions and owns session and heartbeat timing, and librdkafka
    refuses ``session.timeout.ms`` and ``partition.assignment.strategy``.
    """
    protocol = settings.kafka_group_protocol
    if protocol == "consumer":
        return {"group.protocol": "consumer"}
    return {
        "group.protocol": "classic",
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "partition.assignment.strategy": (
            "cooperative-sticky" if protocol == "cooperative-sticky" else "range,roundrobin"
        ),
    }


def take_partitions(
    consumer: Consumer, settings: WorkerSettings, partitions: list[TopicPartition]
) -> None:
    """Inside ``on_assign``: assign ``partitions`` the protocol's way, none of them paused.

    ``eager`` replaces the whole assignment (``assign``); the incremental
    protocols add to it (``incremental_assign``). librdkafka keeps a partition's
    pause flag across revoke and re-assignment, so a partition paused for a
    retry, revoked, then assigned again would otherwise never fetch: resume it.
    """
    if settings.kafka_group_protocol == "eager":
        consumer.assign(partitions)
    else:
        consumer.incremental_assign(partitions)
    if partitions:
        consumer.resume(partitions)


def release_partitions(
    consumer: Consumer, settings: WorkerSettings, partitions: list[TopicPartition]
) -> None:
    """Inside ``on_revoke``/``on_lost``: give ``partitions`` up the protocol's way."""
    if settings.kafka_group_protocol == "eager":
        consumer.unassign()
    elif partitions:
        consumer.incremental_unassign(partitions)


#: librdkafka's own errors that mean "the broker cannot be reached right now".
_UNREACHABLE = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT})


def describe_consumer_error(error: KafkaError) -> str:
    """The worker's words for a non-fatal error ``consume()`` returned (for one log line).

    librdkafka reconnects by itself; meanwhile nothing is fetched or committed.
    """
    if error.code() in _UNREACHABLE:
        return (
            f"Kafka broker unreachable ({error.str()}): consumption waits for it, "
            "nothing is committed meanwhile"
        )
    return f"consumer error: {error.str()}"


def _say_client_error(error: KafkaError) -> None:
    """``error_cb``: client-level errors (broker gone, ...) in the worker's words.

    Served by ``consume()``; without it librdkafka's own log is all that shows
    a broker outage while the loop is between batches. Said once per outage
    (librdkafka reports "all brokers down" on the transition); each failed
    reconnect only at debug level.
    """
    if error.code() == KafkaError._ALL_BROKERS_DOWN or error.fatal():
        log.warning("%s", describe_consumer_error(error))
    else:
        log.debug("%s", describe_consumer_error(error))


def owned_offsets(
    offsets: Sequence[TopicPartition], owned: Collection[tuple[str, int]]
) -> list[TopicPartition]:
    """``offsets`` restricted to the partitions this member owns (commits never cover others)."""
    return [tp for tp in offsets if (tp.topic, tp.partition) in owned]


def idle_long_enough(
    *,
    idle_s: float | None,
    idle_for_s: float,
    busy: bool,
    owns_partitions: bool,
    session_timeout_ms: int,
) -> bool:
    """The ``--exit-when-idle`` rule: no message for ``idle_s`` and nothing pending.

    While the member owns no partition (before the first assignment, or after
    a revoke or a loss, e.g. while the broker restarts) a group join may still
    be under way (a join can wait for a departed or phantom member to time
    out), so the wait is extended by three session timeouts. Never decided
    from watermarks.
    """
    if idle_s is None or busy:
        return False
    limit = idle_s if owns_partitions else idle_s + 3 * session_timeout_ms / 1000
    return idle_for_s >= limit


class StopOnSignals(SignalHandlers):
    """Context manager: SIGTERM/SIGINT call ``stop`` (the loop finishes its unit of work).

    Restores the previous handlers on exit (a start-up guard they replaced
    ignores signals from then on). Outside the main thread (tests) signals
    cannot be handled; ``stop`` can still be called directly.
    """

    def __init__(self, stop: Callable[[], None], what: str) -> None:
        super().__init__(self._handle)
        self._stop = stop
        self._what = what

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: %s", signum, self._what)
        self._stop()

    def __enter__(self) -> StopOnSignals:
        super().__enter__()
        loop_takes_over(self)
        return self

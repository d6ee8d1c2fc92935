"""Pieces shared by the usage and reprocess consumer loops (ADR 0001)."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from worker.ops.settings import WorkerSettings

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
    """librdkafka settings of a group consumer that commits explicitly after writing."""
    return settings.kafka_config(
        **{
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": settings.kafka_session_timeout_ms,
            "max.poll.interval.ms": max(300_000, settings.kafka_session_timeout_ms),
        }
    )


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


def idle_long_enough(
    *,
    idle_s: float | None,
    idle_for_s: float,
    busy: bool,
    assigned_once: bool,
    session_timeout_ms: int,
) -> bool:
    """The ``--exit-when-idle`` rule: no message for ``idle_s`` and nothing pending.

    Before any assignment the group join may still be under way (a join can
    wait for a departed or phantom member to time out), so the wait is
    extended by three session timeouts. Never decided from watermarks.
    """
    if idle_s is None or busy:
        return False
    limit = idle_s if assigned_once else idle_s + 3 * session_timeout_ms / 1000
    return idle_for_s >= limit


class StopOnSignals:
    """Context manager: SIGTERM/SIGINT call ``stop`` (the loop finishes its unit of work).

    Restores the previous handlers on exit. Outside the main thread (tests)
    signals cannot be handled; ``stop`` can still be called directly.
    """

    def __init__(self, stop: Callable[[], None], what: str) -> None:
        self._stop = stop
        self._what = what
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignals:
        def handle(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: %s", signum, self._what)
            self._stop()

        try:
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, handle)
        except ValueError:  # not the main thread
            pass
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

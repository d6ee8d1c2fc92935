"""Delivery accounting shared by every producer of the worker.

librdkafka reports each message's fate in a delivery callback, served from
``Producer.poll`` / ``Producer.flush``. :class:`DeliveryTracker` counts those
reports, and :func:`produce_or_wait` turns a full local queue
(``BufferError``) into bounded waiting instead of an exception.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Final

from confluent_kafka import KafkaError, Message, Producer

__all__ = ["DeliveryError", "DeliveryTracker", "produce_or_wait"]

#: How many failure descriptions a tracker keeps (the count is always exact).
_KEPT_ERRORS: Final = 10


class DeliveryError(RuntimeError):
    """Messages were not acknowledged by the broker (failed, or still in flight at a deadline)."""


@dataclass(slots=True)
class DeliveryTracker:
    """Counts of one producer's delivery reports. Mutable state, one producer, one thread.

    ``sent`` is incremented by :func:`produce_or_wait`; ``delivered`` and
    ``failed`` by :meth:`on_delivery`, which librdkafka calls from ``poll`` or
    ``flush`` on the calling thread.
    """

    sent: int = 0
    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def in_flight(self) -> int:
        """Messages handed to the producer without a delivery report yet."""
        return self.sent - self.delivered - self.failed

    def on_delivery(self, error: KafkaError | None, message: Message) -> None:
        """Delivery callback: pass as ``on_delivery`` to ``Producer.produce``."""
        if error is None:
            self.delivered += 1
            return
        self.failed += 1
        if len(self.errors) < _KEPT_ERRORS:
            where = f"{message.topic()}[{message.partition()}]"
            self.errors.append(f"{where}: {error.str()}")

    def reset(self) -> None:
        """Forget all counts (after the caller has acted on them)."""
        self.sent = self.delivered = self.failed = 0
        self.errors.clear()


def produce_or_wait(
    producer: Producer,
    tracker: DeliveryTracker,
    topic: str,
    *,
    value: bytes | None,
    key: bytes | str | None = None,
    headers: list[tuple[str, str | bytes | None]] | None = None,
    queue_full_timeout_s: float = 30.0,
) -> None:
    """Hand one message to ``producer``; when its local queue is full, serve reports and retry.

    Blocks only while the queue is full, at most ``queue_full_timeout_s``, then
    raises :class:`DeliveryError`. Raises ``KafkaException`` for a message the
    producer refuses outright (e.g. larger than ``message.max.bytes``). Does not
    wait for the broker: call ``flush`` and check ``tracker`` for that.
    """
    deadline = time.monotonic() + queue_full_timeout_s
    while True:
        try:
            if headers:
                producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=tracker.on_delivery
                )
            else:
                producer.produce(topic, value=value, key=key, on_delivery=tracker.on_delivery)
        except BufferError:
            if time.monotonic() >= deadline:
                raise DeliveryError(
                    f"producer queue still full after {queue_full_timeout_s}s "
                    f"({tracker.in_flight} messages in flight)"
                ) from None
            producer.poll(0.05)
            continue
        tracker.sent += 1
        return

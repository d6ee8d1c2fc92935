"""Delivery accounting shared by every producer of the worker.

librdkafka reports each message's fate in a delivery callback, served from
``Producer.poll`` / ``Producer.flush``. :class:`DeliveryTracker` counts those
reports, and :func:`produce_or_wait` turns a full local queue
(``BufferError``) into bounded waiting instead of an exception.
:class:`AckedProducer` puts the two together for the worker's producers that
must know every message was acknowledged (the DLQ, the reprocess
re-publisher, the catalog publisher).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from confluent_kafka import KafkaError, Message, Producer

__all__ = ["AckedProducer", "DeliveryError", "DeliveryTracker", "produce_or_wait"]

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


#: What every acknowledged producer asks of the broker (the caller's settings cannot lower it).
ACKED: Final[dict[str, Any]] = {"acks": "all", "enable.idempotence": True}


class AckedProducer:
    """One topic's producer that accounts for every acknowledgement. One thread.

    ``config`` is librdkafka's (``acks=all`` and idempotence are forced on);
    ``message.timeout.ms`` (default 30 s) also bounds waiting on a full local
    queue. :meth:`send` does not wait for the broker; :meth:`flush` does,
    bounded by its timeout, and :attr:`tracker` then says what was delivered,
    failed or is still in flight since the last :meth:`reset`. No network I/O
    before the first message.
    """

    def __init__(self, topic: str, config: Mapping[str, Any]) -> None:
        self.topic = topic
        merged = {"message.timeout.ms": 30_000, **config, **ACKED}
        self._queue_timeout_s = float(merged["message.timeout.ms"]) / 1000.0
        self._producer = Producer(merged)
        self.tracker = DeliveryTracker()

    def send(
        self,
        value: bytes | None,
        *,
        key: bytes | str | None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        """Queue one message (blocks only while the local queue is full); serve reports.

        Raises :class:`DeliveryError` when the queue stays full, ``KafkaException``
        when the producer refuses the message outright.
        """
        produce_or_wait(
            self._producer,
            self.tracker,
            self.topic,
            value=value,
            key=key,
            headers=headers,
            queue_full_timeout_s=self._queue_timeout_s,
        )
        self._producer.poll(0)

    def flush(self, timeout_s: float) -> int:
        """Wait (at most ``timeout_s``) for reports; return the messages still unacknowledged."""
        remaining: int = self._producer.flush(timeout_s)
        return remaining

    def check(self, timeout_s: float, what: str) -> int:
        """:meth:`flush`, then raise :class:`DeliveryError` unless every message sent since
        the last reset was acknowledged; return how many were, and reset the counts.

        On failure the counts stay, so every later check raises too until :meth:`reset`.
        """
        remaining = self.flush(timeout_s)
        tracker = self.tracker
        if tracker.failed or remaining or tracker.in_flight:
            detail = "; ".join(tracker.errors[:3])
            raise DeliveryError(
                f"{tracker.failed} {what} failed and {tracker.in_flight} unacknowledged "
                f"after {timeout_s}s on {self.topic}" + (f": {detail}" if detail else "")
            )
        delivered = tracker.delivered
        tracker.reset()
        return delivered

    def reset(self) -> None:
        """Forget the counts (the caller re-sends); waits at most 5 s for reports first."""
        self._producer.flush(5.0)
        self.tracker.reset()

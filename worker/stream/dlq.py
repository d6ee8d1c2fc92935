"""Dead letters: messages the worker cannot use go to ``events.dlq``, never dropped.

Each dead letter carries the source message's original key and value bytes and
these headers (all UTF-8):

=====================  ==============================================
``reason``             machine-readable reason (an ``InvalidReason`` value)
``error``              human-readable detail (at most 1000 characters)
``source_topic``       topic of the original message
``source_partition``   its partition (decimal)
``source_offset``      its offset (decimal)
``worker_version``     ``worker.__version__`` of the worker that rejected it
=====================  ==============================================

plus the original message's own headers after them. A value longer than
``max_payload_bytes`` (default 900 KiB, under the usual 1 MB broker limit)
is cut to that length and gets a ``payload_truncated_from`` header with its
original length, so an oversized message still leaves a record instead of
blocking its partition. Ordering contract for the
pipeline (DESIGN.md §5): send every dead letter of a batch, then
:meth:`DeadLetterProducer.flush_and_check`, and only then commit the source
offsets; a failed or unacknowledged dead letter raises, so the batch is not
committed and will be redelivered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from confluent_kafka import Message

from worker import __version__
from worker.ops.settings import WorkerSettings
from worker.stream.delivery import AckedProducer, DeliveryError

__all__ = [
    "HEADER_ERROR",
    "HEADER_REASON",
    "HEADER_SOURCE_OFFSET",
    "HEADER_SOURCE_PARTITION",
    "HEADER_SOURCE_TOPIC",
    "HEADER_TRUNCATED_FROM",
    "HEADER_WORKER_VERSION",
    "DeadLetterError",
    "DeadLetterProducer",
    "SourcePosition",
]

HEADER_REASON: Final = "reason"
HEADER_ERROR: Final = "error"
HEADER_SOURCE_TOPIC: Final = "source_topic"
HEADER_SOURCE_PARTITION: Final = "source_partition"
HEADER_SOURCE_OFFSET: Final = "source_offset"
HEADER_WORKER_VERSION: Final = "worker_version"
HEADER_TRUNCATED_FROM: Final = "payload_truncated_from"
#: Longest ``error`` header kept (characters).
MAX_ERROR_CHARS: Final = 1000
#: Longest dead-letter value kept (bytes); see the module docstring.
DEFAULT_MAX_PAYLOAD_BYTES: Final = 900 * 1024

_DLQ_CONFIG: Final[dict[str, Any]] = {"linger.ms": 5, "message.timeout.ms": 30_000}


class DeadLetterError(DeliveryError):
    """Dead letters were not acknowledged: do not commit the source offsets."""


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where a message was read from."""

    topic: str
    partition: int
    offset: int


class DeadLetterProducer:
    """Produces rejected messages to the DLQ topic and tracks their acknowledgements.

    One instance per worker process, used from one thread. :meth:`send` does
    not wait for the broker; :meth:`flush_and_check` does (bounded by its
    timeout) and raises :class:`DeadLetterError` unless every dead letter sent
    since the previous successful check was acknowledged. The DLQ topic must
    exist (see :func:`worker.stream.topics.ensure_topics`).
    """

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        topic: str | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        """Build the producer (no network I/O until the first message)."""
        self.topic = topic or settings.dlq_topic
        self.max_payload_bytes = max_payload_bytes
        self._producer = AckedProducer(self.topic, {**_DLQ_CONFIG, **settings.kafka_config()})
        self.total_sent = 0

    @property
    def pending(self) -> int:
        """Dead letters sent since the last successful :meth:`flush_and_check`."""
        return self._producer.tracker.sent

    def send(
        self,
        value: bytes | None,
        *,
        key: bytes | None,
        reason: str,
        error: str,
        source: SourcePosition,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        """Queue one dead letter carrying ``value`` and ``key`` unchanged.

        Non-blocking unless the local queue is full (then bounded by the
        producer's message timeout). Raises :class:`DeadLetterError` when the
        producer refuses the message or its queue stays full.
        """
        letter_headers = [
            (HEADER_REASON, reason.encode()),
            (HEADER_ERROR, error[:MAX_ERROR_CHARS].encode("utf-8", "replace")),
            (HEADER_SOURCE_TOPIC, source.topic.encode()),
            (HEADER_SOURCE_PARTITION, str(source.partition).encode()),
            (HEADER_SOURCE_OFFSET, str(source.offset).encode()),
            (HEADER_WORKER_VERSION, __version__.encode()),
            *(headers or ()),
        ]
        if value is not None and len(value) > self.max_payload_bytes:
            letter_headers.append((HEADER_TRUNCATED_FROM, str(len(value)).encode()))
            value = value[: self.max_payload_bytes]
        try:
            self._producer.send(value, key=key, headers=letter_headers)
        except DeliveryError as exc:
            raise DeadLetterError(str(exc)) from None
        except Exception as exc:  # KafkaException: refused locally (size, unknown topic...)
            raise DeadLetterError(
                f"dead letter for {source.topic}[{source.partition}]@{source.offset} refused: {exc}"
            ) from None
        self.total_sent += 1

    def send_message(self, message: Message, *, reason: str, error: str) -> None:
        """:meth:`send` for a consumed message: its value, key, headers and position."""
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            raise ValueError("a dead letter needs a consumed message (topic/partition/offset)")
        original = message.headers() or []
        pairs = original.items() if isinstance(original, dict) else original
        self.send(
            message.value(),
            key=message.key(),
            reason=reason,
            error=error,
            source=SourcePosition(topic, partition, offset),
            headers=list(pairs),
        )

    def flush_and_check(self, timeout_s: float) -> int:
        """Wait for every pending dead letter's acknowledgement; return how many were acked.

        Blocks at most ``timeout_s``. Raises :class:`DeadLetterError` when any
        dead letter failed or is still unacknowledged: the caller must then not
        commit the source offsets. Failures stay counted, so every later check
        raises too, until the caller drops the batch (it will be redelivered and
        dead-lettered again) and calls :meth:`reset_after_failure`.
        """
        try:
            return self._producer.check(timeout_s, "dead letters")
        except DeliveryError as exc:
            raise DeadLetterError(str(exc)) from None

    def reset_after_failure(self) -> None:
        """Forget failed dead letters once the caller has arranged to re-send them.

        The pipeline calls this when it drops the uncommitted batch (it will be
        redelivered and dead-lettered again). Blocks at most 5 s to let
        in-flight reports arrive first.
        """
        self._producer.reset()

    def close(self, timeout_s: float = 10.0) -> int:
        """Flush (bounded by ``timeout_s``); return the messages still unacknowledged."""
        return self._producer.flush(timeout_s)

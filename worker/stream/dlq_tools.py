"""Operator tools on the dead-letter topic: ``events-worker dlq list | redrive``.

* :func:`read_dead_letters` reads the whole DLQ (explicit ``assign`` of every
  partition from the beginning, no group, no commit) until caught up:
  positions at the high watermarks read first *and* no message for an idle
  gap (tansu's watermarks lag, so never watermarks alone). Bounded.
* :func:`redrive` re-publishes selected dead letters to their source topic
  (``source_topic`` header, else the events topic) with their original key
  and value, their own headers minus the DLQ's, plus ``redriven_from``
  (``dlq-topic/partition/offset``) and ``redriven_reason``. The broker must
  acknowledge every one (``acks=all``, idempotent); a dead letter that fails
  again simply comes back to the DLQ with its new reason.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from worker.ops.settings import WorkerSettings
from worker.stream.delivery import DeliveryTracker, produce_or_wait
from worker.stream.dlq import (
    HEADER_ERROR,
    HEADER_REASON,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    HEADER_TRUNCATED_FROM,
    HEADER_WORKER_VERSION,
)
from worker.stream.producer import producer_config

HEADER_REDRIVEN_FROM: Final = "redriven_from"
HEADER_REDRIVEN_REASON: Final = "redriven_reason"
_DLQ_HEADERS: Final = frozenset(
    {
        HEADER_REASON,
        HEADER_ERROR,
        HEADER_SOURCE_TOPIC,
        HEADER_SOURCE_PARTITION,
        HEADER_SOURCE_OFFSET,
        HEADER_WORKER_VERSION,
        HEADER_TRUNCATED_FROM,
    }
)


class DlqToolError(RuntimeError):
    """The DLQ could not be read or re-driven; the message says why (one line)."""


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """One dead letter as stored: where it is, its bytes and its headers."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", "replace")
        return ""

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"


def read_dead_letters(
    settings: WorkerSettings, *, timeout_s: float = 30.0, idle_gap_s: float = 1.0
) -> list[DeadLetterRecord]:
    """Every dead letter of ``settings.dlq_topic``, by partition and offset. Blocking,
    at most about ``timeout_s``; raises :class:`DlqToolError` when the topic is missing,
    the broker does not answer, or the topic is not read to its end in time."""
    topic = settings.dlq_topic
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"events-worker-dlq-{uuid.uuid4().hex}",  # never joined
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
            }
        )
    )
    try:
        deadline = time.monotonic() + timeout_s
        try:
            metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        except KafkaException as exc:
            raise DlqToolError(f"cannot read metadata of {topic}: {exc.args[0]}") from None
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise DlqToolError(f"dead-letter topic {topic} does not exist (EW_DLQ_TOPIC)")
        partitions = sorted(metadata.partitions)
        targets = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: list[DeadLetterRecord] = []
        next_offsets = dict.fromkeys(partitions, 0)
        last_message_at = time.monotonic()
        while True:
            now = time.monotonic()
            reached = all(next_offsets[p] >= targets[p] for p in partitions)
            if reached and now - last_message_at >= idle_gap_s:
                break
            if now >= deadline:
                raise DlqToolError(f"{topic} not read to its end within {timeout_s:g}s")
            for message in consumer.consume(500, 0.2):
                partition, offset = message.partition(), message.offset()
                if message.error() is not None or partition is None or offset is None:
                    continue
                next_offsets[partition] = offset + 1
                last_message_at = time.monotonic()
                original = message.headers() or []
                pairs = original.items() if isinstance(original, dict) else original
                headers = tuple(
                    (str(name), value) for name, value in pairs if isinstance(value, bytes)
                )
                records.append(
                    DeadLetterRecord(partition, offset, message.key(), message.value(), headers)
                )
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def redrive(
    settings: WorkerSettings, letters: Iterable[DeadLetterRecord], *, timeout_s: float = 60.0
) -> int:
    """Re-publish ``letters`` (module docstring); return how many were acknowledged.

    Raises :class:`DlqToolError` unless every one was acknowledged in time.
    """
    producer = Producer(producer_config(settings, **{"linger.ms": 5}))
    tracker = DeliveryTracker()
    for letter in letters:
        headers: list[tuple[str, str | bytes | None]] = [
            (name, value) for name, value in letter.headers if name not in _DLQ_HEADERS
        ]
        headers += [
            (HEADER_REDRIVEN_FROM, f"{settings.dlq_topic}/{letter.partition}/{letter.offset}"),
            (HEADER_REDRIVEN_REASON, letter.header(HEADER_REASON)),
        ]
        produce_or_wait(
            producer,
            tracker,
            letter.header(HEADER_SOURCE_TOPIC) or settings.events_topic,
            value=letter.value,
            key=letter.key,
            headers=headers,
        )
    remaining = producer.flush(timeout_s)
    if remaining or tracker.failed:
        detail = "; ".join(tracker.errors[:3])
        raise DlqToolError(
            f"{tracker.failed + remaining} of {tracker.sent} re-driven messages not "
            f"acknowledged" + (f": {detail}" if detail else "")
        )
    return tracker.delivered

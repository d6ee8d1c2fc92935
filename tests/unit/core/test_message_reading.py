"""The core reads a batch's message fields with the lookups resolved once per
message type where that gives what ``getattr`` (records) or a method call
(Kafka messages) gives; every other message is read by name. Each read must
say what Python reads, whatever the types in the batch."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from worker.core_decode import decode_raw_batch
from worker.domain.validation import EventLimits
from worker.stream.memory_consumer import MemoryMessage
from worker.stream.usage_batch import SourceMessage

NOW = datetime(2026, 3, 1, tzinfo=UTC)
NOW_US = 1_772_323_200_000_000
# No id and no timestamp: the event's id and time come from the message's fields.
PAYLOAD = b'{"tenant_id":"t","event_name":"e","customer_id":"c"}'


class PlainRecord:
    """A record with its fields in the instance ``__dict__``."""

    def __init__(self, topic: str, partition: int, offset: int, value: bytes | None) -> None:
        self.topic, self.partition, self.offset, self.value = topic, partition, offset, value
        self.timestamp_ms: int | None = 1_000 * offset


class RenamedTopic(SourceMessage):
    """A record whose ``topic`` is computed: not the slot its base reads."""

    __slots__ = ()

    @property  # type: ignore[misc]
    def topic(self) -> str:  # type: ignore[override]
        return "renamed"

    @topic.setter
    def topic(self, value: str) -> None:
        SourceMessage.topic.__set__(self, value)  # type: ignore[attr-defined]


class PropertyRecord:
    """Slots behind Python properties (read by name: the property runs)."""

    __slots__ = ("_offset",)

    def __init__(self, offset: int) -> None:
        self._offset = offset

    topic = property(lambda self: "props")
    partition = property(lambda self: 7)
    offset = property(lambda self: self._offset)
    value = property(lambda self: PAYLOAD)
    timestamp_ms = property(lambda self: None)


class RenamedKafka(Message):  # type: ignore[misc]
    """A Kafka message whose ``topic()`` is a Python override."""

    def topic(self) -> str:
        return "renamed-kafka"


def expected(messages: list[Any], kafka: bool) -> tuple[list[str], list[int]]:
    """Per message the fallback id and the timestamp (µs) Python reads."""
    ids, stamps = [], []
    for m in messages:
        if kafka:
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            kind, stamp = m.timestamp()
            stamp = stamp if kind else None
        else:
            topic, partition, offset, stamp = m.topic, m.partition, m.offset, m.timestamp_ms
        ids.append(f"{topic}-{partition}-{offset}")
        stamps.append(stamp * 1000 if stamp is not None and stamp > 0 else NOW_US)
    return ids, stamps


def read(messages: list[Any]) -> tuple[list[str], list[int]]:
    decoded = decode_raw_batch(messages, NOW, EventLimits())
    assert decoded.rejected == []
    stamps = decoded.columns["timestamp"].cast("int64").to_pylist()
    return decoded.columns["id"].to_pylist(), stamps


def test_records_of_mixed_types_read_as_getattr_does() -> None:
    batches: list[list[Any]] = [
        [SourceMessage("events", 1, 10 + n, PAYLOAD, 5_000 + n) for n in range(3)],
        [
            SourceMessage("events", 1, 10, PAYLOAD, 5_000),
            RenamedTopic("events", 2, 11, PAYLOAD, None),
            PlainRecord("plain", 3, 12, PAYLOAD),
            SourceMessage("events", 1, 13, PAYLOAD, -1),
            PropertyRecord(14),
            RenamedTopic("events", 2, 15, PAYLOAD, 6_000),
        ],
        [RenamedTopic("events", 2, 20, PAYLOAD, 1), SourceMessage("events", 4, 21, PAYLOAD)],
        [PropertyRecord(30), PropertyRecord(31), SourceMessage("events", 0, 32, PAYLOAD, 9)],
        [PlainRecord("plain", 3, 40, PAYLOAD), SourceMessage("events", 0, 41, PAYLOAD, 9)],
    ]
    for batch in batches:
        assert read(batch) == expected(batch, kafka=False)
    assert read(batches[1])[0][1] == "renamed-2-11"


def test_kafka_messages_of_mixed_types_read_as_method_calls_do() -> None:
    def kafka(cls: type[Message], offset: int) -> Message:
        return cls(
            topic="events",
            partition=offset % 3,
            offset=offset,
            value=PAYLOAD,
            timestamp=(TIMESTAMP_CREATE_TIME, 7_000 + offset),
        )

    memory = MemoryMessage("memory", 5, 50, PAYLOAD, None, 8_000)
    batches: list[list[Any]] = [
        [kafka(Message, n) for n in range(3)],
        [kafka(Message, 1), kafka(RenamedKafka, 2), memory, kafka(Message, 3)],
        [kafka(RenamedKafka, 4), kafka(Message, 5)],
        [memory, kafka(Message, 6), kafka(RenamedKafka, 7)],
    ]
    for batch in batches:
        assert read(batch) == expected(batch, kafka=True)
    assert read(batches[1])[0][1] == "renamed-kafka-2-2"

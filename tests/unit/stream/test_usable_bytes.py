"""The runtime's one-call check of a ``consume()`` result (``_core.usable_bytes``)
and the byte budget it feeds: a batch never holds more value bytes than
``max_bytes`` (but at least one message), whichever path took the messages."""

from __future__ import annotations

from confluent_kafka import KafkaError, Message

from tests.unit.stream.memory_fakes import TOPIC, FakeDeadLetters, FakeProcessor, settings
from worker._core import usable_bytes
from worker.stream.consumer_support import RetryPolicy
from worker.stream.memory_consumer import MemoryBroker
from worker.stream.runtime import BatchPolicy, LoopOptions
from worker.stream.usage_consumer import UsageConsumer

ASSIGNED = {("events", 0), ("events", 1)}


def _message(partition: int, offset: int, value: bytes | None, **extra: object) -> Message:
    return Message(topic="events", partition=partition, offset=offset, value=value, **extra)


def test_the_total_of_usable_messages_is_their_value_bytes() -> None:
    messages = [_message(0, 0, b"abc"), _message(0, 1, None), _message(1, 0, b"de")]
    assert usable_bytes(messages, ASSIGNED) == 5
    assert usable_bytes([], ASSIGNED) == 0


def test_one_unusable_message_leaves_the_check_to_python() -> None:
    good = [_message(0, 0, b"abc"), _message(1, 0, b"de")]
    error = _message(0, 1, None, error=KafkaError(KafkaError._PARTITION_EOF))
    assert usable_bytes([*good, error], ASSIGNED) is None
    no_offset = _message(0, -1001, b"x")  # OFFSET_INVALID: offset() is None
    assert no_offset.offset() is None
    assert usable_bytes([*good, no_offset], ASSIGNED) is None
    # A partition not assigned, after a run of assigned ones.
    assert usable_bytes([*good, _message(2, 0, b"x")], ASSIGNED) is None
    other_topic = Message(topic="other", partition=1, offset=0, value=b"x")
    assert usable_bytes([*good, other_topic], ASSIGNED) is None
    no_topic = Message(partition=0, offset=2, value=b"x")
    assert no_topic.topic() is None
    assert usable_bytes([*good, no_topic], ASSIGNED) is None


def test_batches_keep_to_the_byte_budget() -> None:
    broker = MemoryBroker()
    broker.create_topic(TOPIC, 2)
    sizes = [10, 10, 10, 25, 10, 10, 40, 5, 5, 5]
    for partition in (0, 1):
        for size in sizes:
            broker.produce(TOPIC, partition, b"x" * size)
    processor = FakeProcessor()
    consumer = UsageConsumer(
        settings(),
        processor,  # type: ignore[arg-type]
        FakeDeadLetters(),  # type: ignore[arg-type]
        batch_policy=BatchPolicy(max_events=8, max_wait_s=0.1, max_bytes=30),
        loop=LoopOptions(
            retry=RetryPolicy(initial_s=0.2, max_s=1.0),
            exit_when_idle_s=1.0,
            clock=broker.clock,
            consumer_factory=broker.consumer,
        ),
    )

    consumer.run()

    value_size = {(TOPIC, p, o): size for p in (0, 1) for o, size in enumerate(sizes)}
    batches = [[value_size[m] for m in batch] for batch in processor.written]
    assert sorted(m for batch in processor.written for m in batch) == sorted(value_size)
    assert all(sum(b) <= 30 or len(b) == 1 for b in batches), batches
    assert max(len(b) for b in batches) > 1 and any(sum(b) == 30 for b in batches), batches

"""Smoke tests proving the integration fixtures are real: a broker, a ClickHouse.

(a) produce/consume/commit through a consumer group on a real broker;
(b) ReplacingMergeTree + FINAL on a real ClickHouse with query parameters;
(c) the same against testcontainers, when a Docker engine answers.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from tests.integration.support import (
    ClickHouseTarget,
    NativeTarget,
    client_config,
    create_topic,
    producer_config,
)

MESSAGES = 200
PARTITIONS = 2
#: Deadline for consuming everything (the first group join alone takes ~3 s).
CONSUME_DEADLINE_S = 30.0


def _produce(config: dict[str, Any], topic: str, count: int) -> dict[int, int]:
    """Produce `count` keyed messages; return {partition: next offset} from delivery reports."""
    delivered: list[Message] = []
    errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            errors.append(error)
        else:
            delivered.append(message)

    producer = Producer(producer_config(config) | {"acks": "all", "message.timeout.ms": 15000})
    for i in range(count):
        producer.produce(
            topic, key=f"key-{i % 10}", value=f"value-{i}".encode(), on_delivery=on_delivery
        )
        producer.poll(0)
    remaining = producer.flush(timeout=20.0)

    assert remaining == 0, f"{remaining} messages still in flight after flush"
    assert errors == []
    assert len(delivered) == count
    high_marks: dict[int, int] = {}
    for message in delivered:
        partition, offset = message.partition(), message.offset()
        assert partition is not None and offset is not None and offset >= 0
        high_marks[partition] = max(high_marks.get(partition, 0), offset + 1)
    return high_marks


def _group_consumer(config: dict[str, Any], group: str) -> Consumer:
    """A consumer in `group` that commits only by hand, starting from the earliest offset."""
    return Consumer(
        config | {"group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    )


def _consume_and_commit(config: dict[str, Any], topic: str, group: str, expected: int) -> list[str]:
    """Consume `expected` messages in `group`, commit them synchronously, close; return values."""
    consumer = _group_consumer(config, group)
    values: list[str] = []
    next_offsets: dict[int, int] = {}
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + CONSUME_DEADLINE_S
        # Count messages rather than trusting watermarks (tansu's can lag).
        while len(values) < expected:
            assert time.monotonic() < deadline, f"consumed {len(values)}/{expected} in time"
            message = consumer.poll(timeout=0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            partition, offset = message.partition(), message.offset()
            assert partition is not None and offset is not None
            values.append((message.value() or b"").decode())
            next_offsets[partition] = offset + 1
        committed = consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in sorted(next_offsets.items())],
            asynchronous=False,
        )
        assert committed is not None
        assert all(tp.error is None for tp in committed), committed
    finally:
        consumer.close()
    return values


def _assert_group_caught_up(
    config: dict[str, Any], topic: str, group: str, high_marks: dict[int, int]
) -> None:
    """A new consumer in `group` sees the commits and reads nothing new."""
    consumer = _group_consumer(config, group)
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = consumer.committed(partitions, timeout=10.0)
        assert {tp.partition: tp.offset for tp in committed} == high_marks

        assigned: list[TopicPartition] = []
        consumer.subscribe([topic], on_assign=lambda _c, tps: assigned.extend(tps))
        deadline = time.monotonic() + CONSUME_DEADLINE_S
        while not assigned:
            assert time.monotonic() < deadline, "no partition assignment in time"
            message = consumer.poll(timeout=0.5)
            assert message is None, f"read {message.value()!r} past the committed offsets"
        quiet_until = time.monotonic() + 1.0
        while time.monotonic() < quiet_until:
            message = consumer.poll(timeout=0.25)
            assert message is None, f"read {message.value()!r} past the committed offsets"
        assert sorted(tp.partition for tp in assigned) == list(range(PARTITIONS))

        # Silence must mean "caught up", not "not fetching": one more message
        # arrives, at exactly the committed offset.
        producer = Producer(producer_config(config))
        producer.produce(topic, value=b"after-commit", partition=0)
        assert producer.flush(timeout=10.0) == 0
        while (message := consumer.poll(timeout=0.5)) is None:
            assert time.monotonic() < deadline, "the post-commit message never arrived"
        assert message.error() is None, message.error()
        assert (message.partition(), message.offset(), message.value()) == (
            0,
            high_marks[0],
            b"after-commit",
        )
    finally:
        consumer.close()


def check_kafka_group_roundtrip(config: dict[str, Any], topic: str, group: str) -> None:
    """Produce, consume with manual sync commit, then verify the group's offsets."""
    high_marks = _produce(config, topic, MESSAGES)
    assert sorted(high_marks) == list(range(PARTITIONS)), "keys should spread over partitions"
    assert sum(high_marks.values()) == MESSAGES

    values = _consume_and_commit(config, topic, group, MESSAGES)

    assert sorted(values) == sorted(f"value-{i}" for i in range(MESSAGES))
    _assert_group_caught_up(config, topic, group, high_marks)


def check_replacing_merge_tree_final(target: ClickHouseTarget) -> None:
    """Two versions of one key; FINAL returns only the newest, whatever the insert order."""
    target.execute(
        """
        CREATE TABLE usage_line (
            line_key   String,
            version    UInt64,
            amount     Decimal(18, 6),
            note       Nullable(String),
            updated_at DateTime64(3, 'UTC')
        ) ENGINE = ReplacingMergeTree(version) ORDER BY line_key
        """
    )
    # Keep both parts apart so the assertion is about FINAL, not a lucky merge.
    target.execute("SYSTEM STOP MERGES usage_line")
    insert = """
        INSERT INTO usage_line (line_key, version, amount, note, updated_at)
        SELECT {key:String}, {version:UInt64}, {amount:Decimal(18, 6)},
               {note:Nullable(String)}, {updated_at:DateTime64(3, 'UTC')}
    """
    newest_at = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    target.execute(
        insert,
        {
            "key": "cust-1|meter-a",
            "version": 2,
            "amount": "12.500000",
            "note": None,
            "updated_at": newest_at,
        },
    )
    target.execute(
        insert,
        {
            "key": "cust-1|meter-a",
            "version": 1,
            "amount": "3.000000",
            "note": "stale",
            "updated_at": newest_at - dt.timedelta(hours=1),
        },
    )

    assert target.execute("SELECT count() FROM usage_line") == [(2,)]
    rows = target.execute(
        "SELECT line_key, version, amount, note, updated_at FROM usage_line FINAL "
        "WHERE line_key = {key:String}",
        {"key": "cust-1|meter-a"},
    )

    assert len(rows) == 1
    line_key, version, amount, note, updated_at = rows[0]
    assert (line_key, version, amount, note) == ("cust-1|meter-a", 2, Decimal("12.5"), None)
    assert isinstance(amount, Decimal)
    if updated_at.tzinfo is None:  # clickhouse-driver may hand back naive UTC
        updated_at = updated_at.replace(tzinfo=dt.UTC)
    assert updated_at == newest_at


def test_kafka_group_commits_survive_a_new_consumer(
    kafka_bootstrap: str,
    kafka_client_config: dict[str, Any],
    unique_name: Callable[[str], str],
) -> None:
    topic, group = unique_name("topic"), unique_name("group")
    create_topic(kafka_bootstrap, topic, PARTITIONS)

    check_kafka_group_roundtrip(kafka_client_config, topic, group)


def test_replacing_merge_tree_final_keeps_latest_version(
    clickhouse_target: ClickHouseTarget,
) -> None:
    check_replacing_merge_tree_final(clickhouse_target)


@pytest.mark.docker
def test_same_against_testcontainers(
    docker_kafka: str, docker_clickhouse: str, unique_name: Callable[[str], str]
) -> None:
    topic, group = unique_name("topic"), unique_name("group")
    create_topic(docker_kafka, topic, PARTITIONS)
    check_kafka_group_roundtrip(client_config(docker_kafka), topic, group)

    target = NativeTarget(docker_clickhouse, unique_name("db"))
    try:
        check_replacing_merge_tree_final(target)
    finally:
        target.drop()

"""Fixtures for the Kafka-side stream tests: per-test topic names and a topic reader."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from worker.ops.settings import WorkerSettings

#: Partitions of every topic the stream tests create.
PARTITIONS = 3


@pytest.fixture
def stream_settings(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> WorkerSettings:
    """Settings pointing at the session broker, with topic names unique to the test."""
    return WorkerSettings(
        kafka_bootstrap=kafka_bootstrap,
        kafka_session_timeout_ms=6000,
        events_topic=unique_name("events"),
        dlq_topic=unique_name("dlq"),
        catalog_topic=unique_name("catalog"),
        reprocess_topic=unique_name("reprocess"),
        topic_partitions=PARTITIONS,
    )


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, stream_settings: WorkerSettings) -> WorkerSettings:
    """`stream_settings` exported as EW_* variables, for tests that go through `cli.main`."""
    for name in (
        "kafka_bootstrap",
        "events_topic",
        "dlq_topic",
        "catalog_topic",
        "reprocess_topic",
    ):
        monkeypatch.setenv(f"EW_{name.upper()}", str(getattr(stream_settings, name)))
    monkeypatch.setenv("EW_TOPIC_PARTITIONS", str(PARTITIONS))
    return stream_settings


def read_topic(
    bootstrap: str, topic: str, expected: int, *, timeout_s: float = 15.0, settle_s: float = 0.3
) -> list[Message]:
    """Every message of `topic` from the beginning (assign, no group join).

    Reads until `expected` messages arrived and then `settle_s` passed without
    more (to catch surplus messages), or until `timeout_s`. Counts, not
    watermarks: tansu's high watermark lags.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": f"reader-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 100,
    }
    consumer = Consumer(config)
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, 0.1)
            for message in batch:
                assert message.error() is None, message.error()
                messages.append(message)
            if batch:
                quiet_since = time.monotonic()
            elif len(messages) >= expected and time.monotonic() - quiet_since >= settle_s:
                break
        return messages
    finally:
        consumer.close()

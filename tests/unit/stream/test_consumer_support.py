"""Shared consumer-loop pieces: the idle-exit rule, signal handling, consumer config."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, TopicPartition

from worker.ops.settings import WorkerSettings
from worker.ops.starting import StoppedWhileStarting, StopWhileStarting
from worker.stream.consumer_support import (
    StopOnSignals,
    describe_consumer_error,
    group_consumer_config,
    idle_long_enough,
    owned_offsets,
    release_partitions,
    take_partitions,
)


@pytest.mark.parametrize(
    ("idle_for_s", "busy", "owns_partitions", "expected"),
    [
        (2.9, False, True, False),
        (3.0, False, True, True),
        (30.0, True, True, False),  # a batch in flight is never idle
        (3.0, False, False, False),  # owning nothing (a join under way?): + 3 session timeouts
        (20.9, False, False, False),
        (21.0, False, False, True),
    ],
)
def test_idle_rule(idle_for_s: float, busy: bool, owns_partitions: bool, expected: bool) -> None:
    assert (
        idle_long_enough(
            idle_s=3.0,
            idle_for_s=idle_for_s,
            busy=busy,
            owns_partitions=owns_partitions,
            session_timeout_ms=6000,
        )
        is expected
    )


def test_no_idle_exit_unless_asked() -> None:
    assert not idle_long_enough(
        idle_s=None, idle_for_s=1e9, busy=False, owns_partitions=True, session_timeout_ms=6000
    )


def test_sigterm_inside_the_context_calls_stop_and_handlers_are_restored() -> None:
    calls: list[str] = []
    before = signal.getsignal(signal.SIGTERM)
    with StopOnSignals(lambda: calls.append("stop"), "stopping"):
        os.kill(os.getpid(), signal.SIGTERM)
    assert calls == ["stop"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_start_up_guard_stops_before_the_loop_and_is_quiet_after_it() -> None:
    calls: list[str] = []
    before = signal.getsignal(signal.SIGTERM)
    with StopWhileStarting():
        with pytest.raises(StoppedWhileStarting, match="signal 15 while starting"):
            os.kill(os.getpid(), signal.SIGTERM)
        with StopOnSignals(lambda: calls.append("stop"), "stopping"):
            os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # the loop ended: its stop already runs
    assert calls == ["stop"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_group_consumer_commits_explicitly_and_keeps_extra_settings() -> None:
    settings = WorkerSettings(
        kafka_bootstrap="b:9092",
        kafka_session_timeout_ms=6000,
        kafka_extra={"fetch.max.bytes": 2_000_000},
    )
    config = group_consumer_config(settings, "g")
    assert config["group.id"] == "g" and config["bootstrap.servers"] == "b:9092"
    assert config["enable.auto.commit"] is False and config["enable.auto.offset.store"] is False
    assert config["session.timeout.ms"] == 6000 and config["fetch.max.bytes"] == 2_000_000


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        (
            "eager",
            {"group.protocol": "classic", "partition.assignment.strategy": "range,roundrobin"},
        ),
        (
            "cooperative-sticky",
            {"group.protocol": "classic", "partition.assignment.strategy": "cooperative-sticky"},
        ),
        ("consumer", {"group.protocol": "consumer"}),
    ],
)
def test_group_protocol_setting_picks_the_librdkafka_properties(
    protocol: str, expected: dict[str, str]
) -> None:
    settings = WorkerSettings(kafka_group_protocol=protocol, kafka_session_timeout_ms=6000)
    config = group_consumer_config(settings, "g")
    chosen = {
        k: config[k] for k in ("group.protocol", "partition.assignment.strategy") if k in config
    }
    assert chosen == expected
    # KIP-848: the broker owns the session timeout; librdkafka refuses the property.
    assert ("session.timeout.ms" in config) is (protocol != "consumer")


class RecordingConsumer:
    """Records the assignment calls a rebalance callback makes (no broker involved)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        def record(partitions: list[TopicPartition] | None = None) -> None:
            self.calls.append((name, [p.partition for p in partitions or []]))

        return record


@pytest.mark.parametrize(
    ("protocol", "assign", "release"),
    [
        ("eager", "assign", ("unassign", [])),
        ("cooperative-sticky", "incremental_assign", ("incremental_unassign", [1])),
        ("consumer", "incremental_assign", ("incremental_unassign", [1])),
    ],
)
def test_partitions_are_taken_unpaused_and_released_the_protocols_way(
    protocol: str, assign: str, release: tuple[str, list[int]]
) -> None:
    settings = WorkerSettings(kafka_group_protocol=protocol)
    consumer = RecordingConsumer()
    take_partitions(consumer, settings, [TopicPartition("t", 0), TopicPartition("t", 1)])  # type: ignore[arg-type]
    release_partitions(consumer, settings, [TopicPartition("t", 1)])  # type: ignore[arg-type]
    assert consumer.calls == [(assign, [0, 1]), ("resume", [0, 1]), release]


def test_commits_cover_owned_partitions_only() -> None:
    offsets = [TopicPartition("t", 0, 10), TopicPartition("t", 1, 20), TopicPartition("u", 0, 5)]
    kept = owned_offsets(offsets, {("t", 1), ("u", 0)})
    assert [(tp.topic, tp.partition, tp.offset) for tp in kept] == [("t", 1, 20), ("u", 0, 5)]


def test_an_unreachable_broker_is_said_in_the_workers_words() -> None:
    down = describe_consumer_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert down.startswith("Kafka broker unreachable (1/1 brokers are down)")
    other = describe_consumer_error(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "no such topic"))
    assert other == "consumer error: no such topic"


def test_fetch_sizes_follow_the_batch_and_message_limits() -> None:
    settings = WorkerSettings(batch_max_bytes=8 * 1024 * 1024, max_message_bytes=2 * 1024 * 1024)
    config = group_consumer_config(settings, "g")
    assert config["fetch.max.bytes"] == 8 * 1024 * 1024
    assert config["max.partition.fetch.bytes"] == 2 * 1024 * 1024  # one message fits
    assert config["queued.max.messages.kbytes"] == 8 * 1024  # the prefetch queue: one batch
    assert config["receive.message.max.bytes"] >= config["fetch.max.bytes"] + 512


def test_fetch_sizes_tuned_in_kafka_extra_win() -> None:
    settings = WorkerSettings(kafka_extra={"queued.max.messages.kbytes": 4096})
    assert group_consumer_config(settings, "g")["queued.max.messages.kbytes"] == 4096


def test_a_batch_must_hold_the_largest_message() -> None:
    with pytest.raises(
        ValueError, match=r"EW_BATCH_MAX_BYTES .* must be at least EW_MAX_MESSAGE_BYTES"
    ):
        WorkerSettings(batch_max_bytes=1024 * 1024, max_message_bytes=2 * 1024 * 1024)


def test_a_consumer_says_broker_outages_unless_a_reporter_is_installed() -> None:
    plain = group_consumer_config(WorkerSettings(), "g")
    assert callable(plain["error_cb"])

    def reporter(error: KafkaError) -> None:
        del error

    installed = WorkerSettings.model_construct(kafka_extra={"error_cb": reporter})
    assert group_consumer_config(installed, "g")["error_cb"] is reporter

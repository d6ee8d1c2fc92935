"""BrokerReachability: two lines per outage, never a flap from a stale client report."""

from __future__ import annotations

import logging

import orjson
import pytest
from confluent_kafka import KafkaError

from worker.ops.kafka_reachability import BrokerReachability


def _stats(name: str, ts_s: float, *states: str) -> str:
    brokers = {f"b{i}": {"state": state} for i, state in enumerate(states)}
    return orjson.dumps({"name": name, "ts": int(ts_s * 1_000_000), "brokers": brokers}).decode()


class _Said:
    def __init__(self) -> None:
        self.lines: list[tuple[str, bool]] = []
        self.changes: list[bool] = []

    def reachability(self) -> BrokerReachability:
        return BrokerReachability(
            "127.0.0.1:9092",
            lambda line, down: self.lines.append((line, down)),
            on_change=self.changes.append,
        )


def test_an_outage_is_one_line_down_and_one_line_back() -> None:
    said = _Said()
    watch = said.reachability()
    watch.on_stats(_stats("consumer-1", 1, "UP"))
    watch.on_stats(_stats("consumer-1", 2, "INIT"))  # the learned broker is gone
    watch.on_stats(_stats("consumer-1", 3, "CONNECT"))
    watch.on_stats(_stats("consumer-1", 4, "UP"))
    watch.on_stats(_stats("consumer-1", 5, "UP"))
    assert [down for _, down in said.lines] == [True, False]
    assert said.lines[0][0].startswith("Kafka unreachable at 127.0.0.1:9092 (")
    assert said.lines[1][0].startswith("Kafka reachable again at 127.0.0.1:9092 after ")
    assert said.changes == [True, False] and watch.unreachable_count == 1


def test_a_stale_report_of_a_rarely_polled_client_does_not_flap() -> None:
    said = _Said()
    watch = said.reachability()
    watch.on_stats(_stats("producer-2", 1, "UP"))
    watch.on_stats(_stats("consumer-1", 1, "UP"))
    watch.on_stats(_stats("consumer-1", 10, "DOWN"))  # outage
    watch.on_stats(_stats("consumer-1", 12, "UP"))  # back
    watch.on_stats(_stats("producer-2", 11, "INIT"))  # served late: it saw the outage
    watch.on_stats(_stats("consumer-1", 13, "UP"))
    assert [down for _, down in said.lines] == [True, False]


def test_an_idle_client_that_never_connected_says_nothing() -> None:
    said = _Said()
    watch = said.reachability()
    watch.on_stats(_stats("producer-3", 1, "INIT"))
    watch.on_stats(_stats("producer-3", 9, "INIT"))
    assert said.lines == []


def test_connection_noise_is_hidden_and_other_lines_pass() -> None:
    watch = _Said().reachability()
    fail = logging.LogRecord("librdkafka", logging.ERROR, "", 0, "FAIL [rdkafka#p-1]: x", (), None)
    info = logging.LogRecord("librdkafka", logging.INFO, "", 0, "FAIL [rdkafka#p-1]: y", (), None)
    other = logging.LogRecord("librdkafka", logging.WARNING, "", 0, "CONFWARN [r]: z", (), None)
    assert [watch.filter(r) for r in (fail, info, other)] == [False, True, True]
    assert watch.hidden_lines == 1


def test_connection_errors_are_not_logged_but_other_errors_are(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = _Said().reachability()
    with caplog.at_level(logging.WARNING, logger="worker.ops.kafka_reachability"):
        watch.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
        watch.on_error(KafkaError(KafkaError._TRANSPORT))
        watch.on_error(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["kafka"]
    assert watch.unreachable_count == 0  # the state comes from statistics only

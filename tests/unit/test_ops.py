"""Health judgement, metrics registry, JSON logs and secret hygiene (no broker, no store)."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest
import structlog
from confluent_kafka import Producer

from tests.metric_names import metric_names
from worker.cli import main
from worker.ops.health import LoopHealth, StoreProbe
from worker.ops.logging import KAFKA_LOGGER, configure_logging, secret_values, with_kafka_logger
from worker.ops.metrics import Metrics
from worker.ops.settings import WorkerSettings

SASL_PASSWORD = "sasl-Pa55-word-xyz"
STORE_PASSWORD = "store-Pa55-word-xyz"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> WorkerSettings:
    monkeypatch.setenv(
        "EW_KAFKA_EXTRA",
        json.dumps(
            {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "PLAIN",
                "sasl.username": "svc",
                "sasl.password": SASL_PASSWORD,
            }
        ),
    )
    monkeypatch.setenv(
        "EW_STORE_URL", f"clickhouse://svc:{STORE_PASSWORD}@db.internal:9000/billing"
    )
    return WorkerSettings()


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level = root.level
    buffer = io.StringIO()
    handler = configure_logging("DEBUG", secrets=[SASL_PASSWORD, STORE_PASSWORD], stream=buffer)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        structlog.reset_defaults()


# -- health ----------------------------------------------------------------------


def test_idle_loop_is_live_however_long_it_waits() -> None:
    clock = FakeClock()
    health = LoopHealth(10.0, clock=clock)
    clock.now += 1000
    assert health.liveness().ok


def test_stalled_loop_with_a_batch_in_flight_fails_then_recovers() -> None:
    clock = FakeClock()
    health = LoopHealth(10.0, clock=clock)
    health.batch_started()
    clock.now += 9
    assert health.liveness().ok
    clock.now += 2
    status = health.liveness()
    assert not status.ok and "stalled" in status.detail
    health.batch_finished(committed=True)
    health.beat()
    assert health.liveness().ok


def test_spinning_loop_with_lag_and_no_commit_fails() -> None:
    clock = FakeClock()
    health = LoopHealth(10.0, clock=clock)
    health.set_assigned(3)
    health.set_backlog(500)
    for _ in range(30):  # iterating, but never committing
        clock.now += 1
        health.beat()
    status = health.liveness()
    assert not status.ok and "overdue" in status.detail
    health.set_backlog(0)
    assert health.liveness().ok


def test_readiness_needs_catalog_partitions_and_store() -> None:
    health = LoopHealth(10.0)
    assert health.readiness().detail == "catalog not loaded"
    health.catalog_loaded()
    assert health.readiness().detail == "no partitions assigned"
    health.set_assigned(2)
    assert health.readiness().detail == "store not opened"
    health.watch_store(StoreProbe(lambda: None))
    assert health.readiness().ok


def test_store_probe_times_out_and_caches() -> None:
    gate = threading.Event()
    calls: list[int] = []

    def ping() -> None:
        calls.append(1)
        gate.wait(5)

    clock = FakeClock()
    probe = StoreProbe(ping, timeout_s=0.05, cache_s=5.0, clock=clock)
    first = probe.check()
    assert not first.ok and "did not answer" in first.detail
    assert probe.check() is first  # cached
    clock.now += 6
    assert not probe.check().ok  # the hung ping is not started twice
    assert len(calls) == 1
    gate.set()
    clock.now += 6
    assert probe.check().ok


def test_failing_store_is_not_ready_and_its_error_text_stays_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def ping() -> None:
        raise RuntimeError("connection refused by db.internal:9000 for user svc")

    clock = FakeClock()
    probe = StoreProbe(ping, cache_s=5.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="worker.ops.health"):
        first = probe.check()
        clock.now += 6
        second = probe.check()
    assert (first.ok, first.detail) == (False, "store does not answer")
    assert second == first
    logged = [r.getMessage() for r in caplog.records if r.name == "worker.ops.health"]
    assert logged == [
        "readiness: the store does not answer: connection refused by db.internal:9000 for user svc"
    ]


# -- metrics ---------------------------------------------------------------------


def test_every_metric_has_the_prefix_and_registries_are_independent() -> None:
    names = metric_names()
    assert names and all(name.startswith("events_worker_") for name in names)
    first, second = Metrics(), Metrics()
    first.messages_consumed.inc(5)
    assert b"events_worker_messages_consumed_total 5.0" in first.render()
    assert b"events_worker_messages_consumed_total 0.0" in second.render()


def test_lag_gauges_follow_the_assignment() -> None:
    metrics = Metrics()
    metrics.set_assignment([("events", 0), ("events", 1)])
    metrics.set_lag("events", 0, 10)
    metrics.set_lag("events", 1, 3)
    metrics.set_assignment([("events", 1)])
    text = metrics.render().decode()
    assert 'events_worker_consumer_lag{partition="1",topic="events"} 3.0' in text
    assert 'partition="0"' not in text
    assert "events_worker_assigned_partitions 1.0" in text


def test_reprocess_metrics_keep_a_fixed_state_label_set() -> None:
    metrics = Metrics()
    metrics.reprocess.set_requests({"running": 1, "completed": 4}, events={"completed": 900})
    metrics.reprocess.republished_events(900)
    text = metrics.render().decode()
    assert 'events_worker_reprocess_requests{state="running"} 1.0' in text
    assert 'events_worker_reprocess_events{state="completed"} 900.0' in text
    assert "events_worker_reprocess_events_republished_total 900.0" in text
    with pytest.raises(ValueError, match="unknown reprocess state"):
        metrics.reprocess.set_requests({"req-123": 1})


# -- logs and secrets --------------------------------------------------------------


def test_logs_are_json_with_context_and_secrets_scrubbed(
    json_logs: io.StringIO, secret_env: WorkerSettings
) -> None:
    log = logging.getLogger("worker.test")
    log.info("settings", extra={"settings": secret_env.redacted()})
    log.warning(
        "dead letter",
        extra={"topic": "events", "partition": 2, "offset": 41, "tenant": "t1", "reason": "x"},
    )
    log.error("store failed: %s", f"clickhouse://svc:{STORE_PASSWORD}@db.internal:9000")
    structlog.get_logger("worker.structured").info("structured", answer=42)
    output = json_logs.getvalue()
    lines = [json.loads(line) for line in output.splitlines()]
    assert [line["event"] for line in lines][:2] == ["settings", "dead letter"]
    assert lines[1] | {"timestamp": None} == {
        "event": "dead letter",
        "topic": "events",
        "partition": 2,
        "offset": 41,
        "tenant": "t1",
        "reason": "x",
        "level": "warning",
        "logger": "worker.test",
        "timestamp": None,
    }
    assert lines[0]["settings"]["kafka_extra"]["sasl.password"] == "***"
    assert "***@db.internal" in lines[2]["event"]
    assert lines[3]["answer"] == 42 and lines[3]["logger"] == "worker.structured"
    assert SASL_PASSWORD not in output and STORE_PASSWORD not in output


def test_librdkafka_lines_are_bridged_into_the_json_logs(
    json_logs: io.StringIO, secret_env: WorkerSettings
) -> None:
    settings = with_kafka_logger(secret_env.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"}))
    producer = Producer(settings.kafka_config(**{"debug": "conf,broker"}))
    producer.poll(1.0)
    producer.flush(0.1)
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    assert any(line["logger"] == KAFKA_LOGGER for line in lines)
    assert SASL_PASSWORD not in json_logs.getvalue()


#: librdkafka properties (CONFIGURATION.md) whose values are secrets, whatever
#: their names say: `sasl.oauthbearer.config` carries `clientSecret=...`.
SECRET_KAFKA_PROPERTIES = (
    "sasl.password",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
    "sasl.oauthbearer.token.endpoint.url",
    "sasl.kerberos.keytab",
    "sasl.kerberos.kinit.cmd",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl_key",
    "ssl.certificate.pem",
    "ssl.keystore.password",
    "ssl.ca.pem",
    "SASL.PASSWORD",
)
PUBLIC_KAFKA_PROPERTIES = (
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "ssl.ca.location",
    "ssl.endpoint.identification.algorithm",
    "client.id",
)


def test_every_secret_looking_librdkafka_property_is_redacted_and_scrubbed() -> None:
    extra = {key: f"value-of-{index}-xyz" for index, key in enumerate(SECRET_KAFKA_PROPERTIES)}
    public = {key: f"public-{index}" for index, key in enumerate(PUBLIC_KAFKA_PROPERTIES)}
    # Unvalidated: librdkafka would refuse these placeholder values (and ssl_key)
    # at start-up; what is checked here is only how settings are shown.
    settings = WorkerSettings.model_construct(kafka_extra=extra | public)
    shown = settings.redacted()["kafka_extra"]
    assert {key: shown[key] for key in extra} == dict.fromkeys(extra, "***")
    assert {key: shown[key] for key in public} == public
    assert set(secret_values(settings)) == set(extra.values())


def test_secret_values_are_found_in_settings(secret_env: WorkerSettings) -> None:
    assert set(secret_values(secret_env)) == {SASL_PASSWORD, STORE_PASSWORD}
    assert SASL_PASSWORD not in repr(secret_env) and STORE_PASSWORD not in repr(secret_env)


@pytest.mark.parametrize(
    "argv", [["--help"], ["run", "usage", "--help"], ["run", "reprocess", "--help"]]
)
def test_help_never_shows_secrets(
    argv: list[str], secret_env: WorkerSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    captured = capsys.readouterr()
    assert "usage:" in captured.out
    for secret in (SASL_PASSWORD, STORE_PASSWORD):
        assert secret not in captured.out and secret not in captured.err


def test_bad_log_level_is_a_one_line_user_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EW_LOG_LEVEL", "chatty")
    assert main(["run", "usage", "--bootstrap", "127.0.0.1:1"]) == 2
    assert "EW_LOG_LEVEL" in capsys.readouterr().err


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Undo the JSON logging a CLI run installs on the root logger."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in set(root.handlers) - set(handlers):
            root.removeHandler(handler)
        root.setLevel(level)
        structlog.reset_defaults()


def test_busy_http_port_is_a_one_line_user_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], restored_logging: None
) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        monkeypatch.setenv("EW_HTTP_PORT", str(busy.getsockname()[1]))
        assert main(["run", "usage", "--bootstrap", "127.0.0.1:1"]) == 2
    assert "EW_HTTP_PORT" in capsys.readouterr().err


def test_http_endpoints_listen_on_loopback_unless_told(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], restored_logging: None
) -> None:
    assert WorkerSettings().http_host == "127.0.0.1"
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: binding it fails.
    monkeypatch.setenv("EW_HTTP_HOST", "192.0.2.1")
    assert main(["run", "usage", "--bootstrap", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "EW_HTTP_HOST" in err and "192.0.2.1" in err


def test_a_consumer_without_catalog_is_ready_without_one() -> None:
    health = LoopHealth(10.0, needs_catalog=False)
    health.set_assigned(1)
    health.watch_store(StoreProbe(lambda: None))
    assert health.readiness().ok

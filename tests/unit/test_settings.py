"""Settings: EW_* variables, flags on top, secrets never shown."""

from __future__ import annotations

import json

import pytest

from worker.cli import UserError, build_parser, settings_from
from worker.ops.settings import WorkerSettings
from worker.store.url import redact_url


def test_environment_variables_configure_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EW_KAFKA_BOOTSTRAP", "broker-1:9092")
    monkeypatch.setenv("EW_KAFKA_SESSION_TIMEOUT_MS", "6000")
    # A complete SASL/PLAIN set: librdkafka refuses SASL_SSL without a usable mechanism.
    sasl = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "u",
        "sasl.password": "p",
    }
    monkeypatch.setenv("EW_KAFKA_EXTRA", json.dumps(sasl))
    settings = WorkerSettings()
    assert settings.kafka_bootstrap == "broker-1:9092"
    assert settings.kafka_session_timeout_ms == 6000
    assert settings.kafka_config()["security.protocol"] == "SASL_SSL"


def test_flags_win_over_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EW_KAFKA_BOOTSTRAP", "from-env:9092")
    monkeypatch.setenv("EW_STORE_URL", "chdb:///from-env")
    args = build_parser().parse_args(
        ["run", "usage", "--bootstrap", "from-flag:9092", "--store", "chdb:///from-flag"]
    )
    settings = settings_from(args)
    assert (settings.kafka_bootstrap, settings.store_url) == ("from-flag:9092", "chdb:///from-flag")


def test_invalid_settings_are_one_line_user_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EW_KAFKA_EXTRA", "not json")
    with pytest.raises(UserError, match="EW_KAFKA_EXTRA"):
        settings_from(build_parser().parse_args(["demo"]))


def test_group_protocol_is_a_setting_and_not_an_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WorkerSettings().kafka_group_protocol == "eager"
    monkeypatch.setenv("EW_KAFKA_GROUP_PROTOCOL", "consumer")
    assert settings_from(build_parser().parse_args(["demo"])).kafka_group_protocol == "consumer"
    monkeypatch.setenv("EW_KAFKA_GROUP_PROTOCOL", "cooperative")
    with pytest.raises(UserError, match=r"EW_KAFKA_GROUP_PROTOCOL: .*cooperative-sticky"):
        settings_from(build_parser().parse_args(["run", "usage"]))
    monkeypatch.setenv("EW_KAFKA_GROUP_PROTOCOL", "eager")
    monkeypatch.setenv("EW_KAFKA_EXTRA", '{"partition.assignment.strategy": "roundrobin"}')
    with pytest.raises(UserError, match=r"EW_KAFKA_EXTRA.*EW_KAFKA_GROUP_PROTOCOL"):
        settings_from(build_parser().parse_args(["run", "usage"]))


@pytest.mark.parametrize(
    ("key", "instead"),
    [
        ("bootstrap.servers", "--bootstrap or EW_KAFKA_BOOTSTRAP"),
        ("group.id", "EW_USAGE_GROUP and EW_REPROCESS_GROUP"),
        ("session.timeout.ms", "EW_KAFKA_SESSION_TIMEOUT_MS"),
        ("max.poll.interval.ms", "EW_KAFKA_SESSION_TIMEOUT_MS"),
        ("enable.auto.commit", "commits offsets itself"),
        ("enable.auto.offset.store", "commits offsets itself"),
        ("auto.offset.reset", "earliest"),
        ("acks", "all in-sync replicas"),
        ("enable.idempotence", "always idempotent"),
    ],
)
def test_an_extra_the_worker_sets_itself_stops_the_command(
    key: str, instead: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the worker's own value silently won (and an extra
    ``bootstrap.servers`` won over ``--bootstrap``)."""
    monkeypatch.setenv("EW_KAFKA_EXTRA", json.dumps({"linger.ms": 5, key: "x"}))
    with pytest.raises(UserError) as raised:
        settings_from(build_parser().parse_args(["run", "usage"]))
    assert f"EW_KAFKA_EXTRA may not set {key}: " in str(raised.value)
    assert instead in str(raised.value)


def test_cluster_comes_from_the_environment_or_the_migrate_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert WorkerSettings().cluster_layout is None
    monkeypatch.setenv("EW_CLICKHOUSE_CLUSTER", "from_env")
    layout = WorkerSettings().cluster_layout
    assert layout is not None and (layout.name, layout.replicated) == ("from_env", True)
    flagged = settings_from(build_parser().parse_args(["migrate", "--cluster", "from_flag"]))
    assert flagged.cluster_layout is not None and flagged.cluster_layout.name == "from_flag"
    monkeypatch.setenv("EW_CLICKHOUSE_CLUSTER", "prod'; DROP TABLE events")
    with pytest.raises(UserError, match=r"EW_CLICKHOUSE_CLUSTER: .*invalid cluster name"):
        settings_from(build_parser().parse_args(["run", "usage"]))


def test_secrets_are_redacted_from_loggable_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "EW_KAFKA_EXTRA",
        '{"sasl.password": "hunter2", "ssl.key.password": "k", "linger.ms": 7}',
    )
    monkeypatch.setenv("EW_STORE_URL", "clickhouse://billing:s3cret@ch:9000/prod")
    shown = WorkerSettings().redacted()
    text = repr(shown) + repr(WorkerSettings())
    assert "hunter2" not in text and "s3cret" not in text and "'k'" not in text
    assert shown["kafka_extra"]["linger.ms"] == 7
    assert shown["store_url"] == "clickhouse://billing:***@ch:9000/prod"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("chdb:///var/lib/ew", "chdb:///var/lib/ew"),
        ("clickhouse://u@h:9000/db", "clickhouse://u@h:9000/db"),
        ("clickhouse://u:p@h:notaport/db", "clickhouse://u:***@h:notaport/db"),
    ],
)
def test_redact_url_hides_only_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize("seconds", ["-1", "nan", "inf", "soon"])
def test_exit_when_idle_must_be_a_finite_non_negative_number(
    seconds: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["run", "usage", "--exit-when-idle", seconds])
    assert exited.value.code == 2
    assert "--exit-when-idle" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("bootstrap", "expected"),
    [
        pytest.param(None, 6000, id="default-is-local"),
        pytest.param("localhost:9092,127.0.0.1:9093", 6000, id="all-loopback"),
        pytest.param("127.0.0.1:9092,kafka-1:9092", 45000, id="one-remote"),
        pytest.param("kafka-1.prod:9092", 45000, id="remote"),
    ],
)
def test_session_timeout_defaults_to_a_local_value_only_for_loopback_brokers(
    bootstrap: str | None, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EW_KAFKA_SESSION_TIMEOUT_MS", raising=False)
    if bootstrap is None:
        monkeypatch.delenv("EW_KAFKA_BOOTSTRAP", raising=False)
    else:
        monkeypatch.setenv("EW_KAFKA_BOOTSTRAP", bootstrap)
    assert WorkerSettings().kafka_session_timeout_ms == expected


def test_an_explicit_session_timeout_wins_on_a_local_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EW_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    monkeypatch.setenv("EW_KAFKA_SESSION_TIMEOUT_MS", "45000")
    assert WorkerSettings().kafka_session_timeout_ms == 45000


def test_engine_is_the_core_unless_python_is_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(["run", "usage"])
    assert settings_from(args).engine == "core"
    monkeypatch.setenv("EW_ENGINE", "python")
    assert settings_from(args).engine == "python"
    monkeypatch.setenv("EW_ENGINE", "rust")
    with pytest.raises(UserError, match=r"EW_ENGINE: Input should be 'python' or 'core'"):
        settings_from(args)

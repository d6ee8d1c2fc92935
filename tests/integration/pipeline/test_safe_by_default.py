"""Issue 15 through the command line: a typo stops the worker before it consumes.

Each mistake class: exit 2, exactly one stderr line naming the offending
field or value, no traceback, nothing committed (no consumer-group offset,
no store written). `catalog check` runs in-process (`cli.main`, no broker
needed); `run usage` runs as a subprocess against the session's real broker
and an embedded ClickHouse directory.
"""

from __future__ import annotations

import copy
import json
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.catalog_cases import (
    UNKNOWN_FIELDS,
    UNKNOWN_VALUES,
    UNRATABLE_PRICES,
    document,
    line_item,
    price,
    subscription,
)
from tests.integration.kafka_broker import apache_kafka_selected
from tests.integration.workers import (
    produce,
    run_cli,
    settings_from_env,
    start_cli,
    worker_env,
    write_catalog,
)
from worker.cli import main
from worker.samples.synthetic import build_catalog, generate_events
from worker.stream.topics import ensure_topics

# -- catalog check: every mistake class ---------------------------------------


def _check(tmp_path: Path, catalog: Any, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = write_catalog(tmp_path, catalog)
    code = main(["catalog", "check", str(path)])
    captured = capsys.readouterr()
    if code != 0:
        assert captured.out == ""
    return code, captured.err


def _one_line(stderr: str) -> str:
    assert stderr.count("\n") == 1 and stderr.endswith("\n"), stderr
    assert "Traceback" not in stderr
    assert stderr.startswith("events-worker: ")
    return stderr


@pytest.mark.parametrize(("catalog", "location", "entity"), UNKNOWN_FIELDS)
def test_catalog_check_names_an_unknown_field(
    catalog: dict[str, Any],
    location: str,
    entity: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = _check(tmp_path, catalog, capsys)
    assert code == 2
    line = _one_line(err)
    assert f"{location} (" in line and entity in line
    assert f"unknown field {location.rsplit('.', 1)[-1]!r}" in line


@pytest.mark.parametrize(("catalog", "location", "value"), UNKNOWN_VALUES)
def test_catalog_check_names_an_unknown_value_of_a_closed_set(
    catalog: dict[str, Any],
    location: str,
    value: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = _check(tmp_path, catalog, capsys)
    assert code == 2
    assert f"{location} (" in _one_line(err) and f"unknown value {value!r}" in err


@pytest.mark.parametrize(("fields", "message"), UNRATABLE_PRICES)
def test_catalog_check_names_an_unratable_price(
    fields: dict[str, Any], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _check(tmp_path, document(prices=[price(**fields)]), capsys)
    assert code == 2
    assert "price 'p_api'" in _one_line(err) and message in err


def test_catalog_check_summarises_several_documents_with_totals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = [
        build_catalog(customers=4, line_items_per_customer=2),
        document("t2", subscriptions=[subscription(line_items=[line_item(), line_item("li_2")])]),
    ]
    path = write_catalog(tmp_path, catalog)
    assert main(["catalog", "check", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"catalog {path} is valid: 2 tenant/environment documents"
    assert out[1].startswith("  t1/prod: 4 customers, 4 subscriptions, 8 line items, ")
    assert out[2].startswith("  t2/prod: 1 customers, 1 subscriptions, 2 line items, ")
    assert out[3].startswith("  total: 5 customers, 5 subscriptions, 10 line items, ")


def test_catalog_check_prints_counts_by_price_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = document(
        "t2", subscriptions=[subscription(line_items=[line_item(), line_item("l2")])]
    )
    path = write_catalog(tmp_path, catalog)
    assert main(["catalog", "check", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"catalog {path} is valid: 1 tenant/environment documents",
        "  t2/prod: 1 customers, 1 subscriptions, 2 line items, 1 meters, 1 prices, "
        "0 features (by price model: FLAT_FEE 2)",
    ]


def test_catalog_check_refuses_an_empty_catalog_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, err = _check(tmp_path, [], capsys)
    assert code == 2 and "has no customers" in _one_line(err)
    assert "EW_ALLOW_EMPTY_CATALOG=true" in err
    monkeypatch.setenv("EW_ALLOW_EMPTY_CATALOG", "true")
    assert _check(tmp_path, [], capsys) == (0, "")


# -- run usage: stops before consuming -----------------------------------------


def _nothing_committed(env: dict[str, str], partitions: int) -> None:
    consumer = Consumer(
        {"bootstrap.servers": env["EW_KAFKA_BOOTSTRAP"], "group.id": env["EW_USAGE_GROUP"]}
    )
    try:
        topic = env["EW_EVENTS_TOPIC"]
        offsets = consumer.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=10
        )
    finally:
        consumer.close()
    assert [tp.offset for tp in offsets] == [-1001] * partitions  # OFFSET_INVALID: none


@pytest.fixture
def with_events(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> Callable[[], dict[str, str]]:
    def make() -> dict[str, str]:
        env = worker_env(kafka_bootstrap, unique_name)
        settings = settings_from_env(env, partitions=3)
        ensure_topics(settings, {settings.events_topic: 3})
        produce(settings, generate_events(build_catalog(customers=3), 30, seed=5))
        return env

    return make


def _bad_line_item() -> dict[str, Any]:
    catalog = copy.deepcopy(build_catalog(customers=3))  # it shares the sample price dicts
    catalog["subscriptions"][1]["line_items"][0]["free_unit"] = "100"
    return catalog


def _bad_status() -> dict[str, Any]:
    catalog = copy.deepcopy(build_catalog(customers=3))  # it shares the sample price dicts
    catalog["subscriptions"][2]["status"] = "actve"
    return catalog


def _bad_tiers() -> dict[str, Any]:
    catalog = copy.deepcopy(build_catalog(customers=3))  # it shares the sample price dicts
    tiered = next(p for p in catalog["prices"] if p["billing_model"] == "TIERED")
    tiered["tiers"] = list(reversed(tiered["tiers"]))
    return catalog


@pytest.mark.parametrize(
    ("catalog", "named"),
    [
        pytest.param(_bad_line_item, "unknown field 'free_unit'", id="unknown-field"),
        pytest.param(_bad_status, "unknown value 'actve'", id="unknown-status"),
        pytest.param(_bad_tiers, "only the last tier may be unbounded", id="unratable-price"),
        pytest.param(lambda: [], "has no customers", id="empty-catalog"),
    ],
)
def test_run_usage_with_a_bad_catalog_file_stops_before_consuming(
    catalog: Callable[[], Any],
    named: str,
    with_events: Callable[[], dict[str, str]],
    tmp_path: Path,
) -> None:
    env = with_events()
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(catalog()))
    store = tmp_path / "store"
    result = run_cli(
        env, "run", "usage", "--store", f"chdb://{store}", "--catalog", str(path),
        "--exit-when-idle", "1",
    )  # fmt: skip
    assert result.returncode == 2
    assert named in _one_line(result.stderr.decode())
    assert result.stdout == b""
    assert not store.exists()  # the store was not even opened
    _nothing_committed(env, 3)


def test_run_usage_on_an_empty_catalog_topic_does_not_consume_and_exits_2_when_idle(
    with_events: Callable[[], dict[str, str]], tmp_path: Path
) -> None:
    env = with_events()
    result = run_cli(
        env, "run", "usage", "--store", f"chdb://{tmp_path / 'store'}", "--exit-when-idle", "1",
    )  # fmt: skip
    assert result.returncode == 2
    stderr = result.stderr.decode()
    last = stderr.splitlines()[-1]
    assert "Traceback" not in stderr
    assert last.startswith("events-worker: catalog topic ") and "has no customers" in last
    assert "gave up after 1s" in last
    _nothing_committed(env, 3)


def test_sigterm_while_waiting_for_a_catalog_exits_0_with_one_line_and_commits_nothing(
    with_events: Callable[[], dict[str, str]], tmp_path: Path
) -> None:
    """DESIGN §9: SIGTERM exits 0, also before the consumer loop runs (here:
    waiting for a catalog); Python's default would end the process with -15."""
    env = {**with_events(), "EW_LOG_LEVEL": "INFO"}
    worker = start_cli(env, "run", "usage", "--store", f"chdb://{tmp_path / 'store'}")
    lines: queue.Queue[str] = queue.Queue()
    assert worker.stderr is not None
    stderr = worker.stderr

    def read() -> None:
        for line in iter(stderr.readline, b""):
            lines.put(line.decode())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    said: list[str] = []
    try:
        while not any("has no customers" in line for line in said):
            said.append(lines.get(timeout=60))  # the wait for a catalog has begun
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, "".join(said)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)
    reader.join(10)
    while not lines.empty():
        said.append(lines.get())
    assert "Traceback" not in "".join(said)
    assert said[-1] == (
        "events-worker: stopped by signal 15 while starting: nothing was consumed or committed\n"
    )
    _nothing_committed(env, 3)


# -- configuration errors: every command ----------------------------------------

#: One invocation of every command that builds settings (all of them).
COMMANDS = [
    pytest.param(["migrate"], id="migrate"),
    pytest.param(["run", "usage", "--exit-when-idle", "1"], id="run-usage"),
    pytest.param(["run", "reprocess", "--exit-when-idle", "1"], id="run-reprocess"),
    pytest.param(["produce", "events.jsonl"], id="produce"),
    pytest.param(["catalog", "publish", "catalog.json"], id="catalog-publish"),
    pytest.param(["catalog", "check", "catalog.json"], id="catalog-check"),
    pytest.param(
        [
            *("reprocess", "request", "--tenant", "t", "--environment", "e"),
            *("--start", "2026-01-01", "--end", "2026-02-01"),
        ],
        id="reprocess-request",
    ),
    pytest.param(
        ["reprocess", "status", "r1", "--tenant", "t", "--environment", "e"],
        id="reprocess-status",
    ),
    pytest.param(["query", "line-items", "--tenant", "t", "--environment", "e"], id="query"),
]

#: (variable, value, what the one line must name).
BAD_SETTINGS = [
    pytest.param(
        "EW_KAFKA_EXTRA",
        '{"sesion.timeout.ms": 6000}',
        "EW_KAFKA_EXTRA: librdkafka refuses it: "
        'No such configuration property: "sesion.timeout.ms"',
        id="extra-unknown-key",
    ),
    pytest.param(
        "EW_KAFKA_EXTRA",
        '{"security.protocol": "SASL_SSLX"}',
        'Invalid value "SASL_SSLX" for configuration property "security.protocol"',
        id="extra-bad-value",
    ),
    pytest.param(
        "EW_KAFKA_EXTRA",
        '{"fetch.max.bytes": 1}',
        "`fetch.max.bytes` must be >= `message.max.bytes`",
        id="extra-inconsistent-values",
    ),
    pytest.param(
        "EW_KAFKA_EXTRA",
        '{"bootstrap.servers": "other-cluster:9092"}',
        "EW_KAFKA_EXTRA may not set bootstrap.servers: "
        "set the brokers with --bootstrap or EW_KAFKA_BOOTSTRAP",
        id="extra-bootstrap-servers",
    ),
    pytest.param(
        "EW_STORE_URL",
        "chdb:///tmp/ew-store?databse=billing",
        "EW_STORE_URL: invalid store URL 'chdb:///tmp/ew-store?databse=billing' "
        "(unknown parameter 'databse'; known: database)",
        id="store-url-unknown-parameter",
    ),
    pytest.param(
        "EW_STORE_URL",
        "chdb:/./store",
        "(write chdb:// (two slashes) before the path or host)",
        id="store-url-one-slash",
    ),
    pytest.param(
        "EW_STORE_URL",
        "clickhouse://h:9000/db?secure=yes",
        "secure must be one of 0, 1, false, true",
        id="store-url-bad-secure",
    ),
    pytest.param(
        "EW_TOPIC_REPLICATION_FACTOR",
        "0",
        "EW_TOPIC_REPLICATION_FACTOR: must be -1 (the broker's default.replication.factor) or >= 1",
        id="replication-factor-zero",
    ),
    pytest.param(
        "EW_CREATE_TOPICS",
        "maybe",
        "EW_CREATE_TOPICS: Input should be a valid boolean",
        id="create",
    ),
]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("variable", "value", "named"), BAD_SETTINGS)
def test_a_bad_setting_stops_every_command_with_one_line(
    command: list[str],
    variable: str,
    value: str,
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EW_KAFKA_BOOTSTRAP", "127.0.0.1:1")  # never reached
    monkeypatch.setenv(variable, value)
    assert main(command) == 2
    captured = capsys.readouterr()
    assert named in _one_line(captured.err)
    assert captured.out == ""
    assert list(tmp_path.iterdir()) == []  # no store, no data directory


def test_a_store_flag_typo_names_the_flag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["migrate", "--store", f"chdb://{tmp_path}/s?databse=x"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("events-worker: invalid settings: --store: invalid store URL")
    assert not (tmp_path / "s").exists()


# -- --exit-when-idle is honest --------------------------------------------------


def test_exit_when_idle_without_ever_owning_a_partition_exits_3_with_the_reason(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    env = worker_env(kafka_bootstrap, unique_name)
    # One partition, kept by its owner across the rebalance (sticky): the
    # second worker of the group can never get one.
    env["EW_TOPIC_PARTITIONS"] = "1"
    env["EW_KAFKA_GROUP_PROTOCOL"] = "cooperative-sticky"
    settings = settings_from_env(env, partitions=1)
    ensure_topics(settings, {settings.events_topic: 1})
    catalog = build_catalog(customers=3)
    catalog_file = write_catalog(tmp_path, catalog)
    produce(settings, generate_events(catalog, 20, seed=3))
    owner = start_cli(
        env, "run", "usage", "--store", f"chdb://{tmp_path / 'a'}", "--catalog", str(catalog_file)
    )
    try:
        _wait_for_commit(env, 20)  # the owner has the partition
        second = run_cli(
            {**env, "EW_KAFKA_SESSION_TIMEOUT_MS": "3000"},
            "run", "usage", "--store", f"chdb://{tmp_path / 'b'}",
            "--catalog", str(catalog_file), "--exit-when-idle", "1",
        )  # fmt: skip
    finally:
        owner.terminate()
        owner.wait(60)
    assert second.returncode == 3, second.stderr.decode()[-2000:]
    last = second.stderr.decode().splitlines()[-1]
    assert "Traceback" not in second.stderr.decode()
    assert last.startswith(
        f"events-worker: never received a partition of {env['EW_EVENTS_TOPIC']} "
        f"in group {env['EW_USAGE_GROUP']} within "
    )
    assert "nothing was consumed" in last


def _wait_for_commit(env: dict[str, str], offset: int, timeout_s: float = 60) -> None:
    """Block until the usage group committed `offset` on partition 0 (polling the broker)."""
    consumer = Consumer(
        {"bootstrap.servers": env["EW_KAFKA_BOOTSTRAP"], "group.id": env["EW_USAGE_GROUP"]}
    )
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            (committed,) = consumer.committed([TopicPartition(env["EW_EVENTS_TOPIC"], 0)], 5)
            if committed.offset >= offset:
                return
            consumer.poll(0.5)  # waits between asks; nothing is subscribed
        raise AssertionError(f"offset {offset} not committed within {timeout_s}s")
    finally:
        consumer.close()


# -- topics for real clusters ------------------------------------------------------


def _topic_replicas(bootstrap: str, topic: str) -> list[int] | None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return None
    return [len(p.replicas) for _, p in sorted(metadata.partitions.items())]


def test_with_topic_creation_off_a_missing_topic_stops_run_usage_and_nothing_is_created(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    env = {**worker_env(kafka_bootstrap, unique_name), "EW_CREATE_TOPICS": "false"}
    catalog_file = write_catalog(tmp_path, build_catalog(customers=2))
    result = run_cli(
        env, "run", "usage", "--store", f"chdb://{tmp_path / 's'}", "--catalog",
        str(catalog_file), "--exit-when-idle", "1",
    )  # fmt: skip
    assert result.returncode == 2
    line = _one_line(result.stderr.decode())
    assert env["EW_EVENTS_TOPIC"] in line and env["EW_CATALOG_TOPIC"] in line
    assert "do not exist and EW_CREATE_TOPICS is false" in line
    assert _topic_replicas(kafka_bootstrap, env["EW_EVENTS_TOPIC"]) is None


def test_topics_get_the_configured_partitions_and_replication_factor(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    env = {
        **worker_env(kafka_bootstrap, unique_name),
        "EW_TOPIC_PARTITIONS": "2",
        "EW_TOPIC_REPLICATION_FACTOR": "3",  # tansu records any factor (one node serves all)
    }
    catalog_file = write_catalog(tmp_path, build_catalog(customers=2))
    published = run_cli(env, "catalog", "publish", str(catalog_file))
    if apache_kafka_selected():
        # A real one-node cluster refuses three copies: said in one line that
        # names the setting, and the topic is not created with fewer.
        lines = published.stderr.decode().strip().splitlines()
        assert published.returncode != 0 and len(lines) == 1, lines
        assert "EW_TOPIC_REPLICATION_FACTOR" in lines[0] and "Traceback" not in lines[0]
        assert _topic_replicas(kafka_bootstrap, env["EW_CATALOG_TOPIC"]) is None
        env["EW_TOPIC_REPLICATION_FACTOR"] = "1"
        env["EW_CATALOG_TOPIC"] = unique_name("catalog1")
        assert run_cli(env, "catalog", "publish", str(catalog_file)).returncode == 0
        assert _topic_replicas(kafka_bootstrap, env["EW_CATALOG_TOPIC"]) == [1, 1]
    else:
        assert published.returncode == 0, published.stderr.decode()
        assert _topic_replicas(kafka_bootstrap, env["EW_CATALOG_TOPIC"]) == [3, 3]
    env["EW_TOPIC_REPLICATION_FACTOR"] = "-1"  # the default: the broker's (1 here)
    env["EW_CATALOG_TOPIC"] = unique_name("catalog")
    assert run_cli(env, "catalog", "publish", str(catalog_file)).returncode == 0
    assert _topic_replicas(kafka_bootstrap, env["EW_CATALOG_TOPIC"]) == [1, 1]


# -- an empty catalog topic: not ready, said periodically, consumed once filled -----


def test_an_empty_catalog_topic_is_waited_for_with_readyz_saying_why(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import threading

    from worker.domain.catalog import load_catalog_file
    from worker.ops.health import LoopHealth
    from worker.stream.catalog_guard import wait_for_entities
    from worker.stream.catalog_source import CatalogPublisher, CatalogTopicSource

    settings = settings_from_env(worker_env(kafka_bootstrap, unique_name), partitions=1)
    ensure_topics(settings, {settings.catalog_topic: 1})
    health = LoopHealth(60.0)
    source = CatalogTopicSource(settings, idle_gap_s=0.3, debounce_s=0.2)
    waited: list[Any] = []
    try:
        empty = source.load(timeout_s=15)
        assert empty.customer_count == 0
        waiter = threading.Thread(
            target=lambda: waited.append(
                wait_for_entities(
                    source, empty, health=health, give_up_after_s=None, poll_s=0.2, log_every_s=0.2
                )
            )
        )
        with caplog.at_level("WARNING", logger="worker.stream.catalog_guard"):
            waiter.start()
            while len(caplog.records) < 2:  # the cause, said again while waiting
                waiter.join(0.1)
                assert waiter.is_alive()
            readiness = health.readiness()
            assert not readiness.ok
            assert readiness.detail.startswith(f"catalog topic {settings.catalog_topic} has no ")
            publisher = CatalogPublisher(settings)
            publisher.upsert_documents(
                load_catalog_file(str(write_catalog(tmp_path, build_catalog(customers=2))))
            )
            assert publisher.flush(10).failed == 0
            waiter.join(30)
        assert not waiter.is_alive()
        (index,) = waited
        assert index.customer_count == 2
        assert health.readiness().detail == "no partitions assigned"  # past the catalog check
        assert all("has no customers" in r.getMessage() for r in caplog.records)
    finally:
        source.close()

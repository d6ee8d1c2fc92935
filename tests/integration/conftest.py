"""Real-infrastructure fixtures: a Kafka-protocol broker and ClickHouse (DESIGN.md §2).

Kafka: `EW_TEST_KAFKA_BOOTSTRAP` (host:port) when set; else, under
`EW_TEST_BROKER=apache-kafka` (`make test-kafka`), one Apache Kafka 4 broker
for the session (`kafka_broker.py`; only the tests that use Kafka run);
else one local tansu broker for the whole session. ClickHouse: one embedded
chdb directory for the session with a fresh database per test, and one
ClickHouse server over the native protocol: `EW_TEST_CLICKHOUSE_URL`
(clickhouse://user:pass@host:port/db) when set, else a local server for the
session (chdb's clickhouse-local, listening: `worker.dev.clickhouse_server`).
`clickhouse_target` and `store_under_test` run each test on both. Docker fixtures
(`docker_kafka`, `docker_clickhouse`) use testcontainers and skip when no
Docker engine answers.

Integration tests never mock Kafka or ClickHouse.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.kafka_broker import ApacheKafkaBroker, apache_kafka_selected
from tests.integration.support import (
    CHDB_TEST_CLUSTER,
    CLICKHOUSE_CLUSTER_ENV,
    CLICKHOUSE_ENV,
    KAFKA_ENV,
    ChdbTarget,
    ClickHouseTarget,
    NativeTarget,
    ServedClickHouse,
    chdb_cluster_config,
    clickhouse_kinds,
    client_config,
    docker_unavailable_reason,
    producer_config,
)
from worker.dev.clickhouse_server import LocalClickHouseServer
from worker.dev.local_broker import LocalTansuBroker

#: Images for the Docker fixtures (pulled by the engine, never at import).
KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:25.8"


# -- Kafka -------------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On Apache Kafka (`make test-kafka`), run only the tests that use a broker."""
    if not apache_kafka_selected():
        return
    uses = {"kafka_bootstrap", "apache_kafka"}
    kept = [item for item in items if uses.intersection(getattr(item, "fixturenames", ()))]
    deselected = [item for item in items if item not in kept]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


#: The Apache Kafka version the session's broker ran, for the terminal summary.
_KAFKA_RAN = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def apache_kafka(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApacheKafkaBroker]:
    """The session's Apache Kafka broker (`make test-kafka`); tests that need its
    features (CreatePartitions, compaction, a restart on the same log directory)
    skip on tansu, and fail when `make test-kafka` cannot start it."""
    if not apache_kafka_selected():
        pytest.skip("needs Apache Kafka: run `make test-kafka`")
    with ApacheKafkaBroker(tmp_path_factory.mktemp("apache-kafka")) as broker:
        request.config.stash[_KAFKA_RAN] = f"{broker.version} (jars in {broker.lib})"
        yield broker


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Name the Apache Kafka version that ran (shown with -q too, unlike the header)."""
    ran = config.stash.get(_KAFKA_RAN, None)
    if ran is not None:
        terminalreporter.write_line(f"kafka: the tests ran on Apache Kafka {ran}")


@pytest.fixture(scope="session")
def kafka_bootstrap(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`bootstrap.servers` of a real broker, shared by the session."""
    external = os.environ.get(KAFKA_ENV)
    if external:
        yield external
        return
    if apache_kafka_selected():
        broker: ApacheKafkaBroker = request.getfixturevalue("apache_kafka")
        yield broker.bootstrap
        return
    log_path = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with LocalTansuBroker(log_path=log_path) as broker:
        yield broker.bootstrap


@pytest.fixture
def kafka_client_config(kafka_bootstrap: str) -> dict[str, Any]:
    """librdkafka settings for test clients (consumer-ready; see `kafka_producer_config`).

    `session.timeout.ms` is 6000: tansu makes a group's first join wait half of it.
    """
    return client_config(kafka_bootstrap)


@pytest.fixture
def kafka_producer_config(kafka_client_config: dict[str, Any]) -> dict[str, Any]:
    """`kafka_client_config` minus consumer-only keys."""
    return producer_config(kafka_client_config)


# -- ClickHouse --------------------------------------------------------------


@pytest.fixture(scope="session")
def _chdb_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """The session's chdb directory and its one connection, opened first.

    The first connection to a directory decides its configuration (later ones
    ignore theirs): this one brings the one-shard cluster `CHDB_TEST_CLUSTER`
    on which the cluster layout of the schema is tested.
    """
    import chdb

    root = tmp_path_factory.mktemp("chdb")
    config = root / "config.xml"
    config.write_text(chdb_cluster_config(CHDB_TEST_CLUSTER))
    path = root / "data"
    connection = chdb.connect(f"file:{path}?config-file={config}")
    try:
        yield path, connection
    finally:
        connection.close()


@pytest.fixture(scope="session")
def chdb_path(_chdb_session: tuple[Path, Any]) -> Path:
    """The session's one chdb data directory (store URL: `chdb://<path>?database=...`)."""
    return _chdb_session[0]


@pytest.fixture(scope="session")
def chdb_connection(_chdb_session: tuple[Path, Any]) -> Any:
    """The session's one embedded ClickHouse (chdb) connection.

    chdb allows one open directory per process: every chdb use in the test
    session goes through this directory (never the global `chdb.query()`);
    store gateways open their own connection to the same directory.
    """
    return _chdb_session[1]


@pytest.fixture
def chdb_database(chdb_connection: Any, unique_name: Callable[[str], str]) -> Iterator[ChdbTarget]:
    """A fresh database in the session's chdb, dropped after the test."""
    target = ChdbTarget(chdb_connection, unique_name("db"))
    try:
        yield target
    finally:
        target.drop()


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedClickHouse]:
    """The session's ClickHouse server: `EW_TEST_CLICKHOUSE_URL`, else a local one.

    The local server (loopback ports chosen at start, stopped at the end of
    the session) defines the one-shard cluster `CHDB_TEST_CLUSTER` over
    itself for the (non-replicated) cluster layout.
    """
    external = os.environ.get(CLICKHOUSE_ENV)
    if external:
        yield ServedClickHouse(external, os.environ.get(CLICKHOUSE_CLUSTER_ENV), replicated=True)
        return
    root = tmp_path_factory.mktemp("clickhouse-server")
    with LocalClickHouseServer(
        root / "data", run_dir=root / "run", cluster=CHDB_TEST_CLUSTER
    ) as server:
        yield ServedClickHouse(server.url, CHDB_TEST_CLUSTER, replicated=False)


@pytest.fixture
def native_database(
    clickhouse_server: ServedClickHouse, unique_name: Callable[[str], str]
) -> Iterator[NativeTarget]:
    """A fresh database on the session's ClickHouse server, dropped after the test."""
    target = NativeTarget(clickhouse_server.url, unique_name("db"))
    try:
        yield target
    finally:
        target.drop()


@pytest.fixture(params=clickhouse_kinds())
def clickhouse_target(request: pytest.FixtureRequest) -> ClickHouseTarget:
    """A fresh database on each ClickHouse: embedded chdb and the session's server.

    Parametrised by kind (test ids `[chdb]`, `[native]`); the database is
    dropped after the test.
    """
    fixture = "chdb_database" if request.param == "chdb" else "native_database"
    target: ClickHouseTarget = request.getfixturevalue(fixture)
    return target


@pytest.fixture
def store_under_test(clickhouse_target: ClickHouseTarget, chdb_path: Path) -> str:
    """The store URL of `clickhouse_target` (with credentials) for workers and the CLI.

    Pipeline tests take this to run on both stores (test ids `[chdb]`, `[native]`).
    """
    if isinstance(clickhouse_target, NativeTarget):
        return clickhouse_target.url
    return f"chdb://{chdb_path}?database={clickhouse_target.database}"


@pytest.fixture(params=clickhouse_kinds())
def process_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL that worker *subprocesses* can open, on each ClickHouse.

    chdb: a fresh directory of the test (one process at a time may open it);
    native: a fresh database on the session's server (any number of processes).
    """
    if request.param == "chdb":
        return f"chdb://{tmp_path / 'clickhouse'}"
    target: NativeTarget = request.getfixturevalue("native_database")
    return target.url


# -- Docker (testcontainers) -------------------------------------------------


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Skip (once, quickly) when no Docker engine answers."""
    reason = docker_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_kafka(docker_engine: None) -> Iterator[str]:
    """`bootstrap.servers` of a Kafka container (KRaft) for the session."""
    from testcontainers.community.kafka import KafkaContainer

    with KafkaContainer(KAFKA_IMAGE).with_kraft() as kafka:
        yield kafka.get_bootstrap_server()


@pytest.fixture(scope="session")
def docker_clickhouse(docker_engine: None) -> Iterator[str]:
    """`clickhouse://user:pass@host:port/db` (native port) of a ClickHouse container."""
    from testcontainers.community.clickhouse import ClickHouseContainer

    with ClickHouseContainer(CLICKHOUSE_IMAGE) as clickhouse:
        yield clickhouse.get_connection_url()

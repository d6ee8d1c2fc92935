"""Helpers behind the integration fixtures: real Kafka topics, real ClickHouse targets.

Nothing here mocks Kafka or ClickHouse: every helper talks to a real broker
(tansu locally, any Kafka in CI) or a real ClickHouse (embedded chdb, or a
server over the native protocol).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

#: Use this broker (host:port) instead of starting a local tansu.
KAFKA_ENV = "EW_TEST_KAFKA_BOOTSTRAP"
#: Run the server tests on this server (clickhouse://user:pass@host:port/db) instead
#: of the session's local one (`worker.dev.clickhouse_server`).
CLICKHOUSE_ENV = "EW_TEST_CLICKHOUSE_URL"
#: tansu makes a group's first join wait half of session.timeout.ms.
SESSION_TIMEOUT_MS = 6000
#: librdkafka properties only consumers understand; producers warn about them.
CONSUMER_ONLY_KEYS = frozenset({"session.timeout.ms", "heartbeat.interval.ms", "group.id"})
#: Upper bound for one ClickHouse statement in tests (server-side setting).
QUERY_TIMEOUT_S = 60
#: The server's cluster (remote_servers name) on which to also test the clustered
#: schema (Replicated + Distributed tables, ON CLUSTER DDL) of `EW_TEST_CLICKHOUSE_URL`.
CLICKHOUSE_CLUSTER_ENV = "EW_TEST_CLICKHOUSE_CLUSTER"
#: The one-shard cluster of the session's chdb (see `chdb_cluster_config`) and of
#: the session's local server (non-replicated: no Keeper).
CHDB_TEST_CLUSTER = "ew_test"


def chdb_cluster_config(cluster: str) -> str:
    """A ClickHouse config file defining `cluster` as one shard: this process.

    chdb listens on no port; declaring the shard's port as its own `tcp_port`
    makes ClickHouse treat the shard as local, so Distributed tables over
    `cluster` read and write this process's tables without any network.
    """
    return f"""<clickhouse>
  <tcp_port>9000</tcp_port>
  <remote_servers>
    <{cluster}><shard><replica><host>localhost</host><port>9000</port></replica></shard></{cluster}>
  </remote_servers>
</clickhouse>
"""


# -- Kafka -------------------------------------------------------------------


def client_config(bootstrap: str) -> dict[str, Any]:
    """librdkafka settings for test clients of the broker at `bootstrap` (consumer-ready)."""
    return {"bootstrap.servers": bootstrap, "session.timeout.ms": SESSION_TIMEOUT_MS}


def producer_config(client_config: Mapping[str, Any]) -> dict[str, Any]:
    """Return `client_config` without consumer-only keys (librdkafka warns otherwise)."""
    return {k: v for k, v in client_config.items() if k not in CONSUMER_ONLY_KEYS}


def create_topic(bootstrap: str, name: str, partitions: int, *, timeout_s: float = 15.0) -> None:
    """Create `name` with `partitions` partitions and block until metadata shows them.

    Uses CreateTopics only (tansu has no CreatePartitions/AlterConfigs). Raises
    `TimeoutError` when the metadata does not show the topic in time, and the
    broker's `KafkaException` when creation fails.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1)],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    futures[name].result(timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    seen: object = None
    while time.monotonic() < deadline:
        metadata = admin.list_topics(topic=name, timeout=max(0.1, deadline - time.monotonic()))
        topic = metadata.topics.get(name)
        if topic is not None and topic.error is None and len(topic.partitions) == partitions:
            return
        seen = None if topic is None else (topic.error, sorted(topic.partitions))
        time.sleep(0.05)
    raise TimeoutError(
        f"topic {name!r} not visible with {partitions} partitions after {timeout_s}s "
        f"(last metadata: {seen})"
    )


# -- ClickHouse --------------------------------------------------------------

ClickHouseKind = Literal["chdb", "native"]


def clickhouse_kinds() -> list[ClickHouseKind]:
    """The ClickHouse kinds every run tests: embedded chdb and a server (native protocol).

    The server is `EW_TEST_CLICKHOUSE_URL` when set, else the session's local one.
    """
    return ["chdb", "native"]


@dataclass(frozen=True)
class ServedClickHouse:
    """The session's ClickHouse server: its URL and the cluster to test the cluster layout on.

    `cluster` None: no cluster known (an external server without
    `EW_TEST_CLICKHOUSE_CLUSTER`); `replicated` False for the local server,
    which has no Keeper (a non-replicated Distributed table over itself).
    """

    url: str
    cluster: str | None
    replicated: bool

    def database_url(self, database: str) -> str:
        """`url` with its database path replaced by `database`."""
        return urlunsplit(urlsplit(self.url)._replace(path="/" + database))


class ClickHouseTarget(Protocol):
    """One database on a real ClickHouse, as tests see it.

    `execute` runs one statement with `{name:Type}` query parameters in
    `database` (the default database for unqualified names), blocks until it
    finishes (at most `QUERY_TIMEOUT_S` server-side) and returns the result
    rows as tuples of Python values (int, str, Decimal, aware datetime, ...);
    DDL and INSERT return []. Raises the backend's error on failure.
    """

    kind: ClickHouseKind
    database: str

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement; see the class docstring."""
        ...

    def drop(self) -> None:
        """Drop `database`; idempotent."""
        ...


def _chdb_param(value: Any) -> Any:
    """Adapt a Python value to chdb's parameter passing, which str()s every value.

    chdb 4.4 sends `str(value)` as the parameter text: None would arrive as the
    string 'NULL' (not NULL: `\\N` is the NULL spelling), and an aware datetime
    as '...+00:00', which DateTime64 refuses.
    """
    if value is None:
        return "\\N"
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
    if isinstance(value, bytes | bytearray):
        raise TypeError("chdb parameters cannot carry bytes; pass str")
    return value


class ChdbTarget:
    """A database inside the session's one embedded chdb connection.

    The connection is shared with the rest of the session: each `execute`
    first switches it to `database` (`USE`), so tests stay independent.
    Rows come back through Parquet, which keeps DateTime as a timestamp
    (ArrowTable would give DateTime as epoch seconds).
    """

    kind: ClickHouseKind = "chdb"

    def __init__(self, connection: Any, database: str) -> None:
        self._conn = connection
        self.database = database
        self._conn.query("CREATE DATABASE {db:Identifier}", params={"db": database})

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._conn.query("USE {db:Identifier}", params={"db": self.database})
        adapted = {k: _chdb_param(v) for k, v in (params or {}).items()}
        result = self._conn.query(sql, "Parquet", params=adapted)
        data = result.bytes()
        if not data:
            return []
        table = pq.read_table(pa.BufferReader(data))
        return list(zip(*(column.to_pylist() for column in table.columns), strict=True))

    def drop(self) -> None:
        self._conn.query("USE default")
        self._conn.query(
            "DROP DATABASE IF EXISTS {db:Identifier} SYNC", params={"db": self.database}
        )


def _native_client(url: str, database: str | None) -> Any:
    """A clickhouse-driver client for `clickhouse://user:pass@host:port/db` with timeouts."""
    from clickhouse_driver import Client

    parts = urlsplit(url)
    if parts.scheme not in {"clickhouse", "clickhouses"}:
        raise ValueError(f"expected clickhouse://user:pass@host:port/db, got {url!r}")
    return Client(
        host=parts.hostname or "localhost",
        port=parts.port or (9440 if parts.scheme == "clickhouses" else 9000),
        user=unquote(parts.username or "default"),
        password=unquote(parts.password or ""),
        database=database or parts.path.lstrip("/") or "default",
        secure=parts.scheme == "clickhouses",
        connect_timeout=5,
        send_receive_timeout=QUERY_TIMEOUT_S,
        sync_request_timeout=5,
        settings={"server_side_params": True, "max_execution_time": QUERY_TIMEOUT_S},
    )


class NativeTarget:
    """A fresh database on a ClickHouse server, over the native protocol.

    Parameters are sent server-side, so the SQL is the same `{name:Type}` form
    chdb runs.
    """

    kind: ClickHouseKind = "native"

    def __init__(self, url: str, database: str) -> None:
        """Create `database` on the server at `url` (`clickhouse://...`)."""
        admin = _native_client(url, None)
        try:
            admin.execute("CREATE DATABASE {db:Identifier}", {"db": database})
        finally:
            admin.disconnect()
        self._server_url = url
        self.url = urlunsplit(urlsplit(url)._replace(path="/" + database))
        self.database = database
        self._client = _native_client(url, database)

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        from worker.store.native_gateway import server_param

        values = {name: server_param(value) for name, value in (params or {}).items()}
        rows = self._client.execute(sql, values)
        return [tuple(row) for row in rows] if isinstance(rows, list) else []

    def drop(self) -> None:
        self._client.disconnect()
        admin = _native_client(self._server_url, None)
        try:
            admin.execute("DROP DATABASE IF EXISTS {db:Identifier} SYNC", {"db": self.database})
        finally:
            admin.disconnect()


# -- Docker ------------------------------------------------------------------


def docker_endpoint() -> str:
    """The Docker endpoint the SDK would use."""
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


@functools.cache
def docker_unavailable_reason() -> str | None:
    """Return why Docker cannot be used (None when an engine answers a ping).

    Pings with a 2 s timeout, once per process.
    """
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as error:  # any failure means: no usable engine
        return (
            f"no Docker engine answers at {docker_endpoint()}: testcontainers fixtures "
            f"skipped ({type(error).__name__})"
        )
    return None

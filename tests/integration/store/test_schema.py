"""Migrations: idempotent, versioned, and required by readers."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests.integration.store.conftest import StoreUnderTest
from tests.integration.support import CHDB_TEST_CLUSTER, ServedClickHouse
from worker.domain.events import Event
from worker.store.ddl import LOCAL_SUFFIX, ClusterLayout, render
from worker.store.errors import SchemaMissingError, StoreError
from worker.store.raw import insert_raw
from worker.store.reprocess_state import ReprocessProgress, RequestState, load_progress
from worker.store.schema import (
    LATEST_VERSION,
    MIGRATIONS,
    PROGRESS_COLUMNS,
    _setup_sql,
    current_version,
    migrate,
    require_schema,
)

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def test_migrate_twice_applies_once(store: StoreUnderTest) -> None:
    assert migrate(store.gateway) == list(range(1, LATEST_VERSION + 1))
    assert migrate(store.gateway) == []
    assert current_version(store.gateway) == LATEST_VERSION
    assert store.gateway.query("SELECT count() FROM schema_version") == [(LATEST_VERSION,)]
    tables = store.gateway.query(
        "SELECT name, engine FROM system.tables WHERE database = {db:String} ORDER BY name",
        {"db": store.gateway.database},
    )
    assert tables == [
        ("events", "ReplacingMergeTree"),
        ("events_processed", "ReplacingMergeTree"),
        ("reprocess_progress", "ReplacingMergeTree"),
        ("reprocess_requests", "ReplacingMergeTree"),
        ("schema_version", "ReplacingMergeTree"),
    ]
    require_schema(store.gateway)


def test_migration_5_keeps_the_progress_saved_before_it(store: StoreUnderTest) -> None:
    """Progress saved under migration 3's table (keyed by request id alone) is
    found by tenant, environment and id once the schema is upgraded."""
    gateway = store.gateway
    gateway.ensure_database()
    for sql in _setup_sql(gateway.database, None):
        gateway.execute(sql)
    for migration in MIGRATIONS[:4]:
        for statement in migration.statements:
            for sql in render(statement, gateway.database, None):
                gateway.execute(sql)
        gateway.insert(
            "schema_version",
            {"version": [migration.version], "description": ["x"], "applied_at": [NOW]},
        )
    old = ReprocessProgress(
        request_id="r1",
        tenant_id="t1",
        environment_id="prod",
        request="{}",
        state=RequestState.RUNNING,
        cursor_id="e7",
        found=3,
        created_at=NOW,
        updated_at=NOW,
        version=2,
    )
    columns = {name: [getattr(old, name)] for name in PROGRESS_COLUMNS}
    columns["state"] = [old.state.value]
    gateway.insert("reprocess_requests", columns)

    assert migrate(gateway) == [5]
    assert load_progress(gateway, "t1", "prod", "r1") == old
    assert load_progress(gateway, "t2", "prod", "r1") is None


def test_readers_require_the_schema(store: StoreUnderTest) -> None:
    with pytest.raises(SchemaMissingError, match="events-worker migrate"):
        require_schema(store.gateway)


def _tables(store: StoreUnderTest) -> list[tuple[str, str]]:
    return store.gateway.query(
        "SELECT name, engine FROM system.tables WHERE database = {db:String} ORDER BY name",
        {"db": store.gateway.database},
    )


@pytest.fixture
def test_cluster(store: StoreUnderTest, request: pytest.FixtureRequest) -> ClusterLayout:
    """The non-replicated cluster layout on the one-shard test cluster (chdb or local server)."""
    if store.kind != "chdb":
        served: ServedClickHouse = request.getfixturevalue("clickhouse_server")
        if served.replicated:
            pytest.skip("the non-replicated layout needs the local server's one-shard cluster")
    return ClusterLayout(CHDB_TEST_CLUSTER, replicated=False)


def test_cluster_layout_puts_distributed_tables_in_front(
    store: StoreUnderTest, test_cluster: ClusterLayout
) -> None:
    assert migrate(store.gateway, cluster=test_cluster) == list(range(1, LATEST_VERSION + 1))
    assert migrate(store.gateway, cluster=test_cluster) == []
    names = [
        "events",
        "events_processed",
        "reprocess_progress",
        "reprocess_requests",
        "schema_version",
    ]
    assert _tables(store) == sorted(
        [(name, "Distributed") for name in names]
        + [(name + LOCAL_SUFFIX, "ReplacingMergeTree") for name in names]
    )
    assert current_version(store.gateway) == LATEST_VERSION
    require_schema(store.gateway)


def test_rows_written_through_the_cluster_tables_land_in_the_local_ones(
    store: StoreUnderTest, test_cluster: ClusterLayout
) -> None:
    migrate(store.gateway, cluster=test_cluster)
    event = Event(
        id="e1",
        tenant_id="t1",
        environment_id="prod",
        event_name="api_call",
        external_customer_id="acme",
        timestamp=datetime(2026, 1, 5, tzinfo=UTC),
        properties={"region": "eu", "calls": 3},
    )
    for _ in range(2):  # the same token twice: one copy
        insert_raw(store.gateway, [event], dedup_token="raw:1")
    local = store.gateway.query(
        "SELECT id, canonical_properties, numeric_properties FROM events" + LOCAL_SUFFIX
    )
    assert [(id_, dict(canonical), dict(numeric)) for id_, canonical, numeric in local] == [
        ("e1", {"region": "eu", "calls": "3"}, {"calls": Decimal(3)})
    ]


def test_layouts_never_mix(store: StoreUnderTest, test_cluster: ClusterLayout) -> None:
    migrate(store.gateway)
    with pytest.raises(StoreError, match="single-server schema"):
        migrate(store.gateway, cluster=test_cluster)
    store.gateway.execute("DROP TABLE schema_version")
    migrate(store.gateway, cluster=test_cluster)  # sees no schema: a fresh cluster layout
    with pytest.raises(StoreError, match="pass --cluster NAME or set EW_CLICKHOUSE_CLUSTER"):
        migrate(store.gateway)

"""The schema's DDL for one server and for a cluster (``migrate --cluster``), as text.

The clustered SQL itself runs in tests/integration/store (non-replicated form on
chdb's one-shard cluster); here: the rules a replicated layout must keep, which
no engine on this machine can check (there is no ClickHouse Keeper).
"""

from __future__ import annotations

import re

import pytest

from worker.store.ddl import LOCAL_SUFFIX, ClusterLayout, CreateTable
from worker.store.errors import StoreError
from worker.store.schema import MIGRATIONS, migration_sql

CLUSTER = ClusterLayout("prod_cluster")
_CREATE = re.compile(r"CREATE TABLE IF NOT EXISTS (\S+)")
_ENGINE = re.compile(r"ENGINE = (\w+)\((.*?)\)\n")


def _creates(statements: list[str]) -> dict[str, str]:
    """Table name -> its CREATE statement."""
    found: dict[str, str] = {}
    for sql in statements:
        match = _CREATE.match(sql.strip())
        if match:
            found[match.group(1)] = sql
    return found


def _tables() -> list[CreateTable]:
    return [
        statement
        for migration in MIGRATIONS
        for statement in migration.statements
        if isinstance(statement, CreateTable)
    ]


def test_every_clustered_ddl_statement_runs_on_the_whole_cluster() -> None:
    statements = migration_sql("billing", CLUSTER)
    assert statements[0] == "CREATE DATABASE IF NOT EXISTS billing ON CLUSTER 'prod_cluster'"
    for sql in statements:
        if not sql.startswith("INSERT"):
            assert " ON CLUSTER 'prod_cluster'" in sql, sql


def test_data_copies_run_once_through_the_distributed_tables_synchronously() -> None:
    copies = [sql for sql in migration_sql("billing", CLUSTER) if sql.startswith("INSERT")]
    assert copies == [
        "INSERT INTO billing.reprocess_progress (request_id, tenant_id, environment_id, "
        "request, state, cursor_timestamp, cursor_id, found, republished, pages, error, "
        "created_at, updated_at, version) SETTINGS insert_distributed_sync = 1 "
        "SELECT request_id, tenant_id, environment_id, request, state, cursor_timestamp, "
        "cursor_id, found, republished, pages, error, created_at, updated_at, version "
        "FROM billing.reprocess_requests FINAL"
    ]


def test_each_table_is_a_replicated_local_table_behind_a_distributed_one() -> None:
    creates = _creates(migration_sql("billing", CLUSTER))
    names = [table.name for table in _tables()] + ["schema_version"]
    assert sorted(creates) == sorted(
        [f"billing.{name}" for name in names] + [f"billing.{name}{LOCAL_SUFFIX}" for name in names]
    )
    keeper_paths = []
    for name in names:
        local = _ENGINE.search(creates[f"billing.{name}{LOCAL_SUFFIX}"])
        assert local is not None
        engine, arguments = local.groups()
        assert engine == "ReplicatedReplacingMergeTree"
        path, replica, _version = (part.strip() for part in arguments.split(","))
        assert path == f"'/clickhouse/tables/{{shard}}/billing/{name}{LOCAL_SUFFIX}'"
        assert replica == "'{replica}'"
        keeper_paths.append(path)
        front = creates[f"billing.{name}"]
        assert f"AS billing.{name}{LOCAL_SUFFIX}" in front
        assert f"ENGINE = Distributed('prod_cluster', 'billing', '{name}{LOCAL_SUFFIX}', " in front
    # Two tables sharing a Keeper path would replicate into each other.
    assert len(set(keeper_paths)) == len(keeper_paths)


def test_token_deduplication_survives_replication() -> None:
    creates = _creates(migration_sql("billing", CLUSTER))
    for table in _tables():
        local = creates[f"billing.{table.name}{LOCAL_SUFFIX}"]
        assert "non_replicated_deduplication_window" not in local
        assert ("replicated_deduplication_window = 10000" in local) == table.token_dedup
    assert {table.name for table in _tables() if table.token_dedup} == {
        "events",
        "events_processed",
    }


def test_an_event_and_its_processed_rows_share_a_shard() -> None:
    # FINAL deduplicates per shard and the anti-join runs shard-locally: both
    # need every copy of a row identity, raw and processed, on one shard.
    keys = {table.name: table.shard_key for table in _tables()}
    assert keys["events"] == keys["events_processed"]
    assert "id" in re.findall(r"\w+", keys["events"])


def test_column_changes_reach_the_distributed_tables_and_the_rest_stays_local() -> None:
    altered = [sql for sql in migration_sql("billing", CLUSTER) if sql.startswith("ALTER")]
    column_changes = [sql for sql in altered if "ADD COLUMN" in sql]
    assert {sql.split()[2] for sql in column_changes} == {"billing.events", "billing.events_local"}
    for sql in altered:
        if "ADD COLUMN" not in sql:  # indexes, projections, settings, mutations
            assert sql.split()[2].endswith(LOCAL_SUFFIX), sql


def test_the_non_replicated_form_has_plain_engines_and_no_cluster_ddl() -> None:
    statements = migration_sql("billing", ClusterLayout("one", replicated=False))
    assert not any("ON CLUSTER" in sql or "Replicated" in sql for sql in statements)
    assert not any(sql.startswith("CREATE DATABASE") for sql in statements)
    creates = _creates(statements)
    assert "Distributed('one', 'billing', 'events_local'" in creates["billing.events"]


def test_one_server_has_no_local_or_distributed_tables() -> None:
    statements = migration_sql("billing")
    assert not any(LOCAL_SUFFIX in sql or "Distributed" in sql for sql in statements)
    assert not any("ON CLUSTER" in sql for sql in statements)


@pytest.mark.parametrize(
    "name", ["", "prod'; DROP TABLE events; --", "a b", "x" * 129, "prod\n", "prod\r\n"]
)
def test_cluster_names_cannot_inject_sql(name: str) -> None:
    with pytest.raises(StoreError, match="invalid cluster name"):
        ClusterLayout(name)

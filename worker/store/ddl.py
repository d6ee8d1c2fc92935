"""The schema's statements, rendered for one server or for a cluster (``migrate --cluster``).

Migrations are lists of :class:`CreateTable` and :class:`AlterTable`; :func:`render`
turns each into SQL for a layout:

* one server (``cluster=None``): the table itself, a ``*MergeTree`` engine;
* a cluster (:class:`ClusterLayout`, DESIGN.md §2): per shard a local table
  ``<name>_local`` with a ``Replicated*MergeTree`` engine (Keeper path from the
  server's ``{shard}`` and ``{replica}`` macros), and in front of it
  ``<name>``, a ``Distributed`` table over the cluster. Every statement is
  ``ON CLUSTER``. The worker reads and writes ``<name>`` in both layouts.

Rows are sharded by ``cityHash64(tenant_id, environment_id, id)`` on both event
tables, so an event's raw row and all its processed rows live on one shard:
``FINAL`` deduplicates each row identity (which contains the event id) on its
shard, and the unprocessed anti-join and the analytics' ``id IN (...)``
subqueries may run shard-locally (``distributed_product_mode = 'local'``).

The non-replicated form (``replicated=False``: plain engines, no ``ON CLUSTER``)
serves sharded clusters without replicas when run on each shard, and lets the
cluster DDL run on an embedded chdb with a one-shard cluster in its config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from worker.store.errors import StoreError

#: Suffix of the per-shard tables behind the Distributed ones.
LOCAL_SUFFIX = "_local"

#: Insert blocks remembered per table for token deduplication.
DEDUP_WINDOW = 10_000

#: SETTINGS clause of the reads whose ``id IN (subquery)`` reads the other event
#: table. Both are sharded by event id, so on a cluster the subquery may read the
#: shard's own table (ClickHouse refuses a double-distributed IN otherwise);
#: no effect on one server.
SHARD_LOCAL_SUBQUERIES = "\nSETTINGS distributed_product_mode = 'local'\n"

_CLUSTER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


@dataclass(frozen=True, slots=True)
class ClusterLayout:
    """Where the tables live on a ClickHouse cluster (``remote_servers`` name)."""

    name: str
    replicated: bool = True
    """Replicated engines and ON CLUSTER statements (production); False renders
    the non-replicated form for the connected server only."""

    def __post_init__(self) -> None:
        if not _CLUSTER_NAME.fullmatch(self.name):
            raise StoreError(
                f"invalid cluster name {self.name!r}: use at most 128 of A-Z a-z 0-9 _ . -"
            )


@dataclass(frozen=True, slots=True)
class CreateTable:
    """A table of the ``MergeTree`` family, created if missing."""

    name: str
    body: str
    """Columns and indexes, as between the parentheses of CREATE TABLE."""
    engine: str
    """Engine family without ``Replicated``, e.g. ``ReplacingMergeTree``."""
    version_column: str
    clauses: str
    """PARTITION BY / ORDER BY."""
    shard_key: str
    """Sharding expression of the Distributed table (cluster layout)."""
    token_dedup: bool = False
    """Keep :data:`DEDUP_WINDOW` insert blocks for ``insert_deduplication_token``."""


@dataclass(frozen=True, slots=True)
class AlterTable:
    """ALTER commands of one table (idempotent: ``IF NOT EXISTS`` and the like)."""

    table: str
    commands: str
    structure: bool = False
    """Column changes: applied to the Distributed table too (cluster layout);
    indexes, projections, settings and mutations only concern the local tables."""


@dataclass(frozen=True, slots=True)
class CopyRows:
    """Copy the deduplicated rows of ``source`` into ``target`` (a data migration).

    Runs once through the tables the worker reads and writes (the Distributed
    ones on a cluster), never ``ON CLUSTER``. Repeating it after an
    interruption is harmless when ``target`` is a ReplacingMergeTree keyed on
    the copied rows (reads use FINAL).
    """

    source: str
    target: str
    columns: tuple[str, ...]


Statement = CreateTable | AlterTable | CopyRows


def render(statement: Statement, database: str, cluster: ClusterLayout | None) -> list[str]:
    """The SQL of ``statement`` for ``database`` in the given layout, in execution order."""
    if isinstance(statement, CreateTable):
        if cluster is None:
            return [_create_single(statement)]
        return _create_clustered(statement, database, cluster)
    if isinstance(statement, CopyRows):
        columns = ", ".join(statement.columns)
        prefix = "" if cluster is None else f"{database}."
        sync = "" if cluster is None else " SETTINGS insert_distributed_sync = 1"
        # Table and column names are constants of the schema; the database name
        # was checked as an identifier by the gateway. No value is formatted in.
        return [
            f"INSERT INTO {prefix}{statement.target} ({columns}){sync} "  # noqa: S608
            f"SELECT {columns} FROM {prefix}{statement.source} FINAL"
        ]
    if cluster is None:
        return [f"ALTER TABLE {statement.table} {statement.commands}"]
    on = _on_cluster(cluster)
    rendered = [f"ALTER TABLE {database}.{statement.table}{LOCAL_SUFFIX}{on} {statement.commands}"]
    if statement.structure:
        rendered.append(f"ALTER TABLE {database}.{statement.table}{on} {statement.commands}")
    return rendered


def create_database(database: str, cluster: ClusterLayout | None) -> list[str]:
    """The ON CLUSTER ``CREATE DATABASE`` of a replicated layout (nothing otherwise:
    the gateway creates the database on the server it connects to)."""
    if cluster is None or not cluster.replicated:
        return []
    return [f"CREATE DATABASE IF NOT EXISTS {database}{_on_cluster(cluster)}"]


def _create_single(table: CreateTable) -> str:
    settings = (
        f"\nSETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}"
        if table.token_dedup
        else ""
    )
    return (
        f"CREATE TABLE IF NOT EXISTS {table.name} ({table.body}\n)\n"
        f"ENGINE = {table.engine}({table.version_column})\n{table.clauses}{settings}"
    )


def _create_clustered(table: CreateTable, database: str, cluster: ClusterLayout) -> list[str]:
    on = _on_cluster(cluster)
    local = f"{table.name}{LOCAL_SUFFIX}"
    if cluster.replicated:
        # {shard} and {replica} are the server's macros, expanded by ClickHouse.
        path = "'/clickhouse/tables/{shard}/" + database + "/" + local + "'"
        engine = f"Replicated{table.engine}({path}, '{{replica}}', {table.version_column})"
        window = "replicated_deduplication_window"
    else:
        engine = f"{table.engine}({table.version_column})"
        window = "non_replicated_deduplication_window"
    settings = f"\nSETTINGS {window} = {DEDUP_WINDOW}" if table.token_dedup else ""
    return [
        f"CREATE TABLE IF NOT EXISTS {database}.{local}{on} ({table.body}\n)\n"
        f"ENGINE = {engine}\n{table.clauses}{settings}",
        f"CREATE TABLE IF NOT EXISTS {database}.{table.name}{on} AS {database}.{local}\n"
        f"ENGINE = Distributed('{cluster.name}', '{database}', '{local}', {table.shard_key})",
    ]


def _on_cluster(cluster: ClusterLayout) -> str:
    return f" ON CLUSTER '{cluster.name}'" if cluster.replicated else ""

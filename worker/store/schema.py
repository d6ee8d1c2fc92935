"""The ClickHouse schema and its migrations (``events-worker migrate``).

Migrations are numbered and append-only; :func:`migrate` applies those newer
than the ``schema_version`` table records and is idempotent (every statement is
``IF NOT EXISTS``, so an interrupted run can simply be repeated).

Design of the two tables (DESIGN.md §5):

* ``events`` (raw): ReplacingMergeTree(ingested_at) keyed by
  (tenant, environment, external customer, timestamp, id) - a redelivered event
  carries the same key, so merges keep one copy; reads use FINAL. Partitioned
  by month of the event time; a bloom filter on ``id`` serves lookups by id
  and the unprocessed anti-join.
* ``events_processed``: ReplacingMergeTree(version) whose ORDER BY is the row
  identity (tenant, environment, line item, period, event id): a reprocessed
  or redelivered row replaces the old one. Partitioned by month of the period
  start (``period_id`` is epoch ms), so one identity never spans partitions and
  FINAL may skip cross-partition merging. Bloom filter on ``unique_hash`` for
  the batched dedup lookup. Amounts are Decimal(38, 15): 23 integer digits.

Both keep a deduplication window so that an insert repeated with the same
``insert_deduplication_token`` is dropped. ``migrate --cluster NAME`` lays the
same tables out on a cluster: Replicated local tables behind Distributed ones
(:mod:`worker.store.ddl`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from worker.store.ddl import (
    AlterTable,
    ClusterLayout,
    CopyRows,
    CreateTable,
    Statement,
    create_database,
    render,
)
from worker.store.errors import MIGRATE_HINT, SchemaMissingError, StoreError
from worker.store.gateway import Gateway

_EVENT_COLUMNS = """
    tenant_id String,
    environment_id String,
    id String,
    event_name LowCardinality(String),
    external_customer_id String,
    customer_id String,
    source LowCardinality(String),
    timestamp DateTime64(6, 'UTC'),
    ingested_at DateTime64(6, 'UTC'),
    properties String"""


def _event_table(name: str, extra_body: str, *, version_column: str, clauses: str) -> CreateTable:
    """One of the two event tables: the event columns followed by ``extra_body``, the row
    with the greatest ``version_column`` kept, a repeated insert dropped, and an
    event's raw row and its processed rows on one shard."""
    return CreateTable(
        name=name,
        body=_EVENT_COLUMNS + extra_body,
        engine="ReplacingMergeTree",
        version_column=version_column,
        clauses=clauses,
        shard_key="cityHash64(tenant_id, environment_id, id)",
        token_dedup=True,
    )


_EVENTS = _event_table(
    "events",
    """,
    INDEX idx_id id TYPE bloom_filter(0.01) GRANULARITY 4""",
    version_column="ingested_at",
    clauses="PARTITION BY toYYYYMM(timestamp)\n"
    "ORDER BY (tenant_id, environment_id, external_customer_id, timestamp, id)",
)

_EVENTS_PROCESSED = _event_table(
    "events_processed",
    """,
    subscription_id String,
    sub_line_item_id String,
    price_id String,
    feature_id String,
    meter_id String,
    period_id UInt64,
    currency LowCardinality(String),
    unique_hash String,
    qty_total Decimal(38, 15),
    qty_billable Decimal(38, 15),
    qty_free_applied Decimal(38, 15),
    tier_snapshot Decimal(38, 15),
    unit_cost Decimal(38, 15),
    cost Decimal(38, 15),
    version UInt64,
    sign Int8,
    processed_at DateTime64(6, 'UTC'),
    final_lag_ms UInt32,
    INDEX idx_unique_hash unique_hash TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_event_id id TYPE bloom_filter(0.01) GRANULARITY 4""",
    version_column="version",
    clauses="PARTITION BY toYYYYMM(toDateTime(intDiv(period_id, 1000), 'UTC'))\n"
    "ORDER BY (tenant_id, environment_id, sub_line_item_id, period_id, id)",
)

_SCHEMA_VERSION = CreateTable(
    name="schema_version",
    body="""
    version UInt32,
    description String,
    applied_at DateTime64(6, 'UTC')""",
    engine="ReplacingMergeTree",
    version_column="applied_at",
    clauses="ORDER BY version",
    shard_key="version",
)


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: idempotent statements, applied in order."""

    version: int
    description: str
    statements: tuple[Statement, ...]


# Migration 2: the read side's property columns (DESIGN.md §3, §7). The writer
# sends two JSON objects (ephemeral: never stored) computed by the domain's own
# rules - see :func:`worker.store.raw.derived_properties` - and ClickHouse turns
# them into maps that property filters and value reads use:
#   canonical_properties  key -> metering.canonical_value (filters, COUNT_UNIQUE)
#   numeric_properties    key -> the quantity metering reads from that property
#                          (parsed, clamped at 0, 15 places; absent if unusable)
# Rows stored before this migration have empty maps (no property matches them).
# A minmax index on events_processed.timestamp bounds the unprocessed anti-join
# and the analytics reads to the parts of their time window.
_EVENTS_PROPERTY_MAPS = AlterTable(
    "events",
    """
    ADD COLUMN IF NOT EXISTS canonical_json String EPHEMERAL,
    ADD COLUMN IF NOT EXISTS numeric_json String EPHEMERAL,
    ADD COLUMN IF NOT EXISTS canonical_properties Map(String, String)
        DEFAULT CAST(JSONExtractKeysAndValues(canonical_json, 'String'), 'Map(String, String)'),
    ADD COLUMN IF NOT EXISTS numeric_properties Map(String, Decimal(38, 15))
        DEFAULT CAST(JSONExtractKeysAndValues(numeric_json, 'Decimal(38, 15)'),
                     'Map(String, Decimal(38, 15))')""",
    structure=True,
)
_PROCESSED_TIMESTAMP_INDEX = AlterTable(
    "events_processed", "ADD INDEX IF NOT EXISTS idx_timestamp timestamp TYPE minmax GRANULARITY 1"
)

# Migration 3: the reprocess consumer's durable progress (DESIGN.md §6), one
# logical row per request id. Every save inserts a new version of the row;
# ReplacingMergeTree(version) keeps the latest and reads use FINAL. ``version``
# grows by one per save of a request (the saver reads the previous one first),
# ``updated_at`` is informational. No insert-token deduplication: every save
# is a new state.
_REPROCESS_REQUESTS = CreateTable(
    name="reprocess_requests",
    body="""
    request_id String,
    tenant_id String,
    environment_id String,
    request String,
    state LowCardinality(String),
    cursor_timestamp DateTime64(6, 'UTC'),
    cursor_id String,
    found UInt64,
    republished UInt64,
    pages UInt64,
    error String,
    created_at DateTime64(6, 'UTC'),
    updated_at DateTime64(6, 'UTC'),
    version UInt64""",
    engine="ReplacingMergeTree",
    version_column="version",
    clauses="ORDER BY request_id",
    shard_key="cityHash64(request_id)",
)

# Migration 4: time-ordered projections for FindUnprocessedEvents (DESIGN.md §6).
# Both tables are ordered for their main reads (raw by customer, processed by
# line item), so a tenant-wide time slice read every granule. ``by_time`` keeps
# a copy ordered by (tenant, environment, timestamp, id) - of the whole raw
# event, so a page is one read of it; of the anti-join keys only for processed
# rows. ClickHouse picks a projection by itself for reads without FINAL.
# ReplacingMergeTree merges must rebuild projections (ClickHouse >= 24.8).
# MATERIALIZE runs in the background for rows stored before this migration.
_BY_TIME_PROJECTION_MODE = "MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild'"
_EVENTS_BY_TIME = """ADD PROJECTION IF NOT EXISTS by_time (
    SELECT id, tenant_id, environment_id, event_name, timestamp, properties, source,
           customer_id, external_customer_id, ingested_at
    ORDER BY tenant_id, environment_id, timestamp, id)"""
_PROCESSED_BY_TIME = """ADD PROJECTION IF NOT EXISTS by_time (
    SELECT tenant_id, environment_id, timestamp, id, external_customer_id, event_name
    ORDER BY tenant_id, environment_id, timestamp, id)"""
_MATERIALIZE_BY_TIME = "MATERIALIZE PROJECTION by_time"

# Migration 5: reprocess progress keyed by (tenant, environment, request id), so
# that two tenants may use the same request id and every read is scoped. The
# rows of migration 3's table are copied over; that table is left in place
# (unused) rather than dropped by a migration.
#: Columns of a reprocess progress row (both tables), in insert order.
PROGRESS_COLUMNS = (
    "request_id",
    "tenant_id",
    "environment_id",
    "request",
    "state",
    "cursor_timestamp",
    "cursor_id",
    "found",
    "republished",
    "pages",
    "error",
    "created_at",
    "updated_at",
    "version",
)
_REPROCESS_PROGRESS = CreateTable(
    name="reprocess_progress",
    body=_REPROCESS_REQUESTS.body,
    engine="ReplacingMergeTree",
    version_column="version",
    clauses="ORDER BY (tenant_id, environment_id, request_id)",
    shard_key="cityHash64(tenant_id, environment_id, request_id)",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "events and events_processed", (_EVENTS, _EVENTS_PROCESSED)),
    Migration(
        2,
        "events property maps for the read side; events_processed timestamp index",
        (_EVENTS_PROPERTY_MAPS, _PROCESSED_TIMESTAMP_INDEX),
    ),
    Migration(3, "reprocess_requests: durable reprocess progress", (_REPROCESS_REQUESTS,)),
    Migration(
        4,
        "time-ordered by_time projections of events and events_processed",
        (
            AlterTable("events", _BY_TIME_PROJECTION_MODE),
            AlterTable("events_processed", _BY_TIME_PROJECTION_MODE),
            AlterTable("events", _EVENTS_BY_TIME),
            AlterTable("events_processed", _PROCESSED_BY_TIME),
            AlterTable("events", _MATERIALIZE_BY_TIME),
            AlterTable("events_processed", _MATERIALIZE_BY_TIME),
        ),
    ),
    Migration(
        5,
        "reprocess_progress: reprocess progress keyed by tenant, environment and request id",
        (
            _REPROCESS_PROGRESS,
            CopyRows("reprocess_requests", "reprocess_progress", PROGRESS_COLUMNS),
        ),
    ),
)
LATEST_VERSION = MIGRATIONS[-1].version


def current_version(gateway: Gateway) -> int:
    """The highest applied migration (0 for an empty database).

    Raises :class:`SchemaMissingError` when the database does not exist.
    """
    rows = gateway.query("SELECT max(version) FROM schema_version FINAL")
    return int(rows[0][0]) if rows else 0


def migration_sql(database: str, cluster: ClusterLayout | None = None) -> list[str]:
    """Every statement a migration of an empty ``database`` runs, in order (``--dry-run``)."""
    statements = _setup_sql(database, cluster)
    for migration in MIGRATIONS:
        for statement in migration.statements:
            statements += render(statement, database, cluster)
    return statements


def migrate(gateway: Gateway, *, cluster: ClusterLayout | None = None) -> list[int]:
    """Create or upgrade the schema of ``gateway.database``; return the versions applied.

    Idempotent: a second run applies nothing. Blocking (DDL). With ``cluster``
    the tables are laid out on that cluster (see :mod:`worker.store.ddl`);
    raises :class:`StoreError` when the database already holds the other
    layout, so a worker started without (or with) the cluster setting never
    adds single-server tables to a clustered schema, or the reverse.
    """
    gateway.ensure_database()
    database = gateway.database
    _check_layout(gateway, cluster)
    for sql in _setup_sql(database, cluster):
        gateway.execute(sql)
    applied_before = current_version(gateway)
    applied: list[int] = []
    for migration in MIGRATIONS:
        if migration.version <= applied_before:
            continue
        for statement in migration.statements:
            for sql in render(statement, database, cluster):
                gateway.execute(sql)
        gateway.insert(
            "schema_version",
            {
                "version": [migration.version],
                "description": [migration.description],
                "applied_at": [datetime.now(UTC)],
            },
        )
        applied.append(migration.version)
    return applied


def _setup_sql(database: str, cluster: ClusterLayout | None) -> list[str]:
    """What every migration run executes first: the database, the version table."""
    return create_database(database, cluster) + render(_SCHEMA_VERSION, database, cluster)


def _check_layout(gateway: Gateway, cluster: ClusterLayout | None) -> None:
    rows = gateway.query(
        "SELECT engine FROM system.tables WHERE database = {db:String} AND name = 'schema_version'",
        {"db": gateway.database},
    )
    if not rows:
        return
    clustered = rows[0][0] == "Distributed"
    if clustered and cluster is None:
        raise StoreError(
            f"the schema of {gateway.url} (database {gateway.database}) is laid out on a "
            "cluster (Distributed tables): pass --cluster NAME or set EW_CLICKHOUSE_CLUSTER"
        )
    if cluster is not None and not clustered:
        raise StoreError(
            f"the schema of {gateway.url} (database {gateway.database}) is a single-server "
            f"schema: it cannot be migrated onto cluster {cluster.name!r}; drop "
            "--cluster / EW_CLICKHOUSE_CLUSTER, or migrate into a new database"
        )


def require_schema(gateway: Gateway) -> None:
    """Raise :class:`SchemaMissingError` unless the schema is at :data:`LATEST_VERSION`."""
    version = current_version(gateway)
    if version < LATEST_VERSION:
        raise SchemaMissingError(
            f"schema of {gateway.url} (database {gateway.database}) is at version {version}, "
            f"this code needs {LATEST_VERSION}: {MIGRATE_HINT}"
        )

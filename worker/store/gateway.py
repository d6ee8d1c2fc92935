"""One small interface to ClickHouse: the :class:`Gateway` protocol and its helpers.

Two thin implementations run the same SQL: the embedded engine
(:mod:`worker.store.chdb_gateway`) and a server over the native protocol
(:mod:`worker.store.native_gateway`, inserts optionally as Arrow over HTTP).
:func:`worker.store.connect.open_gateway` picks one by URL
(:mod:`worker.store.url`). This module imports neither implementation: they
import it.

SQL never contains values: only ``{name:Type}`` query parameters. Identifiers
(database names) are checked against :data:`IDENTIFIER` before use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from worker.store.errors import MIGRATE_HINT, SchemaMissingError, StoreError

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""A plain identifier, matched whole (``fullmatch``: ``$`` would accept a trailing newline)."""
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_DATABASE = "default"
QUERY_MAX_MEMORY_BYTES = 4 * 1024**3
"""``max_memory_usage`` of every statement either gateway runs: one read that
outgrows it (a pathological filter, an unbounded scan) fails with a
``StoreError`` instead of taking the server's, or the embedded worker's,
memory. The worker's own reads stay far below (state and dedup reads are
chunked to 2,000 keys, pages to 10,000 rows)."""

Row = tuple[Any, ...]
Params = Mapping[str, Any]
Columns = Mapping[str, Sequence[Any]]
"""An insert's columns by name: equal-length sequences of values or ``pyarrow`` arrays."""


class Gateway(Protocol):
    """A ClickHouse database as the store sees it. Safe to share across threads.

    Every call blocks until ClickHouse answers, at most about ``timeout_s``
    (given to :func:`~worker.store.connect.open_gateway`): longer statements are cancelled
    server-side (``max_execution_time``) and waits for the shared connection
    are bounded, so a call fails with :class:`StoreError` instead of hanging.
    Every failure is a :class:`StoreError` with a one-line message;
    :class:`~worker.store.errors.SchemaMissingError` when the database or a
    table does not exist (run ``events-worker migrate``).

    Parameters are ``{name:Type}`` placeholders filled from ``params``: str,
    int, Decimal, aware datetimes (declare the type as ``DateTime64(6, 'UTC')``),
    None (NULL for Nullable types), and lists / tuples of those for ``Array`` /
    ``Tuple`` types. Unqualified table names refer to :attr:`database`.
    """

    @property
    def database(self) -> str:
        """The database unqualified names refer to."""
        ...

    @property
    def url(self) -> str:
        """The store URL with any password redacted (for messages and logs)."""
        ...

    def query(self, sql: str, params: Params | None = None) -> list[Row]:
        """Run one SELECT; return its rows as tuples of typed Python values.

        Types: String -> str, integers -> int, Decimal -> Decimal,
        DateTime64 with a time zone -> aware datetime (UTC for our columns).
        Not idempotent only in the sense that results reflect the current data.
        """
        ...

    def execute(self, sql: str, params: Params | None = None) -> None:
        """Run one statement (DDL, ``SET``, ...) and discard any result.

        Idempotent exactly when the statement is (``CREATE ... IF NOT EXISTS``).
        """
        ...

    def insert(self, table: str, columns: Columns, *, dedup_token: str | None = None) -> int:
        """Insert equal-length columns into ``table`` of :attr:`database`; return the row count.

        A column is a sequence of Python values or a ``pyarrow.Array`` (which
        chdb takes without converting it again).

        Blocks until the block is written (durable on return). With
        ``dedup_token`` the insert is idempotent: inserting again with the same
        token (any data) is a no-op, as long as the table keeps insert
        deduplication (``non_replicated_deduplication_window`` > 0 or a
        Replicated engine) and the token is among its recent blocks. Without a
        token every call appends. An empty insert does nothing.
        """
        ...

    def ensure_database(self) -> None:
        """Create :attr:`database` if it does not exist (idempotent; used by migrate)."""
        ...

    def ping(self) -> None:
        """Check ClickHouse answers (``SELECT 1``); raise :class:`StoreError` if not."""
        ...

    def close(self) -> None:
        """Release the connection (idempotent). The gateway is unusable afterwards."""
        ...


def check_identifier(name: str, what: str = "database name") -> str:
    """Return ``name`` if it is a plain identifier, else raise :class:`StoreError`."""
    if not IDENTIFIER.fullmatch(name):
        raise StoreError(f"invalid {what} {name!r}: use letters, digits and _ only")
    return name


def column_types(gateway: Gateway, table: str, where: str) -> dict[str, str]:
    """``table``'s columns (name -> ClickHouse type) in ``gateway``'s database.

    Raises :class:`SchemaMissingError` when the table does not exist. Callers
    cache the answer: the schema only grows, by migrations.
    """
    rows = gateway.query(
        "SELECT name, type FROM system.columns "
        "WHERE database = {db:String} AND table = {table:String}",
        {"db": gateway.database, "table": table},
    )
    if not rows:
        raise SchemaMissingError(
            f"schema missing in {where} (table {gateway.database}.{table} does not exist): "
            f"{MIGRATE_HINT}"
        )
    return {str(name): str(kind) for name, kind in rows}


def check_insert_names(table: str, columns: Iterable[str]) -> None:
    """Raise :class:`StoreError` unless ``table`` and every column name are plain identifiers.

    Every gateway's insert starts here: the names are written into the
    INSERT statement, values never are.
    """
    check_identifier(table, "table name")
    for name in columns:
        check_identifier(name, "column name")

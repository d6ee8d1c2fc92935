"""One small interface to ClickHouse, two thin implementations chosen by URL.

``chdb:///abs/dir`` or ``chdb://./relative/dir`` opens the embedded engine
(:mod:`worker.store.chdb_gateway`); ``clickhouse://user:pass@host:port/db``
(``?secure=1`` or ``clickhouses://`` for TLS) talks to a server over the
native protocol (:mod:`worker.store.native_gateway`); with ``&http_port=N``
its inserts go to the server's HTTP interface as Arrow streams, the fast path
(:mod:`worker.store.http_insert`). Both run the same SQL.

SQL never contains values: only ``{name:Type}`` query parameters. Identifiers
(database names) are checked against :data:`IDENTIFIER` before use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from worker.ops.settings import redact_url
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


class Gateway(Protocol):
    """A ClickHouse database as the store sees it. Safe to share across threads.

    Every call blocks until ClickHouse answers, at most about ``timeout_s``
    (given to :func:`open_gateway`): longer statements are cancelled
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

    def insert(
        self,
        table: str,
        columns: Mapping[str, Sequence[Any]],
        *,
        dedup_token: str | None = None,
    ) -> int:
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


@dataclass(frozen=True, slots=True)
class ChdbLocation:
    """A parsed ``chdb://`` URL: the data directory and the database."""

    path: Path
    database: str


@dataclass(frozen=True, slots=True)
class NativeLocation:
    """A parsed ``clickhouse://`` URL."""

    host: str
    port: int
    user: str
    password: str
    database: str
    secure: bool
    http_port: int | None = None
    """The server's HTTP port (``?http_port=N``): inserts then go there as Arrow."""


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


def _shown(url: str) -> str:
    """``url`` safe to show: password redacted, or only the scheme when unparseable."""
    try:
        return redact_url(url)
    except ValueError:
        return url.partition("://")[0] + "://***" if "@" in url else url


def _bad_url(url: str, why: str) -> StoreError:
    return StoreError(
        f"invalid store URL {_shown(url)!r} ({why}): expected chdb:///path/to/dir, "
        "chdb://./relative/dir or clickhouse://user:pass@host:9000/db[?secure=1&http_port=8123]"
    )


#: Query parameters each scheme understands; any other one is a typo (``?databse=``).
_URL_PARAMETERS: dict[str, frozenset[str]] = {
    "chdb": frozenset({"database"}),
    "clickhouse": frozenset({"secure", "http_port"}),
    "clickhouses": frozenset({"secure", "http_port"}),
}
_SECURE_VALUES = frozenset({"0", "1", "false", "true"})


def _http_port(url: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise _bad_url(url, f"http_port must be a port number 1..65535, got {text!r}")
    return int(text)


def parse_store_url(url: str) -> ChdbLocation | NativeLocation:
    """Parse a store URL; raise :class:`StoreError` naming the expected forms.

    Strict: a scheme without ``//``, an unknown query parameter or a bad
    ``secure`` value is an error, never silently ignored.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _bad_url(url, str(exc)) from None
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    if parts.scheme in _URL_PARAMETERS:
        if not url.startswith(f"{parts.scheme}://"):
            # chdb:/./store would silently mean /store.
            raise _bad_url(url, f"write {parts.scheme}:// (two slashes) before the path or host")
        unknown = sorted(
            set(parse_qs(parts.query, keep_blank_values=True)) - _URL_PARAMETERS[parts.scheme]
        )
        if unknown:
            known = ", ".join(sorted(_URL_PARAMETERS[parts.scheme])) or "none"
            raise _bad_url(url, f"unknown parameter {unknown[0]!r}; known: {known}")
        if query.get("secure", "0") not in _SECURE_VALUES:
            raise _bad_url(url, "secure must be one of 0, 1, false, true")
    if parts.scheme == "chdb":
        if parts.netloc not in ("", ".", "localhost"):
            raise _bad_url(url, "chdb takes a path, not a host")
        raw = parts.path if parts.netloc != "." else "." + parts.path
        if raw in ("", "/", "."):
            raise _bad_url(url, "no directory")
        database = check_identifier(query.get("database", DEFAULT_DATABASE))
        return ChdbLocation(Path(unquote(raw)), database)
    if parts.scheme in ("clickhouse", "clickhouses"):
        if not parts.hostname:
            raise _bad_url(url, "no host")
        secure = parts.scheme == "clickhouses" or query.get("secure", "0") in ("1", "true")
        database = check_identifier(unquote(parts.path.strip("/")) or DEFAULT_DATABASE)
        return NativeLocation(
            host=parts.hostname,
            port=port or (9440 if secure else 9000),
            user=unquote(parts.username or "default"),
            password=unquote(parts.password or ""),
            database=database,
            secure=secure,
            http_port=_http_port(url, query.get("http_port")),
        )
    raise _bad_url(url, f"unknown scheme {parts.scheme!r}" if parts.scheme else "no scheme")


def open_gateway(url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, create: bool = True) -> Gateway:
    """Open the gateway for ``url``; raise :class:`StoreError` if it cannot be reached.

    Blocks at most about ``timeout_s`` (connect + ping). The caller owns the
    gateway and must :meth:`~Gateway.close` it. ``create=False`` (readers)
    refuses a ``chdb://`` directory that does not exist instead of creating it.
    """
    location = parse_store_url(url)
    if isinstance(location, ChdbLocation):
        from worker.store.chdb_gateway import ChdbGateway

        if not create and not location.path.is_dir():
            raise SchemaMissingError(
                f"no chdb store at {location.path}: check the path, or {MIGRATE_HINT}"
            )
        return ChdbGateway.open(location, url=redact_url(url), timeout_s=timeout_s)
    from worker.store.native_gateway import NativeGateway

    return NativeGateway.open(location, url=redact_url(url), timeout_s=timeout_s)

"""The embedded engine (chdb) behind the :class:`~worker.store.gateway.Gateway` interface.

chdb runs ClickHouse inside this process and allows one open data directory
per process, locked against other processes. All gateways of a process share
:data:`CONNECTIONS` connections to that directory (reference-counted, closed
with the last gateway); a statement takes an idle one for its duration: a
chdb connection is not safe for concurrent queries, and ``USE`` / ``SET`` are
session state, kept per connection. The connections reach one engine, so two
statements (the batch's raw and processed inserts) run at once. The global
``chdb.query()`` is never used.

Timeouts: waiting for an idle connection is bounded by the gateway's
``timeout_s``, and statements run with ``max_execution_time`` set to it.
Rows are read back through Parquet, which keeps Decimal and DateTime64 types
exact; inserts go through Arrow IPC (``send_insert``), typed by the table's
columns. The dedup token travels in the INSERT's ``SETTINGS`` clause (chdb's
streaming insert takes no parameters), so it is restricted to safe characters.

The engine is configured by ``chdb_config.xml`` (:data:`ENGINE_CONFIG`):
embedded, ClickHouse shares the worker's cores, so background merges run at
the lowest CPU priority (a merge can wait where the batch in hand cannot;
measured in ADR 0003, "Result") and rewrite each row fewer times.
"""

from __future__ import annotations

import fcntl
import queue
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from worker.store.chdb_params import adapt_params
from worker.store.errors import StoreError, error_code, first_line, translate
from worker.store.gateway import (
    QUERY_MAX_MEMORY_BYTES,
    Columns,
    Params,
    Row,
    check_identifier,
)
from worker.store.typed_insert import TypedInserts
from worker.store.url import ChdbLocation

_TOKEN = re.compile(r"[A-Za-z0-9_.:/@+=-]{1,256}")

#: The embedded engine's configuration file, given in chdb's connection string
#: (the first connection of a process decides it). Merge threads at nice 19:
#: at half load (38.5k events/s, 2 cores shared with tansu and a paced
#: producer) the steady-state event-to-commit p99 went from 3.3-3.8 s to
#: 1.2-2.0 s. ``merge_selector_base = 10``: about half the merge CPU of the
#: default for about three times the parts (the file says how it was measured).
ENGINE_CONFIG: Final = Path(__file__).with_name("chdb_config.xml")


#: Connections per process. Two: the write-behind stores a batch's raw events
#: and its processed rows at once (``UsageBatchProcessor.write``), which one
#: connection serialised.
CONNECTIONS: Final = 2


class _Session:
    """One chdb connection and its session state."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.current_database: str | None = None
        self.current_timeout_s: int | None = None
        self.memory_capped = False


class _SharedConnection:
    """The process's chdb connections to one directory; idle ones wait in a queue."""

    def __init__(self, path: Path, sessions: list[_Session]) -> None:
        self.path = path
        self.sessions = sessions
        self.idle: queue.SimpleQueue[_Session] = queue.SimpleQueue()
        for session in sessions:
            self.idle.put(session)
        self.references = 0


_registry_lock = threading.Lock()
_shared: _SharedConnection | None = None


def _connect(path: Path) -> Any:
    import chdb

    path.mkdir(parents=True, exist_ok=True)
    try:
        return chdb.connect(f"file:{path}?config-file={ENGINE_CONFIG}")  # type: ignore[no-untyped-call]
    except Exception as exc:
        message = str(exc)
        if "already initialized" in message:
            raise StoreError(
                f"this process already has another chdb directory open ({first_line(message)}): "
                "chdb allows one directory per process"
            ) from exc
        if _locked_by_other_process(path):
            raise StoreError(
                f"chdb directory {path} is in use by another process: stop that process "
                "or pass a different --store chdb:///dir"
            ) from exc
        raise StoreError(f"cannot open chdb directory {path}: {first_line(message)}") from exc


def _locked_by_other_process(path: Path) -> bool:
    """True when ClickHouse's ``status`` lock file of ``path`` is held elsewhere."""
    status = path / "status"
    if not status.exists():
        return False
    with status.open("rb") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False


def _acquire(path: Path) -> _SharedConnection:
    global _shared
    with _registry_lock:
        if _shared is None:
            _shared = _SharedConnection(path, _open_sessions(path))
        elif _shared.path != path:
            raise StoreError(
                f"this process already has chdb directory {_shared.path} open; chdb allows "
                f"one directory per process (close it before opening {path})"
            )
        _shared.references += 1
        return _shared


def _open_sessions(path: Path) -> list[_Session]:
    """:data:`CONNECTIONS` connections to ``path``; none stays open if one fails."""
    sessions: list[_Session] = []
    try:
        for _ in range(CONNECTIONS):
            sessions.append(_Session(_connect(path)))
    except BaseException:
        for session in sessions:
            session.connection.close()
        raise
    return sessions


def _release(shared: _SharedConnection) -> None:
    global _shared
    with _registry_lock:
        shared.references -= 1
        if shared.references == 0:
            for _ in shared.sessions:  # each once it is idle
                shared.idle.get().connection.close()
            if _shared is shared:
                _shared = None


def insert_settings(token: str | None) -> str:
    """The ``SETTINGS`` clause of an insert; tokens are restricted to safe characters.

    ``optimize_on_insert = 0``: ClickHouse would otherwise collapse rows of the
    same identity inside each inserted block, a sort-and-merge that costs about
    a fifth of the insert and buys nothing here (a batch holds each identity
    once, and every read deduplicates with FINAL anyway).
    ``insert_distributed_sync = 1``: on a cluster layout an insert returns only
    once every shard has the rows (durable before the offsets are committed);
    no effect on local tables.
    """
    clause = " SETTINGS optimize_on_insert = 0, insert_distributed_sync = 1"
    if token is None:
        return clause
    if not _TOKEN.fullmatch(token):
        raise StoreError(
            "invalid insert_deduplication_token: use at most 256 of A-Z a-z 0-9 _ . : / @ + = -"
        )
    return f"{clause}, insert_deduplication_token = '{token}'"


class ChdbGateway:
    """A database in the process's embedded ClickHouse. See :class:`Gateway` for contracts."""

    def __init__(
        self, shared: _SharedConnection, database: str, url: str, timeout_s: float
    ) -> None:
        self._shared = shared
        self.database: Final = check_identifier(database)
        self.url: Final = url
        self._timeout_s = timeout_s
        self._closed = False
        self._inserts = TypedInserts(self, self._where())

    @classmethod
    def open(cls, location: ChdbLocation, *, url: str, timeout_s: float) -> ChdbGateway:
        """Join (or open) the process's chdb connection to ``location.path``."""
        shared = _acquire(location.path.resolve())
        gateway = cls(shared, location.database, url, timeout_s)
        try:
            gateway.ping()
        except BaseException:
            gateway.close()
            raise
        return gateway

    @contextmanager
    def _session(self, *, use_database: bool = True) -> Iterator[Any]:
        """Hold an idle connection, switched to this gateway's database and timeout."""
        if self._closed:
            raise StoreError(f"gateway for {self.url} is closed")
        shared = self._shared
        try:
            session = shared.idle.get(timeout=self._timeout_s)
        except queue.Empty:
            raise StoreError(
                f"chdb at {self.url} stayed busy for {self._timeout_s:g}s: "
                "other threads hold its connections; retry later"
            ) from None
        try:
            connection = session.connection
            timeout = max(1, round(self._timeout_s))
            if session.current_timeout_s != timeout:
                connection.query("SET max_execution_time = {t:UInt32}", params={"t": timeout})
                session.current_timeout_s = timeout
            if not session.memory_capped:
                connection.query(
                    "SET max_memory_usage = {m:UInt64}", params={"m": QUERY_MAX_MEMORY_BYTES}
                )
                session.memory_capped = True
            if use_database and session.current_database != self.database:
                session.current_database = None
                connection.query("USE {db:Identifier}", params={"db": self.database})
                session.current_database = self.database
            yield connection
        except StoreError:
            raise
        except Exception as exc:
            message = str(exc)
            raise translate(error_code(message), message, self._where()) from exc
        finally:
            shared.idle.put(session)

    def _where(self) -> str:
        return f"{self.url} (database {self.database})"

    def query(self, sql: str, params: Params | None = None) -> list[Row]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        with self._session() as connection:
            data = connection.query(sql, "Parquet", params=adapt_params(params)).bytes()
        if not data:
            return []
        try:
            table = pq.read_table(pa.BufferReader(data))
        except (OSError, pa.ArrowException) as exc:
            # A truncated or corrupt result (seen after a query timeout): retryable.
            raise StoreError(f"unreadable result from {self._where()}: {exc}") from None
        return list(zip(*(column.to_pylist() for column in table.columns), strict=True))

    def execute(self, sql: str, params: Params | None = None) -> None:
        with self._session() as connection:
            connection.query(sql, "Null", params=adapt_params(params))

    def insert(self, table: str, columns: Columns, *, dedup_token: str | None = None) -> int:
        payload, rows = self._inserts.payload(table, columns)
        if rows == 0:
            return 0
        # Identifiers were checked above; the token by insert_settings.
        statement = f"INSERT INTO {self.database}.{table} ({', '.join(columns)})"
        statement += insert_settings(dedup_token)
        with self._session() as connection, connection.send_insert(statement, "ArrowStream") as ins:
            ins.append(payload)
            ins.finish()
        return rows

    def ensure_database(self) -> None:
        with self._session(use_database=False) as connection:
            connection.query(
                "CREATE DATABASE IF NOT EXISTS {db:Identifier}", params={"db": self.database}
            )

    def ping(self) -> None:
        with self._session(use_database=False) as connection:
            connection.query("SELECT 1", "Null")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _release(self._shared)

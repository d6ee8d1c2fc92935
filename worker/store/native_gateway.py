"""A ClickHouse server over the native protocol (clickhouse-driver) as a Gateway.

:data:`CHANNELS` driver clients per gateway, each used by one statement at a
time (a client runs one query at a time); a statement takes an idle one. With
an ``http_port`` in the URL, inserts go to the server's HTTP interface as one
Arrow stream (:mod:`worker.store.http_insert`, about 3x the rows/s: no Python
object per value), one keep-alive connection per channel; queries stay on the
native protocol. Parameters are sent server-side (``server_side_params``), so
the SQL is the same ``{name:Type}`` text chdb runs. Every call has a connect
timeout, a socket send/receive timeout and a server-side
``max_execution_time``.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from worker.store.chdb_params import utc_text
from worker.store.errors import SchemaMissingError, StoreError, first_line, translate
from worker.store.gateway import (
    QUERY_MAX_MEMORY_BYTES,
    Columns,
    Params,
    Row,
    check_insert_names,
)
from worker.store.http_insert import INSERT_SETTINGS, ArrowHttpInserter
from worker.store.typed_insert import TypedInserts
from worker.store.url import NativeLocation

# The driver logs connection failures with a traceback; they reach the user as a
# one-line StoreError instead (a configured root logger still receives them).
logging.getLogger("clickhouse_driver").addHandler(logging.NullHandler())
# Its reconnect chatter ("Connection was closed, reconnecting.", a warning per
# attempt) would repeat an outage the worker already reports once in its own words.
logging.getLogger("clickhouse_driver.connection").setLevel(logging.ERROR)


class _ServerNull:
    """A NULL server-side parameter.

    clickhouse-driver sends None as the quoted text 'NULL', which a
    ``Nullable(String)`` parameter reads as the string "NULL". The driver
    quotes an unknown object's ``str()`` as it is: ``\\N`` arrives as the
    escaped-text NULL.
    """

    def __str__(self) -> str:
        return "\\\\N"


_NULL = _ServerNull()


def server_param(value: Any) -> Any:
    """A parameter value as clickhouse-driver must send it server-side.

    Datetimes as UTC text (parsed by the declared ``DateTime64(6, 'UTC')``),
    None as NULL; lists and tuples element by element (None inside them is
    sent as the driver's NULL literal, which is right there).
    """
    if value is None:
        return _NULL
    if isinstance(value, datetime):
        return utc_text(value)
    if isinstance(value, list):
        return [_element(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_element(item) for item in value)
    return value


def _element(value: Any) -> Any:
    return None if value is None else server_param(value)


#: Statements one gateway runs at once: the write-behind stores a batch's raw
#: events and processed rows at once, and reads the next batch's first-touch
#: states meanwhile (ADR 0002). Clients connect on first use.
CHANNELS: Final = 2


@dataclass(frozen=True, slots=True)
class _Channel:
    """One driver client and, when inserts go over HTTP, its own inserter."""

    client: Any
    http: ArrowHttpInserter | None


class NativeGateway:
    """A database on a ClickHouse server. See :class:`Gateway` for contracts."""

    def __init__(self, location: NativeLocation, url: str, timeout_s: float) -> None:
        self._location = location
        self.database: Final = location.database
        self.url: Final = url
        self._timeout_s = timeout_s
        self._closed = False
        self._inserts = TypedInserts(self, self._where())
        self._channels = [
            _Channel(
                self._new_client(location.database),
                None
                if location.http_port is None
                else ArrowHttpInserter(location, location.http_port, timeout_s),
            )
            for _ in range(CHANNELS)
        ]
        self._idle: queue.SimpleQueue[_Channel] = queue.SimpleQueue()
        for channel in self._channels:
            self._idle.put(channel)

    @classmethod
    def open(cls, location: NativeLocation, *, url: str, timeout_s: float) -> NativeGateway:
        """Connect and ping; raise :class:`StoreError` when unreachable or refused."""
        gateway = cls(location, url, timeout_s)
        try:
            gateway.ping()
        except SchemaMissingError:
            pass  # the server answered; the database is created by migrate
        except BaseException:
            gateway.close()
            raise
        return gateway

    def _new_client(self, database: str) -> Any:
        from clickhouse_driver import Client

        location = self._location
        timeout = max(1, round(self._timeout_s))
        return Client(
            host=location.host,
            port=location.port,
            user=location.user,
            password=location.password,
            database=database,
            secure=location.secure,
            connect_timeout=min(10, timeout),
            send_receive_timeout=timeout,
            sync_request_timeout=min(10, timeout),
            settings={
                "server_side_params": True,
                "max_execution_time": timeout,
                "max_memory_usage": QUERY_MAX_MEMORY_BYTES,
            },
        )

    @contextmanager
    def _channel(self) -> Iterator[_Channel]:
        """Hold an idle channel for one statement."""
        if self._closed:
            raise StoreError(f"gateway for {self.url} is closed")
        try:
            channel = self._idle.get(timeout=self._timeout_s)
        except queue.Empty:
            raise StoreError(
                f"ClickHouse clients for {self.url} stayed busy; retry later"
            ) from None
        try:
            yield channel
        finally:
            self._idle.put(channel)

    def _run(self, sql: str, params: Params | None, data: Any = None, **kwargs: Any) -> Any:
        with self._channel() as channel:
            return self._execute(channel.client, sql, params, data, **kwargs)

    def _execute(
        self, client: Any, sql: str, params: Params | None, data: Any = None, **kwargs: Any
    ) -> Any:
        from clickhouse_driver import errors

        try:
            if data is not None:
                return client.execute(sql, data, **kwargs)
            values = {name: server_param(value) for name, value in (params or {}).items()}
            return client.execute(sql, values, **kwargs)
        except errors.ServerException as exc:
            raise translate(exc.code, exc.message, self._where()) from exc
        except (errors.NetworkError, errors.SocketTimeoutError, OSError, EOFError) as exc:
            location = self._location
            raise StoreError(
                f"cannot reach ClickHouse at {location.host}:{location.port} "
                f"({first_line(str(exc)) or type(exc).__name__}): check the URL and that "
                "the server is running"
            ) from exc
        except errors.Error as exc:
            raise StoreError(
                f"ClickHouse error in {self._where()}: {first_line(str(exc))}"
            ) from exc

    def _where(self) -> str:
        return f"{self.url} (database {self.database})"

    def query(self, sql: str, params: Params | None = None) -> list[Row]:
        rows = self._run(sql, params)
        return [tuple(row) for row in rows] if isinstance(rows, list) else []

    def execute(self, sql: str, params: Params | None = None) -> None:
        self._run(sql, params)

    def insert(self, table: str, columns: Columns, *, dedup_token: str | None = None) -> int:
        if self._location.http_port is not None:
            return self._insert_http(table, columns, dedup_token)
        check_insert_names(table, columns)
        data = [_python_values(values) for values in columns.values()]
        lengths = {len(values) for values in data}
        if len(lengths) > 1:
            raise StoreError(f"columns for {table} have different lengths: {sorted(lengths)}")
        if not data or not data[0]:
            return 0
        # See worker.store.chdb_gateway.insert_settings.
        settings: dict[str, Any] = dict(INSERT_SETTINGS)
        if dedup_token is not None:
            settings["insert_deduplication_token"] = dedup_token
        # Identifiers were checked above; the token travels as a query setting.
        statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES"
        self._run(statement, None, data, columnar=True, settings=settings)
        return len(data[0])

    def _insert_http(self, table: str, columns: Columns, dedup_token: str | None) -> int:
        payload, rows = self._inserts.payload(table, columns)
        if rows == 0:
            return 0
        with self._channel() as channel:
            if channel.http is None:  # pragma: no cover - every channel has one with a port
                raise StoreError(f"no HTTP port for inserts in {self.url}")
            channel.http.insert(
                table, list(columns), payload, dedup_token=dedup_token, where=self._where()
            )
        return rows

    def ensure_database(self) -> None:
        admin = self._new_client("default")
        try:
            self._execute(
                admin, "CREATE DATABASE IF NOT EXISTS {db:Identifier}", {"db": self.database}
            )
        finally:
            admin.disconnect()

    def ping(self) -> None:
        self._run("SELECT 1", None)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for channel in self._channels:
                channel.client.disconnect()
                if channel.http is not None:
                    channel.http.close()


def _python_values(values: Sequence[Any]) -> list[Any]:
    """A column as a list of Python values; Arrow arrays (the chdb fast path) too."""
    to_pylist = getattr(values, "to_pylist", None)
    return list(to_pylist()) if to_pylist is not None else list(values)

"""The server's two insert paths: native (clickhouse-driver) and Arrow over HTTP (`?http_port=N`).

Both must store exactly the same rows, honour `insert_deduplication_token`,
and fail as a one-line `StoreError` without the password.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest

from tests.integration.support import NativeTarget
from worker.store.connect import open_gateway
from worker.store.errors import SchemaMissingError, StoreError
from worker.store.gateway import Gateway
from worker.store.schema import migrate
from worker.store.url import parse_store_url


def _with_query(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.fixture
def served(native_database: NativeTarget) -> Iterator[dict[str, Gateway]]:
    """Gateways on one migrated database of the session's server, one per insert path."""
    if parse_store_url(native_database.url).http_port is None:  # type: ignore[union-attr]
        pytest.skip("the server URL names no http_port (EW_TEST_CLICKHOUSE_URL without it)")
    gateways = {
        "http": open_gateway(native_database.url),
        "native": open_gateway(_with_query(native_database.url, http_port=None)),
    }
    try:
        migrate(gateways["native"])
        yield gateways
    finally:
        for gateway in gateways.values():
            gateway.close()


def _columns(ids: list[str]) -> dict[str, list[object]]:
    ts = datetime(2026, 1, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    return {
        "tenant_id": ["t"] * len(ids),
        "environment_id": ["e"] * len(ids),
        "id": ids,
        "event_name": ["n"] * len(ids),
        "external_customer_id": ["c\t'\\N"] * len(ids),
        "customer_id": [""] * len(ids),
        "source": ["é☃"] * len(ids),
        "timestamp": [ts] * len(ids),
        "ingested_at": [ts] * len(ids),
        "properties": ['{"calls": 12345678901234567890.123456789012345}'] * len(ids),
    }


def test_both_insert_paths_store_the_same_rows_once_per_token(
    served: dict[str, Gateway],
) -> None:
    for path, gateway in served.items():
        columns = _columns([f"{path}-1", f"{path}-2"])
        assert gateway.insert("events", columns, dedup_token=f"{path}:0:0-1") == 2
        assert gateway.insert("events", columns, dedup_token=f"{path}:0:0-1") == 2  # no-op
        assert gateway.insert("events", {"id": []}, dedup_token=None) == 0

    rows = served["native"].query(
        "SELECT splitByChar('-', id)[1] AS path, external_customer_id, source, timestamp, "
        "properties FROM events ORDER BY id"
    )
    assert len(rows) == 4
    by_path = {path: [row[1:] for row in rows if row[0] == path] for path in served}
    assert by_path["http"] == by_path["native"]
    assert by_path["http"][0] == (
        "c\t'\\N",
        "é☃",
        datetime(2026, 1, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        '{"calls": 12345678901234567890.123456789012345}',
    )


def test_http_insert_failures_are_one_line_store_errors(
    served: dict[str, Gateway], native_database: NativeTarget
) -> None:
    with pytest.raises(SchemaMissingError, match="events-worker migrate"):
        served["http"].insert("no_such_table", {"id": ["x"]})
    with pytest.raises(StoreError, match="no column"):
        served["http"].insert("events", {"no_such_column": ["x"]})

    # A password the server refuses: said in one line, the secret never shown.
    parts = urlsplit(native_database.url)
    wrong = urlunsplit(parts._replace(netloc=f"default:s3cret-pw@{parts.hostname}:{parts.port}"))
    with pytest.raises(StoreError) as refused:
        open_gateway(wrong)
    assert "s3cret-pw" not in str(refused.value) and "\n" not in str(refused.value)


def test_a_closed_http_port_is_a_store_error_naming_it(
    served: dict[str, Gateway], native_database: NativeTarget
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    gateway = open_gateway(_with_query(native_database.url, http_port=str(closed_port)))
    try:
        with pytest.raises(StoreError, match=f"ClickHouse HTTP at http://127.0.0.1:{closed_port}"):
            gateway.insert("events", _columns(["x"]))
    finally:
        gateway.close()


@pytest.mark.parametrize("port", ["0", "65536", "eighty", "-1"])
def test_a_bad_http_port_is_refused_naming_the_field(port: str) -> None:
    with pytest.raises(StoreError, match="http_port must be a port number"):
        parse_store_url(f"clickhouse://u:pw@host:9000/db?http_port={port}")
